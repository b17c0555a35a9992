"""The harness's exceptions, one small tree::

    HarnessError                 base of everything the harness raises on purpose
    ├── SettingsError            a settings file or override is wrong (exit code 2)
    ├── DataError                the data set cannot be used as it is (exit code 2)
    ├── RunLocked                another live process holds the run directory (exit code 2)
    ├── SubscriberError          a subscriber raised while handling an event
    ├── ExportError              the ONNX export or its parity check failed
    ├── CheckpointWriteError     a checkpoint could not be written (earlier ones untouched)
    ├── Terminated               the run was stopped by SIGTERM after writing a checkpoint (exit 143)
    ├── StopRun                  a subscriber ends the run on purpose; not a failure
    │   └── TrialPruned          a sweep's pruner stopped this trial (summary status "pruned")
    └── TrainingDiverged         the training loss (or the weights) became NaN or infinite

Every message says where (file, key, path, subscriber), what was expected and what
was received, in one sentence.
"""

from __future__ import annotations

import sys
from typing import ClassVar, Literal

__all__ = [
    "CheckpointWriteError",
    "DataError",
    "ExportError",
    "HarnessError",
    "RunLocked",
    "SettingsError",
    "StopRun",
    "SubscriberError",
    "Terminated",
    "TrainingDiverged",
    "TrialPruned",
    "report",
]


class HarnessError(Exception):
    """Base of every error the harness raises on purpose; `exit_code` is what a tool exits with."""

    exit_code = 1


class SettingsError(HarnessError):
    """A setting is unknown, of the wrong type or out of range."""

    exit_code = 2


class DataError(HarnessError):
    """The data set is missing, empty, corrupt or otherwise unusable."""

    exit_code = 2


class RunLocked(HarnessError):
    """Another live process holds the run directory (its PID is in the message)."""

    exit_code = 2


class SubscriberError(HarnessError):
    """A subscriber raised while handling an event.

    The message names the subscriber, the event and the global step; the original
    exception is the `__cause__`.
    """

    def __init__(self, subscriber: str, event: str, step: int, reason: str) -> None:
        self.subscriber = subscriber
        self.event = event
        self.step = step
        self.reason = reason
        super().__init__(f"subscriber {subscriber} failed on {event} at step {step}: {reason}")

    def __reduce__(self) -> tuple[type[SubscriberError], tuple[str, str, int, str]]:
        return (type(self), (self.subscriber, self.event, self.step, self.reason))


class ExportError(HarnessError):
    """The ONNX export failed or its output disagrees with PyTorch."""


class CheckpointWriteError(HarnessError):
    """A checkpoint could not be written (a full disk, say); the earlier checkpoints are untouched."""


class Terminated(HarnessError):
    """SIGTERM (what SLURM and Kubernetes send) stopped the run after a checkpoint was written."""

    exit_code = 143


class StopRun(HarnessError):
    """Raised by a subscriber's handler to end the run now, on purpose.

    The bus lets it through unwrapped and records no failure; the run's summary says
    `status` and its error holds the message.
    """

    status: ClassVar[Literal["stopped", "pruned"]] = "stopped"


class TrialPruned(StopRun):
    """A sweep's pruner stopped this trial at an epoch: its metric was behind the others'."""

    status: ClassVar[Literal["stopped", "pruned"]] = "pruned"


class TrainingDiverged(HarnessError):
    """The training loss or the weights stopped being finite; the run stops at that step.

    `step` is the optimizer step the failing batch would have ended, `lr` the learning
    rate it ran with, `then` what is left and what to do; the message says all of them.
    """

    def __init__(self, step: int, lr: float, what: str, then: str = "") -> None:
        self.step = step
        self.lr = lr
        self.what = what
        self.then = then
        after = f"; {then}" if then else ""
        super().__init__(f"training diverged at step {step}: {what} at learning rate {lr:.4g}{after}")

    def __reduce__(self) -> tuple[type[TrainingDiverged], tuple[int, float, str, str]]:
        return (type(self), (self.step, self.lr, self.what, self.then))


def report(error: HarnessError) -> int:
    """Print `error` for a command line user in one line; return its exit code (`exit_code`)."""
    prefix = "stopped" if isinstance(error, Terminated) else "error"
    print(f"{prefix}: {error}", file=sys.stderr)
    return error.exit_code

"""One line in the terminal per epoch; consumes TrainEpochStart and TrainEpochEnd.

It publishes and writes nothing. After every training epoch, rank zero prints::

    epoch 3/8  train loss 0.412  val top-1 0.962  best 0.962 (epoch 3)  lr 0.0354  41.2s  ETA 3m26s

train loss, val top-1 and lr are the epoch's metrics (``train/loss``, ``val/acc_top1``, ``lr``),
best is the best `context.monitor` so far (the newer of equal scores, as the checkpoint keeps),
the time is the epoch's wall time with its validation, and the ETA the mean epoch time
times the epochs left. A value the run does not log is left out; an epoch that did not
validate shows no validation value. Nothing is printed when ``[run].terminal = "quiet"``.
"""

from __future__ import annotations

import math
import time

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import TrainEpochEnd, TrainEpochStart
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option

__all__ = ["SPEC", "EpochLine", "EpochLineSettings"]


@attrs.frozen(kw_only=True)
class EpochLineSettings(SubscriberSettings):
    """One terminal line per epoch: losses, accuracy, best so far, learning rate, time and ETA."""

    on_error: OnError = on_error_option("isolate")


def duration(seconds: float) -> str:
    """``41.2s``, ``3m26s``, ``2h05m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class EpochLine:
    """Prints the epoch's line at `TrainEpochEnd` on rank zero."""

    def __init__(self, context: RunContext, settings: EpochLineSettings | None = None) -> None:
        self.context = context
        self.settings = settings or EpochLineSettings()
        self.best: tuple[float, int] | None = None
        self.epoch_seconds: list[float] = []
        self._started: float | None = None

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochStart, self.on_train_epoch_start, rank_zero_only=True)
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end, rank_zero_only=True)

    def on_train_epoch_start(self, event: TrainEpochStart) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        line = self.line(event)
        if self.context.verbosity != "quiet":
            print(line, flush=True)

    def line(self, event: TrainEpochEnd) -> str:
        """The epoch's line; it also counts the epoch's time and the best score."""
        context, metrics = self.context, event.metrics
        if self._started is not None:
            self.epoch_seconds.append(time.monotonic() - self._started)
            self._started = None
        score = metrics.get(context.monitor)
        if score is not None and math.isfinite(score):
            better = self.best is None or (
                score >= self.best[0] if context.monitor_mode == "max" else score <= self.best[0]
            )
            if better:
                self.best = (float(score), event.epoch)
        parts = [f"epoch {event.epoch + 1}/{context.max_epochs}"]
        loss = metrics.get("train/loss")
        if loss is not None:
            parts.append(f"train loss {loss:.4g}")
        if "val/acc_top1" in metrics:
            parts.append(f"val top-1 {metrics['val/acc_top1']:.4f}")
        if self.best is not None:
            parts.append(f"best {self.best[0]:.4g} (epoch {self.best[1] + 1})")
        if "lr" in metrics:
            parts.append(f"lr {metrics['lr']:.3g}")
        if self.epoch_seconds:
            parts.append(duration(self.epoch_seconds[-1]))
            left = max(context.max_epochs - event.epoch - 1, 0)
            mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
            parts.append(f"ETA {duration(left * mean)}")
        return "  ".join(parts)


SPEC = SubscriberSpec(name="epoch_line", build=EpochLine, settings=EpochLineSettings)

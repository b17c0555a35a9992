"""Reports a sweep trial's monitored metric to Optuna; consumes ValidationEpochEnd.

`TrialReporter` is attached to a trial's run like any extra subscriber
(``run(settings, extra_subscribers={"sweep_trial": reporter})``). After each validation
epoch (not the sanity check) it reports the monitored metric at that epoch to the trial;
when the study's pruner then says the trial is behind, it raises `TrialPruned`, which the
bus passes through: the run ends there and its summary says "pruned". At the run's last
epoch it only reports: the training is done, and pruning it would throw away its result
for no time saved. Optuna is not
imported: the trial is anything with Optuna's ``report`` and ``should_prune``.
"""

from __future__ import annotations

import math
from typing import Protocol

from harness.core.bus import Bus
from harness.core.errors import TrialPruned
from harness.core.events import ValidationEpochEnd

__all__ = ["PrunableTrial", "TrialReporter"]


class PrunableTrial(Protocol):
    """What the reporter asks of an Optuna trial."""

    @property
    def number(self) -> int: ...

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


class TrialReporter:
    """Reports `monitor` at every validation epoch to `trial`; raises `TrialPruned` when it should stop.

    `last_epoch` (0-based; None: unknown) is the run's last: never pruned there.
    """

    def __init__(self, trial: PrunableTrial, monitor: str, *, last_epoch: int | None = None) -> None:
        self.trial = trial
        self.monitor = monitor
        self.last_epoch = last_epoch
        self.reported: list[tuple[int, float]] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end)

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        if event.sanity_check or self.monitor not in event.metrics:
            return
        value = float(event.metrics[self.monitor])
        self.trial.report(value, event.epoch)
        self.reported.append((event.epoch, value))
        if event.epoch != self.last_epoch and self.trial.should_prune():
            shown = f"{value:.4f}" if math.isfinite(value) else str(value)
            raise TrialPruned(
                f"trial {self.trial.number} pruned at epoch {event.epoch}: {self.monitor} = {shown} "
                "is behind the study's other trials at that epoch"
            )

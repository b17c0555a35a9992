"""The training history as pictures, redrawn at every epoch end.

Consumes `TrainEpochEnd`, on rank zero; publishes nothing. At each `TrainEpochEnd` the
epoch's metrics (what it measured; validation values only when it validated) join the
history and ``run_dir/plots/`` is refreshed: ``losses.png`` (train and validation),
``accuracy.png`` (top-1, top-5), ``learning_rate.png`` (``lr``), each against epochs with
the best epoch of `context.monitor` marked, and ``history.csv`` with every value drawn.
The history is the subscriber's state, saved in checkpoints: a resumed run draws the
whole curve, not just the epochs since the resume. The pictures are drawn from a copy of
the history on the run's background writer (`RunContext.background`), inline without one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import TrainEpochEnd
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from subscribers._draw_history import draw_history

__all__ = ["SPEC", "Plots", "PlotsSettings"]


@attrs.frozen(kw_only=True)
class PlotsSettings(SubscriberSettings):
    """The training history as pictures (losses, accuracy, learning rate), every epoch."""

    on_error: OnError = on_error_option("isolate")


class Plots:
    """Keeps every epoch's metrics and draws one picture per family of curves."""

    def __init__(self, context: RunContext, settings: PlotsSettings | None = None) -> None:
        self.context = context
        self.settings = settings or PlotsSettings()
        self.history: dict[int, dict[str, float]] = {}

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end, rank_zero_only=True)

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        self.history[event.epoch] = {key: float(value) for key, value in event.metrics.items()}
        context = self.context
        history = {epoch: dict(metrics) for epoch, metrics in self.history.items()}
        job = functools.partial(draw_history, context.run_dir, history, context.monitor, context.monitor_mode)
        context.submit(SPEC.name, job, step=event.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [
                {"epoch": epoch, "metrics": dict(metrics)} for epoch, metrics in sorted(self.history.items())
            ]
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            self.history = {
                int(entry["epoch"]): {str(key): float(value) for key, value in entry["metrics"].items()}
                for entry in state["history"]
            }
        except (KeyError, TypeError, ValueError) as error:
            expected = "{'history': [{'epoch': int, 'metrics': {str: float}}]}"
            raise ValueError(
                f"plots state: expected {expected}, got {type(error).__name__}: {error}"
            ) from error


SPEC = SubscriberSpec(name="plots", build=Plots, settings=PlotsSettings, replayable=True)

"""A plugin that asks the run to stop at a given training step (`RunContext.request_stop`).

Tests put this folder on ``sys.path`` and name ``stop_plugins:SPEC`` in ``[run].plugins``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, RunEnd
from harness.core.options import option, positive
from harness.core.spec import SubscriberSettings, SubscriberSpec


@attrs.frozen(kw_only=True)
class StopAtStepSettings(SubscriberSettings):
    """Asks the run to stop once it has taken `step` optimizer steps."""

    step: int = option(2, "the optimizer step after which to ask", positive())
    at: Literal["step", "epoch"] = option("step", "stop after that step, or at the end of its epoch")


class StopAtStep:
    def __init__(self, context: RunContext, settings: StopAtStepSettings) -> None:
        self.context, self.settings = context, settings
        self.ended: list[str] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="train")
        bus.subscribe(RunEnd, self.on_run_end)

    def on_batch_end(self, event: BatchEnd) -> None:
        if event.global_step == self.settings.step:
            self.context.request_stop(f"step {event.global_step} reached", at=self.settings.at)

    def on_run_end(self, event: RunEnd) -> None:
        (self.context.run_dir / "run_end_status.txt").write_text(event.status)


SPEC = SubscriberSpec(name="stop_at_step", build=StopAtStep, settings=StopAtStepSettings)

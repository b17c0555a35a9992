"""Plugins that record whether the training state is still held where `TrainEnd` consumers run.

Tests put this folder on ``sys.path`` and name ``release_probe:ReleaseProbe`` (or
``release_probe:InterruptedProbe``, which then raises Ctrl-C as an export might see it) in
``[run].plugins``. Each writes ``release_probe.json`` in the run directory: for
the last `TrainEpochEnd` and for `TrainEnd`, the optimizer state tensors and the gradients
reachable from the run's model, and at `TrainEnd` `RunContext.training_state_released`.
"""

from __future__ import annotations

import json
from typing import Any

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import TrainEnd, TrainEpochEnd


class ReleaseProbe:
    interrupt = False

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.seen: dict[str, object] = {}

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end)
        bus.subscribe(TrainEnd, self.on_train_end)

    def _held(self) -> tuple[int, int]:
        module: Any = self.context.require_model()  # the LightningModule: its trainer has the optimizers
        states = sum(
            len(state) for optimizer in module.trainer.optimizers for state in optimizer.state.values()
        )
        grads = sum(parameter.grad is not None for parameter in module.parameters())
        return states, grads

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        self.seen["epoch_end"] = self._held()

    def on_train_end(self, event: TrainEnd) -> None:
        self.seen["train_end"] = self._held()
        self.seen["released"] = self.context.training_state_released
        (self.context.run_dir / "release_probe.json").write_text(json.dumps(self.seen))
        if self.interrupt:
            raise KeyboardInterrupt  # Ctrl-C during the export


class InterruptedProbe(ReleaseProbe):
    interrupt = True

"""The promise: a subscriber is written and tested with the bus core alone, no Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, TrainEnd, ValidationEpochEnd
from harness.core.testing import Recorder, make_context, scripted_run, tiny_model


class WorstClasses:
    """Counts validation mistakes per true class and writes the worst three at train end."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.mistakes = [0] * context.num_classes
        self.epochs_seen = 0

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate")
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end)
        bus.subscribe(TrainEnd, self.on_train_end, rank_zero_only=True)

    def on_batch_end(self, event: BatchEnd) -> None:
        if event.sanity_check:
            return
        wrong = event.logits.argmax(1) != event.targets
        for target in event.targets[wrong].tolist():
            self.mistakes[target] += 1

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        self.epochs_seen += not event.sanity_check

    def on_train_end(self, event: TrainEnd) -> None:
        ranked = sorted(range(len(self.mistakes)), key=lambda i: -self.mistakes[i])[:3]
        worst = [self.context.class_names[i] for i in ranked]
        (self.context.run_dir / "worst.json").write_text(json.dumps(worst))


def test_a_subscriber_written_without_lightning_runs_through_a_scripted_run(tmp_path: Path) -> None:
    context = make_context(tmp_path, num_classes=4, model=tiny_model(num_classes=4))
    bus = Bus()
    recorder = Recorder()
    subscriber = WorstClasses(context)
    bus.attach(subscriber)
    bus.attach(recorder)
    scripted_run(bus, context, epochs=3, val_batches=2, batch_size=5, sanity_check=True)

    assert "lightning" not in sys.modules[WorstClasses.__module__].__dict__
    assert subscriber.epochs_seen == 3
    assert sum(subscriber.mistakes) > 0
    worst = json.loads((context.run_dir / "worst.json").read_text())
    assert len(worst) == 3 and set(worst) <= set(context.class_names)
    assert recorder.names()[:2] == ["FitStart", "ValidationSwapIn"]
    assert recorder.names()[-3:] == ["TrainLoopEnd", "TrainEnd", "FitEnd"]


def test_the_bus_core_imports_no_lightning() -> None:
    modules = "harness.core.bus, harness.core.events, harness.core.context, harness.core.testing"
    code = f"import sys, {modules}; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

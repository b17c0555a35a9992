"""The EMA subscriber in real Lightning runs: checkpoints hold the validated weights, resume is exact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from harness.core.bus import Bus
from harness.core.events import BatchEnd, ValidationEpochEnd
from harness.settings import Settings
from harness.training.fit import run
from harness.training.model import Classifier

pytestmark = pytest.mark.slow

# The cosine schedule's length is max_epochs, which a resume with more epochs changes.
# A constant rate, and no horizon cap: these tiny runs would otherwise average a single step.
# No random augmentation: Lightning does not restore torch's generator on resume, so an
# augmented run resumes exactly only up to the augmentations drawn (see the README).
FIXED_LR = (
    "model.scheduler='none'",
    "model.warmup=0",
    "subscribers.ema.horizon=0",
    "augment.crop_scale=[1, 1]",
    "augment.crop_ratio=[1, 1]",
    "augment.color_jitter=0",
    # Loader workers seed from torch's generator, which Lightning does not restore on resume.
    "data.num_workers=0",
)


class Probe:
    """Keeps what validation saw: its batches (with logits) and its metrics."""

    def __init__(self) -> None:
        self.sanity: list[BatchEnd] = []
        self.batches: list[BatchEnd] = []
        self.metrics: list[dict[str, float]] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate")
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end)

    def on_batch_end(self, event: BatchEnd) -> None:
        (self.sanity if event.sanity_check else self.batches).append(event)

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        if not event.sanity_check:
            self.metrics.append(dict(event.metrics))


def load(path: Path) -> dict[str, Any]:
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint


def network(settings: Settings, state: dict[str, torch.Tensor]) -> Classifier:
    model = Classifier.from_settings(settings.model, num_classes=3)
    model.load_state_dict(state)
    return model.eval()


def assert_bit_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


def test_checkpoint_is_the_validated_model_and_resume_is_exact(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    first = make_settings("ema", "trainer.max_epochs=1", "run.name='split'", *FIXED_LR)
    probe = Probe()
    result = run(first, extra_subscribers={"probe": probe})
    saved = load(result.run_dir / "checkpoints" / "last.ckpt")
    ema_state = saved["harness"]["ema"]

    # the checkpoint's state_dict is the better of the two validated sets, the other is the EMA's state
    kept = ema_state["kept"]
    other = ema_state["training"] if kept == "average" else ema_state["average"]
    average = saved["state_dict"] if kept == "average" else ema_state["average"]
    assert ema_state["updates"] > 1
    assert saved["state_dict"].keys() == other.keys()
    assert not torch.equal(saved["state_dict"]["net.fc.weight"], other["net.fc.weight"])
    assert result.summary.validated_weights is not None
    scores = attrs.asdict(result.summary.validated_weights)
    assert scores["kept"] == kept and scores[f"{kept}_top1"] >= max(
        scores["average_top1"], scores["training_top1"]
    )
    model, averaged = network(first, saved["state_dict"]), network(first, average)
    correct = total = 0
    with torch.no_grad():
        for event in probe.batches:
            torch.testing.assert_close(averaged(event.inputs), event.logits)  # validation ran the average
            correct += int((model(event.inputs).argmax(1) == event.targets).sum())
            total += len(event.targets)
    assert scores[f"{kept}_top1"] == pytest.approx(correct / total, abs=1e-6)
    assert probe.metrics[-1]["val/acc_top1"] == pytest.approx(scores["average_top1"], abs=1e-6)

    # resume for a second epoch; the sanity check right after resuming validates the saved average
    resumed_probe = Probe()
    resumed = run(
        make_settings(
            "ema",
            "trainer.max_epochs=2",
            "run.name='split'",
            *FIXED_LR,
            f"trainer.resume={str(result.run_dir / 'checkpoints' / 'last.ckpt')!r}",
        ),
        extra_subscribers={"probe": resumed_probe},
    )
    with torch.no_grad():
        for event in resumed_probe.sanity:
            assert torch.equal(averaged(event.inputs), event.logits)

    # and the resumed run ends exactly where an uninterrupted one does
    straight = run(make_settings("ema", "trainer.max_epochs=2", "run.name='straight'", *FIXED_LR))
    after_resume = load(resumed.run_dir / "checkpoints" / "last.ckpt")
    uninterrupted = load(straight.run_dir / "checkpoints" / "last.ckpt")
    assert after_resume["harness"]["ema"]["updates"] == uninterrupted["harness"]["ema"]["updates"]
    assert_bit_equal(after_resume["state_dict"], uninterrupted["state_dict"])
    for weights in ("training", "average"):
        assert_bit_equal(after_resume["harness"]["ema"][weights], uninterrupted["harness"]["ema"][weights])

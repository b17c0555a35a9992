"""The training state (optimizer moments, gradients) is freed before `TrainEnd`, never before it is saved."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.settings import Settings
from harness.training.fit import run
from harness.training.release import release_training_state

MakeSettings = Callable[..., Settings]
PLUGINS = Path(__file__).parents[2] / "plugins"


def _optimizer_state(checkpoint: Path) -> int:
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return sum(len(optimizer["state"]) for optimizer in raw["optimizer_states"])


def _seen(output_dir: str) -> tuple[Path, dict[str, Any]]:
    (probe,) = Path(output_dir).glob("*/version_*/release_probe.json")
    return probe.parent, json.loads(probe.read_text())


@pytest.fixture(autouse=True)
def _plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))


@pytest.mark.slow
def test_the_export_runs_without_optimizer_state_or_gradients_and_last_ckpt_keeps_them(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings("trainer.max_epochs=1", "run.plugins=['release_probe:ReleaseProbe']")
    run(settings)
    run_dir, seen = _seen(settings.run.output_dir)
    assert seen["epoch_end"][0] > 0  # the probe sees the optimizer state where it is still held
    assert seen["train_end"] == [0, 0] and seen["released"] is True
    # last.ckpt was written whole before the release: a resume gets AdamW's moments.
    assert _optimizer_state(run_dir / "checkpoints" / "last.ckpt") > 0


@pytest.mark.slow
def test_without_last_ckpt_nothing_is_released_since_an_interrupt_would_write_it(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(
        "trainer.max_epochs=1", "checkpoint.save_last=false", "run.plugins=['release_probe:ReleaseProbe']"
    )
    run(settings)
    _, seen = _seen(settings.run.output_dir)
    assert seen["train_end"] == seen["epoch_end"] and seen["train_end"][0] > 0
    assert seen["released"] is False


@pytest.mark.slow
def test_ctrl_c_during_the_export_leaves_the_whole_last_ckpt_as_it_was(make_settings: MakeSettings) -> None:
    settings = make_settings("trainer.max_epochs=1", "run.plugins=['release_probe:InterruptedProbe']")
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's answer to Ctrl-C
            run(settings)
    finally:  # Lightning ignores SIGINT from then on; later tests' subprocesses would inherit that
        signal.signal(signal.SIGINT, handler)
    run_dir, seen = _seen(settings.run.output_dir)
    assert seen["train_end"] == [0, 0]
    assert _optimizer_state(run_dir / "checkpoints" / "last.ckpt") > 0


def test_release_drops_moments_and_gradients_and_keeps_the_weights_and_the_optimizer() -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    before = [p.detach().clone() for p in model.parameters()]
    released = release_training_state(model, [optimizer])
    assert released.tensors == 2 * 3 + 2  # step, exp_avg, exp_avg_sq per weight; two gradients
    assert not optimizer.state and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()  # a later step starts fresh moments
    assert len(optimizer.state) == 2

"""harness.training.optim and the recipe end to end: warm-up, decay, resume, divergence, small batches."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from harness.core.errors import SettingsError, TrainingDiverged
from harness.run import main
from harness.settings import load_settings
from harness.training.fit import run
from harness.training.optim import Schedule
from tests.conftest import MakeSettings


def test_warmup_rises_linearly_then_cosine_decays_to_near_zero() -> None:
    schedule = Schedule.for_run(total_steps=100, max_epochs=10, warmup=1, warmup_unit="epochs", kind="cosine")
    assert schedule.warmup_steps == 10
    assert [schedule.factor(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert schedule.factor(9) == 1.0 and schedule.factor(10) == 1.0
    assert schedule.factor(55) == pytest.approx(0.5)
    assert 0 < schedule.factor(99) < 1e-3
    factors = [schedule.factor(s) for s in range(10, 100)]
    assert factors == sorted(factors, reverse=True)


def test_step_decay_and_warmup_in_steps() -> None:
    schedule = Schedule.for_run(
        total_steps=104,
        max_epochs=4,
        warmup=4,
        warmup_unit="steps",
        kind="step",
        milestones=(0.5, 0.75),
        gamma=0.1,
    )
    assert schedule.warmup_steps == 4
    assert schedule.factor(4 + 49) == 1.0
    assert schedule.factor(4 + 50) == pytest.approx(0.1)
    assert schedule.factor(4 + 75) == pytest.approx(0.01)
    assert (
        Schedule.for_run(total_steps=10, max_epochs=1, warmup=0, warmup_unit="steps", kind="none").factor(9)
        == 1
    )


def test_a_longer_schedule_continues_where_a_shorter_one_ended() -> None:
    short = Schedule.for_run(total_steps=40, max_epochs=2, warmup=1, warmup_unit="epochs", kind="cosine")
    longer = Schedule.for_run(total_steps=80, max_epochs=4, warmup=1, warmup_unit="epochs", kind="cosine")
    assert short.factor(39) < 0.01
    assert longer.factor(40) > 0.4


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
def test_the_learning_rate_must_be_positive_and_finite(value: str) -> None:
    with pytest.raises(SettingsError, match=r"lr must be"):
        load_settings(None, [f"model.lr={value}"])


def conv_weight(checkpoint: Path) -> torch.Tensor:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weight: torch.Tensor = state["net.conv1.weight"]
    return weight


def test_a_resume_with_more_epochs_trains_them_at_a_non_zero_rate(make_settings: MakeSettings) -> None:
    common = ("trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "model.warmup=0")
    done = run(make_settings(*common, "trainer.max_epochs=1"))
    last = done.run_dir / "checkpoints" / "last.ckpt"
    before = conv_weight(last)
    resumed = run(make_settings(*common, "trainer.max_epochs=2", "trainer.resume='last'"))
    assert resumed.run_dir == done.run_dir and resumed.summary.epochs_completed == 2
    # AdamW at rate 0 moves no weight (its decay is scaled by the rate too).
    assert (conv_weight(last) - before).abs().max() > 1e-6, "the new epoch trained at rate 0"


def test_a_diverging_run_stops_with_exit_1_and_says_diverged(
    make_settings: MakeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings("trainer.max_epochs=3", "model.warmup=0")
    toml = str(Path(settings.run.output_dir).parent / "diverge.toml")
    from harness.settings import settings_to_toml

    Path(toml).write_text(settings_to_toml(settings))
    assert main([toml, "--set", "model.lr=1e12"]) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(
        r"training diverged at step \d+: the training loss is nan at learning rate [\d.]+e\+1[12]", message
    )
    run_dir = next(Path(settings.run.output_dir).glob("*/version_*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert "last.ckpt" in message
    else:
        assert "no checkpoint was written" in message
    assert not math.isnan(float(summary["global_step"]))


def test_diverged_pickles_with_its_parts() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(TrainingDiverged(3, 0.5, "the training loss is nan", "then")))
    assert (error.step, error.lr, error.then) == (3, 0.5, "then")

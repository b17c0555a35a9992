"""The epoch line: what it prints per epoch, and that quiet prints nothing."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from harness.core.bus import Bus
from harness.core.events import TrainEpochEnd
from harness.core.testing import make_context, scripted_run
from subscribers.epoch_line import EpochLine, duration


def test_one_line_per_epoch_with_loss_accuracy_best_lr_time_and_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    line = bus.attach(EpochLine(context))
    scripted_run(bus, context, epochs=3, sanity_check=True)

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3  train loss 1  val top-1 ")
    assert lines[2].startswith("epoch 3/3  train loss 0.3333  val top-1 ")
    for text in lines:
        assert "lr 0.1" in text and "ETA " in text and " best " in text
    assert lines[2].endswith("ETA 0.0s")
    assert line.best is not None
    assert f"best {line.best[0]:.4g} (epoch {line.best[1] + 1})" in lines[2]
    assert len(line.epoch_seconds) == 3


def test_best_follows_the_monitor_and_its_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = attrs.evolve(make_context(tmp_path), monitor="val/loss", monitor_mode="min")
    bus = Bus()
    line = bus.attach(EpochLine(context))
    scripted_run(bus, context, epochs=3)  # val/loss is 1 / (epoch + 1): the last is the best
    assert line.best == (pytest.approx(1 / 3), 2)
    assert "best 0.3333 (epoch 3)" in capsys.readouterr().out.splitlines()[-1]


def test_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = attrs.evolve(make_context(tmp_path), verbosity="quiet")
    bus = Bus()
    bus.attach(EpochLine(context))
    scripted_run(bus, context, epochs=2)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.04, "0.0s"), (41.25, "41.2s"), (206, "3m26s"), (7500, "2h05m")]
)
def test_durations_read_at_a_glance(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_of_equal_scores_the_newer_epoch_is_best_as_the_checkpoint_keeps(tmp_path: Path) -> None:
    line = EpochLine(make_context(tmp_path))
    for epoch, score in enumerate((0.5, 0.9, 0.9)):
        metrics = {"val/acc_top1": score}
        line.line(TrainEpochEnd(epoch=epoch, global_step=epoch, metrics=metrics, validated=True))
    assert line.best == (0.9, 2)

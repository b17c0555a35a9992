"""Plots: the training history, one picture per family, kept across a resume."""

from __future__ import annotations

import csv
import functools
import importlib
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import TrainEpochEnd
from harness.core.testing import make_context, scripted_run
from harness.io.background import BackgroundWriter
from harness.settings import Settings
from harness.training.fit import run
from subscribers._draw_history import Best, best_epoch, chart_of, curves, draw_family
from subscribers.plots import Plots

MakeSettings = Callable[..., Settings]
ACCURACY = [0.30, 0.81, 0.62]  # best at epoch 1


def metrics(epoch: int) -> dict[str, float]:
    """An epoch's metrics as `BusCallback` publishes them (harness.training.callback.normalised)."""
    return {
        "train/loss": 2.0 / (epoch + 1),
        "val/loss": 2.2 / (epoch + 1),
        "val/acc_top1": ACCURACY[epoch],
        "val/acc_top5": min(1.0, ACCURACY[epoch] + 0.15),
        "lr": 0.1 * 0.5**epoch,
    }


def few(epoch: int) -> dict[str, float]:
    """Two pictures' worth of metrics, for tests about the history rather than the pictures."""
    return {"train/loss": 2.0 / (epoch + 1), "val/acc_top1": ACCURACY[epoch]}


def epoch_end(
    bus: Bus, epoch: int, values: Mapping[str, float] | None = None, *, validated: bool = True
) -> None:
    values = values or metrics(epoch)
    if not validated:  # as BusCallback publishes an epoch without validation
        values = {key: value for key, value in values.items() if not key.startswith("val/")}
    bus.publish(TrainEpochEnd(epoch=epoch, global_step=epoch * 10, metrics=values, validated=validated))


def history_rows(context: RunContext) -> list[dict[str, str]]:
    text = (context.run_dir / "plots" / "history.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`tests/plugins/background_jobs.py`, importable here and in a writer's worker process."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "plugins"))
    return importlib.import_module("background_jobs")


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    return make_context(tmp_path)


def test_one_picture_per_family_and_the_history_table_after_each_epoch(context: RunContext) -> None:
    bus = Bus()
    bus.attach(Plots(context))
    epoch_end(bus, 0)
    folder = context.run_dir / "plots"
    names = {"losses.png", "accuracy.png", "learning_rate.png", "history.csv"}
    assert {path.name for path in folder.iterdir()} == names
    for name in names - {"history.csv"}:
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
        assert f"plots/{name}" in context.artifacts

    epoch_end(bus, 1)
    rows = history_rows(context)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[1]["train/loss"]) == pytest.approx(1.0)


def test_on_a_background_writer_each_epoch_writes_what_it_writes_inline(
    tmp_path: Path, jobs: ModuleType
) -> None:
    contexts = {}
    for name in ("inline", "background"):
        context = contexts[name] = make_context(tmp_path / name)
        gate = tmp_path / "gate"
        if name == "background":
            context = contexts[name] = attrs.evolve(context, background=BackgroundWriter())
            # The worker is busy until both epochs have ended: epoch 0's job must draw epoch 0's history.
            context.background.submit(
                "Test", functools.partial(jobs.wait_for, gate), record=context.record_artifact
            )
        bus = Bus()
        bus.attach(Plots(context))
        epoch_end(bus, 0)
        # Runs right after epoch 0's job, inline or not: the folder as epoch 0 left it.
        snapshot = functools.partial(jobs.snapshot, context.run_dir / "plots", tmp_path / f"{name}_epoch_0")
        context.submit("Test", snapshot)
        epoch_end(bus, 1)
    background = contexts["background"]
    assert not (background.run_dir / "plots").exists()

    gate.touch()
    assert background.background is not None
    assert background.background.close() == []
    for name in ("history.csv", "losses.png", "accuracy.png", "learning_rate.png"):
        for inline_dir, background_dir in (
            (tmp_path / "inline_epoch_0", tmp_path / "background_epoch_0"),
            (contexts["inline"].run_dir / "plots", background.run_dir / "plots"),
        ):
            assert (background_dir / name).read_bytes() == (inline_dir / name).read_bytes(), name
    assert (tmp_path / "inline_epoch_0" / "history.csv").read_text().count("\n") == 2
    assert background.artifacts == contexts["inline"].artifacts


def test_a_family_with_no_metric_gets_no_picture(context: RunContext) -> None:
    bus = Bus()
    bus.attach(Plots(context))
    epoch_end(bus, 0, {"train/loss": 1.0})
    assert sorted(path.name for path in (context.run_dir / "plots").iterdir()) == [
        "history.csv",
        "losses.png",
    ]


def test_the_whole_curve_survives_a_resume_through_a_checkpoint(context: RunContext, tmp_path: Path) -> None:
    first = Plots(context)
    bus = Bus()
    bus.attach(first)
    for epoch in range(2):
        epoch_end(bus, epoch, few(epoch))
    saved = tmp_path / "state.pt"
    torch.save(first.state_dict(), saved)

    resumed = Plots(context)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    bus = Bus()
    bus.attach(resumed)
    epoch_end(bus, 2, few(2))

    rows = history_rows(context)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert [float(row["val/acc_top1"]) for row in rows] == ACCURACY
    assert best_epoch(resumed.history, context.monitor) == Best(epoch=1, metric="val/acc_top1", value=0.81)


def test_the_best_epoch_is_marked_on_every_picture_and_starred_on_its_curve(context: RunContext) -> None:
    history = {epoch: metrics(epoch) for epoch in range(3)}
    best = best_epoch(history, "val/acc_top1")
    assert best is not None and best.epoch == 1
    for family, family_curves in curves(history).items():
        chart = chart_of(family, family_curves, best)
        assert "best epoch 1 (val/acc_top1 0.81)" in [label for label, _, _ in chart.legend_entries]
        assert chart.marked_x == 1, f"no line at the best epoch on the {family} picture"
        assert (chart.star is not None) == (family == "accuracy")
        assert chart.star in (None, (1.0, 0.81))


def test_the_marked_epoch_and_the_star_are_on_the_picture(tmp_path: Path) -> None:
    history = {epoch: metrics(epoch) for epoch in range(3)}
    best = best_epoch(history, "val/acc_top1")
    accuracy = curves(history)["accuracy"]
    with_best = np.asarray(Image.open(draw_family(tmp_path / "a.png", "accuracy", accuracy, best)))
    without = np.asarray(Image.open(draw_family(tmp_path / "b.png", "accuracy", accuracy, None)))
    assert with_best.shape == without.shape == (540, 900, 3)
    differs = np.any(with_best != without, axis=2)
    assert differs.sum() > 200, "the best epoch's line, star and legend entry change the picture"
    black = np.all(with_best < 40, axis=2) & differs
    assert black.sum() > 50, "a black star on the monitored curve"


def test_lower_is_better_for_a_monitored_loss() -> None:
    history = {0: {"val/loss": 1.0}, 1: {"val/loss": 0.4}, 2: {"val/loss": 0.6}}
    assert best_epoch(history, "val/loss", "min") == Best(epoch=1, metric="val/loss", value=0.4)
    assert best_epoch(history, "val/acc_top1") is None


def test_keys_go_to_the_right_picture() -> None:
    history = {0: {"train/loss": 1.0, "val/acc_top5": 0.9, "lr": 1e-2, "lr/1": 1e-3, "epoch": 0.0}}
    grouped = curves(history)
    assert grouped == {
        "losses": {"train/loss": [(0, 1.0)]},
        "accuracy": {"val/acc_top5": [(0, 0.9)]},
        "learning_rate": {"lr": [(0, 1e-2)], "lr/1": [(0, 1e-3)]},
    }


def test_an_epoch_without_validation_leaves_a_gap_in_the_validation_columns(context: RunContext) -> None:
    bus = Bus()
    bus.attach(Plots(context))
    epoch_end(bus, 0, few(0))
    epoch_end(bus, 1, few(1), validated=False)
    rows = history_rows(context)
    assert rows[1]["val/acc_top1"] == ""
    assert rows[1]["train/loss"] != ""


def test_only_rank_zero_draws(context: RunContext) -> None:
    context.rank = 1
    bus = Bus(rank=1)
    bus.attach(Plots(context))
    epoch_end(bus, 0)
    assert not (context.run_dir / "plots").exists()


def test_a_whole_scripted_run_draws_losses_accuracy_and_learning_rate(context: RunContext) -> None:
    bus = Bus()
    bus.attach(Plots(context))
    scripted_run(bus, context, epochs=2, sanity_check=True)
    assert {"plots/losses.png", "plots/accuracy.png", "plots/learning_rate.png"} <= set(context.artifacts)


def test_a_malformed_state_is_refused_with_what_was_expected(context: RunContext) -> None:
    with pytest.raises(ValueError, match=r"plots state: expected .*history"):
        Plots(context).load_state_dict({"epochs": []})


@pytest.mark.slow
def test_a_resumed_run_draws_the_whole_history(make_settings: MakeSettings) -> None:
    quick = ("plots", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1")
    first = run(make_settings(*quick, "trainer.max_epochs=2"))
    resumed = run(make_settings(*quick, "trainer.max_epochs=3", "trainer.resume='last'"))
    assert resumed.run_dir == first.run_dir

    rows = list(csv.DictReader(io.StringIO((resumed.run_dir / "plots" / "history.csv").read_text())))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    for row in rows:
        assert row["train/loss"] and row["val/loss"] and row["val/acc_top1"] and row["lr"]
    for name in ("losses", "accuracy", "learning_rate"):
        assert f"plots/{name}.png" in resumed.summary.artifacts

"""SamplerTracking, driven by synthetic events over a real tracking sampler."""

from __future__ import annotations

import csv
import functools
import importlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Literal

import attrs
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import WeightedRandomSampler

from harness.core.bus import Bus
from harness.core.context import DatasetInfo, RunContext
from harness.core.events import TrainEpochEnd, TrainEpochStart
from harness.core.testing import batch_end, make_context, scripted_run
from harness.io.background import BackgroundWriter
from harness.settings import Settings
from harness.training.fit import run as run_harness
from harness.training.sampler import class_counts, make_sampler
from subscribers.sampler_tracking import SamplerTracking, SamplerTrackingSettings

MakeSettings = Callable[..., Settings]

# 10:1 between the largest and the smallest class.
COUNTS = (1000, 300, 100)


class LoaderStandIn:
    """Iterates the training sampler at each epoch start, as Lightning's loop does."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochStart, self.on_train_epoch_start)

    def on_train_epoch_start(self, event: TrainEpochStart) -> None:
        sampler = self.context.train_sampler
        assert isinstance(sampler, WeightedRandomSampler)
        sampler.set_epoch(event.epoch)  # type: ignore[attr-defined]
        list(sampler)


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`tests/plugins/background_jobs.py`, importable here and in a writer's worker process."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "plugins"))
    return importlib.import_module("background_jobs")


def imbalanced_context(tmp_path: Path, *, balanced: bool, counts: tuple[int, ...] = COUNTS) -> RunContext:
    context = make_context(tmp_path, num_classes=len(counts))
    train = tuple((tmp_path / f"{c}_{n}.png", c) for c, count in enumerate(counts) for n in range(count))
    context = attrs.evolve(context, data=DatasetInfo(root=tmp_path, train=train, val=train[::10]))
    context.train_sampler = make_sampler(context.data.train_targets, balanced=balanced, seed=0)
    return context


def run(context: RunContext, epochs: int, settings: SamplerTrackingSettings | None = None) -> SamplerTracking:
    bus = Bus()
    bus.attach(LoaderStandIn(context))
    tracking = SamplerTracking(context, settings)
    bus.attach(tracking)
    scripted_run(bus, context, epochs=epochs, train_batches=1, val_batches=1)
    return tracking


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def drawn_totals(rows: list[dict[str, str]], names: tuple[str, ...]) -> list[int]:
    return [sum(int(row[name]) for row in rows) for name in names]


def test_balanced_draws_over_a_run_are_uniform(tmp_path: Path) -> None:
    context = imbalanced_context(tmp_path, balanced=True)

    run(context, epochs=2)

    rows = read_csv(context.run_dir / "sampler_tracking" / "draws.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert all(int(row["total"]) == sum(COUNTS) for row in rows)
    totals = drawn_totals(rows, context.class_names)
    assert chisquare(totals).pvalue > 0.001


def test_plain_draws_over_a_run_follow_the_data_set(tmp_path: Path) -> None:
    context = imbalanced_context(tmp_path, balanced=False)

    run(context, epochs=2)

    totals = drawn_totals(read_csv(context.run_dir / "sampler_tracking" / "draws.csv"), context.class_names)
    expected = [count / sum(COUNTS) * sum(totals) for count in COUNTS]
    assert chisquare(totals, expected).pvalue > 0.001
    assert chisquare(totals).pvalue < 0.001


def test_csv_rows_are_the_recorded_draws(tmp_path: Path) -> None:
    context = imbalanced_context(tmp_path, balanced=True)
    sampler = context.train_sampler
    tracking = run(context, epochs=2)

    assert context.data is not None
    rows = read_csv(context.run_dir / "sampler_tracking" / "draws.csv")
    for draw, row, entry in zip(sampler.history, rows, tracking.history, strict=True):  # type: ignore[union-attr]
        counts = class_counts(draw.indices, context.data.train_targets, 3).tolist()
        assert [int(row[name]) for name in context.class_names] == counts == entry["drawn"]


def test_prints_a_table_and_records_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = imbalanced_context(tmp_path, balanced=True)

    run(context, epochs=2)

    out = " ".join(capsys.readouterr().out.split())
    assert "Sampler draws, epoch 0" in out
    assert "Sampler draws, epoch 1" not in out, "shares within the drift threshold: printed once"
    assert "class_0 │ 1000 │ 71.4% │ 33.3%" in out
    folder = context.run_dir / "sampler_tracking"
    assert (folder / "draws.png").stat().st_size > 0
    assert context.artifacts["sampler_draws"] == "sampler_tracking/draws.csv"
    assert context.artifacts["sampler_draws_plot"] == "sampler_tracking/draws.png"
    assert not (folder / "per_rank.csv").exists()


@pytest.mark.parametrize(
    ("verbosity", "threshold", "printed"),
    [
        ("normal", 0.05, [0]),
        ("normal", 0.0001, [0, 1, 2]),  # 1,400 draws stray from 1/3 by more than 0.01%
        ("verbose", 0.05, [0, 1, 2]),
        ("quiet", 0.0001, []),
    ],
)
def test_the_table_is_printed_at_the_first_epoch_and_on_drift(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    verbosity: Literal["quiet", "normal", "verbose"],
    threshold: float,
    printed: list[int],
) -> None:
    context = attrs.evolve(imbalanced_context(tmp_path, balanced=True), verbosity=verbosity)

    run(context, epochs=3, settings=SamplerTrackingSettings(drift_threshold=threshold))

    out = capsys.readouterr().out
    assert [e for e in range(3) if f"Sampler draws, epoch {e}" in out] == printed
    assert (context.run_dir / "sampler_tracking" / "draws.csv").is_file(), "the files are written anyway"


class FolderSnapshot:
    """After the first epoch, copies the written folder as it is then, through the subscriber's writer."""

    def __init__(self, context: RunContext, jobs: ModuleType, target: Path) -> None:
        self.context = context
        self.jobs = jobs
        self.target = target

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end)

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        if event.epoch == 0:
            job = functools.partial(
                self.jobs.snapshot, self.context.run_dir / "sampler_tracking", self.target
            )
            self.context.submit("FolderSnapshot", job)


def run_with_snapshot(context: RunContext, jobs: ModuleType, target: Path) -> None:
    bus = Bus()
    bus.attach(LoaderStandIn(context))
    bus.attach(SamplerTracking(context))
    bus.attach(FolderSnapshot(context, jobs, target))
    scripted_run(bus, context, epochs=2, train_batches=1, val_batches=1)


def test_on_a_background_writer_each_epoch_writes_what_it_writes_inline(
    tmp_path: Path, jobs: ModuleType
) -> None:
    inline = imbalanced_context(tmp_path / "inline", balanced=True)
    run_with_snapshot(inline, jobs, tmp_path / "inline_epoch_0")

    background = imbalanced_context(tmp_path / "background", balanced=True)
    writer = BackgroundWriter()
    background = attrs.evolve(background, background=writer)
    gate = tmp_path / "gate"
    # The worker is busy until the run is over: epoch 0's job must write epoch 0's history.
    writer.submit("Test", functools.partial(jobs.wait_for, gate), record=background.record_artifact)
    run_with_snapshot(background, jobs, tmp_path / "background_epoch_0")
    assert not (background.run_dir / "sampler_tracking").exists()
    gate.touch()
    assert writer.close() == []

    assert len(read_csv(tmp_path / "inline_epoch_0" / "draws.csv")) == 1
    assert len(read_csv(inline.run_dir / "sampler_tracking" / "draws.csv")) == 2
    for name in ("draws.csv", "trained.csv", "draws.png"):
        for inline_dir, background_dir in (
            (tmp_path / "inline_epoch_0", tmp_path / "background_epoch_0"),
            (inline.run_dir / "sampler_tracking", background.run_dir / "sampler_tracking"),
        ):
            assert (background_dir / name).read_bytes() == (inline_dir / name).read_bytes(), name
    assert background.artifacts == inline.artifacts


def test_state_round_trips_and_a_resumed_run_goes_on(tmp_path: Path) -> None:
    context = imbalanced_context(tmp_path, balanced=True)
    first = run(context, epochs=2)
    saved = tmp_path / "state.pt"
    torch.save(first.state_dict(), saved)

    resumed = SamplerTracking(context)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    context.epoch = 1  # resume replays epoch 1, which then replaces the recorded one
    bus = Bus()
    bus.attach(LoaderStandIn(context))
    bus.attach(resumed)
    scripted_run(bus, context, epochs=3, train_batches=1, val_batches=1)

    assert resumed.state_dict() != first.state_dict()
    assert [entry["epoch"] for entry in resumed.history] == [0, 1, 2]
    assert resumed.history[0] == first.history[0]
    assert resumed.history[1]["drawn"] == first.history[1]["drawn"]  # seed + epoch: the same draw
    rows = read_csv(context.run_dir / "sampler_tracking" / "draws.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]


def one_epoch(bus: Bus, epoch: int, batches: list[list[int]]) -> None:
    """An epoch whose training batches hold `batches` (class indices)."""
    bus.publish(TrainEpochStart(epoch=epoch, global_step=0))
    for index, targets in enumerate(batches):
        bus.publish(
            batch_end(epoch=epoch, batch_idx=index, targets=torch.tensor(targets), batch_size=len(targets))
        )
    bus.publish(TrainEpochEnd(epoch=epoch, global_step=len(batches), metrics={}))


def test_trained_counts_the_classes_of_this_rank_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = imbalanced_context(tmp_path, balanced=True)
    context.world_size = 2
    bus = Bus()
    bus.attach(LoaderStandIn(context))
    tracking = SamplerTracking(context)
    bus.attach(tracking)

    one_epoch(bus, 0, [[0, 2, 2], [1, 2]])
    one_epoch(bus, 1, [[1, 1]])

    assert [entry["trained"] for entry in tracking.history] == [[1, 1, 3], [0, 2, 0]]
    assert all(sum(entry["drawn"]) == sum(COUNTS) for entry in tracking.history)
    rows = read_csv(context.run_dir / "sampler_tracking" / "trained.csv")
    assert [(row["epoch"], row["total"], row["class_2"]) for row in rows] == [
        ("0", "5", "3"),
        ("1", "2", "0"),
    ]
    out = " ".join(capsys.readouterr().out.split())
    assert "trained: rank 0's share of 2 ranks" in out


def test_other_ranks_record_their_share_but_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = imbalanced_context(tmp_path, balanced=True)
    context.world_size, context.rank = 2, 1
    bus = Bus(rank=1)
    bus.attach(LoaderStandIn(context))
    tracking = SamplerTracking(context)
    bus.attach(tracking)

    one_epoch(bus, 0, [[2, 2, 0]])

    assert tracking.history[0]["trained"] == [1, 0, 2]
    assert sum(tracking.history[0]["drawn"]) == sum(COUNTS)
    assert not (context.run_dir / "sampler_tracking").exists()
    assert "Sampler draws" not in capsys.readouterr().out


def test_a_sampler_that_does_not_track_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    context = make_context(tmp_path)
    context.train_sampler = WeightedRandomSampler([1.0] * 12, 12)
    bus = Bus()
    bus.attach(SamplerTracking(context))

    with caplog.at_level(logging.WARNING, logger="subscribers.sampler_tracking"):
        for epoch in range(2):
            bus.publish(TrainEpochEnd(epoch=epoch, global_step=epoch, metrics={}))

    assert [r.getMessage() for r in caplog.records if "WeightedRandomSampler" in r.getMessage()] == [
        "sampler_tracking: the training sampler is WeightedRandomSampler, not a "
        "TrackingWeightedRandomSampler (harness.training.sampler.make_sampler builds one); nothing to report"
    ]
    assert not (context.run_dir / "sampler_tracking").exists()


def test_an_epoch_without_a_new_draw_adds_no_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    context = imbalanced_context(tmp_path, balanced=True)
    tracking = run(context, epochs=1)
    bus = Bus()
    bus.attach(tracking)

    with caplog.at_level(logging.WARNING, logger="subscribers.sampler_tracking"):
        bus.publish(TrainEpochEnd(epoch=1, global_step=2, metrics={}))

    assert "drew nothing new in epoch 1" in caplog.text
    assert len(tracking.history) == 1


def test_many_classes_show_the_furthest_from_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = imbalanced_context(tmp_path, balanced=True, counts=tuple(range(2, 42)))

    run(context, epochs=1, settings=SamplerTrackingSettings(max_table_rows=5))

    out = " ".join(capsys.readouterr().out.split())
    assert "showing the 5 of 40 classes furthest from their expected share" in out
    assert sum(f"class_{c} " in out for c in range(40)) == 5
    header = next(csv.reader(io.StringIO((context.run_dir / "sampler_tracking" / "draws.csv").read_text())))
    assert len(header) == 2 + 40


@pytest.mark.slow
def test_a_real_run_reports_every_epoch_and_resumes(make_settings: MakeSettings) -> None:
    common = ("sampler_tracking", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0")
    first = run_harness(make_settings(*common))
    folder = first.run_dir / "sampler_tracking"
    epoch_0 = read_csv(folder / "draws.csv")

    resumed = run_harness(make_settings(*common, "trainer.max_epochs=2", "trainer.resume='last'"))

    rows = read_csv(folder / "draws.csv")
    assert resumed.run_dir == first.run_dir
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert rows[0] == epoch_0[0]  # restored from the checkpoint, not drawn again
    train_images = int(rows[0]["total"])
    assert all(int(row["total"]) == train_images for row in rows)
    # One process, whole epochs: the batches held exactly the classes the sampler drew.
    assert read_csv(folder / "trained.csv") == rows
    assert resumed.summary.artifacts["sampler_draws"] == "sampler_tracking/draws.csv"
    assert (folder / "draws.png").exists()


def test_soft_targets_are_not_counted_as_classes(tmp_path: Path) -> None:
    context = imbalanced_context(tmp_path, balanced=True)
    bus = Bus()
    bus.attach(LoaderStandIn(context))
    tracking = SamplerTracking(context)
    bus.attach(tracking)

    bus.publish(TrainEpochStart(epoch=0, global_step=0))
    bus.publish(batch_end(batch_size=2, targets=torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])))
    bus.publish(batch_end(batch_size=1, targets=torch.tensor([2])))
    bus.publish(TrainEpochEnd(epoch=0, global_step=2, metrics={}))

    assert tracking.history[0]["trained"] == [0, 0, 1]

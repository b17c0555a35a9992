"""ConfusionMatrix: counts from the logits already computed, one picture and CSV per epoch."""

from __future__ import annotations

import csv
import functools
import importlib
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import attrs
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torchvision.models import ResNet

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import ValidationEpochEnd, ValidationSwapIn, ValidationSwapOut
from harness.core.testing import batch_end, make_context, scripted_run, tiny_model
from harness.io.background import BackgroundWriter
from harness.pictures.confusion import counts_csv, draw_confusion, normalise
from harness.settings import Settings
from harness.training.data import scan
from harness.training.fit import run
from subscribers.confusion_matrix import ConfusionMatrix, ConfusionMatrixSettings

NAMES = ("cat", "dog", "bird")
MakeSettings = Callable[..., Settings]


def logits_for(predictions: list[int], num_classes: int = 3) -> torch.Tensor:
    return nn.functional.one_hot(torch.tensor(predictions), num_classes).float() * 5.0


def validate(
    bus: Bus, epoch: int, batches: list[tuple[list[int], list[int]]], *, sanity_check: bool = False
) -> None:
    for index, (targets, predictions) in enumerate(batches):
        bus.publish(
            batch_end(
                stage="validate",
                epoch=epoch,
                batch_idx=index,
                targets=torch.tensor(targets),
                logits=logits_for(predictions),
                sanity_check=sanity_check,
            )
        )
    bus.publish(ValidationEpochEnd(epoch=epoch, global_step=0, metrics={}, sanity_check=sanity_check))


def read_counts(path: Path) -> tuple[list[str], list[str], list[list[int]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        header, *rows = csv.reader(handle)
    return header[1:], [row[0] for row in rows], [[int(v) for v in row[1:]] for row in rows]


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    return make_context(tmp_path, class_names=NAMES)


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`tests/plugins/background_jobs.py`, importable here and in a writer's worker process."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "plugins"))
    return importlib.import_module("background_jobs")


def attach(context: RunContext, **options: object) -> Bus:
    bus = Bus()
    bus.attach(ConfusionMatrix(context, ConfusionMatrixSettings(**options)))  # type: ignore[arg-type]
    return bus


def test_known_logits_and_targets_give_the_known_matrix(context: RunContext) -> None:
    bus = attach(context)
    # targets, predictions: cat->cat, cat->dog, dog->dog | bird->bird, bird->cat, bird->bird
    validate(bus, 0, [([0, 0, 1], [0, 1, 1]), ([2, 2, 2], [2, 0, 2])])

    predicted, true, counts = read_counts(context.run_dir / "confusion_matrix" / "epoch_000.csv")
    assert predicted == list(NAMES)
    assert true == list(NAMES)
    assert counts == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_writes_a_picture_and_latest_copies_and_lists_them_in_the_summary(context: RunContext) -> None:
    bus = attach(context)
    validate(bus, 4, [([0, 1, 2], [0, 1, 1])])

    folder = context.run_dir / "confusion_matrix"
    with Image.open(folder / "epoch_004.png") as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 300
    assert (folder / "latest.png").read_bytes() == (folder / "epoch_004.png").read_bytes()
    assert (folder / "latest.csv").read_bytes() == (folder / "epoch_004.csv").read_bytes()
    assert {
        "confusion_matrix/epoch_004.png",
        "confusion_matrix/epoch_004.csv",
        "confusion_matrix/latest.png",
        "confusion_matrix/latest.csv",
    } <= set(context.artifacts)


def test_latest_follows_the_newest_epoch_and_each_epoch_starts_from_zero(context: RunContext) -> None:
    bus = attach(context)
    validate(bus, 0, [([0, 0], [0, 0])])
    validate(bus, 1, [([1, 2], [2, 2])])

    folder = context.run_dir / "confusion_matrix"
    assert read_counts(folder / "epoch_000.csv")[2] == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert read_counts(folder / "epoch_001.csv")[2] == [[0, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert (folder / "latest.csv").read_bytes() == (folder / "epoch_001.csv").read_bytes()
    assert (folder / "latest.png").read_bytes() == (folder / "epoch_001.png").read_bytes()


def test_on_a_background_writer_each_epoch_writes_what_it_writes_inline(
    tmp_path: Path, jobs: ModuleType
) -> None:
    epochs = [[([0, 1, 2], [0, 2, 2])], [([0, 0, 1], [1, 0, 1]), ([2], [2])]]
    inline = make_context(tmp_path / "inline", class_names=NAMES)
    background = make_context(tmp_path / "background", class_names=NAMES)
    writer = BackgroundWriter()
    background = attrs.evolve(background, background=writer)
    gate = tmp_path / "gate"
    # The worker is busy until both epochs have ended: epoch 0's job must draw epoch 0's counts.
    writer.submit("Test", functools.partial(jobs.wait_for, gate), record=background.record_artifact)
    for context in (inline, background):
        bus = attach(context)
        for epoch, batches in enumerate(epochs):
            validate(bus, epoch, batches)
    assert not (background.run_dir / "confusion_matrix").exists()

    gate.touch()
    assert writer.close() == []
    names = ["epoch_000.csv", "epoch_000.png", "epoch_001.csv", "epoch_001.png", "latest.csv", "latest.png"]
    for name in names:
        written = background.run_dir / "confusion_matrix" / name
        assert written.read_bytes() == (inline.run_dir / "confusion_matrix" / name).read_bytes(), name
    assert background.artifacts == inline.artifacts


def test_the_sanity_check_draws_nothing_and_counts_nothing(context: RunContext) -> None:
    bus = attach(context)
    validate(bus, 0, [([0, 1, 2], [2, 2, 2])], sanity_check=True)
    assert not (context.run_dir / "confusion_matrix").exists()
    assert context.artifacts == {}

    validate(bus, 0, [([1], [1])])
    counts = read_counts(context.run_dir / "confusion_matrix" / "epoch_000.csv")[2]
    assert counts == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_sanity_batches_then_real_ones_in_one_validation_count_only_the_real_ones(
    context: RunContext,
) -> None:
    bus = attach(context)
    bus.publish(
        batch_end(stage="validate", targets=torch.tensor([0]), logits=logits_for([2]), sanity_check=True)
    )
    validate(bus, 0, [([2], [2])])
    assert read_counts(context.run_dir / "confusion_matrix" / "epoch_000.csv")[2][2] == [0, 0, 1]


def test_only_rank_zero_writes(context: RunContext) -> None:
    context.rank, context.world_size = 1, 2
    bus = Bus(rank=1)
    subscriber = ConfusionMatrix(context)
    bus.attach(subscriber)
    validate(bus, 0, [([0, 1], [0, 1])])
    assert not (context.run_dir / "confusion_matrix").exists()
    assert subscriber.metric.update_count == 0, "the metric is reset on every rank after compute()"


def test_an_epoch_without_batches_writes_nothing(context: RunContext) -> None:
    bus = attach(context)
    bus.publish(ValidationEpochEnd(epoch=0, global_step=0, metrics={}))
    assert not (context.run_dir / "confusion_matrix").exists()


def test_class_names_with_commas_and_quotes_survive_the_csv(tmp_path: Path) -> None:
    names = ('a, "quoted" name', "plain", "ünïcode")
    context = make_context(tmp_path, class_names=names)
    bus = attach(context)
    validate(bus, 0, [([0, 1, 2], [0, 1, 2])])
    predicted, true, _ = read_counts(context.run_dir / "confusion_matrix" / "epoch_000.csv")
    assert predicted == true == list(names)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("none", [[2.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        ("true", [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        ("pred", [[1.0, 2 / 3, 0.0], [0.0, 1 / 3, 0.0], [0.0, 0.0, 0.0]]),
    ],
)
def test_normalisation_modes_divide_by_rows_or_columns_and_leave_empty_classes_at_zero(
    mode: str, expected: list[list[float]]
) -> None:
    counts = torch.tensor([[2, 2, 0], [0, 1, 0], [0, 0, 0]])
    assert np.allclose(normalise(counts.numpy(), mode), np.array(expected))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["none", "true", "pred"])
def test_every_normalisation_mode_draws_and_keeps_raw_counts_in_the_csv(
    context: RunContext, mode: str
) -> None:
    bus = attach(context, normalize=mode)
    validate(bus, 0, [([0, 0, 1, 2], [0, 1, 1, 2])])
    folder = context.run_dir / "confusion_matrix"
    assert read_counts(folder / "epoch_000.csv")[2] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    with Image.open(folder / "epoch_000.png") as image:
        assert image.format == "PNG"


def test_the_normalised_view_changes_the_picture(tmp_path: Path) -> None:
    counts = torch.tensor([[90, 10], [1, 1]])
    pictures = {
        mode: draw_confusion(
            tmp_path / f"{mode}.png", counts, ["a", "b"], normalize=mode, title="a"
        ).read_bytes()
        for mode in ("none", "true", "pred")
    }
    assert len(set(pictures.values())) == 3


@pytest.mark.parametrize("num_classes", [3, 40])
def test_many_long_and_non_ascii_class_names_draw_without_missing_glyphs(
    tmp_path: Path, num_classes: int
) -> None:
    extras = ["café crème", "Ελληνικά γράμματα", "Кириллица", "straße ñandú"]
    names = [f"class with a rather long name {i}" for i in range(num_classes - len(extras))] + extras
    names = names[-num_classes:]
    eye = torch.eye(num_classes, dtype=torch.long)
    counts = eye * 70 + eye.roll(1, dims=1) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = draw_confusion(tmp_path / "cm.png", counts, names, normalize="true", title="a")
    with Image.open(path) as image:
        # the picture grows with the class count instead of crowding the cells
        assert image.height >= min(num_classes, 60) * 0.22 * 100


def test_counts_csv_has_a_header_and_one_row_per_true_class() -> None:
    text = counts_csv(torch.tensor([[3, 0], [1, 2]]), ["x", "y"])
    assert text.splitlines() == ["true \\ predicted,x,y", "x,3,0", "y,1,2"]


class CountingModel(nn.Module):
    """Wraps a model and counts its forward calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        output: torch.Tensor = self.inner(inputs)
        return output


@pytest.mark.parametrize("sanity_check", [False, True])
def test_the_model_runs_as_often_with_the_confusion_matrix_as_without(
    tmp_path: Path, sanity_check: bool
) -> None:
    calls = {}
    for enabled in (False, True):
        model = CountingModel(tiny_model(num_classes=3))
        context = make_context(tmp_path / str(enabled), class_names=NAMES, model=model)
        bus = Bus()
        if enabled:
            bus.attach(ConfusionMatrix(context))
        scripted_run(bus, context, epochs=2, train_batches=2, val_batches=3, sanity_check=sanity_check)
        calls[enabled] = model.calls
        assert (context.run_dir / "confusion_matrix" / "latest.png").exists() == enabled
    assert calls[True] == calls[False] == 2 * (2 + 3) + (3 if sanity_check else 0)


class ValidationForwards:
    """Counts forward calls of the run's network (ResNet-18) during validation (the sanity check excluded)."""

    def __init__(self) -> None:
        self.validating = False
        self.calls = 0

    def connect(self, bus: Bus) -> None:
        bus.subscribe(ValidationSwapIn, self.on_validation_swap_in)
        bus.subscribe(ValidationSwapOut, self.on_validation_swap_out)

    def on_validation_swap_in(self, event: ValidationSwapIn) -> None:
        self.validating = not event.sanity_check

    def on_validation_swap_out(self, event: ValidationSwapOut) -> None:
        self.validating = False

    def hook(self, module: nn.Module, *_: object) -> None:
        # The network itself: the Classifier runs it through `run_network`, not its own forward.
        if self.validating and isinstance(module, ResNet):
            self.calls += 1


@pytest.mark.slow
def test_a_real_run_validates_with_one_forward_per_batch(make_settings: MakeSettings) -> None:
    calls = {}
    for enabled in (False, True):
        names = ["confusion_matrix"] if enabled else []
        settings = make_settings(*names, "trainer.max_epochs=2", "trainer.limit_train_batches=1")
        counter = ValidationForwards()
        # A global hook, removed below: the model is built inside run(), out of reach.
        handle = register_module_forward_hook(counter.hook)
        try:
            result = run(settings, extra_subscribers={"counter": counter})
        finally:
            handle.remove()
        calls[enabled] = counter.calls
        folder = result.run_dir / "confusion_matrix"
        if enabled:
            assert sorted(path.name for path in folder.iterdir()) == [
                "epoch_000.csv",
                "epoch_000.png",
                "epoch_001.csv",
                "epoch_001.png",
                "latest.csv",
                "latest.png",
                "per_class",
            ]
            assert sorted(p.name for p in (folder / "per_class").iterdir()) == [
                "epoch_000.csv",
                "epoch_001.csv",
                "latest.csv",
            ]
            counted = sum(sum(row) for row in read_counts(folder / "latest.csv")[2])
            info, _ = scan(settings.data, settings.run.seed)
            assert counted == len(info.val)
            assert "confusion_matrix/latest.png" in result.summary.artifacts
        else:
            assert not folder.exists()
    assert calls[True] == calls[False] > 0


@pytest.mark.slow
def test_under_ddp_every_rank_computes_and_rank_zero_writes_the_whole_matrix(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(
        "confusion_matrix",
        "trainer.strategy='ddp_spawn'",
        "trainer.devices=2",
        "data.batch_size=4",
        "trainer.limit_train_batches=1",
    )
    result = run(settings)
    folder = result.run_dir / "confusion_matrix"
    assert sorted(path.name for path in folder.iterdir()) == [
        "epoch_000.csv",
        "epoch_000.png",
        "latest.csv",
        "latest.png",
        "per_class",
    ]
    info, _ = scan(settings.data, settings.run.seed)
    # Each rank saw half of the validation set; the written matrix holds all of it.
    counted = sum(sum(row) for row in read_counts(folder / "latest.csv")[2])
    assert counted == len(info.val)


def test_the_test_stage_is_counted_apart_and_drawn_as_test(context: RunContext) -> None:
    from harness.core.events import TestEpochEnd, TestStart

    bus = attach(context)
    bus.publish(TestStart(epoch=0, global_step=0))
    for batch_idx, (targets, predicted) in enumerate([([0, 0, 1], [0, 1, 1]), ([2, 2], [2, 0])]):
        logits = torch.nn.functional.one_hot(torch.tensor(predicted), 3).float() * 5
        bus.publish(
            batch_end(stage="test", batch_idx=batch_idx, targets=torch.tensor(targets), logits=logits)
        )
    bus.publish(TestEpochEnd(epoch=0, global_step=0, metrics={}))

    folder = context.run_dir / "confusion_matrix"
    _, _, counts = read_counts(folder / "test.csv")
    assert counts == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert (folder / "test.png").is_file()
    rows = list(csv.reader((folder / "per_class" / "test.csv").open()))
    assert rows[0] == ["class", "precision", "recall", "f1", "support"]
    assert [row[4] for row in rows[1:]] == ["2", "1", "2"]
    assert not list(folder.glob("epoch_*"))


def test_every_validation_epoch_writes_per_class_figures(context: RunContext) -> None:
    bus = attach(context)
    validate(bus, 2, [([0, 1, 2, 2], [0, 1, 1, 2])])
    rows = list(csv.reader((context.run_dir / "confusion_matrix" / "per_class" / "epoch_002.csv").open()))
    by_class = {row[0]: row[1:] for row in rows[1:]}
    assert by_class[NAMES[1]][:2] == ["0.500000", "1.000000"]  # precision 1/2, recall 1/1
    assert by_class[NAMES[2]][1] == "0.500000"

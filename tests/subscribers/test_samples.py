"""Samples: a fixed, seeded choice of validation images with their predictions."""

from __future__ import annotations

import functools
import importlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import torch
from PIL import Image

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import ValidationEpochEnd
from harness.core.testing import batch_end, make_context
from harness.io.background import BackgroundWriter
from harness.settings import Settings
from harness.training.data import scan
from harness.training.fit import run
from subscribers._draw_samples import Shown, draw_samples, to_pixels, unnormalise
from subscribers.samples import Samples, SamplesSettings

MakeSettings = Callable[..., Settings]


def stream(total: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(total, 3, 8, 8, generator=generator)
    return images, torch.randint(0, num_classes, (total,), generator=generator)


def validate(
    bus: Bus,
    epoch: int,
    images: torch.Tensor,
    targets: torch.Tensor,
    logits: torch.Tensor,
    *,
    batch_size: int = 8,
    sanity_check: bool = False,
) -> None:
    for index, start in enumerate(range(0, len(targets), batch_size)):
        rows = slice(start, start + batch_size)
        bus.publish(
            batch_end(
                stage="validate",
                epoch=epoch,
                batch_idx=index,
                inputs=images[rows],
                targets=targets[rows],
                logits=logits[rows],
                sanity_check=sanity_check,
            )
        )
    bus.publish(ValidationEpochEnd(epoch=epoch, global_step=0, metrics={}, sanity_check=sanity_check))


def listing(context: RunContext, name: str = "latest.json") -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(
        (context.run_dir / "samples" / name).read_text(encoding="utf-8")
    )
    return result


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`tests/plugins/background_jobs.py`, importable here and in a writer's worker process."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "plugins"))
    return importlib.import_module("background_jobs")


def attach(context: RunContext, *, count: int = 16, seed: int = 0) -> Bus:
    bus = Bus()
    bus.attach(Samples(context, SamplesSettings(count=count, seed=seed)))
    return bus


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    return make_context(tmp_path, class_names=("cat", "dog", "bird"))


def test_the_same_images_are_shown_every_epoch_for_the_same_seed(context: RunContext) -> None:
    images, targets = stream(40, 3)
    bus = attach(context, count=6, seed=7)
    for epoch in range(2):
        logits = torch.randn(40, 3, generator=torch.Generator().manual_seed(100 + epoch))
        validate(bus, epoch, images, targets, logits)

    first, second = listing(context, "epoch_000.json"), listing(context, "epoch_001.json")
    assert len(first) == 6
    assert [row["position"] for row in first] == [row["position"] for row in second]
    assert [row["predicted"] for row in first] != [row["predicted"] for row in second]
    assert (context.run_dir / "samples" / "latest.png").read_bytes() == (
        context.run_dir / "samples" / "epoch_001.png"
    ).read_bytes()


def test_the_choice_does_not_depend_on_the_batch_size_and_spans_the_stream(tmp_path: Path) -> None:
    images, targets = stream(64, 3)
    logits = torch.randn(64, 3)
    chosen = []
    for batch_size in (4, 16):
        context = make_context(tmp_path / str(batch_size), class_names=("a", "b", "c"))
        validate(attach(context, count=8, seed=1), 0, images, targets, logits, batch_size=batch_size)
        chosen.append([row["position"] for row in listing(context)])
    assert chosen[0] == chosen[1]
    assert chosen[0] == sorted(chosen[0])
    assert chosen[0] != list(range(8)), "a seeded sample, not the first images"


def test_another_seed_shows_other_images(tmp_path: Path) -> None:
    images, targets = stream(64, 3)
    logits = torch.randn(64, 3)
    chosen = []
    for seed in (0, 1):
        context = make_context(tmp_path / str(seed), class_names=("a", "b", "c"))
        validate(attach(context, count=8, seed=seed), 0, images, targets, logits)
        chosen.append({row["position"] for row in listing(context)})
    assert chosen[0] != chosen[1]


def test_predictions_confidences_and_wrong_ones_come_from_the_logits(context: RunContext) -> None:
    images, _ = stream(3, 3)
    targets = torch.tensor([0, 1, 2])
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    validate(attach(context, count=5), 0, images, targets, logits)

    rows = listing(context)
    assert [row["position"] for row in rows] == [0, 1, 2], "fewer images than count: all are shown"
    assert [(row["true"], row["predicted"], row["correct"]) for row in rows] == [
        ("cat", "cat", True),
        ("dog", "bird", False),
        ("bird", "cat", False),
    ]
    expected = logits.softmax(dim=1).max(dim=1).values.tolist()
    assert [row["confidence"] for row in rows] == pytest.approx(expected, abs=1e-4)
    with Image.open(context.run_dir / "samples" / "epoch_000.png") as picture:
        assert picture.format == "PNG"
    assert {"samples/epoch_000.png", "samples/latest.png"} <= set(context.artifacts)


def test_on_a_background_writer_each_epoch_writes_what_it_writes_inline(
    tmp_path: Path, jobs: ModuleType
) -> None:
    images, targets = stream(24, 3)
    inline = make_context(tmp_path / "inline", class_names=("cat", "dog", "bird"))
    background = make_context(tmp_path / "background", class_names=("cat", "dog", "bird"))
    writer = BackgroundWriter()
    background = attrs.evolve(background, background=writer)
    gate = tmp_path / "gate"
    # The worker is busy until both epochs have ended: epoch 0's job must draw epoch 0's samples.
    writer.submit("Test", functools.partial(jobs.wait_for, gate), record=background.record_artifact)
    for context in (inline, background):
        bus = attach(context, count=5)
        for epoch in range(2):
            logits = torch.randn(24, 3, generator=torch.Generator().manual_seed(epoch))
            validate(bus, epoch, images, targets, logits)
    assert not (background.run_dir / "samples").exists()

    gate.touch()
    assert writer.close() == []
    names = [
        "epoch_000.json",
        "epoch_000.png",
        "epoch_001.json",
        "epoch_001.png",
        "latest.json",
        "latest.png",
    ]
    for name in names:
        written = background.run_dir / "samples" / name
        assert written.read_bytes() == (inline.run_dir / "samples" / name).read_bytes(), name
    assert listing(background, "epoch_000.json") != listing(background, "epoch_001.json")
    assert background.artifacts == inline.artifacts


def test_the_sanity_check_draws_nothing_and_leaves_no_images_behind(context: RunContext) -> None:
    images, targets = stream(16, 3)
    bus = attach(context, count=4)
    validate(bus, 0, images, targets, torch.randn(16, 3), sanity_check=True)
    assert not (context.run_dir / "samples").exists()

    validate(bus, 0, images[:2], targets[:2], torch.randn(2, 3))
    assert [row["position"] for row in listing(context)] == [0, 1]


def test_only_rank_zero_keeps_and_draws(context: RunContext) -> None:
    context.rank = 1
    bus = Bus(rank=1)
    subscriber = Samples(context)
    bus.attach(subscriber)
    images, targets = stream(8, 3)
    validate(bus, 0, images, targets, torch.randn(8, 3))
    assert not (context.run_dir / "samples").exists()
    assert subscriber.kept == []


def test_images_are_unnormalised_for_display() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    original = torch.rand(2, 3, 4, 4)
    normalised = (original - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(unnormalise(normalised, mean, std), original, atol=1e-6)
    grey = torch.zeros(1, 1, 2, 2)
    assert torch.allclose(unnormalise(grey, mean, std), torch.full((1, 1, 2, 2), 0.485))


@pytest.mark.parametrize("num_classes", [10, 40])
def test_long_and_non_ascii_names_draw_without_missing_glyphs(tmp_path: Path, num_classes: int) -> None:
    names = [f"class with a rather long name {i}" for i in range(num_classes - 3)]
    names += ["café crème", "Ελληνικά γράμματα", "Кириллица"]
    shown = [
        Shown(
            position=i,
            image=to_pixels(torch.rand(1, 3, 16, 16))[0],
            target=(i * 7) % num_classes,
            predicted=(i * 7 + i % 2) % num_classes,
            confidence=0.5,
        )
        for i in range(12)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = draw_samples(tmp_path / "grid.png", shown, names, epoch=3, seed=0)
    with Image.open(path) as picture:
        assert picture.width > 4 * 150


@pytest.mark.slow
def test_a_real_run_shows_the_same_validation_images_each_epoch(make_settings: MakeSettings) -> None:
    settings = make_settings("samples", "trainer.max_epochs=2", "trainer.limit_train_batches=1")
    result = run(settings)
    folder = result.run_dir / "samples"
    first, second = (json.loads((folder / f"epoch_{e:03d}.json").read_text()) for e in (0, 1))
    info, classes = scan(settings.data, settings.run.seed)
    assert len(first) == min(settings.subscribers["samples"].count, len(info.val))
    assert [row["position"] for row in first] == [row["position"] for row in second]
    assert [row["true"] for row in first] == [classes[info.val[row["position"]][1]] for row in first]
    assert "samples/latest.png" in result.summary.artifacts


def test_the_test_stage_draws_its_own_grid(context: RunContext) -> None:
    from harness.core.events import TestEpochEnd

    bus = attach(context, count=4)
    images, targets = stream(10, 3)
    bus.publish(batch_end(stage="test", inputs=images, targets=targets, logits=torch.randn(10, 3)))
    bus.publish(TestEpochEnd(epoch=0, global_step=0, metrics={}))
    assert len(listing(context, "test.json")) == 4
    assert (context.run_dir / "samples" / "test.png").is_file()
    assert not (context.run_dir / "samples" / "latest.json").exists()

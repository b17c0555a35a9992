"""DatasetStats, driven by a synthetic FitStart over small real image files."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from PIL import ExifTags, Image

from harness.core.bus import Bus
from harness.core.context import DatasetInfo, RunContext
from harness.core.events import FitStart
from harness.core.testing import make_context
from harness.io.images import load_rgb
from harness.settings import Settings
from harness.training.fit import run
from subscribers.dataset_stats import DatasetStats, DatasetStatsSettings

MakeSettings = Callable[..., Settings]


def image(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def small_data_set(tmp_path: Path) -> DatasetInfo:
    """cat: 6 train (8x8 RGB) + 2 val; dog: 2 train (12x10 gray) + 1 val; owl: 3 train, no val."""
    root = tmp_path / "data"
    train = [(image(root / "cat" / f"{n}.png", (8, 8)), 0) for n in range(6)]
    train += [(image(root / "dog" / f"{n}.png", (12, 10), "L"), 1) for n in range(2)]
    train += [(image(root / "owl" / f"{n}.png", (8, 8)), 2) for n in range(3)]
    val = [(image(root / "val" / f"cat{n}.png", (8, 8)), 0) for n in range(2)]
    val += [(image(root / "val" / "dog.png", (16, 16)), 1)]
    return DatasetInfo(root=root, train=tuple(train), val=tuple(val), skipped=(root / "cat" / "broken.png",))


def context_for(tmp_path: Path, data: DatasetInfo) -> RunContext:
    context = make_context(tmp_path, class_names=("cat", "dog", "owl"))
    context = attrs.evolve(context, data=data)
    return context


def fit_start(context: RunContext, settings: DatasetStatsSettings | None = None, rank: int = 0) -> None:
    bus = Bus(rank=rank)
    bus.attach(DatasetStats(context, settings))
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))


def report_of(context: RunContext) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        (context.run_dir / "dataset_stats" / "dataset_stats.json").read_text()
    )
    return report


def test_counts_images_per_class_and_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = context_for(tmp_path, small_data_set(tmp_path))

    fit_start(context)

    report = report_of(context)
    assert [(c["name"], c["train"], c["val"]) for c in report["classes"]] == [
        ("cat", 6, 2),
        ("dog", 2, 1),
        ("owl", 3, 0),
    ]
    assert (report["train_images"], report["val_images"]) == (11, 3)
    assert report["imbalance_ratio"] == 3.0
    out = " ".join(capsys.readouterr().out.split())
    assert "cat │ 6 │ 2 │ 54.5%" in out
    assert "imbalance ratio 3.0" in out
    assert context.artifacts["dataset_stats"] == "dataset_stats/dataset_stats.json"


def test_reads_image_sizes_and_modes_from_headers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = context_for(tmp_path, small_data_set(tmp_path))

    fit_start(context)

    train, val = report_of(context)["image_sizes"]["train"], report_of(context)["image_sizes"]["val"]
    assert (train["width"], train["height"]) == ({"min": 8, "max": 12}, {"min": 8, "max": 10})
    assert train["common_sizes"] == [
        {"width": 8, "height": 8, "count": 9},
        {"width": 12, "height": 10, "count": 2},
    ]
    assert train["modes"] == {"RGB": 9, "L": 2}
    assert val["common_sizes"][0] == {"width": 8, "height": 8, "count": 2}
    out = " ".join(capsys.readouterr().out.split())
    assert "8x8 (9), 12x10 (2)" in out


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_sizes_are_upright_after_the_exif_orientation_as_training_sees_them(
    tmp_path: Path, suffix: str
) -> None:
    """A 40x20 photo tagged "rotate 90" (orientation 6) trains as 20x40; orientation 3 keeps 40x20."""
    root = tmp_path / "data"
    samples = []
    for orientation, count in ((6, 3), (3, 1)):
        for n in range(count):
            path = root / "cat" / f"o{orientation}_{n}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            exif = Image.Exif()
            exif[ExifTags.Base.Orientation] = orientation
            Image.new("RGB", (40, 20), (200, 30, 30)).save(path, exif=exif)
            samples.append((path, 0))
    assert load_rgb(samples[0][0]).size == (20, 40)
    context = context_for(tmp_path, DatasetInfo(root=root, train=tuple(samples), val=tuple(samples[:1])))

    fit_start(context)

    train = report_of(context)["image_sizes"]["train"]
    assert train["common_sizes"] == [
        {"width": 20, "height": 40, "count": 3},
        {"width": 40, "height": 20, "count": 1},
    ]


def test_samples_at_most_size_sample_files_per_split(tmp_path: Path) -> None:
    context = context_for(tmp_path, small_data_set(tmp_path))

    fit_start(context, DatasetStatsSettings(size_sample=4))

    train = report_of(context)["image_sizes"]["train"]
    assert (train["files"], train["sampled"], train["read"]) == (11, 4, 4)
    assert train["modes"] == {"RGB": 3, "L": 1}  # evenly spread: the small class is still seen


def test_warns_about_small_classes_missing_validation_and_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_data_set(tmp_path)
    garbage = tmp_path / "data" / "owl" / "garbage.png"
    garbage.write_bytes(b"not an image")
    data = DatasetInfo(root=data.root, train=(*data.train, (garbage, 2)), val=data.val, skipped=data.skipped)
    context = context_for(tmp_path, data)

    fit_start(context, DatasetStatsSettings(min_images=3))

    warnings = report_of(context)["warnings"]
    assert warnings[:3] == [
        "class 'dog' has 2 training image(s), fewer than min_images = 3",
        "class 'owl' has no validation images",
        "1 unreadable file(s) were skipped; listed in dataset_stats.json",
    ]
    assert warnings[3].startswith(f"1 of 12 sampled train images cannot be opened, e.g. {garbage}")
    assert report_of(context)["skipped"] == [str(tmp_path / "data" / "cat" / "broken.png")]
    out = " ".join(capsys.readouterr().out.split())
    assert "dataset_stats: warning: class 'owl' has no validation images" in out


def test_an_empty_class_makes_the_imbalance_unbounded(tmp_path: Path) -> None:
    data = small_data_set(tmp_path)
    context = context_for(tmp_path, DatasetInfo(root=data.root, train=data.train[:8], val=data.val))

    fit_start(context)

    report = report_of(context)
    assert report["imbalance_ratio"] is None
    assert "class 'owl' has 0 training image(s), fewer than min_images = 5" in report["warnings"]


def test_many_classes_show_the_smallest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = tuple(f"k{c:02d}" for c in range(30))
    context = make_context(tmp_path, class_names=names)
    pairs = tuple((tmp_path / f"{c}_{n}.png", c) for c in range(30) for n in range(c + 1))
    context = attrs.evolve(context, data=DatasetInfo(root=tmp_path, train=pairs, val=pairs))

    fit_start(context, DatasetStatsSettings(max_table_rows=4, size_sample=1))

    out = " ".join(capsys.readouterr().out.split())
    assert "showing the 4 of 30 classes with the fewest training images" in out
    assert [name for name in names if f"{name} │" in out] == ["k00", "k01", "k02", "k03"]
    assert len(report_of(context)["classes"]) == 30


def test_other_ranks_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = context_for(tmp_path, small_data_set(tmp_path))

    fit_start(context, rank=1)

    assert not (context.run_dir / "dataset_stats").exists()
    assert capsys.readouterr().out == ""


def test_without_data_it_warns_and_writes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    context = make_context(tmp_path)
    context = attrs.evolve(context, data=None)

    with caplog.at_level(logging.WARNING, logger="subscribers.dataset_stats"):
        fit_start(context)

    assert "RunContext.data is not set" in caplog.text
    assert not (context.run_dir / "dataset_stats").exists()


@pytest.mark.slow
def test_a_real_run_reports_its_data_set(make_settings: MakeSettings) -> None:
    settings = make_settings("dataset_stats", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1")

    result = run(settings)

    report = json.loads((result.run_dir / "dataset_stats" / "dataset_stats.json").read_text())
    assert [c["name"] for c in report["classes"]] == ["blue", "green", "red"]
    assert report["train_images"] + report["val_images"] == 36
    assert report["image_sizes"]["train"]["common_sizes"] == [
        {"width": 12, "height": 12, "count": report["train_images"]}
    ]
    assert result.summary.artifacts["dataset_stats"] == "dataset_stats/dataset_stats.json"

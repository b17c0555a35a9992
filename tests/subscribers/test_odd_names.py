"""Class names as folders have them (``$``, backslashes, unicode, spaces, ``%``, very long):
drawn literally on every picture, and a picture that fails never takes its table with it."""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.core.bus import Bus
from harness.core.testing import make_context, scripted_run
from harness.evaluation.pairs import Pairs
from harness.io.background import BackgroundWriter
from harness.pictures.chart import render
from harness.settings import Settings
from subscribers._draw_confusion import write_epoch as write_confusion
from subscribers._draw_history import draw_history
from subscribers._draw_samples import Shown, to_pixels
from subscribers._draw_samples import write_epoch as write_samples
from subscribers._sampler_report import share_chart, write_history
from subscribers.confusion_matrix import ConfusionMatrix
from subscribers.plots import Plots
from subscribers.samples import Samples

ODD_NAMES = (
    "p$\\bad$q",
    "$x$",
    "a\\$b",
    "chat tigré, Straße",
    "100% sure",
    "two  spaces {and} braces",
    "long " + "x" * 180 + " end",
)


def test_names_are_drawn_character_for_character() -> None:
    # Pillow draws text as it is (no mathtext): a chart's legend holds each name verbatim.
    chart = share_chart([0, 1], [[1] * len(ODD_NAMES)] * 2, [1 / len(ODD_NAMES)] * len(ODD_NAMES), ODD_NAMES)
    assert [label for label, _, _ in chart.legend_entries] == list(ODD_NAMES)
    render(chart).save(io.BytesIO(), format="png")


def test_pictures_and_tables_of_a_run_with_odd_class_names(tmp_path: Path) -> None:
    context = make_context(tmp_path, class_names=ODD_NAMES)
    bus = Bus()
    for subscriber in (ConfusionMatrix(context), Samples(context), Plots(context)):
        bus.attach(subscriber, on_error="raise")
    scripted_run(bus, context, epochs=2, train_batches=2, val_batches=3, batch_size=6)

    run_dir = context.run_dir
    for name in ("epoch_001.png", "latest.png", "epoch_001.csv", "latest.csv"):
        assert (run_dir / "confusion_matrix" / name).is_file(), name
    with (run_dir / "confusion_matrix" / "latest.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == list(ODD_NAMES) and [row[0] for row in rows[1:]] == list(ODD_NAMES)
    assert (run_dir / "samples" / "epoch_001.png").is_file()
    listed = json.loads((run_dir / "samples" / "epoch_001.json").read_text(encoding="utf-8"))
    assert {entry["true"] for entry in listed} <= set(ODD_NAMES)
    assert (run_dir / "plots" / "accuracy.png").is_file()


def test_sampler_pictures_name_odd_classes_in_their_legend(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "drawn": [3, 1, 2, 5, 1, 1, 2], "trained": [3, 1, 2, 5, 1, 1, 2]} for e in range(2)
    ]
    recorded: dict[str, Path] = {}
    write_history(tmp_path, ODD_NAMES, history, [1 / 7] * 7, recorded.__setitem__)
    assert set(recorded) == {"sampler_draws", "sampler_trained", "sampler_draws_plot"}
    header = (tmp_path / "sampler_tracking" / "draws.csv").read_text(encoding="utf-8").splitlines()[0]
    assert next(csv.reader([header])) == ["epoch", "total", *ODD_NAMES]


def block(path: Path) -> Path:
    """Make `path` a non-empty folder, so that writing a file there fails as a full disk would."""
    (path / "in the way").mkdir(parents=True)
    return path


NAMES = ("a", "b")


def confusion_job(run_dir: Path) -> functools.partial[None]:
    counts = Pairs.from_dense(np.array([[3, 1], [0, 2]]))
    return functools.partial(write_confusion, run_dir, NAMES, counts, 0, "true")


def samples_job(run_dir: Path) -> functools.partial[None]:
    shown = [
        Shown(position=0, image=to_pixels(torch.rand(1, 3, 8, 8))[0], target=0, predicted=1, confidence=0.7)
    ]
    return functools.partial(write_samples, run_dir, NAMES, shown, 0, 0)


def plots_job(run_dir: Path) -> functools.partial[None]:
    history = {0: {"train/loss": 1.0, "val/acc_top1": 0.5}, 1: {"train/loss": 0.5, "val/acc_top1": 0.75}}
    return functools.partial(draw_history, run_dir, history, "val/acc_top1", "max")


def sampler_job(run_dir: Path) -> functools.partial[None]:
    history = [{"epoch": 0, "drawn": [3, 5], "trained": [3, 5]}]
    return functools.partial(write_history, run_dir, NAMES, history, [0.5, 0.5])


# (job, picture that fails, tables it must keep), all relative to the run directory.
JOBS = {
    "confusion_matrix": (
        confusion_job,
        "confusion_matrix/epoch_000.png",
        ["confusion_matrix/epoch_000.csv", "confusion_matrix/latest.csv"],
    ),
    "samples": (samples_job, "samples/epoch_000.png", ["samples/epoch_000.json", "samples/latest.json"]),
    "plots": (plots_job, "plots/losses.png", ["plots/history.csv", "plots/accuracy.png"]),
    "sampler_tracking": (
        sampler_job,
        "sampler_tracking/draws.png",
        ["sampler_tracking/draws.csv", "sampler_tracking/trained.csv"],
    ),
}


@pytest.mark.parametrize("where", ["inline", "background"])
@pytest.mark.parametrize("owner", sorted(JOBS))
def test_a_picture_that_fails_keeps_its_tables_written_and_listed(
    tmp_path: Path, owner: str, where: str
) -> None:
    make_job, picture, tables = JOBS[owner]
    context = make_context(tmp_path)
    block(context.run_dir / picture)
    job = make_job(context.run_dir)

    if where == "inline":
        with pytest.raises(OSError, match="directory"):
            context.submit(owner, job)
    else:
        writer = BackgroundWriter()
        writer.submit(owner, job, record=context.record_artifact)
        [failure] = writer.close()
        assert failure.subscriber == owner and failure.event == "background" and "directory" in failure.error

    for table in tables:
        assert (context.run_dir / table).stat().st_size > 0, table
        assert table in context.artifacts.values(), f"{table} is listed in the summary"
    assert picture not in context.artifacts.values()


@pytest.mark.slow
def test_a_real_run_on_class_folders_with_odd_names_draws_every_picture(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    from harness.core.testing import write_imagefolder
    from harness.training.fit import run

    root = write_imagefolder(tmp_path / "odd data", dict.fromkeys(ODD_NAMES, 4), size=8)
    settings = make_settings(
        "confusion_matrix",
        "samples",
        "sampler_tracking",
        "plots",
        "dataset_stats",
        "data.val_fraction=0.5",
        root=root,
    )

    result = run(settings)

    summary = json.loads((result.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "completed"
    assert summary["failures"] == []
    for name in (
        "confusion_matrix/latest.png",
        "confusion_matrix/latest.csv",
        "samples/latest.png",
        "sampler_tracking/draws.png",
        "plots/history.csv",
    ):
        assert (result.run_dir / name).is_file(), name
    labels = json.loads((result.run_dir / "labels.json").read_text(encoding="utf-8"))
    assert labels["classes"] == sorted(ODD_NAMES)

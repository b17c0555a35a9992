"""The `ConfusionMatrix` subscriber's files: the counts as CSV, per-class figures, the picture.

The picture is `harness.pictures.confusion`'s, the one an evaluation draws too. A job
writes its tables before its picture, each in its own attempt, so a picture that fails
keeps the numbers; each epoch's files get a `latest` copy. Nothing here imports torch:
the counts arrive as a numpy array.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from harness.io.artifacts import write_text
from harness.pictures.confusion import Normalize, counts_csv, draw_confusion
from subscribers._draw import all_of, epoch_file, publish_latest

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = ["per_class_csv", "write_epoch", "write_test"]

Counts = npt.NDArray[np.int64]


def write_epoch(
    run_dir: Path,
    names: Sequence[str],
    counts: Counts,
    epoch: int,
    normalize: Normalize,
    record: Record,
) -> None:
    """The `ConfusionMatrix` job: one epoch's counts and picture under ``run_dir/confusion_matrix/``,
    the `latest` copies refreshed, each file recorded; the counts first, kept if the picture fails."""
    directory = run_dir / "confusion_matrix"

    def table() -> None:
        written = write_text(epoch_file(directory, epoch, ".csv"), counts_csv(counts, names))
        for path in (written, publish_latest(written)):
            record(path.relative_to(run_dir).as_posix(), path)

    def per_class() -> None:
        written = write_text(epoch_file(directory / "per_class", epoch, ".csv"), per_class_csv(counts, names))
        for path in (written, publish_latest(written)):
            record(path.relative_to(run_dir).as_posix(), path)

    def picture() -> None:
        drawn = draw_confusion(
            epoch_file(directory, epoch, ".png"),
            counts,
            names,
            normalize=normalize,
            title=f"Confusion matrix, epoch {epoch}",
        )
        for path in (drawn, publish_latest(drawn)):
            record(path.relative_to(run_dir).as_posix(), path)

    all_of(table, per_class, picture)


def write_test(
    run_dir: Path, names: Sequence[str], counts: Counts, normalize: Normalize, record: Record
) -> None:
    """The `ConfusionMatrix` job for an evaluation: ``confusion_matrix/test.csv``, ``test.png``
    and ``per_class/test.csv`` under the evaluation folder, each file recorded."""
    directory = run_dir / "confusion_matrix"

    def tables() -> None:
        for path in (
            write_text(directory / "test.csv", counts_csv(counts, names)),
            write_text(directory / "per_class" / "test.csv", per_class_csv(counts, names)),
        ):
            record(path.relative_to(run_dir).as_posix(), path)

    def picture() -> None:
        drawn = draw_confusion(
            directory / "test.png",
            counts,
            names,
            normalize=normalize,
            title="Confusion matrix, test",
        )
        record(drawn.relative_to(run_dir).as_posix(), drawn)

    all_of(tables, picture)


def per_class_csv(counts: Counts, class_names: Sequence[str]) -> str:
    """Precision, recall, F1 and support of each class, from the counts (`harness.evaluation.metrics`)."""
    from harness.evaluation.metrics import class_scores

    scores = class_scores(np.asarray(counts, dtype=np.int64))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "precision", "recall", "f1", "support"])
    for i, name in enumerate(class_names):
        p, r, f = (f"{float(v[i]):.6f}" for v in (scores.precision, scores.recall, scores.f1))
        writer.writerow([name, p, r, f, int(scores.support[i])])
    return buffer.getvalue()

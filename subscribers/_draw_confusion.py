"""The `ConfusionMatrix` subscriber's files: the counts as CSV, per-class figures, the picture.

The picture is `harness.pictures.confusion`'s, the one an evaluation draws too. A job
writes its tables before its picture, each in its own attempt, so a picture that fails
keeps the numbers; each epoch's files get a `latest` copy. Nothing here imports torch:
the counts arrive as `Pairs`, the non-zero cells.

Up to `FULL_MATRIX_CLASSES` classes the CSV is the whole matrix and the picture draws
every class. Past it (10,000 classes are 10^8 cells: a CSV of hundreds of MB and a
picture no one can read) the files grow with the validation images, not the classes
squared: the CSV lists the non-zero cells (``true,predicted,count``),
``most_confused/epoch_NNN.csv`` the `MOST_CONFUSED` largest off-diagonal cells with
their share of the true class, and the picture draws the `PICTURED` classes with the
most mistakes (as true or as predicted class), its title saying so. The per-class
table keeps one row per class.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt

from harness.io.artifacts import write_text
from harness.pictures.confusion import Normalize, counts_csv, draw_confusion
from subscribers._draw import all_of, epoch_file, publish_latest

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = [
    "FULL_MATRIX_CLASSES",
    "MOST_CONFUSED",
    "PICTURED",
    "Pairs",
    "per_class_csv",
    "write_epoch",
    "write_test",
]

Counts = npt.NDArray[np.int64]

FULL_MATRIX_CLASSES = 200
"""Up to this many classes the CSV and the picture hold the whole matrix."""
MOST_CONFUSED = 100
"""Rows of ``most_confused/epoch_NNN.csv`` past `FULL_MATRIX_CLASSES`."""
PICTURED = 40
"""Classes drawn past `FULL_MATRIX_CLASSES`: those with the most mistakes."""


@attrs.frozen(kw_only=True)
class Pairs:
    """A confusion matrix as its non-zero cells: `true[i]` predicted as `predicted[i]`, `count[i]` times."""

    true: Counts
    predicted: Counts
    count: Counts
    num_classes: int

    @classmethod
    def of(cls, rows: npt.ArrayLike, num_classes: int) -> Pairs:
        """From rows ``(true, predicted, count)`` (`subscribers._pair_counts.PairCounts`'s)."""
        table = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        return cls(true=table[:, 0], predicted=table[:, 1], count=table[:, 2], num_classes=num_classes)

    @classmethod
    def from_dense(cls, counts: npt.ArrayLike) -> Pairs:
        matrix = np.asarray(counts, dtype=np.int64)
        rows, columns = np.nonzero(matrix)
        return cls(true=rows, predicted=columns, count=matrix[rows, columns], num_classes=matrix.shape[0])

    @property
    def total(self) -> int:
        return int(self.count.sum())

    @property
    def correct(self) -> int:
        return int(self.count[self.true == self.predicted].sum())

    def dense(self, classes: npt.NDArray[np.int64] | None = None) -> Counts:
        """The C x C matrix, or only the rows and columns of `classes` (in that order)."""
        if classes is None:
            classes = np.arange(self.num_classes)
        where = np.full(self.num_classes, -1, dtype=np.int64)
        where[classes] = np.arange(len(classes))
        keep = (where[self.true] >= 0) & (where[self.predicted] >= 0)
        matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(matrix, (where[self.true[keep]], where[self.predicted[keep]]), self.count[keep])
        return matrix

    def per_class(self, which: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return np.bincount(which, weights=self.count, minlength=self.num_classes).astype(np.float64)

    def most_mistaken(self, limit: int) -> npt.NDArray[np.int64]:
        """The `limit` classes with the most mistakes, as true or as predicted class, by index."""
        wrong = self.true != self.predicted
        mistakes = np.bincount(self.true[wrong], weights=self.count[wrong], minlength=self.num_classes)
        mistakes += np.bincount(self.predicted[wrong], weights=self.count[wrong], minlength=self.num_classes)
        order = np.argsort(-mistakes, kind="stable")[:limit]
        return np.sort(order).astype(np.int64)


def counts_table(counts: Pairs, names: Sequence[str]) -> str:
    """The whole matrix up to `FULL_MATRIX_CLASSES` classes, else its non-zero cells."""
    if counts.num_classes <= FULL_MATRIX_CLASSES:
        return counts_csv(counts.dense(), names)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true", "predicted", "count"])
    for t, p, c in zip(counts.true.tolist(), counts.predicted.tolist(), counts.count.tolist(), strict=True):
        writer.writerow([names[t], names[p], c])
    return buffer.getvalue()


def most_confused_csv(counts: Pairs, names: Sequence[str]) -> str:
    """The `MOST_CONFUSED` largest off-diagonal cells, largest first, with the share of the true class."""
    support = counts.per_class(counts.true)
    wrong = np.flatnonzero(counts.true != counts.predicted)
    order = wrong[np.lexsort((counts.predicted[wrong], counts.true[wrong], -counts.count[wrong]))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true", "predicted", "count", "share_of_true"])
    for i in order[:MOST_CONFUSED].tolist():
        t, p, c = int(counts.true[i]), int(counts.predicted[i]), int(counts.count[i])
        writer.writerow([names[t], names[p], c, f"{c / support[t]:.6f}"])
    return buffer.getvalue()


def draw_counts(path: Path, counts: Pairs, names: Sequence[str], normalize: Normalize, title: str) -> Path:
    """Every class up to `FULL_MATRIX_CLASSES`, else the `PICTURED` most mistaken ones."""
    if counts.num_classes <= FULL_MATRIX_CLASSES:
        return draw_confusion(path, counts.dense(), names, normalize=normalize, title=title)
    shown = counts.most_mistaken(PICTURED)
    return draw_confusion(
        path,
        counts.dense(shown),
        [names[i] for i in shown],
        normalize=normalize,
        title=f"{title}: the {len(shown)} most mistaken of {counts.num_classes:,} classes",
        totals=(counts.correct, counts.total),
    )


def write_epoch(
    run_dir: Path,
    names: Sequence[str],
    counts: Pairs,
    epoch: int,
    normalize: Normalize,
    record: Record,
) -> None:
    """The `ConfusionMatrix` job: one epoch's counts and picture under ``run_dir/confusion_matrix/``,
    the `latest` copies refreshed, each file recorded; the counts first, kept if the picture fails."""
    directory = run_dir / "confusion_matrix"

    def table() -> None:
        written = write_text(epoch_file(directory, epoch, ".csv"), counts_table(counts, names))
        for path in (written, publish_latest(written)):
            record(path.relative_to(run_dir).as_posix(), path)

    def confused() -> None:
        if counts.num_classes > FULL_MATRIX_CLASSES:
            written = write_text(
                epoch_file(directory / "most_confused", epoch, ".csv"), most_confused_csv(counts, names)
            )
            for path in (written, publish_latest(written)):
                record(path.relative_to(run_dir).as_posix(), path)

    def per_class() -> None:
        written = write_text(epoch_file(directory / "per_class", epoch, ".csv"), per_class_csv(counts, names))
        for path in (written, publish_latest(written)):
            record(path.relative_to(run_dir).as_posix(), path)

    def picture() -> None:
        drawn = draw_counts(
            epoch_file(directory, epoch, ".png"), counts, names, normalize, f"Confusion matrix, epoch {epoch}"
        )
        for path in (drawn, publish_latest(drawn)):
            record(path.relative_to(run_dir).as_posix(), path)

    all_of(table, confused, per_class, picture)


def write_test(
    run_dir: Path, names: Sequence[str], counts: Pairs, normalize: Normalize, record: Record
) -> None:
    """The `ConfusionMatrix` job for an evaluation: ``confusion_matrix/test.csv``, ``test.png``
    and ``per_class/test.csv`` under the evaluation folder, each file recorded."""
    directory = run_dir / "confusion_matrix"

    def tables() -> None:
        for path in (
            write_text(directory / "test.csv", counts_table(counts, names)),
            write_text(directory / "per_class" / "test.csv", per_class_csv(counts, names)),
        ):
            record(path.relative_to(run_dir).as_posix(), path)

    def picture() -> None:
        drawn = draw_counts(directory / "test.png", counts, names, normalize, "Confusion matrix, test")
        record(drawn.relative_to(run_dir).as_posix(), drawn)

    all_of(tables, picture)


def per_class_csv(counts: Pairs, class_names: Sequence[str]) -> str:
    """Precision, recall, F1 and support of each class, from the counts (`harness.evaluation.metrics`)."""
    from harness.evaluation.metrics import scores_of

    hit = counts.true == counts.predicted
    hits = np.bincount(counts.true[hit], weights=counts.count[hit], minlength=counts.num_classes)
    scores = scores_of(
        hits.astype(np.float64), counts.per_class(counts.predicted), counts.per_class(counts.true)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "precision", "recall", "f1", "support"])
    for i, name in enumerate(class_names):
        p, r, f = (f"{float(v[i]):.6f}" for v in (scores.precision, scores.recall, scores.f1))
        writer.writerow([name, p, r, f, int(scores.support[i])])
    return buffer.getvalue()

"""A confusion matrix kept as its non-zero cells, and the per-class files made from it (no torch).

`Pairs` holds the (true, predicted, count) cells of a confusion matrix: its size grows
with the images scored, never with the classes squared (10,000 classes are 10^8 cells,
800 MB of int64 when dense). The run's ``confusion_matrix/`` subscriber and
`harness.evaluate` both keep their counts here and write them with the same functions:

- `counts_table`: up to `FULL_MATRIX_CLASSES` classes the whole matrix as CSV (rows
  true, columns predicted), past it the non-zero cells (``true,predicted,count``);
- `most_confused_csv`: the `MOST_CONFUSED` largest off-diagonal cells, largest first,
  with their share of the true class;
- `per_class_csv`: precision, recall, F1 and support, one row per class;
- `draw_counts`: every class up to `FULL_MATRIX_CLASSES`, else the `PICTURED` classes
  with the most mistakes (as true or as predicted class), its title saying so.

`ClassScores`, `scores_of` and `ConfusedPair` live here, below `harness.evaluation.metrics`
(which re-exports them), so that the scores of the counts need nothing above them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt

from harness.pictures.confusion import Normalize, counts_csv, draw_confusion

__all__ = [
    "FULL_MATRIX_CLASSES",
    "MOST_CONFUSED",
    "PICTURED",
    "ClassScores",
    "ConfusedPair",
    "Pairs",
    "counts_table",
    "draw_counts",
    "most_confused_csv",
    "per_class_csv",
    "ratio",
    "scores_of",
]

Counts = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

FULL_MATRIX_CLASSES = 200
"""Up to this many classes the CSV and the picture hold the whole matrix."""
MOST_CONFUSED = 100
"""Rows of a most-confused table."""
PICTURED = 40
"""Classes drawn past `FULL_MATRIX_CLASSES`: those with the most mistakes."""


def ratio(numerator: Floats, denominator: Floats) -> Floats:
    """`numerator / denominator`, 0 where the denominator is 0."""
    out: Floats = np.divide(
        numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0
    )
    return out


@attrs.frozen(kw_only=True)
class ClassScores:
    """Per-class precision, recall, F1 and support, indexed by class."""

    precision: Floats
    recall: Floats
    f1: Floats
    support: Counts


def scores_of(hits: Floats, predicted: Floats, support: Floats) -> ClassScores:
    """Precision, recall and F1 of each class from its hits, predictions and true images (0 if undefined)."""
    precision = ratio(hits, predicted)
    recall = ratio(hits, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    return ClassScores(precision=precision, recall=recall, f1=f1, support=support.astype(np.int64))


@attrs.frozen(kw_only=True)
class ConfusedPair:
    """A true class mistaken for a predicted one, `count` times."""

    true: int
    predicted: int
    count: int


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
    def from_labels(cls, targets: npt.ArrayLike, predicted: npt.ArrayLike, num_classes: int) -> Pairs:
        """From each image's true and predicted class (memory grows with the images)."""
        codes = np.asarray(targets, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
        cells, counts = np.unique(codes, return_counts=True)
        return cls(
            true=cells // num_classes,
            predicted=cells % num_classes,
            count=counts.astype(np.int64),
            num_classes=num_classes,
        )

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

    def per_class(self, which: npt.NDArray[np.int64]) -> Floats:
        """The counts summed per class of `which` (`true`: support, `predicted`: predictions)."""
        return np.bincount(which, weights=self.count, minlength=self.num_classes).astype(np.float64)

    def scores(self) -> ClassScores:
        """Precision, recall, F1 and support of every class."""
        hit = self.true == self.predicted
        hits = np.bincount(self.true[hit], weights=self.count[hit], minlength=self.num_classes)
        return scores_of(hits.astype(np.float64), self.per_class(self.predicted), self.per_class(self.true))

    def most_confused(self, limit: int = MOST_CONFUSED) -> list[ConfusedPair]:
        """The off-diagonal cells with the most images, largest first, ties by class (fastai's)."""
        wrong = np.flatnonzero(self.true != self.predicted)
        order = wrong[np.lexsort((self.predicted[wrong], self.true[wrong], -self.count[wrong]))]
        return [
            ConfusedPair(true=int(self.true[i]), predicted=int(self.predicted[i]), count=int(self.count[i]))
            for i in order[:limit].tolist()
        ]

    def most_mistaken(self, limit: int) -> npt.NDArray[np.int64]:
        """The `limit` classes with the most mistakes, as true or as predicted class, by index."""
        wrong = self.true != self.predicted
        mistakes = np.bincount(self.true[wrong], weights=self.count[wrong], minlength=self.num_classes)
        mistakes += np.bincount(self.predicted[wrong], weights=self.count[wrong], minlength=self.num_classes)
        order = np.argsort(-mistakes, kind="stable")[:limit]
        return np.sort(order).astype(np.int64)


def _csv(rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def counts_table(counts: Pairs, names: Sequence[str]) -> str:
    """The whole matrix up to `FULL_MATRIX_CLASSES` classes, else its non-zero cells."""
    if counts.num_classes <= FULL_MATRIX_CLASSES:
        return counts_csv(counts.dense(), names)
    cells = zip(counts.true.tolist(), counts.predicted.tolist(), counts.count.tolist(), strict=True)
    return _csv([["true", "predicted", "count"], *([names[t], names[p], c] for t, p, c in cells)])


def most_confused_csv(counts: Pairs, names: Sequence[str]) -> str:
    """The `MOST_CONFUSED` largest off-diagonal cells, largest first, with the share of the true class."""
    support = counts.per_class(counts.true)
    return _csv(
        [
            ["true", "predicted", "count", "share_of_true"],
            *(
                [names[p.true], names[p.predicted], p.count, f"{p.count / support[p.true]:.6f}"]
                for p in counts.most_confused(MOST_CONFUSED)
            ),
        ]
    )


def per_class_csv(counts: Pairs, names: Sequence[str]) -> str:
    """Precision, recall, F1 and support of each class, one row per class."""
    scores = counts.scores()
    rows: list[list[object]] = [["class", "precision", "recall", "f1", "support"]]
    for i, name in enumerate(names):
        p, r, f = (f"{float(v[i]):.6f}" for v in (scores.precision, scores.recall, scores.f1))
        rows.append([name, p, r, f, int(scores.support[i])])
    return _csv(rows)


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

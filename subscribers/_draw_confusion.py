"""The `ConfusionMatrix` subscriber's files: the counts as CSV, per-class figures, the picture.

The tables and the picture are `harness.evaluation.pairs`'s, the ones an evaluation
writes too. A job writes its tables before its picture, each in its own attempt, so a picture that fails
keeps the numbers; each epoch's files get a `latest` copy. Nothing here imports torch:
the counts arrive as `Pairs`, the non-zero cells.

Up to `FULL_MATRIX_CLASSES` classes the CSV is the whole matrix and the picture draws
every class. Past it (10,000 classes are 10^8 cells: a CSV of hundreds of MB and a
picture no one can read) the files grow with the validation images, not the classes
squared: the CSV lists the non-zero cells (``true,predicted,count``),
``most_confused/epoch_NNN.csv`` the ``MOST_CONFUSED`` largest off-diagonal cells with
their share of the true class, and the picture draws the ``PICTURED`` classes with the
most mistakes (as true or as predicted class), its title saying so. The per-class
table keeps one row per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.evaluation.pairs import (
    FULL_MATRIX_CLASSES,
    Pairs,
    counts_table,
    draw_counts,
    most_confused_csv,
    per_class_csv,
)
from harness.io.artifacts import write_text
from harness.pictures.confusion import Normalize
from subscribers._draw import all_of, epoch_file, publish_latest

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = ["write_epoch", "write_test"]


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

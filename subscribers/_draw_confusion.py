"""The confusion matrix as numbers (normalised views, CSV) and as a picture.

Rows are true classes, columns predicted classes, as in torchmetrics and scikit-learn.
The picture scales with the class count: cells shrink from 0.6 to 0.22 inch, fonts with
them, and past 136 classes the matrix stays 30 inches wide and names every few classes.
Numbers are written in the cells up to 50 classes and while they fit (past that the
picture is read for its pattern); long class names are cut in the middle.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes

from harness.core.context import Record
from harness.io.artifacts import save_figure, write_text
from subscribers._draw import all_of, epoch_file, literal, name_fonts, new_figure, publish_latest, shorten

__all__ = ["Normalize", "counts_csv", "draw_confusion", "normalise", "write_epoch"]

Normalize = Literal["none", "true", "pred"]

_COLOURBAR_LABEL = {
    "none": "count",
    "true": "share of the true class (each row sums to 1)",
    "pred": "share of the predicted class (each column sums to 1)",
}
_NAME_LIMIT = 28
_MAX_CLASSES_WITH_NUMBERS = 50
_MAX_SIDE = 30.0  # inches; past it cells shrink and only every few classes is named
_POINTS_PER_CHAR = 0.62  # average advance of DejaVu Sans, in font sizes


def normalise(counts: torch.Tensor, mode: Normalize) -> torch.Tensor:
    """`counts` as floats, divided by row sums (``"true"``) or column sums (``"pred"``).

    A class with no samples (an empty row or column) stays at zero rather than NaN.
    """
    values = counts.double()
    if mode == "none":
        return values
    totals = values.sum(dim=1 if mode == "true" else 0, keepdim=True)
    return torch.where(totals > 0, values / totals.clamp_min(1), torch.zeros_like(values))


def counts_csv(counts: torch.Tensor, class_names: Sequence[str]) -> str:
    """The raw counts as CSV: a header of predicted classes, one row per true class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, counts.tolist(), strict=True):
        writer.writerow([name, *(int(value) for value in row)])
    return buffer.getvalue()


def write_epoch(
    run_dir: Path,
    names: Sequence[str],
    counts: torch.Tensor,
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

    def picture() -> None:
        drawn = draw_confusion(
            epoch_file(directory, epoch, ".png"), counts, names, normalize=normalize, epoch=epoch
        )
        for path in (drawn, publish_latest(drawn)):
            record(path.relative_to(run_dir).as_posix(), path)

    all_of(table, picture)


def draw_confusion(
    path: Path, counts: torch.Tensor, class_names: Sequence[str], *, normalize: Normalize, epoch: int
) -> Path:
    """Draw `counts` (C x C, true by predicted) to `path`, coloured by the `normalize` view."""
    counts = counts.detach().cpu().long()
    n = len(class_names)
    values = normalise(counts, normalize)
    top = 1.0 if normalize != "none" else max(float(values.max()), 1.0)
    total, correct = int(counts.sum()), int(counts.trace())

    cell = min(0.6, max(0.22, 7.0 / n), _MAX_SIDE / n)
    cell_points = cell * 72
    step = max(1, math.ceil(11.0 / cell_points))
    label_size = min(10.0, step * cell_points * 0.6)
    names = [shorten(name, _NAME_LIMIT) for name in class_names]
    label_inches = max(len(name) for name in names) * _POINTS_PER_CHAR * label_size / 72
    rotate = label_inches > cell * step * 0.9
    width = max(5.5, n * cell + label_inches + 1.6)
    height = max(4.0, n * cell + (label_inches * 0.75 if rotate else 0.3) + 1.3)

    with new_figure(width, height) as figure:
        axes = figure.add_subplot()
        image = axes.imshow(values.numpy(), cmap="Blues", vmin=0.0, vmax=top, interpolation="nearest")
        colourbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02, shrink=min(1.0, 4.0 / n + 0.6))
        colourbar.set_label(_COLOURBAR_LABEL[normalize], fontsize=9)
        colourbar.ax.tick_params(labelsize=8)
        ticks = list(range(0, n, step))
        fonts = name_fonts()
        labels = [literal(names[i]) for i in ticks]
        axes.set_xticks(ticks, labels, fontsize=label_size, family=fonts)
        axes.set_yticks(ticks, labels, fontsize=label_size, family=fonts)
        if rotate:
            for label in axes.get_xticklabels():
                label.set(rotation=45, horizontalalignment="right", rotation_mode="anchor")
        if n <= 60:
            edges = [i - 0.5 for i in range(n + 1)]
            axes.hlines(edges, -0.5, n - 0.5, colors="white", linewidth=0.6)
            axes.vlines(edges, -0.5, n - 0.5, colors="white", linewidth=0.6)
        axes.tick_params(length=2)
        axes.set_xlabel("predicted class", fontsize=10)
        axes.set_ylabel("true class", fontsize=10)
        accuracy = correct / total if total else 0.0
        axes.set_title(
            f"Confusion matrix, epoch {epoch}\naccuracy {accuracy:.1%} ({correct:,} of {total:,})",
            fontsize=12,
        )
        if n <= _MAX_CLASSES_WITH_NUMBERS:
            _write_cells(
                axes, counts, values, top=top, cell_points=cell_points, with_share=normalize != "none"
            )
        return save_figure(figure, path)


def _write_cells(
    axes: Axes,
    counts: torch.Tensor,
    values: torch.Tensor,
    *,
    top: float,
    cell_points: float,
    with_share: bool,
) -> None:
    """Counts in the cells (zeros left blank), plus the share when the cell has room."""
    digits = len(str(int(counts.max()))) if counts.numel() else 1
    size = min(10.0, cell_points * 0.85 / (_POINTS_PER_CHAR * max(digits, 2)))
    if size < 5.5:
        return
    share_fits = cell_points * 0.85 >= size * _POINTS_PER_CHAR * 4
    two_lines = with_share and share_fits and cell_points >= size * 2.6
    for row, column in torch.nonzero(counts).tolist():
        count, share = int(counts[row, column]), float(values[row, column])
        text = f"{count}\n{share:.0%}" if two_lines else str(count)
        colour = "white" if float(values[row, column]) > top * 0.55 else "black"
        axes.text(
            column,
            row,
            text,
            ha="center",
            va="center",
            fontsize=size,
            color=colour,
            linespacing=1.1,
            in_layout=False,
        )

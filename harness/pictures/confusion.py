"""The confusion matrix as a picture and as its CSV: counts and class names in (no torch).

Rows are true classes, columns predicted classes, as in torchmetrics and scikit-learn.
The run's ``confusion_matrix/`` pictures and an evaluation's ``confusion_matrix.png``
are both drawn here, so the two look alike, and their counts written as one CSV format
(`counts_csv`). The picture is drawn as pixels
(`harness.pictures.raster`): one coloured square per cell, from 72 pixels for a few
classes down to 26 at 32 classes and more, and past 115 classes the matrix stays 3,000
pixels wide with every few classes named. Counts are written in the cells up to 50
classes and while they fit (past that the picture is read for its pattern); long class
names are cut in the middle. The counts arrive as a numpy array (or anything
`numpy.asarray` takes).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from harness.pictures.raster import Canvas, colour_scale, save_png, text_width, vertical
from harness.pictures.text import shorten

__all__ = ["Normalize", "counts_csv", "draw_confusion", "normalise"]

Normalize = Literal["none", "true", "pred"]
Counts = npt.NDArray[np.int64]


def counts_csv(counts: Any, class_names: Sequence[str]) -> str:
    """The raw counts as CSV: a header of predicted classes, one row per true class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, np.asarray(counts).tolist(), strict=True):
        writer.writerow([name, *(int(value) for value in row)])
    return buffer.getvalue()


_COLOURBAR_LABEL = {
    "none": "count",
    "true": "share of the true class (each row sums to 1)",
    "pred": "share of the predicted class (each column sums to 1)",
}
_NAME_LIMIT = 28
_MAX_CLASSES_WITH_NUMBERS = 50
_MAX_SIDE = 3000  # pixels; past it cells shrink and only every few classes is named
_CHAR_WIDTH = 0.62  # average advance of DejaVu Sans, in font sizes
_GAP = 6  # pixels between the matrix and its labels


def normalise(counts: Any, mode: Normalize) -> npt.NDArray[np.float64]:
    """`counts` as floats, divided by row sums (``"true"``) or column sums (``"pred"``).

    A class with no samples (an empty row or column) stays at zero rather than NaN.
    """
    values = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        return values
    totals = values.sum(axis=1 if mode == "true" else 0, keepdims=True)
    shares: npt.NDArray[np.float64] = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    return shares


def draw_confusion(
    path: Path,
    counts: Any,
    class_names: Sequence[str],
    *,
    normalize: Normalize,
    title: str,
    totals: tuple[int, int] | None = None,
) -> Path:
    """Draw `counts` (C x C, true by predicted) to `path`, coloured by the `normalize` view.

    The title is `title` over the accuracy (``accuracy 91.0% (91 of 100)``), of `counts`
    or, when they are a part of a larger matrix, of its `totals` (correct, all).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(class_names)
    values = normalise(counts, normalize)
    top = 1.0 if normalize != "none" else max(float(values.max(initial=0.0)), 1.0)
    correct, total = totals or (int(np.trace(counts)), int(counts.sum()))

    cell = max(2, min(72, max(26, 840 // n), _MAX_SIDE // n))
    side = n * cell
    step = max(1, math.ceil(14 / cell))
    label_size = min(13, max(9, int(cell * step * 0.7)))
    ticks = range(0, n, step)
    names = [shorten(class_names[i], _NAME_LIMIT) for i in ticks]
    label_width = max(text_width(name, label_size) for name in names) + _GAP

    accuracy = correct / total if total else 0.0
    heading = f"{title}\naccuracy {accuracy:.1%} ({correct:,} of {total:,})"
    # a title wider than the matrix widens the picture on both sides, centred on the matrix
    half_title = max(text_width(line, 16) for line in heading.splitlines()) / 2 + 8
    title_height, axis_title = 52, 22
    bar_width, bar_labels = 18, 60
    bar_title = _COLOURBAR_LABEL[normalize]
    if text_width(bar_title, 11) > side - 8:
        bar_title = bar_title.replace(" (", "\n(")
    bar_strip = vertical(bar_title, 11, height=side)
    margin = max(0, math.ceil(half_title - (axis_title + label_width + side / 2)))
    left = margin + axis_title + label_width
    width = max(
        left + side + 20 + bar_width + bar_labels + bar_strip.width + 5,
        math.ceil(left + side / 2 + half_title),
    )
    height = title_height + side + label_width + axis_title
    canvas = Canvas(width, height)
    canvas.multiline((left + side / 2, 8), heading, 16, anchor="ma")
    cells = colour_scale(values / top)
    block = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)
    if n <= 60:
        block[::cell, :] = 255
        block[:, ::cell] = 255
    canvas.paste(block, left, title_height)
    if n <= _MAX_CLASSES_WITH_NUMBERS:
        _write_cells(
            canvas,
            counts,
            values,
            top=top,
            cell=cell,
            at=(left, title_height),
            with_share=normalize != "none",
        )

    x_labels = Canvas(label_width, side)
    for i, name in zip(ticks, names, strict=True):
        middle = i * cell + cell / 2
        canvas.text((left - _GAP, title_height + middle), name, label_size, anchor="rm")
        x_labels.text((label_width - _GAP, middle), name, label_size, anchor="rm")
    canvas.paste(x_labels.image.rotate(90, expand=True), left, title_height + side)
    canvas.text((left + side / 2, height - axis_title / 2), "predicted class", 13, anchor="mm")
    canvas.paste(vertical("true class", 13, height=side), margin, title_height)

    bar_left = left + side + 20
    bar = colour_scale(np.linspace(1.0, 0.0, side)[:, None].repeat(bar_width, axis=1))
    canvas.paste(bar, bar_left, title_height)
    for k in range(5):
        value = top * k / 4
        label = f"{value:.2f}" if normalize != "none" else f"{value:,.0f}"
        y = title_height + side - 1 - (side - 1) * k / 4
        canvas.text((bar_left + bar_width + 4, y), label, 11, anchor="lm")
    canvas.paste(
        bar_strip,
        bar_left + bar_width + bar_labels,
        title_height,
    )
    return save_png(canvas.image, path)


def _write_cells(
    canvas: Canvas,
    counts: Counts,
    values: npt.NDArray[np.float64],
    *,
    top: float,
    cell: int,
    at: tuple[int, int],
    with_share: bool,
) -> None:
    """Counts in the cells (zeros left blank), plus the share when the cell has room."""
    digits = len(str(int(counts.max()))) if counts.size else 1
    size = min(14, int(cell * 0.85 / (_CHAR_WIDTH * max(digits, 2))))
    if size < 8:
        return
    share_fits = cell * 0.85 >= size * _CHAR_WIDTH * 4
    two_lines = with_share and share_fits and cell >= size * 2.6
    left, top_edge = at
    for row, column in zip(*np.nonzero(counts), strict=True):
        count, share = int(counts[row, column]), float(values[row, column])
        colour = "white" if share > top * 0.55 else "black"
        xy = (left + column * cell + cell / 2, top_edge + row * cell + cell / 2)
        canvas.stamp(xy, f"{count}\n{share:.0%}" if two_lines else str(count), size, fill=colour)

"""The evaluation's pictures: the top-losses grid, the reliability diagram, the confusion matrix.

Drawn with matplotlib's object API (`matplotlib.figure.Figure`: no pyplot, no backend,
no rcParams) and written atomically with `harness.io.artifacts.save_figure`; torch is
never imported. Class names are drawn as plain text (``$`` is not read as mathtext)
and cut in the middle when long. Each picture scales with the class count (3 to a few
hundred classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt

from harness.evaluation.metrics import Calibration
from harness.io.artifacts import save_figure
from harness.io.images import load_rgb

__all__ = ["Loss", "draw_confusion", "draw_reliability", "draw_top_losses", "shorten"]

_WRONG = "#c0392b"
_CELL = 1.9  # inches per image of the grid
_BAND = 0.62  # inches above each image for its three lines of title


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters by an ellipsis in the middle (class names differ at the end)."""
    if len(text) <= limit:
        return text
    tail = max((limit - 1) // 2, 1)
    return text[: max(limit - 1 - tail, 1)] + "…" + text[-tail:]


@attrs.frozen(kw_only=True)
class Loss:
    """One wrong prediction on the grid."""

    path: Path
    true: str
    predicted: str
    probability: float
    """The probability given to the predicted class."""
    loss: float
    """Cross-entropy of the true class, ``-log p(true)``."""


def draw_top_losses(path: Path, losses: Sequence[Loss], *, total: int, wrong: int) -> Path:
    """A grid of the worst mistakes, highest loss first: image, true, predicted, probability, loss.

    The loss is the true class's cross-entropy, so the first images are those the model
    was most sure were something else (fastai's `plot_top_losses`).
    """
    from matplotlib.figure import Figure

    columns = max(1, min(len(losses), math.ceil(math.sqrt(max(len(losses), 1)))))
    rows = max(1, math.ceil(len(losses) / columns))
    width, height = columns * (_CELL + 0.1), rows * (_CELL + _BAND)
    figure = Figure(figsize=(max(width, 4.0), height + 0.55))
    try:
        figure.suptitle(
            f"Top losses: the {len(losses)} wrong images of highest loss ({wrong:,} wrong of {total:,})",
            fontsize=11,
            y=1.0,
            va="top",
        )
        axes = figure.add_axes((0.0, 0.0, 1.0, height / (height + 0.55)))
        axes.set_axis_off()
        axes.set_xlim(0.0, max(width, 4.0))
        axes.set_ylim(0.0, height)
        limit = int(_CELL * 72 / (0.55 * 8.0))
        if not losses:
            axes.text(2.0, height / 2, "no mistakes", ha="center", va="center", fontsize=12)
        for index, item in enumerate(losses):
            row, column = divmod(index, columns)
            left = column * (_CELL + 0.1)
            top = height - row * (_CELL + _BAND) - _BAND
            image = load_rgb(item.path)
            image.thumbnail((192, 192))
            axes.imshow(
                np.asarray(image), extent=(left, left + _CELL, top - _CELL, top), aspect="auto",
                interpolation="nearest",
            )  # fmt: skip
            axes.text(
                left + _CELL / 2,
                top + 0.05,
                f"true: {shorten(item.true, limit - 6)}\npred: {shorten(item.predicted, limit - 6)}\n"
                f"p {item.probability:.2f} · loss {item.loss:.2f}",
                ha="center",
                va="bottom",
                fontsize=8.0,
                color=_WRONG,
                linespacing=1.15,
                usetex=False,
                parse_math=False,
            )
        return save_figure(figure, path)
    finally:
        figure.clear()


def draw_reliability(path: Path, calibration: Calibration, *, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin, the gap to the diagonal shaded, counts below, ECE on top."""
    from matplotlib.figure import Figure

    edges = calibration.edges
    width = 1.0 / calibration.bins
    centres = edges[:-1] + width / 2
    filled = calibration.counts > 0
    figure = Figure(figsize=(5.5, 6.2), layout="constrained")
    try:
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
        top.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1, label="perfectly calibrated")
        top.bar(
            centres[filled], calibration.accuracy[filled], width=width * 0.96, color="#2f6db5",
            edgecolor="#1d4a80", label="accuracy in the bin",
        )  # fmt: skip
        gap = calibration.confidence[filled] - calibration.accuracy[filled]
        top.bar(
            centres[filled], gap, bottom=calibration.accuracy[filled], width=width * 0.96,
            color="#e07b7b", alpha=0.4, edgecolor="#c0392b", hatch="//",
            label="gap: over- (above) or under-confident (inside)",
        )  # fmt: skip
        top.hlines(
            calibration.confidence[filled], centres[filled] - width * 0.48, centres[filled] + width * 0.48,
            colors="black", linewidth=1.5, label="mean confidence in the bin",
        )  # fmt: skip
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.legend(loc="upper left", fontsize=8)
        top.set_title(
            f"{title}\nECE {calibration.ece:.2%} ({calibration.bins} equal-width bins, "
            f"{int(calibration.counts.sum()):,} images)",
            fontsize=11,
        )
        bottom.bar(centres, calibration.counts, width=width * 0.96, color="#777777")
        bottom.set_xlabel("confidence (top probability)")
        bottom.set_ylabel("images")
        return save_figure(figure, path)
    finally:
        figure.clear()


def draw_confusion(
    path: Path, counts: npt.NDArray[np.int64], class_names: Sequence[str], *, title: str
) -> Path:
    """Counts coloured by the share of each true class; numbers in the cells up to 30 classes."""
    from matplotlib.figure import Figure

    n = len(class_names)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    cell = min(0.6, max(0.2, 7.0 / n))
    step = max(1, math.ceil(9.0 / (cell * 72)))
    names = [shorten(name, 24) for name in class_names]
    label = max(len(name) for name in names) * 0.07
    side = n * cell
    figure = Figure(
        figsize=(max(5.5, side + label + 1.8), max(4.5, side + label + 1.2)), layout="constrained"
    )
    try:
        axes = figure.add_subplot()
        image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02).set_label("share of the true class")
        ticks = list(range(0, n, step))
        size = min(10.0, step * cell * 72 * 0.6)
        axes.set_xticks(ticks, [names[i] for i in ticks], fontsize=size, rotation=90)
        axes.set_yticks(ticks, [names[i] for i in ticks], fontsize=size)
        for text in (*axes.get_xticklabels(), *axes.get_yticklabels()):
            text.set_parse_math(False)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        total = int(counts.sum())
        accuracy = int(np.trace(counts)) / total if total else 0.0
        axes.set_title(
            f"{title}\naccuracy {accuracy:.1%} ({int(np.trace(counts)):,} of {total:,})", fontsize=11
        )
        if n <= 30:
            for row, column in zip(*np.nonzero(counts), strict=True):
                colour = "white" if shares[row, column] > 0.55 else "black"
                axes.text(
                    column, row, str(int(counts[row, column])), ha="center", va="center",
                    fontsize=min(9.0, cell * 72 * 0.35), color=colour,
                )  # fmt: skip
        return save_figure(figure, path)
    finally:
        figure.clear()

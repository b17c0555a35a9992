"""The evaluation's own pictures: the top losses, their Grad-CAM maps, the reliability diagram (no torch).

Both are drawn as pixels with `harness.pictures`, the toolkit the run's pictures use:
the top losses are a mosaic like the run's sample grid, and the evaluation's confusion
matrix is the run's picture itself (`harness.pictures.confusion`). Class names are
drawn character for character (``p$\\bad$q`` is just a name) and cut in the middle when
long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import attrs
from PIL import Image, ImageDraw

from harness.evaluation.metrics import Calibration
from harness.io.images import load_rgb
from harness.pictures.chart import nice_ticks
from harness.pictures.mosaic import Tile, caption_limit, draw_mosaic
from harness.pictures.raster import Canvas, save_png, text_width, vertical
from harness.pictures.text import shorten

__all__ = ["Explained", "Loss", "draw_cams", "draw_reliability", "draw_top_losses"]

_WRONG = "#c0392b"
_GRID = "#e6e6e6"
_BAR, _BAR_EDGE = "#2f6db5", "#1d4a80"
_GAP_FILL = (224, 123, 123, 102)  # "#e07b7b" at 40% opacity
_WIDTH = 660
_LEFT, _RIGHT = 74, 24
_TOP, _PANEL, _SPACE, _COUNTS, _BOTTOM = 58, 440, 18, 130, 48  # heights in pixels, top to bottom
_HEIGHT = _TOP + _PANEL + _SPACE + _COUNTS + _BOTTOM


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
    limit = caption_limit()
    tiles = [
        Tile(
            image=load_rgb(item.path),
            caption=f"true: {shorten(item.true, limit - 6)}\n✗ pred: {shorten(item.predicted, limit - 8)}\n"
            f"p {item.probability:.2f} · loss {item.loss:.2f}",
            colour=_WRONG,
            frame=4,
        )
        for item in losses
    ]
    heading = (
        f"Top losses: the {len(losses)} wrong images of highest loss\n"
        f"{wrong:,} wrong of {total:,}; loss = -log p(true class)"
    )
    return save_png(draw_mosaic(tiles, heading=heading, caption_lines=3, empty="no mistakes"), path)


@attrs.frozen(kw_only=True)
class Explained:
    """One image as the model saw it, beside its class-activation map (`harness.training.cam`)."""

    image: Image.Image
    cam: Image.Image
    true: str
    predicted: str
    probability: float
    """The probability given to the predicted class, the class the map explains."""


def draw_cams(path: Path, items: Sequence[Explained], *, heading: str) -> Path:
    """Each image beside its map, in pairs of columns: given and predicted class and probability above."""
    limit = caption_limit()
    tiles: list[Tile] = []
    for item in items:
        wrong = item.true != item.predicted
        given, guess = shorten(item.true, limit - 7), shorten(item.predicted, limit - 8)
        tiles.append(
            Tile(
                image=item.image,
                caption=f"given: {given}\n{'✗' if wrong else '✓'} pred: {guess}",
                colour=_WRONG if wrong else "black",
                frame=4 if wrong else 1,
            )
        )
        tiles.append(
            Tile(image=item.cam, caption=f"map of: {guess}\np {item.probability:.2f}", colour="black")
        )
    pairs = max(1, math.ceil(math.sqrt(len(items))))
    mosaic = draw_mosaic(tiles, heading=heading, caption_lines=2, empty="no mistakes", columns=2 * pairs)
    return save_png(mosaic, path)


def draw_reliability(path: Path, calibration: Calibration, *, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin, the gap to the diagonal shaded, counts below, ECE on top."""
    canvas = Canvas(_WIDTH, _HEIGHT)
    right = _WIDTH - _RIGHT
    panel = (_LEFT, _TOP, right, _TOP + _PANEL)
    counts_box = (_LEFT, panel[3] + _SPACE, right, panel[3] + _SPACE + _COUNTS)
    span = right - _LEFT

    def x_at(value: float) -> float:
        return _LEFT + value * span

    def y_at(value: float, box: tuple[int, int, int, int], top: float = 1.0) -> float:
        return box[3] - value / top * (box[3] - box[1])

    ticks = [k / 5 for k in range(6)]
    for value in ticks:
        canvas.draw.line((x_at(value), panel[1], x_at(value), panel[3]), fill=_GRID)
        canvas.draw.line((_LEFT, y_at(value, panel), right, y_at(value, panel)), fill=_GRID)
        canvas.text((_LEFT - 6, y_at(value, panel)), f"{value:.1f}", 11, anchor="rm")
        canvas.text((x_at(value), counts_box[3] + 5), f"{value:.1f}", 11, anchor="ma")

    width = span / calibration.bins
    shade = ImageDraw.Draw(canvas.image, "RGBA")
    for i in range(calibration.bins):
        if calibration.counts[i] == 0:
            continue
        left, end = x_at(i / calibration.bins) + width * 0.02, x_at((i + 1) / calibration.bins) - width * 0.02
        accuracy, confidence = float(calibration.accuracy[i]), float(calibration.confidence[i])
        canvas.draw.rectangle(
            (left, y_at(accuracy, panel), end, panel[3]), fill=_BAR, outline=_BAR_EDGE, width=1
        )
        high, low = y_at(max(accuracy, confidence), panel), y_at(min(accuracy, confidence), panel)
        gap_box = (round(left), round(high), round(end), round(low))
        shade.rectangle(gap_box, fill=_GAP_FILL)
        _hatch(canvas, gap_box, _WRONG)
        canvas.draw.rectangle(gap_box, outline=_WRONG, width=1)
        canvas.draw.line((left, y_at(confidence, panel), end, y_at(confidence, panel)), fill="black", width=2)
    canvas.line([(x_at(0), y_at(0, panel)), (x_at(1), y_at(1, panel))], "#888888", 2, "dashed")
    canvas.rectangle(panel, outline="#333333", width=1)
    _legend(canvas, (panel[0] + 8, panel[1] + 8))

    most = max(int(calibration.counts.max(initial=0)), 1)
    levels = [level for level in nice_ticks(0.0, float(most), 4) if level == int(level)] or [0.0, float(most)]
    top = max(levels[-1], float(most))
    for level in levels:
        y = y_at(level, counts_box, top)
        canvas.draw.line((_LEFT, y, right, y), fill=_GRID)
        canvas.text((_LEFT - 6, y), f"{level:,.0f}", 11, anchor="rm")
    for i, count in enumerate(calibration.counts.tolist()):
        if count:
            left, end = (
                x_at(i / calibration.bins) + width * 0.02,
                x_at((i + 1) / calibration.bins) - width * 0.02,
            )
            canvas.draw.rectangle((left, y_at(count, counts_box, top), end, counts_box[3]), fill="#777777")
    canvas.rectangle(counts_box, outline="#333333", width=1)

    images = int(calibration.counts.sum())
    canvas.multiline(
        ((_LEFT + right) / 2, 8),
        f"{title}\nECE {calibration.ece:.2%} ({calibration.bins} equal-width bins, {images:,} images)",
        15,
        anchor="ma",
    )
    canvas.text(((_LEFT + right) / 2, _HEIGHT - 8), "confidence (top probability)", 13, anchor="md")
    canvas.paste(vertical("accuracy", 13, height=_PANEL), _LEFT - 58, panel[1])
    canvas.paste(vertical("images", 13, height=_COUNTS), _LEFT - 58, counts_box[1])
    return save_png(canvas.image, path)


def _hatch(canvas: Canvas, box: tuple[int, int, int, int], colour: str) -> None:
    """Lines rising to the right across `box`, matplotlib's ``//`` hatch."""
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        return
    mask = Image.new("L", (right - left, bottom - top), 0)
    draw = ImageDraw.Draw(mask)
    height = bottom - top
    for start in range(-height, right - left, 10):
        draw.line((start, height, start + height, 0), fill=255, width=1)
    canvas.image.paste(colour, (left, top), mask)


def _legend(canvas: Canvas, corner: tuple[int, int]) -> None:
    entries = (
        "perfectly calibrated",
        "accuracy in the bin",
        "gap: over- (above) or under-confident (inside)",
        "mean confidence in the bin",
    )
    left, top = corner
    line = 18
    width = 48 + max(text_width(label, 11) for label in entries)
    canvas.draw.rectangle(
        (left, top, left + width, top + line * len(entries) + 8), fill="white", outline="#cccccc"
    )
    for k, label in enumerate(entries):
        y = top + 4 + line * k + line / 2
        key = (left + 8, round(y - 6), left + 32, round(y + 6))
        if k == 0:
            canvas.line([(key[0], y), (key[2], y)], "#888888", 2, "dashed")
        elif k == 1:
            canvas.draw.rectangle(key, fill=_BAR, outline=_BAR_EDGE)
        elif k == 2:
            ImageDraw.Draw(canvas.image, "RGBA").rectangle(key, fill=_GAP_FILL)
            _hatch(canvas, key, _WRONG)
            canvas.draw.rectangle(key, outline=_WRONG)
        else:
            canvas.draw.line((key[0], y, key[2], y), fill="black", width=2)
        canvas.text((left + 40, y), label, 11, anchor="lm")

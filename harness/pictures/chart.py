"""Line charts against epochs, drawn as pixels: what a chart shows (`Chart`) and how it looks.

A `Chart` is a plain record (curves, a marked epoch, a star, reference lines, legend), so
a test reads what a picture shows without looking at pixels; `render` draws one with
Pillow in a few milliseconds where a matplotlib figure of the same chart costs about 50 ms
of CPU (most of it laying out tick labels). The look follows matplotlib's defaults: the
tab10 colours, dashed validation curves, a light grid, the legend in a corner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
from PIL import Image

from harness.pictures.raster import Canvas, text_width, vertical
from harness.pictures.text import shorten

__all__ = ["TAB10", "Chart", "Series", "nice_ticks", "render"]

TAB10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_WIDTH, _HEIGHT = 900, 540
_MARGIN = (78, 44, 24, 52)  # left, top, right, bottom, in pixels, around the plotting area
_GRID = "#e6e6e6"
_MARKED = "#595959"
_LEGEND_LIMIT = 40  # characters of a legend entry; longer names are cut in the middle


@attrs.frozen(kw_only=True)
class Series:
    """One curve: points in epoch order (NaN values leave a gap), its colour and style."""

    name: str
    points: tuple[tuple[float, float], ...]
    colour: str
    style: str = "solid"  # "solid", "dashed", "dotted", or "none" (markers alone: a scatter)
    markers: bool = True


@attrs.frozen(kw_only=True)
class Chart:
    """Everything a picture shows; `render` draws it."""

    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    marked_x: float | None = None
    """An epoch marked by a dotted vertical line (the best one)."""
    marked_label: str | None = None
    star: tuple[float, float] | None = None
    levels: tuple[tuple[float, str], ...] = ()
    """Dotted horizontal lines: (value, colour)."""
    percent_of: float | None = None
    """Tick labels as percentages of this value (1.0 or 100.0); None for plain numbers."""
    from_zero: bool = False
    x_ticks: tuple[tuple[float, str], ...] = ()
    """Labelled x ticks (value, label) for a chart that is not against epochs; () for whole epochs."""
    legend: bool = True
    legend_title: str | None = None
    legend_outside: bool = False

    @property
    def legend_entries(self) -> list[tuple[str, str, str]]:
        """(label, colour, style) in the legend's order: the curves, then the marked epoch."""
        entries = [(s.name, s.colour, s.style) for s in self.series] if self.legend else []
        if self.marked_label is not None:
            entries.append((self.marked_label, _MARKED, "dotted"))
        return entries


def nice_ticks(low: float, high: float, most: int = 7) -> list[float]:
    """At most `most` round values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high - low < 1e-12 * max(1.0, abs(high)):
        low, high = low - max(abs(low) * 0.05, 1e-6), high + max(abs(high) * 0.05, 1e-6)
    raw = (high - low) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [first + i * step for i in range(count + 1)]


def _label(value: float, step: float, percent_of: float | None) -> str:
    if percent_of is not None:
        shown = value / percent_of * 100
        decimals = max(0, -math.floor(math.log10(step / percent_of * 100) + 1e-9))
        return f"{shown:.{decimals}f}%"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.1e}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def render(chart: Chart, *, width: int = _WIDTH, height: int = _HEIGHT) -> Image.Image:
    """Draw `chart`: axes with round ticks, every curve, the marked epoch, the legend."""
    xs = [x for s in chart.series for x, _ in s.points]
    ys = [y for s in chart.series for _, y in s.points if math.isfinite(y)]
    ys += [level for level, _ in chart.levels]
    if chart.star is not None:
        ys.append(chart.star[1])
    x_low, x_high = (min(xs) - 0.5, max(xs) + 0.5) if xs else (-0.5, 0.5)
    y_low, y_high = (min(ys), max(ys)) if ys else (0.0, 1.0)
    if chart.from_zero:
        y_low = min(0.0, y_low)
    pad = (y_high - y_low) * 0.05
    y_ticks = nice_ticks(y_low - pad, y_high + pad)
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_step = max(1, math.ceil((x_high - x_low) / 10))
    x_ticks = [
        (float(x), f"{x:.0f}") for x in range(math.ceil(x_low), math.floor(x_high) + 1) if x % x_step == 0
    ]
    if chart.x_ticks:
        spread = [*xs, *(x for x, _ in chart.x_ticks)]
        pad_x = 0.05 * ((max(spread) - min(spread)) or 1.0)
        x_low, x_high, x_ticks = min(spread) - pad_x, max(spread) + pad_x, list(chart.x_ticks)

    legend = [(shorten(label, _LEGEND_LIMIT), colour, style) for label, colour, style in chart.legend_entries]
    legend_width = max((text_width(label, 11) for label, _, _ in legend), default=0) + 44
    left, top, right, bottom = _MARGIN
    if chart.legend_outside and legend:
        right += legend_width + 12
    box = (left, top, width - right, height - bottom)
    canvas = Canvas(width, height)

    def at(x: float, y: float) -> tuple[float, float]:
        fx = (x - x_low) / (x_high - x_low)
        fy = (y - y_low) / (y_high - y_low) if y_high > y_low else 0.5
        return box[0] + fx * (box[2] - box[0]), box[3] - fy * (box[3] - box[1])

    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for y in y_ticks:
        _, py = at(x_low, y)
        canvas.draw.line((box[0], py, box[2], py), fill=_GRID, width=1)
        canvas.text((box[0] - 6, py), _label(y, y_step, chart.percent_of), 11, anchor="rm")
    for x, text in x_ticks:
        px, _ = at(x, y_low)
        canvas.draw.line((px, box[1], px, box[3]), fill=_GRID, width=1)
        canvas.text((px, box[3] + 5), text, 11, anchor="ma")
    for level, colour in chart.levels:
        canvas.line([at(x_low, level), at(x_high, level)], colour, 1, "dotted")
    if chart.marked_x is not None:
        canvas.line([at(chart.marked_x, y_low), at(chart.marked_x, y_high)], _MARKED, 2, "dotted")
    for series in chart.series:
        for run in _finite_runs(series.points):
            pixels = [at(x, y) for x, y in run]
            canvas.line(pixels, series.colour, 2, series.style)
            if series.markers:
                for px, py in pixels:
                    canvas.draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=series.colour)
    if chart.star is not None:
        _star(canvas, at(*chart.star), 9)
    canvas.rectangle(box, outline="#333333", width=1)

    canvas.text(((box[0] + box[2]) / 2, 12), chart.title, 16, anchor="ma")
    canvas.text(((box[0] + box[2]) / 2, height - 8), chart.x_label, 13, anchor="md")
    canvas.paste(vertical(chart.y_label, 13, height=box[3] - box[1]), 4, box[1])
    if legend:
        _legend(canvas, legend, chart.legend_title, box, legend_width, outside=chart.legend_outside)
    return canvas.image


def _finite_runs(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if math.isfinite(y):
            runs[-1].append((x, y))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def _star(canvas: Canvas, centre: tuple[float, float], radius: float) -> None:
    cx, cy = centre
    corners = [
        (cx + r * math.sin(math.pi * k / 5), cy - r * math.cos(math.pi * k / 5))
        for k, r in zip(range(10), [radius, radius * 0.4] * 5, strict=True)
    ]
    canvas.draw.polygon(corners, fill="black")


def _legend(
    canvas: Canvas,
    entries: Sequence[tuple[str, str, str]],
    title: str | None,
    box: tuple[int, int, int, int],
    width: int,
    *,
    outside: bool,
) -> None:
    line = 18
    height = line * (len(entries) + (1 if title else 0)) + 10
    left = box[2] + 12 if outside else box[2] - width - 8
    top = (box[1] + box[3] - height) // 2 if outside else box[1] + 8
    canvas.draw.rectangle((left, top, left + width, top + height), fill="white", outline="#cccccc")
    y = top + 5 + line / 2
    if title:
        canvas.text((left + width / 2, y), title, 11, anchor="mm")
        y += line
    for label, colour, style in entries:
        canvas.line([(left + 8, y), (left + 32, y)], colour, 2, style)
        if style == "none":
            canvas.draw.ellipse((left + 16, y - 4, left + 24, y + 4), fill=colour)
        canvas.text((left + 38, y), label, 11, anchor="lm")
        y += line

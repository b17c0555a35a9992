"""Pictures drawn as pixels with Pillow and numpy: fonts, a colour scale, text, PNG files.

The confusion matrix and the image grids are grids of cells, so they are drawn as
arrays of pixels with text placed on them, not as matplotlib figures: a matplotlib
figure spends its time laying out and rendering each text artist (2.2 s of CPU for a
50-class matrix with its counts), Pillow writes a short string in tens of microseconds.
Neither this module nor its callers import torch: the background writer's worker and
an ONNX evaluation draw from numpy arrays.

Class names are written with DejaVu Sans (shipped inside matplotlib) or, for a name with
characters DejaVu lacks, the first installed font of `_FALLBACK_FAMILIES` that has all
of them, so a Chinese name renders when a font for it is installed instead of as boxes.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from harness.io.artifacts import atomic_path

__all__ = ["BLUES", "Canvas", "colour_scale", "font_for", "save_png", "text_width", "vertical"]

Pixels = npt.NDArray[np.uint8]

# ColorBrewer's "Blues", matplotlib's default for a confusion matrix, light to dark.
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
_FALLBACK_FAMILIES = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK KR",
    "Noto Sans",
    "Arial Unicode MS",
    "Microsoft YaHei",
    "PingFang SC",
)


def colour_scale(values: npt.NDArray[np.float64], anchors: Sequence[str] = BLUES) -> Pixels:
    """`values` in [0, 1] (any shape) as RGB, interpolated linearly between `anchors`."""
    stops = np.array([[int(a[i : i + 2], 16) for i in (1, 3, 5)] for a in anchors], dtype=np.float64)
    position = np.clip(values, 0.0, 1.0) * (len(anchors) - 1)
    low = np.minimum(position.astype(np.int64), len(anchors) - 2)
    fraction = (position - low)[..., None]
    mixed = stops[low] * (1.0 - fraction) + stops[low + 1] * fraction
    pixels: Pixels = np.rint(mixed).astype(np.uint8)
    return pixels


@functools.cache
def _dejavu() -> str:
    spec = importlib.util.find_spec("matplotlib")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise RuntimeError("matplotlib is not installed: its DejaVu Sans font draws the class names")
    return str(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")


@functools.cache
def _covered(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(path, fontNumber=0, lazy=True) as font:
        return frozenset(font.getBestCmap())


@functools.cache
def _fallbacks() -> tuple[str, ...]:
    from matplotlib import font_manager

    by_name = {entry.name: entry.fname for entry in font_manager.fontManager.ttflist}
    return tuple(by_name[family] for family in _FALLBACK_FAMILIES if family in by_name)


@functools.cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def font_for(text: str, size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at `size` pixels, or the first fallback font that has every character of `text`."""
    path = _dejavu()
    if not text.isascii():
        needed = {ord(character) for character in text if not character.isspace()}
        if not needed <= _covered(path):
            path = next((p for p in _fallbacks() if needed <= _covered(p)), path)
    return _font(path, size)


def text_width(text: str, size: int) -> int:
    """How many pixels wide `text` is at `size`."""
    return int(np.ceil(font_for(text, size).getlength(text)))


class Canvas:
    """A white RGB picture to paste pixel arrays on and write text on."""

    def __init__(self, width: int, height: int) -> None:
        self.image = Image.new("RGB", (max(1, width), max(1, height)), "white")
        self.draw = ImageDraw.Draw(self.image)

    def paste(self, pixels: Pixels | Image.Image, left: int, top: int) -> None:
        picture = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
        self.image.paste(picture, (left, top))

    def text(
        self, xy: tuple[float, float], text: str, size: int, *, fill: str = "black", anchor: str = "la"
    ) -> None:
        """`text` at `xy`, placed by a Pillow `anchor` (``"mm"``: its middle; ``"rm"``: its right end)."""
        self.draw.text(xy, text, font=font_for(text, size), fill=fill, anchor=anchor)

    def multiline(
        self, xy: tuple[float, float], text: str, size: int, *, fill: str = "black", anchor: str = "la"
    ) -> None:
        """Lines of `text`, centred on each other, placed by `anchor` as a block."""
        self.draw.multiline_text(
            xy, text, font=font_for(text, size), fill=fill, anchor=anchor, align="center", spacing=3
        )

    def stamp(self, xy: tuple[float, float], text: str, size: int, *, fill: str = "black") -> None:
        """`text` (lines centred) with its middle at `xy`, from a cache of rendered strings: a
        matrix's cells repeat few distinct numbers, and rendering is most of a string's cost."""
        mask, left, top = _rendered(text, size)
        self.image.paste(fill, (round(xy[0] + left), round(xy[1] + top)), mask)

    def rectangle(self, box: tuple[int, int, int, int], *, outline: str, width: int) -> None:
        self.draw.rectangle(box, outline=outline, width=width)

    def line(
        self, points: Sequence[tuple[float, float]], colour: str, width: int, style: str = "solid"
    ) -> None:
        """A line through `points`: ``"solid"``, ``"dashed"`` or ``"dotted"``, as matplotlib draws them
        (``"none"`` draws nothing: a scatter's series is its markers alone)."""
        if style == "none":
            return
        if style == "solid" or len(points) < 2:
            self.draw.line(list(points), fill=colour, width=width, joint="curve")
            return
        dash, gap = (8.0, 5.0) if style == "dashed" else (2.0, 4.0)
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            length = math.hypot(x1 - x0, y1 - y0)
            position = 0.0
            while position < length:
                end = min(position + dash, length)
                a, b = position / length, end / length
                self.draw.line(
                    (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
                    fill=colour,
                    width=width,
                )
                position = end + gap


@functools.lru_cache(maxsize=4096)
def _rendered(text: str, size: int) -> tuple[Image.Image, int, int]:
    """`text` as a mask, and where its top left corner lies from its middle."""
    font = font_for(text, size)
    scratch = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = (
        int(v)
        for v in scratch.multiline_textbbox((0, 0), text, font=font, anchor="mm", align="center", spacing=3)
    )
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).multiline_text(
        (-left, -top), text, font=font, fill=255, anchor="mm", align="center", spacing=3
    )
    return mask, left, top


def vertical(text: str, size: int, *, height: int) -> Image.Image:
    """`text` (one line or more) turned to read upwards, centred in a strip `height` pixels
    tall (an axis title)."""
    thickness = (text.count("\n") + 1) * (size + 3) + 3
    strip = Canvas(height, thickness)
    if "\n" in text:
        strip.multiline((height / 2, thickness / 2), text, size, anchor="mm")
    else:
        strip.text((height / 2, thickness / 2), text, size, anchor="mm")
    return strip.image.rotate(90, expand=True)


def save_png(image: Image.Image, path: Path) -> Path:
    """Write `image` to `path` as PNG, atomically. zlib level 1: these pictures are mostly flat
    colour, which compresses almost as well at a third of the default level's time."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
    return path

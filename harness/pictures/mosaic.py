"""A grid of images, each framed and captioned above in its colour: samples, top losses.

Each image is fitted to a square cell without changing its shape: enlarged with nearest
neighbours (a small image shows the pixels the model saw), shrunk with Lanczos (a photo
stays legible). A wrong prediction gets a thick frame and its caption in red, the way
both the run's sample grid and an evaluation's top losses show it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
from PIL import Image

from harness.pictures.raster import Canvas, text_width

__all__ = ["CAPTION_SIZE", "CELL", "Tile", "caption_limit", "draw_mosaic", "fit"]

CELL = 180  # pixels per image
CAPTION_SIZE = 12
_GAP = 20  # pixels between two images
_HEADING_SIZE = 15
_LINE = CAPTION_SIZE + 3  # pixels per caption line


@attrs.frozen(kw_only=True)
class Tile:
    """One image of the grid, with the lines written above it, in `colour` like its frame."""

    image: Image.Image
    caption: str
    colour: str
    frame: int = 1
    """The frame's width in pixels (4 marks a mistake)."""


def caption_limit(cell: int = CELL) -> int:
    """About how many characters of a caption line fit above a cell."""
    return int(cell / (0.55 * CAPTION_SIZE))


def fit(image: Image.Image, cell: int = CELL) -> Image.Image:
    """`image` as RGB, as large as fits in `cell` x `cell` with its proportions kept."""
    scale = cell / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return image.convert("RGB").resize(size, method)


def draw_mosaic(
    tiles: Sequence[Tile],
    *,
    heading: str,
    caption_lines: int,
    empty: str = "nothing to show",
    columns: int | None = None,
) -> Image.Image:
    """`tiles` in rows (as many columns as rows, or one more, unless `columns` says), under `heading`.

    Room is left for `caption_lines` lines above each image; with no tiles, `empty` is
    written where they would be.
    """
    columns = max(1, columns or math.ceil(math.sqrt(len(tiles))))
    rows = max(1, math.ceil(len(tiles) / columns))
    header = 16 + (heading.count("\n") + 1) * (_HEADING_SIZE + 3)
    band = caption_lines * _LINE + 10
    widest = max(text_width(line, _HEADING_SIZE) for line in heading.splitlines() or [""])
    width = max(columns * CELL + (columns + 1) * _GAP, widest + 2 * _GAP)
    height = header + rows * (CELL + band + _GAP) if tiles else header + 2 * _GAP + _LINE
    canvas = Canvas(width, height)
    canvas.multiline((width / 2, 8), heading, _HEADING_SIZE, anchor="ma")
    if not tiles:
        canvas.text((width / 2, header + _GAP), empty, CAPTION_SIZE + 1, anchor="mt")
    grid_left = (width - (columns * CELL + (columns - 1) * _GAP)) // 2
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        picture = fit(tile.image)
        left = grid_left + column * (CELL + _GAP) + (CELL - picture.width) // 2
        top = header + row * (CELL + band + _GAP) + band + (CELL - picture.height)
        canvas.paste(picture, left, top)
        frame = tile.frame
        canvas.rectangle(
            (left - frame, top - frame, left + picture.width + frame - 1, top + picture.height + frame - 1),
            outline=tile.colour,
            width=frame,
        )
        canvas.multiline(
            (left + picture.width / 2, top - frame - 3),
            tile.caption,
            CAPTION_SIZE,
            fill=tile.colour,
            anchor="md",
        )
    return canvas.image

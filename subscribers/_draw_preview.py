"""The augmentation preview's picture, the job `subscribers.augment_preview` submits (no torch).

It runs in the background writer's worker process, which imports the job's module to
unpickle it: this module imports only numpy, Pillow and the pixel helpers, so that the
worker never loads torch (about 2 s of CPU) for a picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

from harness.pictures.raster import Canvas, save_png
from harness.pictures.text import shorten

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = ["draw_preview"]

_CELL = 96  # pixels per image
_TITLE = 18  # pixels above each image for its class
_HEADER = 28  # pixels above the grid for its title


def draw_preview(path: Path, pixels: npt.NDArray[np.uint8], labels: Sequence[str], record: Record) -> None:
    """The job: `pixels` (N x H x W x C, 8-bit) in a grid, each titled with its label."""
    columns = max(1, math.ceil(math.sqrt(len(pixels) * 1.5)))
    rows = max(1, math.ceil(len(pixels) / columns))
    canvas = Canvas(columns * _CELL, _HEADER + rows * (_CELL + _TITLE))
    canvas.text((columns * _CELL / 2, _HEADER / 2), "Training images after augmentation", 14, anchor="mm")
    limit = max(4, _CELL // 7)
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        row, column = divmod(index, columns)
        left, top = column * _CELL, _HEADER + row * (_CELL + _TITLE)
        picture = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).convert("RGB")
        canvas.paste(picture.resize((_CELL - 4, _CELL - 4), Image.Resampling.NEAREST), left + 2, top + _TITLE)
        canvas.text((left + _CELL / 2, top + _TITLE / 2), shorten(label, limit), 11, anchor="mm")
    record("augment_preview", save_png(canvas.image, path))

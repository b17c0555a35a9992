"""The augmentation preview's picture, the job `subscribers.augment_preview` submits (no torch).

It runs in the background writer's worker process, which imports the job's module to
unpickle it: this module imports only numpy, Pillow and the pixel helpers, so that the
worker never loads torch (about 2 s of CPU) for a picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image

from harness.pictures.mosaic import Tile, caption_limit, draw_mosaic
from harness.pictures.raster import save_png
from harness.pictures.text import shorten

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = ["draw_preview"]


def draw_preview(path: Path, pixels: npt.NDArray[np.uint8], labels: Sequence[str], record: Record) -> None:
    """The job: `pixels` (N x H x W x C, 8-bit) in a mosaic, each captioned with its label."""
    limit = caption_limit()
    tiles = [
        Tile(
            image=Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image),
            caption=shorten(label, limit),
            colour="#222222",
        )
        for image, label in zip(pixels, labels, strict=True)
    ]
    picture = draw_mosaic(tiles, heading="Training images after augmentation", caption_lines=1)
    record("augment_preview", save_png(picture, path))

"""Reading image files the one way training, export and prediction all share (no torch).

Any still image becomes 8-bit RGB: grayscale and palette are expanded, alpha is
composited over white, and 16-bit or float images are scaled by their maximum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from harness.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "is_image_file", "load_rgb"]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_image_file(path: Path) -> bool:
    """A visible file with an image suffix."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def load_rgb(path: Path) -> Image.Image:
    """Open any still image as 8-bit RGB; a `DataError` naming the path if it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _HIGH_DEPTH_MODES:
                array = np.asarray(image, dtype=np.float64)
                top = array.max() or 1.0
                return Image.fromarray((array * (255.0 / top)).astype(np.uint8)).convert("RGB")
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None

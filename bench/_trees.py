"""ImageFolder trees for the scan and loader benchmarks: a few JPEGs encoded once, copied many times.

Copying bytes is what makes a 100,000-file tree take seconds rather than minutes to write;
every file is still a valid image that Pillow opens and decodes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

__all__ = ["cache_at", "jpegs", "write_tree"]


def cache_at(directory: str) -> AbstractContextManager[object]:
    """``$HARNESS_CACHE`` set to `directory` for the block, restored (or unset) after it."""
    return mock.patch.dict(os.environ, {"HARNESS_CACHE": directory})


def jpegs(count: int, size: int, seed: int = 0) -> list[bytes]:
    """`count` distinct JPEGs of `size` x `size` pixels: smooth colour fields with some grain.

    A photograph compresses like this (about a tenth of its raw size), not like pure noise.
    """
    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), np.int16)
        grain = rng.integers(-12, 13, field.shape, dtype=np.int16)
        pixels = np.clip(field + grain, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def write_tree(root: Path, files: int, classes: int, images: Sequence[bytes]) -> Path:
    """`files` images spread evenly over `classes` class folders under `root`, `images` in turn."""
    folders = [root / f"class_{index:03d}" for index in range(classes)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        path = folders[index % classes] / f"img_{index:06d}.jpg"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(descriptor, images[index % len(images)])
        finally:
            os.close(descriptor)
    return root

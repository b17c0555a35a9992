"""Preprocessing: what a model expects of an input image, as a torch-free record.

Training (`harness.training.data`, with torchvision), prediction (`harness.io.images.to_input`,
with numpy and Pillow) and the exported model's card (`harness.onnx.card`) all read this
one record, so the three cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import attrs

__all__ = ["Preprocessing"]


def _triple(value: Iterable[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return a, b, c


@attrs.frozen(kw_only=True)
class Preprocessing:
    """What the model expects of an input image, recorded beside every exported model.

    `resize` is ``"squash"`` (the whole image resized to ``image_size`` squared, aspect
    ignored) or ``"crop"`` (the shorter side resized to ``floor(image_size / crop_fraction)``,
    the longer one in proportion, then the centre ``image_size`` square cut out, as timm's
    ``crop_pct``). `resized_size` and `crop_box` are the geometry both implementations use.
    """

    image_size: int
    mean: tuple[float, float, float] = attrs.field(default=(0.485, 0.456, 0.406), converter=_triple)
    std: tuple[float, float, float] = attrs.field(default=(0.229, 0.224, 0.225), converter=_triple)
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    resize: Literal["squash", "crop"] = "squash"
    crop_fraction: float = 1.0

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a `width` x `height` image after the resize step."""
        size = self.image_size
        if self.resize == "squash":
            return size, size
        short = max(size, math.floor(size / self.crop_fraction))
        if width <= height:
            return short, max(short, int(short * height / width))
        return max(short, int(short * width / height)), short

    def crop_box(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the centre square in a resized `width` x `height` image."""
        size = self.image_size
        return round((width - size) / 2.0), round((height - size) / 2.0)

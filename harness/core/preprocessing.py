"""Preprocessing: what a model expects of an input image, as a torch-free record.

Training (`harness.training.data`, with torchvision), prediction (`harness.io.images.to_input`,
with numpy and Pillow) and the exported model's card (`harness.onnx.card`) all read this
one record, so the three cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

__all__ = ["Preprocessing"]


def _triple(value: Iterable[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return a, b, c


@attrs.frozen(kw_only=True)
class Preprocessing:
    """What the model expects of an input image, recorded beside every exported model."""

    image_size: int
    mean: tuple[float, float, float] = attrs.field(default=(0.485, 0.456, 0.406), converter=_triple)
    std: tuple[float, float, float] = attrs.field(default=(0.229, 0.224, 0.225), converter=_triple)
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"

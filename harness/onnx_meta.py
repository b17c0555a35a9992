"""What an exported ONNX model carries besides its graph, and how its inputs are made, without torch.

The ONNX export writes a `ModelCard` (class names, preprocessing, where the weights came
from) into the model's ``metadata_props`` as JSON strings; `harness.predict` reads it back
and prepares images with `harness.images.load_rgb` and `to_input`. Prediction runs on numpy, Pillow and
onnxruntime alone, so this module must never import torch.

`harness.images.load_rgb` and `to_input` reproduce the training pipeline of `harness.data`: the same
conversion to RGB (alpha composited over white) and a bilinear resize to a square, then
scaling to [0, 1] and normalising by mean and std. Pillow's bilinear resize of 8-bit
images agrees with torchvision's antialiased one within one grey level.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt
from PIL import Image

from harness.errors import DataError
from harness.images import IMAGE_SUFFIXES

__all__ = [
    "KEY_CLASSES",
    "KEY_PREPROCESSING",
    "KEY_SOURCE",
    "ExportSource",
    "InputSpec",
    "ModelCard",
    "find_images",
    "to_input",
]

KEY_CLASSES = "harness.class_names"
KEY_PREPROCESSING = "harness.preprocessing"
KEY_SOURCE = "harness.source"


Array = npt.NDArray[np.float32]


def _triple(value: Iterable[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in value)
    return a, b, c


def _names(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(str(value) for value in values)


@attrs.frozen(kw_only=True)
class InputSpec:
    """The input a model expects: `harness.context.Preprocessing` without torch."""

    image_size: int
    mean: tuple[float, float, float] = attrs.field(converter=_triple)
    std: tuple[float, float, float] = attrs.field(converter=_triple)
    channel_order: str = "RGB"
    layout: str = "NCHW"


@attrs.frozen(kw_only=True)
class ExportSource:
    """Where exported weights came from: a checkpoint file, or the model in memory (None)."""

    checkpoint: str | None
    epoch: int | None = None
    global_step: int | None = None
    monitor: str | None = None
    score: float | None = None

    def describe(self) -> str:
        """One phrase for messages, e.g. ``checkpoint 'a.ckpt' (epoch 3, val/acc_top1 = 0.91)``."""
        details = [] if self.epoch is None else [f"epoch {self.epoch}"]
        if self.monitor is not None and self.score is not None:
            details.append(f"{self.monitor} = {self.score:.4g}")
        where = "the model in memory at the end of training"
        if self.checkpoint is not None:
            where = f"checkpoint {self.checkpoint!r}"
        return f"{where} ({', '.join(details)})" if details else where


@attrs.frozen(kw_only=True)
class ModelCard:
    """Everything a user of the ONNX file needs besides the graph."""

    class_names: tuple[str, ...] = attrs.field(converter=_names)
    preprocessing: InputSpec
    source: ExportSource

    def to_metadata(self) -> dict[str, str]:
        """``metadata_props`` entries: one JSON string per key."""
        return {
            KEY_CLASSES: json.dumps(list(self.class_names)),
            KEY_PREPROCESSING: json.dumps(attrs.asdict(self.preprocessing)),
            KEY_SOURCE: json.dumps(attrs.asdict(self.source)),
        }

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], where: str) -> ModelCard:
        """Read a card back; `where` (the model's path) names the file in errors."""
        missing = [key for key in (KEY_CLASSES, KEY_PREPROCESSING) if key not in props]
        if missing:
            raise DataError(
                f"{where}: ONNX metadata lacks {', '.join(missing)}; "
                "expected a model exported by the harness (subscribers.onnx_export or harness.export)"
            )
        try:
            classes = json.loads(props[KEY_CLASSES])
            if not isinstance(classes, list) or not classes:
                raise ValueError(f"{KEY_CLASSES} must be a non-empty JSON list, got {props[KEY_CLASSES]!r}")
            spec = InputSpec(**json.loads(props[KEY_PREPROCESSING]))
            source = ExportSource(**json.loads(props.get(KEY_SOURCE, '{"checkpoint": null}')))
        except (ValueError, TypeError) as error:
            raise DataError(f"{where}: unreadable harness metadata in the ONNX file: {error}") from None
        return cls(class_names=classes, preprocessing=spec, source=source)


def find_images(paths: Iterable[Path]) -> list[Path]:
    """The files named, and the image files under the folders named (recursively, sorted).

    Hidden files and folders inside a named folder are skipped. A path that does not
    exist, or a folder without images, is a `DataError` naming it.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(
                candidate
                for candidate in path.rglob("*")
                if candidate.suffix.lower() in IMAGE_SUFFIXES
                and candidate.is_file()
                and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
            )
            if not inside:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise DataError(f"{path}: folder holds no image files (looked for {suffixes})")
            found.extend(inside)
        else:
            raise DataError(f"{path}: no such file or folder")
    return found


def to_input(image: Image.Image, spec: InputSpec) -> Array:
    """One RGB image as the model's input: CHW float32, resized and normalised."""
    size = spec.image_size
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    chw: Array = ((pixels - mean) / std).transpose(2, 0, 1)
    return np.ascontiguousarray(chw)

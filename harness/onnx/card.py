"""What an exported ONNX model carries besides its graph, read and written without torch.

The ONNX export writes a `ModelCard` (class names, preprocessing, where the weights came
from) into the model's ``metadata_props`` as JSON strings; `harness.predict` reads it back
and prepares images with `harness.io.images` (`load_rgb`, `to_input`), the same way
training does. Prediction runs on numpy, Pillow and onnxruntime alone, so this module
must never import torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import attrs

from harness.core.errors import DataError
from harness.core.preprocessing import Preprocessing
from harness.core.temperature import Temperature

__all__ = [
    "KEY_CLASSES",
    "KEY_FLIPS",
    "KEY_PREPROCESSING",
    "KEY_SOURCE",
    "KEY_TEMPERATURE",
    "ExportSource",
    "ModelCard",
]

KEY_CLASSES = "harness.class_names"
KEY_PREPROCESSING = "harness.preprocessing"
KEY_SOURCE = "harness.source"
KEY_TEMPERATURE = "harness.temperature"
KEY_FLIPS = "harness.flips_change_class"


def _names(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(str(value) for value in values)


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
    preprocessing: Preprocessing
    source: ExportSource
    temperature: Temperature | None = None
    """Fitted on the validation logits (`harness.core.temperature`); predict and evaluate apply it."""
    flips_change_class: bool | None = None
    """Whether a mirrored image may be another class (the run trained without flips); None: unknown."""

    def to_metadata(self) -> dict[str, str]:
        """``metadata_props`` entries: one JSON string per key."""
        entries = {
            KEY_CLASSES: json.dumps(list(self.class_names)),
            KEY_PREPROCESSING: json.dumps(attrs.asdict(self.preprocessing)),
            KEY_SOURCE: json.dumps(attrs.asdict(self.source)),
        }
        if self.temperature is not None:
            entries[KEY_TEMPERATURE] = json.dumps(self.temperature.to_json())
        if self.flips_change_class is not None:
            entries[KEY_FLIPS] = json.dumps(self.flips_change_class)
        return entries

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
            spec = Preprocessing(**json.loads(props[KEY_PREPROCESSING]))
            source = ExportSource(**json.loads(props.get(KEY_SOURCE, '{"checkpoint": null}')))
            temperature = (
                Temperature.from_json(json.loads(props[KEY_TEMPERATURE]))
                if KEY_TEMPERATURE in props
                else None
            )
            flips = json.loads(props.get(KEY_FLIPS, "null"))
            if flips is not None and not isinstance(flips, bool):
                raise ValueError(f"{KEY_FLIPS} must be true, false or null, got {flips!r}")
        except (ValueError, TypeError) as error:
            raise DataError(f"{where}: unreadable harness metadata in the ONNX file: {error}") from None
        return cls(
            class_names=classes,
            preprocessing=spec,
            source=source,
            temperature=temperature,
            flips_change_class=flips,
        )

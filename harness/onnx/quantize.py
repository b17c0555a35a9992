"""int8 and fp16 ONNX behind an accuracy gate, scored against the float model.

`quantize_model` with ``kind="int8"`` turns an exported ``model.onnx`` into ``model.int8.onnx``:
``quant_pre_process`` (shape inference and graph optimisation), then ``quantize_static``
in the QDQ format with per-channel QInt8 weights and QUInt8 activations, calibrated
(MinMax) on a seeded sample of training images prepared by the model's own preprocessing
(`harness.io.images.to_input`, what prediction does). The int8 model is then scored
against the float one on the validation split: top-1, balanced accuracy and every class's
recall. When top-1 drops by more than `max_drop` points, or a class's recall by more than
`max_class_drop` points, it is refused: no file is left under the final name, the
`Quantization` record says which classes lost what, and the float model is untouched.
The record (scores, size, onnxruntime CPU latency at batch 1 and 32) is returned either
way; the callers write it into ``parity.json`` (under ``"quantization"``) and the run's
``summary.json``.

``kind="fp16"`` converts the weights and operators to float16 (onnxconverter-common's
``convert_float_to_float16``, inputs and outputs kept float32; the ``fp16`` extra) into
``model.fp16.onnx`` and gates it the same way. fp16 is for GPUs: onnxruntime here has the
CPU provider only, which runs an fp16 model by casting back to float32 around the
operators it has no float16 kernel for, so the gate's scores hold but its CPU latency
says nothing about a GPU's.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import numpy.typing as npt

from harness.core.errors import DataError, ExportError
from harness.core.preprocessing import Preprocessing
from harness.evaluation.pairs import Pairs
from harness.io.artifacts import write_json
from harness.io.images import load_rgb, to_input
from harness.onnx.bundle import PARITY_FILE

__all__ = [
    "DEFAULT_CALIBRATION_IMAGES",
    "DEFAULT_MAX_CLASS_DROP",
    "DEFAULT_MAX_DROP",
    "KINDS",
    "QUANTIZATION_KEY",
    "QUANTIZED_FILES",
    "Kind",
    "Latency",
    "Quantization",
    "Scores",
    "calibration_sample",
    "load_images",
    "quantize_model",
    "quantize_run_model",
    "read_deployment",
]

Kind = Literal["int8", "fp16"]
KINDS: tuple[Kind, ...] = ("int8", "fp16")
QUANTIZED_FILES: dict[Kind, str] = {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
QUANTIZATION_KEY = "quantization"
"""The key of the gate's record in ``parity.json`` and in ``summary.json``."""
DEFAULT_MAX_DROP = 1.0
"""Points of top-1 the quantized model may lose against the float one."""
DEFAULT_MAX_CLASS_DROP = 5.0
"""Points of recall any one class may lose."""
DEFAULT_CALIBRATION_IMAGES = 100

Array = npt.NDArray[np.float32]


@attrs.frozen(kw_only=True)
class Scores:
    """A model's top-1, balanced accuracy and per-class recall on the validation split."""

    top1: float
    balanced_accuracy: float
    recall: tuple[float, ...]

    @classmethod
    def of(cls, predicted: npt.ArrayLike, targets: npt.ArrayLike, num_classes: int) -> Scores:
        true = np.asarray(targets, dtype=np.int64)
        guess = np.asarray(predicted, dtype=np.int64)
        scores = Pairs.from_labels(true, guess, num_classes).scores()
        present = scores.support > 0
        return cls(
            top1=float((guess == true).mean()) if len(true) else 0.0,
            balanced_accuracy=float(scores.recall[present].mean()) if present.any() else 0.0,
            recall=tuple(float(r) for r in scores.recall),
        )


@attrs.frozen(kw_only=True)
class Latency:
    """Median onnxruntime CPU time of one call at `batch` images, float and quantized, in milliseconds."""

    batch: int
    float_ms: float
    quantized_ms: float

    @property
    def ratio(self) -> float:
        return self.quantized_ms / self.float_ms if self.float_ms > 0 else float("nan")


@attrs.frozen(kw_only=True)
class Quantization:
    """What the gate measured, and whether the quantized model was kept (`path`) or refused."""

    kind: Kind
    class_names: tuple[str, ...]
    float_scores: Scores
    quantized_scores: Scores
    max_drop: float
    max_class_drop: float
    float_bytes: int
    quantized_bytes: int
    latency: tuple[Latency, ...]
    calibration_images: int
    calibration_seed: int
    validation_images: int
    path: str | None = None
    """The quantized model's file when accepted; None when refused."""

    @property
    def top1_drop(self) -> float:
        """Points of top-1 lost (negative: gained)."""
        return 100 * (self.float_scores.top1 - self.quantized_scores.top1)

    @property
    def class_drops(self) -> tuple[float, ...]:
        """Points of recall each class lost."""
        return tuple(
            100 * (f - q) for f, q in zip(self.float_scores.recall, self.quantized_scores.recall, strict=True)
        )

    @property
    def worst_class(self) -> int:
        drops = self.class_drops
        return int(np.argmax(drops)) if drops else 0

    @property
    def accepted(self) -> bool:
        return self.top1_drop <= self.max_drop and all(d <= self.max_class_drop for d in self.class_drops)

    def describe(self) -> str:
        """One line: accepted with its figures, or refused naming which classes lost what."""
        f, q = self.float_scores, self.quantized_scores
        change = 0.0 - self.top1_drop
        top1 = f"top-1 {f.top1:.4f} -> {q.top1:.4f} ({change:+.1f} points, allowed -{self.max_drop:g})"
        size = f"size x{self.quantized_bytes / max(self.float_bytes, 1):.2f}"
        if self.accepted:
            worst = self.worst_class
            return (
                f"{self.kind} model kept: {top1}, worst class {self.class_names[worst]!r} "
                f"{0.0 - self.class_drops[worst]:+.1f} points, {size}"
            )
        lost = [
            f"{self.class_names[i]!r} {100 * f.recall[i]:.1f}% -> {100 * q.recall[i]:.1f}%"
            for i in np.argsort(-np.asarray(self.class_drops), kind="stable")
            if self.class_drops[i] > self.max_class_drop
        ]
        classes = (
            f"; recall lost beyond {self.max_class_drop:g} points by {', '.join(lost)}"
            if lost
            else "; no class lost more than the per-class bound"
        )
        return (
            f"{self.kind} model refused on {self.validation_images} validation images: {top1}{classes}; "
            "the float model is kept"
        )

    def to_json(self) -> dict[str, Any]:
        worst = self.worst_class
        return {
            "kind": self.kind,
            "accepted": self.accepted,
            "path": self.path,
            "verdict": self.describe(),
            "max_drop": self.max_drop,
            "max_class_drop": self.max_class_drop,
            "top1": {"float": self.float_scores.top1, self.kind: self.quantized_scores.top1},
            "balanced_accuracy": {
                "float": self.float_scores.balanced_accuracy,
                self.kind: self.quantized_scores.balanced_accuracy,
            },
            "top1_drop_points": self.top1_drop,
            "worst_class": {"name": self.class_names[worst], "drop_points": self.class_drops[worst]},
            "recall": {
                name: {"float": f, self.kind: q}
                for name, f, q in zip(
                    self.class_names, self.float_scores.recall, self.quantized_scores.recall, strict=True
                )
            },
            "bytes": {"float": self.float_bytes, self.kind: self.quantized_bytes},
            "size_ratio": self.quantized_bytes / max(self.float_bytes, 1),
            "latency_ms": [
                {"batch": t.batch, "float": t.float_ms, self.kind: t.quantized_ms, "ratio": t.ratio}
                for t in self.latency
            ],
            "calibration_images": self.calibration_images,
            "calibration_seed": self.calibration_seed,
            "validation_images": self.validation_images,
        }


def calibration_sample(paths: Sequence[str | Path], count: int, seed: int) -> list[Path]:
    """`count` of `paths` (all when fewer), drawn without replacement by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(paths))[: min(count, len(paths))]
    return [Path(paths[int(i)]) for i in sorted(picked)]


def load_images(paths: Sequence[str | Path], preprocessing: Preprocessing) -> Array:
    """The images as the model takes them (N x 3 x H x W), by the preprocessing prediction uses."""
    if not paths:
        raise DataError("no images to quantize with: the calibration or validation set is empty")
    batch: Array = np.stack([to_input(load_rgb(Path(path)), preprocessing) for path in paths])
    return batch


class _Calibration:
    """onnxruntime's `CalibrationDataReader` protocol over one array, in batches."""

    def __init__(self, name: str, images: Array, batch: int = 16) -> None:
        self._batches = iter([{name: images[i : i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, Array] | None:
        return next(self._batches, None)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _convert(kind: Kind, source: Path, target: Path, calibration: Array, work: Path) -> None:
    import onnx

    if kind == "fp16":
        from onnxconverter_common import float16

        onnx.save(float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))
    else:
        _quantize(source, target, calibration, work)
    # The harness's card (class names, preprocessing, temperature) travels with the converted model.
    float_model, converted = onnx.load(str(source)), onnx.load(str(target))
    del converted.metadata_props[:]
    converted.metadata_props.extend(float_model.metadata_props)
    onnx.save(converted, str(target))


def _quantize(source: Path, target: Path, calibration: Array, work: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    prepared = work / "prepared.onnx"
    quant_pre_process(str(source), str(prepared))
    name = _session(prepared).get_inputs()[0].name
    quantize_static(
        str(prepared),
        str(target),
        _Calibration(name, calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def _timed(session: Any, name: str, batch: Array, repeats: int) -> float:
    session.run(None, {name: batch})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _latency(float_session: Any, converted_session: Any, images: Array) -> tuple[Latency, ...]:
    name = float_session.get_inputs()[0].name
    rows = []
    for size, repeats in ((1, 20), (32, 5)):
        batch = np.ascontiguousarray(np.resize(images, (size, *images.shape[1:])))
        rows.append(
            Latency(
                batch=size,
                float_ms=_timed(float_session, name, batch, repeats),
                quantized_ms=_timed(converted_session, name, batch, repeats),
            )
        )
    return tuple(rows)


def _batches(images: Array, batch: int = 64) -> Iterator[Array]:
    for start in range(0, len(images), batch):
        yield images[start : start + batch]


def quantize_model(
    model: Path,
    kind: Kind = "int8",
    *,
    calibration: Array,
    validation: Array,
    targets: npt.ArrayLike,
    class_names: Sequence[str],
    max_drop: float = DEFAULT_MAX_DROP,
    max_class_drop: float = DEFAULT_MAX_CLASS_DROP,
    calibration_seed: int = 0,
) -> Quantization:
    """Convert `model` to `kind` beside it and gate it (see the module); `ExportError` if that fails.

    `calibration` (int8 only) and `validation` are prepared images (N x 3 x H x W,
    float32), `targets` the validation images' class indices. An earlier file of that
    kind (``model.int8.onnx``) is removed first, so the file present afterwards always
    passed this gate.
    """
    final = model.with_name(QUANTIZED_FILES[kind])
    final.unlink(missing_ok=True)
    true = np.asarray(targets, dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=model.parent) as work:
        candidate = Path(work) / final.name
        try:
            _convert(kind, model, candidate, np.ascontiguousarray(calibration, dtype=np.float32), Path(work))
            float_session, converted_session = _session(model), _session(candidate)
        # onnxruntime's quantizer and sessions raise their own types (and plain Exceptions).
        except Exception as error:
            raise ExportError(
                f"{kind} conversion of {model} failed: {type(error).__name__}: {error}"
            ) from error
        name = float_session.get_inputs()[0].name
        float_guess, converted_guess = [], []
        for batch in _batches(np.ascontiguousarray(validation, dtype=np.float32)):
            float_guess.append(float_session.run(None, {name: batch})[0].argmax(1))
            converted_guess.append(converted_session.run(None, {name: batch})[0].argmax(1))
        classes = len(class_names)
        record = Quantization(
            kind=kind,
            class_names=tuple(class_names),
            float_scores=Scores.of(np.concatenate(float_guess), true, classes),
            quantized_scores=Scores.of(np.concatenate(converted_guess), true, classes),
            max_drop=max_drop,
            max_class_drop=max_class_drop,
            float_bytes=model.stat().st_size,
            quantized_bytes=candidate.stat().st_size,
            latency=_latency(float_session, converted_session, validation),
            calibration_images=len(calibration) if kind == "int8" else 0,
            calibration_seed=calibration_seed,
            validation_images=len(true),
        )
        del float_session, converted_session
        if record.accepted:
            candidate.replace(final)
            record = attrs.evolve(record, path=str(final))
    return record


def quantize_run_model(
    model: Path,
    *,
    train: Sequence[tuple[str, int]],
    val: Sequence[tuple[str, int]],
    preprocessing: Preprocessing,
    class_names: Sequence[str],
    kinds: Sequence[Kind] = ("int8",),
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = 0,
    max_drop: float = DEFAULT_MAX_DROP,
    max_class_drop: float = DEFAULT_MAX_CLASS_DROP,
) -> tuple[Quantization, ...]:
    """`quantize_model` for each of `kinds` on a run's files: int8 calibrated on `calibration_images`
    of `train` drawn with `seed`, each gated on every image of `val`; the records are added
    to ``parity.json`` beside `model`, by kind, under ``"quantization"``.
    """
    if not val:
        raise DataError(f"{model}: the quantization gate needs validation images, and the run has none")
    calibration = np.zeros((0, 3, preprocessing.image_size, preprocessing.image_size), np.float32)
    if "int8" in kinds:
        paths = calibration_sample([path for path, _ in train], calibration_images, seed)
        calibration = load_images(paths, preprocessing)
    validation = load_images([path for path, _ in val], preprocessing)
    records = tuple(
        quantize_model(
            model,
            kind,
            calibration=calibration,
            validation=validation,
            targets=[target for _, target in val],
            class_names=class_names,
            max_drop=max_drop,
            max_class_drop=max_class_drop,
            calibration_seed=seed,
        )
        for kind in kinds
    )
    parity = model.with_name(PARITY_FILE)
    try:
        kept = json.loads(parity.read_text(encoding="utf-8")) if parity.is_file() else {}
    except ValueError:
        kept = {}
    write_json(parity, {**kept, QUANTIZATION_KEY: {record.kind: record.to_json() for record in records}})
    return records


def read_deployment(parity_file: Path) -> dict[str, Any]:
    """``quantization`` and ``temperature`` as an export's ``parity.json`` keeps them (None when absent)."""
    kept: object = None
    with contextlib.suppress(OSError, ValueError):
        kept = json.loads(parity_file.read_text(encoding="utf-8"))
    figures = kept if isinstance(kept, dict) else {}
    return {
        key: figures.get(key) if isinstance(figures.get(key), dict) else None
        for key in (QUANTIZATION_KEY, "temperature")
    }

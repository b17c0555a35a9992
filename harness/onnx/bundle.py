"""ONNX export and its parity check, shared by the export subscriber and `harness.export`.

`export_bundle` turns a module and a state dict into a directory holding one
self-contained ``model.onnx`` (harness metadata inside), ``labels.json``,
``preprocessing.json`` and ``parity.json``. The model file is published only after
`onnx.checker` and the parity check against PyTorch pass; otherwise no model file is
left behind and an `ExportError` says why.

The export uses torch's supported exporter (``dynamo=True``) as torch 2.14 wants it:
``eval()`` first, an example batch of two (a batch of one would freeze the batch
dimension), ``dynamic_shapes`` for the batch, and ``external_data=False`` for one file.
"""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from harness.core.errors import ExportError
from harness.core.layout import MODEL_FILE
from harness.core.memory import return_free_memory
from harness.core.preprocessing import Preprocessing
from harness.core.temperature import CHECKPOINT_KEY, Temperature
from harness.io.artifacts import atomic_path, write_json, write_label_map
from harness.onnx.card import ExportSource, ModelCard

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "PARITY_IMAGES",
    "SINGLE_IMAGES",
    "PARITY_FILE",
    "PREPROCESSING_FILE",
    "Checkpoint",
    "ExportResult",
    "Parity",
    "check_parity",
    "export_bundle",
    "random_images",
    "read_checkpoint",
]

DEFAULT_OPSET = 18
"""The dynamo exporter's minimum opset."""
DEFAULT_TOLERANCE = 1e-4
"""Logit difference the parity check allows, times max(1, largest |logit|)."""
PARITY_IMAGES = 8
"""Real images the parity check runs as one batch."""
SINGLE_IMAGES = 2
"""Of those, how many the parity check also runs one by one (batch size 1).

Two show that a batch of one gives the batch's logits; each further one would add a full
forward pass in onnxruntime and no new case (at 224 px, about 25 ms apiece here).
"""
PARITY_FILE = "parity.json"
PREPROCESSING_FILE = "preprocessing.json"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@attrs.frozen(kw_only=True)
class Checkpoint:
    """What the export needs from a Lightning checkpoint file."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    epoch: int | None
    global_step: int | None
    hyper_parameters: dict[str, Any]
    score: float | None
    temperature: Temperature | None = None
    """Fitted on the validation logits of these weights (`harness.core.temperature`), when recorded."""


@attrs.frozen(kw_only=True)
class Parity:
    """ONNX Runtime against PyTorch on the same images: all N as one batch, the first few one by one.

    The allowed difference is `tolerance` in logit units, scaled by the largest |logit|
    when that exceeds 1: float32 rounding grows with the magnitude of the values, and a
    model with logits in the thousands differs from itself by more than 1e-4 between
    batch sizes in eager PyTorch alone.
    """

    max_abs_diff: float
    max_abs_logit: float
    argmax_agreement: float
    batch_sizes: tuple[int, ...]
    real_images: int
    random_images: int
    tolerance: float
    finite: bool = True
    """Whether PyTorch's and ONNX Runtime's logits were all finite (a diverged model's are not)."""
    single_images: int = SINGLE_IMAGES
    """How many of the images were also run one by one (batch size 1)."""

    @property
    def allowed(self) -> float:
        return self.tolerance * max(1.0, self.max_abs_logit)

    @property
    def passed(self) -> bool:
        return self.finite and self.max_abs_diff <= self.allowed and self.argmax_agreement == 1.0

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "allowed": self.allowed, "passed": self.passed}

    def describe(self) -> str:
        if not self.finite:
            return (
                f"the logits are not finite (NaN or infinite) on {self.real_images} real and "
                f"{self.random_images} random images: the weights are unusable (did training diverge?)"
            )
        scale = f" x largest |logit| {self.max_abs_logit:.3g}" if self.max_abs_logit > 1 else ""
        return (
            f"max |logit difference| {self.max_abs_diff:.3g} (allowed {self.allowed:.3g} = "
            f"tolerance {self.tolerance:g}{scale}), argmax agreement {self.argmax_agreement:.1%} "
            f"on {self.real_images} real and {self.random_images} random images as one batch "
            f"of {self.batch_sizes[-1]} and the first {self.single_images} one by one"
        )


@attrs.frozen(kw_only=True)
class ExportResult:
    """The files an export wrote and what its parity check measured."""

    model: Path
    labels: Path
    preprocessing: Path
    parity_file: Path
    parity: Parity


def _load(path: Path) -> Any:
    """``torch.load`` memory-mapped: only the tensors read (the weights, not the optimizer state) come in.

    A file torch cannot map (the pre-1.6 format) is read whole; so is an unreadable one,
    whose error then reads as before.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: Path) -> Checkpoint:
    """Load a Lightning checkpoint with ``weights_only=True``; `ExportError` naming it if unusable."""
    try:
        raw = _load(path)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        # torch's weights-only refusal puts the offending global or opcode below its advice.
        detail = next((line for line in lines if line.startswith("Unsupported")), None)
        reason = "; ".join(filter(None, [lines[0] if lines else "", detail]))
        raise ExportError(
            f"{path}: cannot load the checkpoint with torch.load(weights_only=True) "
            f"({type(error).__name__}: {reason})"
        ) from error
    if not isinstance(raw, Mapping) or not isinstance(raw.get("state_dict"), Mapping):
        raise ExportError(f"{path}: not a Lightning checkpoint (expected a dict with a 'state_dict')")
    score = None
    for key, state in (raw.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, Mapping):
            current = state.get("current_score")
            score = None if current is None else float(current)
    epoch, step = raw.get("epoch"), raw.get("global_step")
    temperature = None
    if isinstance(raw.get(CHECKPOINT_KEY), Mapping):
        try:
            temperature = Temperature.from_json(raw[CHECKPOINT_KEY])
        except ValueError as error:
            raise ExportError(f"{path}: unreadable {CHECKPOINT_KEY!r}: {error}") from None
    return Checkpoint(
        path=path,
        state_dict=dict(raw["state_dict"]),
        epoch=None if epoch is None else int(epoch),
        global_step=None if step is None else int(step),
        hyper_parameters=dict(raw.get("hyper_parameters") or {}),
        score=score,
        temperature=temperature,
    )


def random_images(count: int, preprocessing: Preprocessing, seed: int = 0) -> torch.Tensor:
    """Uniform random pixels, normalised like real inputs: the fallback when no images are kept."""
    generator = torch.Generator().manual_seed(seed)
    size = preprocessing.image_size
    pixels = torch.rand(count, 3, size, size, generator=generator)
    mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _root_cause(error: BaseException) -> str:
    deepest = error
    while deepest.__cause__ is not None:
        deepest = deepest.__cause__
    lines = _ANSI.sub("", str(deepest)).strip().splitlines()
    return f"{type(deepest).__name__}: {lines[0] if lines else '(no message)'}"


def _prepare(model: nn.Module, state_dict: Mapping[str, torch.Tensor] | None) -> nn.Module:
    """A float32 CPU copy in eval mode holding `state_dict`; the caller's model is untouched.

    The copy takes `state_dict`'s tensors themselves (``assign=True``) where they are
    float32 on the CPU already, instead of copying them into its own: one copy of the
    weights less while the exporter and ONNX Runtime run.
    """
    exported = copy.deepcopy(model)
    if state_dict is not None:
        exported.load_state_dict(state_dict, assign=True)
    return exported.to(device="cpu", dtype=torch.float32).eval()


def _export(model: nn.Module, example: torch.Tensor, path: Path, card: ModelCard, opset: int) -> None:
    """Export, embed `card`, save as one file and run `onnx.checker`; `ExportError` on any failure."""
    import onnx_ir  # onnxscript's IR, loaded with the exporter

    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
        if program is None:
            raise ExportError("torch.onnx.export returned no program; torch >= 2.6 is required")
        program.model.metadata_props.update(card.to_metadata())
        # What `program.save(path)` does (`onnx_ir.save`: serialise, then `onnx.save`), with
        # the exporter's graph and weights dropped in between: the proto holds its own copy,
        # and its bytes are a third one. One copy of the weights less at the run's peak.
        proto = onnx_ir.serde.serialize_model(program.model)
        del program
        onnx.save(proto, path)
        del proto
        onnx.checker.check_model(str(path), full_check=True)
    # torch.export, dynamo, onnxscript and the file system each raise their own types; all are reported.
    except Exception as error:
        raise ExportError(f"ONNX export of {card.source.describe()} failed: {_root_cause(error)}") from error


def check_parity(model: nn.Module, onnx_path: Path, images: torch.Tensor, *, tolerance: float) -> Parity:
    """Run `images` through PyTorch and ONNX Runtime (CPU): as one batch, and the first few one by one."""
    options = ort.SessionOptions()
    # Idle pool threads otherwise spin between these few runs: a third more CPU, no faster here.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Every graph fusion, but not the CPU's NCHWc re-layout (level "all"): that keeps a second,
    # blocked copy of every convolution weight, 80 MB more at the end of a ResNet-18 run (the
    # run's memory peak) for kernels this check is not about; it checks the exporter's graph.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(images).float().numpy()
    inputs = images.numpy()
    batched = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    count = min(SINGLE_IMAGES, len(inputs))
    single = np.concatenate(
        [session.run([OUTPUT_NAME], {INPUT_NAME: row[None]})[0] for row in inputs[:count]]
    )
    pairs = ((single, expected[:count]), (batched, expected))
    diffs = [float(np.abs(got - want).max()) for got, want in pairs]
    agreement = np.concatenate([got.argmax(1) == want.argmax(1) for got, want in pairs])
    finite = bool(np.isfinite(expected).all() and np.isfinite(single).all() and np.isfinite(batched).all())
    return Parity(
        finite=finite,
        max_abs_diff=max(diffs),
        max_abs_logit=float(np.abs(expected).max()),
        argmax_agreement=float(agreement.mean()),
        batch_sizes=(1, len(inputs)),
        real_images=len(inputs),
        random_images=0,
        tolerance=tolerance,
        single_images=count,
    )


def export_bundle(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor] | None,
    *,
    class_names: tuple[str, ...],
    preprocessing: Preprocessing,
    source: ExportSource,
    images: torch.Tensor | None,
    directory: Path,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    temperature: Temperature | None = None,
    flips_change_class: bool | None = None,
) -> ExportResult:
    """Export `model` holding `state_dict` (None: as it is) into `directory`, parity-checked.

    `images` are real, preprocessed inputs (N x 3 x H x W) for the parity check; fewer than
    two are topped up with random ones, and the report says how many of each were used.
    Raises `ExportError` naming `source` when the exporter fails, a file cannot be
    written, or parity does not hold. The model and parity files of an earlier export there
    are removed first, so that what is left always belongs to this export.
    """
    try:
        prepared = _prepare(model, state_dict)
    except (RuntimeError, TypeError) as error:
        raise ExportError(
            f"cannot load the weights of {source.describe()} into a CPU copy of the model: {error}"
        ) from error
    real = 0 if images is None else len(images)
    parity_images = random_images(max(0, 2 - real), preprocessing)
    if images is not None and real:
        parity_images = torch.cat([images.detach().to("cpu", torch.float32), parity_images])
    card = ModelCard(
        class_names=class_names,
        preprocessing=preprocessing,
        source=source,
        temperature=temperature,
        flips_change_class=flips_change_class,
    )
    model_path = directory / MODEL_FILE
    try:
        model_path.unlink(missing_ok=True)
        (directory / PARITY_FILE).unlink(missing_ok=True)
        with atomic_path(model_path) as tmp:
            _export(prepared, parity_images[:2], tmp, card, opset)
            return_free_memory()  # the exporter's garbage, before ONNX Runtime loads the model
            parity = attrs.evolve(
                check_parity(prepared, tmp, parity_images, tolerance=tolerance),
                real_images=real,
                random_images=len(parity_images) - real,
            )
            parity_path = write_json(
                directory / PARITY_FILE,
                {
                    **parity.to_json(),
                    "source": attrs.asdict(source),
                    "temperature": None if temperature is None else temperature.to_json(),
                },
            )
            if not parity.passed:
                raise ExportError(
                    f"ONNX parity check failed for {source.describe()}: {parity.describe()}; "
                    f"{model_path} was not written"
                )
        preprocessing_path = write_json(directory / PREPROCESSING_FILE, attrs.asdict(card.preprocessing))
        labels_path = write_label_map(directory, class_names)
    except OSError as error:
        raise ExportError(
            f"ONNX export of {source.describe()} could not write to {directory}: {error}"
        ) from error
    return ExportResult(
        model=model_path,
        labels=labels_path,
        preprocessing=preprocessing_path,
        parity_file=parity_path,
        parity=parity,
    )

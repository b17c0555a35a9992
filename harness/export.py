"""Export a checkpoint to ONNX on its own: ``python -m harness.export CHECKPOINT [--output DIR]``.

For a run whose export failed at the end of training, or for any other checkpoint of a
run. The model is rebuilt from the checkpoint's hyper-parameters (`harness.training.model.Classifier`),
the class names come from the run directory's ``labels.json`` and the image size from its
``settings.toml``; the run directory is the checkpoint's folder, or its parent when that
folder is ``checkpoints/``. The output (default ``<run_dir>/onnx_export``) is what the
`OnnxExport` subscriber writes: ``model.onnx``, ``labels.json``, ``preprocessing.json``
and ``parity.json``.

The parity check runs on images from the run's data set (``[data].root``, or the embedded
digits); when they cannot be read it runs on random images and says so. The model
carries the temperature the checkpoint recorded (`harness.core.temperature`).

``--quantize int8`` also writes ``model.int8.onnx`` (``--quantize fp16``: ``model.fp16.onnx``,
with the ``fp16`` extra) through the accuracy gate of
`harness.onnx.quantize`: calibrated on a seeded sample of the run's training images,
scored against the float model on its validation split (the run's own split, rebuilt
from its settings). A refused int8 model leaves no file; the float model stands, the
figures are in ``parity.json``, and the one-line verdict is the error (exit 1).
Exit codes: 0 exported, 1 the export, its parity check or the int8 gate failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from harness.core.errors import DataError, ExportError, HarnessError, report
from harness.core.layout import RunLayout
from harness.core.preprocessing import Preprocessing
from harness.io.artifacts import read_label_map
from harness.io.images import find_images
from harness.onnx.bundle import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    PARITY_IMAGES,
    ExportResult,
    export_bundle,
    read_checkpoint,
)
from harness.onnx.card import ExportSource
from harness.onnx.quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MAX_CLASS_DROP,
    DEFAULT_MAX_DROP,
    KINDS,
    Kind,
    Quantization,
    quantize_run_model,
)
from harness.settings import Settings, load_settings
from harness.training.data import ImageFiles, materialise_digits, run_preprocessing, scan
from harness.training.model import Classifier
from harness.training.recipe import flips_change_class

__all__ = ["export_checkpoint", "main", "quantize_checkpoint", "sample_images"]


def sample_images(settings: Settings, preprocessing: Preprocessing, count: int) -> torch.Tensor:
    """`count` images spread over the run's data set, preprocessed as in training.

    Raises `DataError` naming the data root when none can be read.
    """
    root = Path(settings.data.root).expanduser() if settings.data.root else materialise_digits()
    files = find_images([root])
    picked = files[:: max(1, len(files) // count)][:count]
    dataset = ImageFiles([(path, 0) for path in picked], preprocessing)
    return torch.stack([dataset[index][0] for index in range(len(dataset))])


def export_checkpoint(
    checkpoint: Path,
    output: Path | None = None,
    *,
    opset: int | None = None,
    tolerance: float | None = None,
) -> tuple[ExportResult, str]:
    """Export `checkpoint`; returns the result and where the parity images came from.

    `opset` and `tolerance` default to the ONNX library's (`harness.onnx.bundle`).
    """
    result, origin, _ = _export(checkpoint, output, opset=opset, tolerance=tolerance)
    return result, origin


def quantize_checkpoint(
    checkpoint: Path,
    output: Path | None = None,
    *,
    kinds: Sequence[Kind] = ("int8",),
    max_drop: float = DEFAULT_MAX_DROP,
    max_class_drop: float = DEFAULT_MAX_CLASS_DROP,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    seed: int = 0,
    opset: int | None = None,
    tolerance: float | None = None,
) -> tuple[ExportResult, str, tuple[Quantization, ...]]:
    """Export `checkpoint`, then convert it to each of `kinds` through the gate, on the run's own split."""
    result, origin, settings = _export(checkpoint, output, opset=opset, tolerance=tolerance)
    info, _ = scan(settings.data, settings.run.seed)
    records = quantize_run_model(
        result.model,
        train=info.train,
        val=info.val,
        preprocessing=run_preprocessing(settings),
        class_names=tuple(read_label_map(RunLayout.of_checkpoint(checkpoint).labels)),
        kinds=kinds,
        calibration_images=calibration_images,
        seed=seed,
        max_drop=max_drop,
        max_class_drop=max_class_drop,
    )
    return result, origin, records


def _export(
    checkpoint: Path,
    output: Path | None = None,
    *,
    opset: int | None = None,
    tolerance: float | None = None,
) -> tuple[ExportResult, str, Settings]:
    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: no such checkpoint file")
    layout = RunLayout.of_checkpoint(checkpoint)
    run_dir, settings_file = layout.run_dir, layout.settings
    if not settings_file.is_file():
        raise DataError(f"{settings_file}: not found; the export needs the run's settings (image size, data)")
    if not layout.labels.is_file():
        raise DataError(f"{layout.labels}: not found; the export needs the run's class names")
    settings = load_settings(settings_file)
    class_names = tuple(read_label_map(run_dir))
    try:
        loaded = read_checkpoint(checkpoint)
    except ExportError as error:
        raise DataError(str(error)) from error
    hparams = loaded.hyper_parameters
    if "arch" not in hparams or "num_classes" not in hparams:
        raise DataError(
            f"{checkpoint}: no 'arch' and 'num_classes' hyper-parameters; not a harness.run checkpoint"
        )
    if int(hparams["num_classes"]) != len(class_names):
        raise DataError(
            f"{checkpoint}: the model has {hparams['num_classes']} classes "
            f"but {layout.labels} names {len(class_names)}"
        )
    # The weights file of a fine-tuned run is not needed (and may be gone): the checkpoint holds every weight.
    model = Classifier(**hparams, load_weights=False)
    preprocessing = run_preprocessing(settings)
    images: torch.Tensor | None
    try:
        images = sample_images(settings, preprocessing, PARITY_IMAGES)
        origin = f"{len(images)} images from the data set"
    except DataError as error:
        images, origin = None, f"random images, because the data set is unavailable ({error})"
    result = export_bundle(
        model,
        loaded.state_dict,
        class_names=class_names,
        preprocessing=preprocessing,
        source=ExportSource(
            checkpoint=str(checkpoint),
            epoch=loaded.epoch,
            global_step=loaded.global_step,
            monitor=settings.checkpoint.monitor if loaded.score is not None else None,
            score=loaded.score,
        ),
        images=images,
        directory=output or layout.onnx_export,
        opset=DEFAULT_OPSET if opset is None else opset,
        tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
        temperature=loaded.temperature,
        flips_change_class=flips_change_class(settings),
    )
    return result, origin, settings


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.export",
        description="Export a checkpoint of a run to ONNX, parity-checked, like the onnx_export subscriber.",
        epilog="Exit codes: 0 exported, 1 the export or its parity check failed, 2 bad input.",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file written by python -m harness.run")
    parser.add_argument(
        "--output", type=Path, help="folder for model.onnx and its files (default <run>/onnx_export)"
    )
    parser.add_argument("--opset", type=int, help=f"ONNX opset, at least 18 (default {DEFAULT_OPSET})")
    parser.add_argument(
        "--tolerance",
        type=float,
        help=f"largest logit difference allowed by the parity check (default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--quantize",
        choices=KINDS,
        action="append",
        help="also write model.int8.onnx (model.fp16.onnx: extra .[fp16]) if it passes the accuracy gate",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP,
        help=f"points of validation top-1 int8 may lose (default {DEFAULT_MAX_DROP:g})",
    )
    parser.add_argument(
        "--max-class-drop",
        type=float,
        default=DEFAULT_MAX_CLASS_DROP,
        help=f"points of recall any class may lose to int8 (default {DEFAULT_MAX_CLASS_DROP:g})",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        help=f"training images that calibrate int8 (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    args = parser.parse_args(argv)
    for flag, value in (("--max-drop", args.max_drop), ("--max-class-drop", args.max_class_drop)):
        if not 0 <= value < float("inf"):
            parser.error(f"{flag} must be a finite number of points >= 0, got {value}")
    if "fp16" in (args.quantize or ()) and importlib.util.find_spec("onnxconverter_common") is None:
        parser.error('--quantize fp16 needs onnxconverter-common: pip install -e ".[fp16]"')
    if args.calibration_images < 1:
        parser.error(f"--calibration-images must be a positive integer, got {args.calibration_images}")
    if args.opset is not None and args.opset < 18:
        parser.error(f"--opset must be at least 18 (the dynamo exporter's minimum), got {args.opset}")
    if args.tolerance is not None and not args.tolerance > 0:
        parser.error(f"--tolerance must be positive, got {args.tolerance}")
    records: tuple[Quantization, ...] = ()
    try:
        if args.quantize:
            result, origin, records = quantize_checkpoint(
                args.checkpoint,
                args.output,
                kinds=[kind for kind in KINDS if kind in args.quantize],
                max_drop=args.max_drop,
                max_class_drop=args.max_class_drop,
                calibration_images=args.calibration_images,
                opset=args.opset,
                tolerance=args.tolerance,
            )
        else:
            result, origin = export_checkpoint(
                args.checkpoint, args.output, opset=args.opset, tolerance=args.tolerance
            )
    except HarnessError as error:
        return report(error)
    print(f"parity images: {origin}")
    print(f"parity: {result.parity.describe()}")
    print(f"model: {result.model}")
    for record in records:
        if record.path is not None:
            print(record.describe())
            print(f"{record.kind} model: {record.path}")
    refused = [record.describe() for record in records if record.path is None]
    return report(ExportError("; ".join(refused))) if refused else 0


if __name__ == "__main__":
    sys.exit(main())

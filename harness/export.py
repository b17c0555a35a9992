"""Export a checkpoint to ONNX on its own: ``python -m harness.export CHECKPOINT [--output DIR]``.

For a run whose export failed at the end of training, or for any other checkpoint of a
run. The model is rebuilt from the checkpoint's hyper-parameters (`harness.training.model.Classifier`),
the class names come from the run directory's ``labels.json`` and the image size from its
``settings.toml``; the run directory is the checkpoint's folder, or its parent when that
folder is ``checkpoints/``. The output (default ``<run_dir>/onnx_export``) is what the
`OnnxExport` subscriber writes: ``model.onnx``, ``labels.json``, ``preprocessing.json``
and ``parity.json``.

The parity check runs on images from the run's data set (``[data].root``, or the embedded
digits); when they cannot be read it runs on random images and says so.
Exit codes: 0 exported, 1 the export or its parity check failed, 2 bad input.
"""

from __future__ import annotations

import argparse
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
from harness.settings import Settings, load_settings
from harness.training.data import ImageFiles, materialise_digits, run_preprocessing
from harness.training.model import Classifier

__all__ = ["export_checkpoint", "main", "sample_images"]


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
    )
    return result, origin


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
    args = parser.parse_args(argv)
    if args.opset is not None and args.opset < 18:
        parser.error(f"--opset must be at least 18 (the dynamo exporter's minimum), got {args.opset}")
    if args.tolerance is not None and not args.tolerance > 0:
        parser.error(f"--tolerance must be positive, got {args.tolerance}")
    try:
        result, origin = export_checkpoint(
            args.checkpoint, args.output, opset=args.opset, tolerance=args.tolerance
        )
    except HarnessError as error:
        return report(error)
    print(f"parity images: {origin}")
    print(f"parity: {result.parity.describe()}")
    print(f"model: {result.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

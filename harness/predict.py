"""Classify images with an exported model: ``python -m harness.predict model.onnx IMAGE_OR_FOLDER...``.

Runs on onnxruntime, numpy and Pillow alone: torch is never imported on this path, so a
deployment needs neither torch nor the harness's training dependencies. The class names
and the preprocessing come from the model's own metadata (written by the ONNX export):
each image is converted to RGB, resized to the model's square size (bilinear), scaled to
[0, 1] and normalised by the stored mean and std, as in training.

Folders are searched recursively for image files; hidden files are skipped. One line per
image (path, class name, probability, tab-separated), or one JSON document with
``--json``. An image that cannot be read (corrupt, not an image, too large) does not stop
the others: every readable image is printed, each unreadable one is named on stderr, and
the exit code is 1. Exit codes: 0 every image classified, 1 some images unreadable (the
others printed), 2 bad input (a missing path, a folder without images, a model that is not
the harness's; the error names it, nothing is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from harness.core.errors import DataError, report
from harness.io.images import find_images, load_rgb, to_input
from harness.onnx.card import ModelCard

__all__ = ["Prediction", "Predictor", "Unreadable", "main"]


@attrs.frozen(kw_only=True)
class Prediction:
    """The most probable class of one image."""

    path: str
    label: str
    index: int
    probability: float


@attrs.frozen(kw_only=True)
class Unreadable:
    """An image that could not be read, and why (the `DataError` message, naming its path)."""

    path: str
    error: str


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: npt.NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


class Predictor:
    """An ONNX model exported by the harness, with the preprocessing it stores."""

    def __init__(self, model_path: Path) -> None:
        if not model_path.is_file():
            raise DataError(f"{model_path}: no such model file")
        try:
            self.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        # onnxruntime's errors derive from Exception directly, one type per status code.
        except Exception as error:
            raise DataError(f"{model_path}: not a loadable ONNX model ({error})") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.card = ModelCard.from_metadata(metadata, str(model_path))
        spec = self.card.preprocessing
        if (spec.channel_order, spec.layout) != ("RGB", "NCHW"):
            raise DataError(
                f"{model_path}: expects {spec.channel_order} {spec.layout} input; "
                "harness.predict prepares RGB NCHW only"
            )
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, paths: Sequence[Path], batch_size: int = 32) -> Iterator[Prediction | Unreadable]:
        """A prediction for each of `paths`, in order, or an `Unreadable` for a file that cannot be read."""
        for start in range(0, len(paths), batch_size):
            chunk: list[Path] = []
            inputs: list[npt.NDArray[np.float32]] = []
            unreadable: list[Unreadable] = []
            for path in paths[start : start + batch_size]:
                try:
                    inputs.append(to_input(load_rgb(path), self.card.preprocessing))
                    chunk.append(path)
                except DataError as error:
                    unreadable.append(Unreadable(path=str(path), error=str(error)))
            yield from unreadable
            if not chunk:
                continue
            logits = self.session.run(None, {self.input_name: np.stack(inputs)})[0]
            probabilities = softmax(logits)
            for path, row in zip(chunk, probabilities, strict=True):
                index = int(row.argmax())
                yield Prediction(
                    path=str(path),
                    label=self.card.class_names[index],
                    index=index,
                    probability=float(row[index]),
                )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.predict",
        description="Classify images with a model exported by the harness, on onnxruntime alone.",
        epilog=(
            "Unreadable images are named on stderr and the others still printed. Exit codes: "
            "0 every image classified, 1 some images unreadable, 2 bad input (the message names the path)."
        ),
    )
    parser.add_argument("model", type=Path, help="model.onnx written by the harness's ONNX export")
    parser.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders searched recursively",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    parser.add_argument("--batch-size", type=int, default=32, help="images per inference call (default 32)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}")
    predictions: list[Prediction] = []
    unreadable = 0
    try:
        predictor = Predictor(args.model)
        for result in predictor.predict(find_images(args.inputs), args.batch_size):
            if isinstance(result, Unreadable):
                unreadable += 1
                print(f"error: {result.error}", file=sys.stderr, flush=True)
            elif args.json:
                predictions.append(result)
            else:
                print(f"{result.path}\t{result.label}\t{result.probability:.4f}", flush=True)
    except DataError as error:
        return report(error)
    if args.json:
        print(json.dumps([attrs.asdict(p) for p in predictions], indent=2))
    if unreadable:
        print(f"error: {unreadable} image(s) could not be read; the others were classified", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

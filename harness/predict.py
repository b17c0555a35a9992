"""Classify images with an exported model: ``python -m harness.predict model.onnx IMAGE_OR_FOLDER...``.

Runs on onnxruntime, numpy and Pillow alone: torch is never imported on this path, so a
deployment needs neither torch nor the harness's training dependencies. The class names
and the preprocessing come from the model's own metadata (written by the ONNX export):
each image is converted to RGB, resized to the model's square size (bilinear), scaled to
[0, 1] and normalised by the stored mean and std, as in training.

Folders are searched recursively for image files; hidden files are skipped. One line per
image (path, class name, probability, tab-separated; with ``--topk K`` the next K-1
classes and probabilities follow on the line), or one JSON document with ``--json``
(each image's ``top`` list holds its K most probable classes).
Exit codes: 0 done, 2 bad input (the error names the path).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import numpy as np

from harness.core.errors import DataError, report
from harness.evaluation.metrics import softmax
from harness.io.images import find_images
from harness.onnx.session import OnnxModel

__all__ = ["Prediction", "Predictor", "Ranked", "main"]


@attrs.frozen(kw_only=True)
class Ranked:
    """One class of an image's top-k, with its probability."""

    label: str
    index: int
    probability: float


@attrs.frozen(kw_only=True)
class Prediction:
    """The most probable class of one image, and its `top` k classes, most probable first."""

    path: str
    label: str
    index: int
    probability: float
    top: tuple[Ranked, ...] = ()


class Predictor:
    """An ONNX model exported by the harness, with the preprocessing it stores."""

    def __init__(self, model_path: Path) -> None:
        self.model = OnnxModel(model_path)
        self.card = self.model.card

    def predict(self, paths: Sequence[Path], batch_size: int = 32, topk: int = 1) -> Iterator[Prediction]:
        """Predictions for `paths` in order; a `DataError` naming the first unreadable one."""
        names = self.card.class_names
        k = max(1, min(topk, len(names)))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            probabilities = softmax(self.model.logits(chunk, batch_size))
            for path, row in zip(chunk, probabilities, strict=True):
                order = np.argsort(-row, kind="stable")[:k]
                top = tuple(
                    Ranked(label=names[int(c)], index=int(c), probability=float(row[c])) for c in order
                )
                yield Prediction(
                    path=str(path),
                    label=top[0].label,
                    index=top[0].index,
                    probability=top[0].probability,
                    top=top,
                )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.predict",
        description="Classify images with a model exported by the harness, on onnxruntime alone.",
        epilog="Exit codes: 0 done, 2 bad input (the message names the path).",
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
    parser.add_argument(
        "--topk", type=int, default=1, help="the K most probable classes per image (default 1)"
    )
    args = parser.parse_args(argv)
    for flag, value in (("--batch-size", args.batch_size), ("--topk", args.topk)):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    predictions: list[Prediction] = []
    try:
        predictor = Predictor(args.model)
        for prediction in predictor.predict(find_images(args.inputs), args.batch_size, args.topk):
            if args.json:
                predictions.append(prediction)
            else:
                ranked = "".join(f"\t{r.label}\t{r.probability:.4f}" for r in prediction.top)
                print(f"{prediction.path}{ranked}", flush=True)
    except DataError as error:
        return report(error)
    if args.json:
        print(json.dumps([attrs.asdict(p) for p in predictions], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Classify images with an exported model: ``python -m harness.predict model.onnx IMAGE_OR_FOLDER...``.

Runs on onnxruntime, numpy and Pillow alone: torch is never imported on this path, so a
deployment needs neither torch nor the harness's training dependencies. The class names,
the preprocessing and the temperature come from the model's own metadata (written by the
ONNX export): each image is converted to RGB, resized to the model's square size
(bilinear), scaled to [0, 1] and normalised by the stored mean and std, as in training;
the probabilities are ``softmax(logits / T)``. ``--tta flip`` averages them with the
mirrored image's (refused, exit 2, for a model trained without flips). An int8 model
(``model.int8.onnx``) carries the same metadata and runs the same way.

Folders are searched recursively for image files; hidden files are skipped. One line per
image (path, class name, probability, tab-separated; with ``--topk K`` the next K-1
classes and probabilities follow on the line), or one JSON document with ``--json``
(each image's ``top`` list holds its K most probable classes). An image that cannot be
read (corrupt, not an image, too large) does not stop the others: every readable image
is printed, each unreadable one is named on stderr, and the exit code is 1. Exit codes:
0 every image classified, 1 some images unreadable (the others printed), 2 bad input (a
missing path, a folder without images, a model that is not the harness's; the error
names it, nothing is printed).
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

from harness.core.errors import DataError, report
from harness.evaluation.calibrated import TTA_KINDS, Tta, combine, refuse_flips
from harness.io.images import find_images, load_rgb, to_input
from harness.onnx.session import OnnxModel

__all__ = ["Prediction", "Predictor", "Ranked", "Unreadable", "main"]


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


@attrs.frozen(kw_only=True)
class Unreadable:
    """An image that could not be read, and why (the `DataError` message, naming its path)."""

    path: str
    error: str


class Predictor:
    """An ONNX model exported by the harness, with the preprocessing and temperature it stores.

    With ``tta="flip"`` each image's probabilities are the mean of its own and its mirror's;
    refused (`DataError`) for a model whose run says a mirror may change the class.
    """

    def __init__(self, model_path: Path, *, tta: Tta = "none") -> None:
        self.model = OnnxModel(model_path)
        self.card = self.model.card
        if tta == "flip":
            refuse_flips(self.card.flips_change_class, str(model_path))
        self.tta = tta

    def predict(
        self, paths: Sequence[Path], batch_size: int = 32, topk: int = 1
    ) -> Iterator[Prediction | Unreadable]:
        """A prediction for each of `paths`, in order, or an `Unreadable` for a file that cannot be read."""
        names = self.card.class_names
        k = max(1, min(topk, len(names)))
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
            batch = np.stack(inputs)
            mirrored = self.model.run(np.ascontiguousarray(batch[..., ::-1])) if self.tta == "flip" else None
            probabilities = combine(self.model.run(batch), mirrored, self.card.temperature)
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
    parser.add_argument(
        "--topk", type=int, default=1, help="the K most probable classes per image (default 1)"
    )
    parser.add_argument(
        "--tta",
        choices=TTA_KINDS,
        default="none",
        help="flip: average each image with its mirror (refused for a model trained without flips)",
    )
    args = parser.parse_args(argv)
    for flag, value in (("--batch-size", args.batch_size), ("--topk", args.topk)):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    predictions: list[Prediction] = []
    unreadable = 0
    try:
        predictor = Predictor(args.model, tta=args.tta)
        for result in predictor.predict(find_images(args.inputs), args.batch_size, args.topk):
            if isinstance(result, Unreadable):
                unreadable += 1
                print(f"error: {result.error}", file=sys.stderr, flush=True)
            elif args.json:
                predictions.append(result)
            else:
                ranked = "".join(f"\t{r.label}\t{r.probability:.4f}" for r in result.top)
                print(f"{result.path}{ranked}", flush=True)
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

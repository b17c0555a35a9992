"""Score a model on labelled images: ``python -m harness.evaluate SOURCE DATA [--split S] [--output DIR]``.

SOURCE is one of three kinds:

- a run directory: its best checkpoint (``summary.json``'s ``best_checkpoint``);
- a ``.ckpt`` checkpoint of a run: evaluated through Lightning's ``trainer.test`` with
  `BusCallback`, so the run's subscribers receive `TestStart`, `BatchEnd(stage="test")`
  and `TestEpochEnd` and draw the test set (confusion matrix, sample grid) into the
  evaluation folder (`harness.training.evaluation`);
- an exported ``model.onnx``: evaluated with onnxruntime alone; torch is never imported.

DATA is an ImageFolder tree; its ``test/`` folder is scored when it has one (or the folder
``--split`` names), else the whole tree, every file checked first. DATA may also be a
streamed data set (``harness data optimize``; a folder or a URI litdata reads): its test
split (or ``--split``'s) is read from the stream once into ``$HARNESS_CACHE`` and scored
from there (this imports litdata, hence torch, even for a model.onnx). Class folders are
matched by name to the model's label map: a class the model lacks is an error naming it,
or with ``--unknown count`` its images are counted in ``metrics.json`` and left out.

The evaluation folder (default ``<run_dir>/evaluation/<data>[-<split>]``, never overwriting
an earlier one) holds what `harness.evaluation.folder` lists: ``metrics.json``,
``per_class.csv``, ``confusion_matrix.png/.csv``, ``most_confused.csv``,
``predictions.csv``, ``top_losses.png`` and ``reliability.png``. The probabilities are
``softmax(logits / T)`` with the temperature the model carries (fitted on the run's
validation logits); ``metrics.json``'s ``calibration`` gives the ECE and NLL before and
after it, and ``reliability_uncalibrated.png`` is the diagram before it. ``--tta flip``
averages each image's probabilities with its mirror's and reports the gain under ``tta``;
it is refused (exit 2, nothing written) for a model trained without flips.
``--cam N`` (default 8 for a checkpoint or a run, 0 = off; an ONNX model has no gradients) draws
Grad-CAM maps (`harness.training.cam`, the ``explain`` extra) of the N top losses and of
one image of each of the N most-confused pairs: ``grad_cam_top_losses.png`` and
``grad_cam_most_confused.png``; a missing package or an architecture it cannot explain is
one warning line. The per-class table is also printed (past 200 classes, its 20 lowest
F1 rows). Exit codes: 0 done, 1 another harness error, 2 bad input (the message
names the path).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from harness.core.errors import DataError, HarnessError, report
from harness.core.layout import MODEL_FILE, ONNX_EXPORT, RunLayout
from harness.evaluation.calibrated import TTA_KINDS, Tta, refuse_flips, score
from harness.evaluation.data import Unknown, load_evaluation_data
from harness.evaluation.folder import Evaluation, Source, evaluation_dir, sha256_of, write_evaluation
from harness.evaluation.pairs import FULL_MATRIX_CLASSES
from harness.io.stream import is_stream, materialise_split

if TYPE_CHECKING:
    from harness.training.evaluation import LoadedModel

__all__ = ["evaluate", "main", "resolve_source"]

log = logging.getLogger("harness")

DEFAULT_CAM = 8
"""Grad-CAM maps per group when a checkpoint is evaluated from the command line."""
_PRINTED_WORST = 20
"""Rows of the printed per-class table past `FULL_MATRIX_CLASSES` classes (the file has them all)."""


def resolve_source(source: Path) -> tuple[str, Path]:
    """The kind of `source` (``run``, ``checkpoint``, ``onnx``) and the file to read."""
    if source.is_dir():
        summary = RunLayout(source).summary
        best = None
        if summary.is_file():
            try:
                best = json.loads(summary.read_text(encoding="utf-8")).get("best_checkpoint")
            except (ValueError, AttributeError):
                raise DataError(f"SOURCE {str(summary)!r}: not a readable JSON summary") from None
        if not best:
            raise DataError(
                f"SOURCE {str(source)!r}: a directory, but not a run with a best checkpoint "
                f"({summary.name} names none); pass a .ckpt or a {MODEL_FILE} instead"
            )
        checkpoint = Path(best) if Path(best).is_absolute() else source / best
        if not checkpoint.is_file():
            raise DataError(f"SOURCE {str(source)!r}: its best checkpoint {str(checkpoint)!r} is gone")
        return "run", checkpoint
    if source.is_file() and source.suffix == ".ckpt":
        return "checkpoint", source
    if source.is_file() and source.suffix == ".onnx":
        return "onnx", source
    what = "no such file or directory" if not source.exists() else f"a {source.suffix or 'suffix-less'} file"
    raise DataError(
        f"SOURCE {str(source)!r}: expected a run directory, a .ckpt checkpoint or a {MODEL_FILE}, got {what}"
    )


def _default_output(kind: str, path: Path, data: Path, split: str | None) -> Path:
    layout = RunLayout.of_checkpoint(path)
    if kind == "onnx":
        layout = RunLayout(path.parent.parent if path.parent.name == ONNX_EXPORT else path.parent)
    name = data.resolve().name + (f"-{split}" if split else "")
    return layout.evaluation(name)


def _streamed_split(data: str, split: str | None) -> Path:
    """A streamed data set's `split` (default ``test``) read into the cache: its folder of class folders."""
    from harness.io.stream import read_manifest, require_litdata
    from harness.training.data import writable_cache_dir

    where = f"DATA {data!r}"
    require_litdata(where)
    wanted = (split or "test").lower()
    splits = read_manifest(data, where).splits
    if not splits.get(wanted):
        listed = ", ".join(name for name, samples in splits.items() if samples)
        raise DataError(
            f"{where}: the streamed data set has no {wanted} split (it has {listed}); name one with --split"
        )
    return materialise_split(data, wanted, writable_cache_dir())


def evaluate(
    source: Path,
    data: Path | str,
    *,
    split: str | None = None,
    output: Path | None = None,
    unknown: Unknown = "error",
    batch_size: int = 64,
    bins: int = 15,
    top_losses: int = 16,
    accelerator: str = "auto",
    tta: Tta = "none",
    cam: int | None = 0,
) -> Evaluation:
    """Evaluate `source` on `data` and write the evaluation folder; see the module.

    `cam` is the number of Grad-CAM maps per group; None means the command line's default:
    `DEFAULT_CAM` for a checkpoint, none (and no warning) for an ONNX model.
    """
    kind, path = resolve_source(source)
    named, named_split = Path(data), split
    if is_stream(str(data)):
        data, named_split, split = _streamed_split(str(data), split), split or "test", None
    data = Path(data)
    flipped: npt.NDArray[np.float32] | None = None
    loaded: LoadedModel | None = None
    if kind == "onnx":
        from harness.onnx.session import OnnxModel

        model = OnnxModel(path)
        if tta == "flip":
            refuse_flips(model.card.flips_change_class, str(path))
        names, temperature = model.card.class_names, model.card.temperature
        scored = load_evaluation_data(data, names, split=split, unknown=unknown)
        directory = evaluation_dir(output or _default_output(kind, path, named, named_split or scored.split))
        logits = model.logits(scored.paths, batch_size)
        if tta == "flip":
            flipped = model.logits(scored.paths, batch_size, flip=True)
    else:
        # The Lightning side is imported only for a checkpoint.
        from harness.training.evaluation import flipped_logits, load_checkpoint, test_model

        loaded = load_checkpoint(path)
        if tta == "flip":
            refuse_flips(loaded.settings.augment.hflip == 0, str(path))
        names, temperature = loaded.class_names, loaded.temperature
        scored = load_evaluation_data(data, names, split=split, unknown=unknown)
        directory = evaluation_dir(output or _default_output(kind, path, named, named_split or scored.split))
        logits = test_model(loaded, scored, directory, batch_size=batch_size, accelerator=accelerator)
        if tta == "flip":
            flipped = flipped_logits(loaded, scored, batch_size=batch_size)
    result = score(logits, scored.targets, temperature=temperature, flipped=flipped, bins=bins)
    origin = Source(kind=kind, path=path, sha256=sha256_of(path))
    evaluation = write_evaluation(
        directory,
        result.probabilities,
        scored,
        names,
        origin,
        bins=bins,
        top_losses=top_losses,
        figures=result.figures,
        uncalibrated=result.uncalibrated,
    )
    if cam is None:
        cam = DEFAULT_CAM if loaded is not None else 0
    if cam and loaded is None:
        log.warning("Grad-CAM skipped: it needs the gradients of a checkpoint; %s is not explained", path)
    elif cam and loaded is not None:
        from harness.training.cam import write_cams

        module = loaded.module
        write_cams(
            directory,
            module,
            module.net,
            str(module.hparams["arch"]),
            loaded.preprocessing,
            scored.samples,
            result.probabilities,
            names,
            limit=cam,
        )
    return evaluation


def print_report(evaluation: Evaluation) -> None:
    """The headline figures and the per-class table, as a rich table in the terminal."""
    from rich.console import Console
    from rich.table import Table

    figures = evaluation.summary
    table = Table(title=f"per class ({figures['data']['folder']})")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    rows = list(figures["per_class"].items())
    if len(rows) > FULL_MATRIX_CLASSES:
        rows = sorted(rows, key=lambda row: (row[1]["f1"], row[0]))[:_PRINTED_WORST]
        classes = len(figures["per_class"])
        table.title = f"the {len(rows)} of {classes:,} classes of lowest F1 ({figures['data']['folder']})"
    for name, scores in rows:
        table.add_row(
            name, *(f"{scores[key]:.3f}" for key in ("precision", "recall", "f1")), str(scores["support"])
        )
    console = Console()
    console.print(table)
    macro = figures["macro"]
    console.print(
        f"top-1 {figures['top1']:.4f}  top-{figures['top5_k']} {figures['top5']:.4f}  "
        f"balanced {figures['balanced_accuracy']:.4f}  macro F1 {macro['f1']:.4f}  "
        f"ECE {figures['ece']:.4f}  on {figures['samples']} images",
        highlight=False,
        soft_wrap=True,
    )
    calibrated = figures.get("calibration") or {}
    if calibrated.get("temperature"):
        before, after = calibrated["ece_before"], calibrated["ece_after"]
        console.print(
            f"temperature {calibrated['temperature']['value']:.3f}: ECE {before:.4f} -> {after:.4f}, "
            f"NLL {calibrated['nll_before']:.4f} -> {calibrated['nll_after']:.4f}",
            highlight=False,
            soft_wrap=True,
        )
    flips = figures.get("tta")
    if flips:
        console.print(
            f"test-time flips: top-1 {flips['top1_without']:.4f} -> {flips['top1_with']:.4f} "
            f"({flips['gain_points']:+.2f} points)",
            highlight=False,
            soft_wrap=True,
        )
    for pair in figures["most_confused"][:5]:
        console.print(f"  {pair['true']} -> {pair['predicted']}: {pair['count']}", highlight=False)
    if figures["absent_classes"]:
        absent = ", ".join(figures["absent_classes"])
        console.print(
            f"absent from the data (left out of the macro averages): {absent}",
            highlight=False,
            soft_wrap=True,
        )
    if figures["data"]["left_out"]:
        console.print(f"left out (classes the model lacks): {figures['data']['left_out']}", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.evaluate",
        description="Score a run, a checkpoint or an exported model.onnx on a labelled ImageFolder tree.",
        epilog="Exit codes: 0 done, 1 another harness error, 2 bad input (the message names the path).",
    )
    parser.add_argument("source", type=Path, help="a run directory, a .ckpt checkpoint or a model.onnx")
    parser.add_argument(
        "data", help="an ImageFolder tree (its test/ split when it has one), or a streamed data set"
    )
    parser.add_argument(
        "--split", help="the sub-folder of DATA to score (default test/ if present, else DATA)"
    )
    parser.add_argument("--output", type=Path, help="the evaluation folder (default <run>/evaluation/<data>)")
    parser.add_argument(
        "--unknown",
        choices=("error", "count"),
        default="error",
        help="a DATA class the model lacks: an error (default), or its images counted and left out",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument(
        "--bins", type=int, default=15, help="equal-width confidence bins of the ECE (default 15)"
    )
    parser.add_argument(
        "--top-losses", type=int, default=16, help="images on the top-losses grid (default 16)"
    )
    parser.add_argument("--accelerator", default="auto", help="Lightning's accelerator for a checkpoint")
    parser.add_argument(
        "--cam",
        type=int,
        metavar="N",
        help=f"Grad-CAM maps of the N top losses and N most-confused pairs of a checkpoint "
        f"(default {DEFAULT_CAM}; 0 = off; an ONNX model has none)",
    )
    parser.add_argument(
        "--tta",
        choices=TTA_KINDS,
        default="none",
        help="flip: average each image with its mirror, gain reported (refused if trained without flips)",
    )
    args = parser.parse_args(argv)
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--bins", args.bins),
        ("--top-losses", args.top_losses),
    ):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if args.cam is not None and args.cam < 0:
        parser.error(f"--cam must be 0 (off) or a positive integer, got {args.cam}")
    try:
        evaluation = evaluate(
            args.source,
            args.data,
            split=args.split,
            output=args.output,
            unknown=args.unknown,
            batch_size=args.batch_size,
            bins=args.bins,
            top_losses=args.top_losses,
            accelerator=args.accelerator,
            tta=args.tta,
            cam=args.cam,
        )
    except HarnessError as error:
        return report(error)
    print_report(evaluation)
    print(evaluation.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())

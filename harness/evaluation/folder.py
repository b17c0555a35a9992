"""An evaluation folder: every figure of a model on a labelled set, as files (no torch).

`write_evaluation` takes the class probabilities of each image (from onnxruntime or from
Lightning's ``trainer.test``) and writes, under `directory`:

- ``metrics.json``: top-1, top-5, balanced accuracy, loss, macro and weighted
  precision/recall/F1, per class precision/recall/F1/support, ECE, the most-confused
  pairs, the source (kind, path, sha256 digest) and the data (folder, split, images,
  classes left out);
- ``per_class.csv``: class, precision, recall, f1, support;
- ``confusion_matrix.csv`` (rows true, columns predicted) and ``confusion_matrix.png``;
- ``most_confused.csv``: true, predicted, count, share of the true class, the largest
  off-diagonal cells.

- ``predictions.csv``: path, true, predicted, probability, then the top-k classes;
- ``top_losses.png``: the wrong images with the highest loss, fastai-style;
- ``reliability.png``: the reliability diagram with the ECE (of the probabilities scored:
  with the model's temperature when it carries one), and then
  ``reliability_uncalibrated.png``, the same before the temperature;
- in ``metrics.json``, ``calibration`` (the temperature, ECE and NLL before and after it)
  and ``tta`` (top-1 without and with test-time flips, when asked for).

The counts are kept as their non-zero cells and the per-class, confusion-matrix and
most-confused files are written by `harness.evaluation.pairs`, as the run's
``confusion_matrix/`` files are: past 200 classes the CSV lists the non-zero cells and
the picture the 40 most mistaken classes, so 10,000 classes cost memory and disk in
proportion to the images, not 10^8 cells.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from harness.evaluation.data import EvaluationData
from harness.evaluation.metrics import Metrics, calibration, compute_metrics
from harness.evaluation.metrics import top_losses as most_lost
from harness.evaluation.pairs import counts_table, draw_counts, most_confused_csv, per_class_csv
from harness.evaluation.pictures import Loss, draw_reliability, draw_top_losses
from harness.io.artifacts import write_json, write_text

__all__ = ["Evaluation", "Source", "evaluation_dir", "sha256_of", "write_evaluation"]


@attrs.frozen(kw_only=True)
class Source:
    """What was evaluated: ``run``, ``checkpoint`` or ``onnx``, the file read and its digest."""

    kind: str
    path: Path
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@attrs.frozen(kw_only=True)
class Evaluation:
    """A written evaluation folder and its figures."""

    directory: Path
    metrics: Metrics
    summary: dict[str, Any]


def evaluation_dir(base: Path) -> Path:
    """`base`, or ``base-1``, ``base-2``, ... when it exists already: nothing earlier is overwritten."""
    candidate, n = base, 0
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _csv(rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_evaluation(
    directory: Path,
    probabilities: npt.ArrayLike,
    data: EvaluationData,
    class_names: Sequence[str],
    source: Source,
    *,
    bins: int = 15,
    top_losses: int = 16,
    topk: int = 5,
    figures: Mapping[str, object] | None = None,
    uncalibrated: npt.ArrayLike | None = None,
) -> Evaluation:
    """Compute every figure and write the folder described in the module docstring.

    `figures` (the temperature and flip figures of `harness.evaluation.calibrated`) are
    added to ``metrics.json``; `uncalibrated`, the probabilities before the model's
    temperature, gets its own reliability diagram beside the calibrated one.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(data.targets, dtype=np.int64)
    metrics = compute_metrics(probs, targets, bins=bins)
    names = list(class_names)
    summary: dict[str, Any] = {
        "source": {"kind": source.kind, "path": str(source.path), "sha256": source.sha256},
        "data": {
            "folder": str(data.folder),
            "split": data.split,
            "images": len(data.samples),
            "left_out": dict(data.unknown),
        },
        **metrics.to_json(names),
        **(figures or {}),
    }
    write_json(directory / "metrics.json", summary)
    write_text(directory / "per_class.csv", per_class_csv(metrics.counts, names))
    write_text(directory / "confusion_matrix.csv", counts_table(metrics.counts, names))
    scored = f"{data.folder.parent.name}/{data.split}" if data.split else data.folder.name
    draw_counts(
        directory / "confusion_matrix.png", metrics.counts, names, "true", f"Confusion matrix, {scored}"
    )
    write_text(directory / "most_confused.csv", most_confused_csv(metrics.counts, names))
    k = min(topk, len(names))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    predicted = order[:, 0]
    header: list[object] = ["path", "true", "predicted", "probability", *(f"top{j + 1}" for j in range(k))]
    rows: list[list[object]] = [header]
    for i, (path, target) in enumerate(data.samples):
        tops = [f"{names[c]}:{probs[i, c]:.4f}" for c in order[i]]
        rows.append([str(path), names[target], names[predicted[i]], f"{probs[i, predicted[i]]:.6f}", *tops])
    write_text(directory / "predictions.csv", _csv(rows))

    true_p = probs[np.arange(len(targets)), targets]
    losses = -np.log(np.clip(true_p, 1e-12, None))
    worst = most_lost(probs, targets, top_losses)
    draw_top_losses(
        directory / "top_losses.png",
        [
            Loss(
                path=data.samples[i][0],
                true=names[targets[i]],
                predicted=names[predicted[i]],
                probability=float(probs[i, predicted[i]]),
                loss=float(losses[i]),
            )
            for i in worst
        ],
        total=len(targets),
        wrong=int(np.count_nonzero(predicted != targets)),
    )
    if uncalibrated is None:
        draw_reliability(directory / "reliability.png", metrics.calibration, title=f"Reliability, {scored}")
    else:
        draw_reliability(
            directory / "reliability.png",
            metrics.calibration,
            title=f"Reliability, {scored}, temperature scaled",
        )
        before = calibration(np.asarray(uncalibrated, dtype=np.float64), targets, bins)
        draw_reliability(
            directory / "reliability_uncalibrated.png",
            before,
            title=f"Reliability, {scored}, before the temperature (T = 1)",
        )
    return Evaluation(directory=directory, metrics=metrics, summary=summary)

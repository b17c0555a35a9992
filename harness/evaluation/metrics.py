"""Classification metrics from predicted probabilities, in numpy alone (no torch).

Everything is computed from one `(N, C)` array of class probabilities and the `N` true
class indices. Conventions follow scikit-learn (checked against it in the tests):

- a class's precision, recall or F1 with a zero denominator is 0 (``zero_division=0``);
- macro averages are the unweighted mean over the classes that have true samples (as
  scikit-learn's ``labels=np.unique(y_true)``: a class of the model absent from the data
  would count as 0 and cap a flawless score at the share of classes present; `Metrics.absent`
  names them), weighted averages weight each class by its support (true samples);
- balanced accuracy is the mean recall over the classes that have true samples
  (`sklearn.metrics.balanced_accuracy_score`);
- top-k counts a sample right when its true class is among the k most probable
  (ties broken by class index);
- the expected calibration error (ECE) uses `bins` equal-width bins of confidence (the
  top probability): bin ``b`` holds confidences in ``(b / bins, (b + 1) / bins]``, a
  confidence of exactly 0 falls in the first; ``ECE = sum_b n_b / N * |acc_b - conf_b|``
  where ``acc_b`` is the top-1 accuracy and ``conf_b`` the mean confidence of the bin.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import numpy.typing as npt

from harness.evaluation.pairs import ClassScores, ConfusedPair, Pairs, ratio, scores_of

__all__ = [
    "Calibration",
    "ClassScores",
    "ConfusedPair",
    "Metrics",
    "calibration",
    "compute_metrics",
    "scores_of",
    "softmax",
    "top_k_accuracy",
    "top_losses",
]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def softmax(logits: npt.ArrayLike) -> Floats:
    """Row-wise softmax in float64, shifted by the row maximum so large logits do not overflow."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    probabilities: Floats = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def top_k_accuracy(probabilities: Floats, targets: Ints, k: int) -> float:
    """Share of samples whose true class is among the `k` most probable (ties by class index)."""
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float((order == targets[:, None]).any(axis=1).mean()) if len(targets) else 0.0


def top_losses(probabilities: Floats, targets: Ints, limit: int) -> Ints:
    """The wrong images of highest loss (``-log p(true)``), highest first: at most `limit` indices."""
    true_p = probabilities[np.arange(len(targets)), targets]
    losses = -np.log(np.clip(true_p, 1e-12, None))
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != targets)
    worst: Ints = wrong[np.argsort(-losses[wrong], kind="stable")][:limit]
    return worst


@attrs.frozen(kw_only=True)
class Calibration:
    """The reliability diagram's numbers: per equal-width bin, its count, accuracy and confidence."""

    bins: int
    counts: Ints
    accuracy: Floats
    confidence: Floats
    ece: float

    @property
    def edges(self) -> Floats:
        edges: Floats = np.linspace(0.0, 1.0, self.bins + 1)
        return edges


def calibration(probabilities: Floats, targets: Ints, bins: int = 15) -> Calibration:
    """Bin the top probability into `bins` equal-width bins and compute the ECE (see the module)."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == targets).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins).astype(np.int64)
    sizes = counts.astype(np.float64)
    accuracy = ratio(np.bincount(which, weights=correct, minlength=bins).astype(np.float64), sizes)
    mean_confidence = ratio(np.bincount(which, weights=confidence, minlength=bins).astype(np.float64), sizes)
    total = max(int(counts.sum()), 1)
    ece = float(np.sum(sizes / total * np.abs(accuracy - mean_confidence)))
    return Calibration(bins=bins, counts=counts, accuracy=accuracy, confidence=mean_confidence, ece=ece)


@attrs.frozen(kw_only=True)
class Metrics:
    """Every figure of an evaluation (see the module for the conventions)."""

    samples: int
    top1: float
    top5: float
    top5_k: int
    """Classes counted by `top5`: 5, or all of them when the model has fewer."""
    balanced_accuracy: float
    loss: float
    macro: tuple[float, float, float]
    weighted: tuple[float, float, float]
    classes: ClassScores
    counts: Pairs
    """The confusion matrix as its non-zero cells (`harness.evaluation.pairs`)."""
    calibration: Calibration
    confused: list[ConfusedPair]
    absent: tuple[int, ...] = ()
    """Classes of the model with no true sample in the data, left out of the macro averages."""

    def to_json(self, class_names: Sequence[str]) -> dict[str, object]:
        """The figures as JSON-ready values, classes by name."""
        scores = self.classes
        return {
            "samples": self.samples,
            "top1": self.top1,
            "top5": self.top5,
            "top5_k": self.top5_k,
            "balanced_accuracy": self.balanced_accuracy,
            "loss": self.loss,
            "macro": dict(zip(("precision", "recall", "f1"), self.macro, strict=True)),
            "absent_classes": [class_names[c] for c in self.absent],
            "weighted": dict(zip(("precision", "recall", "f1"), self.weighted, strict=True)),
            "ece": self.calibration.ece,
            "ece_bins": self.calibration.bins,
            "per_class": {
                name: {
                    "precision": float(scores.precision[i]),
                    "recall": float(scores.recall[i]),
                    "f1": float(scores.f1[i]),
                    "support": int(scores.support[i]),
                }
                for i, name in enumerate(class_names)
            },
            "most_confused": [
                {"true": class_names[p.true], "predicted": class_names[p.predicted], "count": p.count}
                for p in self.confused
            ],
        }


def compute_metrics(probabilities: npt.ArrayLike, targets: npt.ArrayLike, *, bins: int = 15) -> Metrics:
    """All the figures for `probabilities` (N x C, rows summing to 1) against `targets` (N)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(targets, dtype=np.int64)
    num_classes = probs.shape[1]
    counts = Pairs.from_labels(true, probs.argmax(axis=1), num_classes)
    scores = counts.scores()
    support = scores.support.astype(np.float64)
    total = max(float(support.sum()), 1.0)

    def weighted(values: Floats) -> float:
        return float(np.sum(values * support) / total)

    present = scores.support > 0

    def macro(values: Floats) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    picked = probs[np.arange(len(true)), true] if len(true) else np.zeros(0)
    k = min(5, num_classes)
    return Metrics(
        samples=len(true),
        top1=top_k_accuracy(probs, true, 1),
        top5=top_k_accuracy(probs, true, k),
        top5_k=k,
        balanced_accuracy=float(scores.recall[present].mean()) if present.any() else 0.0,
        loss=float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(true) else 0.0,
        macro=(macro(scores.precision), macro(scores.recall), macro(scores.f1)),
        weighted=(weighted(scores.precision), weighted(scores.recall), weighted(scores.f1)),
        classes=scores,
        counts=counts,
        calibration=calibration(probs, true, bins),
        confused=counts.most_confused(10),
        absent=tuple(int(c) for c in np.flatnonzero(~present)),
    )

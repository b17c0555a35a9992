"""harness.evaluation.metrics against scikit-learn on the same predictions, and ECE by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    top_k_accuracy_score,
)

from harness.evaluation.metrics import calibration, compute_metrics, softmax
from harness.evaluation.pairs import Pairs


def predictions(classes: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities that favour the true class most of the time; the last class never appears."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes - 1, samples)
    logits = rng.normal(0.0, 1.0, (samples, classes))
    logits[np.arange(samples), targets] += rng.uniform(0.0, 3.0, samples)
    return softmax(logits), targets


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize(("classes", "samples", "seed"), [(3, 40, 0), (7, 300, 1), (12, 90, 2)])
def test_every_figure_matches_scikit_learn(classes: int, samples: int, seed: int) -> None:
    probabilities, targets = predictions(classes, samples, seed)
    predicted = probabilities.argmax(axis=1)
    labels = list(range(classes))
    metrics = compute_metrics(probabilities, targets)

    np.testing.assert_array_equal(metrics.counts.dense(), confusion_matrix(targets, predicted, labels=labels))
    report = classification_report(targets, predicted, labels=labels, output_dict=True, zero_division=0)
    for c in labels:
        assert metrics.classes.precision[c] == pytest.approx(report[str(c)]["precision"])
        assert metrics.classes.recall[c] == pytest.approx(report[str(c)]["recall"])
        assert metrics.classes.f1[c] == pytest.approx(report[str(c)]["f1-score"])
        assert metrics.classes.support[c] == report[str(c)]["support"]
    present = classification_report(
        targets, predicted, labels=np.unique(targets), output_dict=True, zero_division=0
    )
    for mine, theirs in ((metrics.macro, present["macro avg"]), (metrics.weighted, report["weighted avg"])):
        assert mine == pytest.approx((theirs["precision"], theirs["recall"], theirs["f1-score"]))
    assert metrics.absent == (classes - 1,)
    assert metrics.balanced_accuracy == pytest.approx(balanced_accuracy_score(targets, predicted))
    assert metrics.top1 == pytest.approx(float((predicted == targets).mean()))
    k = min(5, classes)
    expected_top5 = 1.0 if k == classes else top_k_accuracy_score(targets, probabilities, k=k, labels=labels)
    assert metrics.top5 == pytest.approx(expected_top5)
    assert metrics.loss == pytest.approx(-np.log(probabilities[np.arange(samples), targets]).mean())


def test_most_confused_lists_the_largest_off_diagonal_cells_first() -> None:
    counts = np.array([[5, 3, 0], [7, 2, 1], [3, 0, 9]])
    pairs = [(p.true, p.predicted, p.count) for p in Pairs.from_dense(counts).most_confused(3)]
    assert pairs == [(1, 0, 7), (0, 1, 3), (2, 0, 3)]


def test_ece_is_the_weighted_gap_between_accuracy_and_confidence_per_bin() -> None:
    # Five bins of width 0.2. Confidences 0.9, 0.9 (one right) -> bin 4, accuracy 0.5, confidence 0.9;
    # 0.5 (right) -> bin 2, gap 0.5; 0.4 exactly (wrong) -> the edge belongs to bin 1, gap 0.4.
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.9, 0.05, 0.05],
            [0.25, 0.5, 0.25],
            [0.4, 0.3, 0.3],
        ]
    )
    targets = np.array([0, 1, 1, 2])
    result = calibration(probabilities, targets, bins=5)
    np.testing.assert_array_equal(result.counts, [0, 1, 1, 0, 2])
    np.testing.assert_allclose(result.accuracy, [0, 0, 1, 0, 0.5])
    np.testing.assert_allclose(result.confidence, [0, 0.4, 0.5, 0, 0.9])
    direct = (2 / 4) * abs(0.5 - 0.9) + (1 / 4) * abs(1 - 0.5) + (1 / 4) * abs(0 - 0.4)
    assert result.ece == pytest.approx(direct)


def test_a_perfectly_calibrated_model_has_no_calibration_error() -> None:
    # Confidence 0.75 everywhere and three in four right: every bin's accuracy equals its confidence.
    probabilities = np.tile([[0.75, 0.25]], (8, 1))
    targets = np.array([0, 0, 0, 1, 0, 0, 0, 1])
    assert calibration(probabilities, targets).ece == pytest.approx(0.0)

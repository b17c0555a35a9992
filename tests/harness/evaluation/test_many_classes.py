"""An evaluation at thousands of classes: memory and files grow with the images, not C squared."""

from __future__ import annotations

import csv
import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.evaluate import print_report
from harness.evaluation.data import EvaluationData
from harness.evaluation.folder import Source, write_evaluation
from harness.evaluation.metrics import softmax
from harness.evaluation.pairs import FULL_MATRIX_CLASSES, MOST_CONFUSED, PICTURED

CLASSES, IMAGES = 4000, 250


def test_four_thousand_classes_stay_bounded_and_their_counts_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "one.png"
    Image.new("RGB", (12, 12), "gray").save(image)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, CLASSES, IMAGES)
    wrong = rng.random(IMAGES) < 0.4
    predicted = np.where(wrong, rng.integers(0, CLASSES, IMAGES), targets)
    logits = rng.normal(0.0, 0.1, (IMAGES, CLASSES))
    logits[np.arange(IMAGES), predicted] += 6.0
    probabilities = softmax(logits)
    names = [f"c{i}" for i in range(CLASSES)]
    data = EvaluationData(
        folder=tmp_path / "data", split=None, samples=tuple((image, int(t)) for t in targets)
    )
    source = Source(kind="onnx", path=tmp_path / "model.onnx", sha256="0" * 64)

    tracemalloc.start()
    try:
        evaluation = write_evaluation(tmp_path / "eval", probabilities, data, names, source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = evaluation.directory
    dense = CLASSES * CLASSES * 8
    # N x C float arrays (probabilities, their ranking) are inherent; one dense C x C matrix is not.
    assert peak < dense / 3, f"peak {peak / 1e6:.0f} MB, a dense matrix is {dense / 1e6:.0f} MB"

    expected: dict[tuple[str, str], int] = {}
    for t, p in zip(targets.tolist(), predicted.tolist(), strict=True):
        expected[names[t], names[p]] = expected.get((names[t], names[p]), 0) + 1
    with (out / "confusion_matrix.csv").open() as handle:
        header, *cells = list(csv.reader(handle))
    assert header == ["true", "predicted", "count"]
    assert {(t, p): int(c) for t, p, c in cells} == expected
    assert (out / "confusion_matrix.csv").stat().st_size < 20_000

    with (out / "most_confused.csv").open() as handle:
        confused = list(csv.DictReader(handle))
    mistakes = sorted((c for (t, p), c in expected.items() if t != p), reverse=True)
    assert [int(row["count"]) for row in confused] == mistakes[:MOST_CONFUSED]
    with (out / "per_class.csv").open() as handle:
        assert sum(1 for _ in handle) == 1 + CLASSES, "one row per class"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["top1"] == float((predicted == targets).mean())
    with Image.open(out / "confusion_matrix.png") as picture:
        # the most mistaken classes only: about as wide as a 40-class matrix, not 3,000 pixels
        assert CLASSES > FULL_MATRIX_CLASSES and picture.width < 60 * PICTURED

    print_report(evaluation)
    printed = capsys.readouterr().out
    assert "the 20 of 4,000 classes of lowest F1" in printed
    assert len(re.findall(r"^│ c\d+ ", printed, flags=re.MULTILINE)) == 20, "20 rows, not 4,000"

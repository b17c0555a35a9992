"""harness.evaluation.folder: the files of an evaluation, for 3, 10 and 100 classes (no model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.core.testing import write_imagefolder
from harness.evaluation.data import load_evaluation_data
from harness.evaluation.folder import Source, evaluation_dir, write_evaluation
from harness.evaluation.metrics import softmax


def scored(tmp_path: Path, classes: int, per_class: int, seed: int = 0) -> tuple[Path, list[str]]:
    names = [f"class {i:02d}" if classes > 10 else f"kind_{i}" for i in range(classes)]
    root = write_imagefolder(tmp_path / "data", dict.fromkeys(names, per_class), size=24, seed=seed)
    return root, names


@pytest.mark.parametrize(("classes", "per_class"), [(3, 8), (10, 4), (100, 2)])
def test_every_file_is_written_and_consistent(tmp_path: Path, classes: int, per_class: int) -> None:
    root, names = scored(tmp_path, classes, per_class)
    data = load_evaluation_data(root, names)
    rng = np.random.default_rng(classes)
    logits = rng.normal(0, 1, (len(data.samples), classes))
    logits[np.arange(len(data.samples)), data.targets] += 2.5
    probabilities = softmax(logits)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model")
    source = Source(kind="onnx", path=model, sha256="0" * 64)
    evaluation = write_evaluation(tmp_path / "eval", probabilities, data, names, source, top_losses=12)
    out = evaluation.directory

    metrics = json.loads((out / "metrics.json").read_text())
    predicted = probabilities.argmax(axis=1)
    assert metrics["top1"] == pytest.approx(float((predicted == np.array(data.targets)).mean()))
    assert list(metrics["per_class"]) == names
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:4] == ["path", "true", "predicted", "probability"]
    assert [row[2] for row in rows[1:]] == [names[i] for i in predicted]
    assert len(rows[0]) == 4 + min(5, classes)
    with (out / "confusion_matrix.csv").open(newline="") as handle:
        counts = np.array([[int(v) for v in row[1:]] for row in list(csv.reader(handle))[1:]])
    assert counts.sum() == len(data.samples)
    assert int(np.trace(counts)) == int((predicted == np.array(data.targets)).sum())
    for picture in ("top_losses.png", "reliability.png", "confusion_matrix.png"):
        with Image.open(out / picture) as image:
            assert image.width > 300 and image.height > 300


def test_a_missing_folder_and_one_without_images_are_data_errors(tmp_path: Path) -> None:
    from harness.core.errors import DataError

    with pytest.raises(DataError, match="no such directory"):
        load_evaluation_data(tmp_path / "nowhere", ["a", "b"])
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no image files"):
        load_evaluation_data(tmp_path / "empty", ["a", "b"])
    write_imagefolder(tmp_path / "tree" / "train", {"a": 1, "b": 1})
    write_imagefolder(tmp_path / "tree" / "val", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="--split"):
        load_evaluation_data(tmp_path / "tree", ["a", "b"])
    assert load_evaluation_data(tmp_path / "tree", ["a", "b"], split="val").split == "val"


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    from harness.core.errors import DataError

    root = write_imagefolder(tmp_path / "data", {"a": 2, "b": 2})
    broken = root / "b" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_evaluation_data(root, ["a", "b"])


def test_an_earlier_evaluation_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval-1").mkdir()
    assert evaluation_dir(tmp_path / "eval") == tmp_path / "eval-2"

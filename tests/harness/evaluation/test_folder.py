"""harness.evaluation.folder and its pictures: 3 to 100 classes, odd class names (no model)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.core.testing import write_imagefolder
from harness.evaluation.data import load_evaluation_data
from harness.evaluation.folder import Source, evaluation_dir, write_evaluation
from harness.evaluation.metrics import Calibration, softmax
from harness.evaluation.pictures import Loss, draw_reliability, draw_top_losses
from harness.pictures.confusion import draw_confusion


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


def test_an_image_past_the_decompression_bomb_limit_is_unreadable_as_in_training(tmp_path: Path) -> None:
    """10,000 x 10,000 pixels: past Pillow's limit, under twice it (a warning, not an error, to Pillow)."""
    from harness.core.errors import DataError
    from tests.harness.training.test_data import bomb_png

    root = write_imagefolder(tmp_path / "data", {"a": 2, "b": 2}, size=6)
    bomb_png(root / "a" / "huge.png", 10000)
    with pytest.raises(
        DataError, match=r"1 unreadable image file\(s\): .*huge\.png \(DecompressionBombWarning"
    ):
        load_evaluation_data(root, ["a", "b"])


def test_split_folders_are_found_in_any_case_as_training_finds_them(tmp_path: Path) -> None:
    for split in ("Train", "VALID", "Test"):
        write_imagefolder(tmp_path / "tree" / split, {"a": 1, "b": 1})
    found = load_evaluation_data(tmp_path / "tree", ["a", "b"])
    assert (found.folder.name, found.split) == ("Test", "test")
    assert load_evaluation_data(tmp_path / "tree", ["a", "b"], split="val").folder.name == "VALID"


def test_an_earlier_evaluation_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval-1").mkdir()
    assert evaluation_dir(tmp_path / "eval") == tmp_path / "eval-2"


ODD_NAMES = (
    "p$\\bad$q",
    "$x$",
    "chat tigré, Straße",
    "Кириллица",
    "100% sure",
    "long " + "x" * 180 + " end",
)


def test_odd_class_names_are_drawn_literally_on_every_picture(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "data", dict.fromkeys(ODD_NAMES, 6), size=24, seed=1)
    data = load_evaluation_data(root, list(ODD_NAMES))
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (len(data.samples), len(ODD_NAMES)))
    logits[np.arange(len(data.samples)), data.targets] += 1.5
    source = Source(kind="onnx", path=tmp_path / "model.onnx", sha256="0" * 64)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a glyph missing or a name read as mathtext would warn or raise
        out = write_evaluation(tmp_path / "eval", softmax(logits), data, ODD_NAMES, source).directory

    with (out / "confusion_matrix.csv").open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header[1:] == [row[0] for row in rows] == list(ODD_NAMES)
    assert list(json.loads((out / "metrics.json").read_text(encoding="utf-8"))["per_class"]) == list(
        ODD_NAMES
    )
    counts = np.array([[int(v) for v in row[1:]] for row in rows], dtype=np.int64)
    # the evaluation's matrix is the run's picture: the same code, pixel for pixel
    run_like = draw_confusion(
        tmp_path / "run.png", counts, ODD_NAMES, normalize="true", title="Confusion matrix, data"
    )
    with Image.open(out / "confusion_matrix.png") as drawn, Image.open(run_like) as expected:
        assert np.array_equal(np.asarray(drawn), np.asarray(expected))
    for picture in ("top_losses.png", "reliability.png"):
        with Image.open(out / picture) as image:
            assert image.format == "PNG" and image.width > 300


def losses_of(tmp_path: Path, count: int) -> list[Loss]:
    images = write_imagefolder(tmp_path / "wrong", {"a": count}, size=40, height=20, seed=2)
    return [
        Loss(path=path, true="a", predicted="p$\\bad$q", probability=0.9, loss=2.3)
        for path in sorted((images / "a").iterdir())
    ]


def test_the_top_losses_are_framed_and_captioned_in_red(tmp_path: Path) -> None:
    losses = losses_of(tmp_path, 5)
    path = draw_top_losses(tmp_path / "top.png", losses, total=50, wrong=9)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    red = int(np.all(pixels == (192, 57, 43), axis=2).sum())
    # a 4-pixel frame round each image, as wide as a cell and half as tall (40 x 20 images)
    assert red >= len(losses) * 4 * (2 * 180 + 2 * 90)
    empty = draw_top_losses(tmp_path / "none.png", [], total=50, wrong=0)
    with Image.open(empty) as image:
        assert not np.all(np.asarray(image.convert("RGB")) == (192, 57, 43), axis=2).any()


def test_the_reliability_diagram_shades_the_gap_only_where_there_is_one(tmp_path: Path) -> None:
    bins = 10
    counts = np.full(bins, 20, dtype=np.int64)
    confidence = np.linspace(0.05, 0.95, bins)

    def shaded(accuracy: np.ndarray) -> int:
        ece = float(np.mean(np.abs(accuracy - confidence)))
        calibration = Calibration(bins=bins, counts=counts, accuracy=accuracy, confidence=confidence, ece=ece)
        with Image.open(draw_reliability(tmp_path / "r.png", calibration)) as image:
            pixels = np.asarray(image.convert("RGB")).astype(int)
        # the gap's fill: #e07b7b at 40% over white, or over the blue bar
        return int((np.abs(pixels - (243, 202, 202)).sum(axis=2) < 12).sum())

    calibrated = shaded(confidence.copy())
    overconfident = shaded(confidence * 0.6)
    assert overconfident > 20 * calibrated + 5000

"""harness.predict: an exported model classifies image files with onnxruntime alone, as in training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from harness.core.preprocessing import Preprocessing
from harness.core.testing import tiny_model
from harness.io.images import load_rgb, to_input
from harness.onnx.bundle import export_bundle
from harness.onnx.card import ExportSource
from harness.predict import main
from harness.training.data import ImageFiles

CLASSES = ("cat", "dog", "eel")
SIZE = 16
PREPROCESSING = Preprocessing(image_size=SIZE)
CROP = Preprocessing(image_size=SIZE, resize="crop", crop_fraction=0.875)
ROOT = Path(__file__).resolve().parents[2]


@attrs.frozen(kw_only=True)
class Exported:
    path: Path
    model: nn.Module


def export_tiny(directory: Path, preprocessing: Preprocessing) -> Exported:
    model = tiny_model(seed=0).eval()
    with torch.no_grad():
        model[-1].weight.mul_(20)  # decisive logits, so a class never wins by a rounding error
    result = export_bundle(
        model,
        None,
        class_names=CLASSES,
        preprocessing=preprocessing,
        source=ExportSource(checkpoint=None),
        images=None,
        directory=directory,
    )
    return Exported(path=result.model, model=model)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """One tiny model exported once for every test here (an export takes seconds)."""
    yield export_tiny(tmp_path_factory.mktemp("exported"), PREPROCESSING)


def save_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (SIZE, SIZE), seed: int = 0) -> Path:
    """A random picture stored in `mode` (Pillow's names) at `size` = (width, height).

    Channel ``seed % 3`` is dimmed so that pictures of different seeds differ on average.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    pixels[..., seed % 3] //= 4
    rgba = Image.fromarray(pixels, mode="RGBA")
    if mode == "P":
        image = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    else:
        image = rgba.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def training_inputs(paths: list[Path], preprocessing: Preprocessing = PREPROCESSING) -> torch.Tensor:
    """What `harness.training.data` feeds the model for these files."""
    dataset = ImageFiles([(path, 0) for path in paths], preprocessing)
    return torch.stack([dataset[index][0] for index in range(len(dataset))])


def run_json(capsys: pytest.CaptureFixture[str], *args: object) -> list[dict[str, object]]:
    assert main([*(str(a) for a in args), "--json"]) == 0
    predictions: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return predictions


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "I;16"])
@pytest.mark.parametrize(
    "size", [(SIZE, SIZE), (23, 11), (11, 29)], ids=["same-size", "resized-wide", "resized-tall"]
)
@pytest.mark.parametrize("spec", [PREPROCESSING, CROP], ids=["squash", "crop"])
def test_inputs_match_the_training_pipeline(
    tmp_path: Path, mode: str, size: tuple[int, int], spec: Preprocessing
) -> None:
    path = save_image(tmp_path / "image.png", mode, size)
    prepared = to_input(load_rgb(path), spec)
    expected = training_inputs([path], spec)[0].numpy()
    # Pillow's bilinear resize and torchvision's antialiased one differ by at most one grey level.
    grey_level = 1.0 / 255 / min(spec.std)
    exact = size == (SIZE, SIZE) and spec.resize == "squash"
    assert prepared.shape == (3, SIZE, SIZE) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, expected, atol=1e-5 if exact else grey_level * 1.01, rtol=0)
    other = CROP if spec.resize == "squash" else PREPROCESSING
    different = np.abs(to_input(load_rgb(path), other) - expected).max()
    assert different > 10 * grey_level, "the two resize modes should give different inputs here"


@pytest.mark.parametrize("resize", ["squash", "crop"])
def test_predictions_follow_the_resize_mode_the_model_records(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str], resize: str
) -> None:
    # Images three times as wide as tall: a crop keeping the whole shorter side sees their
    # middle third, a squash all of them, and the model's probabilities differ by 0.04.
    spec = attrs.evolve(PREPROCESSING, resize=resize, crop_fraction=1.0)
    model = exported if resize == "squash" else export_tiny(tmp_path / "crop", spec)
    assert json.loads((model.path.parent / "preprocessing.json").read_text())["resize"] == resize
    paths = [save_image(tmp_path / f"{index}.png", size=(3 * SIZE, SIZE), seed=index) for index in range(8)]
    with torch.no_grad():
        probabilities = torch.softmax(model.model(training_inputs(paths, spec)), dim=1)
        other = attrs.evolve(spec, resize="crop" if resize == "squash" else "squash")
        elsewise = torch.softmax(model.model(training_inputs(paths, other)), dim=1)
    assert (probabilities - elsewise).abs().max() > 1e-2, "the modes should change the predictions"

    predictions = run_json(capsys, model.path, *paths)

    assert [p["index"] for p in predictions] == probabilities.argmax(1).tolist()
    np.testing.assert_allclose(
        [p["probability"] for p in predictions], probabilities.max(1).values.numpy(), atol=1e-4
    )


def test_predictions_agree_with_the_model_on_saved_images(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [save_image(tmp_path / f"{index}.png", seed=index) for index in range(12)]
    with torch.no_grad():
        probabilities = torch.softmax(exported.model(training_inputs(paths)), dim=1)

    predictions = run_json(capsys, exported.path, *paths)

    assert [p["path"] for p in predictions] == [str(path) for path in paths]
    assert [p["index"] for p in predictions] == probabilities.argmax(1).tolist()
    assert [p["label"] for p in predictions] == [CLASSES[i] for i in probabilities.argmax(1).tolist()]
    np.testing.assert_allclose(
        [p["probability"] for p in predictions], probabilities.max(1).values.numpy(), atol=1e-5
    )
    assert len({p["label"] for p in predictions}) > 1, "the test images should not all look alike"


def test_batches_do_not_change_predictions(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [save_image(tmp_path / f"{index}.png", seed=index) for index in range(5)]
    whole = run_json(capsys, exported.path, *paths)
    assert main([str(exported.path), *map(str, paths), "--json", "--batch-size", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == whole


def test_prints_one_line_per_image_with_class_and_probability(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [save_image(tmp_path / f"{index}.png", seed=index) for index in range(3)]
    expected = run_json(capsys, exported.path, *paths)

    assert main([str(exported.path), *map(str, paths)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t") for line in lines] == [
        [str(p["path"]), str(p["label"]), f"{p['probability']:.4f}"] for p in expected
    ]


def test_folders_are_walked_recursively_skipping_hidden_and_other_files(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    wanted = [save_image(folder / "a.png"), save_image(folder / "deeper" / "b.JPG", "RGB")]
    save_image(folder / ".hidden.png")
    save_image(folder / ".cache" / "c.png")
    (folder / "notes.txt").write_text("not an image")

    predictions = run_json(capsys, exported.path, folder)

    assert [p["path"] for p in predictions] == [str(path) for path in wanted]


def bad_input(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "missing.png"
    if kind == "empty-folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    (tmp_path / "notes.png").write_text("text, named like an image")
    return tmp_path / "notes.png"


@pytest.mark.parametrize(
    ("kind", "says", "code"),
    [
        ("missing", "no such file or folder", 2),
        ("empty-folder", "folder holds no image files", 2),
        ("not-an-image", "not a readable image", 1),
    ],
)
def test_bad_input_exits_naming_the_path(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, says: str, code: int
) -> None:
    bad = bad_input(tmp_path, kind)

    assert main([str(exported.path), str(bad)]) == code

    error = capsys.readouterr().err
    assert f"{bad}: {says}" in error


def test_a_model_without_harness_metadata_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = onnx.helper.make_node("Identity", ["input"], ["logits"])
    value = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3])
    output = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph([node], "plain", [value], [output])
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), plain)
    image = save_image(tmp_path / "a.png")

    assert main([str(plain), str(image)]) == 2
    assert f"{plain}: ONNX metadata lacks harness.class_names" in capsys.readouterr().err

    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not a model")
    assert main([str(not_onnx), str(image)]) == 2
    assert f"{not_onnx}: not a loadable ONNX model" in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_runs_without_importing_torch(exported: Exported, tmp_path: Path) -> None:
    image = save_image(tmp_path / "a.png")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "harness.predict", str(exported.path), str(image)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{image}\t")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "onnxruntime" in imported
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}


def test_topk_lists_the_k_most_probable_classes_in_json_and_text(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [save_image(tmp_path / f"{index}.png", seed=index) for index in range(4)]
    with torch.no_grad():
        probabilities = torch.softmax(exported.model(training_inputs(paths)), dim=1)
    ranked = probabilities.argsort(dim=1, descending=True)[:, :2]

    predictions = run_json(capsys, exported.path, *paths, "--topk", "2")
    for prediction, order, row in zip(predictions, ranked.tolist(), probabilities, strict=True):
        top = prediction["top"]
        assert isinstance(top, list)
        assert [entry["label"] for entry in top] == [CLASSES[i] for i in order]
        np.testing.assert_allclose([entry["probability"] for entry in top], row[order].numpy(), atol=1e-5)
        assert prediction["label"] == top[0]["label"]

    assert main([str(exported.path), *map(str, paths), "--topk", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    for line, order in zip(lines, ranked.tolist(), strict=True):
        fields = line.split("\t")
        assert len(fields) == 5
        assert [fields[1], fields[3]] == [CLASSES[i] for i in order]
    # The default stays one class per image: path, label, probability.
    assert main([str(exported.path), str(paths[0])]) == 0
    assert len(capsys.readouterr().out.strip().split("\t")) == 3


@pytest.mark.parametrize("as_json", [False, True], ids=["lines", "json"])
def test_unreadable_images_among_good_ones_are_named_and_the_others_printed(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    good = [save_image(tmp_path / f"{index}.png", seed=index) for index in range(4)]
    expected = run_json(capsys, exported.path, *good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    text = tmp_path / "notes.jpg"
    text.write_text("text, named like an image")
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}

    # Two bad files among the good ones, one in the first batch and one in the last.
    argv = [str(exported.path), *map(str, [good[0], broken, *good[1:3], text, good[3]]), "--batch-size", "2"]
    assert main([*argv, "--json"] if as_json else argv) == 1

    captured = capsys.readouterr()
    if as_json:
        printed = json.loads(captured.out)
    else:
        printed = [
            dict(zip(("path", "label"), line.split("\t"), strict=False)) for line in captured.out.splitlines()
        ]
    assert [p["path"] for p in printed] == [str(path) for path in good]
    assert [p["label"] for p in printed] == [p["label"] for p in expected]
    errors = captured.err.splitlines()
    assert errors[0].startswith(f"error: {broken}: not a readable image (")
    assert errors[1].startswith(f"error: {text}: not a readable image (")
    assert errors[2] == "error: 2 image(s) could not be read; the others were classified"
    assert len(errors) == 3
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_an_exif_orientation_is_applied_as_in_training(exported: Exported, tmp_path: Path) -> None:
    """Prediction, training and the export's parity images (validation batches) read one way."""
    pixels = np.zeros((12, 24, 3), dtype=np.uint8)
    pixels[:, :12, 0] = 255
    pixels[:, 12:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: red on top, blue below
    path = tmp_path / "portrait.jpg"
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif)

    prepared = to_input(load_rgb(path), PREPROCESSING)
    trained = training_inputs([path])[0].numpy()
    grey_level = 1.0 / 255 / min(PREPROCESSING.std)
    np.testing.assert_allclose(prepared, trained, atol=grey_level * 1.01, rtol=0)
    red, blue = prepared[0], prepared[2]
    assert red[:4].mean() > blue[:4].mean() + 1 and blue[-4:].mean() > red[-4:].mean() + 1, "upright"
    with Image.open(path) as sideways:
        unrotated = to_input(sideways.convert("RGB"), PREPROCESSING)
    assert not np.allclose(prepared, unrotated, atol=0.5), "the orientation made a difference"


def test_a_fifo_named_like_an_image_is_named_unreadable_and_the_good_image_classified(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = save_image(tmp_path / "good.png")
    expected = run_json(capsys, exported.path, good)
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    before = good.read_bytes()

    assert main([str(exported.path), str(fifo), str(good)]) == 1

    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split("\t")[:2] == [str(good), expected[0]["label"]]
    assert captured.err.splitlines() == [
        f"error: {fifo}: not a readable image (OSError: not a regular file but a FIFO)",
        "error: 1 image(s) could not be read; the others were classified",
    ]
    assert good.read_bytes() == before

"""harness.evaluate: a checkpoint (through trainer.test) and its ONNX export score a folder alike.

One tiny run is trained once for the module on a tree with Train/, Val/ and Test/ folders
(split folders in any case; 16 px images, so neither path resizes and both see the same
pixels).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import attrs
import pytest
import torch
from PIL import Image

from harness.core.layout import RunLayout
from harness.core.preprocessing import Preprocessing
from harness.core.summary import RunSummary
from harness.core.testing import write_imagefolder
from harness.evaluate import evaluate, main
from harness.io.artifacts import write_label_map, write_text
from harness.io.report_page import render_report
from harness.settings import load_settings, settings_to_toml
from harness.training.cam import CAM_FILES
from harness.training.evaluation import load_checkpoint
from harness.training.fit import run
from harness.training.model import Classifier
from tests.conftest import SUBSCRIBER_NAMES

pytestmark = pytest.mark.slow

CLASSES = {"blue": 10, "green": 10, "red": 10}
ROOT = Path(__file__).resolve().parents[2]


@attrs.frozen(kw_only=True)
class Trained:
    run_dir: Path
    data: Path
    summary: RunSummary

    @property
    def onnx(self) -> Path:
        return RunLayout(self.run_dir).onnx_model

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / str(self.summary.best_checkpoint)

    @property
    def best_epoch(self) -> int:
        return int(re.match(r"epoch=(\d+)", self.checkpoint.name).group(1))  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    base = tmp_path_factory.mktemp("evaluate")
    data = base / "data"
    # Capitalised split folders: training, validation and the end-of-run test score find them alike.
    for seed, split in enumerate(("Train", "Val", "Test")):
        write_imagefolder(data / split, CLASSES, size=16, seed=seed)
    enabled = {"onnx_export", "confusion_matrix", "samples", "plots", "temperature"}
    settings = load_settings(
        None,
        [
            f"data.root={str(data)!r}",
            "data.image_size=16",
            "data.batch_size=8",
            # AdamW learns these colours within two epochs; one SGD epoch predicts a single class.
            "trainer.max_epochs=2",
            "model.optimizer='adamw'",
            "model.lr=0.003",
            "trainer.accelerator='cpu'",
            "trainer.devices=1",
            "trainer.num_sanity_val_steps=0",
            "trainer.progress_bar=false",
            "augment.hflip=0.5",  # colours keep their class in a mirror: test-time flips are allowed
            "subscribers.onnx_export.quantize=['int8']",
            f"run.output_dir={str(base / 'runs')!r}",
            *(f"subscribers.{n}.enabled={'true' if n in enabled else 'false'}" for n in SUBSCRIBER_NAMES),
        ],
    )
    result = run(settings)
    assert result.summary.status == "completed", result.summary.failures
    return Trained(run_dir=result.run_dir, data=data, summary=result.summary)


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def predicted_by_path(folder: Path) -> dict[str, str]:
    rows = read_rows(folder / "predictions.csv")
    header = rows[0]
    return {row[0]: row[header.index("predicted")] for row in rows[1:]}


def test_onnx_and_checkpoint_agree_image_for_image_and_with_the_validation_matrix(trained: Trained) -> None:
    by_checkpoint = evaluate(trained.checkpoint, trained.data, split="val", accelerator="cpu")
    by_onnx = evaluate(trained.onnx, trained.data, split="val")
    assert by_checkpoint.directory != by_onnx.directory
    predicted = predicted_by_path(by_onnx.directory)
    assert predicted_by_path(by_checkpoint.directory) == predicted
    assert len(predicted) == sum(CLASSES.values())
    assert len(set(predicted.values())) >= 2  # a model that learned something, not one constant answer
    # Both equal what validation counted at the epoch of the best checkpoint.
    validated = read_rows(trained.run_dir / "confusion_matrix" / f"epoch_{trained.best_epoch:03d}.csv")
    assert read_rows(by_checkpoint.directory / "confusion_matrix.csv") == validated
    assert read_rows(by_onnx.directory / "confusion_matrix.csv") == validated
    # trainer.test published the test stage: the confusion matrix subscriber drew it there too.
    assert read_rows(by_checkpoint.directory / "confusion_matrix" / "test.csv") == validated
    assert (by_checkpoint.directory / "samples" / "test.png").is_file()
    assert not (by_onnx.directory / "confusion_matrix").exists()
    metrics = json.loads((by_onnx.directory / "metrics.json").read_text())
    assert metrics["source"]["kind"] == "onnx"
    assert len(metrics["source"]["sha256"]) == 64
    assert metrics["data"]["split"] == "val"
    assert set(metrics["per_class"]) == set(CLASSES)
    for name in (
        "per_class.csv",
        "most_confused.csv",
        "top_losses.png",
        "reliability.png",
        "confusion_matrix.png",
    ):
        assert (by_onnx.directory / name).is_file(), name


def test_a_run_with_a_test_split_scores_it_at_the_end(trained: Trained) -> None:
    tested = trained.summary.test
    assert tested is not None and tested.source is not None and tested.directory is not None
    assert tested.source["kind"] == "onnx"
    assert tested.images == sum(CLASSES.values())
    folder = trained.run_dir / tested.directory
    assert {Path(path).parents[1] for path in predicted_by_path(folder)} == {trained.data / "Test"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["data"]["split"] == "test"
    assert metrics["top1"] == tested.top1
    summary = json.loads(RunLayout(trained.run_dir).summary.read_text())
    assert summary["test"] == trained.summary.to_json()["test"]
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("harness") / "summary.schema.json").read_text())
    jsonschema.validate(summary, schema)


def test_balanced_accuracy_is_logged_and_drawn_every_validation_epoch(trained: Trained) -> None:
    assert "val/acc_balanced" in trained.summary.final_metrics
    history = read_rows(trained.run_dir / "plots" / "history.csv")
    assert "val/acc_balanced" in history[0]
    per_class = read_rows(trained.run_dir / "confusion_matrix" / "per_class" / "epoch_000.csv")
    assert per_class[0] == ["class", "precision", "recall", "f1", "support"]
    assert [row[0] for row in per_class[1:]] == sorted(CLASSES)


def test_a_run_directory_means_its_best_checkpoint(trained: Trained, tmp_path: Path) -> None:
    evaluation = evaluate(trained.run_dir, trained.data, output=tmp_path / "out", accelerator="cpu")
    metrics = json.loads((evaluation.directory / "metrics.json").read_text())
    assert metrics["source"]["kind"] == "run"
    assert metrics["source"]["path"] == str(trained.checkpoint)
    assert metrics["data"]["split"] == "test"  # DATA's test/ folder, found without --split
    again = evaluate(trained.onnx, trained.data, output=tmp_path / "out")
    assert again.directory == tmp_path / "out-1"  # the first evaluation is not overwritten


def test_grad_cam_maps_of_the_best_checkpoint_land_in_the_folder_and_on_the_report(
    trained: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    before = set(RunLayout(trained.run_dir).evaluation("x").parent.glob("*"))
    assert main([str(trained.run_dir), str(trained.data), "--split", "val", "--accelerator", "cpu"]) == 0
    (folder,) = set(RunLayout(trained.run_dir).evaluation("x").parent.glob("*")) - before
    for name in CAM_FILES.values():
        with Image.open(folder / name) as picture:
            assert picture.width > 2 * 180  # an image beside its map, at least
    page = render_report(trained.run_dir)
    assert f"{folder.name}/{CAM_FILES['top_losses']}" in page

    # An ONNX model has no gradients: asked for maps, it says so in one line and draws none.
    with caplog.at_level(logging.WARNING, logger="harness"):
        by_onnx = evaluate(trained.onnx, trained.data, split="val", cam=4)
    assert not any((by_onnx.directory / name).exists() for name in CAM_FILES.values())
    assert [r.getMessage() for r in caplog.records if "Grad-CAM" in r.getMessage()] == [
        f"Grad-CAM skipped: it needs the gradients of a checkpoint; {trained.onnx} is not explained"
    ]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    return err


def test_bad_input_is_one_line_and_exit_code_2(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = write_imagefolder(tmp_path / "extra", {"red": 2, "zebra": 3}, size=16)
    err = one_line_error(capsys, [str(trained.onnx), str(extra)])
    assert "'zebra'" in err and "label map" in err
    empty = tmp_path / "empty"
    (empty / "red").mkdir(parents=True)
    assert "holds no image files" in one_line_error(capsys, [str(trained.onnx), str(empty)])
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    err = one_line_error(capsys, [str(stray), str(trained.data)])
    assert "expected a run directory, a .ckpt checkpoint or a model.onnx" in err
    assert "no such file" in one_line_error(capsys, [str(tmp_path / "missing.onnx"), str(trained.data)])


def test_unknown_classes_can_be_counted_instead(trained: Trained, tmp_path: Path) -> None:
    extra = write_imagefolder(tmp_path / "extra", {"red": 2, "zebra": 3}, size=16)
    out = tmp_path / "counted"
    assert main([str(trained.onnx), str(extra), "--unknown", "count", "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["left_out"] == {"zebra": 3}
    assert metrics["samples"] == 2
    assert metrics["per_class"]["red"]["support"] == 2


def test_a_subset_of_the_classes_averages_over_the_classes_present_and_names_the_absent(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subset = tmp_path / "subset"
    for name in ("blue", "red"):
        shutil.copytree(trained.data / "Test" / name, subset / name)
    before = {p: p.read_bytes() for p in (*subset.rglob("*.png"), trained.onnx)}
    out = tmp_path / "out"

    assert main([str(trained.onnx), str(subset), "--output", str(out)]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["absent_classes"] == ["green"]
    per_class = metrics["per_class"]
    for key in ("precision", "recall", "f1"):
        expected = (per_class["blue"][key] + per_class["red"][key]) / 2
        assert metrics["macro"][key] == pytest.approx(expected)
    printed = capsys.readouterr().out
    assert "absent from the data (left out of the macro averages): green" in printed
    assert {p: p.read_bytes() for p in before} == before


def test_the_onnx_path_never_imports_torch(trained: Trained, tmp_path: Path) -> None:
    code = (
        "import sys; from harness.evaluate import main; "
        f"code = main([{str(trained.onnx)!r}, {str(trained.data)!r}, '--output', {str(tmp_path / 'e')!r}]); "
        "print(code, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False"


def test_a_checkpoint_is_evaluated_with_its_runs_preprocessing(tmp_path: Path) -> None:
    settings = load_settings(None, ["data.image_size=16", "data.resize='crop'", "data.crop_fraction=0.5"])
    run_dir = tmp_path / "run"
    write_text(run_dir / "settings.toml", settings_to_toml(settings))
    write_label_map(run_dir, list(CLASSES))
    model = Classifier(arch="resnet18", num_classes=len(CLASSES))
    checkpoint = run_dir / "checkpoints" / "epoch=000.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, checkpoint)

    loaded = load_checkpoint(checkpoint)

    assert loaded.preprocessing == Preprocessing(image_size=16, resize="crop", crop_fraction=0.5)


def test_the_temperature_goes_from_validation_through_checkpoint_and_onnx_to_evaluation(
    trained: Trained,
) -> None:
    from harness.core.temperature import Temperature
    from harness.onnx.session import OnnxModel

    stored = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)["harness_temperature"]
    fitted = Temperature.from_json(stored)
    assert fitted.epoch == trained.best_epoch
    assert fitted.nll_after <= fitted.nll_before  # never worse on the validation logits it was fitted on
    assert OnnxModel(trained.onnx).card.temperature == fitted
    assert load_checkpoint(trained.checkpoint).temperature == fitted
    assert trained.summary.temperature == fitted.to_json()

    by_onnx = evaluate(trained.onnx, trained.data, split="val")
    calibration = by_onnx.summary["calibration"]
    assert calibration["temperature"] == fitted.to_json()
    assert calibration["ece_after"] == by_onnx.summary["ece"]
    assert calibration["nll_after"] == pytest.approx(fitted.nll_after, rel=1e-4)  # the same val images
    assert calibration["nll_before"] == pytest.approx(fitted.nll_before, rel=1e-4)
    assert (by_onnx.directory / "reliability_uncalibrated.png").is_file()


def test_the_int8_gate_figures_are_in_parity_and_summary(trained: Trained) -> None:
    kinds = trained.summary.quantization
    assert isinstance(kinds, dict) and list(kinds) == ["int8"]
    gate = kinds["int8"]
    parity = json.loads((trained.onnx.parent / "parity.json").read_text())
    assert parity["quantization"] == kinds
    int8 = trained.onnx.parent / "model.int8.onnx"
    assert int8.is_file() == gate["accepted"]
    assert gate["validation_images"] == sum(CLASSES.values())
    if gate["accepted"]:  # evaluate runs the int8 model like the float one
        assert evaluate(int8, trained.data, split="val").summary["source"]["kind"] == "onnx"


def test_flips_report_their_gain_and_are_refused_for_a_model_trained_without(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    from harness.predict import main as predict

    flipped = evaluate(trained.checkpoint, trained.data, split="val", tta="flip", accelerator="cpu")
    gain = flipped.summary["tta"]
    assert gain["kind"] == "flip" and gain["top1_with"] == flipped.summary["top1"]
    plain = evaluate(trained.checkpoint, trained.data, split="val", accelerator="cpu")
    assert gain["top1_without"] == plain.summary["top1"]
    assert gain["gain_points"] == pytest.approx(100 * (gain["top1_with"] - gain["top1_without"]))

    # The same model, marked as trained where a mirror may change the class: refused, nothing written.
    model = onnx.load(str(trained.onnx))
    for prop in model.metadata_props:
        if prop.key == "harness.flips_change_class":
            prop.value = "true"
    symbols = tmp_path / "symbols.onnx"
    onnx.save(model, str(symbols))
    out = tmp_path / "out"
    err = one_line_error(
        capsys, [str(symbols), str(trained.data), "--split", "val", "--tta", "flip", "--output", str(out)]
    )
    assert "--tta flip refused" in err and "[augment].hflip = 0" in err
    assert not out.exists()
    assert predict([str(symbols), str(trained.data / "Val"), "--tta", "flip"]) == 2
    assert "--tta flip refused" in capsys.readouterr().err
    assert predict([str(trained.onnx), str(trained.data / "Val"), "--tta", "flip"]) == 0


def test_export_quantize_exits_by_the_gates_verdict(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.export import main as export

    out = tmp_path / "exported"
    code = export([str(trained.checkpoint), "--quantize", "int8", "--output", str(out)])
    gate = json.loads((out / "parity.json").read_text())["quantization"]["int8"]
    captured = capsys.readouterr()
    assert (out / "model.onnx").is_file()  # the float model stands either way
    assert (out / "model.int8.onnx").is_file() == gate["accepted"] == (code == 0)
    if code:
        assert code == 1 and captured.err.strip() == f"error: {gate['verdict']}"
    else:
        assert gate["verdict"] in captured.out

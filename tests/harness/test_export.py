"""harness.export: a checkpoint of a run exported on its own, as the subscriber would have."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from harness.core.layout import RunLayout
from harness.export import main
from harness.io.artifacts import write_label_map, write_text
from harness.settings import Settings, load_settings, settings_to_toml
from harness.training.fit import run
from harness.training.model import Classifier


def fake_run(tmp_path: Path, *, labels: int | None = 3, settings: bool = True, hparams: bool = True) -> Path:
    """A run directory holding what harness.run leaves, with a checkpoint of an untrained model."""
    run_dir = tmp_path / "run"
    if settings:
        write_text(run_dir / "settings.toml", settings_to_toml(load_settings(None, ["data.image_size=16"])))
    if labels is not None:
        write_label_map(run_dir, [f"class_{i}" for i in range(labels)])
    checkpoint = run_dir / "checkpoints" / "epoch=000.ckpt"
    checkpoint.parent.mkdir(parents=True)
    raw: dict[str, object] = {"state_dict": {"w": torch.zeros(1)}, "epoch": 0}
    if hparams:
        raw["hyper_parameters"] = {"arch": "resnet18", "num_classes": 3}
    torch.save(raw, checkpoint)
    return checkpoint


def test_the_run_directory_is_above_checkpoints(tmp_path: Path) -> None:
    assert (
        RunLayout.of_checkpoint(tmp_path / "run" / "checkpoints" / "a.ckpt").run_dir
        == (tmp_path / "run").resolve()
    )
    assert (
        RunLayout.of_checkpoint(tmp_path / "elsewhere" / "a.ckpt").run_dir
        == (tmp_path / "elsewhere").resolve()
    )


def test_a_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "none.ckpt")]) == 2
    assert f"{tmp_path / 'none.ckpt'}: no such checkpoint file" in capsys.readouterr().err


def test_a_file_that_is_not_a_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = fake_run(tmp_path)
    checkpoint.write_text("not a checkpoint")

    assert main([str(checkpoint)]) == 2

    assert f"{checkpoint}: cannot load the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ({"settings": False}, "settings.toml: not found"),
        ({"labels": None}, "labels.json: not found"),
        ({"hparams": False}, "no 'arch' and 'num_classes' hyper-parameters"),
        ({"labels": 4}, "the model has 3 classes but"),
    ],
    ids=["no-settings", "no-labels", "no-hparams", "wrong-labels"],
)
def test_an_incomplete_run_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: dict[str, Any], says: str
) -> None:
    checkpoint = fake_run(tmp_path, **broken)

    assert main([str(checkpoint)]) == 2

    assert says in capsys.readouterr().err
    assert not (tmp_path / "run" / "onnx_export").exists()


def test_an_opset_below_the_exporters_minimum_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([str(fake_run(tmp_path)), "--opset", "17"])
    assert stopped.value.code == 2
    assert "--opset must be at least 18" in capsys.readouterr().err


def onnx_logits(path: Path, images: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": images.numpy()})[0]


@pytest.mark.slow
def test_exports_a_checkpoint_of_a_real_run_with_images_from_its_data_set(
    make_settings: Callable[..., Settings], tiny_imagefolder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings("model.optimizer='adamw'", "model.lr=0.001")
    result = run(settings)
    checkpoint = result.run_dir / result.summary.best_checkpoint
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = Classifier(arch="resnet18", num_classes=3)
    model.load_state_dict(saved["state_dict"])
    capsys.readouterr()

    assert main([str(checkpoint)]) == 0

    printed = capsys.readouterr().out
    folder = result.run_dir / "onnx_export"
    assert "parity images: 8 images from the data set" in printed
    assert f"model: {folder / 'model.onnx'}" in printed
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    np.testing.assert_allclose(onnx_logits(folder / "model.onnx", images), expected, atol=1e-4, rtol=0)
    parity = json.loads((folder / "parity.json").read_text())
    assert (parity["passed"], parity["real_images"], parity["source"]["checkpoint"]) == (
        True,
        8,
        str(checkpoint),
    )
    assert json.loads((folder / "labels.json").read_text())["classes"] == ["blue", "green", "red"]

    # without its data set the export still runs, on random images, and says so
    tiny_imagefolder.rename(tiny_imagefolder.with_name("moved"))
    assert main([str(checkpoint), "--output", str(result.run_dir / "again")]) == 0
    assert "parity images: random images, because the data set is unavailable" in capsys.readouterr().out
    parity = json.loads((result.run_dir / "again" / "parity.json").read_text())
    assert (parity["real_images"], parity["random_images"]) == (0, 2)


def test_parity_refuses_non_finite_logits(tmp_path: Path) -> None:
    import torch as _torch

    from harness.core.errors import ExportError
    from harness.core.preprocessing import Preprocessing
    from harness.core.testing import tiny_model
    from harness.onnx.bundle import export_bundle
    from harness.onnx.card import ExportSource

    model = tiny_model(seed=0).eval()
    with _torch.no_grad():
        model[-1].weight.fill_(float("nan"))
    with pytest.raises(ExportError, match="not finite"):
        export_bundle(
            model, None, class_names=("a", "b", "c"), preprocessing=Preprocessing(image_size=16),
            source=ExportSource(checkpoint=None), images=None, directory=tmp_path,
        )  # fmt: skip
    assert not (tmp_path / "model.onnx").exists()

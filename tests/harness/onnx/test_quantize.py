"""The int8 gate: a quantization that loses accuracy is refused, a sound one kept and run like float."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import onnx
import pytest
import torch

from harness.core.preprocessing import Preprocessing
from harness.core.temperature import Temperature
from harness.core.testing import tiny_model, write_imagefolder
from harness.io.images import find_images
from harness.onnx.bundle import export_bundle
from harness.onnx.card import ExportSource
from harness.onnx.quantize import (
    QUANTIZED_FILES,
    Quantization,
    Scores,
    load_images,
    quantize_model,
    quantize_run_model,
    read_deployment,
)
from harness.predict import Predictor

CLASSES = ("red", "green", "blue")
PREPROCESSING = Preprocessing(image_size=16)

pytestmark = pytest.mark.slow  # an export and two quantizations: seconds


@attrs.frozen(kw_only=True)
class Trained:
    model: Path
    samples: list[tuple[str, int]]
    images: np.ndarray
    targets: np.ndarray


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A tiny convolutional net that tells the three colours apart, exported to ONNX."""
    root = write_imagefolder(tmp_path_factory.mktemp("data"), {name: 16 for name in CLASSES}, size=16)
    paths = find_images([root])
    targets = np.array([CLASSES.index(path.parent.name) for path in paths])
    images = load_images(paths, PREPROCESSING)
    x, y = torch.from_numpy(images), torch.from_numpy(targets)
    model = tiny_model(seed=0)
    optimizer = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() == 1.0
    result = export_bundle(
        model,
        None,
        class_names=CLASSES,
        preprocessing=PREPROCESSING,
        source=ExportSource(checkpoint=None),
        images=x[:8],
        directory=tmp_path_factory.mktemp("export"),
        temperature=Temperature(value=1.5, nll_before=0.5, nll_after=0.4, images=48),
    )
    samples = [(str(path), int(target)) for path, target in zip(paths, targets, strict=True)]
    return Trained(model=result.model, samples=samples, images=images, targets=targets)


def test_a_model_calibrated_on_one_constant_image_is_refused_and_leaves_no_file(trained: Trained) -> None:
    constant = np.full((1, 3, 16, 16), 0.5, dtype=np.float32)
    record = quantize_model(
        trained.model,
        calibration=constant,
        validation=trained.images,
        targets=trained.targets,
        class_names=CLASSES,
    )
    assert not record.accepted and record.path is None
    assert not (trained.model.parent / QUANTIZED_FILES["int8"]).exists()
    assert trained.model.is_file()
    assert record.top1_drop > 1.0
    verdict = record.describe()
    assert "int8 model refused" in verdict and "the float model is kept" in verdict and "\n" not in verdict
    lost = [CLASSES[i] for i, drop in enumerate(record.class_drops) if drop > record.max_class_drop]
    assert lost and all(f"'{name}'" in verdict for name in lost)


def test_a_model_calibrated_on_training_images_is_kept_with_its_figures(trained: Trained) -> None:
    (record,) = quantize_run_model(
        trained.model,
        train=trained.samples,
        val=trained.samples,
        preprocessing=PREPROCESSING,
        class_names=CLASSES,
        calibration_images=24,
        seed=3,
    )
    assert record.accepted, record.describe()
    int8 = trained.model.parent / QUANTIZED_FILES["int8"]
    assert record.path == str(int8) and int8.is_file()
    assert record.calibration_images == 24 and record.validation_images == len(trained.samples)
    assert [t.batch for t in record.latency] == [1, 32]
    kept = read_deployment(trained.model.parent / "parity.json")
    assert kept["quantization"] is not None and kept["quantization"]["int8"]["accepted"] is True
    assert kept["quantization"]["int8"]["bytes"]["int8"] == int8.stat().st_size
    assert kept["temperature"]["value"] == 1.5
    assert json.loads((trained.model.parent / "parity.json").read_text())["passed"] is True

    # predict runs the int8 model like the float one: same card (classes, temperature), same answers.
    paths = [Path(path) for path, _ in trained.samples]
    as_float = list(Predictor(trained.model).predict(paths))
    as_int8 = list(Predictor(int8).predict(paths))
    assert Predictor(int8).card == Predictor(trained.model).card
    assert [p.label for p in as_int8] == [p.label for p in as_float]  # type: ignore[union-attr]


def test_a_per_class_loss_refuses_even_when_top1_holds() -> None:
    record = Quantization(
        kind="int8",
        class_names=("a", "b"),
        float_scores=Scores(top1=0.9, balanced_accuracy=0.9, recall=(0.9, 0.9)),
        quantized_scores=Scores(top1=0.9, balanced_accuracy=0.9, recall=(0.98, 0.82)),
        max_drop=1.0,
        max_class_drop=5.0,
        float_bytes=4,
        quantized_bytes=1,
        latency=(),
        calibration_images=1,
        calibration_seed=0,
        validation_images=100,
    )
    assert not record.accepted
    assert "'b' 90.0% -> 82.0%" in record.describe() and "'a'" not in record.describe().split("recall")[1]
    assert attrs.evolve(record, max_class_drop=10.0).accepted


def test_fp16_is_converted_gated_and_run_like_the_float_model(trained: Trained) -> None:
    pytest.importorskip("onnxconverter_common", reason="the fp16 extra converts to float16")
    record = quantize_model(
        trained.model,
        "fp16",
        calibration=np.zeros((0, 3, 16, 16), np.float32),
        validation=trained.images,
        targets=trained.targets,
        class_names=CLASSES,
    )
    half = trained.model.parent / QUANTIZED_FILES["fp16"]
    assert record.accepted and record.path == str(half), record.describe()
    assert record.calibration_images == 0
    weights = onnx.load(str(half)).graph.initializer
    assert {w.data_type for w in weights if len(w.dims) > 1} == {onnx.TensorProto.FLOAT16}
    assert Predictor(half).card == Predictor(trained.model).card
    paths = [Path(path) for path, _ in trained.samples]
    as_half = [p.label for p in Predictor(half).predict(paths)]  # type: ignore[union-attr]
    assert as_half == [CLASSES[t] for t in trained.targets]

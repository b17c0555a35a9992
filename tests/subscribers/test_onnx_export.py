"""OnnxExport: the best validated weights, exported once, parity-checked, with what a user needs beside.

Dynamo exports take seconds each, so the happy path is exported once (module-scoped) and
its file is inspected by several tests; the failure paths export once each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.errors import ExportError, SubscriberError
from harness.core.events import TrainEnd, TrainLoopEnd
from harness.core.preprocessing import Preprocessing
from harness.core.testing import make_context, scripted_run, tiny_model, write_imagefolder
from harness.onnx.card import KEY_CLASSES, KEY_PREPROCESSING, KEY_SOURCE
from harness.predict import main as predict_main
from harness.settings import Settings
from harness.training.data import ImageFiles, scan
from harness.training.fit import run
from harness.training.model import Classifier
from subscribers.onnx_export import OnnxExport, OnnxExportSettings

CLASSES = ("cat", "dog", "eel")


def logits_of(model_path: Path, images: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": images.numpy()})[0]


def eager(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(images).numpy()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(path: Path, model: nn.Module, epoch: int = 1) -> Path:
    torch.save({"state_dict": model.state_dict(), "epoch": epoch, "global_step": 6}, path)
    return path


@attrs.frozen(kw_only=True)
class Exported:
    context: RunContext
    model_path: Path
    checkpoint: Path
    checkpoint_digest: str
    best: nn.Module
    in_memory: nn.Module
    memory_before: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """A scripted run whose best checkpoint holds other weights than the model in memory."""
    tmp_path = tmp_path_factory.mktemp("onnx")
    # eval() so that the scripted run's forwards leave BatchNorm statistics alone.
    in_memory = tiny_model(seed=0).eval()
    best = tiny_model(seed=1)
    context = make_context(tmp_path, class_names=CLASSES, model=in_memory)
    checkpoint = save_checkpoint(tmp_path / "best.ckpt", best)
    before = digest(checkpoint)
    context.best_checkpoint, context.best_score = checkpoint, 0.75
    memory_before = {k: v.clone() for k, v in in_memory.state_dict().items()}
    bus = Bus()
    bus.attach(OnnxExport(context, OnnxExportSettings(parity_batch=5, opset=20)))
    scripted_run(bus, context, epochs=1, val_batches=2, batch_size=4)
    yield Exported(
        context=context,
        model_path=context.run_dir / "onnx_export" / "model.onnx",
        checkpoint=checkpoint,
        checkpoint_digest=before,
        best=best,
        in_memory=in_memory,
        memory_before=memory_before,
    )


def test_exports_the_best_checkpoint_not_the_weights_in_memory(exported: Exported) -> None:
    images = torch.randn(6, 3, 16, 16)
    got = logits_of(exported.model_path, images)
    np.testing.assert_allclose(got, eager(exported.best, images), atol=1e-4, rtol=0)
    assert np.abs(got - eager(exported.in_memory, images)).max() > 1e-2


def test_leaves_the_checkpoint_and_the_model_in_memory_as_they_were(exported: Exported) -> None:
    assert digest(exported.checkpoint) == exported.checkpoint_digest
    for key, value in exported.in_memory.state_dict().items():
        assert torch.equal(value, exported.memory_before[key]), key


def test_model_file_is_valid_and_takes_any_batch_size(exported: Exported) -> None:
    proto = onnx.load(str(exported.model_path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert {o.domain: o.version for o in proto.opset_import}[""] == 20
    assert not list(exported.model_path.parent.glob("*.data")), "weights must live inside model.onnx"
    for batch in (1, 3, 17):
        assert logits_of(exported.model_path, torch.randn(batch, 3, 16, 16)).shape == (batch, 3)


def test_metadata_names_classes_preprocessing_and_source(exported: Exported) -> None:
    props = {p.key: p.value for p in onnx.load(str(exported.model_path)).metadata_props}
    assert json.loads(props[KEY_CLASSES]) == list(CLASSES)
    assert json.loads(props[KEY_PREPROCESSING]) == {
        "image_size": 16,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "channel_order": "RGB",
        "layout": "NCHW",
        "resize": "squash",
        "crop_fraction": 1.0,
    }
    source = json.loads(props[KEY_SOURCE])
    assert source["checkpoint"] == str(exported.checkpoint)
    assert (source["epoch"], source["score"], source["monitor"]) == (1, 0.75, "val/acc_top1")


def test_writes_labels_preprocessing_and_parity_beside_the_model(exported: Exported) -> None:
    folder = exported.model_path.parent
    labels = json.loads((folder / "labels.json").read_text())
    assert labels["classes"] == list(CLASSES)
    assert json.loads((folder / "preprocessing.json").read_text())["image_size"] == 16
    parity = json.loads((folder / "parity.json").read_text())
    assert parity["passed"] is True
    assert parity["max_abs_diff"] <= 1e-4
    assert parity["argmax_agreement"] == 1.0
    assert (parity["real_images"], parity["random_images"]) == (5, 0)
    assert (parity["batch_sizes"], parity["single_images"]) == ([1, 5], 2)
    assert exported.context.artifacts == {
        "onnx_model": "onnx_export/model.onnx",
        "onnx_parity": "onnx_export/parity.json",
        "onnx_labels": "onnx_export/labels.json",
        "onnx_preprocessing": "onnx_export/preprocessing.json",
    }
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_without_a_checkpoint_exports_the_model_as_training_left_it(tmp_path: Path) -> None:
    trained = tiny_model(seed=2)
    context = make_context(tmp_path, model=trained)
    bus = Bus()
    bus.attach(OnnxExport(context))
    bus.publish(TrainLoopEnd(epoch=0, global_step=3))
    bus.publish(TrainEnd(epoch=0, global_step=3, metrics={}))

    images = torch.randn(4, 3, 16, 16)
    model_path = context.run_dir / "onnx_export" / "model.onnx"
    np.testing.assert_allclose(logits_of(model_path, images), eager(trained, images), atol=1e-4, rtol=0)
    parity = json.loads((model_path.parent / "parity.json").read_text())
    assert (parity["real_images"], parity["random_images"]) == (0, 2)
    assert parity["source"]["checkpoint"] is None


class ExportsDifferently(nn.Module):
    """A model that takes another branch under export, as code guarded by `is_exporting` can."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(inputs)
        if torch.compiler.is_exporting():
            logits = logits + 1e-3
        return logits


def test_parity_failure_raises_and_leaves_no_model_file(tmp_path: Path) -> None:
    model = ExportsDifferently()
    context = make_context(tmp_path, model=model)
    checkpoint = save_checkpoint(tmp_path / "best.ckpt", model)
    before = digest(checkpoint)
    context.best_checkpoint = checkpoint
    stale = context.run_dir / "onnx_export" / "model.onnx"
    stale.parent.mkdir()
    stale.write_bytes(b"an export from an earlier attempt")
    bus = Bus()
    bus.attach(OnnxExport(context))

    with pytest.raises(SubscriberError) as caught:
        scripted_run(bus, context, epochs=1)

    error = caught.value.__cause__
    assert isinstance(error, ExportError)
    assert "parity check failed" in str(error)
    assert "max |logit difference| 0.001" in str(error)
    assert str(checkpoint) in str(error)
    assert not stale.exists()
    assert not [p.name for p in stale.parent.iterdir() if p.suffix in (".onnx", ".tmp")]
    assert json.loads((stale.parent / "parity.json").read_text())["passed"] is False
    assert context.artifacts["onnx_parity"] == "onnx_export/parity.json"
    assert "onnx_model" not in context.artifacts
    assert digest(checkpoint) == before


class Unsupported(nn.Module):
    """`cummax` has no ONNX translation in torch 2.14's exporter."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cummax(self.net(inputs), dim=1).values


def test_unsupported_operator_names_the_cause_and_the_checkpoint_to_export_later(tmp_path: Path) -> None:
    model = Unsupported()
    context = make_context(tmp_path, model=model)
    context.best_checkpoint = save_checkpoint(tmp_path / "best.ckpt", model)
    stale = context.run_dir / "onnx_export" / "parity.json"
    stale.parent.mkdir()
    stale.write_text('{"passed": true}')
    bus = Bus()
    bus.attach(OnnxExport(context))

    with pytest.raises(SubscriberError) as caught:
        bus.publish(TrainEnd(epoch=0, global_step=3, metrics={}))

    message = str(caught.value.__cause__)
    assert "aten.cummax" in message
    assert f"python -m harness.export {context.best_checkpoint}" in message
    assert list(stale.parent.iterdir()) == [], "nothing from an earlier export may pass for this one"
    assert context.artifacts == {}


def test_a_checkpoint_that_does_not_fit_is_reported_by_path(tmp_path: Path) -> None:
    context = make_context(tmp_path, model=tiny_model())
    context.best_checkpoint = tmp_path / "other.ckpt"
    torch.save({"state_dict": tiny_model(num_classes=5).state_dict()}, context.best_checkpoint)
    bus = Bus()
    bus.attach(OnnxExport(context))

    with pytest.raises(SubscriberError, match=r"other\.ckpt"):
        bus.publish(TrainEnd(epoch=0, global_step=3, metrics={}))


def test_only_rank_zero_exports(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    context.rank = 1
    bus = Bus(rank=1)
    bus.attach(OnnxExport(context))

    scripted_run(bus, context, epochs=1)

    assert not (context.run_dir / "onnx_export").exists()
    assert context.artifacts == {}


@pytest.mark.slow
@pytest.mark.parametrize("resize", ["squash", "crop"])
def test_a_real_run_with_ema_exports_the_validated_weights_of_the_best_checkpoint(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str], tmp_path: Path, resize: str
) -> None:
    # AdamW at a small rate keeps this tiny ResNet's logits near 1, where 1e-4 is a tight bound
    # (the default SGD rate drives them to 1e5 on 36 images); 12 px is the files' own size (their
    # width, for the crop), so harness.predict and the training pipeline see the same pixels.
    # The crop's images are 12 x 20 and it keeps their middle 12 x 12: a squash would see others.
    tall = {"red": 12, "green": 12, "blue": 12}
    root = write_imagefolder(tmp_path / "tall", tall, height=20) if resize == "crop" else None
    settings = make_settings(
        "ema",
        "onnx_export",
        "trainer.max_epochs=2",
        "model.optimizer='adamw'",
        "model.lr=0.001",
        "data.image_size=12",
        f"data.resize={resize!r}",
        "data.crop_fraction=1.0",
        "subscribers.ema.horizon=0",
        root=root,
    )
    result = run(settings)

    model_path = result.run_dir / result.summary.artifacts["onnx_model"]
    best = result.run_dir / result.summary.best_checkpoint
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    validated = Classifier.from_settings(settings.model, num_classes=3)
    validated.load_state_dict(checkpoint["state_dict"])
    # The EMA kept the better of its average and the training weights; the other set is in its
    # state, which only the whole last.ckpt carries (top-k files are the validated weights alone).
    last = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema = last["harness"]["ema"]
    other = ema["training"] if ema["kept"] == "average" else ema["average"]
    raw = Classifier.from_settings(settings.model, num_classes=3)
    raw.load_state_dict(other if last["epoch"] == checkpoint["epoch"] else last["state_dict"])
    info, _ = scan(settings.data, settings.run.seed)
    spec = Preprocessing(image_size=12, resize=resize, crop_fraction=1.0)
    card = json.loads((model_path.parent / "preprocessing.json").read_text())
    assert (card["resize"], card["crop_fraction"]) == (resize, 1.0)
    val = ImageFiles(info.val, spec)
    images = torch.stack([val[i][0] for i in range(len(val))])

    got = logits_of(model_path, images)
    np.testing.assert_allclose(got, eager(validated, images), atol=1e-4, rtol=0)
    assert np.abs(got - eager(raw, images)).max() > 1e-3, "the weights not kept must not pass"
    parity = json.loads((result.run_dir / result.summary.artifacts["onnx_parity"]).read_text())
    assert parity["passed"] and parity["source"]["checkpoint"] == str(best)

    # harness.predict on the validation files agrees with the validated model
    capsys.readouterr()  # the run's own lines (recipe, device)
    assert predict_main([str(model_path), *(str(path) for path, _ in info.val), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    expected = torch.softmax(torch.from_numpy(eager(validated, images)), dim=1)
    assert [p["path"] for p in predicted] == [str(path) for path, _ in info.val]
    assert [p["index"] for p in predicted] == expected.argmax(1).tolist()
    np.testing.assert_allclose([p["probability"] for p in predicted], expected.max(1).values, atol=1e-4)
    if resize == "crop":
        squashed = ImageFiles(info.val, attrs.evolve(spec, resize="squash"))
        others = torch.stack([squashed[i][0] for i in range(len(squashed))])
        elsewise = torch.softmax(torch.from_numpy(eager(validated, others)), dim=1)
        assert (elsewise - expected).abs().max() > 1e-3, "a squash of these images should predict otherwise"

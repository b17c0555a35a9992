"""`[data].decode = "gpu"`: the setting, its refusal on a CPU run, and the decode path on CPU tensors."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from harness.core.errors import SettingsError
from harness.core.testing import write_imagefolder
from harness.run import main
from harness.settings import Settings, load_settings
from harness.training.acceleration import check_decode
from harness.training.augment import eval_transform
from harness.training.data import ImageDataModule, ImageFiles, scan
from harness.training.fit import training_data
from harness.training.gpu_decode import EncodedFiles, collate_encoded, decode_batch, is_jpeg
from harness.training.model import Classifier

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture
def mixed_tree(tmp_path: Path) -> Path:
    """Two classes of RGB PNGs, half of them re-saved as JPEGs (one grey), of two sizes."""
    root = write_imagefolder(tmp_path / "data", {"a": 4, "b": 4}, size=20, height=14)
    for n, png in enumerate(sorted(root.rglob("*.png"))):
        if n % 2:
            image = Image.open(png)
            (image.convert("L") if n == 1 else image).save(png.with_suffix(".jpg"), quality=95)
            png.unlink()
    return root


def _settings(root: Path, *items: str) -> Settings:
    fast = [f"data.root={str(root)!r}", "data.image_size=16", "data.batch_size=8"]
    return load_settings(None, [*fast, *items])


def test_decode_is_cpu_or_gpu() -> None:
    assert load_settings(None, []).data.decode == "cpu"
    with pytest.raises(SettingsError, match=r"\[data\]\.decode"):
        load_settings(None, ["data.decode='tpu'"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_gpu_decode_on_a_cpu_run_is_one_line_naming_the_setting_and_nothing_made(
    tmp_path: Path, mixed_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SettingsError, match=r'^\[data\]\.decode = "gpu" needs a CUDA device'):
        check_decode("gpu", "auto")
    check_decode("cpu", "cpu")
    output = tmp_path / "runs"
    argv = ["--set", f"data.root={str(mixed_tree)!r}", "--set", "data.decode='gpu'"]
    assert main([*argv, "--set", f"run.output_dir={str(output)!r}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '[data].decode = "gpu"' in err[0]
    assert not output.exists()


def test_a_batch_decoded_by_torchvision_matches_the_pil_path(mixed_tree: Path) -> None:
    settings = _settings(mixed_tree)
    info, _ = scan(settings.data, seed=0)
    preprocessing = settings.data.preprocessing()
    samples = [*info.train, *info.val]
    data, targets = collate_encoded([EncodedFiles(samples)[i] for i in range(len(samples))])
    assert sum(is_jpeg(item) for item in data) == 4
    decoded = decode_batch(data, eval_transform(preprocessing), "cpu")
    reference = ImageFiles(samples, preprocessing)
    expected = torch.stack([reference[i][0] for i in range(len(samples))])
    assert decoded.shape == expected.shape == (8, 3, 16, 16)
    assert targets.tolist() == [target for _, target in samples]
    # the same pixels but for the JPEG decoders' rounding (libjpeg-turbo in both)
    assert (decoded - expected).abs().max() < 0.05


def test_the_data_module_decodes_in_its_before_transfer_hook(mixed_tree: Path) -> None:
    settings = _settings(mixed_tree, "data.decode='gpu'", "data.num_workers=0")
    info, _ = scan(settings.data, seed=0)
    module = ImageDataModule(info, settings.data.preprocessing(), settings.data)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    module.trainer = trainer
    trainer.validating = True
    batch = next(iter(module.val_dataloader()))
    assert isinstance(batch[0], list) and batch[0][0].dtype == torch.uint8
    inputs, targets = module.on_before_batch_transfer(batch, 0)
    expected = torch.stack([module.val_set[i][0] for i in range(len(targets))])
    assert inputs.shape == expected.shape and (inputs - expected).abs().max() < 0.05


@pytest.mark.slow
def test_a_real_fit_trains_and_validates_on_batches_decoded_by_the_hook(mixed_tree: Path) -> None:
    # the hook decodes on the trainer's device: the CPU here, so the fit runs without CUDA
    settings = _settings(mixed_tree, "data.decode='gpu'", "data.num_workers=0", "model.arch='resnet18'")
    info, classes = scan(settings.data, seed=0)
    data = training_data(settings, info, len(classes))
    module = Classifier.from_settings(
        settings.model,
        num_classes=len(classes),
        image_size=settings.data.image_size,
        class_names=classes,
        preprocessing=data.preprocessing,
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data.datamodule)
    assert trainer.global_step == 1 and "val/acc_top1" in trainer.callback_metrics

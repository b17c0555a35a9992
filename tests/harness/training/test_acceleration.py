"""Precision, channels-last and torch.compile: resolved as documented, and runs that use them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, vit_b_16

from harness.settings import ModelSettings, Settings, TrainerSettings
from harness.training.acceleration import resolve_acceleration, resolve_precision
from harness.training.fit import run

MakeSettings = Callable[..., Settings]


@pytest.mark.parametrize(
    ("requested", "gpu", "bf16", "expected"),
    [
        ("auto", True, True, "bf16-mixed"),
        ("auto", True, False, "16-mixed"),
        ("auto", False, False, "32-true"),
        ("auto", False, True, "32-true"),
        ("16-mixed", False, False, "16-mixed"),
        ("32-true", True, True, "32-true"),
    ],
)
def test_precision_auto_is_bf16_on_a_recent_gpu_16_on_an_older_one_32_on_the_cpu(
    requested: str, gpu: bool, bf16: bool, expected: str
) -> None:
    assert resolve_precision(requested, gpu=gpu, bf16=bf16) == expected


def test_the_default_precision_is_auto_and_the_cpu_gets_32_true() -> None:
    assert TrainerSettings().precision == "auto"
    chosen = resolve_acceleration(
        TrainerSettings(accelerator="cpu"), ModelSettings(), resnet18(num_classes=3)
    )
    assert (chosen.device, chosen.precision, chosen.channels_last, chosen.compile) == (
        "cpu",
        "32-true",
        False,
        False,
    )


def test_channels_last_auto_is_on_for_a_convolutional_net_on_a_gpu_only() -> None:
    trainer, model = TrainerSettings(), ModelSettings()
    conv = resnet18(num_classes=3)
    on_gpu = resolve_acceleration(trainer, model, conv, gpu=True, bf16=True)
    assert (on_gpu.device, on_gpu.precision, on_gpu.channels_last) == ("cuda", "bf16-mixed", True)
    assert not resolve_acceleration(trainer, model, conv, gpu=False).channels_last
    # a vision transformer has one convolution, its patch embedding: not a convolutional net
    vit = vit_b_16(num_classes=3, image_size=32)
    assert not resolve_acceleration(trainer, model, vit, gpu=True, bf16=True).channels_last
    forced = ModelSettings(channels_last=True, compile=True)
    assert resolve_acceleration(trainer, forced, vit, gpu=False).channels_last
    assert resolve_acceleration(trainer, forced, vit, gpu=False).compile


def _parity(run_dir: Path) -> dict[str, object]:
    parity: dict[str, object] = json.loads((run_dir / "onnx_export" / "parity.json").read_text())
    return parity


@pytest.mark.slow
@pytest.mark.parametrize("option", ["model.channels_last=true", "model.compile=true"])
def test_a_channels_last_or_compiled_run_trains_resumes_and_exports_with_parity(
    make_settings: MakeSettings, option: str, tmp_path: Path
) -> None:
    settings = make_settings("ema", "onnx_export", option, "trainer.limit_train_batches=2")
    first = run(settings)
    assert first.summary.status == "completed"
    chosen = first.summary.acceleration
    assert (chosen.channels_last, chosen.compile) == (
        option.startswith("model.channels_last"),
        option.startswith("model.compile"),
    )
    assert _parity(first.run_dir)["passed"] is True
    last = first.run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    # the compiled function is no submodule: the keys are the plain network's
    assert not [key for key in saved["state_dict"] if "_orig_mod" in key or "compiled" in key]
    assert set(saved["harness"]["ema"]["training"]) == set(saved["state_dict"])

    resumed = run(
        make_settings(
            "ema",
            "onnx_export",
            option,
            "trainer.limit_train_batches=2",
            "trainer.max_epochs=2",
            f"trainer.resume={str(last)!r}",
        )
    )
    assert resumed.summary.status == "completed"
    assert resumed.summary.global_step == 2 * first.summary.global_step
    assert _parity(resumed.run_dir)["passed"] is True

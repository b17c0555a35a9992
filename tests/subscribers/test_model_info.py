"""ModelInfo, driven by a synthetic FitStart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import FitStart
from harness.core.testing import make_context, tiny_model
from harness.settings import Settings
from harness.training.fit import run
from subscribers.model_info import ModelInfo, ModelInfoSettings

MakeSettings = Callable[..., Settings]

TORCHVISION_RESNET18_GFLOPS = 1.81  # torchvision's model card; it counts multiply-adds


class Wrapper(nn.Module):
    """Stands in for the training module: the network as `net`, its name as `arch`."""

    def __init__(self, net: nn.Module, arch: str) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.loss = nn.CrossEntropyLoss()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the FLOP count must run the network, not the training module")


class Picky(nn.Module):
    """A network that cannot run on the input the counter gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 2)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs)  # a 4-d image into a 5-feature linear layer raises


def fit_start(
    context: RunContext, settings: ModelInfoSettings | None = None, rank: int = 0
) -> dict[str, Any]:
    bus = Bus(rank=rank)
    bus.attach(ModelInfo(context, settings))
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    path = context.run_dir / "model_info" / "model_info.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_resnet18_compute_agrees_with_torchvision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = make_context(tmp_path, image_size=224, model=torchvision.models.resnet18())

    info = fit_start(context)

    assert info["macs"] / 1e9 == pytest.approx(TORCHVISION_RESNET18_GFLOPS, rel=0.05)
    assert info["flops"] == 2 * info["macs"]
    assert info["parameters"]["total"] == 11_689_512
    assert info["input_shape"] == [1, 3, 224, 224]
    out = " ".join(capsys.readouterr().out.split())
    assert f"{info['macs'] / 1e9:.3f} GMACs" in out
    assert f"{info['flops'] / 1e9:.3f} GFLOPs" in out
    assert "2 per multiply-add" in out
    assert context.artifacts["model_info"] == "model_info/model_info.json"


def test_counts_parameters_and_size_of_the_network(tmp_path: Path) -> None:
    net = tiny_model(num_classes=3)
    net[0].weight.requires_grad_(False)  # 108 of the conv's parameters frozen
    context = make_context(tmp_path, model=Wrapper(net, arch="tiny"))

    info = fit_start(context)

    assert (info["arch"], info["network"], info["module"]) == ("tiny", "Sequential", "Wrapper")
    # conv 3*4*9 + 4, batch norm 4 + 4, linear 4*3 + 3
    assert info["parameters"] == {"total": 135, "trainable": 27, "frozen": 108}
    # float32 parameters and running mean/var, plus the int64 batch counter
    assert info["size"]["bytes"] == (135 + 8) * 4 + 8


def test_the_count_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    net = tiny_model()
    net.train()
    net[1].eval()  # a frozen batch norm must stay frozen
    before = {k: v.clone() for k, v in net.state_dict().items()}
    context = make_context(tmp_path, model=net)

    info = fit_start(context)

    assert info["flops"] > 0
    assert [m.training for m in net.modules()] == [True, True, False, True, True, True, True]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_input_channels_follow_the_first_convolution(tmp_path: Path) -> None:
    context = make_context(tmp_path, image_size=8, model=tiny_model(channels=1))

    info = fit_start(context)

    assert info["input_shape"] == [1, 1, 8, 8]
    assert info["flops"] > 0


def test_names_the_architecture_of_the_training_module(tmp_path: Path) -> None:
    from harness.training.model import Classifier

    context = make_context(tmp_path, image_size=16, model=Classifier(arch="resnet18", num_classes=3))

    info = fit_start(context)

    assert (info["arch"], info["network"], info["module"]) == ("resnet18", "ResNet", "Classifier")


def test_a_model_that_cannot_be_counted_is_reported_without_flops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = make_context(tmp_path, model=Picky())

    info = fit_start(context)

    assert info["flops"] is None and info["macs"] is None
    assert info["flops_error"].startswith("RuntimeError")
    assert info["parameters"]["total"] == 12
    out = " ".join(capsys.readouterr().out.split())
    assert "model_info: warning: FLOPs not counted: RuntimeError" in out
    assert "n/a" in out


def test_counting_flops_can_be_turned_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = make_context(tmp_path, model=Picky())

    info = fit_start(context, ModelInfoSettings(count_flops=False))

    assert info["flops"] is None
    assert "count_flops = false" in info["flops_error"]
    assert "warning" not in capsys.readouterr().out


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    context = make_context(tmp_path, model=tiny_model())

    assert fit_start(context, rank=1) == {}
    assert not (context.run_dir / "model_info").exists()


@pytest.mark.slow
def test_a_real_run_reports_the_training_module(make_settings: MakeSettings) -> None:
    settings = make_settings("model_info", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1")

    result = run(settings)

    info = json.loads((result.run_dir / "model_info" / "model_info.json").read_text())
    assert (info["arch"], info["module"], info["input_shape"]) == ("resnet18", "Classifier", [1, 3, 16, 16])
    assert info["flops"] > 0
    assert result.summary.artifacts["model_info"] == "model_info/model_info.json"

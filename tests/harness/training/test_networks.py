"""Networks: pretrained weights from the hub caches, heads, auxiliary losses, image sizes, fine-tuning."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from torch import nn

from harness.core.errors import SettingsError
from harness.export import main as export_main
from harness.run import main as run_main
from harness.settings import Settings
from harness.training.fit import run
from harness.training.model import Classifier
from harness.training.networks import (
    backbone_parameters,
    build_network,
    check_image_size,
    head_parameters,
    minimum_image_size,
    normalization,
    split_outputs,
    torchvision_cache_file,
)
from tests.conftest import MakeSettings


def plant(arch: str, name: str = "DEFAULT", *, value: float = 0.125) -> Path:
    """A generated state dict where torchvision's loader looks for `arch`'s weights `name`."""
    entry = torchvision.models.get_model_weights(arch)[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        source = torchvision.models.get_model(arch, weights=None, num_classes=len(entry.meta["categories"]))
    state = {
        key: torch.full_like(tensor, value) if tensor.is_floating_point() else tensor
        for key, tensor in source.state_dict().items()
    }
    path = torchvision_cache_file(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and no way out to the network (a proxy that refuses)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return home


def test_pretrained_weights_load_from_the_torch_hub_cache_with_a_new_head(torch_home: Path) -> None:
    planted = plant("resnet18")
    assert planted == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    network = build_network("resnet18", 3, "DEFAULT")
    assert torch.equal(
        build_network("resnet18", 3, "ResNet18_Weights.IMAGENET1K_V1").conv1.weight, network.conv1.weight
    )
    assert torch.equal(network.conv1.weight, torch.full_like(network.conv1.weight, 0.125))
    assert network.fc.out_features == 3
    assert not torch.equal(network.fc.weight, torch.full_like(network.fc.weight, 0.125))
    assert network.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_a_convolutional_head_is_replaced_too(torch_home: Path) -> None:
    plant("squeezenet1_1", "IMAGENET1K_V1")
    network = build_network("squeezenet1_1", 5, "IMAGENET1K_V1")
    assert network.classifier[1].out_channels == 5
    assert torch.all(network.features[0].weight == 0.125)
    assert network.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_offline_with_nothing_cached_names_the_file_and_the_url(torch_home: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        build_network("resnet18", 3, "IMAGENET1K_V1")
    message = str(caught.value)
    assert "\n" not in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_an_unknown_weights_name_lists_the_known_ones() -> None:
    with pytest.raises(
        SettingsError,
        match=r"'IMAGENET1K_V9' is neither a file nor a weights name of resnet50 .*'IMAGENET1K_V2'",
    ):
        build_network("resnet50", 3, "IMAGENET1K_V9")


def test_the_normalisation_of_the_weights_is_used() -> None:
    assert normalization("vgg16", "IMAGENET1K_FEATURES").mean == pytest.approx((0.48235, 0.45882, 0.40784))
    assert normalization("efficientnet_v2_l", "DEFAULT").std == pytest.approx((0.5, 0.5, 0.5))
    assert normalization("resnet18", "").mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.slow
def test_a_pretrained_run_exports_the_normalisation_and_exit_2_offline(
    make_settings: MakeSettings, torch_home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings_file = tmp_path / "pretrained.toml"
    settings_file.write_text("")
    root = make_settings().data.root
    args = [
        str(settings_file),
        "--set",
        f"data.root={root!r}",
        "--set",
        "data.image_size=32",
        "--set",
        "model.arch='squeezenet1_1'",
        "--set",
        "model.weights='DEFAULT'",
        "--set",
        f"run.output_dir={str(tmp_path / 'runs')!r}",
    ]
    assert run_main(args) == 2
    error = capsys.readouterr().err
    assert "squeezenet1_1-b8a52dc0.pth" in error and "https://download.pytorch.org/models/" in error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))

    plant("squeezenet1_1", "IMAGENET1K_V1")
    settings = make_settings(
        "onnx_export",
        "data.image_size=32",
        "model.arch='squeezenet1_1'",
        "model.weights='DEFAULT'",
        "model.lr=0.001",
        "model.optimizer='adamw'",
        "trainer.limit_train_batches=2",
    )
    result = run(settings)
    assert result.summary.status == "completed"
    card = json.loads((result.run_dir / "onnx_export" / "preprocessing.json").read_text())
    assert card["mean"] == pytest.approx(normalization("squeezenet1_1", "DEFAULT").mean)


FAMILIES = [
    "resnet18",
    "alexnet",
    "vgg11",
    "squeezenet1_0",
    "densenet121",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mnasnet0_5",
    "shufflenet_v2_x0_5",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_32",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
]


@pytest.mark.parametrize("arch", FAMILIES)
def test_the_head_is_what_changes_with_the_class_count(arch: str) -> None:
    def on_meta(classes: int) -> nn.Module:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore", FutureWarning)
            return torchvision.models.get_model(arch, weights=None, num_classes=classes)

    two, three = on_meta(2), on_meta(3)
    changed = {
        name
        for (name, a), (_, b) in zip(two.named_parameters(), three.named_parameters(), strict=True)
        if a.shape != b.shape
    }
    head = {id(p) for p in head_parameters(two)}
    head_names = {name for name, p in two.named_parameters() if id(p) in head}
    assert changed and changed <= head_names
    assert len(head) + len(backbone_parameters(two)) == len(list(two.parameters()))
    assert len(head) < len(list(two.parameters())) / 2


@pytest.mark.parametrize("arch", ["alexnet", "squeezenet1_1", "googlenet", "inception_v3"])
def test_the_minimum_image_size_is_the_smallest_that_runs(arch: str) -> None:
    minimum = minimum_image_size(arch)
    network = build_network(arch, 3, image_size=minimum)
    with torch.no_grad():
        for training in (True, False):
            network.train(training)
            network(torch.zeros(2, 3, minimum, minimum))
        with pytest.raises(RuntimeError):
            network.eval()(torch.zeros(2, 3, minimum - 1, minimum - 1))
    with pytest.raises(
        SettingsError,
        match=rf"image_size = {minimum - 1} is too small for {arch}: it needs at least {minimum} px",
    ):
        check_image_size(arch, minimum - 1)


def test_vision_transformers_are_built_for_the_image_size() -> None:
    network = build_network("vit_b_32", 3, image_size=64)
    assert network.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(
        SettingsError, match="image_size = 40: vit_b_16 needs a multiple of its 16 px patch size"
    ):
        check_image_size("vit_b_16", 40)
    with pytest.raises(SettingsError, match="vit_b_16 with weights 'DEFAULT' needs exactly 224 px"):
        check_image_size("vit_b_16", 64, "DEFAULT")
    with pytest.raises(SettingsError, match="image_size = 64 does not fit maxvit_t"):
        build_network("maxvit_t", 3, image_size=64)


def test_inception_trains_with_its_auxiliary_loss_at_299_px() -> None:
    model = Classifier(arch="inception_v3", num_classes=3, image_size=299, label_smoothing=0.0)
    inputs, targets = torch.randn(2, 3, 299, 299), torch.tensor([0, 2])
    model.train()
    logits, aux = split_outputs(model.net(inputs))
    assert len(aux) == 1
    main = torch.nn.functional.cross_entropy(logits, targets)
    expected = 0.4 * torch.nn.functional.cross_entropy(aux[0], targets)
    assert float(model._aux_loss(aux, targets)) == pytest.approx(float(expected), rel=1e-6)
    assert float(main) > 0
    model.eval()
    assert isinstance(model(inputs[:1]), torch.Tensor)


def test_inception_below_299_px_trains_without_its_auxiliary_head() -> None:
    network = build_network("inception_v3", 3, image_size=80)
    assert split_outputs(network.train()(torch.zeros(2, 3, 80, 80)))[1] == []


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), [("googlenet", 32), ("inception_v3", 80)])
def test_networks_with_auxiliary_heads_fit_and_export_with_parity(
    make_settings: MakeSettings, arch: str, size: int, tmp_path: Path
) -> None:
    settings: Settings = make_settings(
        "onnx_export",
        f"data.image_size={size}",
        f"model.arch={arch!r}",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "model.lr=0.001",
        "model.optimizer='adamw'",
    )
    result = run(settings)
    assert result.summary.status == "completed", result.summary.failures
    parity = json.loads((result.run_dir / "onnx_export" / "parity.json").read_text())
    assert parity["passed"]
    checkpoint = next((result.run_dir / "checkpoints").glob("epoch=*.ckpt"))
    assert export_main([str(checkpoint), "--output", str(tmp_path / "again")]) == 0


@pytest.mark.slow
def test_a_frozen_backbone_keeps_its_weights_while_the_head_learns(make_settings: MakeSettings) -> None:
    settings = make_settings("model.freeze_backbone_epochs=1", "trainer.limit_train_batches=2")
    result = run(settings)
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # The run seeds everything before it builds the model: the same seed, the same initial weights.
    L.seed_everything(settings.run.seed, workers=True, verbose=False)
    initial = Classifier.from_settings(settings.model, num_classes=3, image_size=settings.data.image_size)
    state = checkpoint["state_dict"]
    assert torch.equal(state["net.conv1.weight"], initial.net.conv1.weight)
    assert not torch.equal(state["net.fc.weight"], initial.net.fc.weight)


def test_the_backbone_learns_at_a_fraction_of_the_rate() -> None:
    model = Classifier(
        arch="resnet18",
        num_classes=3,
        lr=0.01,
        backbone_lr_scale=0.1,
        optimizer="adamw",
        scheduler="none",
        warmup=0,
    )
    optimizer = model.configure_optimizers()
    backbone, head = optimizer.param_groups
    assert (backbone["lr"], head["lr"]) == pytest.approx((0.001, 0.01))
    assert {id(p) for p in head["params"]} == {id(p) for p in head_parameters(model.net)}


@pytest.fixture
def hub_cache(tmp_path: Path, torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache (where timm's pretrained weights live), offline."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hf_hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_timm_pretrained_weights_load_from_the_hub_cache(hub_cache: Path) -> None:
    timm = pytest.importorskip("timm")
    safetensors = pytest.importorskip("safetensors.torch")
    with pytest.raises(SettingsError) as caught:
        build_network("timm:resnet18.a1_in1k", 3, "DEFAULT")
    message = str(caught.value)
    assert str(hub_cache / "models--timm--resnet18.a1_in1k") in message
    assert "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors" in message

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    source = timm.create_model("resnet18.a1_in1k", pretrained=False)
    state = {k: v.clone().fill_(0.25) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    safetensors.save_file(state, repo / "snapshots" / revision / "model.safetensors")
    network = build_network("timm:resnet18.a1_in1k", 3, "DEFAULT")
    assert torch.all(network.conv1.weight == 0.25)
    assert network.fc.out_features == 3
    assert normalization("timm:resnet18.a1_in1k", "DEFAULT").mean == pytest.approx((0.485, 0.456, 0.406))


def test_timm_without_the_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(
        SettingsError, match=r'timm models need the timm extra \(pip install -e "\.\[timm\]"\)'
    ):
        build_network("timm:resnet18", 3)

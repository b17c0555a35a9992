"""Grad-CAM: maps for a ResNet and the transformers (tiny configs, random weights), and what it refuses."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import models

from harness.core.preprocessing import Preprocessing
from harness.training.cam import CAM_FILES, cam_target, explain, write_cams


def tiny_vit() -> nn.Module:
    network = models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3
    )
    # torchvision starts the head at zero: no gradient would reach the tokens before training.
    nn.init.normal_(network.heads.head.weight, std=0.5)
    return network


def tiny_swin() -> nn.Module:
    return models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4], num_classes=3
    )


@pytest.mark.parametrize(
    ("build", "size", "family", "features"),
    [
        (lambda: models.resnet18(num_classes=3), 64, "ResNet", (512, 2, 2)),
        (tiny_vit, 32, "ViT", (32, 4, 4)),  # 16 patch tokens of 32 dims, the class token dropped
        (tiny_swin, 32, "Swin", (32, 4, 4)),  # channels-last 4 x 4 x 32 made channels-first
    ],
    ids=["resnet18", "vit", "swin"],
)
def test_maps_have_the_input_size_and_show_where(
    build: object, size: int, family: str, features: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    network = build()  # type: ignore[operator]
    target = cam_target(network)
    assert target is not None and target.family == family
    inputs = torch.randn(3, 3, size, size)
    seen: list[torch.Tensor] = []
    hook = target.layer.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
    with torch.no_grad():
        network.eval()(inputs)
    hook.remove()
    laid_out = target.reshape(seen[0]) if target.reshape else seen[0]
    assert tuple(laid_out.shape) == (3, *features), "channels first, on the image's grid"
    maps = explain(network, target, inputs, [0, 1, 2])
    assert maps.shape == (3, size, size)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    for one in maps:
        assert np.ptp(one) > 0.1, "a map that varies over the image, not a constant"


def timm_model(name: str, **options: object) -> nn.Module:
    timm = pytest.importorskip("timm")
    network: nn.Module = timm.create_model(name, pretrained=False, num_classes=3, **options)
    return network


@pytest.mark.parametrize(
    ("name", "options", "features"),
    [
        ("resnet18", {}, (512, 2, 2)),
        ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}, (192, 4, 4)),
        (
            "swin_tiny_patch4_window7_224",
            {"img_size": 32, "window_size": 4, "embed_dim": 16, "depths": (1, 1), "num_heads": (1, 1)},
            (32, 4, 4),  # channels-last 4 x 4 x 32 made channels-first
        ),
    ],
    ids=["resnet18", "vit", "swin"],
)
@pytest.mark.slow
def test_timm_models_are_explained_through_their_feature_info_or_tokens(
    name: str, options: dict[str, object], features: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    network = timm_model(name, **options)
    size = int(options.get("img_size", 64))  # type: ignore[call-overload]
    target = cam_target(network)
    assert target is not None and target.family.startswith("timm ")
    seen: list[torch.Tensor] = []
    hook = target.layer.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
    inputs = torch.randn(2, 3, size, size)
    with torch.no_grad():
        network.eval()(inputs)
    hook.remove()
    assert target.reshape is not None and tuple(target.reshape(seen[0]).shape) == (2, *features)
    maps = explain(network, target, inputs, [0, 1])
    assert maps.shape == (2, size, size)


def write_images(folder: Path, count: int, size: int) -> list[tuple[Path, int]]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        path = folder / f"image_{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        samples.append((path, i % 3))
    return samples


def test_the_top_losses_and_confused_pairs_are_drawn_image_beside_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("harness.training.cam._BATCH", 3)  # four images: two passes
    torch.manual_seed(0)
    network = models.resnet18(num_classes=3)
    samples = write_images(tmp_path / "images", 9, 64)
    probabilities = np.full((9, 3), 0.1)
    probabilities[np.arange(9), (np.arange(9) + 1) % 3] = 0.8  # every image wrong: 0 -> 1, 1 -> 2, 2 -> 0
    spec = Preprocessing(image_size=64)
    written = write_cams(
        tmp_path / "eval",
        network,
        network,
        "resnet18",
        spec,
        samples,
        probabilities,
        ["a", "b", "c"],
        limit=2,
    )
    assert sorted(path.name for path in written) == sorted(CAM_FILES.values())
    for path in written:
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        # two groups of two: image and map side by side, the jet colours of a map among them
        assert picture.width > 4 * 180
        assert ((pixels[..., 0] > 200) & (pixels[..., 2] < 60)).any() or (
            (pixels[..., 2] > 200) & (pixels[..., 0] < 60)
        ).any()


def test_an_architecture_it_cannot_explain_is_named_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    network = models.squeezenet1_1(num_classes=3)
    samples = write_images(tmp_path / "images", 3, 32)
    probabilities = np.tile([[0.1, 0.8, 0.1]], (3, 1))
    with caplog.at_level(logging.WARNING, logger="harness"):
        written = write_cams(
            tmp_path / "eval", network, network, "squeezenet1_1", Preprocessing(image_size=32),
            samples, probabilities, ["a", "b", "c"], limit=2,
        )  # fmt: skip
    assert written == [] and not (tmp_path / "eval").exists()
    assert [record.getMessage() for record in caplog.records] == [
        "Grad-CAM skipped: squeezenet1_1 (SqueezeNet) is not a family it can explain "
        "(ResNet, ConvNeXt, EfficientNet, MobileNet, RegNet, ViT, Swin, timm's with feature_info)"
    ]


def test_without_the_package_it_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # what an uninstalled package raises
    network = models.resnet18(num_classes=3)
    samples = write_images(tmp_path / "images", 3, 32)
    probabilities = np.tile([[0.1, 0.8, 0.1]], (3, 1))
    with caplog.at_level(logging.WARNING, logger="harness"):
        written = write_cams(
            tmp_path / "eval", network, network, "resnet18", Preprocessing(image_size=32),
            samples, probabilities, ["a", "b", "c"], limit=2,
        )  # fmt: skip
    assert written == []
    assert len(caplog.records) == 1 and 'pip install -e ".[explain]"' in caplog.records[0].getMessage()

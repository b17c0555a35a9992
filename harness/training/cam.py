"""Grad-CAM over an evaluation's mistakes: where a checkpoint's network looked (the ``explain`` extra).

`cam_target` names the layer whose activations and gradients make the map, per torchvision
family: the last residual block of a ResNet (``layer4[-1]``), the last stage of a ConvNeXt,
EfficientNet or MobileNet (``features[-1]``) or a RegNet (``trunk_output[-1]``), and for
the transformers the last encoder block's first norm of a ViT (tokens: the class token
dropped, the patches laid out on their grid, as the library's ``vit_reshape_transform``)
or the final norm of a Swin (channels-last, moved to channels-first). A timm model: a
ViT's last block's first norm (its prefix tokens dropped), else the last stage its
``feature_info`` names (channels-last moved). Any other network gets None and a line
naming it, as does a layer whose output turns out not to be a grid; it is never a crash.

`explain` runs `pytorch_grad_cam.GradCAM` for the class each image was predicted as and
returns one map per image in [0, 1] at the input's size; `overlay` lays it over the image
the model saw (`seen`: its normalisation undone) with the library's `show_cam_on_image`.
`write_cams` draws the top losses and one image of each most-confused pair, image beside
map, into an evaluation folder (`harness.evaluation.pictures.draw_cams`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import nn
from torchvision import models

from harness.core.preprocessing import Preprocessing
from harness.evaluation.metrics import top_losses
from harness.evaluation.pairs import Pairs
from harness.evaluation.pictures import Explained, draw_cams
from harness.io.images import load_rgb, to_input

__all__ = ["CAM_FILES", "CamTarget", "cam_target", "explain", "overlay", "seen", "unexplained", "write_cams"]

log = logging.getLogger("harness")

CAM_FILES = {"top_losses": "grad_cam_top_losses.png", "most_confused": "grad_cam_most_confused.png"}
"""The pictures `write_cams` writes in an evaluation folder, by group."""
_MISSING = 'Grad-CAM skipped: the grad-cam package is not installed (pip install -e ".[explain]")'
_BATCH = 16  # images per Grad-CAM pass: its graph is kept for the backward pass
Reshape = Callable[[torch.Tensor], torch.Tensor]


@attrs.frozen(kw_only=True)
class CamTarget:
    """The layer Grad-CAM reads, and how its output becomes N x C x H x W."""

    family: str
    layer: nn.Module
    reshape: Reshape | None = None


def _vit_tokens(tensor: torch.Tensor) -> torch.Tensor:
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    side = math.isqrt(tensor.size(1) - 1)
    result: torch.Tensor = vit_reshape_transform(tensor, height=side, width=side)
    return result


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.permute(0, 3, 1, 2)


def cam_target(network: nn.Module) -> CamTarget | None:
    """The target layer of `network`'s family, or None for a network Grad-CAM here cannot explain."""
    if isinstance(network, models.ResNet):
        return CamTarget(family="ResNet", layer=network.layer4[-1])
    if isinstance(network, (models.ConvNeXt, models.EfficientNet, models.MobileNetV2, models.MobileNetV3)):
        return CamTarget(family=type(network).__name__, layer=network.features[-1])
    if isinstance(network, models.RegNet):
        return CamTarget(family="RegNet", layer=network.trunk_output[-1])
    if isinstance(network, models.VisionTransformer):
        return CamTarget(family="ViT", layer=network.encoder.layers[-1].ln_1, reshape=_vit_tokens)
    if isinstance(network, models.SwinTransformer):
        return CamTarget(family="Swin", layer=network.norm, reshape=_channels_last)
    if type(network).__module__.startswith("timm."):
        return _timm_target(network)
    return None


class _Unexplainable(Exception):
    """The target layer's output is not a grid of features this module can lay out."""


def _timm_target(network: nn.Module) -> CamTarget | None:
    """A timm ViT's last block's first norm (tokens), else the last stage its `feature_info` names."""
    name = type(network).__name__
    blocks = getattr(network, "blocks", None)
    prefix = getattr(network, "num_prefix_tokens", None)
    norm = getattr(blocks[-1], "norm1", None) if isinstance(blocks, nn.Sequential) and len(blocks) else None
    if isinstance(prefix, int) and isinstance(norm, nn.Module):
        return CamTarget(family=f"timm {name}", layer=norm, reshape=functools.partial(_tokens, prefix=prefix))
    info = getattr(network, "feature_info", None)
    if not isinstance(info, list) or not info or "module" not in info[-1]:
        return None
    last = info[-1]
    return CamTarget(
        family=f"timm {name}",
        layer=network.get_submodule(str(last["module"])),
        reshape=functools.partial(_grid, channels=int(last["num_chs"])),
    )


def _tokens(tensor: torch.Tensor, *, prefix: int) -> torch.Tensor:
    """(N, prefix + side^2, C) tokens as N x C x side x side, the prefix (class, register) tokens dropped."""
    side = math.isqrt(tensor.size(1) - prefix) if tensor.dim() == 3 else 0
    if side * side != tensor.size(1) - prefix or side == 0:
        raise _Unexplainable(f"tokens of shape {tuple(tensor.shape)} are not a square grid")
    return tensor[:, prefix:, :].reshape(tensor.size(0), side, side, tensor.size(2)).permute(0, 3, 1, 2)


def _grid(tensor: torch.Tensor, *, channels: int) -> torch.Tensor:
    """A stage's output as N x C x H x W: channels-first as it is, channels-last (timm's Swin) moved."""
    if tensor.dim() == 4 and tensor.size(1) == channels:
        return tensor
    if tensor.dim() == 4 and tensor.size(3) == channels:
        return tensor.permute(0, 3, 1, 2)
    raise _Unexplainable(f"a stage output of shape {tuple(tensor.shape)} is not a {channels}-channel grid")


def unexplained(arch: str, network: nn.Module) -> str:
    """The one line that names an architecture `cam_target` does not know."""
    return (
        f"Grad-CAM skipped: {arch} ({type(network).__name__}) is not a family it can explain "
        "(ResNet, ConvNeXt, EfficientNet, MobileNet, RegNet, ViT, Swin, timm's with feature_info)"
    )


def explain(
    model: nn.Module, target: CamTarget, inputs: torch.Tensor, classes: Sequence[int]
) -> npt.NDArray[np.float32]:
    """Grad-CAM maps (N x H x W, each scaled to [0, 1]) of `inputs` for `classes`, by `model` in eval mode."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    with GradCAM(model=model, target_layers=[target.layer], reshape_transform=target.reshape) as cam:
        maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return np.asarray(maps, dtype=np.float32)


def seen(chw: npt.NDArray[np.float32], spec: Preprocessing) -> npt.NDArray[np.float32]:
    """The model's input as the image it was (H x W x 3 in [0, 1]): its normalisation undone."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    pixels: npt.NDArray[np.float32] = np.clip(chw.transpose(1, 2, 0) * std + mean, 0.0, 1.0)
    return pixels


def overlay(pixels: npt.NDArray[np.float32], cam: npt.NDArray[np.float32]) -> Image.Image:
    """The map in colour over the image, half and half (the library's `show_cam_on_image`)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return Image.fromarray(show_cam_on_image(pixels, cam, use_rgb=True))


def write_cams(
    directory: Path,
    model: nn.Module,
    network: nn.Module,
    arch: str,
    spec: Preprocessing,
    samples: Sequence[tuple[Path, int]],
    probabilities: npt.NDArray[np.float64],
    class_names: Sequence[str],
    *,
    limit: int,
) -> list[Path]:
    """Draw the `limit` top losses and one image of each of the `limit` most-confused pairs.

    The maps explain the predicted class. A missing grad-cam package or a network of an
    unknown family is one warning line and no picture; nothing is raised.
    """
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        log.warning(_MISSING)
        return []
    target = cam_target(network)
    if target is None:
        log.warning(unexplained(arch, network))
        return []
    targets = np.asarray([t for _, t in samples], dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    worst = top_losses(probabilities, targets, limit)
    losses = -np.log(np.clip(probabilities[np.arange(len(targets)), targets], 1e-12, None))
    examples = []
    for pair in Pairs.from_labels(targets, predicted, probabilities.shape[1]).most_confused(limit):
        members = np.flatnonzero((targets == pair.true) & (predicted == pair.predicted))
        examples.append(int(members[np.argmax(losses[members])]))
    chosen = sorted({*worst.tolist(), *examples})
    if not chosen:
        return [
            draw_cams(directory / name, [], heading=_heading(group, target.family))
            for group, name in CAM_FILES.items()
        ]
    device = next(model.parameters()).device
    inputs = np.stack([to_input(load_rgb(samples[i][0]), spec) for i in chosen])
    classes = [int(predicted[i]) for i in chosen]
    try:
        maps = np.concatenate(
            [
                explain(
                    model,
                    target,
                    torch.from_numpy(inputs[at : at + _BATCH]).to(device),
                    classes[at : at + _BATCH],
                )
                for at in range(0, len(chosen), _BATCH)
            ]
        )
    except _Unexplainable as error:
        log.warning("%s: %s", unexplained(arch, network), error)
        return []
    pictures = [seen(chw, spec) for chw in inputs]
    shown = {
        i: Explained(
            image=Image.fromarray(np.round(pictures[k] * 255).astype(np.uint8)),
            cam=overlay(pictures[k], maps[k]),
            true=class_names[targets[i]],
            predicted=class_names[predicted[i]],
            probability=float(probabilities[i, predicted[i]]),
        )
        for k, i in enumerate(chosen)
    }
    groups = {"top_losses": worst.tolist(), "most_confused": examples}
    return [
        draw_cams(
            directory / CAM_FILES[group],
            [shown[i] for i in groups[group]],
            heading=_heading(group, target.family),
        )
        for group in CAM_FILES
    ]


def _heading(group: str, family: str) -> str:
    what = (
        "the wrong images of highest loss"
        if group == "top_losses"
        else "the most-confused pairs, one image each (highest loss)"
    )
    return f"Grad-CAM ({family}): {what}\nthe map explains the predicted class; red = most evidence"

"""Networks: every torchvision classification architecture (and timm's), random or pretrained.

`build_network` makes the `nn.Module` the `Classifier` trains. `[model].weights` is
either a weights name of the architecture (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...),
loaded through torchvision's own loader and hub cache (``TORCH_HOME``; nothing is
downloaded when the file is cached), or a local state-dict file, or ``""`` for a random
start. A pretrained network keeps everything but its classification head(s), which are
replaced for the data set's classes; `normalization` gives the mean and standard deviation
those weights were trained with, for `harness.core.preprocessing.Preprocessing`.

``arch = "timm:<name>"`` builds a timm model (the ``timm`` extra), pretrained through
timm's own cache (Hugging Face hub) with ``weights = "DEFAULT"``.

Models with auxiliary classifiers (googlenet, inception_v3) return several logits in
training; `split_outputs` separates the main logits from the auxiliary ones and
`AUX_LOSS_WEIGHTS` weighs their losses. `head_parameters` / `backbone_parameters` say which
parameters are the head (what fine-tuning trains first) and which the backbone.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import attrs
import torch
import torchvision
from torch import nn

from harness.core.errors import SettingsError

__all__ = [
    "AUX_LOSS_WEIGHTS",
    "TIMM_PREFIX",
    "Normalization",
    "backbone_parameters",
    "build_network",
    "check_image_size",
    "head_modules",
    "head_parameters",
    "minimum_image_size",
    "normalization",
    "split_outputs",
    "torchvision_cache_file",
]

TIMM_PREFIX = "timm:"

AUX_LOSS_WEIGHTS: dict[str, tuple[float, ...]] = {"googlenet": (0.3, 0.3), "inception_v3": (0.4,)}
"""Weight of each auxiliary classifier's loss, in the order `split_outputs` returns them.

0.3 for each of GoogLeNet's two (Szegedy et al. 2014, "Going deeper with convolutions",
section 5), 0.4 for Inception v3's one (as in PyTorch's fine-tuning tutorial for it).
"""

INCEPTION_AUX_SIZE = 299
"""inception_v3's auxiliary head needs a 17x17 map at Mixed_6e: 299 px input (measured)."""

_MINIMUM_SIZE: dict[str, int] = {
    "alexnet": 63,
    "convnext": 32,
    "densenet": 29,
    "googlenet": 15,
    "inception_v3": 75,
    "squeezenet1_0": 21,
    "squeezenet1_1": 17,
    "vgg": 32,
}
"""Smallest square input that trains and evaluates, by architecture prefix.

Measured on torchvision 0.29 by forward passes in train and eval mode (every other
convolutional architecture runs at 8 px; vit and maxvit are built for the image size).
"""

_FILE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin", ".safetensors"})

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@attrs.frozen(kw_only=True)
class Normalization:
    """The mean and standard deviation the network's inputs are normalised with."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _is_timm(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)


def _is_path(weights: str) -> bool:
    """A local file, as opposed to a weights name: a path separator, a weights-file suffix, or it exists."""
    suffix = Path(weights).suffix.lower()
    return "/" in weights or "\\" in weights or suffix in _FILE_SUFFIXES or Path(weights).is_file()


def _check_arch(arch: str) -> None:
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        close = difflib.get_close_matches(arch, available, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SettingsError(f"[model].arch: unknown torchvision architecture {arch!r}{hint}")


def _weights_enum(arch: str, name: str) -> Any:
    """The torchvision weights entry `name` ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1")."""
    enum = torchvision.models.get_model_weights(arch)
    short = name.split(".", 1)[1] if name.startswith(f"{enum.__name__}.") else name
    try:
        return enum[short]
    except KeyError:
        names = ", ".join(repr(member) for member in ["DEFAULT", *enum.__members__])
        raise SettingsError(
            f"[model].weights: {name!r} is neither a file nor a weights name of {arch} (one of {names})"
        ) from None


def torchvision_cache_file(weights: Any) -> Path:
    """Where torchvision's loader keeps `weights`: ``<torch.hub.get_dir()>/checkpoints/<URL file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _image_size_kwargs(arch: str, image_size: int | None, pretrained: bool) -> dict[str, Any]:
    """vit and maxvit are built for one input size: the run's, unless pretrained weights fix it."""
    if image_size is None or pretrained:
        return {}
    if arch.startswith("vit_"):
        return {"image_size": image_size}
    if arch.startswith("maxvit"):
        return {"input_size": (image_size, image_size)}
    return {}


def _aux_kwargs(arch: str, image_size: int | None) -> dict[str, Any]:
    """Auxiliary heads where the image is large enough for them (inception_v3's needs 299 px)."""
    if arch == "googlenet":
        return {"aux_logits": True}
    if arch == "inception_v3":
        return {"aux_logits": image_size is None or image_size >= INCEPTION_AUX_SIZE}
    return {}


def build_network(
    arch: str, num_classes: int, weights: str = "", image_size: int | None = None, *, load: bool = True
) -> nn.Module:
    """The network for `arch` with `num_classes` outputs, random or from `weights`.

    `weights` is ``""`` (random), a weights name of `arch` (torchvision's loader and hub
    cache; a download only when the file is not cached), or a local state-dict file whose
    fitting tensors are loaded. `image_size` sizes vit and maxvit and decides whether
    inception_v3 keeps its auxiliary head. With `load` false, the network has the structure
    `weights` give it (googlenet and inception_v3 pretrained transform their input) but
    random values: for a checkpoint's weights to be loaded into. Stops with a `SettingsError` before anything
    trains when the weights cannot be had.
    """
    if image_size is not None:
        check_image_size(arch, image_size, weights)
    if _is_timm(arch):
        from harness.training._timm import build_timm

        return build_timm(arch[len(TIMM_PREFIX) :], num_classes, weights if load else "")
    _check_arch(arch)
    pretrained = bool(weights) and not _is_path(weights)
    kwargs = {**_aux_kwargs(arch, image_size), **_image_size_kwargs(arch, image_size, pretrained)}
    if arch in ("googlenet", "inception_v3") and not (pretrained and load):
        # torchvision warns that its default initialisation will change; keep today's explicitly.
        kwargs["init_weights"] = True
    if pretrained and not load:
        _weights_enum(arch, weights)
        if arch in ("googlenet", "inception_v3"):
            kwargs["transform_input"] = True
    elif pretrained:
        return _pretrained(arch, num_classes, _weights_enum(arch, weights), kwargs)
    try:
        network: nn.Module = torchvision.models.get_model(
            arch, weights=None, num_classes=num_classes, **kwargs
        )
    except ValueError as error:
        # maxvit names the sizes its blocks would get; the first line says it.
        reason = str(error).splitlines()[0]
        raise SettingsError(f"[data].image_size = {image_size} does not fit {arch}: {reason}") from error
    if weights and load and not pretrained:
        _load_file(network, arch, Path(weights).expanduser())
    return network


def _pretrained(arch: str, num_classes: int, entry: Any, kwargs: dict[str, Any]) -> nn.Module:
    cached = torchvision_cache_file(entry)
    was_cached = cached.is_file()
    try:
        with warnings.catch_warnings():
            # googlenet: "auxiliary heads ... are NOT pretrained"; they are trained here.
            warnings.filterwarnings("ignore", message="auxiliary heads", category=UserWarning)
            network: nn.Module = torchvision.models.get_model(arch, weights=entry, **kwargs)
    except OSError as error:
        if was_cached:
            raise SettingsError(f"[model].weights = {entry!r}: cannot read {cached} ({error})") from error
        raise SettingsError(
            f"[model].weights = {entry!r}: {cached} is not cached and the download failed "
            f"({type(error).__name__}); fetch {entry.url} to that file (TORCH_HOME moves the cache)"
        ) from error
    except (RuntimeError, KeyError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SettingsError(
            f"[model].weights = {entry!r}: {cached} does not hold those weights ({first})"
        ) from error
    _replace_heads(network, len(entry.meta["categories"]), num_classes)
    return network


def _load_file(network: nn.Module, arch: str, path: Path) -> None:
    if not path.is_file():
        raise SettingsError(f"[model].weights: no such file {str(path)!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = network.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise SettingsError(f"[model].weights: {str(path)!r} holds no tensor that fits {arch}")
    network.load_state_dict(usable, strict=False)


def head_modules(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The classification head(s): the last child holding parameters, and auxiliary classifiers.

    That is ``fc`` (ResNet, RegNet, ShuffleNet, GoogLeNet, Inception), ``classifier``
    (VGG, AlexNet, MobileNet, EfficientNet, ConvNeXt, DenseNet, SqueezeNet, MaxViT),
    ``heads`` (ViT), ``head`` (Swin, most timm models), plus ``aux1``/``aux2``/``AuxLogits``.
    """
    children = [
        (name, child)
        for name, child in network.named_children()
        if next(child.parameters(), None) is not None
    ]
    if not children:
        return []
    heads = [(name, child) for name, child in children[:-1] if name.lower().startswith("aux")]
    return [*heads, children[-1]]


def head_parameters(network: nn.Module) -> list[nn.Parameter]:
    """Parameters of `head_modules`: what fine-tuning trains at the full learning rate."""
    return [p for _, module in head_modules(network) for p in module.parameters()]


def backbone_parameters(network: nn.Module) -> list[nn.Parameter]:
    """Every parameter that is not in the head."""
    head = {id(p) for p in head_parameters(network)}
    return [p for p in network.parameters() if id(p) not in head]


def _replace_heads(network: nn.Module, pretrained_classes: int, num_classes: int) -> None:
    """Every layer of the head(s) that emits `pretrained_classes` values is made anew for `num_classes`."""
    for _, head in head_modules(network):
        for parent in head.modules():
            for name, layer in list(parent.named_children()):
                if isinstance(layer, nn.Linear) and layer.out_features == pretrained_classes:
                    replacement: nn.Module = nn.Linear(
                        layer.in_features, num_classes, bias=layer.bias is not None
                    )
                elif isinstance(layer, nn.Conv2d) and layer.out_channels == pretrained_classes:
                    # SqueezeNet's head is a 1x1 convolution.
                    kernel, stride = layer.kernel_size[0], layer.stride[0]
                    replacement = nn.Conv2d(layer.in_channels, num_classes, kernel, stride)
                else:
                    continue
                setattr(parent, name, replacement.to(layer.weight.device, layer.weight.dtype))
        if isinstance(head, nn.Linear) and head.out_features == pretrained_classes:
            name = next(n for n, m in network.named_children() if m is head)
            setattr(network, name, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def split_outputs(output: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The main logits and the auxiliary ones of a forward pass (none outside training)."""
    if isinstance(output, torch.Tensor):
        return output, []
    logits = getattr(output, "logits", None)
    if isinstance(output, tuple) and isinstance(logits, torch.Tensor):
        aux = [value for value in output if isinstance(value, torch.Tensor) and value is not logits]
        return logits, aux
    raise TypeError(f"a network returned {type(output).__name__}, expected a tensor of logits")


def _patch_size(arch: str) -> int | None:
    match = re.fullmatch(r"vit_[a-z]_(\d+)", arch)
    return int(match.group(1)) if match else None


def minimum_image_size(arch: str) -> int:
    """The smallest square input `arch` trains and evaluates at (8 when nothing smaller is known)."""
    for prefix in sorted(_MINIMUM_SIZE, key=len, reverse=True):
        if arch.startswith(prefix):
            return _MINIMUM_SIZE[prefix]
    return 8


def check_image_size(arch: str, image_size: int, weights: str = "") -> None:
    """Stop before training, with one line naming the size, when `arch` cannot run at `image_size`."""
    if _is_timm(arch):
        return
    pretrained = bool(weights) and not _is_path(weights)
    if pretrained and arch.startswith(("vit_", "maxvit")):
        _check_arch(arch)
        size = _weights_enum(arch, weights).meta["min_size"][0]
        if image_size != size:
            raise SettingsError(
                f"[data].image_size = {image_size}: {arch} with weights {weights!r} needs exactly {size} px"
            )
        return
    patch = _patch_size(arch)
    if patch is not None and image_size % patch:
        raise SettingsError(
            f"[data].image_size = {image_size}: {arch} needs a multiple of its {patch} px patch size"
        )
    minimum = minimum_image_size(arch)
    if image_size < minimum:
        raise SettingsError(
            f"[data].image_size = {image_size} is too small for {arch}: it needs at least {minimum} px"
        )


def normalization(arch: str, weights: str) -> Normalization:
    """The mean and std of pretrained `weights` (named ones), else ImageNet's."""
    if weights and not _is_path(weights):
        if _is_timm(arch):
            from harness.training._timm import timm_normalization

            mean, std = timm_normalization(arch[len(TIMM_PREFIX) :], weights)
        else:
            _check_arch(arch)
            transform = _weights_enum(arch, weights).transforms()
            mean, std = transform.mean, transform.std
        return Normalization(mean=_triple(mean), std=_triple(std))
    return Normalization(mean=_IMAGENET[0], std=_IMAGENET[1])


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c

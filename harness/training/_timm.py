"""timm models for `harness.training.networks` (the optional ``timm`` extra).

Pretrained weights come through timm's own loader and cache (the Hugging Face hub cache,
``HF_HOME``); nothing is downloaded when the file is cached.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from harness.core.errors import SettingsError

__all__ = ["build_timm", "timm_normalization"]

_INSTALL = 'pip install -e ".[timm]"'


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise SettingsError(f"[model].arch: timm models need the timm extra ({_INSTALL})") from None
    return timm


def _name(name: str, weights: str) -> str:
    """``DEFAULT`` keeps timm's default tag; another value is the tag (``resnet18`` + ``a1_in1k``)."""
    return name if weights in ("", "DEFAULT") or "." in name else f"{name}.{weights}"


def build_timm(name: str, num_classes: int, weights: str) -> nn.Module:
    """timm's `name` with `num_classes` outputs, pretrained when `weights` names weights."""
    timm = _timm()
    if not timm.is_model(name.split(".")[0]):
        raise SettingsError(f"[model].arch: timm has no model {name!r} (timm.list_models() lists them)")
    if weights and ("/" in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors"))):
        network: nn.Module = timm.create_model(
            name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": weights}
        )
        return network
    full = _name(name, weights)
    try:
        network = timm.create_model(full, pretrained=bool(weights), num_classes=num_classes)
    except (OSError, RuntimeError) as error:
        cfg = timm.models.get_pretrained_cfg(full)
        hub = getattr(cfg, "hf_hub_id", None) or f"timm/{full}"
        from huggingface_hub import constants

        cache = f"{constants.HF_HUB_CACHE}/models--{hub.replace('/', '--')}"
        url = f"https://huggingface.co/{hub}/resolve/main/model.safetensors"
        raise SettingsError(
            f"[model].weights = {weights!r} for timm:{full}: no usable weights under {cache} and the "
            f"download failed ({type(error).__name__}); fetch {url} (HF_HOME moves the cache)"
        ) from error
    return network


def timm_normalization(name: str, weights: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std timm's pretrained configuration of the model gives."""
    cfg = _timm().models.get_pretrained_cfg(_name(name, weights))
    if cfg is None:
        raise SettingsError(f"[model].arch: timm has no pretrained configuration for {name!r}")
    return tuple(cfg.mean), tuple(cfg.std)

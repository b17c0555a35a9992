"""Model statistics: architecture name, parameters, size in memory, and FLOPs of one forward pass.

FLOPs are counted by torch's own `torch.utils.flop_counter.FlopCounterMode`, which counts
2 FLOPs per multiply-add. Published figures such as torchvision's "GFLOPS" (1.81 for
ResNet-18 at 224x224) count multiply-adds, i.e. MACs = FLOPs / 2.

torch's counter has no formula for ``aten._native_multi_head_attention``, the fused op
`nn.MultiheadAttention` runs in eval mode without grad (vit counted 11.27 of its 17.56
GMACs); `MHA_FLOPS` supplies one, so every torchvision architecture is counted within
1% of its published figure.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "FLOPS_CONVENTION",
    "MHA_FLOPS",
    "arch_name",
    "count_flops",
    "input_channels",
    "model_stats",
    "network_of",
]

FLOPS_CONVENTION = (
    "FLOPs counted by torch.utils.flop_counter.FlopCounterMode: 2 per multiply-add; "
    "MACs = FLOPs / 2 (the convention of torchvision's published 'GFLOPS')"
)


def _native_mha_flops(
    query: tuple[int, ...],
    key: tuple[int, ...],
    value: tuple[int, ...],
    embed_dim: int,
    *args: Any,
    **kwargs: Any,
) -> int:
    """Input projections of query, key and value, the two attention products, the output projection."""
    batch, target, embed = query
    source = key[1]
    projections = 2 * batch * embed * embed * (target + 2 * source) + 2 * batch * target * embed * embed
    attention = 2 * 2 * batch * target * source * embed
    return projections + attention


MHA_FLOPS: dict[Any, Any] = {torch.ops.aten._native_multi_head_attention: _native_mha_flops}
"""A `FlopCounterMode` custom mapping for the fused attention op (shapes in, FLOPs out)."""


def network_of(model: nn.Module) -> nn.Module:
    """The network inside a training module (its `net` attribute), or the model itself."""
    net = getattr(model, "net", None)
    return net if isinstance(net, nn.Module) else model


def arch_name(model: nn.Module) -> str:
    """The configured architecture (`arch` attribute), else the network's class name."""
    arch = getattr(model, "arch", None)
    return arch if isinstance(arch, str) and arch else type(network_of(model)).__name__


def input_channels(network: nn.Module, default: int = 3) -> int:
    """Input channels of the first convolution, else `default` (RGB)."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return default


def count_flops(network: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on a zero input of `input_shape`, on the network's own device.

    It runs in eval mode under `torch.no_grad` (no running statistics change, no graph is
    kept) and puts back every submodule's own train/eval flag afterwards.
    """
    first = next(network.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=MHA_FLOPS) as counter:
            network(torch.zeros(input_shape, device=device, dtype=dtype))
    finally:
        for module, training in modes:
            module.training = training
    return int(counter.get_total_flops())


def model_stats(model: nn.Module, image_size: int, *, flops: bool = True) -> dict[str, Any]:
    """Everything `model_info.json` holds: names, parameter counts, size, FLOPs and MACs."""
    network = network_of(model)
    parameters = list(network.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    size = sum(t.numel() * t.element_size() for t in (*parameters, *network.buffers()))
    shape = (1, input_channels(network), image_size, image_size)
    stats: dict[str, Any] = {
        "arch": arch_name(model),
        "module": type(model).__name__,
        "network": type(network).__name__,
        "input_shape": list(shape),
        "parameters": {"total": total, "trainable": trainable, "frozen": total - trainable},
        "size": {"bytes": size, "mb": size / 1e6, "mib": size / 2**20},
        "flops": None,
        "macs": None,
        "flops_convention": FLOPS_CONVENTION,
        "flops_error": None if flops else "not counted ([subscribers.model_info].count_flops = false)",
    }
    if flops:
        try:
            count = count_flops(network, shape)
        except (RuntimeError, ValueError, TypeError) as error:
            stats["flops_error"] = f"{type(error).__name__}: {error}"
        else:
            stats["flops"], stats["macs"] = count, count // 2
    return stats

"""FLOPs against torchvision's published figures (`weights.meta["_ops"]`, GMACs), nothing downloaded."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

from subscribers._flops import count_flops


def _published() -> list[tuple[str, str, int, float]]:
    rows = []
    for arch in torchvision.models.list_models(module=torchvision.models):
        for entry in torchvision.models.get_model_weights(arch):
            if "_ops" in entry.meta:
                size = entry.transforms().crop_size[0]
                rows.append((arch, entry.name, size, float(entry.meta["_ops"])))
    return rows


def _on_meta(arch: str, size: int) -> nn.Module:
    """The network without its values: shapes are all a count needs (regnet's builder needs real tensors)."""
    kwargs = {"image_size": size} if arch.startswith("vit_") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if arch.startswith("regnet"):
            with torch.device("cpu"):
                return torchvision.models.get_model(arch, weights=None, **kwargs).to("meta")
        with torch.device("meta"):
            return torchvision.models.get_model(arch, weights=None, **kwargs)


@pytest.mark.slow
def test_every_published_figure_is_matched_within_one_percent() -> None:
    rows = _published()
    assert len(rows) > 80
    misses = []
    for arch, name, size, published in rows:
        network = _on_meta(arch, size)
        counted = count_flops(network, (1, 3, size, size)) / 2e9
        # Published to three decimals: 0.04 for shufflenet_v2_x0_5 stands for 0.0395 to 0.0405.
        if abs(counted - published) > max(0.01 * published, 0.0005):
            misses.append(f"{arch} {name} at {size} px: {counted:.3f} GMACs, published {published}")
    assert not misses, "\n".join(misses)


def test_the_fused_attention_of_eval_mode_is_counted() -> None:
    layer = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    tokens = torch.randn(2, 10, 32)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.attention(x, x, x, need_weights=False)[0]
            return out

    fused = count_flops(SelfAttention(), tuple(tokens.shape))
    unfused = count_flops(SelfAttention().to("meta"), tuple(tokens.shape))
    # 4 projections of 10 tokens of 32 plus QK^T and AV, at 2 FLOPs per multiply-add, batch 2.
    assert fused == unfused == 2 * 2 * (4 * 10 * 32 * 32 + 2 * 10 * 10 * 32)

"""EMA arithmetic: an averaged copy of a model's tensors, one fused update, exchange by storage.

Kept apart from the wiring in `subscribers.ema` (as timm keeps `ModelEmaV3` apart from its
training loop) so that it can be tested and benchmarked without a bus.

The averaged tensors live beside the model's, on the same device and in the same dtype.
An update is one ``torch._foreach_lerp_`` per (device, dtype) group over tensor lists built
once; integer tensors (BatchNorm's ``num_batches_tracked``) are copied. Swapping averaged
and training weights exchanges the tensors' storage (``.data``), so no tensor is copied and
the same `nn.Parameter` objects stay in the model (the optimizer's state is keyed by them).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["ShadowWeights", "ema_decay"]


def ema_decay(updates: int, *, decay: float, warmup: bool, gamma: float, power: float) -> float:
    """The decay of the update that follows `updates` earlier ones.

    The first update (``updates == 0``) copies the weights, so the random initialisation
    never enters the average. With `warmup`, later ones follow timm's schedule
    ``1 - (1 + updates / gamma) ** -power`` clamped to `decay`; with ``power == 1`` and
    ``gamma == 1`` that is ``updates / (updates + 1)``: the plain mean of all updates so far.
    """
    if updates <= 0:
        return 0.0
    if not warmup:
        return decay
    return min(decay, 1.0 - float((1.0 + updates / gamma) ** -power))


class ShadowWeights:
    """The averaged copy of `model`'s state, paired tensor by tensor with the live one.

    Tracks every parameter and buffer that appears in ``model.state_dict()``, under its
    key there (tied tensors once, under each of their keys). Construction clones the
    model's current values: on a resume, the model then holds the averaged weights.
    """

    def __init__(self, model: nn.Module) -> None:
        owned = {id(tensor) for tensor in itertools.chain(model.parameters(), model.buffers())}
        slots: dict[int, int] = {}
        self._index: dict[str, int] = {}
        self._live: list[torch.Tensor] = []
        for name, tensor in model.state_dict(keep_vars=True).items():
            if id(tensor) not in owned:
                continue
            if id(tensor) not in slots:
                slots[id(tensor)] = len(self._live)
                self._live.append(tensor)
            self._index[name] = slots[id(tensor)]
        with torch.no_grad():
            self._shadow = [tensor.detach().clone() for tensor in self._live]
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        integers: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        for live, shadow in zip(self._live, self._shadow, strict=True):
            pair = (
                groups.setdefault((live.device, live.dtype), ([], []))
                if live.is_floating_point()
                else integers
            )
            pair[0].append(shadow)
            pair[1].append(live)
        self._floats = tuple(groups.values())
        self._integers = integers
        self.swapped = False
        """True while the model holds the averaged tensors and this object the training ones."""

    def update(self, decay: float) -> None:
        """``average = decay * average + (1 - decay) * model``; integers are copied."""
        if self.swapped:
            raise RuntimeError("EMA update while the averaged weights are in the model: swap them out first")
        with torch.no_grad():
            for shadows, lives in self._floats:
                if decay == 0.0:
                    torch._foreach_copy_(shadows, lives)
                else:
                    torch._foreach_lerp_(shadows, lives, 1.0 - decay)
            if self._integers[0]:
                torch._foreach_copy_(*self._integers)

    def exchange(self) -> None:
        """Swap the storage of averaged and training tensors: the model gets the other set."""
        for live, shadow in zip(self._live, self._shadow, strict=True):
            held = live.data
            live.data = shadow.data
            shadow.data = held
        self.swapped = not self.swapped

    def release_other(self) -> None:
        """Free the set the model does not hold; this object can then neither update, exchange nor save."""
        for shadow in self._shadow:
            shadow.data = torch.empty(0, dtype=shadow.dtype, device=shadow.device)
        self._floats, self._integers = (), ([], [])

    def averaged(self) -> dict[str, torch.Tensor]:
        """The averaged tensors by `state_dict` key (views, not copies)."""
        return self._by_name(self._live if self.swapped else self._shadow)

    def training(self) -> dict[str, torch.Tensor]:
        """The training tensors by `state_dict` key (views, not copies)."""
        return self._by_name(self._shadow if self.swapped else self._live)

    def load_training(self, training: Mapping[str, torch.Tensor]) -> None:
        """Copy saved training tensors into the model (which holds the averaged ones now)."""
        missing = sorted(set(self._index) - set(training))
        if missing:
            raise ValueError(
                f"EMA state: training weights lack {len(missing)} model key(s), first {missing[0]!r}"
            )
        if self.swapped:
            raise RuntimeError(
                "EMA state: cannot load training weights while the averaged ones are swapped in"
            )
        with torch.no_grad():
            for name, slot in self._index.items():
                self._live[slot].copy_(training[name])

    def load_averaged(self, averaged: Mapping[str, torch.Tensor]) -> None:
        """Copy saved averaged tensors into the average (the model holds the training ones now)."""
        missing = sorted(set(self._index) - set(averaged))
        if missing:
            raise ValueError(
                f"EMA state: averaged weights lack {len(missing)} model key(s), first {missing[0]!r}"
            )
        if self.swapped:
            raise RuntimeError("EMA state: cannot load averaged weights while they are swapped in")
        with torch.no_grad():
            for name, slot in self._index.items():
                self._shadow[slot].copy_(averaged[name])

    def _by_name(self, tensors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensors[slot].detach() for name, slot in self._index.items()}

"""The training sampler: a `WeightedRandomSampler` that records what it drew, epoch by epoch.

`make_sampler` builds the sampler a run trains with: class-balanced (each sample weighs
``1 / count(its class)``, drawn with replacement) or a shuffle (every sample once per
epoch, a seeded permutation drawn without replacement), seeded so that epoch
``e`` always draws the same indices, on every rank and after a resume.

Where the draw is recorded, and why it is the whole draw:

- With data-loader workers the sampler is still iterated in the main process (workers
  receive indices), so recording in `__iter__` sees every index.
- Under DDP, Lightning 2.6 wraps a custom sampler in ``DistributedSamplerWrapper``: each
  epoch every rank iterates the wrapped sampler once, in full, and keeps
  ``1 / world_size`` of the positions of that sequence. For training Lightning always
  shuffles those positions (seed ``PL_GLOBAL_SEED + epoch``) and pads the sequence by
  wrapping around to a multiple of ``world_size``. The sampler therefore records the
  full draw, the same on every rank because every rank seeds its generator alike; the
  part a rank trained on is what its training batches held, which the sampler tracking
  subscriber counts from `BatchEnd` on each rank.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

__all__ = [
    "Draw",
    "TrackingWeightedRandomSampler",
    "balanced_weights",
    "class_counts",
    "find_tracking_sampler",
    "make_sampler",
]


@attrs.frozen(kw_only=True, eq=False)
class Draw:
    """One pass over the sampler: the epoch it was drawn for and the indices, in order."""

    epoch: int
    indices: torch.Tensor


class TrackingWeightedRandomSampler(WeightedRandomSampler):
    """A `WeightedRandomSampler` that records every draw in `history`.

    Recording never changes what is drawn: each pass is the parent's own draw, kept
    before it is handed on. With `seed` given (instead of a `generator`), `set_epoch(e)`
    reseeds the generator with ``seed + e`` (the convention of `DistributedSampler`), so
    the draw of an epoch depends only on the seed and the epoch: identical on every rank,
    and the same again after a resume. Lightning calls `set_epoch` before every training
    epoch, with or without DDP.

    `history` keeps the last `max_history` draws (None keeps all; each draw holds
    `num_samples` int64 indices).
    """

    def __init__(
        self,
        weights: Sequence[float] | torch.Tensor,
        num_samples: int,
        replacement: bool = True,
        generator: torch.Generator | None = None,
        *,
        seed: int | None = None,
        max_history: int | None = 8,
    ) -> None:
        if seed is not None and generator is not None:
            raise ValueError("TrackingWeightedRandomSampler: give seed or generator, not both")
        if max_history is not None and max_history < 1:
            raise ValueError(
                f"TrackingWeightedRandomSampler: max_history must be >= 1 or None, got {max_history}"
            )
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        # torch annotates `weights` as a sequence but reads it with torch.as_tensor: a tensor is fine.
        super().__init__(cast("Sequence[float]", weights), num_samples, replacement, generator)
        self.seed = seed
        self.epoch = 0
        self.max_history = max_history
        self.history: list[Draw] = []

    def set_epoch(self, epoch: int) -> None:
        """Label the next draws with `epoch`; with a seed, make them depend on it alone."""
        self.epoch = epoch
        if self.seed is not None and self.generator is not None:
            self.generator.manual_seed(self.seed + epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        self.history.append(Draw(epoch=self.epoch, indices=torch.tensor(indices, dtype=torch.int64)))
        if self.max_history is not None and len(self.history) > self.max_history:
            del self.history[: len(self.history) - self.max_history]
        yield from indices

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the generator as bytes of its state, not as a `torch.Generator`.

        torch 2.14 cannot send a `torch.Generator` to a spawned process (as ``ddp_spawn``
        and spawned data-loader workers do): its pickled state tensor is freed before
        the child reads it ("unable to resize file", pytorch/pytorch#146828, open).
        """
        state = self.__dict__.copy()
        generator = state.pop("generator")
        state["generator_state"] = None if generator is None else generator.get_state().numpy().tobytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        raw = state.pop("generator_state")
        self.__dict__.update(state)
        self.generator = None
        if raw is not None:
            self.generator = torch.Generator()
            self.generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))

    @property
    def last_draw(self) -> Draw | None:
        """The most recent draw, or None before the first pass."""
        return self.history[-1] if self.history else None

    def expected_shares(self, targets: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
        """The share of draws each class should get, from the weights: sums per class over the total."""
        labels = torch.as_tensor(targets, dtype=torch.int64)
        totals = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, self.weights)
        return totals / totals.sum()


def balanced_weights(targets: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Per-sample weights ``1 / count(class of the sample)``: every class is drawn equally often."""
    labels = torch.as_tensor(targets, dtype=torch.int64)
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(
            f"balanced_weights: targets must be a non-empty 1-d sequence, got shape {tuple(labels.shape)}"
        )
    if int(labels.min()) < 0:
        raise ValueError(f"balanced_weights: class indices must be >= 0, got {int(labels.min())}")
    counts = torch.bincount(labels).to(torch.float64)
    return 1.0 / counts[labels]


def make_sampler(
    targets: Sequence[int] | torch.Tensor, balanced: bool, seed: int, num_samples: int | None = None
) -> TrackingWeightedRandomSampler:
    """The training sampler: `num_samples` draws (default: one per sample).

    Balanced weights each sample by ``1 / count(its class)`` and draws with replacement,
    so that a rare class's images come back within an epoch. Otherwise it shuffles:
    every sample weighs the same and is drawn without replacement, so an epoch of
    ``len(targets)`` draws trains on every image once (with replacement about a third
    would be missed each epoch); more draws than samples are refused.
    """
    count = len(targets) if num_samples is None else num_samples
    if balanced:
        return TrackingWeightedRandomSampler(balanced_weights(targets), count, replacement=True, seed=seed)
    if count > len(targets):
        raise ValueError(f"make_sampler: a shuffle draws at most {len(targets)} samples, asked for {count}")
    uniform = torch.ones(len(targets), dtype=torch.float64)
    return TrackingWeightedRandomSampler(uniform, count, replacement=False, seed=seed)


def class_counts(
    indices: torch.Tensor, targets: Sequence[int] | torch.Tensor, num_classes: int
) -> torch.Tensor:
    """How many of the drawn `indices` belong to each class (int64, length `num_classes`)."""
    labels = torch.as_tensor(targets, dtype=torch.int64)
    return torch.bincount(labels[indices], minlength=num_classes)


def find_tracking_sampler(sampler: Sampler[int] | None) -> TrackingWeightedRandomSampler | None:
    """The tracking sampler itself, or the one inside Lightning's ``DistributedSamplerWrapper``."""
    if isinstance(sampler, TrackingWeightedRandomSampler):
        return sampler
    # Lightning 2.6 keeps the wrapped sampler at `wrapper.dataset._sampler`
    # (lightning.fabric.utilities.distributed._DatasetSamplerWrapper); read it, never import Lightning.
    inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)
    return inner if isinstance(inner, TrackingWeightedRandomSampler) else None

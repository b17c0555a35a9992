"""The tracking sampler draws what torch draws, records it, and survives workers and DDP wrapping."""

from __future__ import annotations

import pickle

import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from scipy.stats import chisquare
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from harness.sampler import (
    TrackingWeightedRandomSampler,
    balanced_weights,
    class_counts,
    find_tracking_sampler,
    make_sampler,
    rank_share,
)

# 10:1 between the largest and the smallest class.
IMBALANCED = [0] * 200 + [1] * 60 + [2] * 20


def test_draws_exactly_what_weighted_random_sampler_draws() -> None:
    weights = torch.rand(50, generator=torch.Generator().manual_seed(1)).tolist()
    plain = WeightedRandomSampler(weights, 40, generator=torch.Generator().manual_seed(7))
    tracking = TrackingWeightedRandomSampler(weights, 40, generator=torch.Generator().manual_seed(7))

    for _ in range(3):
        expected = list(plain)
        assert list(tracking) == expected
        assert tracking.history[-1].indices.tolist() == expected

    assert len(tracking.history) == 3


def test_seeded_draw_depends_on_seed_and_epoch_alone() -> None:
    rank_0 = make_sampler(IMBALANCED, balanced=True, seed=3)
    rank_1 = make_sampler(IMBALANCED, balanced=True, seed=3)
    rank_0.set_epoch(0)
    list(rank_0)  # rank 0 drew once more before epoch 2: the draw must not depend on that
    rank_0.set_epoch(2)
    rank_1.set_epoch(2)
    plain = WeightedRandomSampler(
        balanced_weights(IMBALANCED).tolist(), len(IMBALANCED), generator=torch.Generator().manual_seed(3 + 2)
    )

    drawn = list(rank_0)

    assert drawn == list(rank_1) == list(plain)
    assert rank_0.last_draw is not None and rank_0.last_draw.epoch == 2


def test_successive_epochs_draw_differently() -> None:
    sampler = make_sampler(IMBALANCED, balanced=True, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_balanced_weights_are_inverse_class_counts() -> None:
    weights = balanced_weights([0, 0, 0, 1, 2, 2])
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0, 0.5, 0.5])


@pytest.mark.parametrize("targets", [[], [0, -1]])
def test_balanced_weights_reject_bad_targets(targets: list[int]) -> None:
    with pytest.raises(ValueError, match="balanced_weights"):
        balanced_weights(targets)


@pytest.mark.parametrize(
    ("balanced", "shares"), [(True, [1 / 3] * 3), (False, [200 / 280, 60 / 280, 20 / 280])]
)
def test_draws_follow_the_weights(balanced: bool, shares: list[float]) -> None:
    sampler = make_sampler(IMBALANCED, balanced=balanced, seed=0)
    counts = torch.zeros(3, dtype=torch.int64)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        list(sampler)
        counts += class_counts(sampler.history[-1].indices, IMBALANCED, 3)

    total = int(counts.sum())
    assert chisquare(counts.tolist(), [share * total for share in shares]).pvalue > 0.001
    assert sampler.expected_shares(IMBALANCED, 3).tolist() == pytest.approx(shares)


def test_unbalanced_draws_are_not_uniform() -> None:
    sampler = make_sampler(IMBALANCED, balanced=False, seed=0)
    counts = class_counts(torch.tensor(list(sampler)), IMBALANCED, 3)
    assert chisquare(counts.tolist()).pvalue < 0.001


def test_recording_works_with_two_workers() -> None:
    sampler = make_sampler([0, 1] * 24, balanced=False, seed=0)
    loader = DataLoader(TensorDataset(torch.arange(48)), batch_size=8, sampler=sampler, num_workers=2)

    seen = torch.cat([batch for (batch,) in loader])

    assert sampler.last_draw is not None
    assert seen.tolist() == sampler.last_draw.indices.tolist()


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_share_is_what_lightning_ddp_wrapper_yields(world_size: int) -> None:
    targets = [0] * 8 + [1] * 3  # 11 samples: the wrapper pads to a multiple of the world size
    for rank in range(world_size):
        sampler = make_sampler(targets, balanced=True, seed=5)
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=world_size, rank=rank, shuffle=False)
        wrapper.set_epoch(1)

        yielded = list(wrapper)

        assert find_tracking_sampler(wrapper) is sampler
        assert sampler.last_draw is not None and sampler.last_draw.epoch == 1
        assert len(sampler.last_draw.indices) == len(targets)
        assert rank_share(sampler.last_draw.indices, rank, world_size).tolist() == yielded


def test_history_keeps_the_last_draws_only() -> None:
    sampler = TrackingWeightedRandomSampler([1.0, 1.0], 4, seed=0, max_history=2)
    assert sampler.last_draw is None
    for epoch in range(5):
        sampler.set_epoch(epoch)
        list(sampler)
    assert [draw.epoch for draw in sampler.history] == [3, 4]


def test_pickled_sampler_draws_the_same() -> None:
    sampler = make_sampler(IMBALANCED, balanced=True, seed=9)
    copy = pickle.loads(pickle.dumps(sampler))
    sampler.set_epoch(4)
    copy.set_epoch(4)
    assert list(copy) == list(sampler)


def test_seed_and_generator_are_exclusive() -> None:
    with pytest.raises(ValueError, match="seed or generator"):
        TrackingWeightedRandomSampler([1.0], 1, generator=torch.Generator(), seed=0)


def test_find_tracking_sampler_ignores_other_samplers() -> None:
    assert find_tracking_sampler(WeightedRandomSampler([1.0], 1)) is None
    assert find_tracking_sampler(None) is None

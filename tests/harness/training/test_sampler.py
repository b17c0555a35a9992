"""The tracking sampler draws what torch draws, records it, and survives workers and DDP wrapping."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from scipy.stats import chisquare
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, WeightedRandomSampler

from harness.training.sampler import (
    TrackingWeightedRandomSampler,
    balanced_weights,
    class_counts,
    find_tracking_sampler,
    make_sampler,
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


def test_a_shuffle_trains_on_every_image_once_per_epoch() -> None:
    sampler = make_sampler(IMBALANCED, balanced=False, seed=0)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
        assert sorted(orders[-1]) == list(range(len(IMBALANCED)))
    assert orders[0] != orders[1] != orders[2]
    with pytest.raises(ValueError, match="at most 280"):
        make_sampler(IMBALANCED, balanced=False, seed=0, num_samples=281)


def test_recording_works_with_two_workers() -> None:
    sampler = make_sampler([0, 1] * 24, balanced=False, seed=0)
    loader = DataLoader(TensorDataset(torch.arange(48)), batch_size=8, sampler=sampler, num_workers=2)

    seen = torch.cat([batch for (batch,) in loader])

    assert sampler.last_draw is not None
    assert seen.tolist() == sampler.last_draw.indices.tolist()


@pytest.mark.parametrize("world_size", [2, 3])
def test_under_lightning_ddp_wrapping_ranks_share_one_full_draw(world_size: int) -> None:
    targets = [0] * 8 + [1] * 3  # 11 samples: the wrapper pads to a multiple of the world size
    draws, shares = [], []
    for rank in range(world_size):
        sampler = make_sampler(targets, balanced=True, seed=5)
        # As Lightning 2.6 wraps a custom training sampler: shuffle=True, seed from PL_GLOBAL_SEED.
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
        wrapper.set_epoch(1)

        shares.append(list(wrapper))

        assert find_tracking_sampler(wrapper) is sampler
        assert sampler.last_draw is not None and sampler.last_draw.epoch == 1
        draws.append(sampler.last_draw.indices.tolist())

    assert all(draw == draws[0] for draw in draws)
    assert len(draws[0]) == len(targets)
    union, full = Counter(index for share in shares for index in share), Counter(draws[0])
    assert not full - union  # every drawn sample went to some rank
    assert (union - full).total() == -len(targets) % world_size  # plus the padding


def test_history_keeps_the_last_draws_only() -> None:
    sampler = TrackingWeightedRandomSampler([1.0, 1.0], 4, seed=0, max_history=2)
    assert sampler.last_draw is None
    for epoch in range(5):
        sampler.set_epoch(epoch)
        list(sampler)
    assert [draw.epoch for draw in sampler.history] == [3, 4]


def test_pickled_sampler_goes_on_drawing_the_same() -> None:
    sampler = make_sampler(IMBALANCED, balanced=True, seed=9)
    list(sampler)  # the copy must carry the generator's position, not just its seed
    copy = pickle.loads(pickle.dumps(sampler))

    assert list(copy) == list(sampler)
    sampler.set_epoch(4)
    copy.set_epoch(4)
    assert list(copy) == list(sampler)
    assert "generator_state" in sampler.__getstate__()  # no torch.Generator in the pickle


def test_seed_and_generator_are_exclusive() -> None:
    with pytest.raises(ValueError, match="seed or generator"):
        TrackingWeightedRandomSampler([1.0], 1, generator=torch.Generator(), seed=0)


def test_find_tracking_sampler_ignores_other_samplers() -> None:
    assert find_tracking_sampler(WeightedRandomSampler([1.0], 1)) is None
    assert find_tracking_sampler(None) is None


class _IndexSet(Dataset[tuple[torch.Tensor, int]]):
    """Sample i is the feature [i] with class i % 2, so a batch says which samples it holds."""

    def __len__(self) -> int:
        return 21

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index)]), index % 2


class _Recording(L.LightningModule):
    """Saves, per rank and epoch, the samples it trained on and the sampler's full draw."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out
        self.layer = nn.Linear(1, 2)
        self.seen: list[int] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        self.seen += inputs[:, 0].long().tolist()
        return F.cross_entropy(self.layer(inputs), targets)

    def on_train_epoch_end(self) -> None:
        sampler = find_tracking_sampler(self.trainer.train_dataloader.sampler)  # type: ignore[union-attr]
        assert sampler is not None and sampler.last_draw is not None
        record = {
            "seen": self.seen,
            "draw": sampler.last_draw.indices.tolist(),
            "epoch": sampler.last_draw.epoch,
        }
        torch.save(record, self.out / f"rank{self.global_rank}_epoch{self.current_epoch}.pt")
        self.seen = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_under_real_ddp_every_rank_draws_alike_and_trains_on_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spawned ranks unpickle this module's classes by name: they need the repository on their path.
    monkeypatch.syspath_prepend(Path(__file__).resolve().parents[3])
    targets = [index % 2 for index in range(21)]
    loader = DataLoader(_IndexSet(), batch_size=4, sampler=make_sampler(targets, balanced=True, seed=11))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )

    trainer.fit(_Recording(tmp_path), train_dataloaders=loader)

    for epoch in range(2):
        ranks = [torch.load(tmp_path / f"rank{rank}_epoch{epoch}.pt") for rank in range(2)]
        assert ranks[0]["draw"] == ranks[1]["draw"]  # one seed: the same full draw on every rank
        assert ranks[0]["epoch"] == epoch  # Lightning called set_epoch
        union, full = Counter(ranks[0]["seen"] + ranks[1]["seen"]), Counter(ranks[0]["draw"])
        assert not full - union  # the ranks trained on the whole draw between them
        assert (union - full).total() == 1  # and on one padding sample (21 samples, 2 ranks)
    first, second = (torch.load(tmp_path / f"rank0_epoch{e}.pt")["draw"] for e in range(2))
    assert first != second


def test_num_samples_sets_the_length_of_each_draw() -> None:
    sampler = make_sampler(IMBALANCED, balanced=True, seed=0, num_samples=7)
    assert len(sampler) == 7
    assert len(list(sampler)) == 7
    with pytest.raises(ValueError, match="num_samples"):
        make_sampler(IMBALANCED, balanced=True, seed=0, num_samples=0)

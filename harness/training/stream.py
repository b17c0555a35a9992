"""Training from a streamed data set (`harness.io.stream`): litdata's dataset and loader.

`streamed_images` opens one split as a litdata ``StreamingDataset`` whose items are
decoded as training decodes a file (`harness.io.images.decode_rgb`) and go through the
same transforms; `streaming_loader` is litdata's ``StreamingDataLoader`` over it. The
loader has ``state_dict()`` / ``load_state_dict()``, so Lightning keeps its place in
the checkpoint's loop state and a resume mid-epoch continues the same sample order.
Shuffling is litdata's; a remote data set is cached under the node's own
``$HARNESS_CACHE``.

Under several processes (DDP, several nodes) training reads litdata's shards, every rank
the same number of whole batches (`harness.io.stream.read_as`); validation reads the
split by index, each rank a contiguous share (`RankShare`), so every image is counted
exactly once and the shares differ by one image at most.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import Dataset, DistributedSampler

from harness.io.images import decode_rgb
from harness.io.stream import is_uri, split_uri
from harness.training.augment import Transform

__all__ = [
    "Decode",
    "IndexedStream",
    "RankShare",
    "ResumableStreamingLoader",
    "streamed_images",
    "streaming_loader",
]


class Decode:
    """A streamed item (encoded bytes, class index, key) as `(transformed tensor, class index)`; picklable."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, int]:
        image = decode_rgb(item["image"], str(item["key"]))
        tensor: torch.Tensor = self.transform(image)
        return tensor, int(item["label"])


class ResumableStreamingLoader(StreamingDataLoader):  # type: ignore[misc]  # litdata ships no types
    """litdata's loader whose epoch after a resumed one starts afresh (litdata 0.2.76).

    ``load_state_dict`` sets the loader's ``restore`` flag, and litdata clears it only when
    an epoch's iterator runs to its end; Lightning stops an epoch after the loader's length
    in batches, before the end, so the flag stays set and every epoch after a resume
    replays the restored, spent one: no batches (Lightning-AI/litData#770, the same flag
    with ``ParallelStreamingDataset``). Here the flag is cleared when the iterator of the
    epoch after the restored one starts. Lightning's own restore of the loader's state is
    skipped in the harness's runs (Lightning-AI/litData#775): `ImageDataModule` carries it.
    """

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._restored_epoch_started = False

    def __iter__(self) -> Iterator[Any]:
        if getattr(self, "restore", False) and getattr(self, "_restored_epoch_started", False):
            self.restore = False
        self._restored_epoch_started = True
        yield from super().__iter__()


def streamed_images(
    root: str, split: str, transform: Transform, *, cache: Path, shuffle: bool, seed: int
) -> StreamingDataset:
    """`split` of the streamed data set at `root`; a remote one is cached under `cache`."""
    location = split_uri(root, split)
    where = None
    if is_uri(root):
        where = str(cache / "streams" / hashlib.sha256(location.encode()).hexdigest()[:16])
    return StreamingDataset(
        location, cache_dir=where, shuffle=shuffle, seed=seed, transform=Decode(transform)
    )


def streaming_loader(
    dataset: StreamingDataset,
    *,
    batch_size: int,
    workers: int,
    drop_last: bool,
    collate_fn: Callable[[list[tuple[torch.Tensor, int]]], Any] | None,
    worker_init_fn: Callable[[int], None],
) -> ResumableStreamingLoader:
    """litdata's loader over `dataset`, with the options the ImageFolder loader takes."""
    return ResumableStreamingLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        # Persistent workers under this loader hung the process at exit (litdata 0.2.76): each
        # epoch starts its workers afresh, as litdata's own examples do.
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        collate_fn=collate_fn,
        worker_init_fn=worker_init_fn,
    )


class IndexedStream(Dataset[tuple[torch.Tensor, int]]):
    """The `size` items of a streamed split read by index, decoded and transformed as streamed."""

    def __init__(self, dataset: StreamingDataset, size: int) -> None:
        self.dataset = dataset
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item: tuple[torch.Tensor, int] = self.dataset[index]
        return item


class RankShare(DistributedSampler[int]):
    """Process `rank`'s contiguous share of `dataset`'s indices among `world_size`: each index once.

    The shares differ by one index at most (never padded with repeats, as Lightning's
    default sampler does), and a rank reads a run of neighbouring items: of a stream,
    the fewest chunks. A `DistributedSampler`, so that Lightning keeps it as it is
    rather than splitting it again between the ranks.
    """

    def __init__(self, dataset: IndexedStream, *, world_size: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        size = len(dataset)
        self.start = size * rank // world_size
        self.stop = size * (rank + 1) // world_size

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

"""Images per second of the harness's training loader against ImageFolder + DataLoader, same transforms.

    .venv/bin/python -m bench.loader
    .venv/bin/python -m bench.loader --smoke      # 128 images of 32 px: checks that it runs

The tree: 10,000 JPEGs of 224 x 224 pixels (64 distinct images, copied) in 10 class
folders. The harness's loader is the real one: `harness.training.data.scan`, then
`ImageDataModule.train_dataloader()` with the default ``[data]`` settings (but
``image_size = 224``): batches of 64, ``num_workers = "auto"`` (the cores minus one, at
most 8) with persistent workers, pinned memory on CUDA only, the class-balanced
sampler of `harness.training.sampler.make_sampler`, and `train_transform` with the default
``[augment]`` table (random resized crop, colour jitter). Anchor: torchvision's
``ImageFolder(root, transform=...)`` given that same transform, in a plain `DataLoader`
with the same batch size, workers, persistence and pinning, and a `RandomSampler`.

Each timed round is one epoch of the same number of images for both (the samplers draw
that many), so no batch is still being made when the other loader's round starts; the
first epoch of each is a warm-up (it starts the workers). The loaders take turns, epoch
by epoch; the figure is the median epoch, per image, on two clocks: wall time, and the
CPU time of the main process and the workers (read from ``/proc``, so on Linux only),
which other processes on a shared machine barely disturb. The goal, on both: the
harness at least 0.95x the anchor's images per second, a time ratio of at most 1 / 0.95.
A last row, without a goal, gives the median of the rounds' own wall-time ratios (the
anchor's median time multiplied by it): the two epochs of a round run back to back, so
a burst of load that slows the whole round cancels out of their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler
from torchvision.datasets import ImageFolder

from bench._timing import Row, interleaved_epochs, median_of, rows_table
from bench._trees import cache_at, jpegs, write_tree
from harness.settings import AugmentSettings, DataSettings
from harness.training.augment import train_transform
from harness.training.data import ImageDataModule, loader_workers, scan
from harness.training.sampler import make_sampler

__all__ = ["main", "rows"]

ANCHOR = "torchvision ImageFolder + DataLoader"
HARNESS = "harness training loader"
GOAL = 1 / 0.95


def loaders(root: Path, image_size: int, epoch: int, cache: str) -> dict[str, DataLoader[Any]]:
    """The harness's training loader and the anchor over the tree at `root`, `epoch` images an epoch."""
    settings = DataSettings(root=str(root), image_size=image_size)
    augment = AugmentSettings()
    with cache_at(cache):
        info, _ = scan(settings, seed=0)
    preprocessing = settings.preprocessing()
    sampler = make_sampler(info.train_targets, balanced=True, seed=0, num_samples=epoch)
    harness = ImageDataModule(info, preprocessing, settings, sampler, augment).train_dataloader()
    workers = loader_workers(settings.num_workers)
    images = ImageFolder(str(root), transform=train_transform(preprocessing, augment))
    anchor = DataLoader(
        images,
        batch_size=settings.batch_size,
        sampler=RandomSampler(images, num_samples=epoch),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    return {ANCHOR: anchor, HARNESS: harness}


def _children_cpu() -> float | None:
    """CPU seconds of this process's live children (the loaders' workers), from ``/proc``; None off Linux."""
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        pids = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The fields after the command name, which is in parentheses and may hold spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _epoch(loader: DataLoader[Any]) -> dict[str, float]:
    """Seconds of one pass over `loader`: wall time and, where ``/proc`` tells it, CPU of every process."""
    children = _children_cpu()
    cpu, start = time.process_time(), time.perf_counter()
    for _ in loader:
        pass
    spent = {"wall": time.perf_counter() - start}
    after = _children_cpu()
    if children is not None and after is not None:
        spent["CPU"] = time.process_time() - cpu + after - children
    return spent


def rows(
    *,
    smoke: bool = False,
    progress: Callable[[str], None] | None = None,
    details: Callable[[str], None] | None = None,
    repeats: int | None = None,
) -> list[Row]:
    """Seconds per image of the harness's training loader and the anchor, as `Row` objects."""
    files, classes, size, epoch = (128, 4, 32, 64) if smoke else (10_000, 10, 224, 1024)
    rounds = repeats or (1 if smoke else 9)
    with tempfile.TemporaryDirectory() as directory:
        root = write_tree(Path(directory) / "data", files, classes, jpegs(64, size))
        timed = loaders(root, size, epoch, str(Path(directory) / "cache"))
        workers = timed[HARNESS].num_workers
        if progress:
            progress(f"loader: {files:,} JPEGs of {size} px, {workers} worker(s), epochs of {epoch} images")
        per_image, samples = interleaved_epochs(
            {name: partial(_epoch, loader) for name, loader in timed.items()},
            rounds=rounds,
            images=epoch,
            progress=progress,
            label="loader",
        )
        del timed
    if details:
        details(
            "\n".join(
                f"{name}: {1 / seconds:.1f} images/s, {clock} (median of {rounds} epochs of {epoch}, "
                f"{workers} worker(s))"
                for clock, by_name in per_image.items()
                for name, seconds in by_name.items()
            )
        )
    benchmark = f"loader: {files:,} JPEGs, {size} px, batch 64, {workers} worker(s)"
    found = [
        Row(
            benchmark=benchmark,
            variant=f"{name} (anchor)" if name == ANCHOR else name,
            anchor=ANCHOR,
            seconds=seconds,
            anchor_seconds=by_name[ANCHOR],
            unit=f"image, {clock}",
            goal=GOAL if name == HARNESS else None,
        )
        for clock, by_name in per_image.items()
        for name, seconds in by_name.items()
    ]
    # A round's two epochs ran back to back, so their ratio cancels the load that moved
    # the whole round; its median is steadier than the ratio of the two medians.
    paired = median_of(
        [
            ours / theirs
            for ours, theirs in zip(samples[HARNESS]["wall"], samples[ANCHOR]["wall"], strict=True)
        ]
    )
    found.append(
        Row(
            benchmark=benchmark,
            variant=f"{HARNESS}, paired: the median of each round's ratio",
            anchor=ANCHOR,
            seconds=per_image["wall"][ANCHOR] * paired,
            anchor_seconds=per_image["wall"][ANCHOR],
            unit="image, wall",
        )
    )
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loader", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny tree, one round")
    parser.add_argument("--repeats", type=int, help="timed epochs of each loader; the median is kept")
    args = parser.parse_args(argv)
    print(rows_table(rows(smoke=args.smoke, repeats=args.repeats, progress=print, details=print)))


if __name__ == "__main__":
    main()

"""Images per second of the streamed training loader (litdata chunks) against the ImageFolder one.

    .venv/bin/python -m bench.stream
    .venv/bin/python -m bench.stream --smoke      # 160 images of 32 px: checks that it runs

The tree: 2,560 JPEGs of 224 x 224 pixels (64 distinct images, copied) in 10 class
folders, split 80/20 by the run's seeded fraction; `harness data optimize` writes it as a
streamed data set (`harness.io.stream`: the files' bytes in 64 MB litdata chunks). Both
loaders are the harness's own, `ImageDataModule.train_dataloader()` with the default
``[data]`` settings (but ``image_size = 224``) and `train_transform` with the default
``[augment]`` table: batches of 64, ``num_workers = "auto"``. The anchor reads the tree's
files through the shuffling sampler; the variant reads the chunks through litdata's
``StreamingDataset`` (shuffled) and ``StreamingDataLoader``, decoding the same bytes.

Each timed round is one epoch of the 2,048 training images for both, the loaders taking
turns (the first epoch of each is a warm-up); the figure is the median epoch per image,
on the wall clock and in CPU time (the main process and its workers, live or ended). No
goal: on a local disk the two read the same bytes, the stream from fewer, larger files.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from bench._timing import Row, interleaved_epochs, rows_table
from bench._trees import cache_at, jpegs, write_tree
from bench.loader import _children_cpu
from harness.data import optimize
from harness.settings import AugmentSettings, DataSettings
from harness.training.data import ImageDataModule, scan
from harness.training.sampler import make_sampler

__all__ = ["main", "rows"]

ANCHOR = "ImageFolder files, harness loader"
STREAM = "litdata chunks, harness streaming loader"


def _reaped_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _epoch(loader: DataLoader[Any]) -> dict[str, float]:
    """Seconds of one pass over `loader`: wall, and CPU of this process and its workers, live or ended.

    The streaming loader's workers end with each epoch (not persistent), so their CPU time is
    read from the ended children's account as well as from ``/proc`` for live ones.
    """
    live, reaped = _children_cpu(), _reaped_cpu()
    cpu, start = time.process_time(), time.perf_counter()
    for _ in loader:
        pass
    spent = {"wall": time.perf_counter() - start}
    after = _children_cpu()
    if live is not None and after is not None:
        spent["CPU"] = time.process_time() - cpu + after - live + _reaped_cpu() - reaped
    return spent


def loaders(tree: Path, stream: Path, image_size: int) -> dict[str, DataLoader[Any]]:
    """The harness's training loader over the files of `tree` and over the stream written from it."""
    augment = AugmentSettings()
    made: dict[str, DataLoader[Any]] = {}
    for name, root in ((ANCHOR, tree), (STREAM, stream)):
        settings = DataSettings(root=str(root), image_size=image_size)
        info, _ = scan(settings, seed=0)
        sampler = None if info.stream else make_sampler(info.train_targets, balanced=False, seed=0)
        module = ImageDataModule(info, settings.preprocessing(), settings, sampler, augment)
        made[name] = module.train_dataloader()
    return made


def rows(
    *,
    smoke: bool = False,
    progress: Callable[[str], None] | None = None,
    details: Callable[[str], None] | None = None,
    repeats: int | None = None,
) -> list[Row]:
    """Seconds per image of the streaming loader and the ImageFolder loader, as `Row` objects."""
    files, classes, size = (160, 4, 32) if smoke else (2_560, 10, 224)
    rounds = repeats or (1 if smoke else 3)
    with tempfile.TemporaryDirectory() as directory, cache_at(str(Path(directory) / "cache")):
        tree = write_tree(Path(directory) / "data", files, classes, jpegs(64, size))
        stream = Path(directory) / "stream"
        written = optimize(tree, stream)
        timed = loaders(tree, stream, size)
        epoch = written["train"]
        workers = timed[ANCHOR].num_workers
        if progress:
            progress(f"stream: {epoch:,} JPEGs of {size} px a round, {workers} worker(s)")
        per_image, _ = interleaved_epochs(
            {name: partial(_epoch, loader) for name, loader in timed.items()},
            rounds=rounds,
            images=epoch,
            progress=progress,
            label="stream",
        )
        del timed
    if details:
        details(
            "\n".join(
                f"{name}: {1 / seconds:.1f} images/s, {clock} (median of {rounds} epochs of {epoch})"
                for clock, by_name in per_image.items()
                for name, seconds in by_name.items()
            )
        )
    benchmark = f"stream: {epoch:,} JPEGs, {size} px, batch 64, {workers} worker(s)"
    return [
        Row(
            benchmark=benchmark,
            variant=f"{name} (anchor)" if name == ANCHOR else name,
            anchor=ANCHOR,
            seconds=seconds,
            anchor_seconds=by_name[ANCHOR],
            unit=f"image, {clock}",
        )
        for clock, by_name in per_image.items()
        for name, seconds in by_name.items()
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny tree, one round")
    parser.add_argument("--repeats", type=int, help="timed epochs of each loader; the median is kept")
    args = parser.parse_args(argv)
    print(rows_table(rows(smoke=args.smoke, repeats=args.repeats, progress=print, details=print)))


if __name__ == "__main__":
    main()

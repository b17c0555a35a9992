"""The data scan at 10,000 and 100,000 files, first and second start, against torchvision's listing.

    .venv/bin/python -m bench.scan
    .venv/bin/python -m bench.scan --smoke      # 300 files: checks that it runs

Anchor: ``torchvision.datasets.ImageFolder(root)``, whose construction lists the tree
(``os.walk`` and a suffix test per file) and checks nothing. Against it, on the same tree
of tiny JPEGs (8x8, each one different, as a real data set's are) in class folders,
taking turns round by round (the order rotated each round), each figure the median on
two clocks: wall time, and CPU time (of this process, and of the first start's forked
checkers), which the other processes of a shared machine disturb less:

- the second start: `harness.training.data.scan` with the scan cache of an earlier start
  (``$HARNESS_CACHE``), the tree unchanged: it lists the tree, stats every file, finds
  every verdict in the cache and splits train from validation (the goal: at most 2x
  the anchor);
- the first start: the same with an empty cache each time, so every file is opened and
  checked (in forked processes over the cores);
- both again with the fit-start duplicate check off (``[data].check_duplicates = false``):
  on, a first start decodes and hashes every file's pixels and a second start reads the
  digests from the cache and groups them (the goal: a few percent on a second start);
- its parts, without a goal: the listing alone (`harness.io.images.image_entries`), and the
  listing with one ``stat`` per file, which the cache needs to see that a file changed
  (on a virtual machine a ``stat`` costs about as much as the anchor spends per file).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from torchvision.datasets import ImageFolder

from bench._timing import Row, median_of, rows_table
from bench._trees import cache_at, jpegs, write_tree
from harness.io.images import image_entries
from harness.settings import DataSettings
from harness.training.data import scan

__all__ = ["main", "rows"]

ANCHOR = "torchvision ImageFolder(root)"
SECOND = "harness scan, second start (tree unchanged)"
FIRST = "harness scan, first start (empty cache)"
SECOND_OFF = "second start, duplicate check off"
FIRST_OFF = "first start, duplicate check off"
LISTING = "harness listing alone (image_entries)"
STATTED = "harness listing + one stat per file"
SIZES = ((10_000, 20), (100_000, 100))
"""(files, class folders) of the trees timed."""


def candidates(root: Path, caches: Path) -> dict[str, Callable[[], object]]:
    """Each variant as a call on the tree at `root`; caches are made under `caches`."""
    settings = DataSettings(root=str(root))
    unchecked = DataSettings(root=str(root), check_duplicates=False)
    warm, warm_off = str(caches / "warm"), str(caches / "warm_off")
    for cache, data in ((warm, settings), (warm_off, unchecked)):
        with cache_at(cache):
            scan(data, seed=0)
    folders = sorted(path for path in root.iterdir() if path.is_dir())

    def second() -> None:
        with cache_at(warm):
            scan(settings, seed=0)

    def first() -> None:
        with cache_at(tempfile.mkdtemp(dir=caches)):
            scan(settings, seed=0)

    def second_off() -> None:
        with cache_at(warm_off):
            scan(unchecked, seed=0)

    def first_off() -> None:
        with cache_at(tempfile.mkdtemp(dir=caches)):
            scan(unchecked, seed=0)

    def listing() -> list[os.DirEntry[str]]:
        return [entry for folder in folders for entry in image_entries(folder)]

    def statted() -> None:
        for entry in listing():
            entry.stat()

    return {
        ANCHOR: lambda: ImageFolder(str(root)),
        SECOND: second,
        SECOND_OFF: second_off,
        FIRST: first,
        FIRST_OFF: first_off,
        LISTING: listing,
        STATTED: statted,
    }


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the first start's pool)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(
    candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Median seconds per call of each candidate on two clocks, wall and CPU, in rotating rounds."""
    names = list(candidates)
    samples: dict[str, dict[str, list[float]]] = {
        "wall": {n: [] for n in names},
        "CPU": {n: [] for n in names},
    }
    for index in range(warmup + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            cpu, start = _cpu(), time.perf_counter()
            candidates[name]()
            wall, spent = time.perf_counter() - start, _cpu() - cpu
            if index >= warmup:
                samples["wall"][name].append(wall)
                samples["CPU"][name].append(spent)
    return {clock: {n: median_of(v) for n, v in by_name.items()} for clock, by_name in samples.items()}


def rows(
    *,
    smoke: bool = False,
    progress: Callable[[str], None] | None = None,
    repeats: int | None = None,
    files: Sequence[int] = (),
) -> list[Row]:
    """Seconds per scan of each variant and tree size (`files` of `SIZES`, default all), as `Row` objects."""
    sizes = ((300, 4),) if smoke else tuple(size for size in SIZES if not files or size[0] in files)
    found: list[Row] = []
    for count, classes in sizes:
        with tempfile.TemporaryDirectory() as directory:
            root = write_tree(Path(directory) / "data", count, classes, jpegs(count, 8))
            caches = Path(directory) / "caches"
            caches.mkdir()
            if progress:
                progress(f"scan: {count:,} files written in {classes} class folders; timing")
            rounds = repeats or (1 if smoke else 9 if count <= 10_000 else 5)
            medians = timed(candidates(root, caches), rounds)
        for clock, by_name in medians.items():
            found += [
                Row(
                    benchmark=f"scan: {count:,} files, {classes} classes",
                    variant=f"{name} (anchor)" if name == ANCHOR else name,
                    anchor=ANCHOR,
                    seconds=seconds,
                    anchor_seconds=by_name[ANCHOR],
                    unit=f"scan, {clock}",
                    goal=2.0 if name == SECOND else None,
                )
                for name, seconds in by_name.items()
            ]
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scan", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny tree, one round")
    parser.add_argument("--repeats", type=int, help="timed rounds per size; the median is kept")
    parser.add_argument(
        "--files", type=int, nargs="+", default=[], choices=[size for size, _ in SIZES], help="tree sizes"
    )
    args = parser.parse_args(argv)
    print(rows_table(rows(smoke=args.smoke, repeats=args.repeats, progress=print, files=args.files)))


if __name__ == "__main__":
    main()

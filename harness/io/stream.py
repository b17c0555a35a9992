"""A streamed data set: an ImageFolder tree optimized into litdata chunks, one folder per split.

``harness data optimize SRC DST`` writes it (`optimize_tree`); ``[data].root = DST`` (a
local folder, or a URI litdata reads: ``s3://``, ``gs://``, ...) trains from it. Its
layout::

    DST/labels.json        the label map, as a run directory's (`write_label_map`)
    DST/samples.json       every split's (key, class index) pairs in litdata's order, the
                           files skipped as unreadable and the class folders left out
    DST/train/index.json   litdata's index and chunks, one folder per split
    DST/val/  DST/test/

An item of a split is ``{"image": <the file's encoded bytes>, "label": <class index>, "key": ...}``:
chunks stay the size of the files, and the dataset decodes them as training reads a file
(`harness.io.images.decode_rgb`). A key is the file's path under SRC (``train/cat/1.png``).
`is_stream` finds the layout by its marker (the label map and ``train/index.json``).
litdata (``pip install "harness[stream]"``) and torch are imported only by the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from harness.core.errors import DataError, SettingsError
from harness.core.layout import RunLayout
from harness.io.artifacts import atomic_path, write_label_map, write_text
from harness.io.image_tree import split_of

if TYPE_CHECKING:
    from harness.core.context import DatasetInfo, LeftOutClass

__all__ = [
    "MANIFEST",
    "SPLITS",
    "Manifest",
    "is_stream",
    "is_uri",
    "materialise_split",
    "read_as",
    "read_manifest",
    "require_litdata",
    "split_uri",
    "write_stream",
]

MANIFEST = "samples.json"
"""The file beside the label map that lists every split's samples."""

SPLITS = ("train", "val", "test")
CHUNK_BYTES = "64MB"
"""litdata's chunk size: a remote reader fetches whole chunks."""
INDEX = "index.json"
"""litdata's index file in each split folder."""


def is_uri(root: str) -> bool:
    """Whether `root` names a remote location (``s3://bucket/x``) rather than a local path."""
    return "://" in root


def require_litdata(where: str) -> None:
    """A `SettingsError` naming `where` when litdata is not installed."""
    try:
        import litdata  # noqa: F401
    except ImportError:
        raise SettingsError(
            f'{where}: a streamed data set needs litdata; pip install "harness[stream]"'
        ) from None


def read_as(dataset: Any, *, world_size: int, rank: int, num_nodes: int, drop_last: bool) -> None:
    """Make the litdata ``StreamingDataset`` `dataset` yield process `rank`'s share of `world_size`.

    litdata 0.2.76 reads the ranks once, when the dataset is made (``_DistributedEnv.detect()``:
    the process group if one is open, overridden by ``WORLD_SIZE`` / ``GLOBAL_RANK`` /
    ``NNODES``). A run makes its datasets before Lightning opens the process group, so
    under ``ddp`` every rank believed itself alone and streamed the whole split (a
    different batch count per rank: a collective mismatch in gloo); after it, a reader in
    one process of several streams only its share. The caller says which: the trainer's
    ranks when a loader is made, one process alone to read a whole split. With
    `drop_last`, every rank gets the same number of whole batches (litdata drops the
    rest); without it every item goes to exactly one rank, the remainder to the last.
    """
    from litdata.utilities.env import _DistributedEnv

    dataset.distributed_env = _DistributedEnv(world_size=world_size, global_rank=rank, num_nodes=num_nodes)
    dataset.drop_last = drop_last
    dataset.shuffler = None  # its shares are computed (and cached) for the ranks it was made with


def _label_map_name() -> str:
    return RunLayout(Path()).labels.name


def is_stream(root: str) -> bool:
    """Whether `root` is a streamed data set: a URI, or a folder of the label map and ``train/index.json``."""
    if is_uri(root):
        return True
    folder = Path(root).expanduser()
    return (folder / _label_map_name()).is_file() and (folder / "train" / INDEX).is_file()


def split_uri(root: str, split: str) -> str:
    """The location of `split`'s litdata folder under `root`."""
    return f"{root.rstrip('/')}/{split}"


@attrs.frozen(kw_only=True)
class Manifest:
    """What ``samples.json`` records: the classes and each split's samples, in litdata's order."""

    classes: tuple[str, ...]
    splits: dict[str, tuple[tuple[str, int], ...]]
    skipped: tuple[str, ...] = ()
    left_out: tuple[LeftOutClass, ...] = ()

    def info(self, root: str) -> DatasetInfo:
        """The run's `DatasetInfo`: keys for paths, `stream` set to `root`."""
        from harness.core.context import DatasetInfo

        return DatasetInfo(
            root=Path(root),
            train=self.splits["train"],
            val=self.splits["val"],
            test=self.splits.get("test", ()),
            skipped=tuple(Path(path) for path in self.skipped),
            left_out=self.left_out,
            stream=root,
        )


def _read_text(location: str) -> str:
    if is_uri(location):
        import fsspec

        with fsspec.open(location, "r", encoding="utf-8") as handle:
            return str(handle.read())
    return Path(location).read_text(encoding="utf-8")


def read_manifest(root: str, where: str) -> Manifest:
    """The classes and samples of the streamed data set at `root`; a `DataError` starting with `where`."""
    from harness.core.context import LeftOutClass

    try:
        labels = json.loads(_read_text(f"{root.rstrip('/')}/{_label_map_name()}"))
        listed = json.loads(_read_text(f"{root.rstrip('/')}/{MANIFEST}"))
        classes = tuple(str(name) for name in labels["classes"])
        splits = {
            split: tuple((str(key), int(target)) for key, target in samples)
            for split, samples in listed["splits"].items()
        }
        left_out = tuple(LeftOutClass(**entry) for entry in listed.get("left_out", ()))
        skipped = tuple(str(path) for path in listed.get("skipped", ()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{where}: not a readable streamed data set ({type(error).__name__}: {error}); "
            "write one with `harness data optimize SRC DST`"
        ) from None
    if "train" not in splits or "val" not in splits:
        raise DataError(f"{where}: {MANIFEST} lists no train or no val split; optimize the tree again")
    return Manifest(classes=classes, splits=splits, skipped=skipped, left_out=left_out)


def _write_split(samples: Sequence[tuple[str, str, int]], output: Path, workers: int) -> None:
    """Write `samples` (key, path, class) as litdata chunks in `output`, in their order.

    litdata's own writer, in this process: the order of the chunks is the order of the
    list (`samples.json` relies on it); `workers` threads read the files ahead of it.
    """
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(output), chunk_bytes=CHUNK_BYTES)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index, (data, (key, _, target)) in enumerate(
            zip(pool.map(lambda sample: Path(sample[1]).read_bytes(), samples), samples, strict=True)
        ):
            writer.add_item(index, {"image": data, "label": target, "key": key})
    writer.done()
    writer.merge()


def write_stream(
    info: DatasetInfo, classes: Sequence[str], source: Path, destination: Path, *, workers: int, seed: int = 0
) -> dict[str, int]:
    """Write the scanned `info` of the tree at `source` as a streamed data set at `destination`.

    Each split is written in a seeded random order: litdata shuffles the order of the
    chunks and, within a window of items, their order, so a split written class by class
    would train on batches of one or two classes.

    Written into a temporary folder beside `destination`, renamed at the end: a failure
    leaves nothing behind. Returns the images written per split.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        index = dict(enumerate(classes))
        splits: dict[str, list[tuple[str, int]]] = {}
        for split, samples in (("train", info.train), ("val", info.val), ("test", info.test)):
            if not samples:
                continue
            keyed = [
                (Path(os.path.relpath(path, source)).as_posix(), path, target) for path, target in samples
            ]
            random.Random(seed).shuffle(keyed)
            (work / split).mkdir()
            _write_split(keyed, work / split, workers)
            splits[split] = [(key, target) for key, _, target in keyed]
        write_label_map(work, [index[i] for i in range(len(index))])
        listed = {
            "source": str(source),
            "splits": splits,
            "skipped": [str(path) for path in info.skipped],
            "left_out": [attrs.asdict(left) for left in info.left_out],
        }
        write_text(work / MANIFEST, json.dumps(listed, separators=(",", ":")) + "\n")
        work.rename(destination)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {split: len(samples) for split, samples in splits.items()}


def materialise_split(root: str, split: str, cache: Path) -> Path:
    """`split` of the streamed data set at `root` as a folder of class folders under `cache`, written once.

    Evaluation scores files (the ONNX model and the checkpoint alike); the split is read
    from the stream once into the node's cache (``$HARNESS_CACHE``), its files named by
    their keys (``test/cat/1.png``), and a marker written last says it is complete.
    """
    from litdata import StreamingDataset

    manifest = read_manifest(root, f"[data].root = {root!r}")
    samples = manifest.splits.get(split, ())
    name = hashlib.sha256(f"{root}\0{split}".encode()).hexdigest()[:16]
    folder = cache / "streams" / name
    marker = folder / ".complete"
    first = samples[0][0].split("/")[0] if samples else ""
    # Keys of a split tree start with its split folder (``test/cat/1.png``); a fraction's do not.
    top = folder / first if split_of(Path(first)) is not None else folder
    if marker.is_file():
        return top
    dataset = StreamingDataset(split_uri(root, split))
    # The whole split, also on rank zero of a run whose process group is still open.
    read_as(dataset, world_size=1, rank=0, num_nodes=1, drop_last=False)
    for (key, _), item in zip(samples, dataset, strict=True):
        with atomic_path(folder / key) as tmp:
            tmp.write_bytes(item["image"])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{len(samples)} images of {root} {split}\n")
    return top

"""Image data: an ImageFolder tree (or the embedded digits set) as a Lightning data module.

The tree is one folder per class. When the folders under `root` are split folders
(`train/`, one of `val/`, `valid/` or `validation/`, and optionally `test/`, in any
case), each holds class folders and they are the split; `test/` is kept for evaluation
and never trained on. Otherwise the class folders under `root` are split by a seeded,
stratified fraction. A tree that mixes split and class folders, or has split folders
but no training or no validation split, is refused: training on classes named "train"
and "val" is never what was meant. Class folders in `val/` or `test/` that `train/` lacks
stop the run, naming them, or are left out with a warning (`[data].unknown_classes`).

Every file is checked once, before training: an unreadable image (corrupt, or past
Pillow's decompression-bomb limit) is reported by path and either stops the run (the
default) or is skipped with a count. The same check decodes each new file and keeps a
digest of its pixels (cached with the verdict): images that are the same in two splits
(leakage) or under two classes are named in one warning (`[data].check_duplicates`).

`root` may instead name a streamed data set (`harness.io.stream`, written by ``harness
data optimize``, whose files were checked on the way): its splits are read with litdata
(`harness.training.stream`), shuffled by litdata rather than drawn by a sampler.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Callable, Sequence, Sized
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from typing_extensions import override

from harness.core.context import DatasetInfo, LeftOutClass
from harness.core.errors import DataError, SettingsError
from harness.core.preprocessing import Preprocessing
from harness.io.artifacts import atomic_path
from harness.io.image_tree import class_folders, split_folders
from harness.io.images import examine, image_entries, load_rgb
from harness.io.stream import is_stream, is_uri, read_as, read_manifest, require_litdata
from harness.settings import AugmentSettings, DataSettings, Settings
from harness.training.augment import BatchMixer, Transform, eval_transform, train_transform
from harness.training.duplicates import duplicate_warning
from harness.training.gpu_decode import EncodedFiles, collate_encoded, decode_batch
from harness.training.networks import normalization
from harness.training.scan_cache import cache_file, check_files
from harness.training.stop_signal import start_data_worker

__all__ = [
    "ImageDataModule",
    "ImageFiles",
    "cache_dir",
    "loader_workers",
    "materialise_digits",
    "run_preprocessing",
    "scan",
    "writable_cache_dir",
]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where the embedded data set is materialised: ``$HARNESS_CACHE`` or the XDG cache."""
    explicit = os.environ.get("HARNESS_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness"


def writable_cache_dir() -> Path:
    """`cache_dir`, made if missing, after writing a file in it; `SettingsError` naming it if that fails.

    Checked before anything else is written: the embedded data set and the scan cache
    live there, and a read-only mount or a path under a regular file would otherwise
    fail half-way, with a traceback.
    """
    cache = cache_dir()
    where = "HARNESS_CACHE" if os.environ.get("HARNESS_CACHE") else "the cache folder (HARNESS_CACHE unset)"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=cache, prefix=".write-check-")
        os.close(handle)
        Path(probe).unlink()
    except OSError as error:
        raise SettingsError(
            f"{where} = {str(cache)!r}: cannot write there ({error.strerror or error}); "
            "set HARNESS_CACHE to a writable folder"
        ) from None
    return cache


def materialise_digits(cache: Path | None = None) -> Path:
    """scikit-learn's digits (1,797 real 8x8 images, shipped in its wheel) as an ImageFolder tree.

    Written once; a marker file, written last, says the tree is complete.
    """
    root = (cache or writable_cache_dir()) / "digits"
    marker = root / ".complete"
    if marker.exists():
        return root
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    for index, (image, target) in enumerate(zip(pixels, digits.target, strict=True)):
        path = root / str(int(target)) / f"digit_{index:04d}.png"
        if not path.exists():
            with atomic_path(path) as tmp:
                Image.fromarray(image, mode="L").save(tmp, format="PNG")
    marker.write_text("1797 images\n")
    return root


def run_preprocessing(settings: Settings) -> Preprocessing:
    """A run's evaluation preprocessing: `[data]`'s size and resize, the mean and std of its weights.

    Training, the export and a checkpoint's evaluation all take it from here.
    """
    norm = normalization(settings.model.arch, settings.model.weights)
    return attrs.evolve(settings.data.preprocessing(), mean=norm.mean, std=norm.std)


Files = dict[str, list[os.DirEntry[str]]]
"""A split's image files by class folder name."""


def _files_by_class(root: Path, classes: Sequence[str]) -> Files:
    found: Files = {}
    for name in classes:
        folder = root / name
        found[name] = image_entries(folder) if folder.is_dir() else []
    return found


def _unknown_classes(
    settings: DataSettings, where: str, split_files: dict[str, Files], classes: Sequence[str]
) -> tuple[LeftOutClass, ...]:
    """Stop at, or drop (with a warning) and return, class folders of `split_files` that training lacks."""
    known = set(classes)
    unknown = {
        split: {name: files for name, files in by_class.items() if name not in known}
        for split, by_class in split_files.items()
    }
    listed = "; ".join(
        f"{split}/: {', '.join(repr(name) for name in sorted(extra))}"
        for split, extra in unknown.items()
        if extra
    )
    if not listed:
        return ()
    if settings.unknown_classes == "stop":
        raise DataError(
            f"{where}: class folders not in train/ ({listed}); the model cannot predict them. "
            'Rename or remove them, or set [data].unknown_classes = "skip" to leave their images out'
        )
    count = sum(len(files) for extra in unknown.values() for files in extra.values())
    log.warning(
        "leaving out %d image(s) of class folders not in train/ ([data].unknown_classes = skip): %s",
        count,
        listed,
    )
    left_out: list[LeftOutClass] = []
    for split, extra in unknown.items():
        for name in sorted(extra):
            del split_files[split][name]
            left_out.append(LeftOutClass(split=split, name=name, images=len(extra[name])))
    return tuple(left_out)


def scan(settings: DataSettings, seed: int) -> tuple[DatasetInfo, tuple[str, ...]]:
    """Find classes and images, check every file, and split train from validation (and test).

    Raises `DataError` naming the path for a missing root, no class folders, a single
    class, a class with no images, split folders without a train or validation split,
    class folders of `val/` or `test/` missing from `train/` (with ``unknown_classes =
    "stop"``) or (with ``on_corrupt = "stop"``) unreadable files; `SettingsError` when the
    cache folder (``$HARNESS_CACHE``) cannot be written.
    """
    cache = writable_cache_dir()
    if settings.root and is_stream(settings.root):
        return _scan_stream(settings.root)
    root = Path(settings.root).expanduser() if settings.root else materialise_digits(cache)
    where = f"[data].root = {str(root)!r}"
    if not root.is_dir():
        raise DataError(f"{where}: no such directory")
    splits = split_folders(root, where)
    class_root = splits["train"] if splits else root
    classes = tuple(p.name for p in class_folders(class_root))
    if not classes:
        inside = f" in {class_root.name}/" if splits else ""
        raise DataError(f"{where}: no class folders found{inside} (expected one folder of images per class)")
    if len(classes) < 2:
        raise DataError(f"{where}: only one class ({classes[0]!r}); a classifier needs at least two")
    train_files = _files_by_class(class_root, classes)
    for name, files in train_files.items():
        if not files:
            raise DataError(f"{where}: class folder {str(class_root / name)!r} holds no images")
    held_out: dict[str, Files] = {}
    left_out: tuple[LeftOutClass, ...] = ()
    if splits:
        for split in ("val", "test"):
            if split in splits:
                names = [p.name for p in class_folders(splits[split])]
                held_out[split] = _files_by_class(splits[split], names)
        left_out = _unknown_classes(settings, where, held_out, classes)
    val_files = held_out.get("val", {})
    test_files = held_out.get("test", {})

    skipped: list[Path] = []
    splits_files = (*train_files.values(), *val_files.values(), *test_files.values())
    every = [entry for files in splits_files for entry in files]
    check = partial(examine, decode=settings.check_duplicates)
    checked = check_files(every, check, cache=cache_file(cache, root), digests=settings.check_duplicates)
    bad = checked.bad
    if bad:
        if settings.on_corrupt == "stop":
            listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(
                f"{where}: {len(bad)} unreadable image file(s): {listed}{more}. "
                'Fix or remove them, or set [data].on_corrupt = "skip" to train without them'
            )
        skipped = [Path(path) for path, _ in bad]
        drop = {path for path, _ in bad}
        train_files, val_files, test_files = (
            {name: [e for e in entries if e.path not in drop] for name, entries in files.items()}
            for files in (train_files, val_files, test_files)
        )

    index = {name: i for i, name in enumerate(classes)}
    test = _samples(test_files, index)
    if splits:
        train, val = _samples(train_files, index), _samples(val_files, index)
    else:
        train, val = _stratified_split(_paths(train_files), index, settings.val_fraction, seed)
    if not val:
        raise DataError(f"{where}: the validation split is empty; add images or raise [data].val_fraction")
    # A fixed, seeded order that mixes the classes: a partial validation (limit_val_batches)
    # then measures every class, not the first ones in folder order.
    random.Random(seed + 1).shuffle(val)
    if settings.check_duplicates:
        warning = duplicate_warning(root, {"train": train, "val": val, "test": test}, classes, checked.shared)
        if warning is not None:
            log.warning("%s", warning)
    info = DatasetInfo(
        root=root,
        train=tuple(train),
        val=tuple(val),
        test=tuple(test),
        skipped=tuple(skipped),
        left_out=left_out,
    )
    return info, classes


def _scan_stream(root: str) -> tuple[DatasetInfo, tuple[str, ...]]:
    """The samples a streamed data set lists (its files were checked when it was optimized)."""
    location = root if is_uri(root) else str(Path(root).expanduser().resolve())
    where = f"[data].root = {root!r}"
    require_litdata(where)
    manifest = read_manifest(location, where)
    if not manifest.splits["val"]:
        raise DataError(f"{where}: the validation split is empty; optimize a tree with images in val/")
    return manifest.info(location), manifest.classes


def _paths(files: Files) -> dict[str, list[str]]:
    return {name: [entry.path for entry in entries] for name, entries in files.items()}


def _samples(files: Files, index: dict[str, int]) -> list[tuple[str, int]]:
    return [(entry.path, index[name]) for name, entries in files.items() for entry in entries]


def _stratified_split(
    files: dict[str, list[str]], index: dict[str, int], fraction: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    rng = random.Random(seed)
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    for name, paths in files.items():
        shuffled = list(paths)
        rng.shuffle(shuffled)
        n_val = min(max(1, round(len(shuffled) * fraction)), len(shuffled) - 1) if len(shuffled) > 1 else 0
        val += [(p, index[name]) for p in shuffled[:n_val]]
        train += [(p, index[name]) for p in shuffled[n_val:]]
    return train, val


class ImageFiles(Dataset[tuple[torch.Tensor, int]]):
    """`(path, class index)` pairs read as normalised tensors of one size.

    `transform` defaults to the evaluation preprocessing of `preprocessing`.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        preprocessing: Preprocessing,
        transform: Transform | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform or eval_transform(preprocessing)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        image = load_rgb(path)
        tensor: torch.Tensor = self.transform(image)
        return tensor, target


def loader_workers(setting: int | str) -> int:
    """``[data].num_workers`` as a count: "auto" is the cores this process may use minus one, at most 8."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cores - 1, 8))


class ImageDataModule(L.LightningDataModule):
    """Train and validation loaders over a scanned data set, with an optional sampler.

    With `augment`, training images go through `train_transform` (and `BatchMixer` when
    MixUp or CutMix is on); validation always gets the evaluation preprocessing. A last
    training batch of a single image is dropped: BatchNorm cannot train on one.
    """

    def __init__(
        self,
        info: DatasetInfo,
        preprocessing: Preprocessing,
        settings: DataSettings,
        sampler: Sampler[int] | None = None,
        augment: AugmentSettings | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        transform = None if augment is None else train_transform(preprocessing, augment)
        self.train_samples = info.train
        self.val_samples = info.val
        self.train_set: Dataset[tuple[torch.Tensor, int]]
        self.val_set: Dataset[tuple[torch.Tensor, int]]
        self.streamed = info.stream is not None
        if info.stream is not None:
            if settings.decode == "gpu":
                # Streamed items are decoded in the loader's workers (`harness.training.stream.Decode`).
                raise SettingsError(
                    f'[data].decode = "gpu" decodes image files in batches on the device, but [data].root = '
                    f'{info.stream!r} is streamed and decoded by the loader\'s workers: set decode = "cpu"'
                )
            if sampler is not None:
                raise ValueError(
                    "ImageDataModule: a streamed data set is shuffled by litdata, not by a sampler"
                )
            from harness.training.stream import streamed_images

            cache, evaluation = cache_dir(), eval_transform(preprocessing)
            self.train_set = streamed_images(
                info.stream, "train", transform or evaluation, cache=cache, shuffle=True, seed=seed
            )
            self.val_set = streamed_images(
                info.stream, "val", evaluation, cache=cache, shuffle=False, seed=seed
            )
        else:
            self.train_set = ImageFiles(info.train, preprocessing, transform)
            self.val_set = ImageFiles(info.val, preprocessing)
        self.eval_transform = eval_transform(preprocessing)
        self.train_transform = transform or self.eval_transform
        self.settings = settings
        self.sampler = sampler
        self._train_loader: DataLoader[tuple[torch.Tensor, int]] | None = None
        self._stream_state: dict[str, Any] | None = None
        classes = 1 + max((target for _, target in (*info.train, *info.val)), default=0)
        self.mixer = BatchMixer(augment, classes) if augment is not None and augment.mixes else None

    def preview(self, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` training images after augmentation (and mixing), and their class indices.

        Draws from a generator of its own (`seed`), so training sees the same random
        numbers with or without a preview; the images cycle through the classes.
        """
        by_class: dict[int, list[int]] = {}
        for index, (_, target) in enumerate(self.train_samples):
            by_class.setdefault(target, []).append(index)
        queues = [list(indices) for _, indices in sorted(by_class.items())]
        picked: list[int] = []
        while len(picked) < count and any(queues):
            picked += [queue.pop(0) for queue in queues if queue][: count - len(picked)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            samples = [self.train_set[index] for index in picked]
            if self.mixer is not None:
                inputs, targets, _ = self.mixer(samples)
                return inputs, targets
        return torch.stack([image for image, _ in samples]), torch.tensor([t for _, t in samples])

    def _drop_last(self, trainer_world_size: int) -> bool:
        drawn = len(self.sampler) if isinstance(self.sampler, Sized) else len(self.train_samples)
        per_rank = -(-drawn // max(1, trainer_world_size))
        return per_rank % self.settings.batch_size == 1 and per_rank > 1

    @override
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``[data].decode = "gpu"``: a batch of files' bytes decoded and transformed on the device."""
        if self.settings.decode != "gpu" or self.trainer is None:
            return batch
        data, targets = batch
        training = self.trainer.training
        transform = self.train_transform if training else self.eval_transform
        inputs = decode_batch(data, transform, self.trainer.strategy.root_device)
        if training and self.mixer is not None:
            return self.mixer(list(zip(inputs, targets.tolist(), strict=True)))
        return inputs, targets

    def _loader(
        self, dataset: Dataset[tuple[torch.Tensor, int]], *, train: bool, shards: Sampler[int] | None = None
    ) -> DataLoader[tuple[torch.Tensor, int]]:
        """A loader of `dataset`: litdata's for a streamed split, else a `DataLoader` drawing
        from `shards` (a validation rank's share) or the run's sampler."""
        workers = loader_workers(self.settings.num_workers)
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        collate: Callable[..., Any] | None = self.mixer if train and self.mixer is not None else None
        if self.streamed and shards is None:
            from litdata import StreamingDataset

            from harness.training.stream import streaming_loader

            assert isinstance(dataset, StreamingDataset)
            # Under several processes every rank trains the same number of whole batches (each
            # step is a collective); their validation shares are `val_dataloader`'s.
            drop_last = train and (world > 1 or self._drop_last(world))
            nodes = self.trainer.num_nodes if self.trainer is not None else 1
            read_as(dataset, world_size=world, rank=rank, num_nodes=nodes, drop_last=drop_last)
            return streaming_loader(
                dataset,
                batch_size=self.settings.batch_size,
                workers=workers,
                drop_last=drop_last,
                collate_fn=collate,
                worker_init_fn=partial(start_data_worker, rank=rank),
            )
        if self.settings.decode == "gpu" and isinstance(dataset, ImageFiles):
            dataset, collate = EncodedFiles(dataset.samples), collate_encoded
        return DataLoader(
            dataset,
            batch_size=self.settings.batch_size,
            sampler=self.sampler if train else shards,
            shuffle=train and self.sampler is None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=train and self._drop_last(world),
            collate_fn=collate,
            worker_init_fn=partial(start_data_worker, rank=rank),
        )

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        loader = self._train_loader = self._loader(self.train_set, train=True)
        if self._stream_state is not None:
            loader.load_state_dict(self._stream_state)  # type: ignore[attr-defined]
            self._stream_state = None
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The streamed training loader's place in its epoch (litdata's state); empty for a file tree.

        Lightning keeps it in the checkpoint and hands it back on resume before training
        starts. Its own copy of the loader's state in the loop state is not applied when
        the optimizer's schedule has read the loader's length first (the loader then
        exists before the checkpoint is read), so the data module carries it.
        """
        loader = self._train_loader
        if not self.streamed or loader is None:
            return {}
        return {"stream": loader.state_dict()}  # type: ignore[attr-defined]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the streamed epoch where `state_dict` left it (at once, or when the loader is made)."""
        state = state_dict.get("stream")
        if state is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)  # type: ignore[attr-defined]
        else:
            self._stream_state = state

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        trainer = self.trainer
        if trainer is None or trainer.world_size < 2:
            return self._loader(self.val_set, train=False)
        world, rank = trainer.world_size, trainer.global_rank
        if self.streamed:
            # litdata's own shards give the last rank every image left over after whole
            # batches (up to ``world x batch_size - 1``): on a small split a rank can get none
            # and skip the collectives the others wait in at the epoch's end. The split is
            # read by index instead, each rank a contiguous share: of a stream, the fewest chunks.
            from litdata import StreamingDataset

            from harness.training.stream import IndexedStream, RankShare

            assert isinstance(self.val_set, StreamingDataset)
            items = IndexedStream(self.val_set, len(self.val_samples))
            return self._loader(items, train=False, shards=RankShare(items, world_size=world, rank=rank))
        # Lightning's default DistributedSampler pads the shards with repeated samples, which
        # a confusion matrix would count twice; this one gives uneven shards, each sample once.
        shards = UnrepeatedDistributedSampler(self.val_set, num_replicas=world, rank=rank, shuffle=False)
        return self._loader(self.val_set, train=False, shards=shards)

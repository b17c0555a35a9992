"""Image data: an ImageFolder tree (or the embedded digits set) as a Lightning data module.

The tree is one folder per class. When `root` holds `train/` and `val/` folders those
are the split; otherwise the class folders under `root` are split by a seeded,
stratified fraction. Every file is checked once, before training: an unreadable image is
reported by path and either stops the run (the default) or is skipped with a count.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence, Sized
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.core.context import DatasetInfo
from harness.core.errors import DataError
from harness.core.preprocessing import Preprocessing
from harness.io.artifacts import atomic_path
from harness.io.images import image_files, load_rgb
from harness.settings import AugmentSettings, DataSettings
from harness.training.augment import BatchMixer, Transform, eval_transform, train_transform

__all__ = [
    "ImageDataModule",
    "ImageFiles",
    "cache_dir",
    "materialise_digits",
    "scan",
]


def cache_dir() -> Path:
    """Where the embedded data set is materialised: ``$HARNESS_CACHE`` or the XDG cache."""
    explicit = os.environ.get("HARNESS_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness"


def materialise_digits(cache: Path | None = None) -> Path:
    """scikit-learn's digits (1,797 real 8x8 images, shipped in its wheel) as an ImageFolder tree.

    Written once; a marker file, written last, says the tree is complete.
    """
    root = (cache or cache_dir()) / "digits"
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


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_by_class(root: Path, classes: Sequence[str]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for name in classes:
        folder = root / name
        found[name] = image_files(folder) if folder.is_dir() else []
    return found


def _unreadable(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def scan(settings: DataSettings, seed: int) -> tuple[DatasetInfo, tuple[str, ...]]:
    """Find classes and images, check every file, and split train from validation.

    Raises `DataError` naming the path for a missing root, no class folders, a single
    class, a class with no images, or (with ``on_corrupt = "stop"``) unreadable files.
    """
    root = Path(settings.root).expanduser() if settings.root else materialise_digits()
    where = f"[data].root = {str(root)!r}"
    if not root.is_dir():
        raise DataError(f"{where}: no such directory")
    presplit = (root / "train").is_dir() and (root / "val").is_dir()
    class_root = root / "train" if presplit else root
    classes = tuple(p.name for p in _class_folders(class_root))
    if not classes:
        raise DataError(f"{where}: no class folders found (expected one folder of images per class)")
    if len(classes) < 2:
        raise DataError(f"{where}: only one class ({classes[0]!r}); a classifier needs at least two")
    train_files = _files_by_class(class_root, classes)
    val_files = _files_by_class(root / "val", classes) if presplit else {}
    for name, files in train_files.items():
        if not files:
            raise DataError(f"{where}: class folder {str(class_root / name)!r} holds no images")

    skipped: list[Path] = []
    bad = [
        (path, reason)
        for files in (*train_files.values(), *val_files.values())
        for path in files
        if (reason := _unreadable(path)) is not None
    ]
    if bad:
        if settings.on_corrupt == "stop":
            listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise DataError(
                f"{where}: {len(bad)} unreadable image file(s): {listed}{more}. "
                'Fix or remove them, or set [data].on_corrupt = "skip" to train without them'
            )
        skipped = [path for path, _ in bad]
        drop = set(skipped)
        train_files = {k: [p for p in v if p not in drop] for k, v in train_files.items()}
        val_files = {k: [p for p in v if p not in drop] for k, v in val_files.items()}

    index = {name: i for i, name in enumerate(classes)}
    if presplit:
        train = [(p, index[name]) for name, files in train_files.items() for p in files]
        val = [(p, index[name]) for name, files in val_files.items() for p in files]
    else:
        train, val = _stratified_split(train_files, index, settings.val_fraction, seed)
    if not val:
        raise DataError(f"{where}: the validation split is empty; add images or raise [data].val_fraction")
    # A fixed, seeded order that mixes the classes: a partial validation (limit_val_batches)
    # then measures every class, not the first ones in folder order.
    random.Random(seed + 1).shuffle(val)
    return DatasetInfo(root=root, train=tuple(train), val=tuple(val), skipped=tuple(skipped)), classes


def _stratified_split(
    files: dict[str, list[Path]], index: dict[str, int], fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    rng = random.Random(seed)
    train: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
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
        samples: Sequence[tuple[Path, int]],
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
    ) -> None:
        super().__init__()
        transform = None if augment is None else train_transform(preprocessing, augment)
        self.train_set = ImageFiles(info.train, preprocessing, transform)
        self.val_set = ImageFiles(info.val, preprocessing)
        self.settings = settings
        self.sampler = sampler
        classes = 1 + max((target for _, target in (*info.train, *info.val)), default=0)
        self.mixer = BatchMixer(augment, classes) if augment is not None and augment.mixes else None

    def preview(self, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` training images after augmentation (and mixing), and their class indices.

        Draws from a generator of its own (`seed`), so training sees the same random
        numbers with or without a preview; the images cycle through the classes.
        """
        by_class: dict[int, list[int]] = {}
        for index, (_, target) in enumerate(self.train_set.samples):
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
        drawn = len(self.sampler) if isinstance(self.sampler, Sized) else len(self.train_set)
        per_rank = -(-drawn // max(1, trainer_world_size))
        return per_rank % self.settings.batch_size == 1 and per_rank > 1

    def _loader(self, dataset: ImageFiles, *, train: bool) -> DataLoader[tuple[torch.Tensor, int]]:
        workers = self.settings.num_workers
        world = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(
            dataset,
            batch_size=self.settings.batch_size,
            sampler=self.sampler if train else None,
            shuffle=train and self.sampler is None,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=train and self._drop_last(world),
            collate_fn=self.mixer if train and self.mixer is not None else None,
        )

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        loader = self._loader(self.val_set, train=False)
        trainer = self.trainer
        if trainer is None or trainer.world_size < 2:
            return loader
        # Lightning's default DistributedSampler pads the shards with repeated samples, which
        # a confusion matrix would count twice; this one gives uneven shards, each sample once.
        shards = UnrepeatedDistributedSampler(
            self.val_set, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )
        return DataLoader(
            self.val_set,
            batch_size=self.settings.batch_size,
            sampler=shards,
            num_workers=loader.num_workers,
            persistent_workers=loader.persistent_workers,
        )

"""An ImageFolder tree read one way: its split folders (in any case) and its class folders.

Training (`harness.training.data.scan`) and evaluation (`harness.evaluation.data`, and a
run's end-of-run test score) find a tree's splits here, so they cannot disagree about
which folder is ``Test/``. A split folder is named ``train``, one of ``val``, ``valid`` or
``validation``, or ``test``, compared in lower case; each holds class folders. The image
files come from `harness.io.images` (`image_entries`), and a file is unreadable when
`harness.io.images.unreadable` says so (decompression-bomb guard included). Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import DataError

__all__ = ["SPLIT_NAMES", "class_folders", "find_split", "split_folders", "split_of"]

SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}
"""The folder names (compared in lower case) that mark a tree as split, by split."""

_SPLIT_OF = {alias: split for split, aliases in SPLIT_NAMES.items() for alias in aliases}


def class_folders(root: Path) -> list[Path]:
    """The visible folders directly under `root`, sorted by name (a class each, or a split each)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_of(folder: Path) -> str | None:
    """The split a folder's name marks (``train``, ``val``, ``test``), or None for a class folder."""
    return _SPLIT_OF.get(folder.name.lower())


def find_split(root: Path, split: str) -> Path | None:
    """The folder of `split` under `root` (``Test/`` for ``"test"``), or None when there is none."""
    for folder in class_folders(root):
        if split_of(folder) == split:
            return folder
    return None


def split_folders(root: Path, where: str) -> dict[str, Path] | None:
    """The split folders under `root` by split, or None for a tree of class folders.

    A `DataError` starting with `where` when the tree mixes split and class folders, has
    two folders of one split, or has split folders but no training or no validation split.
    """
    folders = class_folders(root)
    splits = [folder for folder in folders if split_of(folder) is not None]
    if not splits:
        return None
    others = [folder.name for folder in folders if folder not in splits]
    named = ", ".join(f"{folder.name}/" for folder in splits)
    if others:
        raise DataError(
            f"{where}: mixes split folders ({named}) with other folders ({', '.join(others)}); "
            "expected either split folders holding class folders, or class folders only"
        )
    found: dict[str, Path] = {}
    for folder in splits:
        split = _SPLIT_OF[folder.name.lower()]
        if split in found:
            raise DataError(
                f"{where}: two {split} split folders, {found[split].name}/ and {folder.name}/; keep one"
            )
        found[split] = folder
    for split, needed in (("train", "a train/ folder"), ("val", "a val/, valid/ or validation/ folder")):
        if split not in found:
            raise DataError(
                f"{where}: holds only split folders ({named}) and no {split} split; expected {needed} "
                "of class folders beside it, or the class folders themselves under the root "
                "(then [data].val_fraction splits them)"
            )
    return found

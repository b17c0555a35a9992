"""The labelled images an evaluation scores, with class folders matched to the model's classes.

DATA is an ImageFolder tree, read as training reads one (`harness.io.image_tree`). Its
test split (``test/`` in any case) is scored when it has one (or the folder `split`
names), otherwise the tree itself. Class folders are matched to the
model's label map by name; a class the model does not know is an error naming it, or,
with ``unknown="count"``, its images are counted and left out. Every file is opened
once before anything runs, with training's check (`harness.io.images.unreadable`, which
counts an image past Pillow's decompression-bomb limit as unreadable): an unreadable one
is an error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs

from harness.core.errors import DataError
from harness.io.image_tree import SPLIT_NAMES, class_folders, find_split
from harness.io.images import IMAGE_SUFFIXES, image_files, unreadable

__all__ = ["EvaluationData", "Unknown", "load_evaluation_data", "split_folder", "test_split_of"]

Unknown = Literal["error", "count"]


@attrs.frozen(kw_only=True)
class EvaluationData:
    """The scored images as `(path, model class index)` pairs, and what was left out."""

    folder: Path
    split: str | None
    samples: tuple[tuple[Path, int], ...]
    unknown: dict[str, int] = attrs.field(factory=dict)

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.samples]

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]


def test_split_of(root: Path) -> Path | None:
    """A training tree's held-out test split (``test/`` in any case) beside its training split, or None."""
    if not root.is_dir() or find_split(root, "train") is None:
        return None
    return find_split(root, "test")


def split_folder(data: Path, split: str | None, model_classes: Sequence[str]) -> tuple[Path, str | None]:
    """The folder to score: ``data/split``, else the test split when present, else `data`.

    Split folders are found as training finds them (`harness.io.image_tree`): in any case,
    ``valid/`` and ``validation/`` for ``val``; `split` may name any sub-folder.
    """
    if not data.is_dir():
        raise DataError(f"DATA {str(data)!r}: no such directory")
    if split is not None:
        folder = data / split
        if not folder.is_dir():
            aliases = SPLIT_NAMES.get(split.lower(), (split.lower(),))
            matches = [f for f in class_folders(data) if f.name.lower() in aliases]
            if not matches:
                raise DataError(f"--split {split!r}: no folder {str(folder)!r}")
            folder = matches[0]
        return folder, split
    test = find_split(data, "test")
    if test is not None and test.name not in model_classes:
        return test, "test"
    found = [find_split(data, name) for name in ("train", "val")]
    splits = [other.name for other in found if other is not None and other.name not in model_classes]
    if splits:
        raise DataError(
            f"DATA {str(data)!r}: has {' and '.join(splits)} folder(s) but no test/; "
            f"name the split to score with --split (e.g. --split {splits[-1]})"
        )
    return data, None


def load_evaluation_data(
    data: Path, model_classes: Sequence[str], *, split: str | None = None, unknown: Unknown = "error"
) -> EvaluationData:
    """Find, check and label the images of `data` against `model_classes` (see the module)."""
    folder, split = split_folder(data, split, model_classes)
    where = f"DATA {str(folder)!r}"
    classes = [p.name for p in class_folders(folder)]
    if not classes:
        raise DataError(f"{where}: no class folders found (expected one folder of images per class)")
    index = {name: i for i, name in enumerate(model_classes)}
    strangers = [name for name in classes if name not in index]
    if strangers and unknown == "error":
        known = ", ".join(repr(name) for name in model_classes[:10])
        more = ", ..." if len(model_classes) > 10 else ""
        raise DataError(
            f"{where}: class folder(s) {', '.join(repr(n) for n in strangers)} not in the model's "
            f"label map ({known}{more}); use --unknown count to leave their images out"
        )
    samples: list[tuple[Path, int]] = []
    left_out: dict[str, int] = {}
    for name in classes:
        files = image_files(folder / name)
        if name in index:
            samples += [(path, index[name]) for path in files]
        else:
            left_out[name] = len(files)
    if not samples:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"{where}: holds no image files of the model's classes (looked for {suffixes})")
    bad = [(path, reason) for path, _ in samples if (reason := unreadable(path)) is not None]
    if bad:
        listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DataError(f"{where}: {len(bad)} unreadable image file(s): {listed}{more}")
    return EvaluationData(folder=folder, split=split, samples=tuple(samples), unknown=left_out)

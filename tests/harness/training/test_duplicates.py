"""The fit-start duplicate check: leaked and conflicting copies named in one warning, none on clean data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.core.testing import write_imagefolder
from harness.settings import DataSettings
from harness.training.data import materialise_digits, scan

WARNED = "the same decoded image in two splits"


def planted_tree(root: Path) -> Path:
    """train/val/test of two classes of distinct noise, with one leaked and one conflicting copy.

    The leaked copy is a BMP re-save of a training PNG in val/ (same pixels, other bytes);
    the conflicting one is a training image of class a copied under class b.
    """
    for split in ("train", "val", "test"):
        write_imagefolder(root / split, {"a": 4, "b": 4}, size=8, seed=len(split))
    Image.open(root / "train" / "a" / "img_001.png").save(root / "val" / "b" / "leaked.bmp")
    (root / "train" / "b" / "conflict.png").write_bytes((root / "train" / "a" / "img_002.png").read_bytes())
    return root


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_a_leaked_and_a_conflicting_copy_are_named_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = planted_tree(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        scan(DataSettings(root=str(root)), seed=0)
    (line,) = [message for message in warnings_of(caplog) if WARNED in message]
    assert "\n" not in line
    assert "train/a/img_001.png (train, a) = val/b/leaked.bmp (val, b)" in line
    assert "train/a/img_002.png (train, a) = train/b/conflict.png (train, b)" in line
    assert "two splits (1 group(s)" in line and "two classes (2 group(s))" in line
    assert f"harness audit {root}" in line


def test_the_check_can_be_turned_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = planted_tree(tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        scan(DataSettings(root=str(root), check_duplicates=False), seed=0)
        assert warnings_of(caplog) == []
        scan(DataSettings(root=str(root)), seed=0)  # the cache made without digests is completed
    assert len([message for message in warnings_of(caplog) if WARNED in message]) == 1


def test_a_copy_split_into_train_and_val_of_an_unsplit_tree_leaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_imagefolder(tmp_path / "data", {"a": 10, "b": 10}, size=8)
    for n in range(10):
        (root / "a" / f"copy_{n}.png").write_bytes((root / "a" / "img_000.png").read_bytes())
    with caplog.at_level(logging.WARNING):
        scan(DataSettings(root=str(root), val_fraction=0.5), seed=0)
    (line,) = warnings_of(caplog)
    assert "two splits (1 group(s)" in line and "two classes (0 group(s))" in line
    assert "(+8 more)" in line, "a group of 11 names 3 files and counts the rest"


def test_clean_trees_raise_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_imagefolder(tmp_path / "data", {"a": 6, "b": 6}, size=8)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "a" / "same_name.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "b" / "same_name.png")
    with caplog.at_level(logging.WARNING):
        scan(DataSettings(root=str(root)), seed=0)
        scan(DataSettings(root=str(materialise_digits(tmp_path / "cache"))), seed=0)
    assert warnings_of(caplog) == [], "the embedded digits hold no exact duplicate across splits or classes"


def test_a_truncated_jpeg_that_passes_the_structural_check_is_unreadable_once_decoded(tmp_path: Path) -> None:
    from harness.io.images import examine

    path = tmp_path / "cut.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:2000])
    assert examine(path, decode=False) == (None, None), "Image.verify does not decode a JPEG"
    reason, digest = examine(path)
    assert reason is not None and "truncated" in reason and digest is None

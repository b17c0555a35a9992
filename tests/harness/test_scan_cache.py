"""The scan's file checks: once per unchanged file, in parallel when many, bad ones always named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from harness.training import scan_cache
from harness.training.scan_cache import cache_file, unreadable_files


class Counting:
    """A check that counts its calls and finds files named ``bad*`` unreadable."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> str | None:
        self.calls += 1
        return "OSError: truncated" if path.name.startswith("bad") else None


def tree(root: Path, good: int = 5) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(good):
        path = root / f"img_{i}.png"
        Image.new("L", (2, 2), i).save(path)
        paths.append(path)
    bad = root / "bad_0.png"
    bad.write_bytes(b"not a png")
    return [*paths, bad]


def test_a_second_start_on_an_unchanged_tree_checks_nothing_and_still_names_the_bad_file(
    tmp_path: Path,
) -> None:
    paths = tree(tmp_path / "data")
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    first, second = Counting(), Counting()
    expected = [(paths[-1], "OSError: truncated")]
    assert unreadable_files(paths, first, cache=cache) == expected
    assert unreadable_files(paths, second, cache=cache) == expected
    assert (first.calls, second.calls) == (len(paths), 0)


def test_a_changed_file_is_checked_again(tmp_path: Path) -> None:
    paths = tree(tmp_path / "data")
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    unreadable_files(paths, Counting(), cache=cache)
    paths[0].write_bytes(b"now broken, and a different size")
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    check = Counting()
    unreadable_files(paths, check, cache=cache)
    assert check.calls == 2


def test_a_cache_that_does_not_parse_is_ignored(tmp_path: Path) -> None:
    paths = tree(tmp_path / "data")
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json", encoding="utf-8")
    check = Counting()
    assert unreadable_files(paths, check, cache=cache) == [(paths[-1], "OSError: truncated")]
    assert check.calls == len(paths)


def test_many_files_are_checked_in_parallel_with_the_same_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = tree(tmp_path / "data", good=40)
    serial = unreadable_files(paths, Counting(), cache=None)
    monkeypatch.setattr(scan_cache, "PARALLEL_FROM", 10)
    check = Counting()
    assert unreadable_files(paths, check, cache=None) == serial
    if len(os.sched_getaffinity(0)) > 1:
        assert check.calls == 0, "checked in the worker processes, not here"

"""The scan's file checks: once per unchanged file, in parallel when many, bad ones always named."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from harness.io.images import examine, image_entries
from harness.training import scan_cache
from harness.training.scan_cache import cache_file, check_files


class Counting:
    """A check that counts its calls and finds files named ``bad*`` unreadable."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: str) -> tuple[str | None, str | None]:
        self.calls += 1
        return ("OSError: truncated" if Path(path).name.startswith("bad") else None), None


def tree(root: Path, good: int = 5) -> list[os.DirEntry[str]]:
    """`good` images and one bad file, ``bad_0.png``, listed first."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        Image.new("L", (2, 2), i).save(root / f"img_{i}.png")
    (root / "bad_0.png").write_bytes(b"not a png")
    return image_entries(root)


def test_a_second_start_on_an_unchanged_tree_checks_nothing_and_still_names_the_bad_file(
    tmp_path: Path,
) -> None:
    paths = tree(tmp_path / "data")
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    first, second = Counting(), Counting()
    expected = [(str(tmp_path / "data" / "bad_0.png"), "OSError: truncated")]
    assert check_files(paths, first, cache=cache).bad == expected
    assert check_files(paths, second, cache=cache).bad == expected
    assert (first.calls, second.calls) == (len(paths), 0)


def test_a_changed_file_is_checked_again(tmp_path: Path) -> None:
    paths = tree(tmp_path / "data")
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    check_files(paths, Counting(), cache=cache)
    Path(paths[1].path).write_bytes(b"now broken, and a different size")
    stat = Path(paths[2].path).stat()
    os.utime(paths[2].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    check = Counting()
    check_files(image_entries(tmp_path / "data"), check, cache=cache)
    assert check.calls == 2


def test_a_cache_that_does_not_parse_is_ignored(tmp_path: Path) -> None:
    paths = tree(tmp_path / "data")
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json", encoding="utf-8")
    check = Counting()
    assert check_files(paths, check, cache=cache).bad == [(paths[0].path, "OSError: truncated")]
    assert check.calls == len(paths)


def test_many_files_are_checked_in_parallel_with_the_same_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = tree(tmp_path / "data", good=40)
    serial = check_files(paths, Counting(), cache=None).bad
    monkeypatch.setattr(scan_cache, "PARALLEL_FROM", 10)
    check = Counting()
    assert check_files(paths, check, cache=None).bad == serial
    if len(os.sched_getaffinity(0)) > 1:
        assert check.calls == 0, "checked in the worker processes, not here"


def _scan_after(barrier: Any, root: str, cache: str, calls: Any) -> None:
    """One process of two (as two DDP ranks): meet the other, then check the tree."""
    check = Slow()
    barrier.wait()
    check_files(image_entries(root), check, cache=Path(cache))
    calls.put(check.calls)


class Slow(Counting):
    """A check slow enough that two processes started together overlap."""

    def __call__(self, path: str) -> tuple[str | None, str | None]:
        time.sleep(0.02)
        return super().__call__(path)


def test_two_processes_scanning_at_once_check_each_file_once(tmp_path: Path) -> None:
    paths = tree(tmp_path / "data", good=19)
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    context = multiprocessing.get_context("fork")
    barrier, calls = context.Barrier(2), context.Queue()
    ranks = [
        context.Process(target=_scan_after, args=(barrier, str(tmp_path / "data"), str(cache), calls))
        for _ in range(2)
    ]
    for rank in ranks:
        rank.start()
    counts = sorted(calls.get(timeout=60) for _ in ranks)
    for rank in ranks:
        rank.join(timeout=60)
    assert [rank.exitcode for rank in ranks] == [0, 0]
    assert counts == [0, len(paths)], "one process checks, the other reads its verdicts"


def test_a_file_gone_between_listing_and_check_is_named(tmp_path: Path) -> None:
    paths = tree(tmp_path / "data")
    Path(paths[1].path).unlink()
    found = check_files(paths, Counting(), cache=cache_file(tmp_path / "cache", tmp_path / "data")).bad
    assert found == [(paths[0].path, "OSError: truncated"), (paths[1].path, "OSError: cannot stat the file")]


class Decoding(Counting):
    """The scan's own check with the pixels decoded and hashed, counting its calls."""

    def __call__(self, path: str) -> tuple[str | None, str | None]:
        self.calls += 1
        return examine(path)


def test_digests_are_cached_with_the_verdicts_and_made_when_a_cache_lacks_them(tmp_path: Path) -> None:
    paths = tree(tmp_path / "data")
    Image.new("L", (2, 2), 0).save(tmp_path / "data" / "zz_copy.bmp")
    paths = image_entries(tmp_path / "data")
    cache = cache_file(tmp_path / "cache", tmp_path / "data")
    check_files(paths, Counting(), cache=cache)  # a cache written with the duplicate check off
    first, second = Decoding(), Decoding()
    made = check_files(paths, first, cache=cache, digests=True)
    kept = check_files(paths, second, cache=cache, digests=True)
    assert (first.calls, second.calls) == (len(paths) - 1, 0), "the bad file's verdict is kept"
    assert made == kept
    assert made.bad == [(paths[0].path, "OSError: truncated")]
    copies = [str(tmp_path / "data" / "img_0.png"), str(tmp_path / "data" / "zz_copy.bmp")]
    assert sorted(made.shared) == copies, "a grey PNG and its BMP re-save share their digest; no other"
    assert len(set(made.shared.values())) == 1

"""The data scan's file checks, done once per file: cached by (path, size, mtime), parallel when new.

`harness.training.data.scan` hands every image path and its check here. A file whose
size and modification time match the cache's entry keeps its recorded verdict; the
others are checked (in forked processes over the available cores when there are many)
and the cache is rewritten. An unreadable file is still named before training: its
verdict is cached with its reason. The cache is one JSON file per data root under
``$HARNESS_CACHE/scans/``; processes that scan the same root at once (the ranks of a
DDP run) take turns on a lock, so the first one checks and the others read its result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from harness.io.artifacts import write_text

__all__ = ["PARALLEL_FROM", "cache_file", "unreadable_files"]

log = logging.getLogger(__name__)

Check = Callable[[Path], "str | None"]
PARALLEL_FROM = 2000
"""Files to check at which the check is spread over processes (below it, forking costs more)."""
_VERSION = 1


def cache_file(cache: Path, root: Path) -> Path:
    """Where the verdicts for the tree at `root` are kept under the cache folder `cache`."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
    return cache / "scans" / f"{key}.json"


def unreadable_files(paths: Sequence[Path], check: Check, *, cache: Path | None) -> list[tuple[Path, str]]:
    """``(path, reason)`` for each of `paths` that `check` finds unreadable, in the order given.

    With `cache` (a file from `cache_file`), unchanged files are not checked again; a
    cache that cannot be read or written is ignored with a warning.
    """
    if cache is None:
        return _bad(paths, [_stat(path) for path in paths], _check_all(paths, check))
    with _locked(cache):
        known = _load(cache)
        stats = [_stat(path) for path in paths]
        todo = [
            i for i, (path, stat) in enumerate(zip(paths, stats, strict=True)) if _stale(known, path, stat)
        ]
        found = dict(zip(todo, _check_all([paths[i] for i in todo], check), strict=True))
        verdicts = [found[i] if i in found else _verdict(known[str(path)]) for i, path in enumerate(paths)]
        if todo or len(known) != len(paths):
            _save(cache, paths, stats, verdicts)
    return _bad(paths, stats, verdicts)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _stale(known: dict[str, list[object]], path: Path, stat: tuple[int, int] | None) -> bool:
    entry = known.get(str(path))
    return stat is None or entry is None or (entry[0], entry[1]) != stat


def _verdict(entry: list[object]) -> str | None:
    reason = entry[2]
    return None if reason is None else str(reason)


def _bad(
    paths: Sequence[Path], stats: Sequence[tuple[int, int] | None], verdicts: Sequence[str | None]
) -> list[tuple[Path, str]]:
    return [
        (path, verdict if verdict is not None else "OSError: cannot stat the file")
        for path, stat, verdict in zip(paths, stats, verdicts, strict=True)
        if verdict is not None or stat is None
    ]


def _check_all(paths: Sequence[Path], check: Check) -> list[str | None]:
    workers = min(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8
    )
    if len(paths) < PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [check(path) for path in paths]
    # fork, not spawn: a spawned process would import the user's __main__ again. The
    # children only open images and send verdicts back.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(check, paths, chunksize=max(64, len(paths) // (workers * 8)))


def _load(cache: Path) -> dict[str, list[object]]:
    try:
        content = json.loads(cache.read_text(encoding="utf-8"))
        if content.get("version") != _VERSION:
            return {}
        return {str(path): entry for path, *entry in content["files"]}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        log.warning("scan cache %s unreadable (%s); checking every file again", cache, error)
        return {}


def _save(
    cache: Path,
    paths: Sequence[Path],
    stats: Sequence[tuple[int, int] | None],
    verdicts: Sequence[str | None],
) -> None:
    files = [
        [str(path), stat[0], stat[1], verdict]
        for path, stat, verdict in zip(paths, stats, verdicts, strict=True)
        if stat is not None
    ]
    try:
        write_text(cache, json.dumps({"version": _VERSION, "files": files}, separators=(",", ":")))
    except OSError as error:
        log.warning("scan cache %s not written (%s); the next start checks every file again", cache, error)


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock beside `cache` (none where the platform has no `fcntl`)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        handle = (cache.parent / f"{cache.name}.lock").open("a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

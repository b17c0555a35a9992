"""The data scan's file checks, done once per file: cached by (path, size, mtime), parallel when new.

`harness.training.data.scan` hands every image file (an `os.DirEntry` from
`harness.io.images.image_entries`) and its check here. A check returns a verdict (why
the file is unreadable, or None) and, when asked for, the digest of its decoded pixels
(`harness.io.images.examine`), which the scan compares for duplicates. A file whose size
and modification time match the cache's entry (and whose digest is there, when digests
are wanted) keeps its recorded verdict and digest; the others are checked (in forked
processes over the available cores when there are many) and the cache is rewritten. An
unreadable file is still named before training: its verdict is cached with its reason.
The cache is one JSON file per data root under ``$HARNESS_CACHE/scans/``, in columns
(paths, sizes, times, digests, and the unreadable ones with their reasons), so that an
unchanged tree is recognised by comparing three lists.
Processes that scan the same root at once (the ranks of a DDP run) take turns on a lock
beside it, so the first one checks and the others read its result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs

from harness.io.artifacts import write_text

__all__ = ["PARALLEL_FROM", "Checked", "cache_file", "check_files"]

log = logging.getLogger(__name__)

Verdict = tuple["str | None", "str | None"]
"""Why a file is unreadable (None when it is readable), and its pixel digest (None when not made)."""
Check = Callable[[str], Verdict]
PARALLEL_FROM = 2000
"""Files to check at which the check is spread over processes (below it, forking costs more)."""
_VERSION = 3
_NO_STAT = "OSError: cannot stat the file"


@attrs.frozen
class _Files:
    """Paths with their sizes and modification times (ns), pixel digests ("" when not made),
    and the unreadable ones' reasons."""

    paths: list[str]
    sizes: list[int]
    times: list[int]
    digests: list[str]
    bad: dict[str, str]


@attrs.frozen
class Checked:
    """What the check found: ``(path, reason)`` per unreadable file, in the order given, and
    the pixel digest of each readable file whose digest another file shares (`shared`;
    only when digests were asked for: the duplicate check needs no other)."""

    bad: list[tuple[str, str]]
    shared: dict[str, str]


def cache_file(cache: Path, root: Path) -> Path:
    """Where the verdicts for the tree at `root` are kept under the cache folder `cache`."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
    return cache / "scans" / f"{key}.json"


def check_files(
    files: Sequence[os.DirEntry[str]], check: Check, *, cache: Path | None, digests: bool = False
) -> Checked:
    """`check` each of `files` (unless the cache vouches for it): the unreadable ones and the digests.

    `files` should be fresh: an `os.DirEntry` keeps the first stat it made. With `cache`
    (a file from `cache_file`), unchanged files are not checked again, unless `digests`
    are wanted and the cache has none for them (it was written with the duplicate check
    off); a cache that cannot be read or written is ignored with a warning.
    """
    current = _stat_all(files)
    if cache is None:
        return _result(current, _recheck(current, None, check, digests=digests))
    with _locked(cache):
        known = _load(cache)
        if (
            known is not None
            and (known.paths, known.sizes, known.times) == (current.paths, current.sizes, current.times)
            and (not digests or _all_digested(known))
        ):
            return _result(known, known.bad)
        found = _recheck(current, known, check, digests=digests)
        _save(cache, current, found)
    return _result(current, found)


def _stat_all(files: Sequence[os.DirEntry[str]]) -> _Files:
    """The files' paths and stats; one that cannot be stat-ed gets size -1 and its reason."""
    paths = [entry.path for entry in files]
    sizes: list[int] = []
    times: list[int] = []
    missing: dict[str, str] = {}
    for entry in files:
        try:
            status = entry.stat()
        except OSError:
            missing[entry.path] = _NO_STAT
            sizes.append(-1)
            times.append(-1)
            continue
        sizes.append(status.st_size)
        times.append(status.st_mtime_ns)
    return _Files(paths, sizes, times, [""] * len(paths), missing)


def _recheck(current: _Files, known: _Files | None, check: Check, *, digests: bool) -> dict[str, str]:
    """The reasons of the unreadable files, checking those that `known` does not vouch for.

    The digests found (or kept from `known`) are written into ``current.digests``.
    """
    seen: dict[str, tuple[int, int, str]] = (
        {}
        if known is None
        else {
            path: (size, mtime, digest)
            for path, size, mtime, digest in zip(
                known.paths, known.sizes, known.times, known.digests, strict=True
            )
        }
    )
    kept = {} if known is None else known.bad
    found: dict[str, str] = {}
    todo: list[int] = []
    for i, (path, size, mtime) in enumerate(zip(current.paths, current.sizes, current.times, strict=True)):
        size_seen, mtime_seen, digest = seen.get(path, (-1, -1, ""))
        if (
            size < 0
            or (size_seen, mtime_seen) != (size, mtime)
            or (digests and not digest and path not in kept)
        ):
            todo.append(i)
        elif path in kept:
            found[path] = kept[path]
        else:
            current.digests[i] = digest
    verdicts = _check_all([current.paths[i] for i in todo], check)
    for i, (verdict, made) in zip(todo, verdicts, strict=True):
        path = current.paths[i]
        reason = verdict if verdict is not None else current.bad.get(path)
        if reason is not None:
            found[path] = reason
        elif made is not None:
            current.digests[i] = made
    return found


def _all_digested(files: _Files) -> bool:
    """Whether every readable file of `files` has its digest."""
    if "" not in files.digests:
        return True
    return all(digest or path in files.bad for path, digest in zip(files.paths, files.digests, strict=True))


def _result(files: _Files, reasons: dict[str, str]) -> Checked:
    bad = [(path, reasons[path]) for path in files.paths if path in reasons] if reasons else []
    # Counted in C: on a clean tree nothing is shared and no dictionary of every file is built.
    shared = {digest for digest, count in Counter(files.digests).items() if count > 1 and digest}
    found = (
        {path: digest for path, digest in zip(files.paths, files.digests, strict=True) if digest in shared}
        if shared
        else {}
    )
    return Checked(bad, found)


def _check_all(paths: Sequence[str], check: Check) -> list[Verdict]:
    workers = min(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8
    )
    if len(paths) < PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [check(path) for path in paths]
    # fork, not spawn: a spawned process would import the user's __main__ again. The
    # children only open images and send verdicts back.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(check, paths, chunksize=max(64, len(paths) // (workers * 8)))


def _load(cache: Path) -> _Files | None:
    try:
        content = json.loads(cache.read_text(encoding="utf-8"))
        if not isinstance(content, dict) or content.get("version") != _VERSION:
            return None
        columns = ("paths", "sizes", "times", "digests", "bad")
        paths, sizes, times, digests, bad = (content[key] for key in columns)
        if not all(isinstance(column, list) for column in (paths, sizes, times, digests)):
            raise TypeError("paths, sizes, times and digests must be lists")
        if not len(paths) == len(sizes) == len(times) == len(digests) or not isinstance(bad, dict):
            raise ValueError("paths, sizes, times and digests differ in length, or bad is not a mapping")
        return _Files(paths, sizes, times, digests, {str(path): str(reason) for path, reason in bad.items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as error:
        log.warning("scan cache %s unreadable (%s); checking every file again", cache, error)
        return None


def _save(cache: Path, current: _Files, found: dict[str, str]) -> None:
    kept = [i for i, size in enumerate(current.sizes) if size >= 0]
    content = {
        "version": _VERSION,
        "paths": [current.paths[i] for i in kept],
        "sizes": [current.sizes[i] for i in kept],
        "times": [current.times[i] for i in kept],
        "digests": [current.digests[i] for i in kept],
        "bad": {path: reason for path, reason in found.items() if path not in current.bad},
    }
    try:
        write_text(cache, json.dumps(content, separators=(",", ":")))
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

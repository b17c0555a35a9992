"""One process per run directory: `RunLock`, an exclusive `flock` on ``<run_dir>/.lock``.

It is held for the life of a run and released on every exit path; the kernel drops it
when the holder dies, however it dies, so a lock is never stale. The file holds the
holder's PID, which the refusal names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from harness.core.errors import RunLocked, SettingsError

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run directory: ``with RunLock(run_dir): ...``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `RunLocked` naming the process that holds it.

        A run directory where the lock file cannot be written (a read-only file system, no
        permission) is a `SettingsError` naming it: a run or resume writes there.
        """
        try:
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as error:
            raise SettingsError(
                f"{self.path.parent}: cannot write in the run directory ({error.strerror or error}); "
                "a run or resume writes its checkpoints and record there"
            ) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLocked(
                f"{self.path.parent}: another process (PID {holder}) is running in this run directory; "
                "wait for it to end"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Let go of the lock (also done by the kernel when this process ends)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

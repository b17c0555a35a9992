"""Jobs for `harness.io.background.BackgroundWriter` tests: module-level, so the worker process imports them.

Tests put this folder on ``sys.path`` (the worker process inherits it).
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

Record = Callable[[str, Path], None]


def append(path: Path, text: str, record: Record, *, delay: float = 0.0) -> None:
    """After `delay` seconds, add a line to `path` and record it under the line's text."""
    time.sleep(delay)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{text} {os.getpid()}\n")
    record(text, path)


def shout(path: Path, text: str, record: Record) -> None:
    """Print a lot, then `append`: a job's output must not disturb the worker's replies."""
    print("noise " * 20_000)
    append(path, text, record)


def wait_for(gate: Path, record: Record, *, timeout: float = 20.0) -> None:
    """Keep the worker busy until `gate` exists."""
    deadline = time.monotonic() + timeout
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"wait_for: {gate} did not appear within {timeout} s")
        time.sleep(0.01)


def fail(message: str, record: Record) -> None:
    raise OSError(message)


def snapshot(source: Path, target: Path, record: Record) -> None:
    """Copy the folder `source` as it is now to `target`."""
    shutil.copytree(source, target)


def submit_and_leave(out: Path) -> None:
    """In a process `multiprocessing` started: submit a job and exit without closing the writer."""
    from harness.io.background import BackgroundWriter

    writer = BackgroundWriter()
    writer.submit("Test", functools.partial(append, out, "child"), record=lambda name, path: None)


def note_modules(out: Path, names: list[str], record: Record) -> None:
    """Write which of `names` the process running this job has imported, as JSON."""
    import json
    import sys

    out.write_text(json.dumps({name: name in sys.modules for name in names}), encoding="utf-8")

"""The background writer's worker process: ``python -m harness.io._background_worker``.

Started by `harness.io.background.BackgroundWriter`, never by hand. Its first request is
the sys.path to import jobs from; each one after is a pickled job, run in turn, with one
pickled reply per job (`harness.io.background.Reply`) on the stdout it was started with.
Its own stdout goes to stderr, so a job that prints cannot break the replies. It exits
on an empty request (the writer's `END`, sent when it closes) or when its input ends (the
process that started it died). The empty request is what a close relies on: processes
forked from the training process after this one started (the data loader's workers) hold
the write end of its input too, so the input ends only when the last of them exits.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from pathlib import Path
from typing import IO, Any

_LENGTH_BYTES = 8
END = (0).to_bytes(_LENGTH_BYTES, "little")
"""The empty request: no more jobs, exit."""


def header(payload: bytes) -> bytes:
    """What goes before a request's pickle: its length, in 8 bytes, little-endian."""
    return len(payload).to_bytes(_LENGTH_BYTES, "little")


def main() -> None:
    # Ctrl-C reaches the whole process group: the training process decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    path = _read(requests)
    if not path:
        return
    sys.path[:] = pickle.loads(path)
    while payload := _read(requests):
        pickle.dump(_run(payload), replies)
        replies.flush()


def _read(stream: IO[bytes]) -> bytes | None:
    """One request (empty: `END`), or None at the end of input."""
    length = stream.read(_LENGTH_BYTES)
    if len(length) < _LENGTH_BYTES:
        return None
    size = int.from_bytes(length, "little")
    body = stream.read(size)
    return body if len(body) == size else None


def _run(payload: bytes) -> tuple[bool, Any]:
    recorded: list[tuple[str, Path]] = []
    try:
        job = pickle.loads(payload)
        job(lambda name, path: recorded.append((name, path)))
    # Whatever a job raises is its failure to report; the worker goes on with the next job.
    except BaseException as error:  # noqa: BLE001
        trace = "".join(traceback.format_exception(error))
        return False, (f"{type(error).__name__}: {error}", trace, recorded)
    return True, recorded


if __name__ == "__main__":
    main()

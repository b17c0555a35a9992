"""A background writer: pictures drawn and written in another process while training goes on.

A subscriber hands a job to the run's writer with `RunContext.submit`, which runs the
job inline when the run has none (unit tests, replays), so one test covers both.

The worker is a plain ``python -m harness.io._background_worker`` child process fed over
a pipe, not a `multiprocessing` one: it imports only what the jobs need (never the
user's ``__main__``, so a script that calls `harness.run.run` unguarded is not re-run),
and it ends when it is closed (an explicit end request, not the end of its input: data
loader workers forked from this process hold its input open), or when its input ends
because this process died without closing it.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import multiprocessing
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs

import harness
from harness.core.context import Job, Record
from harness.core.errors import cut
from harness.core.summary import BACKGROUND, Failure
from harness.io._background_worker import END, header

__all__ = ["BackgroundWriter"]

log = logging.getLogger(__name__)


@attrs.frozen
class _Pending:
    owner: str
    step: int
    record: Record


Reply = tuple[bool, Any]
"""From the worker, per job: ``(True, [(name, path), ...])`` or ``(False, (error, traceback,
[(name, path), ...]))``: a job that raised still lists the files it wrote before."""


class BackgroundWriter:
    """Runs jobs (draw a picture, write files) in submission order in one worker process.

    The training thread pickles a job and goes on; the worker process draws on another
    core. A process rather than a thread: drawing is Python code that holds the GIL, and a
    training thread sharing the GIL with it waits up to the switch interval (5 ms) to get
    it back after every torch operation, which measured as twice the time per training
    step while the drawing went on (a worker process: 1.06 times).

    A job gets a `Record` to name the files it wrote; they are recorded here, in this
    process, once it is done, also when it raised afterwards (a picture that failed
    does not unlist the table written before it). A job that raises is logged (with its
    traceback, naming its owner) and reported by the next `drain`; the jobs after it still
    run. A worker that
    dies (killed, out of memory) fails the jobs it held, and the next job starts a new
    one. At most `max_pending` jobs wait at a time: past that, `submit` waits for the
    worker, so a writer that falls behind slows training down rather than holding an ever
    longer queue.

    The worker starts at `start` or the first `submit`, runs on one torch thread, ignores
    Ctrl-C (this process decides what to stop) and exits at `close` (told so, not by the end
    of its input, which forked data-loader workers keep open), or when this process exits.
    A writer still open when the interpreter exits is closed then, so its jobs finish.

    A pickled writer (``ddp_spawn`` sends the run context to each spawned rank) arrives
    empty, and it and any writer made in a process that `multiprocessing` started run
    the jobs submitted to them inline, as `RunContext.submit` does without a writer: nobody
    closes a writer there, and such a process may end before a worker has finished.
    """

    def __init__(self, *, max_pending: int = 16) -> None:
        if max_pending < 1:
            raise ValueError(f"BackgroundWriter: max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._start_empty()

    def _start_empty(self, *, inline: bool = False) -> None:
        self._inline = inline or multiprocessing.parent_process() is not None
        self._worker: _Worker | None = None
        self._slots = threading.BoundedSemaphore(self.max_pending)
        self._idle = threading.Condition()
        self._unfinished = 0
        self._failures: list[Failure] = []
        self._closed = False
        if not self._inline:
            _OPEN.add(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_pending": self.max_pending}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_pending = int(state["max_pending"])
        self._start_empty(inline=True)

    def start(self) -> None:
        """Start the worker now, so its imports overlap the run's set-up instead of training."""
        if not (self._inline or self._closed):
            self._live_worker()

    def submit(self, owner: str, job: Job, *, record: Record, step: int = -1) -> None:
        """Queue `job` after every job submitted before it; `owner` and `step` name it in a failure.

        `owner` is the submitting subscriber's table name (``SPEC.name``).

        Raises `TypeError` at once when `job` does not pickle.
        """
        if self._closed:
            raise RuntimeError(f"BackgroundWriter is closed: cannot run {owner}'s job (step {step})")
        if self._inline:
            job(record)
            return
        try:
            payload = pickle.dumps(job)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            raise TypeError(
                f"BackgroundWriter: {owner}'s job cannot be sent to the worker process ({error}); a job is "
                "a module-level function, or a functools.partial of one, with picklable arguments"
            ) from error
        self._slots.acquire()
        with self._idle:
            self._unfinished += 1
        pending = _Pending(owner, step, record)
        # A worker found dead between the check and the send refuses the job: a new one takes it.
        while not self._live_worker().send(pending, payload):
            pass

    def _live_worker(self) -> _Worker:
        if self._worker is None or self._worker.dead:
            self._worker = _Worker(self._finish)
        return self._worker

    def _finish(self, pending: _Pending, reply: Reply) -> None:
        """On the worker's reader thread: record what a job wrote, or keep its failure."""
        try:
            failure = _failure_of(pending, reply)
            if failure is not None:
                # One line (a full disk fails every picture job); the traceback is kept for the summary.
                log.error(
                    "background job of %s (step %d) failed: %s",
                    failure.subscriber, failure.step, cut(" ".join(failure.error.splitlines()), 300),
                )  # fmt: skip
                log.debug("background job of %s failed:\n%s", failure.subscriber, failure.traceback)
                with self._idle:
                    self._failures.append(failure)
        finally:
            self._settle()

    def _settle(self) -> None:
        self._slots.release()
        with self._idle:
            self._unfinished -= 1
            self._idle.notify_all()

    def drain(self) -> list[Failure]:
        """Wait for every job submitted so far; return the failures since the last drain."""
        with self._idle:
            self._idle.wait_for(lambda: self._unfinished == 0)
            failures, self._failures = self._failures, []
        return failures

    def close(self) -> list[Failure]:
        """Drain, then stop the worker process; later calls return no failures. Submitting after it fails."""
        self._closed = True
        _OPEN.discard(self)
        failures = self.drain()
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        return failures


def _failure_of(pending: _Pending, reply: Reply) -> Failure | None:
    """Record a finished job's files; None, or its failure (a `record` that raises is one too)."""
    ok, result = reply
    if ok:
        try:
            for name, path in result:
                pending.record(name, path)
            return None
        # A `record` that raises is reported like a job that did, never lost on this thread.
        except Exception as exception:  # noqa: BLE001
            error, trace = f"{type(exception).__name__}: {exception}", traceback.format_exc()
    else:
        error, trace, written = result
        for name, path in written:
            pending.record(name, path)
    return Failure(
        subscriber=pending.owner, event=BACKGROUND, step=pending.step, error=error, traceback=trace
    )


class _Worker:
    """One worker process, a thread that feeds it jobs and a thread that reads its replies.

    Every job handed to `send` is answered exactly once through `finish`: by the worker's
    reply, or, when the worker dies first, by a failure naming its exit code.
    """

    def __init__(self, finish: Callable[[_Pending, Reply], None]) -> None:
        self._finish = finish
        self._lock = threading.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.dead = False
        env = dict(os.environ)
        # Drawing needs no torch threads; spinning ones would take the training's cores.
        env["OMP_NUM_THREADS"] = "1"
        # The harness itself, wherever this process found it; the jobs' modules come
        # from this process's sys.path, sent as the first request.
        root = str(Path(harness.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.io._background_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._outbox.put(pickle.dumps(list(sys.path)))
        assert self.process.stdin is not None and self.process.stdout is not None
        self._sender = threading.Thread(
            target=self._send_all, args=(self.process.stdin,), name="harness-background-send", daemon=True
        )
        self._reader = threading.Thread(
            target=self._read_all, args=(self.process.stdout,), name="harness-background-read", daemon=True
        )
        self._sender.start()
        self._reader.start()

    def send(self, pending: _Pending, payload: bytes) -> bool:
        """Queue a job; False when the worker is dead (the job was not taken)."""
        with self._lock:
            if self.dead:
                return False
            self._pending.append(pending)
        self._outbox.put(payload)
        return True

    def close(self) -> None:
        """Send the worker `END` and wait for it to exit (its input may stay open: see the module)."""
        self._outbox.put(None)
        self._reader.join()
        self.process.wait()

    def _send_all(self, stdin: IO[bytes]) -> None:
        try:
            while (payload := self._outbox.get()) is not None:
                stdin.write(header(payload))
                stdin.write(payload)
                stdin.flush()
            stdin.write(END)
            stdin.flush()
        except OSError:
            pass  # the worker died: the reader fails the jobs it held
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _read_all(self, stdout: IO[bytes]) -> None:
        while True:
            try:
                reply: Reply = pickle.load(stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            with self._lock:
                pending = self._pending.popleft()
            self._finish(pending, reply)
        code = self.process.wait()
        with self._lock:
            self.dead = True
            orphans = list(self._pending)
            self._pending.clear()
        self._outbox.put(None)  # the sender may still wait for a job
        died = (
            f"WorkerDied: the background writer's worker process exited with code {code} before the job ended"
        )
        for pending in orphans:
            self._finish(pending, (False, (died, "", [])))


_OPEN: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


@atexit.register
def _close_open_writers() -> None:
    """Finish the jobs of writers nobody closed, before the interpreter goes."""
    for writer in list(_OPEN):
        writer.close()

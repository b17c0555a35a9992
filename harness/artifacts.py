"""Atomic artifact writing, and a background writer that keeps drawing off the training thread.

Every writer goes to a temporary file beside the target, flushes it to disk and renames
it over the target (`os.replace` is atomic on POSIX and Windows). Figures are drawn with
matplotlib's object API (`matplotlib.figure.Figure`), which needs no display and touches
no pyplot global state.

`BackgroundWriter` runs drawing-and-writing jobs in order in one worker process; a
subscriber hands it a job through `run_or_submit`, which runs the job inline when the
run has no writer (unit tests, replays).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import pickle
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LABELS_FILE",
    "BackgroundFailure",
    "BackgroundWriter",
    "Job",
    "Record",
    "run_or_submit",
    "atomic_path",
    "read_label_map",
    "save_figure",
    "write_bytes",
    "write_json",
    "write_label_map",
    "write_text",
]

LABELS_FILE = "labels.json"

log = logging.getLogger(__name__)


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    On error the temporary file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); an artifact gets the usual mode of a new file.
    Path(name).chmod(0o666 & ~_umask())
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_figure(figure: Figure, path: Path, *, dpi: int = 120) -> Path:
    """Render `figure` to `path` (format from the suffix) atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def write_label_map(run_dir: Path, class_names: Sequence[str]) -> Path:
    """`labels.json`: the single source of class names for export and prediction."""
    return write_json(
        run_dir / LABELS_FILE,
        {
            "classes": list(class_names),
            "class_to_idx": {name: index for index, name in enumerate(class_names)},
        },
    )


def read_label_map(path: Path) -> list[str]:
    """Class names by index, from a `labels.json` file or a run directory holding one."""
    if path.is_dir():
        path = path / LABELS_FILE
    classes = json.loads(path.read_text(encoding="utf-8"))["classes"]
    return [str(name) for name in classes]


Record = Callable[[str, Path], None]
"""Lists a written file in the run summary: ``record(name, path)`` (`RunContext.record_artifact`)."""

Job = Callable[[Record], object]
"""Draws and writes files, naming each to `record`. Sent to another process: a module-level
function, or a `functools.partial` of one, whose arguments pickle (CPU tensors, numbers,
strings, paths, lists and dicts of those)."""


@attrs.frozen(kw_only=True)
class BackgroundFailure:
    """A background job that raised: who submitted it, at which step, and what it raised."""

    owner: str
    step: int
    error: str
    traceback: str


class BackgroundWriter:
    """Runs jobs (draw a picture, write files) in submission order in one worker process.

    The training thread pickles a job and goes on; the worker process draws on another
    core. A process rather than a thread: drawing is Python code that holds the GIL, and a
    training thread sharing the GIL with it waits up to the switch interval (5 ms) to get
    it back after every torch operation, which measured as twice the time per training
    step while the drawing went on (a worker process: 1.06 times).

    A job gets a `Record` to name the files it wrote; they are recorded here, in this
    process, once it is done. A job that raises is logged (with its traceback, naming its
    owner) and reported by the next `drain`; the jobs after it still run. At most
    `max_pending` jobs wait at a time: past that, `submit` waits for the worker, so a
    writer that falls behind slows training down rather than holding an ever longer queue.

    The worker process starts at the first `submit` (``spawn``: it imports what the jobs
    need, on its own core), ignores Ctrl-C (this process decides what to stop) and exits
    when this process dies.

    A pickled writer (``ddp_spawn`` sends the run context to each spawned rank) arrives
    empty, and it and any writer made in a process that `multiprocessing` started run
    the jobs submitted to them inline, as `run_or_submit` does without a writer: such a
    process joins its own child processes before it stops their pools, so a worker of
    its own would keep it from exiting when nobody closes the writer.
    """

    def __init__(self, *, max_pending: int = 16) -> None:
        if max_pending < 1:
            raise ValueError(f"BackgroundWriter: max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._start_empty()

    def _start_empty(self, *, inline: bool = False) -> None:
        self._inline = inline or multiprocessing.parent_process() is not None
        self._executor: ProcessPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(self.max_pending)
        self._idle = threading.Condition()
        self._unfinished = 0
        self._failures: list[BackgroundFailure] = []
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        return {"max_pending": self.max_pending}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_pending = int(state["max_pending"])
        self._start_empty(inline=True)

    def submit(self, owner: str, job: Job, *, record: Record, step: int = -1) -> None:
        """Queue `job` after every job submitted before it; `owner` and `step` name it in a failure.

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
        try:
            future = self._send(payload)
        except BaseException:
            self._settle()
            raise
        future.add_done_callback(functools.partial(self._finish, owner, step, record))

    def _send(self, payload: bytes) -> Future[list[tuple[str, Path]]]:
        try:
            return self._pool().submit(_run_job, payload)
        except BrokenProcessPool:
            # The worker died (killed, out of memory): the jobs it held are reported as
            # failed; a new worker takes the next ones.
            self._pool().shutdown(wait=False)
            self._executor = None
            return self._pool().submit(_run_job, payload)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        return self._executor

    def _finish(self, owner: str, step: int, record: Record, future: Future[list[tuple[str, Path]]]) -> None:
        try:
            for name, path in future.result():
                record(name, path)
        # Whatever a job raises is reported, never lost in a future nobody reads.
        except BaseException as error:
            log.error("background job of %s (step %d) failed: %s", owner, step, error, exc_info=error)
            failure = BackgroundFailure(
                owner=owner,
                step=step,
                error=f"{type(error).__name__}: {error}",
                traceback="".join(traceback.format_exception(error)),
            )
            with self._idle:
                self._failures.append(failure)
        finally:
            self._settle()

    def _settle(self) -> None:
        self._slots.release()
        with self._idle:
            self._unfinished -= 1
            self._idle.notify_all()

    def drain(self) -> list[BackgroundFailure]:
        """Wait for every job submitted so far; return the failures since the last drain."""
        with self._idle:
            self._idle.wait_for(lambda: self._unfinished == 0)
            failures, self._failures = self._failures, []
        return failures

    def close(self) -> list[BackgroundFailure]:
        """Drain, then stop the worker process; later calls return no failures. Submitting after it fails."""
        self._closed = True
        failures = self.drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return failures


def run_or_submit(
    writer: BackgroundWriter | None, owner: str, job: Job, *, record: Record, step: int = -1
) -> None:
    """Hand `job` to `writer`, or run it here and now when there is none (tests, replays).

    Inline, the job records straight into `record`, and an exception propagates to the
    caller, as any handler's would.
    """
    if writer is None:
        job(record)
    else:
        writer.submit(owner, job, record=record, step=step)


def _run_job(payload: bytes) -> list[tuple[str, Path]]:
    """In the worker process: run one job, and return what it recorded."""
    recorded: list[tuple[str, Path]] = []
    job = pickle.loads(payload)
    job(lambda name, path: recorded.append((name, path)))
    return recorded


def _start_worker(parent: int) -> None:
    """In the worker process, once: leave Ctrl-C to the parent, and die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), name="harness-artifacts-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    # The worker would otherwise wait forever for jobs from a parent killed with SIGKILL,
    # holding the parent's stdout and stderr open.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)

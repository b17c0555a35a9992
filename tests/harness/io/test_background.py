"""BackgroundWriter: jobs in a worker process, in order, with every failure reported."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from harness.core.testing import make_context
from harness.io.background import BackgroundWriter
from harness.settings import Settings
from harness.training.fit import run

MakeSettings = Callable[..., Settings]
PLUGINS = Path(__file__).parents[2] / "plugins"

BROKEN_PICTURES = """
from harness.core.events import TrainEpochEnd


def draw(record):
    raise OSError("disk full")


class BrokenPictures:
    def __init__(self, context):
        self.context = context

    def connect(self, bus):
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end)

    def on_train_epoch_end(self, event):
        self.context.submit("BrokenPictures", draw, step=event.global_step)
"""


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`tests/plugins/background_jobs.py`, importable here and in the worker process."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    return importlib.import_module("background_jobs")


@pytest.fixture
def writer() -> Iterator[BackgroundWriter]:
    writer = BackgroundWriter()
    yield writer
    writer.close()


class Recorded:
    """A `Record` that keeps what it was given, and on which thread."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str, path: Path) -> None:
        self.names.append(name)


def test_jobs_run_in_submission_order_in_another_process(
    jobs: ModuleType, writer: BackgroundWriter, tmp_path: Path
) -> None:
    out, recorded = tmp_path / "order.txt", Recorded()
    for index in range(5):
        # The early jobs are the slow ones: the order must not follow finishing times.
        job = functools.partial(jobs.append, out, f"job{index}", delay=0.02 * (4 - index))
        writer.submit("Test", job, record=recorded)
    assert writer.drain() == []

    lines = [line.split() for line in out.read_text().splitlines()]
    assert [text for text, _ in lines] == [f"job{index}" for index in range(5)]
    assert {pid for _, pid in lines} != {str(os.getpid())}
    assert len({pid for _, pid in lines}) == 1, "one worker process runs every job"
    assert recorded.names == [f"job{index}" for index in range(5)]


def test_submit_returns_while_the_job_is_still_running(
    jobs: ModuleType, writer: BackgroundWriter, tmp_path: Path
) -> None:
    gate, out = tmp_path / "gate", tmp_path / "out.txt"
    writer.submit("Test", functools.partial(jobs.wait_for, gate), record=Recorded())
    writer.submit("Test", functools.partial(jobs.append, out, "after"), record=Recorded())
    assert not out.exists()
    gate.touch()
    assert writer.drain() == []
    assert out.read_text().startswith("after")


def test_a_failing_job_is_logged_and_returned_by_drain_and_the_next_jobs_still_run(
    jobs: ModuleType, writer: BackgroundWriter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, recorded = tmp_path / "out.txt", Recorded()
    writer.submit("Plots", functools.partial(jobs.append, out, "before"), record=recorded)
    writer.submit("ConfusionMatrix", functools.partial(jobs.fail, "disk full"), record=recorded, step=42)
    writer.submit("Plots", functools.partial(jobs.append, out, "after"), record=recorded)
    with caplog.at_level(logging.ERROR, logger="harness.io.background"):
        failures = writer.drain()

    assert recorded.names == ["before", "after"]
    [failure] = failures
    assert (failure.subscriber, failure.step) == ("ConfusionMatrix", 42)
    assert failure.error == "OSError: disk full"
    assert "background_jobs.py" in failure.traceback, "the worker's traceback, where the job raised"
    assert "raise OSError(message)" in failure.traceback
    [log] = caplog.records
    assert log.getMessage() == "background job of ConfusionMatrix (step 42) failed: OSError: disk full"
    assert writer.drain() == [], "a failure is reported once"


def test_on_a_full_disk_each_background_failure_is_one_line(
    jobs: ModuleType, writer: BackgroundWriter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.harness.training.test_resume import tmpfs

    mounts = tmpfs(tmp_path / "small", "size=1m")
    disk = next(mounts)
    try:
        kept = disk / "kept.txt"
        kept.write_text("kept")
        with (
            (disk / "filler").open("wb", buffering=0) as filler,
            pytest.raises(OSError, match="No space left"),
        ):
            while True:
                filler.write(b"\0" * 65536)
        recorded = Recorded()
        for n in range(3):
            picture = functools.partial(jobs.append, disk / f"picture_{n}.txt", "x" * 70000)
            writer.submit("Pictures", picture, record=recorded, step=n)
        with caplog.at_level(logging.DEBUG, logger="harness.io.background"):
            failures = writer.drain()

        assert [f.step for f in failures] == [0, 1, 2]
        assert all("No space left on device" in f.error and "Traceback" in f.traceback for f in failures)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 3 and all("\n" not in e and "No space left on device" in e for e in errors)
        assert kept.read_text() == "kept"
    finally:
        next(mounts, None)


def test_close_finishes_every_queued_job_and_reports_their_failures(jobs: ModuleType, tmp_path: Path) -> None:
    writer = BackgroundWriter()
    out = tmp_path / "out.txt"
    for index in range(4):
        writer.submit("Test", functools.partial(jobs.append, out, str(index), delay=0.02), record=Recorded())
    writer.submit("Test", functools.partial(jobs.fail, "late"), record=Recorded())

    failures = writer.close()

    assert [line.split()[0] for line in out.read_text().splitlines()] == ["0", "1", "2", "3"]
    assert [failure.error for failure in failures] == ["OSError: late"]


def test_close_is_idempotent_and_submitting_after_it_is_an_error(jobs: ModuleType) -> None:
    writer = BackgroundWriter()
    writer.submit("Test", functools.partial(jobs.fail, "x"), record=Recorded())
    assert len(writer.close()) == 1
    assert writer.close() == []
    with pytest.raises(RuntimeError, match="closed: cannot run Samples's job"):
        writer.submit("Samples", functools.partial(jobs.fail, "x"), record=Recorded())


def test_a_job_that_does_not_pickle_is_refused_at_once(writer: BackgroundWriter) -> None:
    with pytest.raises(TypeError, match="Samples's job cannot be sent to the worker process"):
        writer.submit("Samples", lambda record: None, record=Recorded())
    assert writer.drain() == []


def test_a_writer_that_never_ran_a_job_closes_without_a_worker() -> None:
    writer = BackgroundWriter()
    assert writer.close() == []
    assert writer._worker is None, "no worker process was started"


def test_submit_waits_when_max_pending_jobs_are_queued(jobs: ModuleType, tmp_path: Path) -> None:
    writer = BackgroundWriter(max_pending=1)
    gate, submitted = tmp_path / "gate", threading.Event()
    writer.submit("Test", functools.partial(jobs.wait_for, gate), record=Recorded())

    def submit_second() -> None:
        writer.submit("Test", functools.partial(jobs.append, tmp_path / "out.txt", "x"), record=Recorded())
        submitted.set()

    submitter = threading.Thread(target=submit_second)
    submitter.start()
    assert not submitted.wait(0.3), "the queue is full: submit must wait"
    gate.touch()
    assert submitted.wait(20)
    submitter.join()
    assert writer.close() == []


def test_a_pickled_writer_arrives_empty_and_runs_its_jobs_inline(jobs: ModuleType, tmp_path: Path) -> None:
    writer = BackgroundWriter(max_pending=3)
    writer.submit("Test", functools.partial(jobs.fail, "stays here"), record=Recorded())
    copy = pickle.loads(pickle.dumps(writer))  # what ddp_spawn does to the run context
    recorded = Recorded()
    copy.submit("Test", functools.partial(jobs.append, tmp_path / "out.txt", "copy"), record=recorded)
    assert recorded.names == ["copy"], "done before submit returns"
    assert (tmp_path / "out.txt").read_text().split() == ["copy", str(os.getpid())]
    with pytest.raises(OSError, match="raised here"):
        copy.submit("Test", functools.partial(jobs.fail, "raised here"), record=recorded)
    assert copy.close() == []
    assert copy.max_pending == 3
    assert [failure.error for failure in writer.close()] == ["OSError: stays here"]


def test_in_a_process_multiprocessing_started_jobs_run_inline_and_it_exits_unclosed(
    jobs: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "out.txt"
    child = multiprocessing.get_context("spawn").Process(target=jobs.submit_and_leave, args=(out,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, "the child exited, with nobody closing its writer"
    assert out.read_text().split() == ["child", str(child.pid)]


def test_a_dead_worker_fails_its_jobs_and_a_new_one_takes_the_next(
    jobs: ModuleType, writer: BackgroundWriter, tmp_path: Path
) -> None:
    out, gate = tmp_path / "out.txt", tmp_path / "gate"
    writer.submit("Test", functools.partial(jobs.append, out, "first"), record=Recorded())
    assert writer.drain() == []
    worker = int(out.read_text().split()[1])
    writer.submit("Samples", functools.partial(jobs.wait_for, gate), record=Recorded(), step=7)
    os.kill(worker, signal.SIGKILL)

    [failure] = writer.drain()
    assert (failure.subscriber, failure.step) == ("Samples", 7)
    assert failure.error.startswith("WorkerDied: the background writer's worker process exited with code -9")
    recorded = Recorded()
    writer.submit("Test", functools.partial(jobs.append, out, "second"), record=recorded)
    assert writer.drain() == []
    assert recorded.names == ["second"]
    assert int(out.read_text().splitlines()[1].split()[1]) not in (worker, os.getpid())


def test_submit_without_a_writer_runs_inline_and_lets_errors_through(
    jobs: ModuleType, tmp_path: Path
) -> None:
    context = make_context(tmp_path)
    context.submit("Test", functools.partial(jobs.append, tmp_path / "out.txt", "inline"))
    assert list(context.artifacts) == ["inline"]
    assert (tmp_path / "out.txt").read_text().split() == ["inline", str(os.getpid())]
    with pytest.raises(OSError, match="at once"):
        context.submit("Test", functools.partial(jobs.fail, "at once"))


def test_submit_with_a_writer_hands_the_job_over(
    jobs: ModuleType, writer: BackgroundWriter, tmp_path: Path
) -> None:
    context = make_context(tmp_path, background=writer)
    out = tmp_path / "out.txt"
    context.submit("Test", functools.partial(jobs.append, out, "handed"), step=3)
    context.submit("Test", functools.partial(jobs.fail, "no"), step=4)
    [failure] = writer.drain()
    assert list(context.artifacts) == ["handed"]
    assert out.read_text().split()[1] != str(os.getpid())
    assert (failure.subscriber, failure.step) == ("Test", 4)


def test_max_pending_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_pending must be at least 1, got 0"):
        BackgroundWriter(max_pending=0)


@pytest.mark.slow
def test_a_run_draws_in_the_background_and_lists_background_failures_in_its_summary(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken_pictures.py").write_text(textwrap.dedent(BROKEN_PICTURES))
    monkeypatch.syspath_prepend(str(plugins))
    settings = make_settings(
        "confusion_matrix",
        "plots",
        "trainer.limit_train_batches=2",
        "run.plugins=['broken_pictures:BrokenPictures']",
    )

    result = run(settings)

    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    for name in ("confusion_matrix/latest.png", "plots/losses.png", "plots/history.csv"):
        assert name in summary["artifacts"]
        assert (result.run_dir / name).is_file()
    [failure] = summary["failures"]
    assert failure["subscriber"] == "BrokenPictures"
    assert failure["event"] == "background"
    assert failure["step"] == 2
    assert failure["error"] == "OSError: disk full"
    assert "broken_pictures.py" in failure["traceback"]


SCRIPT = """
import functools, os, sys
from pathlib import Path
sys.path.insert(0, {plugins!r})
import background_jobs
from harness.io.background import BackgroundWriter

# No `if __name__ == "__main__"` guard: the worker must not run this again.
with open({marker!r}, "a") as handle:
    handle.write(f"{{os.getpid()}}\\n")
writer = BackgroundWriter()
out = Path({out!r})
writer.submit("Script", functools.partial(background_jobs.shout, out, "drawn"), record=print)
writer.submit("Script", functools.partial(background_jobs.append, out, "late", delay=0.5), record=print)
{ending}
"""


@pytest.mark.parametrize("ending", ["print(writer.close())", "# never closed"])
def test_a_script_runs_once_and_its_jobs_finish_closed_or_not(ending: str, tmp_path: Path) -> None:
    marker, out = tmp_path / "ran.txt", tmp_path / "out.txt"
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(plugins=str(PLUGINS), marker=str(marker), out=str(out), ending=ending))

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert len(marker.read_text().splitlines()) == 1, "the script ran once, not again in the worker"
    assert [line.split()[0] for line in out.read_text().splitlines()] == ["drawn", "late"]
    assert "noise" in done.stderr, "what a job prints goes to stderr"
    assert "failed" not in done.stderr


def test_the_worker_draws_every_built_in_picture_without_importing_torch(
    jobs: ModuleType, tmp_path: Path
) -> None:
    import attrs
    import torch

    from harness.core.bus import Bus
    from harness.core.testing import scripted_run
    from subscribers.augment_preview import AugmentPreview
    from subscribers.confusion_matrix import ConfusionMatrix
    from subscribers.plots import Plots
    from subscribers.report import Report
    from subscribers.samples import Samples

    def augmented(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(count, 3, 8, 8), torch.arange(count) % 3

    writer = BackgroundWriter()
    context = make_context(tmp_path, class_names=("a", "b", "c"), background=writer)
    context = attrs.evolve(context, augmented_samples=augmented)
    bus = Bus()
    subscribers = (ConfusionMatrix, Samples, Plots, Report, AugmentPreview)
    for subscriber in subscribers:
        bus.attach(subscriber(context))
    scripted_run(bus, context, epochs=2, train_batches=1, val_batches=2)
    out = tmp_path / "modules.json"
    heavy = ["torch", "lightning", "torchmetrics", "matplotlib.pyplot"]
    writer.submit("Test", functools.partial(jobs.note_modules, out, heavy), record=Recorded())
    assert writer.close() == []
    pictures = (
        "confusion_matrix/latest.png",
        "samples/latest.png",
        "plots/losses.png",
        "augment_preview.png",
    )
    for name in (*pictures, "report.html"):
        assert (context.run_dir / name).is_file(), name
    assert json.loads(out.read_text(encoding="utf-8")) == dict.fromkeys(heavy, False)


@pytest.mark.timeout(60)
def test_close_returns_while_a_forked_process_holds_the_workers_input(
    jobs: ModuleType, tmp_path: Path
) -> None:
    """Data-loader workers are forked after the worker started: they hold its input open."""
    writer, recorded = BackgroundWriter(), Recorded()
    writer.submit("Test", functools.partial(jobs.append, tmp_path / "a.txt", "a"), record=recorded)
    holder = multiprocessing.get_context("fork").Process(target=time.sleep, args=(300,), daemon=True)
    holder.start()
    try:
        assert writer.close() == []
        assert recorded.names == ["a"]
    finally:
        holder.terminate()
        holder.join()

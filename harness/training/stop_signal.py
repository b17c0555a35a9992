"""StopOnSigterm: on SIGTERM, every rank stops at the end of the same training batch.

SLURM, Kubernetes and ``kill -TERM -<pgid>`` send SIGTERM before a kill; under ``ddp`` it
may reach every process, or only one. The handler this callback installs only notes the
signal; at each training batch end the ranks agree (an any-reduce of that note, a
collective every rank reaches) and all raise Lightning's `SIGTERMException` together, so
`BusCallback` writes the interrupt checkpoint from every rank at once (rank zero writes
the file) and the run ends with ``interrupted``.

It replaces Lightning's own SIGTERM handler (lightning 2.6.6, ``_SignalConnector``) while
training runs: that one broadcasts from inside the signal handler, forwards the signal to
the other ranks and lets each rank raise on its own, so the ranks leave at different
batches and the survivors fail in their next collective. Lightning restores the handler
that was there before it when the trainer tears down. A signal during validation takes
effect at the next training batch; during the last validation, the run completes.

Under SLURM, the requeue signal (``SIGUSR1``, what ``#SBATCH --signal=USR1@90`` sends
before the time limit) stops the run the same way, and then `requeue_slurm_job` asks
SLURM to requeue the job (``scontrol requeue``, rank zero); the requeued job resumes the
run (`harness.training.run_dir.resolve_run_dir`). It replaces Lightning's own requeue
handler (``SLURMEnvironment(auto_requeue=True)``), which saves an ``hpc_ckpt_N.ckpt``
from inside the signal handler, mid-step, outside the run's checkpoints, and lets
training run on until SLURM kills it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import re
import signal
import subprocess
import threading
import time
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments.slurm import SLURMEnvironment
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

__all__ = [
    "LAUNCHER_VARIABLE",
    "REQUEUE_SIGNAL",
    "StopOnSigterm",
    "outlive_launcher",
    "requeue_slurm_job",
    "slurm_job_id",
    "end_data_workers",
    "start_data_worker",
]

REQUEUE_SIGNAL = signal.SIGUSR1
"""SLURM's requeue signal, as Lightning's `SLURMEnvironment` expects it by default."""

LAUNCHER_VARIABLE = "HARNESS_LAUNCHER_PID"
"""Set by rank zero for the processes that Lightning's ``ddp`` launcher starts: its process id."""


def outlive_launcher(timeout: float = 60.0) -> None:
    """In a process that Lightning's ``ddp`` launcher started, wait until the launcher has exited.

    The launcher's child-process observer (lightning 2.6.6, ``_ChildProcessObserver``,
    every 5 s) SIGKILLs the launcher once a child has exited with a non-zero code. A rank
    that stops with the others on SIGTERM (exit 143) therefore leaves after rank zero, or
    rank zero could die before writing ``summary.json``. `timeout` bounds the wait.
    """
    launcher = os.environ.get(LAUNCHER_VARIABLE)
    if not launcher or not launcher.isdigit():
        return
    deadline = time.monotonic() + timeout
    while os.getppid() == int(launcher) and time.monotonic() < deadline:
        time.sleep(0.05)


def start_data_worker(worker_id: int, rank: int) -> None:
    """A data-loader worker's ``worker_init_fn``: ignore SIGTERM, then seed as Lightning would.

    A signal to the process group reaches the workers too: one that died of it would fail
    the batch it was loading, and one running a handler inherited from its rank (Lightning's
    broadcasts) would talk on that rank's connections. Its main process ends it instead.
    Lightning adds `pl_worker_init_function` only to loaders without a ``worker_init_fn``,
    after ``seed_everything(workers=True)``; this one keeps that seeding.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


def end_data_workers(grace: float = 2.0) -> None:
    """At exit, end the daemonic children still alive: SIGTERM, then SIGKILL for those that ignore it.

    multiprocessing's own exit handler sends SIGTERM to every daemonic child and then
    waits for each without a limit: a data-loader worker that `start_data_worker` made
    deaf to SIGTERM, kept alive by a failed fit's traceback (its persistent loader), would
    hold the process forever. This runs first, as one of multiprocessing's own exit
    finalizers (at interpreter exit, and at the end of a process that multiprocessing
    started): SIGTERM as multiprocessing would, `grace` seconds in all, then SIGKILL.
    """
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if not children:
        return
    # torch's loader raises from its SIGCHLD handler when a worker dies by a signal; ending
    # them is the point here.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            child.kill()
    for child in children:
        child.join(grace)


def _end_data_workers_at_exit(_: object = None) -> None:
    """Make `end_data_workers` one of multiprocessing's exit finalizers in this process.

    multiprocessing's exit handler runs these before it ends the daemonic children, at
    interpreter exit and also where atexit never runs: at the end of a process that
    multiprocessing started (a ``ddp_spawn`` rank), whose loader workers would otherwise
    hold it, and the run's launcher behind it, forever. Such a process clears the
    finalizers its imports registered, then runs its after-fork hooks: hence both.
    """
    multiprocessing.util.Finalize(None, end_data_workers, exitpriority=0)


_end_data_workers_at_exit()
multiprocessing.util.register_after_fork(end_data_workers, _end_data_workers_at_exit)


class StopOnSigterm(Callback):
    """Raise `SIGTERMException` on every rank at the first training batch end after a SIGTERM."""

    def __init__(self) -> None:
        self.requested = False
        self.requeue = False
        """Whether SLURM's requeue signal (rather than SIGTERM) asked for the stop."""

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def _note_requeue(self, signum: int, frame: FrameType | None) -> None:
        self.requested = self.requeue = True

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = self.requeue = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note)
            if SLURMEnvironment.detect():
                signal.signal(REQUEUE_SIGNAL, self._note_requeue)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            # The requeue signal may reach one rank only: every rank learns it, so that rank
            # zero (which runs ``scontrol requeue``) knows.
            self.requeue = trainer.strategy.reduce_boolean_decision(self.requeue, all=False)
            raise SIGTERMException


def slurm_job_id() -> str | None:
    """This SLURM job's id (``<array job>_<task>`` for an array task), or None outside SLURM."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job() -> str:
    """``scontrol requeue`` this job; what happened, for the run's last line."""
    job = slurm_job_id()
    if job is None or not re.fullmatch(r"[0-9_]+", job):
        return f"not requeued: no SLURM job id (SLURM_JOB_ID = {job!r})"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"requeueing SLURM job {job} failed ({type(error).__name__}: {error})"
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[:200]
        return f"requeueing SLURM job {job} failed (scontrol exit {done.returncode}: {said})"
    return f"SLURM job {job} requeued; it resumes this run"

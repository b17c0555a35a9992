"""Plugin subscribers that hurt a run on purpose, for the fault tests (run in subprocesses).

They are configured by environment variables, read when constructed, since a plugin gets
only the run context: ``FAULT_AT="<event>:<epoch>:<count>"``,
``FAULT="kill|kill-mid-write|interrupt|interrupt-soon|term|term-group|usr1|raise|stop"`` and, to
hurt one rank only, ``FAULT_RANK``; an epoch of ``*`` matches any. ``interrupt-soon`` sends
SIGINT a second later, from a thread (at `TrainLoopEnd`: during the ONNX export that
`TrainEnd` starts). ``kill-mid-write`` SIGKILLs the run from a thread as soon as the
checkpoint being saved has bytes in its temporary file: a kill in the middle of a real write.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, CheckpointSaving, Event, TrainEnd, TrainLoopEnd


class Fault:
    """At the Nth matching event of an epoch: SIGKILL, Ctrl-C, SIGTERM, an exception or a stop request.

    ``term-group`` sends SIGTERM to the run's whole process group, as SLURM and
    ``kill -TERM -<pgid>`` do; the run must lead its own group (``start_new_session``).
    """

    def __init__(self, context: RunContext) -> None:
        self.context = context
        event, epoch, count = (os.environ.get("FAULT_AT") or "none:0:0").split(":")
        self.event, self.epoch, self.count = event, None if epoch == "*" else int(epoch), int(count)
        self.fault = os.environ.get("FAULT", "")
        self.rank = os.environ.get("FAULT_RANK")
        self.seen = 0

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_event, stage="train")
        bus.subscribe(CheckpointSaving, self.on_event)
        bus.subscribe(TrainLoopEnd, self.on_event)

    def on_event(self, event: Event) -> None:
        if type(event).__name__ != self.event or self.epoch not in (None, event.epoch):
            return
        if self.rank is not None and int(self.rank) != self.context.rank:
            return
        self.seen += 1
        if self.seen < self.count:
            return
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.fault == "kill-mid-write":
            threading.Thread(target=self._kill_when_writing, daemon=True).start()
        elif self.fault == "interrupt":
            os.kill(os.getpid(), signal.SIGINT)
        elif self.fault == "interrupt-soon":
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        elif self.fault == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        elif self.fault == "usr1":  # SLURM's requeue signal
            os.kill(os.getpid(), signal.SIGUSR1)
        elif self.fault == "term-group":
            if os.getpgrp() != os.getpid():
                raise RuntimeError("FAULT=term-group: the run must lead its process group")
            os.killpg(os.getpgrp(), signal.SIGTERM)
        elif self.fault == "raise":
            raise RuntimeError("injected failure")
        elif self.fault == "stop":
            self.context.request_stop(f"injected stop on rank {self.context.rank}", at="step")

    def _kill_when_writing(self) -> None:
        folder = self.context.run_dir / "checkpoints"
        while True:
            if any(path.stat().st_size > 0 for path in folder.glob(".*.tmp")):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0005)


class RankReport:
    """At train end, every rank writes a digest of the weights the model holds."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEnd, self.on_train_end)

    def on_train_end(self, event: TrainEnd) -> None:
        model = self.context.require_model()
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float64).numpy().tobytes())
        report = {"rank": self.context.rank, "digest": digest.hexdigest()}
        (self.context.run_dir / f"rank_{self.context.rank}.json").write_text(json.dumps(report))


class BatchOrder:
    """Each rank appends its training batches' class indices, by global step, to ``order_<rank>.jsonl``."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="train")

    def on_batch_end(self, event: BatchEnd) -> None:
        line = json.dumps({"step": event.global_step, "targets": [int(t) for t in event.targets]})
        with (self.context.run_dir / f"order_{self.context.rank}.jsonl").open("a") as handle:
            handle.write(line + "\n")

"""Plugin subscribers that hurt a run on purpose, for the fault tests (run in subprocesses).

They are configured by environment variables, read when constructed, since a plugin gets
only the run context: ``FAULT_AT="<event>:<epoch>:<count>"``,
``FAULT="kill|interrupt|term|term-group|raise|stop"`` and, to hurt one rank only, ``FAULT_RANK``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal

import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, CheckpointSaving, Event, TrainEnd


class Fault:
    """At the Nth matching event of an epoch: SIGKILL, Ctrl-C, SIGTERM, an exception or a stop request.

    ``term-group`` sends SIGTERM to the run's whole process group, as SLURM and
    ``kill -TERM -<pgid>`` do; the run must lead its own group (``start_new_session``).
    """

    def __init__(self, context: RunContext) -> None:
        self.context = context
        event, epoch, count = (os.environ.get("FAULT_AT") or "none:0:0").split(":")
        self.event, self.epoch, self.count = event, int(epoch), int(count)
        self.fault = os.environ.get("FAULT", "")
        self.rank = os.environ.get("FAULT_RANK")
        self.seen = 0

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_event, stage="train")
        bus.subscribe(CheckpointSaving, self.on_event)

    def on_event(self, event: Event) -> None:
        if type(event).__name__ != self.event or event.epoch != self.epoch:
            return
        if self.rank is not None and int(self.rank) != self.context.rank:
            return
        self.seen += 1
        if self.seen < self.count:
            return
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.fault == "interrupt":
            os.kill(os.getpid(), signal.SIGINT)
        elif self.fault == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        elif self.fault == "term-group":
            if os.getpgrp() != os.getpid():
                raise RuntimeError("FAULT=term-group: the run must lead its process group")
            os.killpg(os.getpgrp(), signal.SIGTERM)
        elif self.fault == "raise":
            raise RuntimeError("injected failure")
        elif self.fault == "stop":
            self.context.request_stop(f"injected stop on rank {self.context.rank}", at="step")


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

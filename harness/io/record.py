"""The event log: every event of a run as one JSON line in ``events.jsonl``, tensors summarised.

`EventLog` consumes every event (rank zero only) and appends it, flushed, to the log; a
resumed run appends to the same file. Each line carries the wall time it was published
at, ``"time"``, in UNIX seconds (microsecond resolution), so a run's timeline can be read:
``{"event": "TrainEpochEnd", "time": 1764625536.123456, "epoch": 0, ...}``. Tensors are
summarised by shape and dtype, except what is small and useful to re-read: a validation
batch's targets and predicted classes.
`read_events` turns the log back into events that carry no tensors, so
``python -m harness.replay`` can feed them to subscribers without training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import EVENT_TYPES, BatchEnd, Event

__all__ = ["EventLog", "read_events"]
_TYPES = {cls.__name__: cls for cls in EVENT_TYPES}


def _summarise(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, Mapping):
        if value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return {"tensors": len(value)}
        return {str(k): _summarise(v) for k, v in value.items()}
    return value


def encode(event: Event) -> dict[str, Any]:
    """One event as a JSON-ready dict: ``{"event": name, **fields}``."""
    fields = {f.name: _summarise(getattr(event, f.name)) for f in attrs.fields(type(event))}
    if isinstance(event, BatchEnd):
        fields["loss"] = None if event.loss is None else float(event.loss)
        if event.stage != "train":
            fields["targets"] = event.targets.tolist()
            fields["predictions"] = event.logits.argmax(1).tolist()
    return {"event": type(event).__name__, **fields}


class EventLog:
    """Append every event of the run to ``run_dir/events.jsonl``, one flushed line each."""

    def __init__(self, context: RunContext) -> None:
        self.path = context.layout.events
        self.context = context
        self._file: IO[str] | None = None

    def connect(self, bus: Bus) -> None:
        bus.subscribe(Event, self.on_event, rank_zero_only=True)

    def on_event(self, event: Event) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
            self.context.record_artifact("events", self.path)
        line = {"event": type(event).__name__, "time": round(time.time(), 6), **encode(event)}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: Path) -> Iterator[Event]:
    """The tensor-free events of a log, in order; a torn last line (a killed run) is skipped.

    Events whose payload is tensors (`BatchEnd`, `CheckpointSaving`) cannot be rebuilt
    and are left out; the wall time of each line is not part of an event.
    """
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            record.pop("time", None)
            cls = _TYPES.get(record.pop("event", ""))
            if cls is None or cls in (BatchEnd,) or "model_state" in record:
                continue
            yield cls(**record)

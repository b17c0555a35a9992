"""The event log: every event of a run as one JSON line in ``events.jsonl``, tensors summarised.

`EventLog` consumes every event (rank zero only) and appends it, flushed, to the log; a
resumed run appends to the same file. Each line carries the wall time it was published
at, ``"time"``, in UNIX seconds (microsecond resolution), so a run's timeline can be read:
``{"event": "TrainEpochEnd", "time": 1764625536.123456, "epoch": 0, ...}``. Tensors are
summarised by shape and dtype, except what is small and useful to re-read: a validation
batch's targets and predicted classes. A batch's loss (and a validation batch's targets
and predictions) are read from the device in bunches (`LOSS_BATCH` lines, or sooner when
another event comes): reading them at every batch would make the host wait for the device
once per batch; the lines keep their order and their times.
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

__all__ = ["LOSS_BATCH", "EventLog", "read_events"]

LOSS_BATCH = 64
"""Batch lines held back at most, so that their tensors are read in one transfer."""
_TYPES = {cls.__name__: cls for cls in EVENT_TYPES}


def _summarise(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, Mapping):
        if value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return {"tensors": len(value)}
        return {str(k): _summarise(v) for k, v in value.items()}
    return value


def encode(event: Event) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One event as a JSON-ready dict ``{"event": name, **fields}`` and the tensors still to read.

    A `BatchEnd`'s loss (a validation batch's targets and predictions too) is returned as a
    tensor on its device, under the field it fills, for the caller to read with others.
    """
    fields = {f.name: _summarise(getattr(event, f.name)) for f in attrs.fields(type(event))}
    unread: dict[str, torch.Tensor] = {}
    if isinstance(event, BatchEnd):
        if event.loss is None:
            fields["loss"] = None
        else:
            unread["loss"] = event.loss.detach().reshape(()).float()
        if event.stage != "train":
            unread["targets"] = event.targets.detach().reshape(-1).long()
            unread["predictions"] = event.logits.detach().argmax(1).long()
    return {"event": type(event).__name__, **fields}, unread


def _read(unread: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """Every line's tensors as plain values, in one transfer per dtype."""
    values: list[dict[str, Any]] = [{} for _ in unread]
    for dtype in (torch.float32, torch.int64):
        parts = [(i, key, t) for i, line in enumerate(unread) for key, t in line.items() if t.dtype == dtype]
        if not parts:
            continue
        flat = torch.cat([t.reshape(-1).to(parts[0][2].device) for _, _, t in parts]).tolist()
        start = 0
        for i, key, tensor in parts:
            count = tensor.numel()
            values[i][key] = flat[start] if tensor.dim() == 0 else flat[start : start + count]
            start += count
    return values


class EventLog:
    """Append every event of the run to ``run_dir/events.jsonl``, one flushed line each."""

    def __init__(self, context: RunContext) -> None:
        self.path = context.layout.events
        self.context = context
        self._file: IO[str] | None = None
        self._held: list[tuple[dict[str, Any], dict[str, torch.Tensor]]] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(Event, self.on_event, rank_zero_only=True)

    def on_event(self, event: Event) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
            self.context.record_artifact("events", self.path)
        now = round(time.time(), 6)
        fields, unread = encode(event)
        line = {"event": fields.pop("event"), "time": now, **fields}
        if unread:
            self._held.append((line, unread))
            if len(self._held) >= LOSS_BATCH:
                self._release()
            return
        self._release()
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def _release(self) -> None:
        """Write the held batch lines, their tensors read in one transfer."""
        if not self._held or self._file is None:
            return
        values = _read([unread for _, unread in self._held])
        for (line, _), read in zip(self._held, values, strict=True):
            line.update(read)
            self._file.write(json.dumps(line) + "\n")
        self._held.clear()
        self._file.flush()

    def close(self) -> None:
        self._release()
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

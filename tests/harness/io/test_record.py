"""The event log: every event as a JSON line with its wall time, read back without it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.core.bus import Bus
from harness.core.events import BatchEnd, CheckpointSaving
from harness.core.testing import Recorder, make_context, scripted_run
from harness.io.record import EventLog, read_events


def test_each_line_carries_its_wall_time_and_replay_ignores_it(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    log = bus.attach(EventLog(context))
    recorder = bus.attach(Recorder())
    started = time.time()
    scripted_run(bus, context, epochs=2, train_batches=2, val_batches=1, sanity_check=True)
    log.close()
    ended = time.time()

    lines = [json.loads(line) for line in context.layout.events.read_text().splitlines()]
    assert [line["event"] for line in lines] == recorder.names()
    assert all(list(line)[:2] == ["event", "time"] for line in lines)
    times = [line["time"] for line in lines]
    assert times == sorted(times), "a timeline: times never go backwards"
    assert started - 1e-3 <= times[0] and times[-1] <= ended + 1e-3

    rebuilt = list(read_events(context.layout.events))
    expected = [e for e in recorder.events if not isinstance(e, BatchEnd | CheckpointSaving)]
    assert rebuilt == expected, "events are rebuilt exactly, the time left out"

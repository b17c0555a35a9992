"""Type-level tests of the bus, checked by mypy in CI (not collected by pytest).

Each `type: ignore[...]` marks a line that must stay a type error: mypy's strict mode
reports an unused ignore, so if the bus's typing ever stops catching the mistake, CI fails.
"""

from harness.core.bus import Bus
from harness.core.events import BatchEnd, Event, TrainEnd


def on_train_end(event: TrainEnd) -> None: ...


def on_batch_end(event: BatchEnd) -> None: ...


def on_any(event: Event) -> None: ...


bus = Bus()
bus.subscribe(BatchEnd, on_batch_end)
bus.subscribe(BatchEnd, on_any)
bus.subscribe(BatchEnd, on_train_end)  # type: ignore[arg-type]
bus.subscribe(Event, on_batch_end)  # type: ignore[arg-type]
bus.subscribe(BatchEnd, on_batch_end, stage="training")  # type: ignore[arg-type]

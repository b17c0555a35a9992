"""One assembly of a run: its `RunContext`, its `Bus` and every subscriber attached to it.

Training (`harness.training.fit`), the evaluation of a checkpoint
(`harness.training.evaluation`), the replay of an event log (`harness.replay`) and the
epoch benchmark (`bench.epoch`) all put their run together here, so they cannot drift
apart: the same context from the same settings (the weights' preprocessing, the
monitor, the verbosity), and the subscribers attached in one order:

1. the event log (``[run].record_events``), so it records what everyone else sees;
2. every enabled built-in spec, then every plugin of ``[run].plugins``, each with its
   table's ``on_error`` and named by its table name (in a failure, and as its
   checkpoint key);
3. the extras a caller passes (a test's observer, the evaluation's logits), with the
   "raise" policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from torch.utils.data import Sampler

from harness.core.bus import Bus, OnError, Stateful, Subscriber
from harness.core.context import DatasetInfo, JobRunner, RunContext, Samples
from harness.core.preprocessing import Preprocessing
from harness.core.recipe import Recipe
from harness.core.spec import SubscriberSpec, build_error
from harness.core.tracking import Trackers
from harness.io.record import EventLog
from harness.settings import Settings, resolve_specs
from harness.training.data import run_preprocessing
from harness.training.recipe import flips_change_class

__all__ = ["Assembly", "Select", "Wrap", "assemble"]

Select = Callable[[str, SubscriberSpec[Any]], bool]
"""Which enabled specs to attach, by table name and spec (default: all of them)."""

Wrap = Callable[[str, Subscriber, OnError], Subscriber]
"""What is attached in a subscriber's place (the benchmark times its handlers); default: itself."""


@attrs.frozen(kw_only=True)
class Assembly:
    """A run's context and bus, and its subscribers by table name (extras included)."""

    context: RunContext
    bus: Bus
    subscribers: Mapping[str, Subscriber]
    event_log: EventLog | None = None

    @property
    def stateful(self) -> list[str]:
        """The table names of the subscribers whose state rides in checkpoints."""
        return [name for name, subscriber in self.subscribers.items() if isinstance(subscriber, Stateful)]

    def close(self) -> None:
        """Close the event log (the subscribers own nothing else to close)."""
        if self.event_log is not None:
            self.event_log.close()


def _everything(name: str, spec: SubscriberSpec[Any]) -> bool:
    return True


def assemble(
    settings: Settings,
    *,
    run_dir: Path,
    class_names: Sequence[str],
    preprocessing: Preprocessing | None = None,
    data: DatasetInfo | None = None,
    train_sampler: Sampler[int] | None = None,
    background: JobRunner | None = None,
    augmented_samples: Samples | None = None,
    trackers: Trackers | None = None,
    record_events: bool = False,
    specs: Mapping[str, SubscriberSpec[Any]] | None = None,
    select: Select = _everything,
    extras: Mapping[str, Subscriber] | None = None,
    wrap: Wrap | None = None,
    recipe: Recipe | None = None,
) -> Assembly:
    """Build the run's context from `settings` and the given pieces, and attach its subscribers.

    `preprocessing` defaults to the run's (`run_preprocessing`: the weights' mean and std);
    `specs` to the built-ins and the plugins of `settings`; `record_events` adds the event
    log in ``run_dir`` (a run's own, not an evaluation's or a replay's); `recipe`, the
    run's resolved one, says whether flips change the class (else the settings say it).
    """
    context = RunContext(
        run_dir=run_dir,
        class_names=tuple(class_names),
        preprocessing=preprocessing or run_preprocessing(settings),
        data=data,
        monitor=settings.checkpoint.monitor,
        monitor_mode=settings.checkpoint.mode,
        train_sampler=train_sampler,
        background=background,
        augmented_samples=augmented_samples,
        trackers=trackers,
        verbosity=settings.run.terminal,
        flips_change_class=flips_change_class(settings, recipe),
    )
    bus = Bus()
    event_log = bus.attach(EventLog(context), name="event_log") if record_events else None
    subscribers: dict[str, Subscriber] = {}
    for name, spec in (specs if specs is not None else resolve_specs(settings.run.plugins)).items():
        options = settings.subscribers[name]
        if not (options.enabled and select(name, spec)):
            continue
        try:
            subscriber = subscribers[name] = spec.build(context, options)
        except Exception as error:
            raise build_error(name, "built", error) from error
        attached = subscriber if wrap is None else wrap(name, subscriber, options.on_error)
        try:
            bus.attach(attached, on_error=options.on_error, name=name)
        except Exception as error:
            raise build_error(name, "connected", error) from error
    for name, subscriber in (extras or {}).items():
        subscribers[name] = bus.attach(subscriber, on_error="raise", name=name)
    return Assembly(context=context, bus=bus, subscribers=subscribers, event_log=event_log)

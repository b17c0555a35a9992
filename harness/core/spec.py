"""The subscriber spec: a table name, a settings class, and how to build the subscriber.

Every subscriber module, built-in or plugin, declares one beside its class::

    @attrs.frozen(kw_only=True)
    class LossSpikesSettings(SubscriberSettings):
        factor: float = option(3.0, "a loss above factor x its running mean is a spike", positive())

    class LossSpikes:
        def __init__(self, context: RunContext, settings: LossSpikesSettings) -> None: ...
        def connect(self, bus: Bus) -> None: ...

    SPEC = SubscriberSpec(name="loss_spikes", build=LossSpikes, settings=LossSpikesSettings)

The name is written once, here: it is the settings table (``[subscribers.loss_spikes]``),
the key of the subscriber's state in checkpoints (so a module may move without losing
state), and the subscriber's name in the settings reference. `build` is called with the
run context and the validated settings; heavy imports belong in it (or in the
subscriber's constructor), so a disabled subscriber costs nothing at start-up.

Options that can only be checked against the data or the model (a class name that must
exist, say) are checked in `build`, which raises `harness.core.errors.SettingsError`
with what was expected and what was found. The run's assembly builds and connects every
enabled one before training: any exception there, whatever the subscriber's ``on_error``,
stops the run with one line naming ``[subscribers.<name>]`` (exit code 2, `build_error`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

import attrs

from harness.core.bus import OnError, Subscriber
from harness.core.context import RunContext
from harness.core.errors import SettingsError
from harness.core.options import option

__all__ = [
    "AnySpec",
    "OnError",
    "SubscriberSettings",
    "SubscriberSpec",
    "build_error",
    "on_error_option",
    "plain_spec",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def on_error_option(default: OnError) -> OnError:
    """The `on_error` field with another default: ``on_error: OnError = on_error_option("raise")``."""
    return option(default, "`raise` stops the run; `isolate` reports the failure, disconnects it and goes on")


@attrs.frozen(kw_only=True)
class SubscriberSettings:
    """What every ``[subscribers.<name>]`` table has; a subscriber's settings class extends it.

    A failure stops the run unless the subscriber's author (or the user) says it may be
    isolated: optional ones, such as pictures, declare ``on_error_option("isolate")``.
    """

    enabled: bool = option(True, "attach this subscriber")
    on_error: OnError = on_error_option("raise")


S = TypeVar("S", bound=SubscriberSettings)


def _valid_name(_instance: object, _attribute: object, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"a subscriber spec's name must be a lower-case identifier (the settings table), got {value!r}"
        )


@attrs.frozen(kw_only=True)
class SubscriberSpec(Generic[S]):
    """How ``[subscribers.<name>]`` becomes a subscriber: its settings class and its builder.

    `enabled` (in the settings class's defaults) says whether a built-in is on when the
    settings file does not mention it; a plugin is attached when ``[run].plugins`` names it.
    `replayable` says the subscriber needs nothing but the tensor-free events of a run's
    ``events.jsonl`` (no model, no batches), so ``harness.replay`` can rebuild its output.
    """

    name: str = attrs.field(validator=_valid_name)
    build: Callable[[RunContext, S], Subscriber]
    settings: type[S] = attrs.field(default=SubscriberSettings)  # type: ignore[assignment]
    summary: str = ""
    replayable: bool = False

    def __attrs_post_init__(self) -> None:
        if not (isinstance(self.settings, type) and issubclass(self.settings, SubscriberSettings)):
            raise TypeError(
                f"subscriber spec {self.name!r}: settings must be a SubscriberSettings subclass, "
                f"got {self.settings!r}"
            )

    @property
    def description(self) -> str:
        """One line for the reference: `summary`, else the settings class's first doc line."""
        if self.summary:
            return self.summary
        doc = (self.settings.__doc__ or "").strip().splitlines()
        return doc[0] if doc and self.settings is not SubscriberSettings else ""


def plain_spec(
    name: str, cls: Callable[[RunContext], Subscriber], summary: str = ""
) -> SubscriberSpec[SubscriberSettings]:
    """A spec for a subscriber class built from the context alone, with `enabled` and `on_error` only."""

    def build(context: RunContext, _settings: SubscriberSettings) -> Subscriber:
        return cls(context)

    return SubscriberSpec(name=name, build=build, settings=SubscriberSettings, summary=summary)


AnySpec = SubscriberSpec[Any]
"""A spec of any settings class: what lists of specs hold."""


def build_error(name: str, step: Literal["built", "connected"], error: Exception) -> SettingsError:
    """The one-line refusal of the subscriber `name` that raised `error` while it was built or connected.

    A `SettingsError` of its own (an option checked against the data) keeps its message;
    anything else is named with its type. Either way it stops the run before it starts,
    whatever the subscriber's ``on_error`` (that policy is for events, once the run is going).
    """
    if isinstance(error, SettingsError):
        return SettingsError(f"[subscribers.{name}]: {error}")
    return SettingsError(f"[subscribers.{name}]: raised while it was {step}: {type(error).__name__}: {error}")

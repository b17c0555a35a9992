"""The event bus: typed subscribe/publish over one anonymous blinker signal per event class.

A `Bus` owns its signals; nothing is registered process-wide, so two buses in one process
never see each other's events. Handlers take exactly one argument, the event.

blinker 1.9.0 has traps this module neutralises, each by design rather than by patching:

- receivers are weak by default: the bus holds every handler strongly, so a subscriber
  built inline (``Plots(ctx).connect(bus)``) keeps receiving;
- dispatch order is a set's order: each signal has exactly one receiver, the bus's own
  dispatcher, which calls handlers in subscription order;
- the first raising receiver skips the rest: the dispatcher applies a failure policy per
  subscriber (``"raise"`` stops the run with a `SubscriberError` naming subscriber, event
  and step; ``"isolate"`` logs the traceback, records a `Failure`, disconnects that
  subscriber and lets everyone else go on);
- ``muted()`` does not nest: the bus never mutes.

Subscription order is deterministic and documented, but a subscriber must not rely on it:
where one subscriber needs another's result, the catalogue has a distinct event.
"""

from __future__ import annotations

import inspect
import logging
import traceback
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import attrs
import blinker

from harness.core.errors import SubscriberError
from harness.core.events import Event, Stage
from harness.core.summary import Failure

__all__ = ["Bus", "Failure", "OnError", "Stateful", "Subscriber", "Subscription"]

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
OnError = Literal["raise", "isolate"]


@runtime_checkable
class Subscriber(Protocol):
    """A plain object that lists its subscriptions in `connect`."""

    def connect(self, bus: Bus) -> None: ...


S = TypeVar("S", bound=Subscriber)


@runtime_checkable
class Stateful(Protocol):
    """A subscriber whose state is saved in checkpoints and restored on resume.

    The state must hold only what ``torch.load(weights_only=True)`` accepts: tensors,
    numbers, strings, booleans, None, and lists, tuples and dicts of those.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Subscription(Generic[E]):
    """One handler on one event type, with its filters; returned by `Bus.subscribe`."""

    __slots__ = (
        "active",
        "event_type",
        "every_n_epochs",
        "every_n_steps",
        "filtered",
        "handler",
        "last_step",
        "name",
        "on_error",
        "owner",
        "rank_zero_only",
        "stage",
    )

    def __init__(
        self,
        event_type: type[E],
        handler: Callable[[E], None],
        *,
        name: str,
        owner: object,
        stage: Stage | None,
        every_n_steps: int | None,
        every_n_epochs: int | None,
        rank_zero_only: bool,
        on_error: OnError | None,
    ) -> None:
        self.event_type = event_type
        self.handler = handler
        self.name = name
        self.owner = owner
        self.stage = stage
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.rank_zero_only = rank_zero_only
        self.on_error = on_error
        self.filtered = bool(stage or every_n_steps or every_n_epochs or rank_zero_only)
        self.active = True
        self.last_step = -1

    def accepts(self, event: E, rank: int) -> bool:
        """Whether the filters let `event` through (called only for filtered ones)."""
        if self.rank_zero_only and rank != 0:
            return False
        if self.stage is not None and getattr(event, "stage", None) != self.stage:
            return False
        if self.every_n_epochs and (event.epoch + 1) % self.every_n_epochs:
            return False
        if self.every_n_steps:
            step = event.global_step
            if step == self.last_step or step % self.every_n_steps or step == 0:
                return False
            self.last_step = step
        return True

    def __repr__(self) -> str:
        return f"<Subscription {self.name} to {self.event_type.__name__}>"


def _check_handler(event_type: type[Event], handler: Callable[..., object]) -> None:
    """A handler is called with the event alone: refuse one that cannot be, naming it."""
    if not callable(handler):
        raise TypeError(f"subscribe({event_type.__name__}, {handler!r}): the handler is not callable")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # a builtin or C callable without a signature: trust it
    try:
        signature.bind(object())
    except TypeError:
        name = getattr(handler, "__qualname__", repr(handler))
        raise TypeError(
            f"subscribe({event_type.__name__}, {name}): a handler takes exactly one positional "
            f"argument, the event; its signature is {name}{signature}"
        ) from None


def _describe(handler: Callable[..., object]) -> tuple[str, object]:
    owner = getattr(handler, "__self__", None)
    if owner is None:
        return getattr(handler, "__qualname__", repr(handler)), handler
    return f"{type(owner).__name__}.{getattr(handler, '__name__', '?')}", owner


class Bus:
    """Typed publish/subscribe for one run.

    `rank` is this process's rank; Lightning's adapter sets it once the strategy is known,
    and `rank_zero_only` subscriptions consult it at each event.
    """

    def __init__(self, *, rank: int = 0) -> None:
        self.rank = rank
        self.failures: list[Failure] = []
        self._signals: dict[type[Event], blinker.Signal] = {}
        self._subscriptions: list[Subscription[Any]] = []
        self._routes: dict[type[Event], tuple[Subscription[Any], ...]] = {}
        self._policies: dict[int, OnError] = {}
        self._names: dict[int, str] = {}

    def attach(self, subscriber: S, *, on_error: OnError = "raise", name: str | None = None) -> S:
        """Connect `subscriber` with a default failure policy for all its subscriptions; return it.

        `name` is its table name (``[subscribers.<name>]``): a failure names it so. Without
        one, a failure names the handler (``Class.method``).
        """
        self._policies[id(subscriber)] = on_error
        if name is not None:
            self._names[id(subscriber)] = name
        subscriber.connect(self)
        return subscriber

    def subscribe(
        self,
        event_type: type[E],
        handler: Callable[[E], None],
        *,
        stage: Stage | None = None,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        rank_zero_only: bool = False,
        on_error: OnError | None = None,
        name: str | None = None,
    ) -> Subscription[E]:
        """Call `handler(event)` for every published `event_type` (and its subclasses).

        Filters read as English: ``stage="validate"`` (events that carry a stage),
        ``every_n_steps=50`` (at most once per optimizer step, when the global step is a
        positive multiple of 50), ``every_n_epochs=2`` (epochs 1, 3, 5, ... counted from
        zero), ``rank_zero_only=True``. `on_error` overrides the policy given to `attach`.
        """
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"subscribe() needs an Event class, got {event_type!r}")
        if stage is not None and "stage" not in attrs.fields_dict(event_type):
            raise ValueError(f"{event_type.__name__} has no stage; stage={stage!r} never matches")
        stages = typing.get_args(Stage)
        if stage is not None and stage not in stages:
            listed = ", ".join(repr(s) for s in stages)
            raise ValueError(
                f"subscribe({event_type.__name__}, stage={stage!r}): stage must be one of {listed}"
            )
        _check_handler(event_type, handler)
        for label, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        label, owner = _describe(handler)
        subscription: Subscription[E] = Subscription(
            event_type,
            handler,
            name=name or label,
            owner=owner,
            stage=stage,
            every_n_steps=every_n_steps,
            every_n_epochs=every_n_epochs,
            rank_zero_only=rank_zero_only,
            on_error=on_error,
        )
        self._subscriptions.append(subscription)
        self._routes.clear()
        return subscription

    def unsubscribe(self, subscription: Subscription[Any]) -> None:
        """Stop delivering to `subscription`; unknown subscriptions are ignored."""
        subscription.active = False
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._routes.clear()

    def disconnect(self, owner: object) -> None:
        """Remove every subscription `owner` made (a subscriber object or a function)."""
        for subscription in [s for s in self._subscriptions if s.owner is owner]:
            self.unsubscribe(subscription)

    def signal(self, event_type: type[Event]) -> blinker.Signal:
        """The anonymous blinker signal that carries `event_type` on this bus."""
        signal = self._signals.get(event_type)
        if signal is None:
            signal = self._signals[event_type] = blinker.Signal(event_type.__name__)
            signal.connect(self._dispatch, weak=False)
        return signal

    def publish(self, event: Event) -> None:
        """Deliver `event` to its subscribers, in subscription order."""
        signal = self._signals.get(type(event)) or self.signal(type(event))
        signal.send(event)

    def subscriptions(self, event_type: type[Event] | None = None) -> tuple[Subscription[Any], ...]:
        """Active subscriptions, in dispatch order; those receiving `event_type` if given."""
        if event_type is None:
            return tuple(self._subscriptions)
        return self._route(event_type)

    def _route(self, event_type: type[Event]) -> tuple[Subscription[Any], ...]:
        route = self._routes.get(event_type)
        if route is None:
            route = self._routes[event_type] = tuple(
                s for s in self._subscriptions if issubclass(event_type, s.event_type)
            )
        return route

    def _dispatch(self, event: Event) -> None:
        rank = self.rank
        for subscription in self._routes.get(type(event)) or self._route(type(event)):
            if not subscription.active:
                continue
            if subscription.filtered and not subscription.accepts(event, rank):
                continue
            try:
                subscription.handler(event)
            except Exception as error:  # noqa: BLE001 - the policy decides, below
                self._fail(subscription, event, error)

    def _fail(self, subscription: Subscription[Any], event: Event, error: Exception) -> None:
        if isinstance(error, SubscriberError):
            raise error
        policy = subscription.on_error or self._policies.get(id(subscription.owner), "raise")
        event_name = type(event).__name__
        reason = f"{type(error).__name__}: {error}"
        failure = Failure(
            subscriber=self._names.get(id(subscription.owner), subscription.name),
            event=event_name,
            step=event.global_step,
            error=reason,
            traceback="".join(traceback.format_exception(error)),
        )
        self.failures.append(failure)
        if policy == "raise":
            raise SubscriberError(failure.subscriber, event_name, event.global_step, reason) from error
        log.error(
            "subscriber %s (%s) failed on %s at step %d and is disconnected; the run goes on:\n%s",
            failure.subscriber,
            subscription.name,
            failure.event,
            failure.step,
            failure.traceback,
        )
        self.disconnect(subscription.owner)

"""The bus: ordering, strong references, isolation, filters, failure policies."""

from __future__ import annotations

import gc
import logging

import pytest
import torch

from harness.core.bus import Bus
from harness.core.errors import SubscriberError
from harness.core.events import BatchEnd, Event, FitEnd, TrainEpochEnd, ValidationSwapIn
from harness.core.testing import batch_end


def epoch_end(epoch: int = 0, step: int = 0) -> TrainEpochEnd:
    return TrainEpochEnd(epoch=epoch, global_step=step, metrics={})


class Log:
    """A subscriber that notes what it received under a label."""

    def __init__(self, label: str, seen: list[str]) -> None:
        self.label = label
        self.seen = seen

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end)

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        self.seen.append(self.label)


def test_dispatch_follows_subscription_order() -> None:
    bus, seen = Bus(), []
    labels = [f"s{i}" for i in range(12)]
    for label in labels:
        bus.attach(Log(label, seen))
    bus.publish(epoch_end())
    assert seen == labels


def test_subscriber_built_inline_keeps_receiving() -> None:
    bus, seen = Bus(), []
    bus.attach(Log("inline", seen))
    gc.collect()
    bus.publish(epoch_end())
    bus.subscribe(TrainEpochEnd, lambda event: seen.append("lambda"))
    gc.collect()
    bus.publish(epoch_end())
    assert seen == ["inline", "inline", "lambda"]


def test_two_buses_never_see_each_others_events() -> None:
    first, second = Bus(), Bus()
    seen_first, seen_second = [], []
    first.attach(Log("a", seen_first))
    second.attach(Log("b", seen_second))
    first.publish(epoch_end())
    assert seen_first == ["a"]
    assert seen_second == []


def test_events_reach_only_their_type_and_base_subscribers() -> None:
    bus, seen = Bus(), []
    bus.subscribe(Event, lambda event: seen.append(f"any:{type(event).__name__}"))
    bus.subscribe(FitEnd, lambda event: seen.append("fit_end"))
    bus.publish(epoch_end())
    bus.publish(FitEnd(epoch=0, global_step=0))
    assert seen == ["any:TrainEpochEnd", "any:FitEnd", "fit_end"]


def test_stage_filter() -> None:
    bus, seen = Bus(), []
    bus.subscribe(BatchEnd, lambda event: seen.append(event.stage), stage="validate")
    for stage in ("train", "validate", "test"):
        bus.publish(batch_end(stage=stage))
    assert seen == ["validate"]


def test_stage_filter_on_an_event_without_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="TrainEpochEnd has no stage"):
        Bus().subscribe(TrainEpochEnd, lambda event: None, stage="train")


def test_every_n_steps_fires_once_per_matching_optimizer_step() -> None:
    bus, seen = Bus(), []
    bus.subscribe(BatchEnd, lambda event: seen.append(event.global_step), every_n_steps=3)
    # Two batches per optimizer step (gradient accumulation) share a global step.
    for step in [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]:
        bus.publish(batch_end(global_step=step))
    assert seen == [3, 6]


def test_every_n_epochs_counts_epochs_from_zero() -> None:
    bus, seen = Bus(), []
    bus.subscribe(TrainEpochEnd, lambda event: seen.append(event.epoch), every_n_epochs=2)
    for epoch in range(6):
        bus.publish(epoch_end(epoch))
    assert seen == [1, 3, 5]


@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_every_n_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer"):
        Bus().subscribe(BatchEnd, lambda event: None, every_n_steps=value)  # type: ignore[arg-type]


def test_rank_zero_only_reads_the_rank_at_publish_time() -> None:
    bus, seen = Bus(rank=1), []
    bus.subscribe(TrainEpochEnd, lambda event: seen.append("zero-only"), rank_zero_only=True)
    bus.subscribe(TrainEpochEnd, lambda event: seen.append("all"))
    bus.publish(epoch_end())
    bus.rank = 0
    bus.publish(epoch_end())
    assert seen == ["all", "zero-only", "all"]


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end)
        bus.subscribe(ValidationSwapIn, self.on_validation_swap_in)

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        self.calls += 1
        raise RuntimeError("disk full")

    def on_validation_swap_in(self, event: ValidationSwapIn) -> None:
        self.calls += 1


def test_raise_policy_stops_with_subscriber_event_and_step() -> None:
    bus, seen = Bus(), []
    bus.attach(Broken())
    bus.attach(Log("after", seen))
    with pytest.raises(SubscriberError) as caught:
        bus.publish(epoch_end(epoch=2, step=40))
    message = str(caught.value)
    assert "Broken.on_train_epoch_end" in message
    assert "TrainEpochEnd" in message
    assert "step 40" in message
    assert "RuntimeError: disk full" in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert seen == []


def test_isolate_policy_reports_once_disconnects_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus, seen = Bus(), []
    broken = Broken()
    bus.attach(broken, on_error="isolate")
    bus.attach(Log("after", seen))
    with caplog.at_level(logging.ERROR, logger="harness.core.bus"):
        bus.publish(epoch_end(epoch=1, step=7))
        bus.publish(epoch_end(epoch=2, step=9))
        bus.publish(ValidationSwapIn(epoch=2, global_step=9))
    assert seen == ["after", "after"]
    assert broken.calls == 1, "the failed subscriber is disconnected from every event"
    assert len(bus.failures) == 1
    failure = bus.failures[0]
    assert (failure.subscriber, failure.event, failure.step) == (
        "Broken.on_train_epoch_end",
        "TrainEpochEnd",
        7,
    )
    assert "RuntimeError: disk full" in failure.error
    assert "Traceback" in failure.traceback
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "Broken.on_train_epoch_end" in errors[0].getMessage()


def test_per_subscription_policy_overrides_the_attach_policy() -> None:
    bus = Bus()
    bus.subscribe(TrainEpochEnd, lambda event: 1 / 0, on_error="isolate", name="divider")
    bus.publish(epoch_end())
    assert [f.subscriber for f in bus.failures] == ["divider"]


def test_keyboard_interrupt_is_never_swallowed() -> None:
    bus = Bus()

    def interrupt(event: TrainEpochEnd) -> None:
        raise KeyboardInterrupt

    bus.subscribe(TrainEpochEnd, interrupt, on_error="isolate")
    with pytest.raises(KeyboardInterrupt):
        bus.publish(epoch_end())


def test_unsubscribe_stops_delivery() -> None:
    bus, seen = Bus(), []
    subscription = bus.subscribe(TrainEpochEnd, lambda event: seen.append(1))
    bus.publish(epoch_end())
    bus.unsubscribe(subscription)
    bus.publish(epoch_end())
    assert seen == [1]


def test_events_are_frozen_and_keyword_only() -> None:
    event = batch_end()
    with pytest.raises(AttributeError):
        event.epoch = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        TrainEpochEnd(0, 0, {})  # type: ignore[misc]
    assert isinstance(event.logits, torch.Tensor)


def test_a_stage_outside_the_stages_is_refused_at_subscribe_time() -> None:
    bus = Bus()
    with pytest.raises(ValueError, match=r"stage='val'\): stage must be one of 'train', 'validate', 'test'"):
        bus.subscribe(BatchEnd, lambda event: None, stage="val")  # type: ignore[arg-type]


def test_a_handler_that_cannot_take_the_event_alone_is_refused_at_subscribe_time() -> None:
    def two(event: BatchEnd, extra: int) -> None: ...

    def none() -> None: ...

    bus = Bus()
    for handler in (two, none):
        with pytest.raises(
            TypeError, match=rf"subscribe\(BatchEnd, .*{handler.__name__}\): a handler takes exactly one"
        ):
            bus.subscribe(BatchEnd, handler)  # type: ignore[arg-type]
    bus.subscribe(BatchEnd, lambda event, *rest: None)
    assert len(bus.subscriptions()) == 1


def test_a_raising_subscriber_is_recorded_before_the_run_stops() -> None:
    class Broken:
        def connect(self, bus: Bus) -> None:
            bus.subscribe(BatchEnd, self.on_batch_end)

        def on_batch_end(self, event: BatchEnd) -> None:
            raise RuntimeError("broken")

    bus = Bus()
    bus.attach(Broken(), on_error="raise")
    with pytest.raises(SubscriberError):
        bus.publish(batch_end(global_step=3))
    [failure] = bus.failures
    assert (failure.subscriber, failure.event, failure.step) == ("Broken.on_batch_end", "BatchEnd", 3)

"""The test kit: a validation epoch, scripted logits told the epoch and stage, settings checks, stops."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import pytest
import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.errors import SettingsError
from harness.core.events import BatchEnd, Stage, TrainEpochEnd
from harness.core.options import option, positive
from harness.core.spec import SubscriberSettings, SubscriberSpec
from harness.core.testing import (
    Recorder,
    check_settings,
    make_context,
    scripted_run,
    tiny_model,
    validation_epoch,
)


def perfect(inputs: torch.Tensor, targets: torch.Tensor, *, epoch: int, stage: Stage) -> torch.Tensor:
    return torch.nn.functional.one_hot(targets, 3).float() * 5


def test_a_validation_epoch_publishes_what_lightning_does_with_the_model_in_eval_mode(tmp_path: Path) -> None:
    context = make_context(tmp_path, model=tiny_model())
    context.epoch = 4
    bus = Bus()
    recorder = bus.attach(Recorder())
    modes: list[bool] = []
    bus.subscribe(BatchEnd, lambda _: modes.append(context.require_model().training))
    metrics = validation_epoch(bus, context, batches=3, logits=perfect)

    assert recorder.names() == [
        "ValidationSwapIn",
        "BatchEnd",
        "BatchEnd",
        "BatchEnd",
        "ValidationEpochEnd",
        "ValidationSwapOut",
    ]
    assert {event.epoch for event in recorder.events} == {4}
    assert {event.stage for event in recorder.of(BatchEnd)} == {"validate"}
    assert metrics["val/acc_top1"] == 1.0
    assert modes == [False] * 3 and context.require_model().training, "eval inside, training mode after"


def test_scripted_logits_are_told_the_epoch_and_the_stage(tmp_path: Path) -> None:
    calls: list[tuple[int, Stage]] = []

    def logits(inputs: torch.Tensor, targets: torch.Tensor, *, epoch: int, stage: Stage) -> torch.Tensor:
        calls.append((epoch, stage))
        return perfect(inputs, targets, epoch=epoch, stage=stage)

    context = make_context(tmp_path)
    bus = Bus()
    recorder = bus.attach(Recorder())
    scripted_run(bus, context, epochs=2, train_batches=2, val_batches=1, sanity_check=True, logits=logits)
    assert calls == [(0, "validate"), (0, "train"), (0, "train"), (0, "validate")] + [(1, "train")] * 2 + [
        (1, "validate")
    ]
    assert [event.metrics["val/acc_top1"] for event in recorder.of(TrainEpochEnd)] == [1.0, 1.0]


@attrs.frozen(kw_only=True)
class AlarmSettings(SubscriberSettings):
    """Per-class recall alarm."""

    threshold: float = option(0.5, "alarm below this recall", positive())
    action: Literal["log", "stop"] = option("log", "what to do on an alarm")


class Alarm:
    def __init__(self, context: RunContext, settings: AlarmSettings) -> None:
        self.settings = settings

    def connect(self, bus: Bus) -> None:
        pass


SPEC = SubscriberSpec(name="recall_alarm", build=Alarm, settings=AlarmSettings)


def test_a_plugins_options_are_checked_as_a_run_checks_them() -> None:
    assert check_settings(SPEC, threshold=2, action="stop") == AlarmSettings(threshold=2.0, action="stop")
    assert check_settings(SPEC, {"on_error": "isolate"}).on_error == "isolate"
    with pytest.raises(
        SettingsError,
        match=r"^settings: \[subscribers.recall_alarm\].threshold must be positive, got -1.0$",
    ):
        check_settings(SPEC, threshold=-1)
    with pytest.raises(
        SettingsError, match=r"unknown key 'subscribers\.recall_alarm\.treshold'; did you mean 'threshold'"
    ):
        check_settings(SPEC, {"treshold": 0.2})
    with pytest.raises(SettingsError, match="action must be one of 'log', 'stop', got 'panic'"):
        check_settings(SPEC, action="panic")


def test_a_stop_request_ends_a_scripted_run_after_the_step_or_at_the_end_of_the_epoch(tmp_path: Path) -> None:
    for at, steps in (("step", 2), ("epoch", 3)):
        context = make_context(tmp_path / at)
        bus = Bus()
        recorder = bus.attach(Recorder())

        def on_batch_end(event: BatchEnd, context: RunContext = context, at: str = at) -> None:
            if event.global_step == 2:
                context.request_stop("enough", at=at)  # type: ignore[arg-type]

        bus.subscribe(BatchEnd, on_batch_end, stage="train")
        scripted_run(bus, context, epochs=3, train_batches=3)
        assert context.global_step == steps
        assert context.stop_request is not None and context.stop_request.reason == "enough"
        assert recorder.names()[-3:] == ["TrainLoopEnd", "TrainEnd", "FitEnd"]
        assert len(recorder.of(TrainEpochEnd)) == 1, "the epoch that asked still validates and ends"


def test_the_first_reason_is_kept_and_a_step_request_brings_an_epoch_one_forward(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    context.global_step = 7
    context.request_stop("recall of class_1 below 0.5")
    context.request_stop("another alarm", at="step")
    assert context.stop_request is not None
    assert (context.stop_request.reason, context.stop_request.at) == ("recall of class_1 below 0.5", "step")
    assert context.stop_request.global_step == 7
    with pytest.raises(ValueError, match="give a reason"):
        make_context(tmp_path).request_stop("  ")

"""The EMA subscriber, driven by synthetic events: arithmetic, swaps, checkpoints, resume."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.errors import SubscriberError
from harness.core.events import (
    BatchEnd,
    CheckpointSaving,
    FitStart,
    TrainLoopEnd,
    ValidationEpochEnd,
    ValidationSwapIn,
    ValidationSwapOut,
)
from harness.core.testing import Recorder, batch_end, make_context, scripted_run, tiny_model
from subscribers._ema import ema_decay
from subscribers.ema import EMA, EMASettings

State = dict[str, torch.Tensor]


def snapshot(model: nn.Module) -> State:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_bit_equal(actual: State, expected: State) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name].dtype == expected[name].dtype, name
        assert torch.equal(actual[name], expected[name]), name


def checkpoint_state(bus: Bus, context: RunContext) -> State:
    """What a checkpoint's `state_dict` would hold now, as a copy (the EMA puts views there)."""
    state = snapshot(context.require_model())
    bus.publish(CheckpointSaving(epoch=context.epoch, global_step=context.global_step, model_state=state))
    return snapshot_of(state)


def sgd_step(
    lr: float = 0.1, momentum: float = 0.0
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], None]:
    optimizers: dict[int, torch.optim.Optimizer] = {}

    def step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if id(model) not in optimizers:
            optimizers[id(model)] = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        optimizer = optimizers[id(model)]
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    return step


def recording(
    train_step: Callable[[nn.Module, torch.Tensor, torch.Tensor], None], states: list[State]
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], None]:
    def step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        train_step(model, inputs, targets)
        states.append(snapshot(model))

    return step


class EvalDuringValidation:
    """Puts the model in eval mode for validation, as Lightning does (scripted_run does not)."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def connect(self, bus: Bus) -> None:
        bus.subscribe(ValidationSwapIn, self.on_validation_swap_in)
        bus.subscribe(ValidationSwapOut, self.on_validation_swap_out)

    def on_validation_swap_in(self, event: ValidationSwapIn) -> None:
        self.context.require_model().eval()

    def on_validation_swap_out(self, event: ValidationSwapOut) -> None:
        self.context.require_model().train()


def ema_run(
    tmp_path: Path, settings: EMASettings, **run: int | bool
) -> tuple[Bus, RunContext, EMA, list[State]]:
    """A scripted run with SGD steps; returns the weights after each optimizer step."""
    context = make_context(tmp_path, model=tiny_model())
    bus = Bus()
    ema = EMA(context, settings)
    bus.attach(ema)
    bus.attach(EvalDuringValidation(context))
    states: list[State] = []
    scripted_run(bus, context, train_step=recording(sgd_step(), states), **run)  # type: ignore[arg-type]
    return bus, context, ema, states


def test_warmup_schedule_follows_timm_and_clamps_to_decay() -> None:
    schedule = {"decay": 0.999, "warmup": True, "gamma": 1.0, "power": 0.75}
    assert ema_decay(0, **schedule) == 0.0  # type: ignore[arg-type]
    assert ema_decay(1, **schedule) == pytest.approx(1 - 2**-0.75)  # type: ignore[arg-type]
    assert ema_decay(10, **schedule) == pytest.approx(1 - 11**-0.75)  # type: ignore[arg-type]
    assert ema_decay(100, decay=0.999, warmup=True, gamma=10.0, power=0.5) == pytest.approx(1 - 11**-0.5)
    assert ema_decay(10**6, **schedule) == 0.999  # type: ignore[arg-type]
    assert ema_decay(1, decay=0.9, warmup=False, gamma=1.0, power=0.75) == 0.9
    assert ema_decay(0, decay=0.9, warmup=False, gamma=1.0, power=0.75) == 0.0


def test_unit_power_warmup_averages_every_step_equally(tmp_path: Path) -> None:
    settings = EMASettings(decay=0.999, warmup_power=1.0, warmup_gamma=1.0)
    _, context, ema, states = ema_run(tmp_path, settings, epochs=2, train_batches=3)

    assert ema.updates == len(states) == 6
    averaged = snapshot(context.require_model())  # installed at TrainLoopEnd
    for name, tensor in averaged.items():
        if tensor.is_floating_point():
            expected = torch.stack([state[name] for state in states]).mean(0)
            torch.testing.assert_close(tensor, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(averaged["5.weight"], states[-1]["5.weight"])


def test_constant_decay_matches_the_closed_form(tmp_path: Path) -> None:
    decay = 0.8
    _, context, _, states = ema_run(tmp_path, EMASettings(decay=decay, warmup=False), epochs=1)

    n = len(states)
    averaged = snapshot(context.require_model())
    for name in ("0.weight", "1.running_mean", "5.bias"):
        expected = decay ** (n - 1) * states[0][name]
        for k in range(1, n):
            expected = expected + (1 - decay) * decay ** (n - 1 - k) * states[k][name]
        torch.testing.assert_close(averaged[name], expected, rtol=1e-5, atol=1e-6)


def test_update_every_and_start_step_skip_steps_and_accumulating_batches(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    context = make_context(tmp_path, model=model)
    bus = Bus()
    ema = EMA(context, EMASettings(decay=0.75, warmup=False, update_every=3, start_step=4))
    bus.attach(ema)
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    for step in range(1, 11):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float(step))
        bus.publish(batch_end(global_step=step, optimizer_stepped=True))
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(-100.0)
        # between optimizer steps (gradient accumulation) the global step does not move
        bus.publish(batch_end(global_step=step, optimizer_stepped=False))

    assert ema.updates == 2  # after steps 6 and 9
    averaged = checkpoint_state(bus, context)
    assert torch.equal(averaged["weight"], torch.full((1, 2), 0.75 * 6 + 0.25 * 9))


def test_integer_buffers_are_copied_not_averaged(tmp_path: Path) -> None:
    _, context, _, states = ema_run(tmp_path, EMASettings(decay=0.9), epochs=1)

    averaged = snapshot(context.require_model())
    assert averaged["1.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(averaged["1.num_batches_tracked"], states[-1]["1.num_batches_tracked"])
    assert not torch.equal(averaged["1.running_mean"], states[-1]["1.running_mean"])


def test_validation_swap_exchanges_storage_and_restores_training_weights(tmp_path: Path) -> None:
    bus, context, ema, optimizer = fresh_run(tmp_path, seed=0)
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    run_steps(bus, context, optimizer, range(1, 4), validate=False)
    model = context.require_model()
    training = snapshot(model)
    averaged = checkpoint_state(bus, context)
    parameters = list(model.parameters())
    pointers = [p.data_ptr() for p in parameters]

    bus.publish(ValidationSwapIn(epoch=0, global_step=3))
    assert ema.holds_average
    assert_bit_equal(snapshot(model), averaged)
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    assert not {p.data_ptr() for p in parameters} & set(pointers)  # exchanged, not copied

    bus.publish(ValidationSwapOut(epoch=0, global_step=3))
    assert not ema.holds_average
    assert_bit_equal(snapshot(model), training)
    assert [p.data_ptr() for p in parameters] == pointers


def test_nothing_is_swapped_before_the_first_update(tmp_path: Path) -> None:
    context = make_context(tmp_path, model=tiny_model())
    bus = Bus()
    ema = EMA(context)
    bus.attach(ema)
    model = context.require_model()
    before = snapshot(model)
    pointers = [p.data_ptr() for p in model.parameters()]

    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    bus.publish(ValidationSwapIn(epoch=0, global_step=0, sanity_check=True))
    assert not ema.holds_average
    assert [p.data_ptr() for p in model.parameters()] == pointers
    bus.publish(ValidationSwapOut(epoch=0, global_step=0, sanity_check=True))
    assert_bit_equal(checkpoint_state(bus, context), before)
    bus.publish(TrainLoopEnd(epoch=0, global_step=0))
    assert not ema.holds_average
    assert_bit_equal(snapshot(model), before)


def test_ema_does_not_change_the_training_trajectory(tmp_path: Path) -> None:
    plain = make_context(tmp_path / "plain", model=tiny_model())
    plain_bus = Bus()
    plain_bus.attach(EvalDuringValidation(plain))
    scripted_run(plain_bus, plain, epochs=2, sanity_check=True, train_step=sgd_step(momentum=0.9))
    context = make_context(tmp_path / "ema", model=tiny_model())
    bus = Bus()
    ema = EMA(context)
    bus.attach(ema)
    bus.attach(EvalDuringValidation(context))
    scripted_run(bus, context, epochs=2, sanity_check=True, train_step=sgd_step(momentum=0.9))

    assert_bit_equal(ema.state_dict()["training"], snapshot(plain.require_model()))


def test_train_loop_end_installs_the_averaged_weights_for_good(tmp_path: Path) -> None:
    context = make_context(tmp_path, model=tiny_model())
    bus = Bus()
    ema = EMA(context)
    bus.attach(ema)
    saved: list[State] = []
    bus.subscribe(CheckpointSaving, lambda event: saved.append(snapshot_of(event.model_state)))
    states: list[State] = []
    scripted_run(bus, context, epochs=2, train_step=recording(sgd_step(), states))

    assert ema.holds_average
    assert_bit_equal(snapshot(context.require_model()), saved[-1])
    assert_bit_equal(ema.state_dict()["training"], states[-1])
    bus.publish(ValidationSwapOut(epoch=1, global_step=context.global_step))
    assert ema.holds_average
    assert_bit_equal(snapshot(context.require_model()), saved[-1])


def snapshot_of(state: Mapping[str, torch.Tensor]) -> State:
    return {name: tensor.clone() for name, tensor in state.items()}


def test_checkpoint_state_dict_is_the_validated_model(tmp_path: Path) -> None:
    context = make_context(tmp_path, model=tiny_model())
    bus = Bus()
    ema = EMA(context)
    bus.attach(ema)
    bus.attach(EvalDuringValidation(context))
    recorder = Recorder()
    bus.attach(recorder)
    saved: list[State] = []
    bus.subscribe(CheckpointSaving, lambda event: saved.append(snapshot_of(event.model_state)))
    scripted_run(bus, context, epochs=2, train_step=sgd_step())

    validated = [e for e in recorder.of(BatchEnd) if e.stage == "validate" and e.epoch == 1]
    from_checkpoint, from_training = tiny_model(seed=7), tiny_model(seed=7)
    from_checkpoint.load_state_dict(saved[-1])
    from_training.load_state_dict(ema.state_dict()["training"])
    from_checkpoint.eval()
    from_training.eval()
    with torch.no_grad():
        for event in validated:
            torch.testing.assert_close(from_checkpoint(event.inputs), event.logits)
            assert not torch.allclose(from_training(event.inputs), event.logits)


def save_and_load(payload: dict[str, object]) -> dict[str, object]:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    loaded: dict[str, object] = torch.load(buffer, weights_only=True)
    return loaded


def run_steps(
    bus: Bus, context: RunContext, optimizer: torch.optim.Optimizer, steps: range, *, validate: bool = True
) -> None:
    """Deterministic SGD steps (data drawn from the step number), each validated if asked."""
    model = context.require_model()
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        inputs = torch.rand(4, 3, 16, 16, generator=generator)
        targets = torch.randint(0, 3, (4,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        context.global_step = step
        bus.publish(batch_end(global_step=step))
        if validate:
            bus.publish(ValidationSwapIn(epoch=0, global_step=step))
            bus.publish(ValidationSwapOut(epoch=0, global_step=step))


def fresh_run(tmp_path: Path, seed: int) -> tuple[Bus, RunContext, EMA, torch.optim.Optimizer]:
    context = make_context(tmp_path, model=tiny_model(seed=seed))
    bus = Bus()
    ema = EMA(context, EMASettings(decay=0.9))
    bus.attach(ema)
    optimizer = torch.optim.SGD(context.require_model().parameters(), lr=0.1, momentum=0.9)
    return bus, context, ema, optimizer


def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path: Path) -> None:
    bus, context, ema, optimizer = fresh_run(tmp_path / "a", seed=0)
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    run_steps(bus, context, optimizer, range(1, 4))
    model_state = snapshot(context.require_model())
    bus.publish(CheckpointSaving(epoch=0, global_step=3, model_state=model_state))
    checkpoint = save_and_load(
        {"state_dict": model_state, "optimizer": optimizer.state_dict(), "ema": ema.state_dict()}
    )
    at_save = {"training": snapshot(context.require_model()), "averaged": checkpoint_state(bus, context)}
    run_steps(bus, context, optimizer, range(4, 7))

    resumed_bus, resumed, resumed_ema, resumed_optimizer = fresh_run(tmp_path / "b", seed=1)
    resumed.require_model().load_state_dict(checkpoint["state_dict"])  # type: ignore[arg-type]
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])  # type: ignore[arg-type]
    resumed_ema.load_state_dict(checkpoint["ema"])  # type: ignore[arg-type]
    resumed_bus.publish(FitStart(epoch=0, global_step=3, max_epochs=1, resumed=True))

    assert resumed_ema.updates == 3
    assert_bit_equal(snapshot(resumed.require_model()), at_save["training"])
    assert_bit_equal(checkpoint_state(resumed_bus, resumed), at_save["averaged"])
    run_steps(resumed_bus, resumed, resumed_optimizer, range(4, 7))
    assert_bit_equal(snapshot(resumed.require_model()), snapshot(context.require_model()))
    assert_bit_equal(checkpoint_state(resumed_bus, resumed), checkpoint_state(bus, context))


def test_tied_weights_are_averaged_once_and_saved_under_every_key(tmp_path: Path) -> None:
    shared = nn.Linear(2, 2)
    context = make_context(tmp_path, model=nn.Sequential(shared, shared))
    bus = Bus()
    bus.attach(EMA(context, EMASettings(decay=0.5, warmup=False)))
    for step, value in ((1, 2.0), (2, 4.0)):
        with torch.no_grad():
            shared.weight.fill_(value)
        bus.publish(batch_end(global_step=step))

    averaged = checkpoint_state(bus, context)
    assert torch.equal(averaged["0.weight"], torch.full((2, 2), 3.0))
    assert torch.equal(averaged["1.weight"], torch.full((2, 2), 3.0))


def test_without_a_model_it_does_nothing(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    ema = EMA(context)
    bus.attach(ema)
    scripted_run(bus, context, epochs=1, sanity_check=True)

    assert ema.updates == 0
    assert not ema.holds_average
    assert ema.state_dict() == {"updates": 0, "kept": "average", "training": {}, "average": {}}


def test_state_without_training_weights_is_rejected(tmp_path: Path) -> None:
    ema = EMA(make_context(tmp_path, model=tiny_model()))
    with pytest.raises(ValueError, match="'updates' is 3 but no training weights"):
        ema.load_state_dict({"updates": 3, "training": {}})


def test_resume_with_a_different_model_names_the_missing_key(tmp_path: Path) -> None:
    context = make_context(tmp_path, model=tiny_model())
    bus = Bus()
    ema = EMA(context)
    bus.attach(ema)
    ema.load_state_dict({"updates": 2, "training": {"0.weight": torch.zeros(4, 3, 3, 3)}})
    with pytest.raises(SubscriberError, match=r"training weights lack 8 model key\(s\), first '0.bias'"):
        bus.publish(FitStart(epoch=0, global_step=2, max_epochs=1, resumed=True))


def test_horizon_caps_the_decay_to_a_share_of_the_run(tmp_path: Path) -> None:
    from subscribers.ema import EMA, EMASettings

    ema = EMA(make_context(tmp_path), EMASettings(decay=0.99, horizon=0.1))
    ema.on_fit_start(FitStart(epoch=0, global_step=0, max_epochs=6, total_steps=60))
    assert ema.decay == pytest.approx(1 - 1 / 6)
    ema.on_fit_start(FitStart(epoch=0, global_step=0, max_epochs=6, total_steps=100_000))
    assert ema.decay == 0.99
    uncapped = EMA(make_context(tmp_path), EMASettings(decay=0.99, horizon=0.0))
    uncapped.on_fit_start(FitStart(epoch=0, global_step=0, max_epochs=6, total_steps=60))
    assert uncapped.decay == 0.99


def validate(
    bus: Bus, context: RunContext, inputs: torch.Tensor, targets: torch.Tensor, epoch: int = 0
) -> None:
    """One validation pass of one batch, as the adapter publishes it: the model's logits on `inputs`."""
    model = context.require_model()
    bus.publish(ValidationSwapIn(epoch=epoch, global_step=context.global_step))
    with torch.no_grad():
        logits = model(inputs)
    bus.publish(
        batch_end(
            stage="validate",
            epoch=epoch,
            inputs=inputs,
            targets=targets,
            logits=logits,
            batch_size=len(targets),
        )
    )
    bus.publish(ValidationEpochEnd(epoch=epoch, global_step=context.global_step, metrics={}))
    bus.publish(ValidationSwapOut(epoch=epoch, global_step=context.global_step))


@pytest.mark.parametrize("better", ["average", "training"])
def test_the_better_weights_are_kept_checkpointed_exported_and_resumed(tmp_path: Path, better: str) -> None:
    """Both weight sets are validated; the better one is the checkpoint's state_dict and the final model."""
    torch.manual_seed(0)
    context = make_context(tmp_path, model=tiny_model())
    model = context.require_model().eval()
    bus = Bus()
    ema = EMA(context, EMASettings(decay=0.5))
    bus.attach(ema)
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    bus.publish(batch_end(global_step=1, optimizer_stepped=True))  # the first update copies the weights
    average = snapshot(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    training = snapshot(model)
    inputs = torch.randn(32, 3, 1, 1) * 3 + torch.randn(32, 3, 16, 16)  # features that survive pooling
    with torch.no_grad():
        predicted = {"training": model(inputs).argmax(1)}
        model.load_state_dict(average)
        predicted["average"] = model(inputs).argmax(1)
        model.load_state_dict(training)
    assert not torch.equal(predicted["training"], predicted["average"])

    validate(bus, context, inputs, predicted[better])

    assert ema.kept == better
    assert context.validated_weights is not None and context.validated_weights.kept == better
    scores = {
        "average": context.validated_weights.average_top1,
        "training": context.validated_weights.training_top1,
    }
    assert scores[better] == 1.0 > scores["training" if better == "average" else "average"]
    assert_bit_equal(snapshot(model), training)  # training goes on with the training weights
    kept = average if better == "average" else training
    saved = checkpoint_state(bus, context)
    assert_bit_equal(saved, kept)
    state = ema.state_dict()

    resumed_context = make_context(tmp_path / "resumed", model=tiny_model(seed=1))
    resumed_context.require_model().load_state_dict(saved)
    resumed = EMA(resumed_context, EMASettings(decay=0.5))
    resumed.load_state_dict(io_round_trip(state))
    resumed_bus = Bus()
    resumed_bus.attach(resumed)
    resumed_bus.publish(FitStart(epoch=1, global_step=1, max_epochs=2, resumed=True))
    assert resumed.kept == better
    assert_bit_equal(snapshot(resumed_context.require_model()), training)
    assert_bit_equal(checkpoint_state(resumed_bus, resumed_context), kept)

    bus.publish(TrainLoopEnd(epoch=0, global_step=1))
    assert_bit_equal(snapshot(model), kept)  # what the export gets


def io_round_trip(state: Mapping[str, object]) -> dict[str, object]:
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    buffer.seek(0)
    loaded: dict[str, object] = torch.load(buffer, weights_only=True)
    return loaded


@pytest.mark.parametrize("released", [False, True])
def test_the_other_weights_are_freed_at_train_loop_end_only_when_no_checkpoint_follows(
    tmp_path: Path, released: bool
) -> None:
    bus, context, ema, optimizer = fresh_run(tmp_path, seed=0)
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    run_steps(bus, context, optimizer, range(1, 4))
    averaged = checkpoint_state(bus, context)
    context.training_state_released = released
    bus.publish(TrainLoopEnd(epoch=0, global_step=3))

    assert ema.holds_average
    assert_bit_equal(snapshot(context.require_model()), averaged)
    training_bytes = sum(t.numel() for t in ema._shadow.training().values())  # type: ignore[union-attr]
    if released:
        assert training_bytes == 0
        with pytest.raises(RuntimeError, match="freed when training ended"):
            ema.state_dict()
    else:
        assert training_bytes > 0 and ema.state_dict()["training"]

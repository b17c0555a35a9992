"""A test kit for subscriber authors: contexts, events and whole runs, without a Trainer.

    from harness.core.bus import Bus
    from harness.core.testing import Recorder, batch_end, make_context, scripted_run

    def test_my_subscriber(tmp_path):
        context = make_context(tmp_path)
        bus = Bus()
        bus.attach(MySubscriber(context, MySettings(factor=2.0)))
        scripted_run(bus, context, epochs=2, losses=[2.3, 2.1, 9.0, 1.8, 1.7, 1.6])
        assert (context.run_dir / "my_artifact.json").exists()

    def test_one_event(tmp_path):
        ...
        bus.publish(batch_end(global_step=7, loss=12.5))

    def test_one_validation(tmp_path):
        ...
        validation_epoch(bus, context, batches=3, logits=my_scripted_logits)

    def test_my_options():
        assert check_settings(SPEC, factor=2.5).factor == 2.5   # SettingsError as a run's

Everything here publishes the same event classes, in the same order, as `BusCallback`
does under Lightning (see `harness.core.events`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.bus import Bus
from harness.core.context import DatasetInfo, JobRunner, RunContext
from harness.core.events import (
    BatchEnd,
    CheckpointSaving,
    EpochJobsQueued,
    Event,
    FitEnd,
    FitStart,
    Stage,
    TrainEnd,
    TrainEpochEnd,
    TrainEpochStart,
    TrainLoopEnd,
    ValidationEpochEnd,
    ValidationSwapIn,
    ValidationSwapOut,
)
from harness.core.options import read_table
from harness.core.preprocessing import Preprocessing
from harness.core.spec import SubscriberSettings, SubscriberSpec

__all__ = [
    "Logits",
    "Recorder",
    "batch_end",
    "check_settings",
    "make_context",
    "scripted_run",
    "tiny_model",
    "validation_epoch",
    "write_imagefolder",
]

E = TypeVar("E", bound=Event)
S = TypeVar("S", bound=SubscriberSettings)


def check_settings(spec: SubscriberSpec[S], table: Mapping[str, Any] | None = None, /, **options: Any) -> S:
    """`spec`'s settings from its ``[subscribers.<name>]`` table, checked as a run checks it.

    The options come as a table (what TOML reads) and keyword arguments. A misspelt key,
    a wrong type or a value a validator refuses raises `harness.core.errors.SettingsError`
    with the message a run stops with, the settings file's name aside: ``settings:
    [subscribers.loss_spikes].factor must be positive, got -1.0``.
    """
    values = {**(table or {}), **options}
    return read_table(spec.settings, values, "settings", ("subscribers", spec.name))


def write_imagefolder(
    root: Path, counts: dict[str, int], size: int = 12, seed: int = 0, height: int | None = None
) -> Path:
    """One folder per class of small RGB PNGs whose colour depends on the class (learnable).

    The images are `size` wide and `height` (default `size`) tall.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[index % 3] = 200.0
        base[(index // 3) % 3] += 55.0 * (index // 3 > 0)
        for n in range(count):
            shape = (height or size, size, 3)
            pixels = np.clip(base + rng.normal(0, 40, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="RGB").save(folder / f"img_{n:03d}.png")
    return root


def tiny_model(num_classes: int = 3, channels: int = 3, seed: int = 0) -> nn.Module:
    """A small convolutional classifier with a BatchNorm (so it has buffers)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def make_context(
    tmp_path: Path,
    *,
    num_classes: int = 3,
    class_names: tuple[str, ...] | None = None,
    image_size: int = 16,
    model: nn.Module | None = None,
    samples_per_class: int = 4,
    data: DatasetInfo | None = None,
    background: JobRunner | None = None,
) -> RunContext:
    """A `RunContext` whose run directory is `tmp_path / "run"` (created).

    Without `data`, the data set is `samples_per_class` made-up paths per class (no files);
    `attrs.evolve(context, data=None)` gives a context without one.
    """
    names = class_names or tuple(f"class_{i}" for i in range(num_classes))
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    fake = [
        (str(tmp_path / f"{names[i]}_{n}.png"), i)
        for i in range(len(names))
        for n in range(samples_per_class)
    ]
    return RunContext(
        run_dir=run_dir,
        class_names=names,
        preprocessing=Preprocessing(image_size=image_size),
        model=model,
        data=data or DatasetInfo(root=tmp_path, train=tuple(fake), val=tuple(fake[::2])),
        background=background,
    )


def batch_end(
    *,
    stage: Stage = "train",
    epoch: int = 0,
    global_step: int = 0,
    batch_idx: int = 0,
    batch_size: int = 4,
    num_classes: int = 3,
    image_size: int = 16,
    inputs: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    loss: float | torch.Tensor | None = None,
    optimizer_stepped: bool | None = None,
    sanity_check: bool = False,
    generator: torch.Generator | None = None,
) -> BatchEnd:
    """A valid `BatchEnd`: random images, targets and logits unless given.

    `loss` defaults to the cross-entropy of the logits against the targets; a number
    becomes a scalar tensor.
    """
    if inputs is None:
        inputs = torch.rand(batch_size, 3, image_size, image_size, generator=generator)
    n = inputs.shape[0]
    if targets is None:
        targets = torch.randint(0, num_classes, (n,), generator=generator)
    if logits is None:
        logits = torch.randn(n, num_classes, generator=generator)
    return BatchEnd(
        stage=stage,
        epoch=epoch,
        global_step=global_step,
        batch_idx=batch_idx,
        inputs=inputs,
        targets=targets,
        logits=logits,
        loss=F.cross_entropy(logits, targets) if loss is None else torch.as_tensor(loss, dtype=torch.float32),
        optimizer_stepped=stage == "train" if optimizer_stepped is None else optimizer_stepped,
        sanity_check=sanity_check,
    )


class Recorder:
    """Records every event a bus publishes, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(Event, self.on_event)

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        """Event class names in publishing order, e.g. ``["FitStart", "TrainEpochStart"]``."""
        return [type(event).__name__ for event in self.events]

    def of(self, event_type: type[E]) -> list[E]:
        """The recorded events of one type."""
        return [event for event in self.events if isinstance(event, event_type)]


class Logits(Protocol):
    """Scripts a model's outputs: the logits for `inputs`, told the epoch and the stage."""

    def __call__(
        self, inputs: torch.Tensor, targets: torch.Tensor, *, epoch: int, stage: Stage
    ) -> torch.Tensor: ...


def _logits_of(
    context: RunContext,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    epoch: int,
    stage: Stage,
    logits: Logits | None,
    generator: torch.Generator,
) -> torch.Tensor:
    if logits is not None:
        return logits(inputs, targets, epoch=epoch, stage=stage).detach()
    if context.model is None:
        return torch.randn(inputs.shape[0], context.num_classes, generator=generator)
    with torch.no_grad():
        computed: torch.Tensor = context.model(inputs)
    return computed.detach()


def validation_epoch(
    bus: Bus,
    context: RunContext,
    *,
    epoch: int | None = None,
    batches: int = 2,
    batch_size: int = 4,
    logits: Logits | None = None,
    sanity_check: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Publish one validation as `BusCallback` does; return its metrics.

    ``val/acc_top1`` is measured on the logits; ``val/loss`` is scripted, 1 / (epoch + 1),
    so that each epoch is better than the last.

    `ValidationSwapIn`, a `BatchEnd(stage="validate")` per batch, `ValidationEpochEnd`,
    `ValidationSwapOut`, at `epoch` (default `context.epoch`). The model, when the context
    has one, is in eval mode from before `ValidationSwapIn` to after `ValidationSwapOut`,
    as under Lightning. Logits as in `scripted_run`.
    """
    epoch = context.epoch if epoch is None else epoch
    generator = generator or torch.Generator().manual_seed(0)
    model = context.model
    training = model is not None and model.training
    if model is not None:
        model.eval()
    step = context.global_step
    bus.publish(ValidationSwapIn(epoch=epoch, global_step=step, sanity_check=sanity_check))
    correct = total = 0
    for index, (inputs, targets) in enumerate(_batches(context, batches, batch_size, generator)):
        outputs = _logits_of(
            context, inputs, targets, epoch=epoch, stage="validate", logits=logits, generator=generator
        )
        correct += int((outputs.argmax(1) == targets).sum())
        total += len(targets)
        bus.publish(
            batch_end(
                stage="validate",
                epoch=epoch,
                global_step=step,
                batch_idx=index,
                inputs=inputs,
                targets=targets,
                logits=outputs,
                sanity_check=sanity_check,
            )
        )
    metrics = {"val/acc_top1": correct / max(total, 1), "val/loss": 1.0 / (epoch + 1)}
    bus.publish(ValidationEpochEnd(epoch=epoch, global_step=step, metrics=metrics, sanity_check=sanity_check))
    bus.publish(ValidationSwapOut(epoch=epoch, global_step=step, sanity_check=sanity_check))
    if model is not None:
        model.train(training)
    return metrics


def _batches(
    context: RunContext, count: int, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    size = context.preprocessing.image_size
    for _ in range(count):
        yield (
            torch.rand(batch_size, 3, size, size, generator=generator),
            torch.randint(0, context.num_classes, (batch_size,), generator=generator),
        )


def scripted_run(
    bus: Bus,
    context: RunContext,
    *,
    epochs: int = 2,
    train_batches: int = 3,
    val_batches: int = 2,
    batch_size: int = 4,
    sanity_check: bool = False,
    train_step: Callable[[nn.Module, torch.Tensor, torch.Tensor], None] | None = None,
    losses: Sequence[float] | None = None,
    logits: Logits | None = None,
    seed: int = 0,
) -> None:
    """Publish a whole run's events on `bus`, updating `context` as Lightning's adapter does.

    Logits come from `logits(inputs, targets, epoch=..., stage=...)` when given (`Logits`),
    else from `context.model` when set, else at random. Each validation is
    `validation_epoch`. A `RunContext.request_stop` ends the run as under Lightning: after
    the current training step (``at="step"``; its epoch still validates and ends) or at the
    end of the epoch, then `TrainLoopEnd`, `TrainEnd` and `FitEnd`. `losses` gives the
    training loss of each training step in turn (one per step from `context.epoch` to
    `epochs`); by default the loss is the
    cross-entropy of the logits. `train_step(model, inputs, targets)`, when given, runs
    after each training forward (an optimizer step, say).
    """
    if losses is not None and len(losses) != (epochs - context.epoch) * train_batches:
        raise ValueError(
            f"scripted_run: losses has {len(losses)} values for "
            f"{(epochs - context.epoch) * train_batches} training steps"
        )
    step_losses = iter(losses or ())
    generator = torch.Generator().manual_seed(seed)
    context.max_epochs = epochs

    def logits_of(inputs: torch.Tensor, targets: torch.Tensor, epoch: int, stage: Stage) -> torch.Tensor:
        return _logits_of(
            context, inputs, targets, epoch=epoch, stage=stage, logits=logits, generator=generator
        )

    def validate(epoch: int, sanity: bool) -> dict[str, float]:
        return validation_epoch(
            bus,
            context,
            epoch=epoch,
            batches=val_batches,
            batch_size=batch_size,
            logits=logits,
            sanity_check=sanity,
            generator=generator,
        )

    bus.publish(FitStart(epoch=context.epoch, global_step=context.global_step, max_epochs=epochs))
    if sanity_check:
        validate(context.epoch, sanity=True)
    metrics: dict[str, float] = {}
    for epoch in range(context.epoch, epochs):
        context.epoch = epoch
        bus.publish(TrainEpochStart(epoch=epoch, global_step=context.global_step))
        for index, (inputs, targets) in enumerate(_batches(context, train_batches, batch_size, generator)):
            outputs = logits_of(inputs, targets, epoch, "train")
            if train_step is not None and context.model is not None:
                train_step(context.model, inputs, targets)
            context.global_step += 1
            bus.publish(
                batch_end(
                    stage="train",
                    epoch=epoch,
                    global_step=context.global_step,
                    batch_idx=index,
                    inputs=inputs,
                    targets=targets,
                    logits=outputs,
                    loss=next(step_losses, None),
                )
            )
            if context.stop_request is not None and context.stop_request.at == "step":
                break
        metrics = {"train/loss": 1.0 / (epoch + 1), "lr": 0.1, **validate(epoch, sanity=False)}
        bus.publish(
            TrainEpochEnd(epoch=epoch, global_step=context.global_step, metrics=metrics, validated=True)
        )
        bus.publish(EpochJobsQueued(epoch=epoch, global_step=context.global_step))
        state = {} if context.model is None else dict(context.model.state_dict())
        bus.publish(CheckpointSaving(epoch=epoch, global_step=context.global_step, model_state=state))
        if context.stop_request is not None:
            break
    bus.publish(TrainLoopEnd(epoch=context.epoch, global_step=context.global_step))
    bus.publish(TrainEnd(epoch=context.epoch, global_step=context.global_step, metrics=metrics))
    bus.publish(FitEnd(epoch=context.epoch, global_step=context.global_step))

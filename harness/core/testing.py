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

Everything here publishes the same event classes, in the same order, as `BusCallback`
does under Lightning (see `harness.core.events`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.bus import Bus
from harness.core.context import DatasetInfo, JobRunner, RunContext
from harness.core.events import (
    BatchEnd,
    CheckpointSaving,
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
from harness.core.preprocessing import Preprocessing

__all__ = ["Recorder", "batch_end", "make_context", "scripted_run", "tiny_model", "write_imagefolder"]

E = TypeVar("E", bound=Event)


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
    logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> None:
    """Publish a whole run's events on `bus`, updating `context` as Lightning's adapter does.

    Logits come from `logits(inputs, targets)` when given, else from `context.model` when
    set, else at random. `losses` gives the training loss of each training step in turn
    (one per step from `context.epoch` to `epochs`); by default the loss is the
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

    def logits_of(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits is not None:
            return logits(inputs, targets).detach()
        if context.model is None:
            return torch.randn(inputs.shape[0], context.num_classes, generator=generator)
        with torch.no_grad():
            computed: torch.Tensor = context.model(inputs)
        return computed.detach()

    def validate(epoch: int, sanity: bool) -> dict[str, float]:
        # As Lightning does: eval mode before ValidationSwapIn, train mode after ValidationSwapOut.
        model = context.model
        training = model is not None and model.training
        if model is not None:
            model.eval()
        bus.publish(ValidationSwapIn(epoch=epoch, global_step=context.global_step, sanity_check=sanity))
        correct = total = 0
        for index, (inputs, targets) in enumerate(_batches(context, val_batches, batch_size, generator)):
            outputs = logits_of(inputs, targets)
            correct += int((outputs.argmax(1) == targets).sum())
            total += len(targets)
            bus.publish(
                batch_end(
                    stage="validate",
                    epoch=epoch,
                    global_step=context.global_step,
                    batch_idx=index,
                    inputs=inputs,
                    targets=targets,
                    logits=outputs,
                    sanity_check=sanity,
                )
            )
        metrics = {"val/acc_top1": correct / max(total, 1), "val/loss": 1.0 / (epoch + 1)}
        bus.publish(
            ValidationEpochEnd(
                epoch=epoch, global_step=context.global_step, metrics=metrics, sanity_check=sanity
            )
        )
        bus.publish(ValidationSwapOut(epoch=epoch, global_step=context.global_step, sanity_check=sanity))
        if model is not None:
            model.train(training)
        return metrics

    bus.publish(FitStart(epoch=context.epoch, global_step=context.global_step, max_epochs=epochs))
    if sanity_check:
        validate(context.epoch, sanity=True)
    metrics: dict[str, float] = {}
    for epoch in range(context.epoch, epochs):
        context.epoch = epoch
        bus.publish(TrainEpochStart(epoch=epoch, global_step=context.global_step))
        for index, (inputs, targets) in enumerate(_batches(context, train_batches, batch_size, generator)):
            outputs = logits_of(inputs, targets)
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
        metrics = {"train/loss": 1.0 / (epoch + 1), "lr": 0.1, **validate(epoch, sanity=False)}
        bus.publish(
            TrainEpochEnd(epoch=epoch, global_step=context.global_step, metrics=metrics, validated=True)
        )
        state = {} if context.model is None else dict(context.model.state_dict())
        bus.publish(CheckpointSaving(epoch=epoch, global_step=context.global_step, model_state=state))
    bus.publish(TrainLoopEnd(epoch=context.epoch, global_step=context.global_step))
    bus.publish(TrainEnd(epoch=context.epoch, global_step=context.global_step, metrics=metrics))
    bus.publish(FitEnd(epoch=context.epoch, global_step=context.global_step))

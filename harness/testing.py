"""A test kit for subscriber authors: contexts, events and whole runs, without a Trainer.

    from harness.bus import Bus
    from harness.testing import Recorder, make_context, scripted_run

    def test_my_subscriber(tmp_path):
        context = make_context(tmp_path)
        bus = Bus()
        bus.attach(MySubscriber(context))
        scripted_run(bus, context, epochs=2)
        assert (context.run_dir / "my_artifact.json").exists()

Everything here publishes the same event classes, in the same order, as `BusCallback`
does under Lightning (see `harness.events`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.bus import Bus
from harness.context import DatasetInfo, Preprocessing, RunContext
from harness.events import (
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

__all__ = ["Recorder", "batch_end", "make_context", "scripted_run", "tiny_model", "write_imagefolder"]

E = TypeVar("E", bound=Event)


def write_imagefolder(root: Path, counts: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    """One folder per class of small RGB PNGs whose colour depends on the class (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[index % 3] = 200.0
        base[(index // 3) % 3] += 55.0 * (index // 3 > 0)
        for n in range(count):
            pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
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
) -> RunContext:
    """A `RunContext` whose run directory is `tmp_path / "run"` (created)."""
    names = class_names or tuple(f"class_{i}" for i in range(num_classes))
    run_dir = tmp_path / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    fake = [
        (tmp_path / f"{names[i]}_{n}.png", i) for i in range(len(names)) for n in range(samples_per_class)
    ]
    return RunContext(
        run_dir=run_dir,
        class_names=names,
        preprocessing=Preprocessing(image_size=image_size),
        model=model,
        data=DatasetInfo(root=tmp_path, train=tuple(fake), val=tuple(fake[::2])),
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
    optimizer_stepped: bool | None = None,
    sanity_check: bool = False,
    generator: torch.Generator | None = None,
) -> BatchEnd:
    """A valid `BatchEnd`: random images, targets and logits unless given."""
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
        loss=F.cross_entropy(logits, targets),
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
    seed: int = 0,
) -> None:
    """Publish a whole run's events on `bus`, updating `context` as Lightning's adapter does.

    With `context.model` set, logits come from the model; `train_step(model, inputs,
    targets)`, when given, runs after each training forward (an optimizer step, say).
    """
    generator = torch.Generator().manual_seed(seed)
    context.max_epochs = epochs

    def logits_of(inputs: torch.Tensor) -> torch.Tensor:
        if context.model is None:
            return torch.randn(inputs.shape[0], context.num_classes, generator=generator)
        with torch.no_grad():
            logits: torch.Tensor = context.model(inputs)
        return logits.detach()

    def validate(epoch: int, sanity: bool) -> dict[str, float]:
        # As Lightning does: eval mode before ValidationSwapIn, train mode after ValidationSwapOut.
        model = context.model
        training = model is not None and model.training
        if model is not None:
            model.eval()
        bus.publish(ValidationSwapIn(epoch=epoch, global_step=context.global_step, sanity_check=sanity))
        correct = total = 0
        for index, (inputs, targets) in enumerate(_batches(context, val_batches, batch_size, generator)):
            logits = logits_of(inputs)
            correct += int((logits.argmax(1) == targets).sum())
            total += len(targets)
            bus.publish(
                batch_end(
                    stage="validate",
                    epoch=epoch,
                    global_step=context.global_step,
                    batch_idx=index,
                    inputs=inputs,
                    targets=targets,
                    logits=logits,
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
            logits = logits_of(inputs)
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
                    logits=logits,
                )
            )
        metrics = {"train/loss": 1.0 / (epoch + 1), "lr-SGD": 0.1, **validate(epoch, sanity=False)}
        bus.publish(TrainEpochEnd(epoch=epoch, global_step=context.global_step, metrics=metrics))
        state = {} if context.model is None else dict(context.model.state_dict())
        bus.publish(CheckpointSaving(epoch=epoch, global_step=context.global_step, model_state=state))
    bus.publish(TrainLoopEnd(epoch=context.epoch, global_step=context.global_step))
    bus.publish(TrainEnd(epoch=context.epoch, global_step=context.global_step, metrics=metrics))
    bus.publish(FitEnd(epoch=context.epoch, global_step=context.global_step))

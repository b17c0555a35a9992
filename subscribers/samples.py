"""A grid of validation images with true and predicted class, per validation epoch.

Consumes `BatchEnd(stage="validate" or "test")`, `ValidationEpochEnd` and `TestEpochEnd`, on
rank zero; publishes nothing. The predictions come from the batch's logits (the model is never called). Which
images are shown is fixed by `SamplesSettings.seed` (see `subscribers._draw_samples`), so
the same images appear every epoch. Writes, under ``run_dir/samples/``: ``epoch_NNN.png``
(images un-normalised with `context.preprocessing`, wrong predictions framed in red),
``epoch_NNN.json`` (what each shown image is: stream position, true and predicted class,
confidence) and ``latest.png`` / ``latest.json``, copies of the newest epoch's.
Under DDP it shows images from rank zero's share of the validation set. In an evaluation
(`BatchEnd(stage="test")`, `TestEpochEnd`) it samples the test images the same way and
writes ``samples/test.png`` and ``test.json`` under the evaluation folder. The grid is drawn
on the run's background writer (`RunContext.background`), inline without one.
"""

from __future__ import annotations

import functools
import heapq

import attrs
import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, TestEpochEnd, ValidationEpochEnd
from harness.core.options import option, positive
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from subscribers._draw_samples import Shown, priority, to_pixels, unnormalise, write_epoch, write_test

__all__ = ["SPEC", "Samples", "SamplesSettings"]


@attrs.frozen(kw_only=True)
class SamplesSettings(SubscriberSettings):
    """A grid of validation images with true and predicted class, per validation epoch."""

    on_error: OnError = on_error_option("isolate")

    count: int = option(16, "images in the grid", positive())
    seed: int = option(0, "which images are shown (the same every epoch)")


@attrs.frozen(kw_only=True)
class _Pending:
    """A chosen sample still on the batch's device: its un-normalised image and the model's answer."""

    image: torch.Tensor
    target: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor


def _read(kept: list[tuple[int, int, _Pending]]) -> list[Shown]:
    """The kept samples in stream order, read from the device in one go."""
    if not kept:
        return []
    ordered = sorted(kept, key=lambda entry: entry[1])
    images = to_pixels(torch.stack([entry[2].image for entry in ordered]))
    device = ordered[0][2].confidence.device
    answers = torch.stack(
        [
            torch.stack([e[2].target.to(device).float(), e[2].predicted.float(), e[2].confidence])
            for e in ordered
        ]
    ).tolist()
    return [
        Shown(
            position=position,
            image=image,
            target=int(target),
            predicted=int(predicted),
            confidence=confidence,
        )
        for (_, position, _), image, (target, predicted, confidence) in zip(
            ordered, images, answers, strict=True
        )
    ]


class Samples:
    """Keeps the `count` chosen validation images of the epoch and draws them at its end."""

    def __init__(self, context: RunContext, settings: SamplesSettings | None = None) -> None:
        self.context = context
        self.settings = settings or SamplesSettings()
        self.seen = 0
        # A max-heap on priority (negated), so the worst of the kept samples is at the top.
        # The samples stay on the batches' device until the epoch's end reads them at once.
        self.kept: list[tuple[int, int, _Pending]] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate", rank_zero_only=True)
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end, rank_zero_only=True)
        bus.subscribe(BatchEnd, self.on_batch_end, stage="test", rank_zero_only=True)
        bus.subscribe(TestEpochEnd, self.on_test_epoch_end, rank_zero_only=True)

    def on_batch_end(self, event: BatchEnd) -> None:
        if event.sanity_check:
            return
        start, count = self.seen, self.settings.count
        self.seen += event.targets.shape[0]
        bar = -self.kept[0][0] if len(self.kept) >= count else None
        ranked = [(priority(self.settings.seed, start + i), i) for i in range(event.targets.shape[0])]
        chosen = [(rank, i) for rank, i in ranked if bar is None or rank < bar]
        chosen = sorted(chosen)[:count]
        if not chosen:
            return
        rows = torch.tensor([i for _, i in chosen], device=event.logits.device)
        preprocessing = self.context.preprocessing
        images = unnormalise(
            event.inputs.index_select(0, rows.to(event.inputs.device)).float(),
            preprocessing.mean,
            preprocessing.std,
        )
        confidences, predictions = event.logits.index_select(0, rows).float().softmax(dim=1).max(dim=1)
        targets = event.targets.index_select(0, rows.to(event.targets.device))
        for k, (rank, i) in enumerate(chosen):
            pending = _Pending(
                image=images[k], target=targets[k], predicted=predictions[k], confidence=confidences[k]
            )
            entry = (-rank, start + i, pending)
            if len(self.kept) < count:
                heapq.heappush(self.kept, entry)
            else:
                heapq.heappushpop(self.kept, entry)

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        shown = _read(self.kept)
        self.kept, self.seen = [], 0
        if event.sanity_check or not shown:
            return
        # `shown` is the job's own: `kept` starts afresh and each image is a copy made at its batch.
        context = self.context
        job = functools.partial(
            write_epoch, context.run_dir, context.class_names, shown, event.epoch, self.settings.seed
        )
        context.submit(SPEC.name, job, step=event.global_step)

    def on_test_epoch_end(self, event: TestEpochEnd) -> None:
        shown = _read(self.kept)
        self.kept, self.seen = [], 0
        if shown:
            context = self.context
            job = functools.partial(
                write_test, context.run_dir, context.class_names, shown, self.settings.seed
            )
            context.submit(SPEC.name, job, step=event.global_step)


SPEC = SubscriberSpec(name="samples", build=Samples, settings=SamplesSettings)

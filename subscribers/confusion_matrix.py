"""A confusion matrix per validation epoch, from the logits the run already computed.

Consumes `BatchEnd(stage="validate" or "test")`, `ValidationEpochEnd` and `TestEpochEnd`;
publishes nothing. The
model is never called: each batch's logits and targets add one (true, predicted) code
per image to a torchmetrics metric (`subscribers._pair_counts.PairCounts`) on the logits'
device, so memory grows with the images, never with the classes squared. At the end of
every validation epoch (not the sanity check) every rank computes it (a collective under
DDP), and rank zero writes, under ``run_dir/confusion_matrix/`` (past 200 classes, as
`subscribers._draw_confusion` says: the non-zero cells, the most confused pairs, the most
mistaken classes drawn):

- ``epoch_NNN.png``: class names on both axes, counts in the cells, colours from the
  `normalize` view (``none``, ``true`` rows or ``pred`` columns), epoch and accuracy in
  the title;
- ``epoch_NNN.csv``: the raw counts, rows true, columns predicted;
- ``latest.png`` and ``latest.csv``: copies of the newest epoch's files;
- ``per_class/epoch_NNN.csv`` (and ``latest.csv``): each class's precision, recall, F1
  and support that epoch.

In an evaluation (`TestStart`, `BatchEnd(stage="test")`, `TestEpochEnd`, published by
``trainer.test``) it counts the test batches the same way and writes ``test.png``,
``test.csv`` and ``per_class/test.csv`` under the evaluation folder (its `run_dir`).

Drawing and writing run on the run's background writer (`RunContext.background`), so
training goes on meanwhile; without one (tests) they run inline.
"""

from __future__ import annotations

import functools
from typing import Literal

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, TestEpochEnd, ValidationEpochEnd
from harness.core.options import option
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.evaluation.pairs import Pairs
from subscribers._draw_confusion import write_epoch, write_test

__all__ = ["SPEC", "ConfusionMatrix", "ConfusionMatrixSettings"]


@attrs.frozen(kw_only=True)
class ConfusionMatrixSettings(SubscriberSettings):
    """A confusion matrix per validation epoch, from the logits validation computed."""

    on_error: OnError = on_error_option("isolate")

    normalize: Literal["none", "true", "pred"] = option(
        "true", "second view: normalised by true or predicted class, or none"
    )


class ConfusionMatrix:
    """Accumulates validation predictions per epoch and draws the matrix on rank zero."""

    def __init__(self, context: RunContext, settings: ConfusionMatrixSettings | None = None) -> None:
        self.context = context
        self.settings = settings or ConfusionMatrixSettings()
        # torchmetrics is imported when the subscriber is built.
        from subscribers._pair_counts import PairCounts

        self.metric = PairCounts(context.num_classes)

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate")
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end)
        bus.subscribe(BatchEnd, self.on_batch_end, stage="test")
        bus.subscribe(TestEpochEnd, self.on_test_epoch_end)

    def on_batch_end(self, event: BatchEnd) -> None:
        if event.sanity_check:
            return
        if self.metric.device != event.logits.device:
            self.metric = self.metric.to(event.logits.device)
        self.metric.update(event.logits, event.targets.to(event.logits.device))

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        if event.sanity_check or self.metric.update_count == 0:
            self.metric.reset()
            return
        # The collective runs here, on every rank; the job gets its own numpy copy, so the
        # background writer's worker never imports torch.
        counts = Pairs.of(self.metric.compute().cpu().numpy(), self.context.num_classes)
        self.metric.reset()
        if self.context.is_rank_zero:
            context = self.context
            job = functools.partial(
                write_epoch,
                context.run_dir,
                context.class_names,
                counts,
                event.epoch,
                self.settings.normalize,
            )
            context.submit(SPEC.name, job, step=event.global_step)

    def on_test_epoch_end(self, event: TestEpochEnd) -> None:
        if self.metric.update_count == 0:
            return
        counts = Pairs.of(self.metric.compute().cpu().numpy(), self.context.num_classes)
        self.metric.reset()
        if self.context.is_rank_zero:
            context = self.context
            job = functools.partial(
                write_test, context.run_dir, context.class_names, counts, self.settings.normalize
            )
            context.submit(SPEC.name, job, step=event.global_step)


SPEC = SubscriberSpec(name="confusion_matrix", build=ConfusionMatrix, settings=ConfusionMatrixSettings)

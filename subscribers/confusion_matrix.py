"""A confusion matrix per validation epoch, from the logits the run already computed.

Consumes `BatchEnd(stage="validate")` and `ValidationEpochEnd`; publishes nothing. The
model is never called: each batch's logits and targets update a torchmetrics
`MulticlassConfusionMatrix` that lives on the logits' device. At the end of every
validation epoch (not the sanity check) every rank computes it (a collective under DDP),
and rank zero writes, under ``run_dir/confusion_matrix/``:

- ``epoch_NNN.png``: class names on both axes, counts in the cells, colours from the
  `normalize` view (``none``, ``true`` rows or ``pred`` columns), epoch and accuracy in
  the title;
- ``epoch_NNN.csv``: the raw counts, rows true, columns predicted;
- ``latest.png`` and ``latest.csv``: copies of the newest epoch's files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from harness.artifacts import write_text
from harness.bus import Bus
from harness.context import RunContext
from harness.events import BatchEnd, ValidationEpochEnd
from harness.settings import ConfusionMatrixSettings
from subscribers._draw import epoch_file, publish_latest
from subscribers._draw_confusion import counts_csv, draw_confusion

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Accumulates validation predictions per epoch and draws the matrix on rank zero."""

    def __init__(self, context: RunContext, settings: ConfusionMatrixSettings | None = None) -> None:
        self.context = context
        self.settings = settings or ConfusionMatrixSettings()
        # Host-side argument checks would synchronise with the GPU on every batch; the
        # targets come from the run's own data set, whose labels are in range by design.
        self.metric = MulticlassConfusionMatrix(num_classes=context.num_classes, validate_args=False)
        self.directory = context.run_dir / "confusion_matrix"

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate")
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end)

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
        counts = self.metric.compute().cpu()
        self.metric.reset()
        if self.context.is_rank_zero:
            self.write(counts, event.epoch)

    def write(self, counts: torch.Tensor, epoch: int) -> list[Path]:
        """Write one epoch's picture and counts, refresh the `latest` copies, record them all."""
        names = self.context.class_names
        picture = draw_confusion(
            epoch_file(self.directory, epoch, ".png"),
            counts,
            names,
            normalize=self.settings.normalize,
            epoch=epoch,
        )
        table = write_text(epoch_file(self.directory, epoch, ".csv"), counts_csv(counts, names))
        written = [picture, table, publish_latest(picture), publish_latest(table)]
        for path in written:
            self.context.record_artifact(path.relative_to(self.context.run_dir).as_posix(), path)
        return written

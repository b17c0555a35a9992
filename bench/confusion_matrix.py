"""Cost of the confusion matrix over a validation epoch: ResNet-18, 32 px, CPU.

    .venv/bin/python -m bench.confusion_matrix

Anchor: a validation epoch without any confusion matrix: for each batch the model's
forward pass and a `BatchEnd` published on a `Bus` with no subscriber, all under
``torch.inference_mode()`` as Lightning validates. Against it, in the same process and
interleaved batch by batch (each batch goes through every variant in turn):

- the `ConfusionMatrix` subscriber, updating its torchmetrics metric from the logits the
  event carries (the goal: at most 1.05x the anchor);
- the seed's approach: a subscriber that runs ``model(inputs)`` again for every batch,
  then updates the same metric.

Runs on one thread (``torch.set_num_threads(1)``): on a shared machine two threads spin
against other processes and the figures scatter.

Separately, the subscriber's epoch end (compute, draw the PNG, write PNG and CSV and
their `latest` copies) is timed on its own: it costs the same whatever the size of the
validation set, so its share of an epoch shrinks as the set grows.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.models import resnet18

from bench._timing import Row, format_seconds, interleaved, rows_table
from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, ValidationEpochEnd
from harness.core.testing import make_context
from subscribers.confusion_matrix import ConfusionMatrix

__all__ = ["main", "rows"]

BENCHMARK = "confusion matrix"
ANCHOR = "no confusion matrix"
OURS = "ConfusionMatrix subscriber (logits from BatchEnd)"
SEED = "seed: second forward per batch, then update"
NUM_CLASSES = 10


class SecondForward:
    """The seed's way: run the model again on every validation batch to get predictions."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.metric = MulticlassConfusionMatrix(num_classes=context.num_classes, validate_args=False)

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate")

    def on_batch_end(self, event: BatchEnd) -> None:
        with torch.no_grad():
            predictions = self.context.require_model()(event.inputs).argmax(dim=1)
        self.metric.update(predictions, event.targets)


def _event(index: int, inputs: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> BatchEnd:
    return BatchEnd(
        stage="validate",
        epoch=0,
        global_step=0,
        batch_idx=index,
        inputs=inputs,
        targets=targets,
        logits=logits,
    )


def _validation_epochs(
    buses: Mapping[str, Bus], model: torch.nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, float]:
    """Seconds of one validation epoch per variant, the variants taking turns batch by batch.

    Each batch is forwarded and published once per variant, the order rotating from batch to
    batch, so that a burst of load from other processes lands on every variant alike.
    """
    names = list(buses)
    totals = dict.fromkeys(names, 0.0)
    with torch.inference_mode():
        for index, (inputs, targets) in enumerate(batches):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                buses[name].publish(_event(index, inputs, targets, model(inputs)))
                totals[name] += time.perf_counter() - start
    return totals


def rows(*, batches: int = 20, batch_size: int = 16, repeats: int = 3) -> list[Row]:
    """Seconds per validation epoch of each variant, against the anchor, as `Row` objects.

    The last row adds the subscriber's cost per batch, timed apart over many calls, to one
    forward pass: the same ratio as the epochs', with little of the machine's noise.
    """
    generator = torch.Generator().manual_seed(0)
    model = resnet18(num_classes=NUM_CLASSES).eval()
    data = [
        (
            torch.randn(batch_size, 3, 32, 32, generator=generator),
            torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator),
        )
        for _ in range(batches)
    ]
    with torch.inference_mode():
        event = _event(0, *data[0], model(data[0][0]))
    with tempfile.TemporaryDirectory() as directory:
        context = make_context(Path(directory), num_classes=NUM_CLASSES, image_size=32, model=model)
        buses = {ANCHOR: Bus(), OURS: Bus(), SEED: Bus()}
        buses[OURS].attach(ConfusionMatrix(context))
        buses[SEED].attach(SecondForward(context))
        _validation_epochs(buses, model, data[:2])
        rounds = [_validation_epochs(buses, model, data) for _ in range(repeats)]
        epochs = {name: statistics.median(totals[name] for totals in rounds) for name in buses}

        def forward() -> None:
            with torch.inference_mode():
                model(event.inputs)

        def publish(bus: Bus) -> Callable[[], None]:
            def call() -> None:
                with torch.inference_mode():
                    bus.publish(event)

            return call

        forward_seconds = interleaved({"forward": forward}, number=3, repeats=5)["forward"]
        publishing = interleaved(
            {name: publish(buses[name]) for name in (ANCHOR, OURS)}, number=200, repeats=5
        )

        def epoch_end() -> None:
            # One prebuilt batch (microseconds) first, so that the metric has something to draw.
            with torch.inference_mode():
                buses[OURS].publish(event)
                buses[OURS].publish(ValidationEpochEnd(epoch=0, global_step=0, metrics={}))

        epoch_end_seconds = interleaved({"epoch end": epoch_end}, repeats=3)["epoch end"]

    anchor = epochs[ANCHOR]
    unit = f"epoch of {batches} x {batch_size}"

    def row(
        variant: str,
        seconds: float,
        *,
        goal: float | None = None,
        per: str = unit,
        base: float = anchor,
        base_name: str = ANCHOR,
    ) -> Row:
        return Row(
            benchmark=BENCHMARK,
            variant=variant,
            anchor=base_name,
            seconds=seconds,
            anchor_seconds=base,
            unit=per,
            goal=goal,
        )

    update = publishing[OURS] - publishing[ANCHOR]
    return [
        row(f"{ANCHOR} (anchor)", anchor),
        row(OURS, epochs[OURS], goal=1.05),
        row(SEED, epochs[SEED]),
        row(
            "ConfusionMatrix, batches + its epoch end (compute, draw, write)",
            epochs[OURS] + epoch_end_seconds,
        ),
        row(
            "forward + ConfusionMatrix update, timed apart",
            forward_seconds + update,
            goal=1.05,
            per=f"batch of {batch_size}",
            base=forward_seconds,
            base_name="forward pass alone",
        ),
        row("ConfusionMatrix epoch end alone", epoch_end_seconds, per="epoch, against a whole epoch"),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.confusion_matrix", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--batches", type=int, default=20, help="validation batches per epoch (default 20)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    measured = rows(batches=args.batches, batch_size=args.batch_size, repeats=args.repeats)
    print(
        f"A validation epoch of ResNet-18 at 32 px, {NUM_CLASSES} classes, CPU, "
        f"{torch.get_num_threads()} thread(s); epochs: median of {args.repeats}, "
        "the variants interleaved batch by batch\n"
    )
    print(rows_table(measured))
    per_batch = measured[4]
    update = per_batch.seconds - per_batch.anchor_seconds
    print(
        f"\nPer batch: forward {format_seconds(per_batch.anchor_seconds)}, "
        f"ConfusionMatrix update {format_seconds(update)}; "
        f"epoch end {format_seconds(measured[5].seconds)}, once per epoch whatever its size"
    )


if __name__ == "__main__":
    main()

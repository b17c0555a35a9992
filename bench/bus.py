"""Dispatch cost of one batch-end event to 8 receivers: the Bus against Lightning's own hooks.

    .venv/bin/python -m bench.bus

Anchor: Lightning 2.6's hook dispatch, ``_call_callback_hooks(trainer, "on_train_batch_end",
outputs, batch, batch_idx)``, on a real `Trainer` with 8 callbacks attached and a
LightningModule connected: exactly what the fit loop calls after every training batch.
Against it, in the same process and interleaved round by round:

- `harness.core.bus.Bus`: one prebuilt `BatchEnd` published to 8 subscribers, each subscribed
  with ``stage="train"`` and attached with the default failure policy (the goal: at most
  0.75x Lightning's dispatch);
- the same with the `BatchEnd` built for each call, as `BusCallback` does;
- the whole path of a run: Lightning's dispatch to `BusCallback`, which builds the event and
  publishes it to the 8 subscribers;
- blinker's bare ``Signal.send`` to 8 receivers (no order, no filters, no failure policy);
- 8 direct method calls in a Python loop, the floor.

Every receiver does the same work: it counts the call.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import blinker
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.call import _call_callback_hooks
from typing_extensions import override

from bench._timing import Row, format_seconds, interleaved, quiet_lightning, rows_table
from harness.core.bus import Bus
from harness.core.events import BatchEnd
from harness.core.testing import make_context
from harness.training.callback import BusCallback

__all__ = ["main", "rows"]

RECEIVERS = 8
BENCHMARK = "bus dispatch"
ANCHOR = "Lightning _call_callback_hooks"


class CountingSubscriber:
    """A subscriber that counts training batches, filtered by stage as real ones are."""

    def __init__(self) -> None:
        self.calls = 0

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="train")

    def on_batch_end(self, event: BatchEnd) -> None:
        self.calls += 1


class CountingCallback(Callback):
    """A Lightning callback that counts training batches."""

    def __init__(self) -> None:
        self.calls = 0

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.calls += 1


class CountingReceiver:
    """A blinker receiver that counts the signals it gets."""

    def __init__(self) -> None:
        self.calls = 0

    def receive(self, sender: Any, **kwargs: Any) -> None:
        self.calls += 1


class _Module(L.LightningModule):
    """The smallest LightningModule a Trainer will dispatch hooks with."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)


def _trainer(callbacks: Sequence[Callback]) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    trainer.strategy.connect(_Module())
    return trainer


def _batch(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inputs = torch.zeros(4, 3, 8, 8, device=device)
    targets = torch.zeros(4, dtype=torch.long, device=device)
    logits = torch.zeros(4, 10, device=device)
    return inputs, targets, logits


def _event(inputs: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> BatchEnd:
    return BatchEnd(
        stage="train",
        epoch=0,
        global_step=1,
        batch_idx=0,
        inputs=inputs,
        targets=targets,
        logits=logits,
        optimizer_stepped=True,
    )


def candidates(run_dir: Path, device: str = "cpu") -> dict[str, Callable[[], object]]:
    """Each variant as a zero-argument call, all with 8 counting receivers; the anchor first."""
    inputs, targets, logits = _batch(device)
    batch = (inputs, targets)
    outputs = {"loss": torch.zeros(()), "logits": logits}

    lightning_trainer = _trainer([CountingCallback() for _ in range(RECEIVERS)])

    bus = Bus()
    for _ in range(RECEIVERS):
        bus.attach(CountingSubscriber())
    event = _event(inputs, targets, logits)

    full_bus = Bus()
    for _ in range(RECEIVERS):
        full_bus.attach(CountingSubscriber())
    adapter_trainer = _trainer([BusCallback(full_bus, make_context(run_dir), {})])

    signal = blinker.Signal()
    receivers = [CountingReceiver() for _ in range(RECEIVERS)]
    for receiver in receivers:
        signal.connect(receiver.receive, weak=False)

    direct = [CountingSubscriber() for _ in range(RECEIVERS)]

    def direct_calls() -> None:
        for subscriber in direct:
            subscriber.on_batch_end(event)

    return {
        ANCHOR: lambda: _call_callback_hooks(lightning_trainer, "on_train_batch_end", outputs, batch, 0),
        "Bus.publish, prebuilt BatchEnd": lambda: bus.publish(event),
        "Bus.publish, BatchEnd built per call": lambda: bus.publish(_event(inputs, targets, logits)),
        "Lightning -> BusCallback -> Bus (a run's path)": lambda: _call_callback_hooks(
            adapter_trainer, "on_train_batch_end", outputs, batch, 0
        ),
        "blinker Signal.send, bare": lambda: signal.send(event),
        "direct method calls, Python loop": direct_calls,
    }


def rows(*, device: str = "cpu", number: int = 1000, repeats: int = 11, smoke: bool = False) -> list[Row]:
    """Microseconds per dispatch of each variant, against Lightning's, as `Row` objects.

    Dispatch is Python on the host whatever the device; `device` is where the event's
    tensors live, as in a run on that device. `smoke` times a handful of calls only.
    """
    if smoke:
        number, repeats = 20, 1
    quiet_lightning()
    with tempfile.TemporaryDirectory() as directory:
        timed = interleaved(candidates(Path(directory), device), number=number, repeats=repeats, warmup=2)
    anchor = timed[ANCHOR]
    return [
        Row(
            benchmark=BENCHMARK,
            variant=f"{name} (anchor)" if name == ANCHOR else name,
            anchor=ANCHOR,
            seconds=seconds,
            anchor_seconds=anchor,
            unit=f"event to {RECEIVERS} receivers",
            goal=0.75 if name == "Bus.publish, prebuilt BatchEnd" else None,
        )
        for name, seconds in timed.items()
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the tensors live")
    parser.add_argument("--number", type=int, default=1000, help="calls per timed round (default 1000)")
    parser.add_argument("--repeats", type=int, default=11, help="timed rounds; the median is kept")
    args = parser.parse_args(argv)
    measured = rows(device=args.device, number=args.number, repeats=args.repeats)
    print(
        f"One batch-end event to {RECEIVERS} receivers, median of {args.repeats} interleaved rounds "
        f"of {args.number} calls\n"
    )
    print(rows_table(measured))
    anchor = measured[0].anchor_seconds
    print(f"\nLightning's dispatch: {format_seconds(anchor)} per call")


if __name__ == "__main__":
    main()

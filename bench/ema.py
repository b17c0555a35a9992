"""EMA cost per optimizer step and per validation swap, ResNet-18 on the CPU, against Lightning.

Anchor: Lightning 2.6's `EMAWeightAveraging`, built by its own `setup()` and updated the way
its `on_train_batch_end` does (``AveragedModel.update_parameters``); its validation swap is
its own ``_swap_models`` (clone and copy of every tensor). Compared with: torch's
`AveragedModel` with the foreach EMA function, a Python ``mul_``/``add_`` loop, the
arithmetic of `subscribers._ema` alone, and the `EMA` subscriber driven through a `Bus`.

    .venv/bin/python -m bench.ema

Runs on one thread (``torch.set_num_threads(1)``) so that figures on a shared machine are
steadier; each figure is the median of a few interleaved repeats after two warm-up calls.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchvision.models import resnet18

from harness.core.bus import Bus
from harness.core.events import BatchEnd, FitStart, ValidationSwapIn, ValidationSwapOut
from harness.core.testing import make_context
from subscribers._ema import ShadowWeights
from subscribers.ema import EMA, EMASettings

DECAY = 0.999
REPEATS = 11


class Classifier(pl.LightningModule):
    """The smallest LightningModule around a torchvision model, for Lightning's callback."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


def median_ms(candidates: dict[str, Callable[[], object]], repeats: int = REPEATS) -> list[tuple[str, float]]:
    """Median milliseconds per call of each candidate, timed in interleaved rounds.

    Interleaving spreads the load of a shared machine evenly over the candidates.
    """
    for function in candidates.values():
        for _ in range(2):
            function()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, function in candidates.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return [(name, 1000 * statistics.median(spent)) for name, spent in times.items()]


def lightning_anchor(module: Classifier) -> EMAWeightAveraging:
    callback = EMAWeightAveraging(decay=DECAY)
    callback.setup(None, module, "fit")  # type: ignore[arg-type]  # setup reads only pl_module here
    return callback


def python_loop(model: nn.Module) -> Callable[[], None]:
    live = [*model.parameters(), *model.buffers()]
    floats = [
        (shadow, tensor)
        for shadow, tensor in zip([t.clone() for t in live], live, strict=True)
        if tensor.is_floating_point()
    ]

    def update() -> None:
        with torch.no_grad():
            for shadow, tensor in floats:
                shadow.mul_(DECAY).add_(tensor, alpha=1 - DECAY)

    return update


def subscriber_on_bus(module: Classifier, run_dir: Path) -> tuple[Bus, Callable[[], None]]:
    context = make_context(run_dir, model=module)
    bus = Bus()
    bus.attach(EMA(context, EMASettings(decay=DECAY, warmup=False)))
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    step = 0
    inputs, targets, logits = torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long), torch.zeros(1, 1000)

    def update() -> None:
        nonlocal step
        step += 1
        bus.publish(
            BatchEnd(
                stage="train",
                epoch=0,
                global_step=step,
                batch_idx=step,
                inputs=inputs,
                targets=targets,
                logits=logits,
                optimizer_stepped=True,
            )
        )

    return bus, update


def agreement(module: Classifier, callback: EMAWeightAveraging, shadow: ShadowWeights) -> float:
    """Max abs difference between Lightning's average and ours after the same perturbed steps."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator), alpha=0.01)
        callback._average_model.update_parameters(module)  # type: ignore[union-attr]
        shadow.update(DECAY)
    theirs = callback._average_model.module.state_dict()  # type: ignore[union-attr]
    ours = shadow.averaged()
    return max(
        float((theirs[name] - ours[name]).abs().max()) for name in ours if ours[name].is_floating_point()
    )


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = Classifier(resnet18())
    callback = lightning_anchor(module)
    averaged = callback._average_model
    assert averaged is not None
    multi = AveragedModel(module, use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(DECAY))  # type: ignore[no-untyped-call]
    shadow = ShadowWeights(module)
    loop = python_loop(module)

    with tempfile.TemporaryDirectory() as directory:
        bus, publish = subscriber_on_bus(module, Path(directory))

        def lightning_swap() -> None:
            callback._swap_models(module)
            callback._swap_models(module)

        def exchange() -> None:
            shadow.exchange()
            shadow.exchange()

        def bus_swap() -> None:
            bus.publish(ValidationSwapIn(epoch=0, global_step=1))
            bus.publish(ValidationSwapOut(epoch=0, global_step=1))

        rows = median_ms(
            {
                "Lightning EMAWeightAveraging update (anchor)": lambda: averaged.update_parameters(module),
                "AveragedModel + get_ema_multi_avg_fn": lambda: multi.update_parameters(module),
                "Python loop mul_/add_": loop,
                "subscribers._ema foreach lerp": lambda: shadow.update(DECAY),
                "EMA subscriber, BatchEnd on a Bus": publish,
            }
        )
        swaps = median_ms(
            {
                "Lightning swap in + out, clone+copy (anchor)": lightning_swap,
                "subscribers._ema exchange in + out": exchange,
                "EMA subscriber, ValidationSwapIn + Out on a Bus": bus_swap,
            }
        )
    difference = agreement(module, callback, ShadowWeights(module))

    print(f"ResNet-18 (11.7 M parameters, random init), CPU, 1 thread, median of {REPEATS}, decay {DECAY}\n")
    for title, table in (("EMA update, per optimizer step", rows), ("Validation swap", swaps)):
        anchor = table[0][1]
        print(f"| {title} | ms | x anchor time | speed-up |\n|---|---:|---:|---:|")
        for name, ms in table:
            print(f"| {name} | {ms:.2f} | {ms / anchor:.3f} | {anchor / ms:.1f}x |")
        print()
    print(f"max |Lightning average - subscribers._ema average| after 3 perturbed steps: {difference:.2e}")


if __name__ == "__main__":
    main()

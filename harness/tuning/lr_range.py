"""The learning-rate range test: an exponential ramp of the rate, the smoothed loss, a suggestion.

Leslie Smith's range test (fastai's ``lr_find``), on the run's own data, augmentation,
model and optimiser: a fresh copy of the model trains for at most `steps` optimizer steps
while the rate grows exponentially from `min_lr` to `max_lr`. The loss is smoothed by a
bias-corrected exponential moving average; the test stops when the smoothed loss exceeds
`diverge` times its lowest value, or stops being finite. The suggestion is a tenth of the
rate at which the smoothed loss is lowest (`suggest`, which says why this rule).

Nothing of a run is touched: the model is built afresh from the settings, the Trainer
writes no checkpoint and no log (its root is a temporary folder), and the run's
``[model].scheduler`` and warm-up are replaced by the ramp. Lightning's own Tuner does not
run under DDP (Lightning issue #20994); this one does: every process records the mean of
all processes' batch losses (one all-reduce per step), so all of them draw the same curve,
stop at the same step and suggest the same rate, which rank zero then checks by a
broadcast before anything is written.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from harness.core.errors import HarnessError
from harness.settings import Settings
from harness.training.acceleration import resolve_acceleration
from harness.training.data import scan
from harness.training.fit import training_data
from harness.training.model import Classifier, TrainBatch

__all__ = ["RangeTest", "find_lr", "smooth", "suggest"]


@attrs.frozen(kw_only=True)
class RangeTest:
    """One range test: the rate and loss of every step, the smoothed loss and the suggestion."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float
    stopped: Literal["diverged", "last step"]
    rank: int = 0
    """The process that holds this copy; only rank zero writes."""


def smooth(losses: Sequence[float], beta: float = 0.98) -> list[float]:
    """The bias-corrected exponential moving average of `losses` (a non-finite loss stays non-finite)."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def suggest(lrs: Sequence[float], smoothed: Sequence[float]) -> float:
    """A tenth of the rate at which the smoothed loss is lowest (fastai's "minimum"), at least ``lrs[0]``.

    Why this rule: a run here warms up to the rate and anneals it (cosine), so the rate is
    a peak, held briefly; it belongs near the edge the ramp finds, where a higher rate
    stops lowering the loss, backed off by a decade (fastai's "minimum" rule). The rules
    that read the slope of the curve (fastai's "valley" and "steep", Lightning's steepest
    descent) pick the middle of the loss's fall, which suits a constant rate: on the
    embedded digits and on Fashion-MNIST they suggested 2e-4 to 4e-4, and runs at the
    valley's pick trailed the default 1e-3 by 1 to 5 points of top-1. The edge itself,
    found without the average's lag (the loss smoothed forwards and backwards) and not
    backed off, was measured too: on the digits and Fashion-MNIST it picked within 12% of
    this rule (as good, and no better), but with SGD at a constant rate it picked 2e-2,
    which trained to 65% top-1 where this rule's 1e-2 reached 92% (README, "Finding good
    settings"). With no finite loss the smallest rate is returned.
    """
    finite = [i for i, loss in enumerate(smoothed) if math.isfinite(loss)]
    if not finite:
        return float(lrs[0])
    lowest = min(finite, key=lambda i: smoothed[i])
    return max(float(lrs[0]), float(lrs[lowest]) / 10)


class _Probe(Classifier):
    """The run's Classifier without what a range test must not do: log, refuse NaN, check weights."""

    @override
    def training_step(self, batch: TrainBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, _ = self.training_loss(batch)
        return {"loss": loss}

    @override
    def on_train_epoch_end(self) -> None:
        """A range test ends in NaN weights on purpose; they are thrown away."""


class _Ramp(Callback):
    """Sets every parameter group's rate before each step and records the processes' mean loss."""

    def __init__(self, *, min_lr: float, max_lr: float, steps: int, diverge: float, beta: float) -> None:
        self.min_lr, self.max_lr, self.steps = min_lr, max_lr, steps
        self.diverge, self.beta = diverge, beta
        self.current = min_lr
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.scales: list[float] = []
        self.result: RangeTest | None = None
        self.stopped: Literal["diverged", "last step"] = "last step"

    def rate(self, step: int) -> float:
        return float(self.min_lr * (self.max_lr / self.min_lr) ** (step / max(1, self.steps - 1)))

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        peak = float(pl_module.hparams["lr"])
        self.scales = [group["lr"] / peak for group in trainer.optimizers[0].param_groups]

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        lr = self.current = self.rate(trainer.global_step)
        for group, scale in zip(trainer.optimizers[0].param_groups, self.scales, strict=True):
            group["lr"] = lr * scale

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = trainer.strategy.reduce(outputs["loss"].detach().float(), reduce_op="mean")
        self.lrs.append(self.current)
        self.losses.append(float(loss))
        smoothed = smooth(self.losses, self.beta)
        finite = [s for s in smoothed if math.isfinite(s)]
        if not math.isfinite(smoothed[-1]) or (finite and smoothed[-1] > self.diverge * min(finite)):
            self.stopped = "diverged"
            trainer.should_stop = True

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        smoothed = smooth(self.losses, self.beta)
        suggestion = suggest(self.lrs, smoothed) if self.lrs else self.min_lr
        # Inside fit the processes are still connected: rank zero's suggestion must be everyone's.
        agreed = float(trainer.strategy.broadcast(suggestion, src=0))
        differ = trainer.strategy.reduce(torch.tensor(float(agreed != suggestion)), reduce_op="sum")
        if float(differ) > 0:
            raise HarnessError(
                f"the range test's processes disagree: {int(differ)} of {trainer.world_size} suggest "
                f"another rate than rank zero's {agreed:.4g}"
            )
        self.result = RangeTest(
            lrs=tuple(self.lrs),
            losses=tuple(self.losses),
            smoothed=tuple(smoothed),
            suggestion=suggestion,
            stopped=self.stopped,
            rank=trainer.global_rank,
        )


def find_lr(
    settings: Settings,
    *,
    steps: int = 200,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    diverge: float = 4.0,
    beta: float = 0.98,
) -> RangeTest:
    """Run the range test the module describes on what `settings` name; every process returns it."""
    L.seed_everything(settings.run.seed, workers=True, verbose=False)
    info, classes = scan(settings.data, settings.run.seed)
    model = attrs.evolve(settings.model, scheduler="none", warmup=0.0)
    data = training_data(settings, info, len(classes))
    probe = _Probe.from_settings(
        model, num_classes=len(classes), image_size=settings.data.image_size, class_weights=data.class_weights
    )
    datamodule = data.datamodule
    ramp = _Ramp(min_lr=min_lr, max_lr=max_lr, steps=steps, diverge=diverge, beta=beta)
    trainer_settings = settings.trainer
    with tempfile.TemporaryDirectory(prefix="harness-lr-find-") as scratch:
        trainer = L.Trainer(
            default_root_dir=scratch,
            max_epochs=-1,
            max_steps=steps,
            accelerator=trainer_settings.accelerator,
            devices=trainer_settings.devices,
            strategy=trainer_settings.strategy,
            precision=resolve_acceleration(trainer_settings, model, probe.net).precision,  # type: ignore[arg-type]
            accumulate_grad_batches=trainer_settings.accumulate_grad_batches,
            gradient_clip_val=trainer_settings.gradient_clip_val or None,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
            callbacks=[ramp],
        )
        trainer.fit(probe, datamodule=datamodule)
    if ramp.result is None:
        raise HarnessError("the range test ended before its first step")
    return ramp.result

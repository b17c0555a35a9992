"""Weight EMA; consumes FitStart, BatchEnd, ValidationSwapIn/Out/EpochEnd, CheckpointSaving, TrainLoopEnd.

The average covers every parameter and floating-point buffer in the model's `state_dict`
(integer buffers are copied) and is updated after an optimizer step: after step
``global_step`` when ``global_step >= start_step`` and ``global_step % update_every == 0``,
so batches that only accumulate gradients never update it. The first update copies the
weights; the next ones use timm's warm-up decay (`subscribers._ema.ema_decay`), capped by
`EMASettings.horizon` so that the average never lags a short run (see there).

Validation sees the averaged weights: `ValidationSwapIn` exchanges averaged and training
tensors by storage, `ValidationSwapOut` exchanges them back (nothing happens before the
first update). The training weights are validated too, so that the average can never
cost accuracy: on each validation batch they are exchanged in for one more forward pass
of the batch's inputs (the one place a subscriber runs the model: it scores other
weights), and at `ValidationEpochEnd` the better of the two by top-1 is kept (the
average on a tie), recorded in `RunContext.validated_weights`. A checkpoint's
`state_dict` holds the kept weights; the other set and the update count are this
subscriber's state, so a resume continues bit for bit. At `TrainLoopEnd` the kept
weights go into the model for good, for `TrainEnd` consumers such as the ONNX export;
the other set is freed there when no checkpoint follows (`RunContext.training_state_released`).
The logged ``val/`` metrics are the average's.

Under DDP every rank updates its own copy; identical steps keep the copies identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs
import torch

from harness.core.bus import Bus
from harness.core.context import RunContext, ValidatedWeights
from harness.core.events import (
    BatchEnd,
    CheckpointSaving,
    FitStart,
    TrainLoopEnd,
    ValidationEpochEnd,
    ValidationSwapIn,
    ValidationSwapOut,
)
from harness.core.options import at_least, option, positive, within
from harness.core.spec import SubscriberSettings, SubscriberSpec
from subscribers._ema import ShadowWeights, ema_decay

__all__ = ["EMA", "EMASettings", "SPEC"]


@attrs.frozen(kw_only=True)
class EMASettings(SubscriberSettings):
    """Exponential moving average of the weights, validated, checkpointed and exported.

    The average is updated after optimizer step ``s`` (counted from 1) when
    ``s >= start_step`` and ``s % update_every == 0``. The first update copies the weights;
    with `warmup`, update ``n + 1`` uses ``min(decay, 1 - (1 + n / warmup_gamma) ** -warmup_power)``.

    `horizon` bounds the averaging window ``1 / (1 - decay)`` to that share of the run's
    optimizer steps ``T`` (`FitStart.total_steps`): the decay used is
    ``min(decay, 1 - 1 / (horizon * T))``. The weights of the last ``k * horizon * T`` steps
    then carry at least ``1 - exp(-k)`` of the average (95% for ``k = 3``): with the default
    0.1 the average at the end of a run is made of its last 30% of steps, where the
    learning rate has decayed, never of the unstable early weights. A 6-epoch run of 60
    steps with decay 0.99 (a window of 100 steps, longer than the run) averages 6 steps
    instead; a long run (``horizon * T > 1 / (1 - decay)``) is not affected. With the cap
    in place the schedule is still timm's `ModelEmaV3` with ``decay`` set to the capped value.
    """

    decay: float = option(0.999, "EMA decay after warm-up", within(0, 1, closed="()"))
    warmup: bool = option(True, "warm-up decay `1 - (1 + step/gamma) ** -power`, capped at `decay`")
    warmup_gamma: float = option(1.0, "warm-up gamma", positive())
    warmup_power: float = option(0.75, "warm-up power", positive())
    update_every: int = option(1, "optimizer steps between EMA updates", positive())
    start_step: int = option(0, "optimizer steps before the first update", at_least(0))
    horizon: float = option(
        0.1, "cap the decay so the averaging window is at most this share of the run's steps (0: no cap)",
        within(0, 1, closed="[]"),
    )  # fmt: skip


class EMA:
    """Keeps an exponential moving average of `context.model` and validates with it.

    `updates` counts the averaging steps taken; the warm-up schedule runs on it. The
    averaged copy is built at `FitStart` (or at the first training batch if no `FitStart`
    came); without a model in the context the subscriber does nothing.
    """

    def __init__(self, context: RunContext, settings: EMASettings | None = None) -> None:
        self.context = context
        self.settings = settings or EMASettings()
        self.updates = 0
        self._shadow: ShadowWeights | None = None
        self._resume: Mapping[str, torch.Tensor] | None = None
        self._final = False
        self._released = False
        self._total_steps = 0
        self.kept: Literal["average", "training"] = "average"
        self._resume_kept: Literal["average", "training"] = "average"
        self._resume_average: Mapping[str, torch.Tensor] | None = None
        # average right, training right, images: on the batches' device, read once an epoch
        self._correct = torch.zeros(3, dtype=torch.int64)

    def connect(self, bus: Bus) -> None:
        bus.subscribe(FitStart, self.on_fit_start)
        bus.subscribe(BatchEnd, self.on_batch_end, stage="train")
        bus.subscribe(ValidationSwapIn, self.on_validation_swap_in)
        bus.subscribe(BatchEnd, self.on_validation_batch_end, stage="validate")
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end)
        bus.subscribe(ValidationSwapOut, self.on_validation_swap_out)
        bus.subscribe(CheckpointSaving, self.on_checkpoint_saving)
        bus.subscribe(TrainLoopEnd, self.on_train_loop_end)

    def on_fit_start(self, event: FitStart) -> None:
        self._shadow = None
        self._final = False
        self._released = False
        self._total_steps = event.total_steps
        self._attach()

    @property
    def decay(self) -> float:
        """The decay after warm-up: `EMASettings.decay`, capped by the `horizon` of this run."""
        horizon, steps = self.settings.horizon, self._total_steps
        if horizon <= 0 or steps <= 0:
            return self.settings.decay
        return max(0.0, min(self.settings.decay, 1.0 - 1.0 / (horizon * steps)))

    def on_batch_end(self, event: BatchEnd) -> None:
        step = event.global_step
        if (
            not event.optimizer_stepped
            or step < self.settings.start_step
            or step % self.settings.update_every
        ):
            return
        shadow = self._attach()
        if shadow is None:
            return
        settings = self.settings
        decay = ema_decay(
            self.updates,
            decay=self.decay,
            warmup=settings.warmup,
            gamma=settings.warmup_gamma,
            power=settings.warmup_power,
        )
        shadow.update(decay)
        self.updates += 1

    def on_validation_swap_in(self, event: ValidationSwapIn) -> None:
        self._correct = torch.zeros(3, dtype=torch.int64)
        shadow = self._shadow
        if shadow is not None and self.updates and not shadow.swapped:
            shadow.exchange()

    def on_validation_batch_end(self, event: BatchEnd) -> None:
        shadow, model = self._shadow, self.context.model
        if event.sanity_check or shadow is None or model is None or not shadow.swapped or self._final:
            return
        shadow.exchange()
        try:
            with torch.no_grad():
                logits = model(event.inputs)
        finally:
            shadow.exchange()
        targets = event.targets.to(logits.device)
        counts = torch.stack(
            [
                (event.logits.argmax(dim=1).to(targets.device) == targets).sum(),
                (logits.argmax(dim=1) == targets).sum(),
                targets.new_full((), targets.shape[0], dtype=torch.int64),
            ]
        )
        self._correct = self._correct.to(counts.device) + counts

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        if event.sanity_check or self._final:
            return
        counts = self._correct.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank must keep the same weights: decide on the counts of all ranks.
            counts = counts.to(self.context.device)
            torch.distributed.all_reduce(counts)
            counts = counts.cpu()
        average, training, images = counts.tolist()
        if not images:
            return
        self.kept = "training" if training > average else "average"
        self.context.validated_weights = ValidatedWeights(
            epoch=event.epoch, kept=self.kept, average_top1=average / images, training_top1=training / images
        )

    def on_validation_swap_out(self, event: ValidationSwapOut) -> None:
        shadow = self._shadow
        if shadow is not None and shadow.swapped and not self._final:
            shadow.exchange()

    def on_checkpoint_saving(self, event: CheckpointSaving) -> None:
        if self._shadow is None or not self.updates:
            return
        kept = self._shadow.averaged() if self.kept == "average" else self._shadow.training()
        unknown = sorted(set(kept) - set(event.model_state))
        if unknown:
            raise ValueError(
                f"CheckpointSaving.model_state lacks {len(unknown)} key(s) of context.model.state_dict(), "
                f"first {unknown[0]!r}: the {self.kept} weights cannot be saved as the validated ones"
            )
        event.model_state.update(kept)

    def on_train_loop_end(self, event: TrainLoopEnd) -> None:
        shadow = self._shadow
        if shadow is None or not self.updates:
            return
        if shadow.swapped != (self.kept == "average"):
            shadow.exchange()
        self._final = True
        if self.context.training_state_released:  # no checkpoint follows: the other set is not needed
            shadow.release_other()
            self._released = True

    def state_dict(self) -> dict[str, Any]:
        """The update count, which weights were kept, and the set the checkpoint's `state_dict` lacks.

        The kept weights are the checkpoint's `state_dict`; the other set is here, by model
        key: ``"training"`` when the average was kept, ``"average"`` when the training weights were.
        """
        if self._released:
            raise RuntimeError("EMA state: the training weights were freed when training ended")
        training: Mapping[str, torch.Tensor] = {}
        average: Mapping[str, torch.Tensor] = {}
        if self._shadow is not None and self.updates:
            if self.kept == "average":
                training = self._shadow.training()
            else:
                average = self._shadow.averaged()
        else:
            training, average = self._resume or {}, self._resume_average or {}
        return {
            "updates": self.updates,
            "kept": self.kept,
            "training": dict(training),
            "average": dict(average),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore after the model was loaded with the kept weights; applied at `FitStart`."""
        updates, training = state["updates"], state["training"]
        kept, average = state.get("kept", "average"), state.get("average", {})
        if not isinstance(updates, int) or updates < 0:
            raise ValueError(f"EMA state: 'updates' must be a non-negative integer, got {updates!r}")
        if kept not in ("average", "training"):
            raise ValueError(f"EMA state: 'kept' must be 'average' or 'training', got {kept!r}")
        missing = training if kept == "average" else average
        if updates and not missing:
            other = "training" if kept == "average" else "averaged"
            raise ValueError(f"EMA state: 'updates' is {updates} but no {other} weights were saved")
        self.updates = updates
        self.kept = self._resume_kept = kept
        self._resume = dict(training) if updates and kept == "average" else None
        self._resume_average = dict(average) if updates and kept == "training" else None
        self._shadow = None

    def _attach(self) -> ShadowWeights | None:
        if self._shadow is None and self.context.model is not None:
            self._shadow = ShadowWeights(self.context.model)
            if self._resume is not None:
                self._shadow.load_training(self._resume)
                self._resume = None
            if self._resume_average is not None:
                self._shadow.load_averaged(self._resume_average)
                self._resume_average = None
        return self._shadow

    @property
    def holds_average(self) -> bool:
        """Whether the model holds the averaged weights now (validation, or after `TrainLoopEnd`)."""
        return self._shadow is not None and self._shadow.swapped


SPEC = SubscriberSpec(name="ema", build=EMA, settings=EMASettings)

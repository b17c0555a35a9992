"""BusCallback: the one Lightning adapter, turning Trainer hooks into typed events.

It fills `RunContext`, publishes the catalogue of `harness.core.events` on a `Bus`, and keeps
every stateful subscriber's `state_dict()` in Lightning checkpoints under
``checkpoint["harness"][key]``, restoring it on resume before `FitStart` is published.
No other module of the harness knows Lightning's hooks.
"""

from __future__ import annotations

import collections
import io
import logging
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from harness.core.bus import Bus, Stateful
from harness.core.context import RunContext, StopAt
from harness.core.events import (
    BatchEnd,
    CheckpointSaving,
    EpochJobsQueued,
    FitEnd,
    FitStart,
    RunFailed,
    Stage,
    TestEpochEnd,
    TestStart,
    TrainEnd,
    TrainEpochEnd,
    TrainEpochStart,
    TrainLoopEnd,
    ValidationEpochEnd,
    ValidationSwapIn,
    ValidationSwapOut,
)
from harness.core.temperature import CHECKPOINT_KEY as TEMPERATURE_KEY
from harness.training.lean_checkpoint import LeanModelCheckpoint
from harness.training.release import release_training_state

__all__ = ["CHECKPOINT_KEY", "BusCallback", "normalised", "scalar_metrics"]

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "harness"


_SAFE_LEAVES = (torch.Tensor, int, float, complex, str, bytes, bool, type(None), torch.dtype, torch.device)
_SAFE_CONTAINERS = (dict, collections.OrderedDict, list, tuple, torch.Size)


def _plainly_loadable(state: object, depth: int = 0) -> bool:
    """Whether `state` is made only of what ``weights_only=True`` loads, by a walk (no copy of tensors)."""
    if depth > 50:
        return False
    if isinstance(state, dict) and type(state) in _SAFE_CONTAINERS:
        return all(
            _plainly_loadable(key, depth + 1) and _plainly_loadable(value, depth + 1)
            for key, value in state.items()
        )
    if isinstance(state, list | tuple) and type(state) in _SAFE_CONTAINERS:
        return all(_plainly_loadable(item, depth + 1) for item in state)
    return type(state) in _SAFE_LEAVES or type(state) is torch.nn.Parameter


def _weights_only_failure(state: object) -> str | None:
    """Why `state` would not load back with ``torch.load(weights_only=True)``, or None if it does.

    A walk over plain containers, numbers, strings and tensors decides at once; anything
    else is saved and loaded back, which is exact (and copies the state, so only then).
    """
    if _plainly_loadable(state):
        return None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        return f"it holds a {found.group(1) if found else 'non-tensor object'}"
    return None


class UnloadableState(Exception):
    """A subscriber's `state_dict()` holds what ``torch.load(weights_only=True)`` refuses."""


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    """Every scalar metric the trainer holds (Lightning's `callback_metrics`), as floats."""
    return {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}


def normalised(metrics: Mapping[str, float], stage: str) -> dict[str, float]:
    """The metrics of `stage` (``"train"``, ``"val"``, ``"test"``) under the harness's stable names.

    Lightning names a metric logged both per step and per epoch ``<name>_step`` and
    ``<name>_epoch``: the epoch's value is kept, as ``<name>``; the last step's is not.
    """
    found: dict[str, float] = {}
    for key in sorted(metrics, key=lambda k: k.endswith("_epoch")):
        if key.startswith(f"{stage}/") and not key.endswith("_step"):
            found[key.removesuffix("_epoch")] = metrics[key]
    return found


def _learning_rates(trainer: L.Trainer) -> dict[str, float]:
    """``lr``: the first optimizer's first parameter group's rate now; ``lr/<i>`` its group `i` > 0."""
    if not trainer.optimizers:
        return {}
    groups = trainer.optimizers[0].param_groups
    return {("lr" if i == 0 else f"lr/{i}"): float(group["lr"]) for i, group in enumerate(groups)}


def _logits(outputs: Any) -> torch.Tensor:
    logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
    if isinstance(logits, torch.Tensor):
        return logits.detach()
    raise TypeError(
        "BusCallback needs the step to return {'loss': ..., 'logits': ...} so that BatchEnd "
        f"carries the logits; got {type(outputs).__name__}"
    )


class BusCallback(Callback):
    """Publish `harness.core.events` on `bus` from Lightning's hooks.

    `subscribers` maps a stable key (the settings name, e.g. ``"ema"``) to each subscriber
    whose state rides in checkpoints; subscribers without `state_dict` are skipped.
    On Ctrl-C, a checkpoint is written to `interrupt_checkpoint` (when given) so the run
    can resume from where it stopped, unless training is over and its state was released
    (`harness.training.release`): then the whole ``last.ckpt`` of the final step stands.
    """

    def __init__(
        self,
        bus: Bus,
        context: RunContext,
        subscribers: Mapping[str, object],
        *,
        interrupt_checkpoint: Path | None = None,
    ) -> None:
        self.bus = bus
        self.context = context
        self.subscribers = dict(subscribers)
        self.interrupt_checkpoint = interrupt_checkpoint
        self._resumed = False
        self._train_ended = False
        self._released = False
        self._rates: dict[str, float] = {}
        self._validation: dict[str, float] = {}
        self._validated_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return "BusCallback"

    def final_metrics(self, trainer: L.Trainer) -> dict[str, float]:
        """The last values measured: the last training epoch's, its rates, the last validation's."""
        return {**normalised(scalar_metrics(trainer), "train"), **self._rates, **self._validation}

    def _progress(self, trainer: L.Trainer) -> tuple[int, int]:
        self.context.epoch = trainer.current_epoch
        self.context.global_step = trainer.global_step
        return trainer.current_epoch, trainer.global_step

    def _update_best(self, trainer: L.Trainer) -> None:
        checkpoint = trainer.checkpoint_callback
        path = getattr(checkpoint, "best_model_path", "")
        score = getattr(checkpoint, "best_model_score", None)
        if path and Path(path).is_file():
            self.context.best_checkpoint = Path(path)
            self.context.best_score = None if score is None else float(score)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.context.rank = trainer.global_rank
        self.context.world_size = trainer.world_size
        self.bus.rank = trainer.global_rank

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.context.model = pl_module
        self.context.device = pl_module.device
        self.context.max_epochs = int(trainer.max_epochs or 0)
        epoch, step = self._progress(trainer)
        estimated = float(trainer.estimated_stepping_batches)
        self.bus.publish(
            FitStart(
                epoch=epoch,
                global_step=step,
                max_epochs=self.context.max_epochs,
                resumed=self._resumed,
                total_steps=int(estimated) if math.isfinite(estimated) else 0,
            )
        )

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._update_best(trainer)
        epoch, step = self._progress(trainer)
        self._rates = _learning_rates(trainer)  # the rates this epoch starts with
        self.bus.publish(TrainEpochStart(epoch=epoch, global_step=step))

    def _batch_end(self, trainer: L.Trainer, stage: Stage, outputs: Any, batch: Any, batch_idx: int) -> None:
        inputs, targets = batch[0], batch[1]
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else None
        stepped = False
        if stage == "train":
            accumulate = trainer.accumulate_grad_batches
            stepped = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == trainer.num_training_batches
        epoch, step = self._progress(trainer)
        self.bus.publish(
            BatchEnd(
                stage=stage,
                epoch=epoch,
                global_step=step,
                batch_idx=batch_idx,
                inputs=inputs.detach(),
                targets=targets.detach(),
                logits=_logits(outputs),
                loss=None if loss is None else loss.detach(),
                optimizer_stepped=stepped,
                sanity_check=trainer.sanity_checking,
            )
        )

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch_end(trainer, "train", outputs, batch, batch_idx)
        self._stop_if_requested(trainer, "step")

    def _stop_if_requested(self, trainer: L.Trainer, now: StopAt) -> None:
        """Set Lightning's `should_stop` for a `RunContext.request_stop` due `now`, agreed by every rank.

        Lightning then validates at this batch (unless it just did), ends the epoch and the
        fit as it does for early stopping, so checkpoints, `TrainEnd` and the export follow.
        """
        request = self.context.stop_request
        due = request is not None and (now == "epoch" or request.at == "step")
        if trainer.world_size > 1:
            due = trainer.strategy.reduce_boolean_decision(due, all=False)
            if due and self.context.stop_request is None:
                self.context.request_stop("requested by a subscriber on another process", at=now)
        if due:
            trainer.should_stop = True

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch, step = self._progress(trainer)
        self.bus.publish(
            ValidationSwapIn(epoch=epoch, global_step=step, sanity_check=trainer.sanity_checking)
        )

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end(trainer, "validate", outputs, batch, batch_idx)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch, step = self._progress(trainer)
        sanity = trainer.sanity_checking
        metrics = normalised(scalar_metrics(trainer), "val")
        if not sanity:
            self._validation, self._validated_epoch = metrics, epoch
        self.bus.publish(
            ValidationEpochEnd(epoch=epoch, global_step=step, metrics=metrics, sanity_check=sanity)
        )
        self.bus.publish(ValidationSwapOut(epoch=epoch, global_step=step, sanity_check=sanity))

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch, step = self._progress(trainer)
        validated = self._validated_epoch == epoch
        metrics = {**normalised(scalar_metrics(trainer), "train"), **self._rates}
        if validated:
            metrics |= self._validation
        self.bus.publish(TrainEpochEnd(epoch=epoch, global_step=step, metrics=metrics, validated=validated))
        self.bus.publish(EpochJobsQueued(epoch=epoch, global_step=step))
        self._stop_if_requested(trainer, "epoch")

    @override
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        epoch, step = self._progress(trainer)
        event = CheckpointSaving(epoch=epoch, global_step=step, model_state=checkpoint["state_dict"])
        self.bus.publish(event)
        checkpoint[CHECKPOINT_KEY] = self._states(event)
        if self.context.temperature is not None:
            # The temperature fitted on this validation's logits, i.e. on the weights being saved.
            checkpoint[TEMPERATURE_KEY] = self.context.temperature.to_json()

    def _states(self, event: CheckpointSaving) -> dict[str, dict[str, Any]]:
        """Every stateful subscriber's state, each checked loadable with ``weights_only=True``.

        Resume loads checkpoints that way, so one unloadable state would spoil every later
        checkpoint. A subscriber whose state fails meets its failure policy: "raise" stops the
        run before this checkpoint is written (the previous file stays as it was); "isolate"
        disconnects it, and this and later checkpoints carry no state for it.
        """
        states: dict[str, dict[str, Any]] = {}
        for key, subscriber in self.subscribers.items():
            if not isinstance(subscriber, Stateful) or self.bus.isolated(subscriber):
                continue
            try:
                state = subscriber.state_dict()
                failure = _weights_only_failure(state)
                if failure is not None:
                    raise UnloadableState(
                        f"its state_dict cannot be loaded with torch.load(weights_only=True): {failure}"
                    )
            except Exception as error:  # noqa: BLE001 - the subscriber's policy decides
                self.bus.fail(subscriber, key, event, error)
                continue
            states[key] = state
        return states

    @override
    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resumed = True
        saved = checkpoint.get(CHECKPOINT_KEY, {})
        for key, subscriber in self.subscribers.items():
            if isinstance(subscriber, Stateful) and key in saved:
                subscriber.load_state_dict(saved[key])
            elif isinstance(subscriber, Stateful):
                log.warning("checkpoint holds no state for subscriber %r; it starts fresh", key)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_ended = True
        self._update_best(trainer)
        epoch, step = self._progress(trainer)
        self._release_training_state(trainer, pl_module)
        self.bus.publish(TrainLoopEnd(epoch=epoch, global_step=step))
        self.bus.publish(TrainEnd(epoch=epoch, global_step=step, metrics=self.final_metrics(trainer)))

    def _release_training_state(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Free the optimizer state and gradients before `TrainLoopEnd` when no checkpoint needs them again.

        That is when every checkpoint callback wrote the whole ``last.ckpt`` at this very
        step, or when the run keeps no checkpoint at all. Then an interrupt during the
        `TrainEnd` consumers (the export) leaves that ``last.ckpt`` as it is.
        """
        callbacks = trainer.checkpoint_callbacks
        if callbacks:
            saved = all(
                isinstance(callback, LeanModelCheckpoint) and callback.last_step == trainer.global_step
                for callback in callbacks
            )
        else:
            saved = self.interrupt_checkpoint is None
        if saved:
            released = release_training_state(pl_module, trainer.optimizers)
            self._released = self.context.training_state_released = True
            log.debug("training is over: released %s of optimizer state and gradients", released.describe())

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._train_ended:
            # A resume from a checkpoint written after the last epoch (Ctrl-C during the
            # export, say): Lightning skips the loop and its hooks, but what follows training
            # (the export, the test split) is still to do.
            self.on_train_end(trainer, pl_module)
        epoch, step = self._progress(trainer)
        self.bus.publish(FitEnd(epoch=epoch, global_step=step))

    @override
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.context.model = pl_module
        self.context.device = pl_module.device
        epoch, step = self._progress(trainer)
        self.bus.publish(TestStart(epoch=epoch, global_step=step))

    @override
    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end(trainer, "test", outputs, batch, batch_idx)

    @override
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch, step = self._progress(trainer)
        metrics = normalised(scalar_metrics(trainer), "test")
        self.bus.publish(TestEpochEnd(epoch=epoch, global_step=step, metrics=metrics))

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        epoch, step = self._progress(trainer)
        event = RunFailed(
            epoch=epoch,
            global_step=step,
            error=f"{type(exception).__name__}: {exception}",
            # Ctrl-C, and SIGTERM (what SLURM and Kubernetes send before a kill), stop cleanly.
            interrupted=isinstance(exception, KeyboardInterrupt | SIGTERMException),
        )
        try:
            self.bus.publish(event)
        except Exception:  # the original exception must win, so this one is only logged
            log.exception("a subscriber failed while handling RunFailed")
        if event.interrupted and self.interrupt_checkpoint is not None:
            if self._released:  # after the loop: last.ckpt already holds the final state, whole
                log.warning("interrupted after training: %s holds the final state", self.interrupt_checkpoint)
            else:
                trainer.save_checkpoint(self.interrupt_checkpoint)
                log.warning("interrupted: checkpoint written to %s", self.interrupt_checkpoint)

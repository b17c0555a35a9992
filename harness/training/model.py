"""The LightningModule: a network of `harness.training.networks`, cross-entropy, accuracies.

Its steps return the (main) logits they computed, so `BatchEnd` carries them and no
subscriber runs the model a second time. A training batch is ``(inputs, targets)`` or,
when MixUp or CutMix mixed it, ``(inputs, targets, soft_targets)``: the loss then uses the
soft targets. Networks with auxiliary classifiers add their weighted losses in training.
The rate follows `harness.training.optim.Schedule`, stepped per optimizer step.
Fine-tuning: the backbone's gradients are dropped for the first `freeze_backbone_epochs`
epochs, and it learns at `backbone_lr_scale` times `lr`.

A non-finite training loss raises `TrainingDiverged` naming the first such step and its
rate, and so do non-finite weights at an epoch's end, before any checkpoint is written.
The guard does not synchronise with the device on every step (on a GPU that stalls the
input pipeline): each step folds "is the loss finite" into a flag kept on the device, and
the flag is read every `DIVERGENCE_CHECK_EVERY` steps and at each epoch's end, so a run
stops at most that many steps after its first non-finite loss.
`accelerate` puts the network in channels-last memory format and compiles the steps'
forward pass (`harness.training.acceleration`); `forward` itself stays the plain network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from harness.core.errors import SettingsError, TrainingDiverged
from harness.core.preprocessing import Preprocessing
from harness.settings import ModelSettings
from harness.training.networks import (
    AUX_LOSS_WEIGHTS,
    backbone_parameters,
    build_network,
    head_parameters,
    split_outputs,
)
from harness.training.optim import Schedule

__all__ = [
    "DIVERGENCE_CHECK_EVERY",
    "METRICS",
    "Classifier",
    "check_batch_norm",
    "check_monitor",
    "preprocessing_record",
]

DIVERGENCE_CHECK_EVERY = 32
"""Training steps between two reads of the divergence flag (each read waits for the device)."""

Batch = tuple[torch.Tensor, torch.Tensor]
TrainBatch = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]

METRICS: dict[str, Literal["max", "min"]] = {
    "val/acc_top1": "max",
    "val/acc_top5": "max",
    "val/acc_balanced": "max",
    "val/loss": "min",
    "train/loss": "min",
}
"""Every metric the Classifier logs, with the direction in which it improves."""


def check_monitor(monitor: str, mode: str) -> None:
    """Refuse a checkpoint monitor the model never logs; warn when its mode looks reversed."""
    if monitor not in METRICS:
        listed = ", ".join(METRICS)
        raise SettingsError(
            f"[checkpoint].monitor = {monitor!r} is not a metric the model logs; one of: {listed}"
        )
    if METRICS[monitor] != mode:
        logging.getLogger("harness").warning(
            "[checkpoint].mode = %r for %s, which improves when it goes %s: did you mean mode = %r?",
            mode,
            monitor,
            "up" if METRICS[monitor] == "max" else "down",
            METRICS[monitor],
        )


def preprocessing_record(preprocessing: Preprocessing) -> dict[str, Any]:
    """`preprocessing` as plain values, as checkpoints hold it; ``Preprocessing(**record)`` reads it back."""
    return attrs.asdict(preprocessing)


def check_batch_norm(net: torch.nn.Module, batch_size: int) -> None:
    """Refuse a batch size BatchNorm cannot train on: one image has no variance to normalise by."""
    if batch_size > 1:
        return
    norm = next(
        (type(m).__name__ for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)),
        None,
    )
    if norm is not None:
        raise SettingsError(
            f"[data].batch_size = {batch_size}: the network has {norm} layers, which cannot train on "
            "batches of one image; use a batch size of at least 2"
        )


class Classifier(L.LightningModule):
    """Image classifier around `net`, a torchvision model named by `arch`."""

    def __init__(
        self,
        *,
        arch: str,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup: float = 1.0,
        warmup_unit: str = "epochs",
        step_milestones: tuple[float, ...] = (0.5, 0.75),
        step_gamma: float = 0.1,
        label_smoothing: float = 0.1,
        weights: str = "",
        image_size: int | None = None,
        freeze_backbone_epochs: int = 0,
        backbone_lr_scale: float = 1.0,
        class_names: Sequence[str] = (),
        preprocessing: Mapping[str, Any] | None = None,
        class_weights: tuple[float, ...] | None = None,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_weights"])
        self.arch = arch
        self.net = build_network(arch, num_classes, weights, image_size, load=load_weights)
        # Not persistent: a checkpoint's state_dict stays the network's, loadable without them.
        weighting = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.loss_weights: torch.Tensor | None
        self.register_buffer("loss_weights", weighting, persistent=False)
        self.aux_weights = AUX_LOSS_WEIGHTS.get(arch, ())
        top5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top5, average="micro")
        # Balanced accuracy: the mean of per-class recalls, so a minority class counts as much.
        self.val_balanced = MulticlassAccuracy(num_classes=num_classes, average="macro")
        self.test_top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top5, average="micro")
        self.test_balanced = MulticlassAccuracy(num_classes=num_classes, average="macro")
        self._channels_last = False
        self._compile = False
        self._compiled: Callable[[torch.Tensor], Any] | None = None
        # The first non-finite step (0: none yet) and its loss, on the device; the rates of
        # the steps since the last read, on the host.
        self._diverged_at: torch.Tensor | None = None
        self._diverged_loss: torch.Tensor | None = None
        self._rates: dict[int, float] = {}

    def accelerate(self, *, channels_last: bool, compile: bool) -> None:
        """Channels-last weights and inputs; a compiled forward for the training and validation steps.

        The compiled function is not a submodule: parameters, `state_dict` keys and
        `forward` (what the export traces) stay those of the plain network. It is built at
        the first step, in the process that trains, and never pickled (``ddp_spawn``).
        """
        self._channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self._compile = compile
        self._compiled = None

    def run_network(self, inputs: torch.Tensor) -> Any:
        """The network's raw outputs as the steps compute them: channels-last and compiled if asked."""
        if self._channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if not self._compile:
            return self.net(inputs)
        if self._compiled is None:
            net = self.net

            # A function, not `torch.compile(net)` (an `nn.Module`): assigned here it would be
            # a submodule, its weights a second time in `state_dict`, and copied by deepcopy.
            def network(batch: torch.Tensor) -> Any:
                return net(batch)

            self._compiled = torch.compile(network)
        return self._compiled(inputs)

    @override
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compiled"] = None
        return state

    @classmethod
    def from_settings(
        cls,
        settings: ModelSettings,
        num_classes: int,
        image_size: int | None = None,
        *,
        class_names: Sequence[str] = (),
        preprocessing: Preprocessing | None = None,
        class_weights: tuple[float, ...] | None = None,
    ) -> Classifier:
        """The model `settings` describe, recording `class_names` and `preprocessing`.

        They ride in every checkpoint (``hyper_parameters``, which weights-only checkpoints
        carry too), so a resume checks them wherever the checkpoint comes from.
        """
        return cls(
            arch=settings.arch,
            num_classes=num_classes,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            optimizer=settings.optimizer,
            scheduler=settings.scheduler,
            warmup=settings.warmup,
            warmup_unit=settings.warmup_unit,
            step_milestones=settings.step_milestones,
            step_gamma=settings.step_gamma,
            label_smoothing=settings.label_smoothing,
            weights=settings.weights,
            image_size=image_size,
            freeze_backbone_epochs=settings.freeze_backbone_epochs,
            backbone_lr_scale=settings.backbone_lr_scale,
            class_names=tuple(class_names),
            preprocessing=None if preprocessing is None else preprocessing_record(preprocessing),
            class_weights=class_weights,
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits, _ = split_outputs(self.net(inputs))
        return logits

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, *, weighted: bool = False) -> torch.Tensor:
        """Cross-entropy; `weighted` (training) applies the class weights, when there are any."""
        weight = self.loss_weights if weighted else None
        return F.cross_entropy(
            logits, targets, weight=weight, label_smoothing=self.hparams["label_smoothing"]
        )

    def _lr(self) -> float:
        optimizer = self.optimizers(use_pl_optimizer=False)
        assert isinstance(optimizer, torch.optim.Optimizer)
        return float(optimizer.param_groups[-1]["lr"])

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch's loss (auxiliary heads and soft targets included) and its main logits."""
        inputs, targets = batch[0], batch[1]
        logits, aux = split_outputs(self.run_network(inputs))
        wanted = batch[2] if len(batch) == 3 else targets
        return self._loss(logits, wanted, weighted=True) + self._aux_loss(aux, wanted), logits

    def training_step(self, batch: TrainBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        targets = batch[1]
        loss, logits = self.training_loss(batch)
        self._watch_loss(loss.detach(), self.trainer.global_step + 1)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return {"loss": loss, "logits": logits.detach()}

    def _aux_loss(self, aux: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor | float:
        """The auxiliary classifiers' weighted losses (torchvision returns them in training only)."""
        if not aux:
            return 0.0
        losses = (
            w * self._loss(a, targets, weighted=True) for w, a in zip(self.aux_weights, aux, strict=True)
        )
        return sum(losses, 0.0)

    def _watch_loss(self, loss: torch.Tensor, step: int) -> None:
        """Fold "is the loss of `step` finite" into the device flag; read it every few steps."""
        if self._diverged_at is None or self._diverged_at.device != loss.device:
            self._diverged_at = torch.zeros((), dtype=torch.int64, device=loss.device)
            self._diverged_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        assert self._diverged_loss is not None
        first = torch.logical_and(~torch.isfinite(loss), self._diverged_at == 0)
        self._diverged_at.copy_(torch.where(first, step, self._diverged_at))
        self._diverged_loss.copy_(torch.where(first, loss.to(self._diverged_loss.dtype), self._diverged_loss))
        self._rates[step] = self._lr()
        if step % DIVERGENCE_CHECK_EVERY == 0:
            self.check_divergence()

    def check_divergence(self) -> None:
        """Raise `TrainingDiverged` if a training loss since the last read was not finite (one sync)."""
        if self._diverged_at is None or self._diverged_loss is None:
            return
        step = int(self._diverged_at.item())
        if step:
            rate = self._rates.get(step, self._lr())
            raise TrainingDiverged(step, rate, f"the training loss is {self._diverged_loss.item()}")
        self._rates.clear()

    def on_train_epoch_end(self) -> None:
        # Runs before ModelCheckpoint saves: a checkpoint never holds non-finite weights.
        self.check_divergence()
        bad = next((name for name, p in self.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise TrainingDiverged(self.trainer.global_step, self._lr(), f"parameter {bad!r} is not finite")

    @override
    def on_after_backward(self) -> None:
        # Dropping the gradients (rather than requires_grad) keeps DDP's reducer and the
        # optimizer's parameter groups unchanged when the backbone thaws.
        if self.current_epoch < self.hparams.get("freeze_backbone_epochs", 0):
            for parameter in backbone_parameters(self.net):
                parameter.grad = None

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """The backbone at `backbone_lr_scale` times the learning rate, the head at the rate itself."""
        scale = float(self.hparams.get("backbone_lr_scale", 1.0))
        if scale == 1.0:
            return [{"params": list(self.parameters())}]
        head = {id(p) for p in head_parameters(self.net)}
        rest = [p for p in self.parameters() if id(p) not in head]
        return [
            {"params": rest, "lr": self.hparams["lr"] * scale},
            {"params": [p for p in self.parameters() if id(p) in head]},
        ]

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._scored_step(batch, "val", (self.val_top1, self.val_top5, self.val_balanced))

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._scored_step(batch, "test", (self.test_top1, self.test_top5, self.test_balanced))

    def _scored_step(
        self,
        batch: Batch,
        stage: str,
        scores: tuple[MulticlassAccuracy, MulticlassAccuracy, MulticlassAccuracy],
    ) -> dict[str, torch.Tensor]:
        """Validation and test alike: loss, top-1, top-5 and balanced accuracy under `stage/`."""
        inputs, targets = batch
        logits, _ = split_outputs(self.run_network(inputs))
        loss = self._loss(logits, targets)
        size = len(targets)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=size)
        for name, score in zip(("acc_top1", "acc_top5", "acc_balanced"), scores, strict=True):
            score.update(logits, targets)
            shown = stage == "val" and name == "acc_top1"
            self.log(f"{stage}/{name}", score, on_epoch=True, prog_bar=shown, batch_size=size)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer: torch.optim.Optimizer
        if hp["optimizer"] == "adamw":
            optimizer = torch.optim.AdamW(
                self._parameter_groups(), lr=hp["lr"], weight_decay=hp["weight_decay"]
            )
        else:
            optimizer = torch.optim.SGD(
                self._parameter_groups(),
                lr=hp["lr"],
                momentum=0.9,
                nesterov=True,
                weight_decay=hp["weight_decay"],
            )
        if hp["scheduler"] == "none" and not hp["warmup"]:
            return optimizer
        self.schedule = Schedule.for_run(
            total_steps=int(self.trainer.estimated_stepping_batches),
            max_epochs=max(1, int(self.trainer.max_epochs or 1)),
            warmup=hp["warmup"],
            warmup_unit=hp["warmup_unit"],
            kind=hp["scheduler"],
            milestones=tuple(hp["step_milestones"]),
            gamma=hp["step_gamma"],
        )
        # A plain function, not a callable object: LambdaLR's state_dict then keeps only the
        # step count, so a resume with a longer run follows the new, longer schedule.
        schedule = self.schedule
        lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.factor(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lambda_lr, "interval": "step"}}

    def on_train_start(self) -> None:
        # A resume restores the optimizer's rate of the old schedule's last step (0 at the
        # end of a cosine); the first step after it must use the new schedule's rate.
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base * self.schedule.factor(scheduler.last_epoch)

"""The LightningModule: a torchvision architecture, cross-entropy, top-1/top-5 and balanced accuracy.

Its steps return the logits they computed, so `BatchEnd` carries them and no subscriber
runs the model a second time. A training batch is ``(inputs, targets)`` or, when MixUp
or CutMix mixed it, ``(inputs, targets, soft_targets)``: the loss then uses the soft
targets. The rate follows `harness.training.optim.Schedule`, stepped per optimizer step.
A non-finite training loss (or non-finite weights at an epoch's end, before any
checkpoint is written) raises `TrainingDiverged`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from harness.core.errors import SettingsError, TrainingDiverged
from harness.settings import ModelSettings
from harness.training.optim import Schedule

__all__ = ["METRICS", "Classifier", "build_network", "check_monitor"]

Batch = tuple[torch.Tensor, torch.Tensor]
TrainBatch = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]

METRICS: dict[str, Literal["max", "min"]] = {
    "val/acc_top1": "max",
    "val/acc_top5": "max",
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


def build_network(arch: str, num_classes: int, weights: str = "") -> nn.Module:
    """A randomly initialised torchvision model, or one loaded from a local weights file.

    Nothing is ever downloaded. A classifier head of another class count is left at its
    random initialisation.
    """
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        import difflib

        close = difflib.get_close_matches(arch, available, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise SettingsError(f"[model].arch: unknown torchvision architecture {arch!r}{hint}")
    network: nn.Module = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise SettingsError(f"[model].weights: no such file {str(path)!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        own = network.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise SettingsError(f"[model].weights: {str(path)!r} holds no tensor that fits {arch}")
        network.load_state_dict(usable, strict=False)
    return network


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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.arch = arch
        self.net = build_network(arch, num_classes, weights)
        top5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top5, average="micro")
        # Balanced accuracy: the mean of per-class recalls, so a minority class counts as much.
        self.val_balanced = MulticlassAccuracy(num_classes=num_classes, average="macro")
        self.test_top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.test_top5 = MulticlassAccuracy(num_classes=num_classes, top_k=top5, average="micro")
        self.test_balanced = MulticlassAccuracy(num_classes=num_classes, average="macro")

    @classmethod
    def from_settings(cls, settings: ModelSettings, num_classes: int) -> Classifier:
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
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(inputs)
        return logits

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.hparams["label_smoothing"])

    def _lr(self) -> float:
        optimizer = self.optimizers(use_pl_optimizer=False)
        assert isinstance(optimizer, torch.optim.Optimizer)
        return float(optimizer.param_groups[0]["lr"])

    def training_step(self, batch: TrainBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, targets = batch[0], batch[1]
        logits = self(inputs)
        loss = self._loss(logits, batch[2] if len(batch) == 3 else targets)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                self.trainer.global_step + 1, self._lr(), f"the training loss is {loss.item()}"
            )
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return {"loss": loss, "logits": logits.detach()}

    def on_train_epoch_end(self) -> None:
        # Runs before ModelCheckpoint saves: a checkpoint never holds non-finite weights.
        bad = next((name for name, p in self.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise TrainingDiverged(self.trainer.global_step, self._lr(), f"parameter {bad!r} is not finite")

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        logits = self(inputs)
        loss = self._loss(logits, targets)
        self.val_top1.update(logits, targets)
        self.val_top5.update(logits, targets)
        self.val_balanced.update(logits, targets)
        size = len(targets)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("val/acc_top1", self.val_top1, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("val/acc_top5", self.val_top5, on_epoch=True, batch_size=size)
        self.log("val/acc_balanced", self.val_balanced, on_epoch=True, batch_size=size)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        logits = self(inputs)
        loss = self._loss(logits, targets)
        self.test_top1.update(logits, targets)
        self.test_top5.update(logits, targets)
        self.test_balanced.update(logits, targets)
        size = len(targets)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("test/acc_top1", self.test_top1, on_epoch=True, batch_size=size)
        self.log("test/acc_top5", self.test_top5, on_epoch=True, batch_size=size)
        self.log("test/acc_balanced", self.test_balanced, on_epoch=True, batch_size=size)
        return {"loss": loss.detach(), "logits": logits.detach()}

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer: torch.optim.Optimizer
        if hp["optimizer"] == "adamw":
            optimizer = torch.optim.AdamW(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        else:
            optimizer = torch.optim.SGD(
                self.parameters(), lr=hp["lr"], momentum=0.9, nesterov=True, weight_decay=hp["weight_decay"]
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

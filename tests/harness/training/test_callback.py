"""BusCallback publishes what was measured each epoch under stable names, on a real Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.core.bus import Bus
from harness.core.events import TrainEnd, TrainEpochEnd, ValidationEpochEnd
from harness.core.testing import make_context
from harness.training.callback import BusCallback, normalised


class Tiny(L.LightningModule):
    """Logs as the harness's Classifier does: the training loss per step and per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 3)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        logits = self.net(inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return {"loss": loss, "logits": logits.detach()}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        logits = self.net(inputs)
        self.log("val/acc_top1", (logits.argmax(1) == targets).float().mean(), on_epoch=True)
        return {"loss": nn.functional.cross_entropy(logits, targets), "logits": logits}

    def configure_optimizers(self) -> Any:
        first, second = nn.Linear(1, 1), self.net
        return torch.optim.AdamW(
            [{"params": second.parameters(), "lr": 0.01}, {"params": first.parameters(), "lr": 0.001}]
        )


def test_each_epoch_publishes_its_own_metrics_under_stable_names(tmp_path: Path) -> None:
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    bus, context = Bus(), make_context(tmp_path)
    epochs: list[TrainEpochEnd] = []
    validations: list[ValidationEpochEnd] = []
    ends: list[TrainEnd] = []
    bus.subscribe(TrainEpochEnd, epochs.append)
    bus.subscribe(ValidationEpochEnd, validations.append)
    bus.subscribe(TrainEnd, ends.append)
    trainer = L.Trainer(
        max_epochs=3,
        check_val_every_n_epoch=2,  # validates after epoch 1 only
        num_sanity_val_steps=1,
        logger=CSVLogger(tmp_path),
        callbacks=[BusCallback(bus, context, {}), LearningRateMonitor(logging_interval="epoch")],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))

    assert [event.validated for event in epochs] == [False, True, False]
    for event in epochs:
        assert set(event.metrics) == {"train/loss", "lr", "lr/1"} | (
            {"val/acc_top1"} if event.validated else set()
        )
        assert event.metrics["lr"] == 0.01 and event.metrics["lr/1"] == 0.001
    assert "val/acc_top1" in trainer.callback_metrics, "Lightning keeps the stale value; the event does not"
    assert [v.sanity_check for v in validations] == [True, False]
    assert set(validations[1].metrics) == {"val/acc_top1"}
    assert ends[0].metrics["val/acc_top1"] == epochs[1].metrics["val/acc_top1"]


def test_an_epoch_mean_is_kept_and_a_last_step_is_not() -> None:
    raw = {"train/loss_step": 9.0, "train/loss_epoch": 2.0, "train/acc": 0.5, "val/loss": 1.0, "lr-SGD": 0.1}
    assert normalised(raw, "train") == {"train/loss": 2.0, "train/acc": 0.5}
    assert normalised(raw, "val") == {"val/loss": 1.0}

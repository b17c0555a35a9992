"""`LeanModelCheckpoint`: the top-k checkpoints hold the validated weights alone; `last.ckpt` is whole.

Lightning's `ModelCheckpoint` writes every file whole: the optimizer's state, the
scheduler, every callback's and subscriber's state (the EMA's training weights among
them). For ResNet-18 that is four times the weights (179 MB) in each top-k file, while
what export, evaluation and a user loading a checkpoint need is the weights that were
validated. Here a top-k file keeps only those and what names them:

    epoch, global_step, pytorch-lightning_version, state_dict, hyper_parameters,
    the temperature fitted on these weights (`harness.core.temperature`),
    callbacks (ModelCheckpoint's entries only: the score), weights_only = True

`state_dict` is what the `CheckpointSaving` subscribers made of it (the EMA puts the
averaged weights there), because the file is built from Lightning's whole checkpoint
dictionary, hooks included. ``last.ckpt`` and the interrupt checkpoint stay whole and
resumable. A top-k file is not resumable: `LEAN_KEY` marks it, and
`harness.training.run_dir.check_resume` refuses it in one line naming ``last.ckpt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

from harness.core.temperature import CHECKPOINT_KEY as TEMPERATURE_KEY

__all__ = ["LEAN_KEY", "LeanModelCheckpoint", "lean"]

LEAN_KEY = "weights_only"
_KEPT = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "hyper_parameters",
    "hparams_name",
    TEMPERATURE_KEY,
)


def lean(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The validated-weights-only form of a whole Lightning checkpoint dictionary."""
    kept = {key: checkpoint[key] for key in _KEPT if key in checkpoint}
    callbacks = checkpoint.get("callbacks") or {}
    kept["callbacks"] = {
        key: state for key, state in callbacks.items() if str(key).startswith(ModelCheckpoint.__name__)
    }
    kept[LEAN_KEY] = True
    return kept


class LeanModelCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose top-k files are `lean`; ``last.ckpt`` is written whole.

    Built on ``ModelCheckpoint._save_checkpoint`` and ``Trainer._checkpoint_connector``
    (Lightning 2.6): the only way to run the checkpoint hooks (the EMA's swap into
    `state_dict`) and still choose what is written.
    """

    @override
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if filepath == self.last_model_path:
            super()._save_checkpoint(trainer, filepath)
            return
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.save_checkpoint(lean(checkpoint), filepath)
        trainer.strategy.barrier("LeanModelCheckpoint._save_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

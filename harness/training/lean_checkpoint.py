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
resumable. A lean top-k file is not resumable: `LEAN_KEY` marks it, and
`harness.training.run_dir.check_resume` refuses it in one line naming ``last.ckpt``.
When the best epoch is the newest, its file is a hard link to ``last.ckpt`` (one copy on
disk, whole) until a later epoch replaces ``last.ckpt``; then it is rewritten lean.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor
from typing_extensions import override

from harness.core.temperature import CHECKPOINT_KEY as TEMPERATURE_KEY
from harness.training.checkpoint_io import temporary_path

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
    """`ModelCheckpoint` whose top-k files are `lean`; ``last.ckpt`` is whole, and shared when newest.

    A top-k file saved at the step ``last.ckpt`` is saved (the common case: the best epoch
    is the newest) is written whole once and ``last.ckpt`` becomes a hard link to it, so
    the two names hold one copy of the weights. Before a later step replaces ``last.ckpt``
    (a rename, which leaves the old inode under the top-k name), every whole top-k file is
    rewritten `lean` from its own contents. Without ``save_last`` every top-k file is lean.

    A score equal to the k-th best counts as better: the newer of two equal epochs is kept
    (it trained longer, and as the newest it costs no disk beside ``last.ckpt``; the default
    run's last two epochs often tie at the top).

    Lightning 2.6.6 writes ``last.ckpt`` only at a step that saved a top-k file, so an
    epoch outside the top k left ``last.ckpt`` (what resume reads) at an older epoch; here
    it is written at every checkpointing step.

    Built on ``ModelCheckpoint._save_checkpoint`` and ``Trainer._checkpoint_connector``
    (Lightning 2.6): the only way to run the checkpoint hooks (the EMA's swap into
    `state_dict`) and still choose what is written.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._whole_step: int | None = None  # the step the newest whole top-k file was written at
        self._known_lean: set[str] = set()
        self._unshared_step: int | None = None
        self._last_step: int | None = None

    @property
    def last_step(self) -> int | None:
        """The step the whole ``last.ckpt`` was last written at (None: not yet, or no ``save_last``)."""
        return self._last_step

    @override
    def check_monitor_top_k(self, trainer: L.Trainer, current: Tensor | None = None) -> bool:
        if current is None or self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return super().check_monitor_top_k(trainer, current)
        better = {"min": torch.le, "max": torch.ge}[self.mode]
        decision = bool(better(current, self.best_k_models[self.kth_best_model_path]))
        return trainer.strategy.reduce_boolean_decision(decision)

    @override
    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.save_last and self._last_step != trainer.global_step:
            self._save_last_checkpoint(trainer, monitor_candidates)

    @override
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        step = trainer.global_step
        if self._unshared_step != step:
            self._unshared_step = step
            self._make_lean(trainer, keep=filepath)
        if filepath == self.last_model_path:
            if self._last_step == step:
                return  # Lightning's own call after `_save_topk_checkpoint` wrote it
            self._last_step = step
            if self._whole_step == step and self._last_checkpoint_saved in self.best_k_models:
                self._hard_link(trainer, self._last_checkpoint_saved, filepath)
            else:
                super()._save_checkpoint(trainer, filepath)
            return
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        if self.save_last:
            trainer.strategy.save_checkpoint(checkpoint, filepath)
            self._whole_step = step
            self._known_lean.discard(filepath)
        else:
            trainer.strategy.save_checkpoint(lean(checkpoint), filepath)
            self._known_lean.add(filepath)
        trainer.strategy.barrier("LeanModelCheckpoint._save_checkpoint")
        self._last_global_step_saved = step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _make_lean(self, trainer: L.Trainer, keep: str) -> None:
        """Rewrite every whole top-k file but `keep` lean (a resumed run's too: each is read once)."""
        if trainer.is_global_zero:
            for path in list(self.best_k_models):
                if path == keep or path in self._known_lean or not Path(path).is_file():
                    continue
                whole = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                if not whole.get(LEAN_KEY):
                    trainer.strategy.save_checkpoint(lean(whole), path)
                self._known_lean.add(path)
        trainer.strategy.barrier("LeanModelCheckpoint._make_lean")

    def _hard_link(self, trainer: L.Trainer, source: str, target: str) -> None:
        """Make `target` a second name of `source`, replacing any earlier file in one rename."""
        if trainer.is_global_zero:
            staged = temporary_path(Path(target))
            staged.unlink(missing_ok=True)
            try:
                os.link(source, staged)
            except OSError:  # a file system without hard links: a copy, as Lightning's own link falls back to
                shutil.copyfile(source, staged)
            staged.replace(target)
        trainer.strategy.barrier("LeanModelCheckpoint._hard_link")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = target
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

"""RunContext: the shared state of one run, as typed slots that subscribers read.

`BusCallback` fills it (model, sampler, progress, rank) before publishing events; a test
builds one with `harness.testing.make_context`. Subscribers keep their own mutable state
themselves; nothing here is a free-form dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import torch
from torch import nn
from torch.utils.data import Sampler

from harness.background import BackgroundWriter

__all__ = ["DatasetInfo", "Preprocessing", "RunContext", "WeightsInModel"]

WeightsInModel = Literal["training", "averaged"]


@attrs.frozen(kw_only=True)
class Preprocessing:
    """What the model expects of an input image, recorded beside every exported model."""

    image_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"


@attrs.frozen(kw_only=True)
class DatasetInfo:
    """The samples of a run: `(path, class index)` pairs for each split, and what was skipped."""

    root: Path
    train: tuple[tuple[Path, int], ...]
    val: tuple[tuple[Path, int], ...]
    skipped: tuple[Path, ...] = ()

    @property
    def train_targets(self) -> list[int]:
        return [target for _, target in self.train]

    @property
    def val_targets(self) -> list[int]:
        return [target for _, target in self.val]


@attrs.define(kw_only=True, eq=False)
class RunContext:
    """Where a run writes, what it trains, and how far it got.

    `weights` says which weights `model` holds right now: ``"training"`` (the optimiser's)
    or ``"averaged"`` (installed by the EMA for validation and, after `TrainLoopEnd`, for
    good). `best_checkpoint` and `best_score` follow Lightning's checkpointing.
    `artifacts` maps an artifact's name to its path relative to `run_dir`; it becomes the
    ``artifacts`` map of ``summary.json``. `background` is the run's `BackgroundWriter`,
    which draws and writes pictures off the training thread; None (tests, replays) means
    subscribers write inline (`harness.background.run_or_submit`).
    """

    run_dir: Path
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))
    epoch: int = 0
    global_step: int = 0
    max_epochs: int = 1
    rank: int = 0
    world_size: int = 1
    model: nn.Module | None = None
    train_sampler: Sampler[int] | None = None
    data: DatasetInfo | None = None
    monitor: str = "val/acc_top1"
    monitor_mode: Literal["max", "min"] = "max"
    best_checkpoint: Path | None = None
    best_score: float | None = None
    weights: WeightsInModel = "training"
    artifacts: dict[str, str] = attrs.Factory(dict)
    background: BackgroundWriter | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    def record_artifact(self, name: str, path: Path) -> None:
        """List `path` in the run summary under `name` (stored relative to `run_dir`)."""
        try:
            self.artifacts[name] = str(path.resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            self.artifacts[name] = str(path)

    def require_model(self) -> nn.Module:
        """The model, or a clear error when a subscriber runs before `FitStart` filled it."""
        if self.model is None:
            raise RuntimeError("RunContext.model is not set yet: it is filled before FitStart")
        return self.model

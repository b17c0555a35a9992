"""RunContext: what a run is (fixed when it starts) and how far it got, as typed slots.

`BusCallback`, the Lightning adapter, fills and updates it before publishing each event;
a test builds one with `harness.core.testing.make_context`. Subscribers read it and keep
their own mutable state themselves; nothing here is a free-form dict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import attrs
import torch
from torch import nn
from torch.utils.data import Sampler

from harness.core.layout import RunLayout
from harness.core.preprocessing import Preprocessing
from harness.core.temperature import Temperature
from harness.core.tracking import Trackers

__all__ = [
    "DatasetInfo",
    "Job",
    "JobRunner",
    "LeftOutClass",
    "Record",
    "RunContext",
    "Samples",
    "StopAt",
    "StopRequest",
    "ValidatedWeights",
    "Verbosity",
]

Record = Callable[[str, Path], None]
"""Lists a written file in the run summary: ``record(name, path)`` (`RunContext.record_artifact`)."""

Verbosity = Literal["quiet", "normal", "verbose"]
"""How much a run prints: nothing but warnings, tables at start and a line per epoch, or everything."""

Job = Callable[[Record], object]
"""Draws and writes files, naming each to `record`. It may run in another process: a
module-level function, or a `functools.partial` of one, whose arguments pickle (numbers,
strings, paths, numpy arrays, CPU tensors, and lists and dicts of those)."""


StopAt = Literal["step", "epoch"]
"""Where a requested stop takes effect: after the current training step, or at the end of the epoch."""


@attrs.frozen(kw_only=True)
class StopRequest:
    """A subscriber's request to end the run early (`RunContext.request_stop`)."""

    reason: str
    at: StopAt
    epoch: int
    """The epoch and step when it was asked for."""
    global_step: int


Samples = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]
"""``samples(n, seed)``: `n` training images as the model gets them (augmented, normalised,
N x 3 x H x W) and their class indices; seeded, and leaves training's random numbers alone."""


class JobRunner(Protocol):
    """Runs slow writing (pictures) off the training thread: `harness.io.background.BackgroundWriter`."""

    def submit(self, owner: str, job: Job, *, record: Record, step: int = -1) -> None: ...


@attrs.frozen(kw_only=True)
class LeftOutClass:
    """A class folder of ``val/`` or ``test/`` that ``train/`` lacks, left out with its images."""

    split: str
    """``"val"`` or ``"test"``."""
    name: str
    images: int


@attrs.frozen(kw_only=True)
class DatasetInfo:
    """The samples of a run: `(path, class index)` pairs for each split, and what was skipped.

    `test` is a tree's own `test/` split: kept for evaluation, never trained or validated on.
    `skipped` are unreadable files left out, `left_out` the class folders that ``train/``
    lacks (``[data].unknown_classes = "skip"``). `stream` is the location of a streamed data
    set (`harness.io.stream`) the samples come from; their paths are then its keys.
    A sample's path is a `str`, as in torchvision's `ImageFolder`: on a tree of 100,000
    files, making a `Path` of each costs more than listing the tree.
    """

    root: Path
    train: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...] = ()
    skipped: tuple[Path, ...] = ()
    left_out: tuple[LeftOutClass, ...] = ()
    stream: str | None = None

    @property
    def train_targets(self) -> list[int]:
        return [target for _, target in self.train]

    @property
    def val_targets(self) -> list[int]:
        return [target for _, target in self.val]


@attrs.frozen(kw_only=True)
class ValidatedWeights:
    """The two sets of weights scored at the last validation, and the one kept.

    Written by the owner of alternative weights (the EMA): its average and the training
    weights it averages were both validated; `kept` is the better by top-1 (the average
    on a tie), the one checkpoints hold and the export gets.
    """

    epoch: int
    kept: Literal["average", "training"]
    average_top1: float
    training_top1: float


@attrs.define(kw_only=True, eq=False)
class RunContext:
    """Where a run writes, what it trains, and how far it got.

    Fixed for the run (assigning raises `attrs.exceptions.FrozenAttributeError`):
    `run_dir`, `class_names`, `preprocessing`, `data`, `monitor`, `monitor_mode`,
    `background`, `augmented_samples`, `trackers`, `verbosity`, `flips_change_class`
    (whether a mirrored image may be another class: the run trains without flips; None
    when unknown). Filled by the adapter
    once Lightning has placed the run: `device`,
    `rank`, `world_size`, `model`, `train_sampler`. Progress, updated by the adapter
    before each event: `epoch`, `global_step`, `max_epochs`, `best_checkpoint`,
    `best_score`; `stop_request`, set by `request_stop`. `validated_weights` says which
    weights the last validation kept, when a subscriber validates two sets (the EMA).
    `temperature` is the temperature fitted on the latest validation's logits (the
    `temperature` subscriber sets it; `BusCallback` keeps it in each checkpoint, the ONNX
    export in the model). `artifacts` maps an artifact's name to its path relative to
    `run_dir` (``summary.json``'s ``artifacts``); add to it with `record_artifact`.

    `background` runs slow writing off the training thread; without one (tests,
    replays) `submit` runs a job at once, so one unit test covers both. `trackers`
    takes pictures and files for the run's experiment trackers (None when there are none).
    `verbosity` says what a subscriber prints in the terminal.

    `training_state_released` is set by the adapter before `TrainLoopEnd` when training is
    over and its final state is on disk whole (or no checkpoint is kept): no checkpoint is
    written after that, so what a subscriber holds only for checkpoints may go (the EMA's
    training weights), and the optimizer's state is gone already.
    """

    run_dir: Path = attrs.field(on_setattr=attrs.setters.frozen)
    class_names: tuple[str, ...] = attrs.field(on_setattr=attrs.setters.frozen)
    preprocessing: Preprocessing = attrs.field(on_setattr=attrs.setters.frozen)
    data: DatasetInfo | None = attrs.field(default=None, on_setattr=attrs.setters.frozen)
    monitor: str = attrs.field(default="val/acc_top1", on_setattr=attrs.setters.frozen)
    monitor_mode: Literal["max", "min"] = attrs.field(default="max", on_setattr=attrs.setters.frozen)
    background: JobRunner | None = attrs.field(default=None, on_setattr=attrs.setters.frozen)
    augmented_samples: Samples | None = attrs.field(default=None, on_setattr=attrs.setters.frozen)
    trackers: Trackers | None = attrs.field(default=None, on_setattr=attrs.setters.frozen)
    verbosity: Verbosity = attrs.field(default="normal", on_setattr=attrs.setters.frozen)
    flips_change_class: bool | None = attrs.field(default=None, on_setattr=attrs.setters.frozen)
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    model: nn.Module | None = None
    train_sampler: Sampler[int] | None = None
    epoch: int = 0
    global_step: int = 0
    max_epochs: int = 1
    best_checkpoint: Path | None = None
    best_score: float | None = None
    validated_weights: ValidatedWeights | None = None
    temperature: Temperature | None = None
    artifacts: dict[str, str] = attrs.Factory(dict)
    stop_request: StopRequest | None = None
    training_state_released: bool = False

    @property
    def layout(self) -> RunLayout:
        """The paths of `run_dir`; a subscriber writes under ``layout.folder(<its table name>)``."""
        return RunLayout(self.run_dir)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    def record_artifact(self, name: str, path: Path) -> None:
        """List `path` in the run summary under `name` (stored relative to `run_dir`)."""
        self.artifacts[name] = self.layout.relative(path)

    def submit(self, owner: str, job: Job, *, step: int = -1, record: Record | None = None) -> None:
        """Run `job` on the background runner, or here and now without one.

        What the job names is handed, in this process once it is done, to `record`
        (default: `record_artifact`). Inline, an exception propagates to the caller, as
        any handler's would; in the background it is reported in the run summary under
        `owner` (the submitter's table name, ``SPEC.name``) and `step`.
        """
        record = record or self.record_artifact
        if self.background is None:
            job(record)
        else:
            self.background.submit(owner, job, record=record, step=step)

    def request_stop(self, reason: str, *, at: StopAt = "epoch") -> None:
        """End the run early, as "stopped" (neither failed nor interrupted), for `reason`.

        ``at="step"``: after the current training step; ``at="epoch"``: when the current
        epoch ends. Either way the run validates once more (unless it just did), saves its
        checkpoints, publishes `TrainEnd` (so the ONNX export and the test split's score
        happen) and writes ``summary.json`` with status "stopped", this reason, and no
        resume command: nothing is left to resume. The first request's reason is kept; a
        later ``"step"`` request brings an ``"epoch"`` one forward. Under DDP a request on
        any process stops every process at the same point.
        """
        if not reason.strip():
            raise ValueError("RunContext.request_stop: give a reason, for summary.json and the terminal")
        current = self.stop_request
        if current is None:
            self.stop_request = StopRequest(
                reason=reason, at=at, epoch=self.epoch, global_step=self.global_step
            )
        elif at == "step" and current.at == "epoch":
            self.stop_request = attrs.evolve(current, at="step")

    def require_model(self) -> nn.Module:
        """The model, or a clear error when a subscriber runs before `FitStart` filled it."""
        if self.model is None:
            raise RuntimeError("RunContext.model is not set yet: it is filled before FitStart")
        return self.model

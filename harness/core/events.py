"""The event catalogue: every event a run publishes, in firing order.

Each event is a frozen, slotted, keyword-only attrs class with a narrow payload.
Tensors in a payload are detached. This module is the table of contents of a run;
`BusCallback` (the only Lightning-aware module) publishes these from Lightning hooks::

    FitStart                                  on_fit_start (after a resume is restored)
    if sanity checking:                       Lightning's short validation before training
        ValidationSwapIn(sanity_check=True)
        BatchEnd(stage="validate", sanity_check=True)   per batch
        ValidationEpochEnd(sanity_check=True)
        ValidationSwapOut(sanity_check=True)
    for epoch in epochs:
        TrainEpochStart
        for batch in train batches:
            forward, backward, optimizer step (every `accumulate` batches)
            BatchEnd(stage="train", optimizer_stepped=...)
        if validating this epoch:
            ValidationSwapIn                  weight owners (EMA) install evaluated weights
            BatchEnd(stage="validate")        per batch, logits already computed
            ValidationEpochEnd(metrics)       everyone observes the evaluated weights
            ValidationSwapOut                 weight owners restore the training weights
        TrainEpochEnd(metrics)                drawing subscribers hand the epoch's pictures to the writer
        EpochJobsQueued                       collectors (report page, trackers) queue their jobs
        CheckpointSaving(model_state)         per checkpoint written (once for a best file and last.ckpt)
    (optimizer state freed once last.ckpt holds it: RunContext.training_state_released)
    TrainLoopEnd                              weight owners install the final validated weights
    TrainEnd                                  consumers (ONNX export, reports) read them
    FitEnd

    on any exception in the run:
        RunFailed(error, interrupted)         then the exception propagates

    RunEnd(status)                            always last, once summary.json is written

Evaluating a checkpoint (``harness.evaluate``, or a run's ``test/`` split) is Lightning's
``trainer.test`` with the same adapter, weights already loaded (no swap)::

    TestStart                                 on_test_start; `RunContext.model` is filled
    BatchEnd(stage="test")                    per batch, logits already computed
    TestEpochEnd(metrics)                     the ``test/...`` metrics; pictures are drawn

Metrics (``metrics`` of `ValidationEpochEnd`, `TrainEpochEnd`, `TrainEnd`, `TestEpochEnd`)
are what was measured, under stable names, never Lightning's raw keys: ``train/<name>``
is the epoch's mean of a training metric (``train/loss``), ``val/<name>`` and
``test/<name>`` the pass's value (``val/acc_top1``, ``val/loss``), ``lr`` the learning
rate the epoch started with (``lr/<i>`` for parameter group `i` > 0). A `TrainEpochEnd`
holds validation values only when that epoch validated (`TrainEpochEnd.validated`).

The split of `ValidationSwapIn` / `ValidationEpochEnd` and `TrainLoopEnd` / `TrainEnd`
exists so that no subscriber depends on dispatch order: whoever changes the weights does
it in the first event, whoever reads them does it in the second.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Literal

import attrs
import torch

from harness.core.summary import RunStatus

__all__ = [
    "BatchEnd",
    "CheckpointSaving",
    "Event",
    "FitEnd",
    "FitStart",
    "RunEnd",
    "RunFailed",
    "Stage",
    "TrainEnd",
    "TrainEpochEnd",
    "EpochJobsQueued",
    "TrainEpochStart",
    "TestEpochEnd",
    "TestStart",
    "TrainLoopEnd",
    "ValidationEpochEnd",
    "ValidationSwapIn",
    "ValidationSwapOut",
    "EVENT_TYPES",
]

Stage = Literal["train", "validate", "test"]


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event: where the run stood when it fired."""

    epoch: int
    global_step: int


@attrs.frozen(kw_only=True)
class FitStart(Event):
    """Training is about to start; `RunContext` is filled (model, sampler, classes).

    `total_steps` is the optimizer steps the whole run will have taken at `max_epochs`, as
    the Trainer estimates them (0 when unknown).
    """

    max_epochs: int
    resumed: bool = False
    total_steps: int = 0


@attrs.frozen(kw_only=True)
class TrainEpochStart(Event):
    """A training epoch begins."""


@attrs.frozen(kw_only=True)
class BatchEnd(Event):
    """A batch went through the model: everything a subscriber needs, computed once.

    `logits` are the model's outputs for `inputs`; a subscriber never runs the model
    again. `targets` are always class indices. On a training batch that MixUp or CutMix
    mixed, `inputs` are the mixed images the model saw, `logits` its outputs for them, and
    `targets` the class with the largest share of each mixed image (the loss used the
    mixed label distribution, which is not in the event); accuracy and the confusion
    matrix only read validation batches, which are never mixed. For training batches
    `optimizer_stepped` says whether this batch ended with an
    optimizer step (false between steps of gradient accumulation); `global_step` counts
    optimizer steps taken so far.
    """

    stage: Stage
    batch_idx: int
    inputs: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    optimizer_stepped: bool = False
    sanity_check: bool = False


@attrs.frozen(kw_only=True)
class ValidationSwapIn(Event):
    """Validation is about to run: owners of alternative weights install them now."""

    sanity_check: bool = False


@attrs.frozen(kw_only=True)
class ValidationEpochEnd(Event):
    """Validation finished with the weights installed at `ValidationSwapIn`."""

    metrics: Mapping[str, float]
    sanity_check: bool = False


@attrs.frozen(kw_only=True)
class ValidationSwapOut(Event):
    """Validation is over: owners of alternative weights restore the training weights."""

    sanity_check: bool = False


@attrs.frozen(kw_only=True)
class TrainEpochEnd(Event):
    """A training epoch ended; `metrics` holds what it measured (validation values if it validated).

    `validated` says whether the epoch ran a validation: only then does `metrics` hold
    ``val/...`` values, this epoch's (an epoch without one has none, never stale ones).
    """

    metrics: Mapping[str, float]
    validated: bool = False


@attrs.frozen(kw_only=True)
class EpochJobsQueued(Event):
    """Every subscriber has handled `TrainEpochEnd`: the epoch's background jobs are all queued.

    Published right after `TrainEpochEnd`, whatever order the subscribers were attached in
    (plugins come after the built-ins). The background writer runs jobs in submission
    order, so a job submitted here runs after every picture of the epoch, a plugin's
    included: whoever collects the epoch's pictures (the report page, the trackers)
    submits its job on this event.
    """


@attrs.frozen(kw_only=True)
class CheckpointSaving(Event):
    """A checkpoint is being written.

    `model_state` is the checkpoint's own `state_dict`, the weights a user gets when
    loading the checkpoint for inference. A subscriber may replace its tensors (the EMA
    puts the validated, averaged weights there); subscriber state is saved separately.
    """

    model_state: MutableMapping[str, torch.Tensor]


@attrs.frozen(kw_only=True)
class TrainLoopEnd(Event):
    """The training loop is over: owners of weights install the final validated weights."""


@attrs.frozen(kw_only=True)
class TrainEnd(Event):
    """Training ended normally; the model holds the final validated weights.

    `metrics` are the last values measured: the last epoch's training metrics and rates,
    and the last validation's (the final weights' scores).
    """

    metrics: Mapping[str, float]


@attrs.frozen(kw_only=True)
class FitEnd(Event):
    """The fit is over, after `TrainEnd`; the last event of a successful run."""


@attrs.frozen(kw_only=True)
class TestStart(Event):
    """Evaluation of loaded weights on a labelled set is about to start; the model is in the context."""


@attrs.frozen(kw_only=True)
class TestEpochEnd(Event):
    """Evaluation went through every test batch; `metrics` holds the ``test/...`` metrics."""

    metrics: Mapping[str, float]


@attrs.frozen(kw_only=True)
class RunFailed(Event):
    """The run raised; published before the exception propagates."""

    error: str
    interrupted: bool = False


@attrs.frozen(kw_only=True)
class RunEnd(Event):
    """The run is over, whatever its end, and ``summary.json`` is written: the very last event.

    Published by the run itself (not a Lightning hook) on rank zero, after the background
    writer has finished: ``run_dir/summary.json`` holds the run's outcome.
    """

    status: RunStatus
    """How the run ended, as ``summary.json`` says (`harness.core.summary.RunStatus`)."""


EVENT_TYPES: tuple[type[Event], ...] = (
    FitStart,
    TrainEpochStart,
    BatchEnd,
    ValidationSwapIn,
    ValidationEpochEnd,
    ValidationSwapOut,
    TrainEpochEnd,
    EpochJobsQueued,
    CheckpointSaving,
    TrainLoopEnd,
    TrainEnd,
    FitEnd,
    TestStart,
    TestEpochEnd,
    RunFailed,
    RunEnd,
)

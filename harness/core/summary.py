"""The run's record: `RunSummary`, what ``summary.json`` holds, as one typed object.

`harness.summary.schema.json` (shipped with the package) is its contract; a test checks a
real run's summary against it. The run writes it once, at its end, whatever the end
(``harness.training.fit``); `RunStatus` is the status it records and that `RunEnd` carries:

- ``completed``: every epoch ran;
- ``stopped``: a subscriber asked the run to stop (`RunContext.request_stop`; its reason,
  and where, in ``stop``); the run ended after the current step or epoch, exported, and
  needs no resume;
- ``pruned``: a sweep stopped this trial early because it was not promising;
- ``interrupted``: Ctrl-C or SIGTERM; ``resume`` holds the command that continues it;
- ``diverged``: a non-finite training loss (see ``error``);
- ``failed``: an exception ended it (see ``error`` and ``failures``).

`Failure` is the one record of a subscriber's failure, on an event or in a background job.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from harness.core.context import LeftOutClass, StopRequest, ValidatedWeights
from harness.core.recipe import Recipe

__all__ = ["BACKGROUND", "Acceleration", "Attempt", "Failure", "RunStatus", "RunSummary", "TestScore"]

RunStatus = Literal["completed", "stopped", "pruned", "interrupted", "diverged", "failed"]
"""How a run ended (see the module docstring); the summary's ``status`` and `RunEnd.status`."""

BACKGROUND = "background"
"""`Failure.event` of a job that failed on the background writer."""


@attrs.frozen(kw_only=True)
class Failure:
    """A subscriber that raised: on an event (then disconnected, or the run stopped) or in a job.

    `subscriber` is its table name (``[subscribers.<name>]``, the key of its ``on_error``);
    `event` the event it was handling, or `BACKGROUND`; `step` the optimizer step then
    (-1 when not known); `error` ``ExceptionType: message``; `traceback` Python's.
    """

    subscriber: str
    event: str
    step: int
    error: str
    traceback: str


@attrs.frozen(kw_only=True)
class TestScore:
    """The run's ``test/`` split scored at its end, or why it was not (`error`)."""

    folder: str
    error: str | None = None
    directory: str | None = None
    source: Mapping[str, str] | None = None
    images: int | None = None
    top1: float | None = None
    balanced_accuracy: float | None = None
    macro_f1: float | None = None
    ece: float | None = None
    left_out: Mapping[str, int] | None = None


@attrs.frozen(kw_only=True)
class Acceleration:
    """What the run asked of its device, resolved (`harness.training.acceleration`)."""

    device: str
    precision: str
    channels_last: bool
    compile: bool

    def describe(self) -> str:
        """One line for the terminal: ``device cuda: precision bf16-mixed, channels-last on, compile off``."""
        onoff = {True: "on", False: "off"}
        return (
            f"device {self.device}: precision {self.precision}, channels-last "
            f"{onoff[self.channels_last]}, compile {onoff[self.compile]}"
        )


Attempt = Mapping[str, object]
"""An earlier attempt's summary as that attempt wrote it (any version), plus its ``record`` folder."""


@attrs.frozen(kw_only=True)
class RunSummary:
    """What a run left, as ``summary.json`` holds it (field by field, the schema's order)."""

    status: RunStatus
    stop: StopRequest | None
    run_dir: Path
    monitor: str
    best_score: float | None
    best_checkpoint: str | None
    epochs_completed: int
    global_step: int
    final_metrics: Mapping[str, float]
    artifacts: Mapping[str, str]
    failures: tuple[Failure, ...]
    skipped_images: tuple[str, ...]
    left_out_classes: tuple[LeftOutClass, ...]
    duration_s: float
    world_size: int
    num_nodes: int
    resume: str | None
    error: str | None
    attempts: tuple[Attempt, ...]
    test: TestScore | None
    acceleration: Acceleration
    recipe: Recipe | None = None
    validated_weights: ValidatedWeights | None = None
    quantization: Mapping[str, Any] | None = None
    """The accuracy gate of each quantized model, by kind, as ``onnx_export/parity.json`` keeps it."""
    temperature: Mapping[str, Any] | None = None
    """The temperature exported with the model (`harness.core.temperature.Temperature.to_json`)."""

    def to_json(self) -> dict[str, object]:
        """The document of ``summary.json``: every field in order; a test score without its empty fields."""
        document = attrs.asdict(self, recurse=False)
        document.update(
            stop=None if self.stop is None else attrs.asdict(self.stop),
            run_dir=str(self.run_dir),
            final_metrics=dict(self.final_metrics),
            artifacts=dict(sorted(self.artifacts.items())),
            failures=[attrs.asdict(failure) for failure in self.failures],
            skipped_images=list(self.skipped_images),
            left_out_classes=[attrs.asdict(left) for left in self.left_out_classes],
            attempts=[dict(attempt) for attempt in self.attempts],
            test=None
            if self.test is None
            else {k: v for k, v in attrs.asdict(self.test).items() if v is not None},
            acceleration=attrs.asdict(self.acceleration),
            recipe=None if self.recipe is None else attrs.asdict(self.recipe),
            validated_weights=None
            if self.validated_weights is None
            else attrs.asdict(self.validated_weights),
        )
        return document

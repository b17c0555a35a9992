"""Pictures, settings and summary to the run's trackers; consumes FitStart, EpochJobsQueued, RunEnd.

It publishes nothing, and knows no tracker: it hands files to `RunContext.trackers`
(`harness.core.tracking.Trackers`; Lightning's TensorBoard and MLflow loggers, see
``[logger].kinds``), and does nothing when the run has none. Scalars reach the trackers
through Lightning already. On rank zero:

- at fit start, the resolved settings (``settings.toml``) as the run's parameters, flat
  (``model.lr``), and the file itself;
- after every epoch, each current picture of the run directory (history plots,
  ``confusion_matrix/latest.png``, ``samples/latest.png``, sampler shares, any other a
  subscriber draws, such as an augmentation preview) as an image named by its path
  (``confusion_matrix/latest``) at the epoch's last step, when it changed since it was
  last logged. The pictures are looked for on the background writer by a job submitted at
  `EpochJobsQueued`, so after every drawing job of the epoch, a plugin's included, and
  logged here when that job is done;
- when the run ends, the pictures once more and ``summary.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from harness.core.bus import Bus
from harness.core.context import Record, RunContext
from harness.core.events import EpochJobsQueued, FitStart, RunEnd
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.core.tracking import Param, Trackers
from harness.io.report_page import current_pictures

__all__ = ["SPEC", "TrackerFiles", "TrackerFilesSettings"]

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class TrackerFilesSettings(SubscriberSettings):
    """The run's pictures, settings and summary to the TensorBoard / MLflow trackers of `[logger].kinds`."""

    on_error: OnError = on_error_option("isolate")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Param]:
    """A nested table as dotted keys; lists become their JSON text."""
    flat: dict[str, Param] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (str, int, float, bool)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _find_pictures(run_dir: Path, record: Record) -> None:
    # The record runs later, on the writer's reply thread: `current_pictures` hands over
    # files that the next epoch does not rewrite.
    for name, path in current_pictures(run_dir).items():
        record(name, path)


class TrackerFiles:
    """Logs what the run directory holds to `RunContext.trackers`, each picture once per change."""

    def __init__(self, context: RunContext, settings: TrackerFilesSettings | None = None) -> None:
        self.context = context
        self.settings = settings or TrackerFilesSettings()
        self.logged: dict[str, tuple[int, int]] = {}
        """By picture name: the modification time of the file last logged, and its step."""

    def connect(self, bus: Bus) -> None:
        bus.subscribe(FitStart, self.on_fit_start, rank_zero_only=True)
        bus.subscribe(EpochJobsQueued, self.on_epoch_jobs_queued, rank_zero_only=True)
        bus.subscribe(RunEnd, self.on_run_end, rank_zero_only=True)

    def on_fit_start(self, event: FitStart) -> None:
        trackers = self.context.trackers
        settings = self.context.layout.settings
        if trackers is None or not settings.is_file():
            return
        trackers.log_params(flatten(tomllib.loads(settings.read_text(encoding="utf-8"))))
        trackers.log_artifact(settings)

    def on_epoch_jobs_queued(self, event: EpochJobsQueued) -> None:
        if self.context.trackers is None:
            return
        record = functools.partial(self._log_picture, step=event.global_step)
        self.context.submit(SPEC.name, functools.partial(_find_pictures, self.context.run_dir), record=record)

    def on_run_end(self, event: RunEnd) -> None:
        trackers = self.context.trackers
        if trackers is None:
            return
        for name, path in current_pictures(self.context.run_dir).items():
            self._log_picture(name, path, step=event.global_step)
        summary = self.context.layout.summary
        if summary.is_file():
            trackers.log_artifact(summary)

    def _log_picture(self, name: str, path: Path, *, step: int) -> None:
        trackers: Trackers | None = self.context.trackers
        try:
            changed = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        last = self.logged.get(name)
        if trackers is None or (last is not None and last[0] == changed and last[1] >= step):
            return
        self.logged[name] = (changed, step)
        trackers.log_image(name, path, step)


SPEC = SubscriberSpec(name="trackers", build=TrackerFiles, settings=TrackerFilesSettings)

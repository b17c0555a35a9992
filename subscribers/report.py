"""The run's HTML page, kept current; consumes FitStart, TrainEpochEnd, EpochJobsQueued, RunFailed, RunEnd.

It publishes nothing. ``run_dir/report.html`` (`harness.io.report_page`) is written at
fit start, again at every epoch end (on the run's background writer, submitted at
`EpochJobsQueued`, so after every picture of the epoch, a plugin's included, whatever
the attach order; training goes on meanwhile) while the run is going (the page reloads
itself), with the dashboard's `Headline` kept here (the best score so far and its epoch,
the epochs done, the time since fit start, the latest metrics), and a last time when the
run ends, completed, failed or interrupted, showing that status and the failure, its
facts read from ``summary.json`` (the best epoch from ``events.jsonl``).
``python -m harness.report`` is not needed after a run.
"""

from __future__ import annotations

import functools
import math
import time

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import EpochJobsQueued, FitStart, RunEnd, RunFailed, TrainEpochEnd
from harness.core.options import option
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.io.report_page import Headline, write_report
from subscribers._report_page import write_page

__all__ = ["SPEC", "Report", "ReportSettings"]


@attrs.frozen(kw_only=True)
class ReportSettings(SubscriberSettings):
    """The run's HTML page, `report.html`, refreshed every epoch and written when the run ends."""

    on_error: OnError = on_error_option("isolate")

    embed: bool = option(False, "put the pictures in the page (base64), for a page that travels alone")


class Report:
    """Writes ``report.html`` on rank zero: running at each epoch end, the outcome at the end."""

    def __init__(self, context: RunContext, settings: ReportSettings | None = None) -> None:
        self.context = context
        self.settings = settings or ReportSettings()
        self.error: str | None = None
        self.best: tuple[float, int] | None = None
        self.metrics: dict[str, float] = {}
        self.epochs_done = 0
        self._started = time.monotonic()

    def connect(self, bus: Bus) -> None:
        bus.subscribe(FitStart, self.on_fit_start, rank_zero_only=True)
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end, rank_zero_only=True)
        bus.subscribe(EpochJobsQueued, self.on_epoch_jobs_queued, rank_zero_only=True)
        bus.subscribe(RunFailed, self.on_run_failed, rank_zero_only=True)
        bus.subscribe(RunEnd, self.on_run_end, rank_zero_only=True)

    def on_fit_start(self, event: FitStart) -> None:
        # Listed now: the summary is written before the last page is.
        self.context.record_artifact("report", self.context.layout.report)
        self._started = time.monotonic()
        self._submit("running: starting", event.global_step)

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        self.epochs_done = event.epoch + 1
        self.metrics = {**self.metrics, **event.metrics}
        score = event.metrics.get(self.context.monitor)
        if score is not None and math.isfinite(score):
            maximise = self.context.monitor_mode == "max"
            if self.best is None or (score > self.best[0] if maximise else score < self.best[0]):
                self.best = (float(score), event.epoch)

    def on_epoch_jobs_queued(self, event: EpochJobsQueued) -> None:
        self._submit(f"running: epoch {event.epoch + 1} of {self.context.max_epochs} done", event.global_step)

    def headline(self, status: str) -> Headline:
        """The dashboard's facts now, under `status`."""
        return Headline(
            status=status,
            monitor=self.context.monitor,
            best_score=None if self.best is None else self.best[0],
            best_epoch=None if self.best is None else self.best[1],
            epochs_done=self.epochs_done,
            max_epochs=self.context.max_epochs,
            elapsed_s=time.monotonic() - self._started,
            metrics=self.metrics,
        )

    def on_run_failed(self, event: RunFailed) -> None:
        self.error = event.error

    def on_run_end(self, event: RunEnd) -> None:
        # summary.json, written by now, is the record of the whole run (of a resumed one too,
        # whose best may predate this process): the last page's facts come from it.
        write_report(self.context.run_dir, embed=self.settings.embed, status=event.status, error=self.error)

    def _submit(self, status: str, step: int) -> None:
        job = functools.partial(write_page, self.context.run_dir, self.settings.embed, self.headline(status))
        self.context.submit(SPEC.name, job, step=step)


SPEC = SubscriberSpec(name="report", build=Report, settings=ReportSettings, replayable=True)

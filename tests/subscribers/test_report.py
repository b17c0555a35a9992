"""The report subscriber: report.html while the run goes on, and its outcome when it ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.bus import Bus
from harness.core.events import EpochJobsQueued, FitStart, RunEnd, RunFailed, TrainEpochEnd
from harness.core.testing import make_context, scripted_run
from subscribers.plots import Plots
from subscribers.report import Report, ReportSettings


def test_the_page_is_refreshed_each_epoch_and_reloads_while_running(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    bus.attach(Plots(context))
    bus.attach(Report(context))
    pages: list[str] = []
    bus.subscribe(EpochJobsQueued, lambda _: pages.append(context.layout.report.read_text()))
    scripted_run(bus, context, epochs=2)

    # Read after the report's own handler: the page of the epoch that just ended.
    assert "status: running: epoch 1 of 2 done" in pages[0]
    assert "status: running: epoch 2 of 2 done" in pages[1]
    assert 'http-equiv="refresh"' in pages[1]
    assert 'src="plots/losses.png"' in pages[1]
    assert context.artifacts["report"] == context.layout.report.name

    bus.publish(RunEnd(epoch=1, global_step=context.global_step, status="completed"))
    final = context.layout.report.read_text()
    assert '<p class="status completed">status: completed</p>' in final
    assert 'http-equiv="refresh"' not in final, "a finished run's page stays still"


@pytest.mark.parametrize(("status", "interrupted"), [("failed", False), ("interrupted", True)])
def test_a_run_that_stops_shows_its_status_and_its_failure(
    tmp_path: Path, status: str, interrupted: bool
) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    bus.attach(Report(context, ReportSettings(embed=True)))
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=3))
    bus.publish(RunFailed(epoch=0, global_step=2, error="RuntimeError: <boom>", interrupted=interrupted))
    bus.publish(RunEnd(epoch=0, global_step=2, status=status))  # type: ignore[arg-type]

    page = context.layout.report.read_text()
    assert f'<p class="status {status}">status: {status}</p>' in page
    assert "RuntimeError: &lt;boom&gt;" in page


def test_the_dashboard_shows_the_best_score_so_far_and_its_epoch(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    bus.attach(Report(context))
    context.max_epochs = 4  # as the adapter fills it
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=4))
    for epoch, score in enumerate((0.5, 0.8, 0.7)):
        metrics = {"val/acc_top1": score, "val/loss": 1.0 - score, "train/loss": 2.0 - score}
        bus.publish(TrainEpochEnd(epoch=epoch, global_step=epoch, metrics=metrics, validated=True))
        bus.publish(EpochJobsQueued(epoch=epoch, global_step=epoch))

    page = context.layout.report.read_text()
    facts = page[page.index('<dl class="facts">') : page.index("</dl>")]
    assert '<dt>best val/acc_top1</dt><dd class="big">0.8</dd>' in facts
    assert "<dt>at epoch</dt><dd>1</dd>" in facts, "counted from 0, as the pictures beside it"
    assert "<dt>epochs done</dt><dd>3 of 4</dd>" in facts
    assert "<dt>val/loss</dt><dd>0.3</dd>" in facts, "the latest epoch's metrics"
    assert "<dt>time</dt>" in facts

"""The report subscriber: report.html while the run goes on, and its outcome when it ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.bus import Bus
from harness.core.events import EpochJobsQueued, FitStart, RunEnd, RunFailed
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

"""The report subscriber's background job: write ``report.html`` and name it (no torch).

The background writer's worker imports a job's module to unpickle it; this one imports
only the page writer, so that refreshing the page never loads torch in the worker (it
did, from `subscribers.report`: about 2 s of the worker's CPU per run).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.io.report_page import Headline, write_report

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = ["write_page"]


def write_page(run_dir: Path, embed: bool, headline: Headline, record: Record) -> None:
    """The job: the page of `run_dir` with `headline` and its status, recorded as the ``report`` artifact."""
    record("report", write_report(run_dir, embed=embed, headline=headline))

"""RunLayout: every path of a run directory, named in one place.

A run directory (``<output_dir>/<name>/version_<n>/``) holds::

    settings.toml            the resolved settings          RunLayout.settings
    labels.json              the class names                RunLayout.labels
    summary.json             the run's record               RunLayout.summary
    events.jsonl             the event record               RunLayout.events
    report.html              the run's page                 RunLayout.report
    checkpoints/             Lightning's checkpoints        RunLayout.checkpoints
        last.ckpt            refreshed by every save        RunLayout.last_checkpoint
    attempts/<nnn>/          an earlier attempt's record    RunLayout.attempt(n)
    evaluation/<name>/       an evaluation of the run       RunLayout.evaluation(name)
    replay/                  pictures rebuilt by replay     RunLayout.replay
    <table name>/            a subscriber's own files       RunLayout.folder(name)
        table.json           its table for the report page  RunLayout.table(name)
    onnx_export/model.onnx   the exported model             RunLayout.onnx_model

No other module spells one of these names (a test checks it): whoever needs a path of a
run directory asks a `RunLayout` for it. The folder of a subscriber is its table name
(``[subscribers.<name>]``), so the ONNX export's folder is its table's name, `ONNX_EXPORT`.
"""

from __future__ import annotations

from pathlib import Path

import attrs

__all__ = ["MODEL_FILE", "ONNX_EXPORT", "RUN_FILES", "TABLE_FILE", "RunLayout"]

ONNX_EXPORT = "onnx_export"
"""The ONNX export's table name, hence its folder; evaluation and ``harness.export`` look there."""
MODEL_FILE = "model.onnx"
"""The exported model's file name inside an export bundle's folder."""
TABLE_FILE = "table.json"
"""A subscriber's table for the report page, in its folder (`harness.io.tables`)."""

_SETTINGS = "settings.toml"
_LABELS = "labels.json"
_SUMMARY = "summary.json"
_EVENTS = "events.jsonl"
_REPORT = "report.html"
_CHECKPOINTS = "checkpoints"
_LAST = "last.ckpt"
_ATTEMPTS = "attempts"
_EVALUATION = "evaluation"
_REPLAY = "replay"

RUN_FILES: tuple[str, ...] = (
    _SETTINGS,
    _LABELS,
    _SUMMARY,
    _EVENTS,
    _REPORT,
    _CHECKPOINTS,
    _LAST,
    _ATTEMPTS,
    ONNX_EXPORT,
    MODEL_FILE,
    TABLE_FILE,
)
"""Every name the layout owns that no other module may spell (the layout test reads it)."""


@attrs.frozen
class RunLayout:
    """The paths of the run directory `run_dir` (nothing is created or checked)."""

    run_dir: Path

    @property
    def settings(self) -> Path:
        return self.run_dir / _SETTINGS

    @property
    def labels(self) -> Path:
        return self.run_dir / _LABELS

    @property
    def summary(self) -> Path:
        return self.run_dir / _SUMMARY

    @property
    def events(self) -> Path:
        return self.run_dir / _EVENTS

    @property
    def report(self) -> Path:
        return self.run_dir / _REPORT

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / _CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        """The checkpoint every save refreshes and an interrupt writes."""
        return self.checkpoints / _LAST

    @property
    def attempts(self) -> Path:
        return self.run_dir / _ATTEMPTS

    def attempt(self, number: int) -> Path:
        """The folder keeping the record (settings and summary) of attempt `number` (from 1)."""
        return self.attempts / f"{number:03d}"

    def evaluation(self, name: str) -> Path:
        """The folder of the evaluation `name` (``test`` for the run's own test split)."""
        return self.run_dir / _EVALUATION / name

    @property
    def replay(self) -> Path:
        return self.run_dir / _REPLAY

    def folder(self, table: str) -> Path:
        """The folder of the subscriber whose table name is `table`."""
        return self.run_dir / table

    def table(self, table: str) -> Path:
        """The report-page table the subscriber `table` wrote, in its folder."""
        return self.folder(table) / TABLE_FILE

    def tables(self) -> list[Path]:
        """Every subscriber's report-page table, in the order of their table names."""
        return sorted(self.run_dir.glob(f"*/{TABLE_FILE}"))

    @property
    def onnx_export(self) -> Path:
        return self.folder(ONNX_EXPORT)

    @property
    def onnx_model(self) -> Path:
        return self.onnx_export / MODEL_FILE

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunLayout:
        """The layout of a checkpoint's run: the parent of its ``checkpoints/`` folder, else its folder."""
        folder = checkpoint.resolve().parent
        return cls(folder.parent if folder.name == _CHECKPOINTS else folder)

    def is_run_dir(self) -> bool:
        """Whether this is a run directory the harness made (its settings and labels are there)."""
        return self.settings.is_file() and self.labels.is_file()

    def relative(self, path: Path) -> str:
        """`path` relative to the run directory, as the summary lists it (absolute when outside)."""
        try:
            return path.resolve().relative_to(self.run_dir.resolve()).as_posix()
        except ValueError:
            return str(path)

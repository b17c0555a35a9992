"""Tables a subscriber shows on the run's page: a typed record, written in the subscriber's folder.

A subscriber that has figures to show (the data set's classes, the model's size) writes a
`Table` with `write_table`; the report page (`harness.io.report_page`) shows every table
of the run directory with `read_tables`, in the order of their subscribers' table names,
without knowing who wrote them or what their own files hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import attrs

from harness.core.layout import RunLayout
from harness.io.artifacts import write_json

__all__ = ["Cell", "Table", "read_tables", "write_table"]

Cell = str | int | float | bool | None
"""One value of a table: what JSON holds without nesting."""


def _cells(values: Sequence[object]) -> tuple[Cell, ...]:
    return tuple(v if v is None or isinstance(v, (str, int, float, bool)) else str(v) for v in values)


def _facts(values: Sequence[Sequence[object]]) -> tuple[tuple[str, Cell], ...]:
    return tuple((str(pair[0]), _cells([pair[1]])[0]) for pair in values)


def _columns(values: Sequence[object]) -> tuple[str, ...]:
    return tuple(str(value) for value in values)


def _rows(values: Sequence[Sequence[object]]) -> tuple[tuple[Cell, ...], ...]:
    return tuple(_cells(row) for row in values)


@attrs.frozen(kw_only=True)
class Table:
    """A titled section of the report page: facts (name, value), then rows under `columns`."""

    title: str
    facts: tuple[tuple[str, Cell], ...] = attrs.field(default=(), converter=_facts)
    columns: tuple[str, ...] = attrs.field(default=(), converter=_columns)
    rows: tuple[tuple[Cell, ...], ...] = attrs.field(default=(), converter=_rows)


def write_table(layout: RunLayout, table_name: str, table: Table) -> Path:
    """Write `table` as the report-page table of the subscriber `table_name`; return its path."""
    return write_json(layout.table(table_name), attrs.asdict(table))


def read_tables(run_dir: Path) -> list[Table]:
    """Every table of `run_dir`, by subscriber table name; an unreadable one is left out."""
    tables = []
    for path in RunLayout(run_dir).tables():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            tables.append(
                Table(
                    title=str(raw["title"]),
                    facts=raw.get("facts", ()),
                    columns=raw.get("columns", ()),
                    rows=raw.get("rows", ()),
                )
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue
    return tables

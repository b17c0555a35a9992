"""Shared helpers of the report subscribers: rich tables in the terminal, CSV files, number formats.

Cells and titles are printed as plain text, never as rich markup, so a class named
``[cat]`` shows as itself. A console is created per use: no module-level state.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.io.artifacts import write_text

__all__ = ["csv_text", "percent", "print_table", "print_warnings", "write_csv"]


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    caption: str | None = None,
) -> None:
    """Print one table: the first column left-aligned (names), the others right-aligned (numbers)."""
    table = Table(title=Text(title), caption=Text(caption) if caption else None, caption_justify="left")
    for position, column in enumerate(columns):
        table.add_column(Text(column), justify="left" if position == 0 else "right")
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    Console().print(table)


def print_warnings(source: str, warnings: Sequence[str]) -> None:
    """Print each warning on its own line, prefixed with the subscriber that found it."""
    if not warnings:
        return
    console = Console()
    for warning in warnings:
        console.print(Text(f"{source}: warning: {warning}", style="yellow"))


def csv_text(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (header first), quoted where a cell needs it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: Path, header: Sequence[object], rows: Iterable[Sequence[object]]) -> Path:
    """Write a whole CSV file atomically."""
    return write_text(path, csv_text(header, rows))


def percent(share: float) -> str:
    """A share in [0, 1] as a percentage with one decimal: ``0.1234 -> "12.3%"``."""
    return f"{100.0 * share:.1f}%"

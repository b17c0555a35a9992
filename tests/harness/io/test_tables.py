"""Subscribers' tables reach the report page as typed records, whoever wrote them."""

from __future__ import annotations

from pathlib import Path

from harness.core.layout import RunLayout
from harness.io.report_page import render_report
from harness.io.tables import Table, read_tables, write_table


def test_a_table_written_by_any_subscriber_is_on_the_page(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    table = Table(
        title="Per-class recall", facts=[("worst", "cat")], columns=("class", "recall"), rows=[("cat", 0.5)]
    )
    path = write_table(layout, "recall_alarm", table)
    assert path.parent == layout.folder("recall_alarm")
    write_table(layout, "alpha", Table(title="First", facts=[("n", 1)]))
    assert [t.title for t in read_tables(tmp_path)] == ["First", "Per-class recall"]
    assert read_tables(tmp_path)[1] == table
    page = render_report(tmp_path)
    assert "<h2>Per-class recall</h2>" in page and "<td>cat</td><td>0.5</td>" in page
    assert page.index("<h2>First</h2>") < page.index("<h2>Per-class recall</h2>")


def test_an_unreadable_table_is_left_out(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    layout.table("broken").parent.mkdir()
    layout.table("broken").write_text("{not json")
    assert read_tables(tmp_path) == []
    render_report(tmp_path)

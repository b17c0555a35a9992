"""Sampler tracking arithmetic and drawing: per-class table rows, the share-over-epochs figure, the files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.pictures.chart import TAB10, Chart, Series, render
from harness.pictures.raster import save_png
from subscribers._draw import all_of
from subscribers._tables import percent, write_csv

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = ["share_chart", "table_rows", "write_history"]

_MAX_LEGEND_CLASSES = 20


def table_rows(
    class_names: Sequence[str],
    images: Sequence[int],
    expected: Sequence[float],
    drawn: Sequence[int],
    trained: Sequence[int],
    max_rows: int,
) -> tuple[list[list[str]], str | None]:
    """Rows of (class, images, data share, expected share, drawn, drawn share, trained), and a note.

    Past `max_rows` classes, the rows kept are those whose drawn share strays furthest
    from the expected one, and the note says so.
    """
    total_images = max(sum(images), 1)
    total_drawn = max(sum(drawn), 1)
    order = list(range(len(class_names)))
    note = None
    if len(order) > max_rows:
        order.sort(key=lambda c: -abs(drawn[c] / total_drawn - expected[c]))
        order = sorted(order[:max_rows])
        note = f"showing the {max_rows} of {len(class_names)} classes furthest from their expected share"
    rows = [
        [
            class_names[c],
            str(images[c]),
            percent(images[c] / total_images),
            percent(expected[c]),
            str(drawn[c]),
            percent(drawn[c] / total_drawn),
            str(trained[c]),
        ]
        for c in order
    ]
    return rows, note


def share_chart(
    epochs: Sequence[int],
    drawn: Sequence[Sequence[int]],
    expected: Sequence[float],
    class_names: Sequence[str],
) -> Chart:
    """Share of each epoch's draws per class (solid), against the share the weights expect (dotted).

    Past `_MAX_LEGEND_CLASSES` classes it draws those whose share in the last epoch strays
    furthest from the expected one, and its title says how many of how many.
    """
    totals = [max(sum(row), 1) for row in drawn]
    shown = list(range(len(class_names)))
    title = "Drawn share per class (dotted: expected from the sampler's weights)"
    if len(shown) > _MAX_LEGEND_CLASSES and drawn:
        last, total = drawn[-1], totals[-1]
        shown.sort(key=lambda c: -abs(last[c] / total - expected[c]))
        shown = sorted(shown[:_MAX_LEGEND_CLASSES])
        title = (
            f"Drawn share of the {len(shown)} of {len(class_names):,} classes furthest from their "
            "expected share (dotted)"
        )
    colours = [TAB10[k % len(TAB10)] for k in range(len(shown))]
    series = tuple(
        Series(
            name=class_names[c],
            points=tuple(
                (float(e), row[c] / total) for e, row, total in zip(epochs, drawn, totals, strict=True)
            ),
            colour=colours[k],
            markers=len(epochs) <= 50,
        )
        for k, c in enumerate(shown)
    )
    return Chart(
        title=title,
        x_label="epoch",
        y_label="share of draws",
        series=series,
        levels=tuple(zip((expected[c] for c in shown), colours, strict=True)),
        percent_of=1.0,
        from_zero=True,
        legend=True,
        legend_title="class",
        legend_outside=True,
    )


def write_history(
    run_dir: Path,
    class_names: Sequence[str],
    history: Sequence[Mapping[str, Any]],
    expected: Sequence[float],
    record: Record,
) -> None:
    """``draws.csv``, ``trained.csv`` (a row per epoch of `history`) and ``draws.png``, recorded.

    `history` holds the subscriber's entries (``epoch``, ``drawn``, ``trained``). Each file
    is written in its own attempt, the tables first: a picture that fails keeps its tables.
    """
    out = run_dir / "sampler_tracking"

    def table(name: str, key: str) -> None:
        path = write_csv(
            out / f"{name}.csv",
            ["epoch", "total", *class_names],
            ([e["epoch"], sum(e[key]), *e[key]] for e in history),
        )
        record(f"sampler_{name}", path)

    def picture() -> None:
        epochs = [entry["epoch"] for entry in history]
        chart = share_chart(epochs, [e["drawn"] for e in history], expected, class_names)
        record("sampler_draws_plot", save_png(render(chart), out / "draws.png"))

    all_of(lambda: table("draws", "drawn"), lambda: table("trained", "trained"), picture)

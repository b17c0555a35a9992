"""The training history: which logged metric goes on which picture, the best epoch, the pictures.

Metric keys are the events' stable names (`harness.core.events`): ``train/loss``,
``val/acc_top1``, ``lr`` and ``lr/<i>``; a loss goes on the losses, an accuracy on the
accuracy, a rate on the learning rate.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from harness.io.artifacts import write_text
from harness.pictures.chart import TAB10, Chart, Series, render
from harness.pictures.raster import save_png
from subscribers._draw import all_of

if TYPE_CHECKING:
    from harness.core.context import Record

__all__ = [
    "Best",
    "Family",
    "History",
    "best_epoch",
    "chart_of",
    "curves",
    "draw_family",
    "draw_history",
    "history_csv",
]

Family = Literal["losses", "accuracy", "learning_rate"]
History = Mapping[int, Mapping[str, float]]
Curve = list[tuple[int, float]]

_TITLES: dict[Family, tuple[str, str]] = {
    "losses": ("Loss", "loss"),
    "accuracy": ("Accuracy", "accuracy"),
    "learning_rate": ("Learning rate", "learning rate"),
}


@attrs.frozen(kw_only=True)
class Best:
    """The epoch where the monitored metric was best, and its value there."""

    epoch: int
    metric: str
    value: float


def family_of(name: str) -> Family | None:
    """The picture a curve goes on, or None when it goes on none of them."""
    lowered = name.lower()
    if lowered == "lr" or lowered.startswith("lr/"):
        return "learning_rate"
    if "loss" in lowered:
        return "losses"
    if "acc" in lowered:
        return "accuracy"
    return None


def epoch_values(metrics: Mapping[str, float]) -> dict[str, float]:
    """One epoch's metrics by curve name, a value that is not finite as NaN (a gap in its curve)."""
    return {name: (float(v) if math.isfinite(v) else math.nan) for name, v in metrics.items()}


def curves(history: History) -> dict[Family, dict[str, Curve]]:
    """The curves of each picture, points in epoch order; pictures without a curve are absent."""
    grouped: dict[Family, dict[str, Curve]] = {}
    for epoch in sorted(history):
        for name, value in epoch_values(history[epoch]).items():
            family = family_of(name)
            if family is not None:
                grouped.setdefault(family, {}).setdefault(name, []).append((epoch, value))
    return grouped


def best_epoch(history: History, monitor: str, mode: str = "max") -> Best | None:
    """The earliest epoch with the best `monitor` value: the lowest with mode "min", else the highest."""
    lower_is_better = mode == "min"
    best: Best | None = None
    for epoch in sorted(history):
        value = epoch_values(history[epoch]).get(monitor)
        if value is None or math.isnan(value):
            continue
        better = best is None or (value < best.value if lower_is_better else value > best.value)
        if better:
            best = Best(epoch=epoch, metric=monitor, value=value)
    return best


def history_csv(history: History) -> str:
    """Every logged value as CSV: one row per epoch, one column per curve."""
    rows = {epoch: epoch_values(history[epoch]) for epoch in sorted(history)}
    names = sorted({name for values in rows.values() for name in values})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", *names])
    for epoch, values in rows.items():
        writer.writerow([epoch, *(_cell(values.get(name)) for name in names)])
    return buffer.getvalue()


def draw_history(
    run_dir: Path, history: History, monitor: str, mode: Literal["max", "min"], record: Record
) -> None:
    """The `Plots` job: ``history.csv`` and every picture under ``run_dir/plots/`` from the whole
    `history`, each file recorded; each in its own attempt, the table first."""
    directory = run_dir / "plots"
    best = best_epoch(history, monitor, mode)

    def keep(path: Path) -> None:
        record(path.relative_to(run_dir).as_posix(), path)

    def table() -> None:
        keep(write_text(directory / "history.csv", history_csv(history)))

    def picture(family: Family, family_curves: Mapping[str, Curve]) -> None:
        keep(draw_family(directory / f"{family}.png", family, family_curves, best))

    all_of(
        table,
        *(
            functools.partial(picture, family, family_curves)
            for family, family_curves in curves(history).items()
        ),
    )


def draw_family(path: Path, family: Family, family_curves: Mapping[str, Curve], best: Best | None) -> Path:
    """One picture: every curve of `family` against epochs, the best epoch marked."""
    return save_png(render(chart_of(family, family_curves, best)), path)


def chart_of(family: Family, family_curves: Mapping[str, Curve], best: Best | None) -> Chart:
    """What `family`'s picture shows: its curves (validation dashed), a dotted line and a
    legend entry at the best epoch, a star on the monitored curve when it is one of this family's."""
    title, label = _TITLES[family]
    values = [v for curve in family_curves.values() for _, v in curve if not math.isnan(v)]
    series = tuple(
        Series(
            name=name,
            points=tuple((float(epoch), value) for epoch, value in curve),
            colour=TAB10[index % len(TAB10)],
            style="dashed" if name.startswith("val") else "solid",
        )
        for index, (name, curve) in enumerate(sorted(family_curves.items()))
    )
    percent_of = None
    if family == "accuracy":
        percent_of = 1.0 if max(values, default=0) <= 1 else 100.0
    return Chart(
        title=title,
        x_label="epoch",
        y_label=label,
        series=series,
        marked_x=None if best is None else float(best.epoch),
        marked_label=None if best is None else f"best epoch {best.epoch} ({best.metric} {best.value:.4g})",
        star=(float(best.epoch), best.value) if best is not None and best.metric in family_curves else None,
        percent_of=percent_of,
    )


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(value)

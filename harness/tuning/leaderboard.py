"""A sweep's leaderboard: ``leaderboard.csv``, ``leaderboard.html`` and ``best.toml``.

Trials are ranked: completed ones by their best monitored score, then pruned ones by the
last score they reported, then the rest (diverged, failed, interrupted) by number. The
page links each trial to its run's ``report.html`` and draws the score against each
parameter (``leaderboard/<key>.png``: completed trials blue, pruned ones orange, on a log
axis for a log-uniform key). ``best.toml`` is the best completed trial's resolved
``settings.toml``, with ``[run].name`` and ``output_dir`` given back to the sweep's own, so
``harness train best.toml`` trains it again (the same seed: the same score on the same
machine). Optuna is not imported here: the sweep hands over `TrialRow` records.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from harness.core.layout import RunLayout
from harness.io.artifacts import write_text
from harness.pictures.chart import TAB10, Chart, Series, render
from harness.pictures.raster import save_png
from harness.settings import load_settings, settings_to_toml
from harness.settings.tree import RunSettings
from harness.tuning.space import Space, Value

__all__ = ["TrialRow", "rank", "write_leaderboard"]

_ORDER = {"completed": 0, "pruned": 1}


@attrs.frozen(kw_only=True)
class TrialRow:
    """One trial as the leaderboard shows it."""

    number: int
    status: str
    """completed, pruned, diverged, failed, interrupted, invalid or running."""
    value: float | None
    params: Mapping[str, Value]
    run_dir: str | None
    """Relative to the sweep's folder."""
    duration_s: float | None = None
    error: str | None = None


def rank(rows: Sequence[TrialRow], mode: Literal["max", "min"]) -> list[TrialRow]:
    """`rows` best first (see the module)."""
    sign = -1.0 if mode == "max" else 1.0

    def key(row: TrialRow) -> tuple[int, float, int]:
        scored = row.value is not None and math.isfinite(row.value)
        group = _ORDER.get(row.status, 2) if scored or row.status not in _ORDER else 2
        return (group, sign * row.value if scored and row.value is not None else 0.0, row.number)

    return sorted(rows, key=key)


def _csv(rows: Sequence[TrialRow], keys: Sequence[str], monitor: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "trial", "status", monitor, *keys, "duration_s", "run_dir", "error"])
    for place, row in enumerate(rows, start=1):
        value = "" if row.value is None else f"{row.value:.6g}"
        duration = "" if row.duration_s is None else f"{row.duration_s:.1f}"
        params = [row.params.get(k, "") for k in keys]
        writer.writerow(
            [place, row.number, row.status, value, *params, duration, row.run_dir or "", row.error or ""]
        )
    return out.getvalue()


def _axis(
    space: Space, key: str, rows: Sequence[TrialRow]
) -> tuple[dict[int, float], tuple[tuple[float, str], ...]]:
    """Each trial's x for `key` and the labelled ticks: log10 for a log-uniform key, indices for choices."""
    dimension = next(d for d in space.dimensions if d.key == key)
    if dimension.kind == "choice":
        index = {repr(v): float(i) for i, v in enumerate(dimension.values)}
        xs = {r.number: index[repr(r.params[key])] for r in rows if repr(r.params.get(key)) in index}
        return xs, tuple((float(i), str(v)) for i, v in enumerate(dimension.values))
    low, high = (float(v) for v in dimension.values)
    if dimension.kind == "log_uniform":
        xs = {r.number: math.log10(float(r.params[key])) for r in rows if key in r.params}
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        return xs, tuple((float(d), f"1e{d}") for d in decades)
    xs = {r.number: float(r.params[key]) for r in rows if key in r.params}
    return xs, tuple((low + (high - low) * i / 4, f"{low + (high - low) * i / 4:.3g}") for i in range(5))


def _picture(space: Space, key: str, rows: Sequence[TrialRow], monitor: str) -> Chart:
    xs, ticks = _axis(space, key, rows)
    series = []
    for status, colour in (("completed", TAB10[0]), ("pruned", TAB10[1])):
        points = tuple(
            sorted(
                (xs[r.number], r.value)
                for r in rows
                if r.status == status and r.number in xs and r.value is not None and math.isfinite(r.value)
            )
        )
        if points:
            series.append(Series(name=status, points=points, colour=colour, style="none"))
    return Chart(
        title=f"{monitor} against {key}", x_label=key, y_label=monitor, series=tuple(series), x_ticks=ticks
    )


def _report_link(run_dir: str) -> str:
    """The trial's ``report.html`` relative to the sweep's folder (the layout names it)."""
    return RunLayout(run_dir=Path(run_dir)).report.as_posix()


def _page(
    rows: Sequence[TrialRow], keys: Sequence[str], monitor: str, pictures: Sequence[str], title: str
) -> str:
    def cell(text: object) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    body = []
    for place, row in enumerate(rows, start=1):
        report = f'<a href="{html.escape(_report_link(row.run_dir))}">report</a>' if row.run_dir else ""
        value = "" if row.value is None else f"{row.value:.4f}"
        duration = "" if row.duration_s is None else f"{row.duration_s:.1f}"
        params = "".join(cell(row.params.get(k, "")) for k in keys)
        body.append(
            f'<tr class="{html.escape(row.status)}">{cell(place)}{cell(row.number)}{cell(row.status)}'
            f"{cell(value)}{params}{cell(duration)}<td>{report}</td></tr>"
        )
    head = "".join(
        f"<th>{html.escape(h)}</th>" for h in ["rank", "trial", "status", monitor, *keys, "seconds", ""]
    )
    images = "".join(f'<img src="{html.escape(p)}" alt="{html.escape(p)}" width="450">' for p in pictures)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} "
        "td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:right} "
        "tr.pruned{color:#a65a00} tr.failed,tr.diverged,tr.invalid,tr.interrupted{color:#b00}"
        f"</style></head><body><h1>{html.escape(title)}</h1>"
        f"<table><tr>{head}</tr>{''.join(body)}</table><h2>{html.escape(monitor)} against each parameter</h2>"
        f"<div>{images}</div></body></html>\n"
    )


def write_leaderboard(
    folder: Path,
    rows: Sequence[TrialRow],
    *,
    space: Space,
    monitor: str,
    mode: Literal["max", "min"],
    run: RunSettings,
) -> list[TrialRow]:
    """Write the three files (see the module) into the sweep's `folder`; return the rows ranked."""
    ranked = rank(rows, mode)
    keys = space.keys
    write_text(folder / "leaderboard.csv", _csv(ranked, keys, monitor))
    pictures = []
    for key in keys:
        name = f"leaderboard/{key.replace('/', '_')}.png"
        (folder / "leaderboard").mkdir(exist_ok=True)
        save_png(render(_picture(space, key, ranked, monitor), width=600, height=400), folder / name)
        pictures.append(name)
    title = f"Sweep {folder.name}: {len(ranked)} trials ranked by {monitor} ({mode})"
    write_text(folder / "leaderboard.html", _page(ranked, keys, monitor, pictures, title))
    best = next((r for r in ranked if r.status == "completed" and r.run_dir), None)
    if best is not None and best.run_dir is not None:
        settings = load_settings(RunLayout(run_dir=folder / best.run_dir).settings)
        again = attrs.evolve(
            settings,
            run=attrs.evolve(settings.run, name=run.name, output_dir=run.output_dir, terminal=run.terminal),
        )
        note = f"# The best trial of {folder}: trial {best.number}, {monitor} = {best.value}\n"
        write_text(folder / "best.toml", note + settings_to_toml(again))
    return ranked

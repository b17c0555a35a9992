"""The HTML page of a run directory: a dashboard first, then tables, settings and files.

`write_report` writes ``RUN_DIR/report.html``. Its first screen is what a person looks
at, side by side across the width (a CSS grid; one column on a narrow window): the run's
status (and its failure), its best score and the epoch it was reached, the epochs done
and the time spent (`Headline`), the learning curves (``plots/``), the latest confusion
matrix and the latest samples. After it come the run's other pictures, grouped by folder
(the per-epoch ones, ``epoch_NNN.png``, fold away), the tables its subscribers wrote
(`harness.io.tables`: the data set's classes, the model's size), ``summary.json``,
``settings.toml`` (the resolved settings the run wrote), and a link to every file.
Anything missing is left out, so it works on any run directory, finished or not; a
page of a run still going reloads itself. Pictures are linked relatively (the page
stays small and works from disk while the folder stays together); ``embed`` puts them
in the page as base64, for a page that travels alone.

The ``report`` subscriber writes it at every epoch end (with the `Headline` it keeps)
and when the run ends; ``python -m harness.report RUN_DIR`` writes it for any run
directory, its headline read from ``summary.json`` (and the best epoch from the event
record).
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from harness.core.layout import RunLayout
from harness.io.artifacts import write_text
from harness.io.tables import Table, read_tables

__all__ = ["Headline", "current_pictures", "find_pictures", "render_report", "write_report"]

_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}
_FIRST_FOLDERS = ("plots", "confusion_matrix", "samples")
# The trackers' own stores (MLflow keeps copies of the pictures it was given).
_TRACKER_FOLDERS = ("mlflow", "tensorboard", "logs")
_EPOCH_FILE = re.compile(r"epoch_\d+")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 1900px; padding: 0 1.5em;
       color: #222; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .3em 1.2em; }
h1 { font-size: 1.5em; margin: .2em 0; } .path { color: #666; font-size: .85em; margin: 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #eee;
       text-align: left; vertical-align: top; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
.note { color: #a33; }
.status { padding: .3em .8em; border-radius: 4px; background: #eef; display: inline-block; margin: 0; }
.status.completed { background: #e6f4ea; } .status.failed, .status.interrupted,
.status.diverged { background: #fce8e6; }
.dashboard { display: grid; grid-template-columns: minmax(220px, 280px) 1fr 1fr; gap: .8em 1.2em;
             align-items: start; margin-top: .8em; }
.dashboard figure { margin: 0; display: block; }
.facts { grid-row: span 2; background: #f6f8fa; border-radius: 6px; padding: .6em 1em; }
.facts dt { color: #666; font-size: .8em; margin-top: .6em; }
.facts dd { margin: 0; font-size: 1.15em; font-variant-numeric: tabular-nums; }
.facts dd.big { font-size: 1.8em; font-weight: 600; }
.curves { grid-column: span 2; display: flex; gap: .8em; }
.curves figure { flex: 1 1 0; min-width: 0; }
.curves img { width: 100%; max-height: 30vh; object-fit: contain; }
.panel img { max-height: 56vh; width: auto; }
@media (max-width: 900px) {
  .dashboard { grid-template-columns: 1fr; }
  .facts, .curves { grid-row: auto; grid-column: auto; }
  .facts { display: grid; grid-template-columns: auto 1fr; gap: .2em 1em; align-items: baseline; }
  .facts dt { margin: 0; }
  .curves { flex-direction: column; }
  .curves img, .panel img { max-height: none; width: 100%; }
}
"""
_REFRESH_S = 30
_CURVES, _CONFUSION, _SAMPLES = _FIRST_FOLDERS
_BIG = ' class="big"'
_FIRST_CURVES = ("losses", "loss")
"""Curves shown before the others (sorted by name): the loss is what a person reads first."""
_SHOWN_METRICS = ("val/acc_top1", "val/acc_top5", "val/acc_balanced", "val/loss", "train/loss", "lr")


@attrs.frozen(kw_only=True)
class Headline:
    """The dashboard's facts: how the run stands, its best score and when, how far and how long.

    `best_epoch` counts from 0, as the pictures beside it and their files (``epoch_002.png``)
    do; `epochs_done` is a count. `metrics` are the latest measured (under the harness's
    names). Every field may be unknown (None, empty).
    """

    status: str | None = None
    monitor: str | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    epochs_done: int | None = None
    max_epochs: int | None = None
    elapsed_s: float | None = None
    metrics: Mapping[str, float] = attrs.field(factory=dict)


def find_pictures(run_dir: Path) -> list[Path]:
    """Pictures under `run_dir`, but not hidden ones (temporary files) nor the trackers' stores."""
    found = [
        path
        for path in run_dir.rglob("*")
        if path.suffix.lower() in _MEDIA_TYPES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(run_dir).parts)
        and path.relative_to(run_dir).parts[0] not in _TRACKER_FOLDERS
    ]
    return sorted(found, key=lambda path: _picture_order(path.relative_to(run_dir)))


def current_pictures(run_dir: Path) -> dict[str, Path]:
    """The current picture of each kind, by its path without suffix (``"confusion_matrix/latest"``).

    Per-epoch pictures (``epoch_NNN.png``) are not listed under their own names: the newest
    of a folder stands for its ``<folder>/latest``, as the file that ``latest`` copies and
    that is never rewritten (a reader may open it later, when the next epoch has replaced
    ``latest``). A folder's other current pictures (``plots/losses.png``) are listed as they are.
    """
    current: dict[str, Path] = {}
    newest_epoch: dict[str, Path] = {}
    for path in find_pictures(run_dir):
        relative = path.relative_to(run_dir)
        folder = relative.parent.as_posix()
        if _EPOCH_FILE.fullmatch(path.stem):
            newest_epoch[folder] = path
        else:
            current[relative.with_suffix("").as_posix()] = path
    for folder, path in newest_epoch.items():
        latest = f"{folder}/latest" if folder != "." else "latest"
        if latest in current or not any(name.rpartition("/")[0] == folder for name in current):
            current[latest] = path
    return current


def render_report(
    run_dir: Path,
    *,
    embed: bool = False,
    status: str | None = None,
    error: str | None = None,
    headline: Headline | None = None,
) -> str:
    """The report page of `run_dir` as HTML text.

    `status` and `error` say how the run stands (``"running: epoch 3 of 8"``,
    ``"failed"``); by default ``summary.json`` says, when there is one. `headline` gives
    the dashboard's facts (the running subscriber's); by default they are read from
    ``summary.json``. A page whose status starts with "running" reloads itself every 30
    seconds.
    """
    summary = _read_summary(run_dir)
    facts = headline or _headline_of(run_dir, summary)
    if status is None:
        status = facts.status
    if error is None and isinstance(summary, Mapping) and summary.get("error"):
        error = str(summary["error"])
    title = f"Run {run_dir.resolve().name}"
    refresh = (
        f'<meta http-equiv="refresh" content="{_REFRESH_S}">'
        if status is not None and status.startswith("running")
        else ""
    )
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8">{refresh}',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>{html.escape(title)}</h1>",
    ]
    if status is not None:
        kind = status.split(":")[0].split()[0] if status.strip() else ""
        parts.append(f'<p class="status {html.escape(kind)}">status: {html.escape(status)}</p>')
    parts.append(f'<p class="path">{html.escape(str(run_dir.resolve()))}</p></header>')
    if error:
        parts.append(f'<pre class="note">{html.escape(error)}</pre>')
    groups = _picture_groups(run_dir)
    parts.extend(_dashboard(run_dir, facts, groups, embed=embed))
    parts.extend(_pictures_section(run_dir, groups, embed=embed))
    parts.extend(_summary_section(run_dir))
    parts.extend(_tables_section(run_dir))
    settings = _read_text(RunLayout(run_dir).settings)
    if settings is not None:
        parts.append(f"<h2>Settings</h2><pre>{html.escape(settings)}</pre>")
    parts.extend(_files_section(run_dir))
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts.append(f"<p><small>Written by harness at {generated}.</small></p></body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    run_dir: Path,
    *,
    embed: bool = False,
    status: str | None = None,
    error: str | None = None,
    headline: Headline | None = None,
) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path (see `render_report`)."""
    page = render_report(run_dir, embed=embed, status=status, error=error, headline=headline)
    return write_text(RunLayout(run_dir).report, page)


def _headline_of(run_dir: Path, summary: Any) -> Headline:
    """The dashboard's facts from ``summary.json``; the best epoch from the event record."""
    if not isinstance(summary, Mapping):
        return Headline()
    best = summary.get("best_score")
    metrics = summary.get("final_metrics")
    duration = summary.get("duration_s")
    epochs = summary.get("epochs_completed")
    return Headline(
        status=str(summary.get("status", "")) or None,
        monitor=str(summary["monitor"]) if summary.get("monitor") else None,
        best_score=float(best) if isinstance(best, (int, float)) else None,
        best_epoch=_epoch_of(run_dir, summary.get("monitor"), best),
        epochs_done=int(epochs) if isinstance(epochs, int) else None,
        elapsed_s=float(duration) if isinstance(duration, (int, float)) else None,
        metrics={str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if isinstance(metrics, Mapping)
        else {},
    )


def _epoch_of(run_dir: Path, monitor: object, best: object) -> int | None:
    """The epoch (from 0) whose validation measured `best` for `monitor`, from the event record."""
    if not isinstance(monitor, str) or not isinstance(best, (int, float)):
        return None
    try:
        with RunLayout(run_dir).events.open(encoding="utf-8") as record:
            for line in record:
                if '"ValidationEpochEnd"' not in line:
                    continue
                event = json.loads(line)
                if not event.get("sanity_check") and event.get("metrics", {}).get(monitor) == best:
                    return int(event["epoch"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return None


def _dashboard(run_dir: Path, facts: Headline, groups: Mapping[str, list[Path]], *, embed: bool) -> list[str]:
    """The first screen: the facts, the learning curves, the latest confusion matrix and samples."""
    listed = _facts(facts)
    curves = sorted(_current(groups.get(_CURVES, [])), key=lambda path: path.stem not in _FIRST_CURVES)
    confusion = _current(groups.get(_CONFUSION, []))
    samples = _current(groups.get(_SAMPLES, []))
    if not (listed or curves or confusion or samples):
        return []
    parts = ['<section class="dashboard">']
    if listed:
        parts.append(f'<dl class="facts">{listed}</dl>')
    if curves:
        figures = "".join(_figure(run_dir, path, embed=embed) for path in curves)
        parts.append(f'<div class="curves">{figures}</div>')
    for path in (*confusion, *samples):
        parts.append(f'<div class="panel">{_figure(run_dir, path, embed=embed)}</div>')
    parts.append("</section>")
    return parts


def _facts(facts: Headline) -> str:
    rows: list[tuple[str, str, bool]] = []
    if facts.best_score is not None:
        rows.append((f"best {facts.monitor or 'score'}", _format(facts.best_score), True))
        if facts.best_epoch is not None:
            rows.append(("at epoch", str(facts.best_epoch), False))
    if facts.epochs_done is not None:
        of = f" of {facts.max_epochs}" if facts.max_epochs else ""
        rows.append(("epochs done", f"{facts.epochs_done}{of}", False))
    if facts.elapsed_s is not None:
        rows.append(("time", _duration(facts.elapsed_s), False))
    rows += [(name, _format(facts.metrics[name]), False) for name in _SHOWN_METRICS if name in facts.metrics]
    return "".join(
        f"<dt>{html.escape(name)}</dt><dd{_BIG if big else ''}>{html.escape(value)}</dd>"
        for name, value, big in rows
    )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    if minutes == 0:
        return f"{rest} s"
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _current(paths: Sequence[Path]) -> list[Path]:
    """A folder's current pictures: its named ones, else its newest per-epoch one."""
    current = [path for path in paths if not _EPOCH_FILE.fullmatch(path.stem)]
    epochs = [path for path in paths if _EPOCH_FILE.fullmatch(path.stem)]
    return current or epochs[-1:]


def _picture_order(relative: Path) -> tuple[int, str, bool, str]:
    folder = relative.parent.as_posix()
    top = relative.parts[0] if len(relative.parts) > 1 else ""
    rank = _FIRST_FOLDERS.index(top) if top in _FIRST_FOLDERS else len(_FIRST_FOLDERS)
    return (rank, folder, bool(_EPOCH_FILE.fullmatch(relative.stem)), relative.name)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_summary(run_dir: Path) -> Any:
    text = _read_text(RunLayout(run_dir).summary)
    try:
        return None if text is None else json.loads(text)
    except json.JSONDecodeError:
        return None


def _tables_section(run_dir: Path) -> list[str]:
    """The tables the run's subscribers wrote for this page, each under its title."""
    return [html_part for table in read_tables(run_dir) for html_part in _table_of(table)]


def _table_of(table: Table) -> list[str]:
    parts = [f"<h2>{html.escape(table.title)}</h2>"]
    if table.facts:
        parts.append(_table(list(table.facts)))
    if table.rows:
        header = "".join(f"<th>{html.escape(column)}</th>" for column in table.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_format(cell))}</td>" for cell in row) + "</tr>"
            for row in table.rows
        )
        parts.append(f"<table><tr>{header}</tr>{rows}</table>")
    return parts


def _files_section(run_dir: Path) -> list[str]:
    """A link to every file of the run (hidden and temporary files left out)."""
    files = sorted(
        path.relative_to(run_dir).as_posix()
        for path in run_dir.rglob("*")
        if path.is_file()
        and path != RunLayout(run_dir).report
        and not any(part.startswith(".") for part in path.relative_to(run_dir).parts)
    )
    if not files:
        return []
    links = "".join(f'<li><a href="{_href(name)}">{html.escape(name)}</a></li>' for name in files)
    return [f"<h2>Files</h2><details><summary>{len(files)} files</summary><ul>{links}</ul></details>"]


def _summary_section(run_dir: Path) -> list[str]:
    layout = RunLayout(run_dir)
    text = _read_text(layout.summary)
    if text is None:
        return []
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as error:
        return [
            "<h2>Summary</h2>",
            f'<p class="note">{layout.summary.name} is not valid JSON '
            f"({html.escape(str(error))}); as written:</p>",
            f"<pre>{html.escape(text)}</pre>",
        ]
    parts = ["<h2>Summary</h2>"]
    if isinstance(summary, Mapping):
        rows = [(key, value) for key, value in summary.items() if key != "artifacts"]
        parts.append(_table(rows))
        artifacts = summary.get("artifacts")
        if isinstance(artifacts, Mapping) and artifacts:
            links = "".join(
                f'<li><a href="{_href(str(path))}">{html.escape(str(name))}</a></li>'
                for name, path in artifacts.items()
            )
            parts.append(f"<details><summary>{len(artifacts)} artifacts</summary><ul>{links}</ul></details>")
    pretty = json.dumps(summary, indent=2, ensure_ascii=False)
    parts.append(
        f"<details><summary>{layout.summary.name}</summary><pre>{html.escape(pretty)}</pre></details>"
    )
    return parts


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = []
    for key, value in rows:
        if isinstance(value, Mapping):
            shown = _table([(str(k), v) for k, v in value.items()])
        elif (
            isinstance(value, (list, tuple))
            and value
            and not all(isinstance(v, (int, float, str)) for v in value)
        ):
            shown = f"<pre>{html.escape(json.dumps(value, indent=2, ensure_ascii=False))}</pre>"
        else:
            shown = html.escape(_format(value))
        cells.append(f"<tr><th>{html.escape(str(key))}</th><td>{shown}</td></tr>")
    return f"<table>{''.join(cells)}</table>"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    return "" if value is None else str(value)


def _picture_groups(run_dir: Path) -> dict[str, list[Path]]:
    """The run's pictures by folder (relative, ``"."`` for the top), in `find_pictures`' order."""
    groups: dict[str, list[Path]] = {}
    for path in find_pictures(run_dir):
        groups.setdefault(path.parent.relative_to(run_dir).as_posix(), []).append(path)
    return groups


def _pictures_section(run_dir: Path, groups: Mapping[str, list[Path]], *, embed: bool) -> list[str]:
    """Every picture the dashboard does not show, by folder; per-epoch ones fold away."""
    parts: list[str] = []
    for folder, paths in groups.items():
        shown = _current(paths)
        on_dashboard = folder in _FIRST_FOLDERS
        epochs = [p for p in paths if _EPOCH_FILE.fullmatch(p.stem) and p not in shown]
        current = [] if on_dashboard else shown
        if not (current or epochs):
            continue
        parts.append(f"<h2>{html.escape(folder if folder != '.' else 'Pictures')}</h2>")
        parts.extend(_figure(run_dir, path, embed=embed) for path in current)
        if epochs:
            figures = "".join(_figure(run_dir, path, embed=embed) for path in reversed(epochs))
            parts.append(f"<details><summary>{len(epochs)} per-epoch pictures</summary>{figures}</details>")
    return parts


def _figure(run_dir: Path, path: Path, *, embed: bool) -> str:
    relative = path.relative_to(run_dir).as_posix()
    if embed:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        source = f"data:{_MEDIA_TYPES[path.suffix.lower()]};base64,{data}"
    else:
        source = _href(relative)
    caption = html.escape(relative)
    return (
        f'<figure><a href="{_href(relative)}"><img src="{source}" alt="{caption}"></a>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _href(relative: str) -> str:
    return html.escape(urllib.parse.quote(relative), quote=True)

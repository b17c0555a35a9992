"""The HTML page of a run directory: status, pictures, tables, settings and files, on one page.

`write_report` writes ``RUN_DIR/report.html``: the run's status (and its failure), every
picture under the run directory grouped by folder (history plots, confusion matrix and
samples first; the per-epoch ones, ``epoch_NNN.png``, fold away under the current ones),
the tables its subscribers wrote (`harness.io.tables`: the data set's classes, the
model's size), ``summary.json``, ``settings.toml`` (the resolved settings the run wrote),
and a link to every file. Anything missing is left out, so it works on
any run directory, finished or not; a page of a run still going reloads itself. Pictures
are linked relatively (the page stays small and works while the folder stays together);
``embed`` puts them in the page as base64, for a page that travels alone.

The ``report`` subscriber writes it at every epoch end and when the run ends;
``python -m harness.report RUN_DIR`` writes it for any run directory.
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

from harness.core.layout import RunLayout
from harness.io.artifacts import write_text
from harness.io.tables import Table, read_tables

__all__ = ["current_pictures", "find_pictures", "render_report", "write_report"]

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
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #eee;
       text-align: left; vertical-align: top; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
.note { color: #a33; }
.status { padding: .5em 1em; border-radius: 4px; background: #eef; display: inline-block; }
.status.completed { background: #e6f4ea; } .status.failed, .status.interrupted { background: #fce8e6; }
"""
_REFRESH_S = 30


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
    run_dir: Path, *, embed: bool = False, status: str | None = None, error: str | None = None
) -> str:
    """The report page of `run_dir` as HTML text.

    `status` and `error` say how the run stands (``"running: epoch 3 of 8"``,
    ``"failed"``); by default ``summary.json`` says, when there is one. A page whose
    status starts with "running" reloads itself every 30 seconds.
    """
    summary = _read_summary(run_dir)
    if status is None and isinstance(summary, Mapping):
        status = str(summary.get("status", "")) or None
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
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(str(run_dir.resolve()))}</p>",
    ]
    if status is not None:
        kind = status.split(":")[0].split()[0] if status.strip() else ""
        parts.append(f'<p class="status {html.escape(kind)}">status: {html.escape(status)}</p>')
    if error:
        parts.append(f'<pre class="note">{html.escape(error)}</pre>')
    parts.extend(_summary_section(run_dir))
    parts.extend(_pictures_section(run_dir, embed=embed))
    parts.extend(_tables_section(run_dir))
    settings = _read_text(RunLayout(run_dir).settings)
    if settings is not None:
        parts.append(f"<h2>Settings</h2><pre>{html.escape(settings)}</pre>")
    parts.extend(_files_section(run_dir))
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts.append(f"<p><small>Written by harness at {generated}.</small></p></body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    run_dir: Path, *, embed: bool = False, status: str | None = None, error: str | None = None
) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path (see `render_report`)."""
    return write_text(
        RunLayout(run_dir).report, render_report(run_dir, embed=embed, status=status, error=error)
    )


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


def _pictures_section(run_dir: Path, *, embed: bool) -> list[str]:
    groups: dict[str, list[Path]] = {}
    for path in find_pictures(run_dir):
        groups.setdefault(path.parent.relative_to(run_dir).as_posix(), []).append(path)
    parts: list[str] = []
    for folder, paths in groups.items():
        parts.append(f"<h2>{html.escape(folder if folder != '.' else 'Pictures')}</h2>")
        current = [p for p in paths if not _EPOCH_FILE.fullmatch(p.stem)]
        epochs = [p for p in paths if _EPOCH_FILE.fullmatch(p.stem)]
        # With a `latest` copy the newest epoch is on show already; without one, show it.
        if epochs and not current:
            current, epochs = [epochs[-1]], epochs[:-1]
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

"""An HTML page of a run directory: its pictures, its summary and its settings, on one page.

    python -m harness.report RUN_DIR [--embed]

writes ``RUN_DIR/report.html``. Every picture under the run directory is shown, grouped
by folder; the per-epoch ones (``epoch_NNN.png``) fold away under the current ones.
``summary.json`` and ``settings.toml`` (the resolved settings the run wrote) follow.
Anything missing is left out, so it works on any run directory, finished or not.
Pictures are linked relatively (the page stays small and works while the folder stays
together); ``--embed`` puts them in the page as base64, for a page that travels alone.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.core.errors import DataError, HarnessError, report
from harness.io.artifacts import write_text

__all__ = ["REPORT_FILE", "find_pictures", "main", "render_report", "write_report"]

REPORT_FILE = "report.html"
_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}
_FIRST_FOLDERS = ("plots", "confusion_matrix", "samples")
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
"""


def find_pictures(run_dir: Path) -> list[Path]:
    """Pictures under `run_dir`, hidden files and folders (temporary files) left out."""
    found = [
        path
        for path in run_dir.rglob("*")
        if path.suffix.lower() in _MEDIA_TYPES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(run_dir).parts)
    ]
    return sorted(found, key=lambda path: _picture_order(path.relative_to(run_dir)))


def render_report(run_dir: Path, *, embed: bool = False) -> str:
    """The report page of `run_dir` as HTML text."""
    title = f"Run {run_dir.resolve().name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(str(run_dir.resolve()))}</p>",
    ]
    parts.extend(_summary_section(run_dir))
    parts.extend(_pictures_section(run_dir, embed=embed))
    settings = _read_text(run_dir / "settings.toml")
    if settings is not None:
        parts.append(f"<h2>Settings</h2><pre>{html.escape(settings)}</pre>")
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p><small>Written by harness.report at {generated}.</small></p></body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir: Path, *, embed: bool = False) -> Path:
    """Write ``run_dir/report.html`` atomically and return its path."""
    return write_text(run_dir / REPORT_FILE, render_report(run_dir, embed=embed))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.report", description="Write RUN_DIR/report.html: pictures, summary, settings."
    )
    parser.add_argument("run_dir", type=Path, help="a run directory, as written by harness.run")
    parser.add_argument("--embed", action="store_true", help="put the pictures in the page (base64)")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        return report(DataError(f"{run_dir}: not a directory (expected a run directory)"))
    try:
        page = write_report(run_dir, embed=args.embed)
    except OSError as error:
        return report(HarnessError(f"{run_dir / REPORT_FILE}: cannot write the report ({error.strerror})"))
    print(page)
    return 0


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


def _summary_section(run_dir: Path) -> list[str]:
    text = _read_text(run_dir / "summary.json")
    if text is None:
        return []
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as error:
        return [
            "<h2>Summary</h2>",
            f'<p class="note">summary.json is not valid JSON ({html.escape(str(error))}); as written:</p>',
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
    parts.append(f"<details><summary>summary.json</summary><pre>{html.escape(pretty)}</pre></details>")
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
        f'<figure><a href="{_href(relative)}"><img src="{source}" alt="{caption}" loading="lazy"></a>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _href(relative: str) -> str:
    return html.escape(urllib.parse.quote(relative), quote=True)


if __name__ == "__main__":
    raise SystemExit(main())

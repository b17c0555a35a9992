"""Atomic artifact writing: pictures, tables, JSON, the label map.

Every writer goes to a temporary file beside the target, flushes it to disk and renames
it over the target (`os.replace` is atomic on POSIX and Windows). The harness's own
pictures are drawn as pixels by `harness.pictures`; `save_figure` is for a subscriber
that draws a matplotlib figure with its object API (`matplotlib.figure.Figure`), which
needs no display and touches no pyplot global state.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.layout import RunLayout

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "atomic_path",
    "read_label_map",
    "save_figure",
    "write_bytes",
    "write_json",
    "write_label_map",
    "write_text",
]


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    On error the temporary file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); an artifact gets the usual mode of a new file.
    Path(name).chmod(0o666 & ~_umask())
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_figure(figure: Figure, path: Path, *, dpi: int = 120) -> Path:
    """Render `figure` to `path` (format from the suffix) atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def write_label_map(run_dir: Path, class_names: Sequence[str]) -> Path:
    """`labels.json`: the single source of class names for export and prediction."""
    return write_json(
        RunLayout(run_dir).labels,
        {
            "classes": list(class_names),
            "class_to_idx": {name: index for index, name in enumerate(class_names)},
        },
    )


def read_label_map(path: Path) -> list[str]:
    """Class names by index, from a `labels.json` file or a run directory holding one."""
    if path.is_dir():
        path = RunLayout(path).labels
    classes = json.loads(path.read_text(encoding="utf-8"))["classes"]
    return [str(name) for name in classes]

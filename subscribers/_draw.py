"""What the picture subscribers share: short names, epoch file names, `latest` copies.

The pictures themselves are drawn as pixels (`subscribers._raster`, `subscribers._chart`),
where a name is drawn character for character (no mathtext: ``p$\\bad$q`` is just a name).
A job writes its tables before its pictures, each in its own attempt (`all_of`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.io.artifacts import write_bytes

__all__ = ["all_of", "epoch_file", "publish_latest", "shorten"]


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters by an ellipsis in the middle.

    Class names often differ only at the end (``"... long name 17"``), so the end is kept.
    """
    if len(text) <= limit:
        return text
    tail = max((limit - 1) // 2, 1)
    head = max(limit - 1 - tail, 1)
    return text[:head].rstrip() + "…" + text[-tail:].lstrip()


def all_of(*steps: Callable[[], object]) -> None:
    """Run every step, even after one raises; then raise the first failure.

    A job lists its tables before its pictures, so a picture that cannot be drawn never
    takes the numbers with it.
    """
    failures: list[Exception] = []
    for step in steps:
        try:
            step()
        # The first failure is raised below, once every other step has had its turn.
        except Exception as error:  # noqa: BLE001
            failures.append(error)
    if failures:
        raise failures[0]


def epoch_file(directory: Path, epoch: int, suffix: str) -> Path:
    """``directory/epoch_007.png``: zero-based epochs, as in Lightning's checkpoint names."""
    return directory / f"epoch_{epoch:03d}{suffix}"


def publish_latest(path: Path) -> Path:
    """Copy `path` to ``latest<suffix>`` beside it (a copy, not a link: it survives archiving)."""
    latest = path.with_name(f"latest{path.suffix}")
    write_bytes(latest, path.read_bytes())
    return latest

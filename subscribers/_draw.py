"""What the picture subscribers share: epoch file names, `latest` copies, one attempt per file.

The pictures themselves are drawn by `harness.pictures` (pixels with Pillow, where a
name is drawn character for character: no mathtext, ``p$\\bad$q`` is just a name). A
job writes its tables before its pictures, each in its own attempt (`all_of`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.io.artifacts import write_bytes

__all__ = ["all_of", "epoch_file", "publish_latest"]


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

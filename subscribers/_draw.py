"""What the picture subscribers share: a released figure, fonts for class names, short names.

Figures are `matplotlib.figure.Figure` objects: no pyplot, no backend selection, no
rcParams changes. Anything that must differ from matplotlib's defaults is passed to
the call that draws it. matplotlib is imported by the functions that draw, so that a
process which only hands drawing to the background writer never loads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from harness.io.artifacts import write_bytes

__all__ = ["epoch_file", "name_fonts", "new_figure", "publish_latest", "shorten"]

_FALLBACK_FAMILIES = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK KR",
    "Noto Sans",
    "Arial Unicode MS",
    "Microsoft YaHei",
    "PingFang SC",
)


@contextlib.contextmanager
def new_figure(
    width: float, height: float, *, layout: Literal["constrained"] | None = "constrained"
) -> Iterator[Figure]:
    """A figure of `width` x `height` inches, emptied on exit so its artists are freed at once.

    `layout=None` is for a figure that places its axes itself.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout=layout)
    try:
        yield figure
    finally:
        figure.clear()


def name_fonts() -> list[str]:
    """Font families for class names: DejaVu Sans, then installed fonts with wider coverage.

    matplotlib falls back along the list glyph by glyph, so a name in a script DejaVu
    lacks (Chinese, say) renders when a font for it is installed, instead of as boxes.
    """
    from matplotlib import font_manager

    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(family for family in _FALLBACK_FAMILIES if family in installed)]


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters by an ellipsis in the middle.

    Class names often differ only at the end (``"... long name 17"``), so the end is kept.
    """
    if len(text) <= limit:
        return text
    tail = max((limit - 1) // 2, 1)
    head = max(limit - 1 - tail, 1)
    return text[:head].rstrip() + "…" + text[-tail:].lstrip()


def epoch_file(directory: Path, epoch: int, suffix: str) -> Path:
    """``directory/epoch_007.png``: zero-based epochs, as in Lightning's checkpoint names."""
    return directory / f"epoch_{epoch:03d}{suffix}"


def publish_latest(path: Path) -> Path:
    """Copy `path` to ``latest<suffix>`` beside it (a copy, not a link: it survives archiving)."""
    latest = path.with_name(f"latest{path.suffix}")
    write_bytes(latest, path.read_bytes())
    return latest

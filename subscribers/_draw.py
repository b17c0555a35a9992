"""What the picture subscribers share: a released figure, fonts for class names, short and literal names.

Figures are `matplotlib.figure.Figure` objects: no pyplot, no backend selection, no
rcParams changes. Anything that must differ from matplotlib's defaults is passed to
the call that draws it. matplotlib is imported by the functions that draw, so that a
process which only hands drawing to the background writer never loads it.

Every name drawn (a class, a metric) goes through `literal`: matplotlib reads text
between two ``$`` as mathematics, and a class folder named ``p$\\bad$q`` would otherwise
fail every picture it appears on. A job writes its tables before its pictures, each in
its own attempt (`all_of`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from harness.io.artifacts import write_bytes

__all__ = ["all_of", "epoch_file", "literal", "name_fonts", "new_figure", "publish_latest", "shorten"]

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


def literal(text: str) -> str:
    """`text` as matplotlib draws it character for character: every ``$`` escaped.

    With no unescaped ``$`` left, matplotlib never enters mathtext and turns each ``\\$``
    back into ``$``; backslashes elsewhere are drawn as they are. One mechanism for every
    text artist, legends included (which take no ``parse_math``).
    """
    return text.replace("$", r"\$")


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

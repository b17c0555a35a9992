"""Text on a picture: long class names cut in the middle, so that their ends stay readable."""

from __future__ import annotations

__all__ = ["shorten"]


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters by an ellipsis in the middle.

    Class names often differ only at the end (``"... long name 17"``), so the end is kept.
    """
    if len(text) <= limit:
        return text
    tail = max((limit - 1) // 2, 1)
    head = max(limit - 1 - tail, 1)
    return text[:head].rstrip() + "…" + text[-tail:].lstrip()

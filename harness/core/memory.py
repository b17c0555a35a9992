"""Hand free memory back to the system between the phases of a run (`return_free_memory`).

glibc keeps what Python and torch free in its heap for reuse; a phase that allocates in a
different pattern (the ONNX exporter after training) then grows the process instead of
reusing it. Collecting the garbage and calling ``malloc_trim(0)`` between phases returns
the free pages, so the peak resident memory is the larger phase's, not their sum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable

__all__ = ["return_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def return_free_memory() -> None:
    """Collect the garbage, then ask glibc to give free heap pages back (``malloc_trim(0)``)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

"""Timing helpers shared by the benchmarks: warm-up, interleaved repeats, medians, tables.

Every figure a benchmark reports is a median over repeats, and the variants it compares
run interleaved (A B C, A B C, ... with the order rotated each round), so a burst of load
on a shared machine lands on all of them rather than on whichever ran last.

A benchmark hands its results to ``python -m bench`` as `Row` objects: one timed variant
with the anchor it was measured against in the same process.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import attrs

__all__ = [
    "Row",
    "format_seconds",
    "interleaved",
    "interleaved_epochs",
    "markdown_table",
    "median_of",
    "per_call",
    "quiet_lightning",
    "rows_table",
]


@attrs.frozen(kw_only=True)
class Row:
    """One variant of a benchmark, timed against its anchor in the same process.

    `seconds` and `anchor_seconds` are per `unit` (a call, a step, an epoch). `goal` is the
    largest ratio the project promises for this variant, when it promises one.
    """

    benchmark: str
    variant: str
    anchor: str
    seconds: float
    anchor_seconds: float
    unit: str
    goal: float | None = None

    @property
    def ratio(self) -> float:
        return self.seconds / self.anchor_seconds

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        met = "met" if self.ratio <= self.goal else "MISSED"
        return f"<= {self.goal:.2f}x: {met}"


def format_seconds(seconds: float) -> str:
    """A duration in the unit that reads best: us below a millisecond, ms below 10 s."""
    size = abs(seconds)
    if size < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if size < 10:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def per_call(function: Callable[[], object], number: int) -> float:
    """Seconds per call of `function`, over `number` calls in a row, with gc off (as timeit)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            function()
        return (time.perf_counter() - start) / number
    finally:
        if enabled:
            gc.enable()


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    number: int = 1,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds per call of each candidate, the candidates taking turns each round.

    Each round times `number` calls of every candidate; `warmup` untimed rounds come first.
    The starting candidate rotates from round to round.
    """
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = per_call(candidates[name], number)
            if round_index >= warmup:
                samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def interleaved_epochs(
    epochs: Mapping[str, Callable[[], Mapping[str, float]]],
    *,
    rounds: int,
    images: int,
    progress: Callable[[str], None] | None = None,
    label: str = "",
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
    """Seconds per image of loaders taking turns an epoch at a time: medians and rounds.

    The medians are clock -> candidate -> seconds; the rounds candidate -> clock -> the
    seconds of each timed round, in order (for ratios paired within a round).

    Each of `epochs` runs one epoch of `images` images and returns the seconds each clock
    (wall, CPU, ...) spent on it. One untimed round comes first; the starting candidate
    rotates from round to round; `progress` hears each round's images per second.
    """
    names = list(epochs)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    for index in range(1 + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            for clock, seconds in epochs[name]().items():
                if index:
                    samples[name].setdefault(clock, []).append(seconds / images)
        if progress and index:
            shown = ", ".join(f"{name} {1 / samples[name]['wall'][-1]:.0f} images/s" for name in names)
            progress(f"{label}: round {index} of {rounds}: {shown}")
    medians = {
        clock: {name: median_of(samples[name][clock]) for name in names} for clock in samples[names[0]]
    }
    return medians, samples


def median_of(values: Sequence[float]) -> float:
    """The median, with a message that names the problem when nothing was measured."""
    if not values:
        raise ValueError("median_of() got no measurements; did the timed loop run at all?")
    return statistics.median(values)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: int = 1) -> str:
    """A markdown table; every column from index `right` on is right-aligned (numbers)."""
    align = ["---" if index < right else "---:" for index in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def rows_table(rows: Sequence[Row]) -> str:
    """The table every benchmark prints: time, anchor time, ratio, and the goal if any."""
    has_goal = any(row.goal is not None for row in rows)
    headers = ["benchmark", "variant", "anchor", "per", "time", "anchor time", "ratio"]
    if has_goal:
        headers.append("goal")
    cells = []
    for row in rows:
        line = [
            row.benchmark,
            row.variant,
            row.anchor,
            row.unit,
            format_seconds(row.seconds),
            format_seconds(row.anchor_seconds),
            f"{row.ratio:.3f}x",
        ]
        if has_goal:
            line.append(row.verdict)
        cells.append(line)
    return markdown_table(headers, cells, right=4)


def quiet_lightning() -> None:
    """Silence Lightning's start-up banners and hints, which would drown the tables.

    Its warnings stay, except the one about data-loader workers: the benchmarks load from
    memory on purpose.
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

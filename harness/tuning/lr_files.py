"""What a range test leaves: its curve as a picture with the suggestion marked, a CSV, a JSON record.

The folder is ``<output_dir>/<name>/lr_find_<n>/``, a new one per test, beside the run
directories of that name (which it never touches)::

    lr_find.png    raw and smoothed loss against the learning rate (log scale), the suggestion marked
    lr_find.csv    step, lr, loss, smoothed
    lr_find.json   suggestion, stopped, steps, the command that trains at the suggested rate,
                   and artifacts (name -> path relative to the folder), as summary.json lists them
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from harness.io.artifacts import write_json, write_text
from harness.pictures.chart import TAB10, Chart, Series, render
from harness.pictures.raster import save_png
from harness.tuning.lr_range import RangeTest

__all__ = ["lr_chart", "new_folder", "write_range_test"]


def new_folder(base: Path) -> Path:
    """A fresh ``lr_find_<n>`` under `base` (made here; the next free number)."""
    base.mkdir(parents=True, exist_ok=True)
    number = 1 + max((int(p.name[8:]) for p in base.glob("lr_find_*") if p.name[8:].isdigit()), default=-1)
    while True:
        folder = base / f"lr_find_{number}"
        try:
            folder.mkdir()
        except FileExistsError:
            number += 1
            continue
        return folder


def lr_chart(result: RangeTest) -> Chart:
    """The loss against the rate on a log scale (raw and smoothed), the suggested rate marked and starred."""
    xs = [math.log10(lr) for lr in result.lrs]
    shown = [s for s in result.smoothed if math.isfinite(s)]
    # Past 1.5x the first smoothed loss the curve is the divergence, which would flatten the rest.
    ceiling = 1.5 * max([*shown[:1], min(shown, default=1.0)]) if shown else math.inf

    def clip(values: Sequence[float]) -> tuple[tuple[float, float], ...]:
        return tuple(
            (x, v if math.isfinite(v) and v <= ceiling else math.nan) for x, v in zip(xs, values, strict=True)
        )

    at = min(range(len(result.lrs)), key=lambda i: abs(result.lrs[i] - result.suggestion))
    return Chart(
        title=f"Learning-rate range test ({len(result.lrs)} steps, {result.stopped})",
        x_label="learning rate",
        x_ticks=tuple((float(d), f"1e{d}") for d in range(math.floor(xs[0]), math.ceil(xs[-1]) + 1)),
        y_label="training loss",
        series=(
            Series(name="loss", points=clip(result.losses), colour="#c6dbef", markers=False),
            Series(name="smoothed", points=clip(result.smoothed), colour=TAB10[0], markers=False),
        ),
        marked_x=math.log10(result.suggestion),
        marked_label=f"suggested {result.suggestion:.3g} (minimum / 10)",
        star=(xs[at], result.smoothed[at]) if math.isfinite(result.smoothed[at]) else None,
    )


def write_range_test(result: RangeTest, folder: Path, command: str) -> dict[str, Path]:
    """Write the folder's three files (see the module); returns them by name."""
    rows = ["step,lr,loss,smoothed"] + [
        f"{i},{lr:.6g},{loss:.6g},{smoothed:.6g}"
        for i, (lr, loss, smoothed) in enumerate(zip(result.lrs, result.losses, result.smoothed, strict=True))
    ]
    files = {
        "lr_find_picture": save_png(render(lr_chart(result)), folder / "lr_find.png"),
        "lr_find_curve": write_text(folder / "lr_find.csv", "\n".join(rows) + "\n"),
    }
    record = {
        "suggestion": result.suggestion,
        "stopped": result.stopped,
        "steps": len(result.lrs),
        "command": command,
        "artifacts": {name: path.name for name, path in files.items()},
    }
    files["lr_find_record"] = write_json(folder / "lr_find.json", record)
    return files

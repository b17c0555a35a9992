"""Reports the data set at the start of a fit; consumes FitStart, publishes nothing.

From ``context.data`` (the `(path, class index)` pairs of each split and the skipped
files) it prints, on rank zero, a table of images per class for train and validation
with the imbalance ratio (largest over smallest training class), a table of the image
sizes and modes seen, and warnings for classes with fewer than ``min_images`` training
images or none in validation. Sizes come from the headers of at most ``size_sample``
files per split, taken from each class in turn (PIL reads no pixels for them), so the
report stays fast on large sets; they are upright, after the EXIF orientation, as
training sees them.
Everything is also written to ``run_dir/dataset_stats/dataset_stats.json``.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import FitStart
from harness.core.options import at_least, option, positive
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.io.artifacts import write_json
from harness.io.tables import Table, write_table
from subscribers._dataset_report import build_report
from subscribers._tables import percent, print_table, print_warnings

__all__ = ["SPEC", "DatasetStats", "DatasetStatsSettings"]

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class DatasetStatsSettings(SubscriberSettings):
    """Images per class and split, imbalance, image sizes and warnings, at fit start."""

    on_error: OnError = on_error_option("isolate")

    min_images: int = option(5, "warn about classes with fewer training images", at_least(1))
    size_sample: int = option(200, "images per split whose size is read", positive())
    max_table_rows: int = option(50, "classes shown in the terminal table", positive())


class DatasetStats:
    """Images per class and split, imbalance, image sizes and warnings, once per fit."""

    def __init__(self, context: RunContext, settings: DatasetStatsSettings | None = None) -> None:
        self.context = context
        self.settings = settings or DatasetStatsSettings()

    def connect(self, bus: Bus) -> None:
        bus.subscribe(FitStart, self.on_fit_start, rank_zero_only=True)

    def on_fit_start(self, event: FitStart) -> None:
        context = self.context
        if context.data is None:
            log.warning("dataset_stats: RunContext.data is not set; no data set to report")
            return
        report = build_report(
            context.data,
            context.class_names,
            min_images=self.settings.min_images,
            size_sample=self.settings.size_sample,
        )
        path = write_json(context.layout.folder(SPEC.name) / "dataset_stats.json", report)
        context.record_artifact("dataset_stats", path)
        write_table(context.layout, SPEC.name, _table(report))
        if context.verbosity != "quiet":
            self._print_classes(report)
            self._print_sizes(report["image_sizes"])
        print_warnings("dataset_stats", report["warnings"])

    def _print_classes(self, report: dict[str, Any]) -> None:
        classes = report["classes"]
        limit = self.settings.max_table_rows
        note = ""
        if len(classes) > limit:
            classes = sorted(sorted(classes, key=lambda c: c["train"])[:limit], key=lambda c: c["index"])
            note = (
                f"; showing the {limit} of {len(report['classes'])} classes with the fewest training images"
            )
        total = max(report["train_images"], 1)
        ratio = report["imbalance_ratio"]
        caption = (
            f"{report['train_images']} training and {report['val_images']} validation images; "
            f"imbalance ratio {'unbounded (an empty class)' if ratio is None else f'{ratio:.1f}'} "
            f"(largest / smallest training class); {len(report['skipped'])} unreadable file(s) skipped{note}"
        )
        print_table(
            f"Images per class ({report['root']})",
            ["class", "train", "val", "train share"],
            ([c["name"], c["train"], c["val"], percent(c["train"] / total)] for c in classes),
            caption=caption,
        )

    def _print_sizes(self, sizes: dict[str, dict[str, Any]]) -> None:
        rows = []
        for split, stats in sizes.items():
            width, height = stats["width"], stats["height"]
            common = ", ".join(
                f"{s['width']}x{s['height']} ({s['count']})" for s in stats["common_sizes"][:3]
            )
            rows.append(
                [
                    split,
                    f"{stats['read']} of {stats['files']}",
                    "-" if width is None else f"{width['min']}-{width['max']}",
                    "-" if height is None else f"{height['min']}-{height['max']}",
                    common or "-",
                    ", ".join(stats["modes"]) or "-",
                ]
            )
        print_table(
            "Image sizes (from file headers)",
            ["split", "files read", "width", "height", "most common (count)", "modes"],
            rows,
        )


SPEC = SubscriberSpec(name="dataset_stats", build=DatasetStats, settings=DatasetStatsSettings)


def _table(report: dict[str, Any]) -> Table:
    """The report page's section: the headline figures, then images per class and split."""
    facts = [(k, v) for k, v in report.items() if isinstance(v, (int, float, str)) or v is None]
    rows = [(c["name"], c["train"], c["val"]) for c in report["classes"]]
    return Table(title="Data set", facts=facts, columns=("class", "train", "val"), rows=rows)

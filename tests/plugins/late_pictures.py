"""A plugin that draws a picture every epoch on the background writer, attached after the built-ins.

Tests put this folder on ``sys.path`` (the writer's worker process inherits it) and name
``late_pictures:SPEC`` in ``[run].plugins``.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from PIL import Image

from harness.core.bus import Bus
from harness.core.context import Record, RunContext
from harness.core.events import TrainEpochEnd, TrainEpochStart
from harness.core.spec import SubscriberSettings, SubscriberSpec
from harness.io.artifacts import atomic_path


def draw(path: Path, epoch: int, record: Record) -> None:
    """A small picture whose colour says the epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.new("RGB", (8, 8), (40 * epoch % 256, 90, 160)).save(tmp, format="PNG")
    record("late_pictures", path)


def copy(source: Path, target: Path, record: Record) -> None:
    shutil.copy(source, target)


class LatePictures:
    """Draws ``late_pictures/epoch_NNN.png`` at every `TrainEpochEnd`, on the background writer."""

    def __init__(self, context: RunContext, settings: SubscriberSettings) -> None:
        self.context = context

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end, rank_zero_only=True)

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        path = self.context.run_dir / "late_pictures" / f"epoch_{event.epoch:03d}.png"
        self.context.submit(
            "LatePictures", functools.partial(draw, path, event.epoch), step=event.global_step
        )


class PageOfTheFirstEpoch:
    """Copies ``report.html`` as the first epoch left it to ``report_after_epoch_0.html``.

    The copy is a job on the background writer submitted when the second epoch starts:
    after every job of the first epoch's end, and before any of the second's.
    """

    def __init__(self, context: RunContext, settings: SubscriberSettings) -> None:
        self.context = context
        self.target = context.run_dir / "report_after_epoch_0.html"

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochStart, self.on_train_epoch_start)

    def on_train_epoch_start(self, event: TrainEpochStart) -> None:
        if event.epoch == 1:
            page = self.context.run_dir / "report.html"
            self.context.submit("PageOfTheFirstEpoch", functools.partial(copy, page, self.target))


SPEC = SubscriberSpec(name="late_pictures", build=LatePictures)
FIRST_PAGE = SubscriberSpec(name="page_of_the_first_epoch", build=PageOfTheFirstEpoch)

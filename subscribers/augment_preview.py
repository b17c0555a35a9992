"""A grid of training images after augmentation, at fit start; consumes FitStart, publishes nothing.

What people look at first when accuracy is poor: are the crops too tight, the colours
too far off, the digits flipped? The images come from `RunContext.augmented_samples`
(the training data's own pipeline: crop, flips, policy, jitter, erasing, MixUp/CutMix),
drawn with a seed of their own so that training's random numbers are untouched; each is
titled with its class (for a mixed image, the class with the largest share). Writes
``run_dir/augment_preview.png`` on rank zero, on the background writer; a resumed run
keeps the picture it has.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch

from harness.core.bus import Bus
from harness.core.context import Record, RunContext
from harness.core.events import FitStart
from harness.core.options import option, positive
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.io.artifacts import save_figure
from subscribers._draw import name_fonts, new_figure, shorten
from subscribers._draw_samples import unnormalise

__all__ = ["SPEC", "AugmentPreview", "AugmentPreviewSettings"]

FILE = "augment_preview.png"
_CELL = 1.3  # inches per image
_TITLE = 0.3  # inches above each image for its class


@attrs.frozen(kw_only=True)
class AugmentPreviewSettings(SubscriberSettings):
    """A grid of augmented training images with their classes, written at fit start."""

    on_error: OnError = on_error_option("isolate")

    count: int = option(32, "images in the grid (they cycle through the classes)", positive())
    seed: int = option(0, "which augmentations are drawn")


def draw_preview(path: Path, images: torch.Tensor, labels: Sequence[str], record: Record) -> None:
    """The job: `images` (N x C x H x W in [0, 1]) in a grid, each titled with its label."""
    columns = max(1, math.ceil(math.sqrt(len(images) * 1.5)))
    rows = max(1, math.ceil(len(images) / columns))
    fonts = name_fonts()
    limit = int(_CELL * 72 / (0.55 * 7))
    with new_figure(columns * _CELL, rows * (_CELL + _TITLE) + 0.4, layout=None) as figure:
        figure.suptitle("Training images after augmentation", fontsize=10, y=1.0, va="top")
        top = rows * (_CELL + _TITLE) / (rows * (_CELL + _TITLE) + 0.4)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            row, column = divmod(index, columns)
            axes = figure.add_axes(
                (
                    column / columns,
                    top * (1 - (row + 1) / rows),
                    1 / columns,
                    top * _CELL / (rows * (_CELL + _TITLE)),
                )
            )
            axes.set_axis_off()
            pixels = image.permute(1, 2, 0).numpy()
            axes.imshow(pixels, interpolation="nearest", vmin=0.0, vmax=1.0)
            axes.text(
                0.5, 1.02, shorten(label, limit), transform=axes.transAxes, ha="center", va="bottom",
                fontsize=7, family=fonts, parse_math=False,
            )  # fmt: skip
        record("augment_preview", save_figure(figure, path))


class AugmentPreview:
    """At `FitStart` (not a resumed one), submits the grid of augmented training images."""

    def __init__(self, context: RunContext, settings: AugmentPreviewSettings | None = None) -> None:
        self.context = context
        self.settings = settings or AugmentPreviewSettings()

    def connect(self, bus: Bus) -> None:
        bus.subscribe(FitStart, self.on_fit_start, rank_zero_only=True)

    def on_fit_start(self, event: FitStart) -> None:
        context = self.context
        samples = context.augmented_samples
        path = context.run_dir / FILE
        if samples is None or (event.resumed and path.is_file()):
            return
        images, targets = samples(self.settings.count, self.settings.seed)
        shown = unnormalise(images.float(), context.preprocessing.mean, context.preprocessing.std).cpu()
        labels = [context.class_names[int(target)] for target in targets.tolist()]
        context.submit(
            "AugmentPreview", functools.partial(draw_preview, path, shown, labels), step=event.global_step
        )


SPEC = SubscriberSpec(name="augment_preview", build=AugmentPreview, settings=AugmentPreviewSettings)

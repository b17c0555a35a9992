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
import numpy as np
import numpy.typing as npt
from PIL import Image

from harness.core.bus import Bus
from harness.core.context import Record, RunContext
from harness.core.events import FitStart
from harness.core.options import option, positive
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.pictures.raster import Canvas, save_png
from harness.pictures.text import shorten
from subscribers._draw_samples import to_pixels, unnormalise

__all__ = ["SPEC", "AugmentPreview", "AugmentPreviewSettings"]

FILE = "augment_preview.png"
_CELL = 96  # pixels per image
_TITLE = 18  # pixels above each image for its class
_HEADER = 28  # pixels above the grid for its title


@attrs.frozen(kw_only=True)
class AugmentPreviewSettings(SubscriberSettings):
    """A grid of augmented training images with their classes, written at fit start."""

    on_error: OnError = on_error_option("isolate")

    count: int = option(32, "images in the grid (they cycle through the classes)", positive())
    seed: int = option(0, "which augmentations are drawn")


def draw_preview(path: Path, pixels: npt.NDArray[np.uint8], labels: Sequence[str], record: Record) -> None:
    """The job: `pixels` (N x H x W x C, 8-bit) in a grid, each titled with its label."""
    columns = max(1, math.ceil(math.sqrt(len(pixels) * 1.5)))
    rows = max(1, math.ceil(len(pixels) / columns))
    canvas = Canvas(columns * _CELL, _HEADER + rows * (_CELL + _TITLE))
    canvas.text((columns * _CELL / 2, _HEADER / 2), "Training images after augmentation", 14, anchor="mm")
    limit = max(4, _CELL // 7)
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        row, column = divmod(index, columns)
        left, top = column * _CELL, _HEADER + row * (_CELL + _TITLE)
        picture = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).convert("RGB")
        canvas.paste(picture.resize((_CELL - 4, _CELL - 4), Image.Resampling.NEAREST), left + 2, top + _TITLE)
        canvas.text((left + _CELL / 2, top + _TITLE / 2), shorten(label, limit), 11, anchor="mm")
    record("augment_preview", save_png(canvas.image, path))


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
        shown = to_pixels(unnormalise(images.float(), context.preprocessing.mean, context.preprocessing.std))
        labels = [context.class_names[int(target)] for target in targets.tolist()]
        context.submit(
            "AugmentPreview", functools.partial(draw_preview, path, shown, labels), step=event.global_step
        )


SPEC = SubscriberSpec(name="augment_preview", build=AugmentPreview, settings=AugmentPreviewSettings)

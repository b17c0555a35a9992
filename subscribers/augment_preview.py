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

import attrs

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import FitStart
from harness.core.options import option, positive
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from subscribers._draw_preview import draw_preview
from subscribers._draw_samples import to_pixels, unnormalise

__all__ = ["SPEC", "AugmentPreview", "AugmentPreviewSettings"]

FILE = "augment_preview.png"


@attrs.frozen(kw_only=True)
class AugmentPreviewSettings(SubscriberSettings):
    """A grid of augmented training images with their classes, written at fit start."""

    on_error: OnError = on_error_option("isolate")

    count: int = option(32, "images in the grid (they cycle through the classes)", positive())
    seed: int = option(0, "which augmentations are drawn")


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
            SPEC.name, functools.partial(draw_preview, path, shown, labels), step=event.global_step
        )


SPEC = SubscriberSpec(name="augment_preview", build=AugmentPreview, settings=AugmentPreviewSettings)

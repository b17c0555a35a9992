"""The recipe a run trained with, as typed records: `Recipe` and the flip probe's `FlipProbe`.

`harness.training.recipe` makes them (it reads the images); the run's summary records them.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["PHOTO_KEEP", "FlipProbe", "Recipe"]

PHOTO_KEEP = 0.6
"""The share of its plain score from which mirrored images count as photos.

Measured (40 images a class, 16 px): Fashion-MNIST keeps 0.84 (its shoes all face left),
the embedded digits 0.33-0.40 (seeds 0-2).
"""


@attrs.frozen(kw_only=True)
class FlipProbe:
    """Nearest-class-mean top-1 on `images` training images, as they are and mirrored."""

    images: int
    top1: float
    mirrored_top1: float
    chance: float

    @property
    def keeps(self) -> float:
        """The share of the plain score the mirrored images keep."""
        return self.mirrored_top1 / self.top1 if self.top1 > 0 else 0.0

    @property
    def verdict(self) -> Literal["photos", "symbols"]:
        informative = self.top1 >= 2 * self.chance
        return "photos" if informative and self.keeps >= PHOTO_KEEP else "symbols"


@attrs.frozen(kw_only=True)
class Recipe:
    """The concrete choices a run trains with, and where each came from."""

    preset: Literal["photos", "symbols"]
    preset_from: Literal["settings", "probe"]
    probe: FlipProbe | None
    hflip: float
    hflip_from: Literal["settings", "preset"]
    crop_ratio: tuple[float, float]
    sampling: Literal["shuffle", "balanced"]
    sampling_from: Literal["settings", "auto"]
    imbalance: float
    class_weights: bool

    def describe(self) -> str:
        """One line for the terminal."""
        if self.probe is not None:
            probe = self.probe
            why = (
                f"flip probe: mirrored images keep {probe.keeps:.0%} of nearest-class-mean top-1 "
                f"({probe.mirrored_top1:.2f} of {probe.top1:.2f}, {probe.images} images)"
            )
        else:
            why = "[augment].preset"
        weighted = ", loss weighted 1 / class count" if self.class_weights else ""
        return (
            f"recipe: {self.preset} ({why}): hflip {self.hflip:g}, crop ratio "
            f"{self.crop_ratio[0]:.2f}-{self.crop_ratio[1]:.2f}; sampling {self.sampling} "
            f"(classes {self.imbalance:.1f}:1){weighted}"
        )

"""Validation samples: which ones are shown (bottom-k by a seeded hash) and the grid of them.

Which images are shown must not change between epochs, or epochs cannot be compared, and
must not depend on how many batches validation has (``limit_val_batches``, a resume).
Each sample's position in the validation stream gets a priority, a hash of the seed and
the position; the `count` samples of lowest priority are shown. That is a uniform sample
of whatever the stream holds, the same one for the same stream, found in one pass while
keeping only `count` images (bottom-k sampling).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch

from harness.artifacts import save_figure
from subscribers._draw import name_fonts, new_figure, shorten

__all__ = ["Shown", "draw_samples", "priority", "unnormalise"]

_CELL = 1.9  # inches per image
_TITLE_SIZE = 8.0
_RIGHT = "#1b7a36"
_WRONG = "#c0392b"


@attrs.frozen(kw_only=True)
class Shown:
    """One sample on the grid: its image (C x H x W in [0, 1], CPU) and what the model said."""

    position: int
    image: torch.Tensor
    target: int
    predicted: int
    confidence: float

    @property
    def correct(self) -> bool:
        return self.target == self.predicted


def priority(seed: int, position: int) -> int:
    """The sample at `position` is shown when its priority is among the `count` lowest."""
    digest = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def unnormalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``(x - mean) / std`` per channel and clamp to [0, 1] for display."""
    channels = images.shape[1]
    shape = (1, channels, 1, 1)
    mean_t = torch.tensor(mean[:channels], dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.tensor(std[:channels], dtype=images.dtype, device=images.device).view(shape)
    return (images * std_t + mean_t).clamp(0.0, 1.0)


def draw_samples(
    path: Path, shown: Sequence[Shown], class_names: Sequence[str], *, epoch: int, seed: int
) -> Path:
    """A grid of `shown` (in order), each titled with true and predicted class; wrong ones framed red."""
    columns = max(1, math.ceil(math.sqrt(len(shown))))
    rows = max(1, math.ceil(len(shown) / columns))
    limit = int(_CELL * 72 / (0.55 * _TITLE_SIZE))
    fonts = name_fonts()
    wrong = sum(not sample.correct for sample in shown)
    with new_figure(columns * _CELL + 0.2, rows * (_CELL + 0.5) + 0.7) as figure:
        figure.suptitle(
            f"Validation samples, epoch {epoch}: {wrong} of {len(shown)} wrong\n"
            f"the same images every epoch (seed {seed})",
            fontsize=11,
        )
        for index, sample in enumerate(shown):
            axes = figure.add_subplot(rows, columns, index + 1)
            image = sample.image.permute(1, 2, 0).numpy()
            if image.shape[2] == 1:
                axes.imshow(image[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                axes.imshow(image, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            mark, colour = ("✓", _RIGHT) if sample.correct else ("✗", _WRONG)
            true_name = shorten(class_names[sample.target], limit - 6)
            predicted_name = shorten(class_names[sample.predicted], limit - 12)
            axes.set_title(
                f"true: {true_name}\n{mark} pred: {predicted_name} ({sample.confidence:.0%})",
                fontsize=_TITLE_SIZE,
                color=colour,
                family=fonts,
                linespacing=1.2,
            )
            for spine in axes.spines.values():
                spine.set(color=colour, linewidth=1 if sample.correct else 3)
        return save_figure(figure, path)

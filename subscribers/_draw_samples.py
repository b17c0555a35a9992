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

from harness.core.context import Record
from harness.io.artifacts import save_figure, write_json
from subscribers._draw import all_of, epoch_file, literal, name_fonts, new_figure, publish_latest, shorten

__all__ = ["Shown", "draw_samples", "priority", "unnormalise", "write_epoch"]

_CELL = 1.9  # inches per image
_GAP = 0.1  # inches between two columns
_TITLE_BAND = 0.5  # inches above each image for its two lines of title
_HEADER = 0.4  # inches above the grid for the figure's title
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


def write_epoch(
    run_dir: Path, names: Sequence[str], shown: Sequence[Shown], epoch: int, seed: int, record: Record
) -> None:
    """The `Samples` job: one epoch's list and grid under ``run_dir/samples/``, the `latest`
    copies refreshed, each file recorded; the list first, kept if the grid fails."""
    directory = run_dir / "samples"

    def listing() -> None:
        written = write_json(
            epoch_file(directory, epoch, ".json"),
            [
                {
                    "position": sample.position,
                    "true": names[sample.target],
                    "predicted": names[sample.predicted],
                    "confidence": round(sample.confidence, 4),
                    "correct": sample.correct,
                }
                for sample in shown
            ],
        )
        for path in (written, publish_latest(written)):
            record(path.relative_to(run_dir).as_posix(), path)

    def picture() -> None:
        drawn = draw_samples(epoch_file(directory, epoch, ".png"), shown, names, epoch=epoch, seed=seed)
        for path in (drawn, publish_latest(drawn)):
            record(path.relative_to(run_dir).as_posix(), path)

    all_of(listing, picture)


def draw_samples(
    path: Path, shown: Sequence[Shown], class_names: Sequence[str], *, epoch: int, seed: int
) -> Path:
    """A grid of `shown` (in order), each titled with true and predicted class; wrong ones framed red.

    The grid is one set of axes measured in inches, every image placed on it by its extent:
    a subplot per image would cost ten times as long to lay out and draw.
    """
    from matplotlib.patches import Rectangle

    columns = max(1, math.ceil(math.sqrt(len(shown))))
    rows = max(1, math.ceil(len(shown) / columns))
    limit = int(_CELL * 72 / (0.55 * _TITLE_SIZE))
    fonts = name_fonts()
    wrong = sum(not sample.correct for sample in shown)
    width = columns * _CELL + (columns - 1) * _GAP
    height = rows * (_CELL + _TITLE_BAND)
    with new_figure(width, height + _HEADER, layout=None) as figure:
        figure.suptitle(
            f"Validation samples, epoch {epoch}: {wrong} of {len(shown)} wrong\n"
            f"the same images every epoch (seed {seed})",
            fontsize=11,
            y=1.0,
            va="top",
        )
        axes = figure.add_axes((0.0, 0.0, 1.0, height / (height + _HEADER)))
        axes.set_axis_off()
        axes.set_xlim(0.0, width)
        axes.set_ylim(0.0, height)
        for index, sample in enumerate(shown):
            row, column = divmod(index, columns)
            left = column * (_CELL + _GAP)
            top = height - row * (_CELL + _TITLE_BAND) - _TITLE_BAND
            extent = (left, left + _CELL, top - _CELL, top)
            image = sample.image.permute(1, 2, 0).numpy()
            if image.shape[2] == 1:
                axes.imshow(
                    image[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest",
                    extent=extent, aspect="auto",
                )  # fmt: skip
            else:
                axes.imshow(image, interpolation="nearest", extent=extent, aspect="auto")
            mark, colour = ("✓", _RIGHT) if sample.correct else ("✗", _WRONG)
            axes.add_patch(
                Rectangle(
                    (left, top - _CELL), _CELL, _CELL, fill=False, edgecolor=colour,
                    linewidth=1 if sample.correct else 3, clip_on=False,
                )
            )  # fmt: skip
            true_name = literal(shorten(class_names[sample.target], limit - 6))
            predicted_name = literal(shorten(class_names[sample.predicted], limit - 12))
            axes.text(
                left + _CELL / 2,
                top + 0.06,
                f"true: {true_name}\n{mark} pred: {predicted_name} ({sample.confidence:.0%})",
                ha="center",
                va="bottom",
                fontsize=_TITLE_SIZE,
                color=colour,
                family=fonts,
                linespacing=1.2,
            )
        return save_figure(figure, path)

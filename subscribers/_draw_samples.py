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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt
from PIL import Image

from harness.io.artifacts import write_json
from harness.pictures.mosaic import Tile, caption_limit, draw_mosaic
from harness.pictures.raster import save_png
from harness.pictures.text import shorten
from subscribers._draw import all_of, epoch_file, publish_latest

if TYPE_CHECKING:
    import torch

    from harness.core.context import Record

__all__ = ["Shown", "draw_samples", "priority", "to_pixels", "unnormalise", "write_epoch", "write_test"]

_RIGHT = "#1b7a36"
_WRONG = "#c0392b"


@attrs.frozen(kw_only=True)
class Shown:
    """One sample on the grid: its image (H x W x C, 8-bit, C 1 or 3) and what the model said."""

    position: int
    image: npt.NDArray[np.uint8]
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
    import torch

    channels = images.shape[1]
    shape = (1, channels, 1, 1)
    mean_t = torch.tensor(mean[:channels], dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.tensor(std[:channels], dtype=images.dtype, device=images.device).view(shape)
    return (images * std_t + mean_t).clamp(0.0, 1.0)


def to_pixels(images: torch.Tensor) -> npt.NDArray[np.uint8]:
    """N x C x H x W in [0, 1] as N x H x W x C 8-bit pixels on the host (what `Shown` holds)."""
    scaled = (images.detach().float().clamp(0.0, 1.0) * 255.0).round().byte()
    return np.ascontiguousarray(scaled.permute(0, 2, 3, 1).cpu().numpy())


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


def write_test(
    run_dir: Path, names: Sequence[str], shown: Sequence[Shown], seed: int, record: Record
) -> None:
    """The `Samples` job for an evaluation: ``samples/test.json`` and ``test.png``, each recorded."""
    directory = run_dir / "samples"
    wrong = sum(not sample.correct for sample in shown)
    heading = (
        f"Test samples: {wrong} of {len(shown)} wrong\na seeded sample of the evaluated images (seed {seed})"
    )

    def listing() -> None:
        rows = [
            {
                "position": sample.position,
                "true": names[sample.target],
                "predicted": names[sample.predicted],
                "confidence": round(sample.confidence, 4),
                "correct": sample.correct,
            }
            for sample in shown
        ]
        written = write_json(directory / "test.json", rows)
        record(written.relative_to(run_dir).as_posix(), written)

    def picture() -> None:
        drawn = draw_samples(directory / "test.png", shown, names, epoch=0, seed=seed, heading=heading)
        record(drawn.relative_to(run_dir).as_posix(), drawn)

    all_of(listing, picture)


def draw_samples(
    path: Path,
    shown: Sequence[Shown],
    class_names: Sequence[str],
    *,
    epoch: int,
    seed: int,
    heading: str | None = None,
) -> Path:
    """A grid of `shown` (in order), each titled with true and predicted class; wrong ones framed red.

    A mosaic of pixels (`harness.pictures.mosaic`): each image scaled to its cell with
    nearest neighbours (the pixels the model saw), two lines of text above it.
    """
    limit = caption_limit()
    wrong = sum(not sample.correct for sample in shown)
    tiles = []
    for sample in shown:
        pixels = sample.image[:, :, 0] if sample.image.shape[2] == 1 else sample.image
        mark, colour = ("✓", _RIGHT) if sample.correct else ("✗", _WRONG)
        true_name = shorten(class_names[sample.target], limit - 6)
        predicted_name = shorten(class_names[sample.predicted], limit - 12)
        tiles.append(
            Tile(
                image=Image.fromarray(pixels),
                caption=f"true: {true_name}\n{mark} pred: {predicted_name} ({sample.confidence:.0%})",
                colour=colour,
                frame=1 if sample.correct else 4,
            )
        )
    picture = draw_mosaic(
        tiles,
        heading=heading
        or f"Validation samples, epoch {epoch}: {wrong} of {len(shown)} wrong\n"
        f"the same images every epoch (seed {seed})",
        caption_lines=2,
    )
    return save_png(picture, path)

"""JPEGs decoded on the GPU (`[data].decode = "gpu"`): the loader's workers read bytes only.

With ``decode = "gpu"`` the data loader's workers read each file's bytes
(`EncodedFiles`) and `decode_batch` turns a batch of them into the model's input on the
device, before Lightning moves the batch: the JPEGs in one
``torchvision.io.decode_jpeg(device=...)`` call (nvJPEG on a CUDA device), any other
format by ``torchvision.io.decode_image`` on the host, then each image through the same
torchvision v2 transform the CPU path applies to a PIL image (`harness.training.augment`),
on the device. Grey and CMYK JPEGs are read as RGB, as `harness.io.images.load_rgb` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torchvision
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode

__all__ = ["EncodedFiles", "collate_encoded", "decode_batch", "is_jpeg"]

_JPEG_START = bytes((0xFF, 0xD8, 0xFF))

# A `harness.training.augment.Transform`: its torchvision v2 steps take a PIL image or a tensor.
ImageTransform = Callable[..., torch.Tensor]


class EncodedFiles(Dataset[tuple[torch.Tensor, int]]):
    """`(path, class index)` pairs read as their files' bytes (a 1-d uint8 tensor each)."""

    def __init__(self, samples: Sequence[tuple[str | Path, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        return torchvision.io.read_file(str(path)), target


def collate_encoded(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A batch of files' bytes (of different lengths, so a list) and their class indices."""
    return [data for data, _ in batch], torch.tensor([target for _, target in batch])


def is_jpeg(data: torch.Tensor) -> bool:
    """Whether the bytes start as a JPEG file does."""
    return bytes(data[:3].tolist()) == _JPEG_START


def decode_batch(
    data: Sequence[torch.Tensor], transform: ImageTransform, device: torch.device | str
) -> torch.Tensor:
    """The files' bytes as one input batch on `device`: decoded there (JPEGs), transformed there."""
    jpegs = [i for i, item in enumerate(data) if is_jpeg(item)]
    decoded: dict[int, torch.Tensor] = {}
    if jpegs:
        batch = torchvision.io.decode_jpeg([data[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        decoded = dict(zip(jpegs, batch, strict=True))
    images = [
        decoded[i] if i in decoded else torchvision.io.decode_image(item, mode=ImageReadMode.RGB).to(device)
        for i, item in enumerate(data)
    ]
    return torch.stack([transform(image) for image in images])

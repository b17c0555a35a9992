"""Image transforms: the evaluation preprocessing, the training augmentation, and batch mixing.

`eval_transform` applies a `Preprocessing` record with torchvision exactly as
`harness.io.images.to_input` applies it with Pillow (the same `resized_size` and
`crop_box`). `train_transform` replaces the resize by the ``[augment]`` table's random
resized crop and adds flips, an auto-augment policy, colour jitter and random erasing.

The training crop lives in the evaluation frame, so that the model trains on the
picture it is validated on: with ``resize = "squash"`` the whole image is squashed to
the square first and the crop is cut from that square (a full-scale crop is the
evaluation input itself, whatever the image's aspect); with ``"crop"`` it follows timm
(a random resized crop of the original, aspect ratio against the square in
`AugmentSettings.ratio_range`, 3/4 to 4/3 by default), where evaluation keeps the
aspect and cuts the centre.

`BatchMixer` is the training loader's collate function when MixUp or CutMix is on: a
batch becomes ``(inputs, targets, soft_targets)``, where `targets` stay class indices
(the class with the largest share of each mixed image) and `soft_targets` are the mixed
label distributions the loss uses.

All randomness comes from torch's generator, which `lightning.seed_everything` seeds (and,
with ``workers=True``, each loader worker from it): the same seed gives the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from harness.core.preprocessing import Preprocessing
from harness.settings import AugmentSettings

__all__ = ["BatchMixer", "Transform", "eval_transform", "train_transform"]

Transform = Callable[[Image.Image], torch.Tensor]


class _Geometry(torch.nn.Module):
    """The resize (and centre crop) of a `Preprocessing` record, on a uint8 image tensor."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.preprocessing = preprocessing

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        spec = self.preprocessing
        height, width = image.shape[-2:]
        new_width, new_height = spec.resized_size(width, height)
        if (new_width, new_height) != (width, height):
            image = TF.resize(image, [new_height, new_width], antialias=True)
        if (new_width, new_height) != (spec.image_size, spec.image_size):
            left, top = spec.crop_box(new_width, new_height)
            image = TF.crop(image, top, left, spec.image_size, spec.image_size)
        return image


def _normalise(preprocessing: Preprocessing) -> list[v2.Transform]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
    ]


def eval_transform(preprocessing: Preprocessing) -> Transform:
    """A PIL RGB image as the model's input, with no randomness (validation, export, preview)."""
    transform: Transform = v2.Compose([v2.ToImage(), _Geometry(preprocessing), *_normalise(preprocessing)])
    return transform


def _policy(settings: AugmentSettings) -> list[v2.Transform]:
    if settings.auto_augment == "trivial":
        return [v2.TrivialAugmentWide()]
    if settings.auto_augment == "rand":
        return [v2.RandAugment(magnitude=settings.magnitude)]
    if settings.auto_augment == "auto":
        return [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)]
    return []


def train_transform(preprocessing: Preprocessing, settings: AugmentSettings) -> Transform:
    """The training pipeline: crop, flip, policy, jitter on uint8; erasing after normalising.

    ``crop_scale = crop_ratio = [1, 1]`` keeps the evaluation geometry instead of a random
    crop, so that only the other augmentations differ from validation.
    """
    size = preprocessing.image_size
    ratio = settings.ratio_range(preprocessing.resize)
    steps: list[torch.nn.Module] = [v2.ToImage()]
    if settings.crop_scale == (1.0, 1.0) and ratio == (1.0, 1.0):
        steps.append(_Geometry(preprocessing))
    else:
        if preprocessing.resize == "squash":
            steps.append(v2.Resize((size, size), antialias=True))
        steps.append(v2.RandomResizedCrop(size, scale=settings.crop_scale, ratio=ratio, antialias=True))
    flip = settings.flip_probability
    if flip > 0:
        steps.append(v2.RandomHorizontalFlip(flip))
    steps += _policy(settings)
    if settings.color_jitter > 0:
        strength = settings.color_jitter
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength))
    steps += _normalise(preprocessing)
    if settings.erasing > 0:
        steps.append(v2.RandomErasing(settings.erasing, value=0))
    transform: Transform = v2.Compose(steps)
    return transform


class BatchMixer:
    """Collate a training batch and mix it: MixUp or CutMix, one per batch, with `mix_prob`.

    Returns ``(inputs, targets, soft_targets)``: the mixed images, the class with the
    largest share of each (integer indices, what `BatchEnd.targets` carries) and the mixed
    one-hot distributions (float, rows summing to one) for a soft-target loss. A batch
    left unmixed gets one-hot `soft_targets`.
    """

    def __init__(self, settings: AugmentSettings, num_classes: int) -> None:
        self.settings = settings
        self.num_classes = num_classes
        self._mixers: list[v2.Transform] = []
        if settings.mixup_alpha > 0:
            self._mixers.append(v2.MixUp(alpha=settings.mixup_alpha, num_classes=num_classes))
        if settings.cutmix_alpha > 0:
            self._mixers.append(v2.CutMix(alpha=settings.cutmix_alpha, num_classes=num_classes))

    def __call__(
        self, samples: Sequence[tuple[torch.Tensor, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = torch.stack([image for image, _ in samples])
        labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        soft = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if self._mixers and len(samples) > 1 and float(torch.rand(())) < self.settings.mix_prob:
            choice = int(torch.randint(len(self._mixers), ())) if len(self._mixers) > 1 else 0
            inputs, soft = self._mixers[choice](inputs, labels)
        return inputs, soft.argmax(dim=1), soft

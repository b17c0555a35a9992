"""harness.training.augment: seeded training augmentation, untouched validation, mixing, crop geometry."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from harness.core.preprocessing import Preprocessing
from harness.io.images import load_rgb, to_input
from harness.settings import AugmentSettings, DataSettings
from harness.training.augment import BatchMixer, eval_transform, train_transform
from harness.training.data import ImageDataModule, scan

RECIPE = AugmentSettings(hflip=0.5, auto_augment="trivial", color_jitter=0.3, erasing=0.5)


def datamodule(root: Path, augment: AugmentSettings, batch_size: int = 8) -> ImageDataModule:
    settings = DataSettings(root=str(root), image_size=16, batch_size=batch_size)
    info, _ = scan(settings, seed=0)
    return ImageDataModule(info, settings.preprocessing(), settings, None, augment)


def first_batch(module: ImageDataModule, seed: int, *, train: bool) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    loader = module.train_dataloader() if train else module.val_dataloader()
    return list(next(iter(loader)))


def test_training_images_are_augmented_and_seeded(tiny_imagefolder: Path) -> None:
    module = datamodule(tiny_imagefolder, RECIPE)
    plain = datamodule(
        tiny_imagefolder, AugmentSettings(crop_scale=(1, 1), crop_ratio=(1, 1), color_jitter=0)
    )
    once, again, other = (first_batch(module, seed, train=True) for seed in (0, 0, 1))
    assert torch.equal(once[0], again[0]) and torch.equal(once[1], again[1])
    assert not torch.equal(once[0], other[0])
    torch.manual_seed(0)
    order = [int(i) for i in torch.randperm(len(module.train_set))[:8]]
    unaugmented = torch.stack([plain.train_set[i][0] for i in order])
    assert once[0].shape == unaugmented.shape
    assert not torch.allclose(once[0], unaugmented, atol=1e-3)


def test_validation_never_sees_the_augmentation(tiny_imagefolder: Path) -> None:
    augmented = datamodule(tiny_imagefolder, RECIPE)
    bare = datamodule(tiny_imagefolder, AugmentSettings())
    for seed in (0, 1):
        got = first_batch(augmented, seed, train=False)
        assert torch.equal(got[0], first_batch(bare, 5, train=False)[0])


def test_mixed_batches_keep_integer_class_targets(tiny_imagefolder: Path) -> None:
    module = datamodule(tiny_imagefolder, AugmentSettings(mixup_alpha=0.4, cutmix_alpha=1.0))
    inputs, targets, soft = first_batch(module, 0, train=True)
    assert targets.dtype == torch.long and targets.shape == (8,)
    assert soft.shape == (8, 3) and torch.allclose(soft.sum(1), torch.ones(8))
    assert torch.equal(targets, soft.argmax(1))
    assert (soft.max(1).values < 1).any(), "the batch should be mixed"
    assert inputs.shape == (8, 3, 16, 16)


def test_an_unmixed_batch_gets_one_hot_soft_targets() -> None:
    mixer = BatchMixer(AugmentSettings(mixup_alpha=0.4, mix_prob=0.0), num_classes=4)
    samples = [(torch.full((3, 4, 4), float(i)), i % 4) for i in range(6)]
    inputs, targets, soft = mixer(samples)
    assert targets.tolist() == [0, 1, 2, 3, 0, 1]
    assert torch.equal(soft, torch.nn.functional.one_hot(targets, 4).float())
    assert torch.equal(inputs[5], samples[5][0])


def test_a_last_batch_of_one_image_is_dropped(tiny_imagefolder: Path) -> None:
    train = len(datamodule(tiny_imagefolder, AugmentSettings()).train_set)
    module = datamodule(tiny_imagefolder, AugmentSettings(), batch_size=train - 1)
    sizes = [len(batch[1]) for batch in module.train_dataloader()]
    assert sizes == [train - 1]
    even = datamodule(tiny_imagefolder, AugmentSettings(), batch_size=train - 2)
    assert [len(batch[1]) for batch in even.train_dataloader()] == [train - 2, 2]


def test_validation_order_mixes_the_classes(tiny_imagefolder: Path) -> None:
    info, _ = scan(DataSettings(root=str(tiny_imagefolder)), seed=0)
    first = [target for _, target in info.val[:4]]
    assert len(set(first)) > 1, "folder order would put one class first"
    assert scan(DataSettings(root=str(tiny_imagefolder)), seed=0)[0].val == info.val


def test_preview_is_seeded_cycles_classes_and_leaves_training_random_numbers_alone(
    tiny_imagefolder: Path,
) -> None:
    module = datamodule(tiny_imagefolder, RECIPE)
    torch.manual_seed(3)
    images, targets = module.preview(6, seed=0)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(1), after)
    assert targets.tolist() == [0, 1, 2, 0, 1, 2]
    assert images.shape == (6, 3, 16, 16)
    assert torch.equal(module.preview(6, seed=0)[0], images)
    assert not torch.equal(module.preview(6, seed=1)[0], images)


@pytest.mark.parametrize("size", [(40, 24), (24, 40), (33, 33), (16, 70)])
def test_crop_preprocessing_agrees_between_torchvision_and_pillow(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    spec = Preprocessing(image_size=16, resize="crop", crop_fraction=0.8)
    rng = np.random.default_rng(0)
    # A smooth picture: resampling differences stay within a grey level.
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    pixels = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) % 256], -1).astype(np.uint8)
    pixels[..., 2] = rng.integers(100, 110, pixels.shape[:2])
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    torch_side = eval_transform(spec)(load_rgb(path)).numpy()
    pillow_side = to_input(load_rgb(path), spec)
    assert torch_side.shape == pillow_side.shape == (3, 16, 16)
    grey_level = 1.0 / 255 / min(spec.std)
    np.testing.assert_allclose(pillow_side, torch_side, atol=2 * grey_level, rtol=0)
    squash = to_input(load_rgb(path), attrs.evolve(spec, resize="squash"))
    if size[0] != size[1]:
        assert np.abs(squash - pillow_side).max() > 4 * grey_level, "a crop should differ from a squash"


def test_crop_geometry_is_timms() -> None:
    spec = Preprocessing(image_size=224, resize="crop", crop_fraction=0.875)
    assert spec.resized_size(500, 375) == (341, 256)
    assert spec.crop_box(341, 256) == (58, 16)
    assert Preprocessing(image_size=16).resized_size(40, 20) == (16, 16)


def test_no_crop_keeps_the_evaluation_geometry(tiny_imagefolder: Path) -> None:
    spec = Preprocessing(image_size=16)
    image = load_rgb(next(tiny_imagefolder.rglob("*.png")))
    steady = AugmentSettings(crop_scale=(1, 1), crop_ratio=(1, 1), color_jitter=0)
    assert torch.equal(train_transform(spec, steady)(image), eval_transform(spec)(image))


def non_square_image(width: int = 22, height: int = 41) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_a_full_scale_squash_crop_is_the_evaluation_input_of_a_non_square_image() -> None:
    """The crop is cut from the squashed square, not a near-square middle piece of the original."""
    image = non_square_image()
    preprocessing = Preprocessing(image_size=16, resize="squash")
    full_scale = AugmentSettings(crop_scale=(1, 1), color_jitter=0, hflip=0)
    for seed in range(3):
        torch.manual_seed(seed)
        trained = train_transform(preprocessing, full_scale)(image)
        assert torch.equal(trained, eval_transform(preprocessing)(image))


def test_squash_crops_keep_the_whole_height_of_a_tall_image_in_view() -> None:
    """Every training crop of a tall image spans most of its height, as the squashed input does."""
    image = Image.new("RGB", (22, 41))
    image.paste((255, 255, 255), (0, 0, 22, 6))  # a bar along the top
    image.paste((255, 255, 255), (0, 35, 22, 41))  # and one along the bottom
    preprocessing = Preprocessing(image_size=16, resize="squash", mean=(0, 0, 0), std=(1, 1, 1))
    crop = AugmentSettings(crop_scale=(0.9, 1), color_jitter=0, hflip=0)
    for seed in range(10):
        torch.manual_seed(seed)
        trained = train_transform(preprocessing, crop)(image)
        rows = trained.mean(dim=(0, 2))
        assert rows[:2].max() > 0.5 and rows[-2:].max() > 0.5, seed


def test_crop_resize_trains_on_timm_crops_of_the_original() -> None:
    """``resize = "crop"``: a random resized crop of the original, aspect 3/4 to 4/3 against the square."""
    image = non_square_image()
    preprocessing = Preprocessing(image_size=16, resize="crop", crop_fraction=0.875)
    full_scale = AugmentSettings(crop_scale=(1, 1), color_jitter=0, hflip=0)
    torch.manual_seed(0)
    trained = train_transform(preprocessing, full_scale)(image)
    # 22 x 41 is taller than 3/4 allows: the whole width, 22 / (3/4) = 29 rows from the centre.
    expected = v2.functional.resized_crop(
        v2.functional.to_image(image), 6, 0, 29, 22, [16, 16], antialias=True
    )
    normalise = v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(preprocessing.mean), list(preprocessing.std)),
        ]
    )
    assert torch.allclose(trained, normalise(expected))

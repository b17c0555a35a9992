"""The recipe a run trains with, fitted to its data: the preset (photos or symbols) and the sampling.

`resolve_recipe` turns the settings' open choices into concrete ones, before training,
and says how each was made:

- the preset (``[augment].preset``): ``"photos"`` flip horizontally, ``"symbols"`` (digits,
  letters, signs) never do, because a mirrored symbol is another symbol or none. With
  ``"auto"`` the `flip_probe` decides: a nearest-class-mean classifier, fitted on a sample
  of the training images, scores the same images as they are and mirrored. Mirroring a
  photo keeps it nearest its own class (a shoe facing the other way is still a shoe);
  mirroring a symbol sends it elsewhere (a mirrored 3 is nearer an 8 or an E than a 3).
  When the mirrored score keeps `PHOTO_KEEP` of the plain one the data are photos.
  A probe that cannot tell (the plain score under twice chance) keeps the safe choice,
  symbols: a missing flip costs photos a point or two, a wrong flip costs symbols more.
- the preset gives ``hflip`` where it is ``"preset"`` (0.5 photos, 0 symbols).
- the sampling (``[data].sampling``): ``"auto"`` is the class-balanced sampler when the
  largest class holds `IMBALANCE` times the images of the smallest and the loss is not
  weighted already (``[data].class_weights = "auto"``), else a shuffle that trains on
  every image once per epoch.

The resolved `Recipe` is printed at the start of the run and recorded in ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import attrs
import numpy as np
from PIL import Image

from harness.core.context import DatasetInfo
from harness.core.errors import SettingsError
from harness.core.recipe import PHOTO_KEEP, FlipProbe, Recipe
from harness.io.images import load_rgb
from harness.settings import AugmentSettings, Settings

__all__ = [
    "flips_change_class",
    "IMBALANCE",
    "PHOTO_KEEP",
    "FlipProbe",
    "Recipe",
    "class_loss_weights",
    "flip_probe",
    "resolve_recipe",
]

IMBALANCE = 2.0
"""Largest over smallest class count from which ``sampling = "auto"`` balances the draws."""
PRESET_FLIP = {"photos": 0.5, "symbols": 0.0}
"""``hflip`` by preset."""


def _pixels(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.convert("L").resize((size, size)), dtype=np.float64)


def _reader(info: DatasetInfo) -> Callable[[str], Image.Image]:
    """How the probe opens a training sample: its file, or its item in the streamed training split."""
    if info.stream is None:
        return load_rgb
    from litdata import StreamingDataset

    from harness.io.images import decode_rgb
    from harness.io.stream import split_uri

    dataset = StreamingDataset(split_uri(info.stream, "train"))
    position = {key: index for index, (key, _) in enumerate(info.train)}

    def read(key: str) -> Image.Image:
        return decode_rgb(dataset[position[key]]["image"], key)

    return read


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def _standardise(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return _unit(flat - flat.mean(axis=1, keepdims=True))


def flip_probe(
    samples: Sequence[tuple[str, int]],
    *,
    per_class: int = 40,
    size: int = 16,
    seed: int = 0,
    read: Callable[[str], Image.Image] = load_rgb,
) -> FlipProbe:
    """Score a nearest-class-mean classifier on up to `per_class` images of each class, plain and mirrored.

    Images are read in grey, squashed to `size` squared and standardised (zero mean, unit
    norm); the class means are the plain images', each image scored against its own
    class's mean without it (leave one out). Mirroring is a left-right flip.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[str]] = {}
    for path, target in samples:
        by_class.setdefault(target, []).append(path)
    paths: list[str] = []
    targets: list[int] = []
    for target, files in sorted(by_class.items()):
        picked = rng.permutation(len(files))[:per_class]
        paths += [files[i] for i in picked]
        targets += [target] * len(picked)
    images = np.stack([_pixels(read(path), size) for path in paths])
    labels = np.asarray(targets)
    plain = _standardise(images)
    classes = sorted(by_class)
    index = np.searchsorted(classes, labels)
    sums = np.stack([plain[labels == c].sum(axis=0) for c in classes])
    counts = np.bincount(index, minlength=len(classes)).astype(np.float64)
    # Leave one out: an image's own class mean leaves it out, or the probe scores memory, not shape.
    own = (sums[index] - plain) / np.maximum(counts[index] - 1, 1)[:, None]
    means, own = _unit(sums / counts[:, None]), _unit(own)
    alone = counts[index] < 2

    def top1(features: np.ndarray) -> float:
        scores = features @ means.T
        scores[np.arange(len(index)), index] = np.where(alone, -np.inf, (features * own).sum(axis=1))
        return float((scores.argmax(axis=1) == index).mean())

    return FlipProbe(
        images=len(labels),
        top1=top1(plain),
        mirrored_top1=top1(_standardise(images[:, :, ::-1])),
        chance=1.0 / len(classes),
    )


def class_loss_weights(targets: Sequence[int], num_classes: int) -> tuple[float, ...]:
    """``n / (classes * count(c))`` for each class `c`: 1 everywhere on balanced data."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = len(targets) / (num_classes * np.maximum(counts, 1.0))
    return tuple(float(w) for w in weights)


def _imbalance(targets: Sequence[int]) -> float:
    counts = np.bincount(np.asarray(targets, dtype=np.int64))
    present = counts[counts > 0]
    return float(present.max() / present.min()) if len(present) else 1.0


def resolve_recipe(settings: Settings, info: DatasetInfo, seed: int = 0) -> tuple[Recipe, AugmentSettings]:
    """The run's `Recipe`, and ``[augment]`` with its open choices made (what the transforms read)."""
    augment = settings.augment
    probe: FlipProbe | None = None
    preset: Literal["photos", "symbols"]
    if augment.preset == "auto":
        probe = flip_probe(info.train, seed=seed, read=_reader(info))
        preset = probe.verdict
    else:
        preset = augment.preset
    hflip = PRESET_FLIP[preset] if augment.hflip == "preset" else augment.hflip
    ratio = augment.ratio_range(settings.data.resize)
    targets = info.train_targets
    imbalance = _imbalance(targets)
    weighted = settings.data.class_weights == "auto"
    sampling: Literal["shuffle", "balanced"]
    if settings.data.sampling == "auto":
        drawn = info.stream is None  # a streamed set is read in litdata's order, not drawn by index
        sampling = "balanced" if imbalance >= IMBALANCE and not weighted and drawn else "shuffle"
    elif settings.data.sampling == "balanced" and info.stream is not None:
        raise SettingsError(
            f'[data].sampling = "balanced" draws images by index, but [data].root = {info.stream!r} '
            'is streamed in litdata\'s shuffled order; use "shuffle" (and [data].class_weights = "auto" '
            "against imbalance)"
        )
    else:
        sampling = settings.data.sampling
    recipe = Recipe(
        preset=preset,
        preset_from="probe" if probe is not None else "settings",
        probe=probe,
        hflip=hflip,
        hflip_from="preset" if augment.hflip == "preset" else "settings",
        crop_ratio=ratio,
        sampling=sampling,
        sampling_from="auto" if settings.data.sampling == "auto" else "settings",
        imbalance=round(imbalance, 3),
        class_weights=weighted,
    )
    return recipe, attrs.evolve(augment, hflip=hflip, crop_ratio=ratio)


def flips_change_class(settings: Settings, recipe: Recipe | None = None) -> bool | None:
    """Whether a mirror may change an image's class for a model trained so; None: unknown.

    The run's resolved `recipe` decides (symbols train without flips); without it, a number in
    ``[augment].hflip`` or a named preset does, and ``preset = "auto"`` is unknown.
    """
    if recipe is not None:
        return recipe.hflip == 0
    augment = settings.augment
    if augment.hflip != "preset":
        return augment.hflip == 0
    return {"symbols": True, "photos": False}.get(augment.preset)

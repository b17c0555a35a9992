"""harness.training.recipe: photos get the photo recipe, symbols the symbol one, sampling fits the counts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.core.context import DatasetInfo
from harness.settings import Settings, load_settings
from harness.training.fit import run
from harness.training.recipe import class_loss_weights, flip_probe, resolve_recipe

MakeSettings = Callable[..., Settings]


def _draw(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A grey image: symmetric shapes (photos), or shapes whose mirror is another class (symbols)."""
    pixels = rng.normal(60, 25, (size, size))
    third = size // 3
    if kind == "top":  # photos: a bright band at the top, at the bottom, or a centred column
        pixels[:third] += 150
    elif kind == "bottom":
        pixels[-third:] += 150
    elif kind == "column":
        pixels[:, third:-third] += 150
    elif kind == "left":  # symbols: a bar on the left, a bar on the right, and a diagonal
        pixels[:, :third] += 150
    elif kind == "right":
        pixels[:, -third:] += 150
    elif kind == "slash":
        for row in range(size):
            pixels[row, max(0, size - 1 - row - 1) : size - row + 1] += 150
    return np.clip(pixels, 0, 255).astype(np.uint8)


PHOTOS = ("top", "bottom", "column")
SYMBOLS = ("left", "right", "slash")


def write_kind(root: Path, kinds: tuple[str, ...], count: int = 12, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for kind in kinds:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(count):
            Image.fromarray(_draw(kind, size, rng), mode="L").save(folder / f"{n:03d}.png")
    return root


def samples(root: Path) -> list[tuple[str, int]]:
    classes = sorted(p.name for p in root.iterdir())
    return [
        (str(path), index)
        for index, name in enumerate(classes)
        for path in sorted((root / name).glob("*.png"))
    ]


def test_the_flip_probe_tells_photos_from_symbols(tmp_path: Path) -> None:
    photos = flip_probe(samples(write_kind(tmp_path / "photos", PHOTOS)))
    symbols = flip_probe(samples(write_kind(tmp_path / "symbols", SYMBOLS)))
    assert photos.top1 == symbols.top1 == 1.0
    assert photos.mirrored_top1 == 1.0 and photos.verdict == "photos"
    assert symbols.mirrored_top1 < 0.5 and symbols.verdict == "symbols"


def test_a_probe_that_cannot_tell_keeps_the_symbols_recipe(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        for n in range(12):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / name / f"{n}.png")
    probe = flip_probe(samples(tmp_path))
    assert probe.top1 < 2 * probe.chance and probe.verdict == "symbols"


def info(root: Path, counts: dict[int, int] | None = None) -> DatasetInfo:
    found = samples(root)
    if counts is not None:
        found = [s for s in found if sum(1 for t in found[: found.index(s)] if t[1] == s[1]) < counts[s[1]]]
    return DatasetInfo(root=root, train=tuple(found), val=tuple(found[:3]))


@pytest.mark.parametrize(
    ("overrides", "preset", "preset_from", "hflip"),
    [
        ([], "photos", "probe", 0.5),
        (["augment.preset=symbols"], "symbols", "settings", 0.0),
        (["augment.hflip=0.2"], "photos", "probe", 0.2),
    ],
)
def test_the_preset_gives_the_flip_unless_the_settings_name_it(
    tmp_path: Path, overrides: list[str], preset: str, preset_from: str, hflip: float
) -> None:
    root = write_kind(tmp_path / "photos", PHOTOS)
    recipe, augment = resolve_recipe(load_settings(None, overrides), info(root))
    assert (recipe.preset, recipe.preset_from, recipe.hflip) == (preset, preset_from, hflip)
    assert augment.hflip == hflip and augment.crop_ratio == (0.9, 1.1)


@pytest.mark.parametrize(
    ("counts", "overrides", "sampling", "weighted"),
    [
        ({0: 12, 1: 12, 2: 12}, [], "shuffle", False),
        ({0: 12, 1: 12, 2: 6}, [], "balanced", False),
        ({0: 12, 1: 12, 2: 7}, [], "shuffle", False),
        ({0: 12, 1: 12, 2: 6}, ["data.class_weights=auto"], "shuffle", True),
        ({0: 12, 1: 12, 2: 12}, ["data.sampling=balanced"], "balanced", False),
        ({0: 12, 1: 12, 2: 6}, ["data.sampling=shuffle"], "shuffle", False),
    ],
)
def test_auto_sampling_balances_real_imbalance_only(
    tmp_path: Path, counts: dict[int, int], overrides: list[str], sampling: str, weighted: bool
) -> None:
    root = write_kind(tmp_path / "symbols", SYMBOLS)
    recipe, _ = resolve_recipe(load_settings(None, overrides), info(root, counts))
    assert (recipe.sampling, recipe.class_weights) == (sampling, weighted)


def test_class_loss_weights_are_inverse_counts_one_on_balanced_data() -> None:
    assert class_loss_weights([0, 0, 1, 1], 2) == (1.0, 1.0)
    assert class_loss_weights([0, 0, 0, 1], 2) == pytest.approx((4 / 6, 2.0))


@pytest.mark.slow
def test_photos_get_the_photo_recipe_and_symbols_the_symbol_recipe_in_summary_json(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    for kinds, preset, hflip in ((PHOTOS, "photos", 0.5), (SYMBOLS, "symbols", 0.0)):
        root = write_kind(tmp_path / preset, kinds)
        result = run(make_settings("ema", "trainer.limit_train_batches=2", f"run.name={preset}", root=root))
        recipe = json.loads((result.run_dir / "summary.json").read_text())["recipe"]
        assert (recipe["preset"], recipe["preset_from"], recipe["hflip"]) == (preset, "probe", hflip)
        assert recipe["sampling"] == "shuffle" and recipe["probe"]["top1"] == 1.0


@pytest.mark.parametrize(
    ("overrides", "hflip", "expected"),
    [
        ([], 0.0, True),  # the run's resolved recipe decides: symbols train without flips
        ([], 0.5, False),
        (["augment.preset='symbols'"], None, True),
        (["augment.preset='photos'"], None, False),
        (["augment.hflip=0.0"], None, True),
        (["augment.hflip=0.5", "augment.preset='symbols'"], None, False),
        ([], None, None),  # preset "auto" and no recipe: unknown, so test-time flips are allowed
    ],
)
def test_whether_flips_change_the_class_follows_the_recipe_the_run_trained_with(
    overrides: list[str], hflip: float | None, expected: bool | None
) -> None:
    from harness.core.recipe import Recipe
    from harness.training.recipe import flips_change_class

    settings = load_settings(None, overrides)
    recipe = (
        None
        if hflip is None
        else Recipe(
            preset="symbols" if hflip == 0 else "photos",
            preset_from="probe",
            probe=None,
            hflip=hflip,
            hflip_from="preset",
            crop_ratio=(0.9, 1.1),
            sampling="shuffle",
            sampling_from="auto",
            imbalance=1.0,
            class_weights=False,
        )
    )
    assert flips_change_class(settings, recipe) is expected

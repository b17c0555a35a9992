"""bench.recipe: its data sets have the promised shapes and imbalance, its plain loops train and score."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest

from bench.recipe import (
    TALL,
    WIDE,
    anchor_top1,
    imbalanced_counts,
    make_imbalanced_digits,
    make_non_square,
    recipe_table,
)


def test_counts_fall_geometrically_to_a_tenth() -> None:
    counts = imbalanced_counts(140)
    assert (counts[0], counts[-1], len(counts)) == (140, 14, 10)
    assert counts == sorted(counts, reverse=True)
    ratios = [a / b for a, b in itertools.pairwise(counts)]
    assert max(ratios) / min(ratios) < 1.15, ratios


def test_training_is_imbalanced_ten_to_one_and_validation_balanced(tmp_path: Path) -> None:
    kept = make_imbalanced_digits(tmp_path / "data")
    train = Counter(p.parent.name for p in (tmp_path / "data" / "train").rglob("*.png"))
    val = Counter(p.parent.name for p in (tmp_path / "data" / "val").rglob("*.png"))
    assert dict(train) == kept and len(train) == 10
    assert max(train.values()) == 10 * min(train.values()) == 140
    assert set(val.values()) == {36} and set(val) == set(train)
    train_files = {p.name for p in (tmp_path / "data" / "train").rglob("*.png")}
    assert not train_files & {p.name for p in (tmp_path / "data" / "val").rglob("*.png")}


@pytest.mark.slow
def test_the_anchor_loop_trains_a_step_and_scores_the_validation_split(tmp_path: Path) -> None:
    make_imbalanced_digits(tmp_path / "data", largest=10, val_per_class=2)
    for kind in ("symbols", "photos"):
        top1 = anchor_top1(tmp_path / "data", seed=0, epochs=1, kind=kind)  # type: ignore[arg-type]
        assert 0.0 <= top1 <= 1.0
        assert top1 * 20 == pytest.approx(round(top1 * 20))  # a share of the 20 validation images


def test_the_table_checks_the_defaults_against_the_anchor_and_the_raw_weights() -> None:
    anchor, raw = "plain PyTorch loop (anchor)", "defaults, raw weights alone (EMA off)"
    table = recipe_table(
        {anchor: [0.90, 0.92], "harness defaults": [0.93, 0.92], raw: [0.93, 0.91], "other": [0.80, 0.85]}
    )
    lines = table.splitlines()
    assert lines[2] == f"| {anchor} | 91.0 | +0.0 | 2.0 | 90.0 / 92.0 | anchor |"
    assert lines[3] == (
        "| harness defaults | 92.5 | +1.5 | 1.0 | 93.0 / 92.0 | mean >= anchor - 0.5, spread <= 3: met |"
    )
    assert lines[4].endswith("| 93.0 / 91.0 | defaults (kept) >= raw on every seed: met |")
    assert lines[5] == "| other | 82.5 | -8.5 | 5.0 | 80.0 / 85.0 |  |"
    unstable = recipe_table({anchor: [0.90, 0.92], "harness defaults": [0.97, 0.93]})
    assert unstable.splitlines()[3].endswith(
        "| 4.0 | 97.0 / 93.0 | mean >= anchor - 0.5, spread <= 3: MISSED |"
    )
    close = recipe_table({anchor: [0.90, 0.92], "harness defaults": [0.905, 0.905]})
    assert close.splitlines()[3].endswith(
        "| -0.5 | 0.0 | 90.5 / 90.5 | mean >= anchor - 0.5, spread <= 3: met |"
    )
    worse = recipe_table({anchor: [0.90, 0.92], "harness defaults": [0.90, 0.90], raw: [0.91, 0.89]})
    assert worse.splitlines()[3].endswith(
        "| -1.0 | 0.0 | 90.0 / 90.0 | mean >= anchor - 0.5, spread <= 3: MISSED |"
    )
    assert worse.splitlines()[4].endswith("| defaults (kept) >= raw on every seed: MISSED |")


def test_the_non_square_symbols_are_tall_and_wide(tmp_path: Path) -> None:
    from PIL import Image

    make_imbalanced_digits(tmp_path / "square", largest=10, val_per_class=2)
    count = make_non_square(tmp_path / "square", tmp_path / "stretched")
    sizes = Counter(Image.open(path).size for path in (tmp_path / "stretched").rglob("*.png"))
    assert sum(sizes.values()) == count and set(sizes) == {TALL, WIDE}
    assert abs(sizes[TALL] - sizes[WIDE]) <= 1

"""The pixel pictures' pieces: round ticks, the colour scale, curves with gaps, fonts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.pictures.chart import TAB10, Chart, Series, nice_ticks, render
from harness.pictures.raster import BLUES, colour_scale, font_for


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), (0.13, 0.87, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])],
)
def test_ticks_are_round_and_cover_the_range(low: float, high: float, expected: list[float]) -> None:
    ticks = nice_ticks(low, high, most=9)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low and ticks[-1] >= high


def test_a_flat_curve_still_gets_a_range() -> None:
    ticks = nice_ticks(0.5, 0.5)
    assert ticks[0] < 0.5 < ticks[-1]


def test_the_colour_scale_runs_from_the_lightest_to_the_darkest_blue() -> None:
    ends = colour_scale(np.array([0.0, 1.0]))
    assert [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in ends.tolist()] == [BLUES[0], BLUES[-1]]
    ramp = colour_scale(np.linspace(0, 1, 50)).astype(int).sum(axis=1)
    assert np.all(np.diff(ramp) <= 0), "darker as the value grows"


def test_a_nan_value_leaves_a_gap_in_its_curve() -> None:
    points = ((0.0, 1.0), (1.0, math.nan), (2.0, 0.5))
    joined = ((0.0, 1.0), (1.0, 0.75), (2.0, 0.5))
    pictures = [
        np.asarray(
            render(
                Chart(
                    title="t",
                    x_label="x",
                    y_label="y",
                    series=(Series(name="s", points=p, colour=TAB10[0]),),
                    legend=False,
                )
            )
        )
        for p in (points, joined)
    ]
    blue = [np.all(np.abs(picture.astype(int) - (31, 119, 180)) < 30, axis=2) for picture in pictures]
    assert blue[0].sum() < blue[1].sum() * 0.9


def test_a_name_dejavu_cannot_draw_gets_another_font_when_one_is_installed() -> None:
    assert font_for("class 7", 12).path.endswith("DejaVuSans.ttf")
    assert font_for("Кириллица", 12).path.endswith("DejaVuSans.ttf"), "DejaVu has Cyrillic"

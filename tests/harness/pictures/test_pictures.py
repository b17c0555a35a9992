"""harness.pictures: round ticks, the colour scale, curves with gaps, fonts, the mosaic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.pictures.chart import TAB10, Chart, Series, nice_ticks, render
from harness.pictures.confusion import draw_confusion
from harness.pictures.mosaic import CELL, Tile, draw_mosaic, fit
from harness.pictures.raster import BLUES, colour_scale, font_for, text_width


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


def test_a_mosaic_fits_each_image_to_its_cell_keeping_its_shape() -> None:
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    enlarged = fit(small)
    assert enlarged.size == (CELL, CELL)
    # nearest neighbours: the pixels the model saw, each a block, no new colours
    colours = [np.unique(np.asarray(picture).reshape(-1, 3), axis=0) for picture in (enlarged, small)]
    assert np.array_equal(*colours)
    assert fit(Image.new("L", (400, 100), 128)).size == (CELL, CELL // 4)
    assert fit(Image.new("RGB", (90, 360))).size == (CELL // 4, CELL)


def test_a_mosaic_frames_and_captions_each_tile_in_its_colour() -> None:
    red, green = (192, 57, 43), (27, 122, 54)
    tiles = [
        Tile(image=Image.new("RGB", (16, 16), "white"), caption="a\nb", colour="#c0392b", frame=4),
        Tile(image=Image.new("RGB", (16, 16), "white"), caption="c\nd", colour="#1b7a36"),
    ]
    pixels = np.asarray(draw_mosaic(tiles, heading="two tiles", caption_lines=2))
    counts = {colour: int(np.all(pixels == colour, axis=2).sum()) for colour in (red, green)}
    assert counts[red] >= 4 * 4 * CELL, "a thick red frame"
    assert 4 * CELL <= counts[green] < 2 * 4 * CELL, "a thin green one"


def test_a_mosaic_is_as_wide_as_its_heading_and_says_when_it_is_empty() -> None:
    heading = "a heading much wider than one cell of the grid, for the width"
    one = draw_mosaic(
        [Tile(image=Image.new("RGB", (4, 4)), caption="x", colour="black")], heading=heading, caption_lines=1
    )
    assert one.width > text_width(heading, 15) > CELL
    empty = np.asarray(draw_mosaic([], heading="nothing", caption_lines=2, empty="no mistakes"))
    assert (empty < 128).any(axis=2)[40:].any(), "the empty note is written below the heading"


def test_a_confusion_matrix_widens_for_a_title_wider_than_itself(tmp_path: Path) -> None:
    title = "Confusion matrix, a_rather_long_folder_name_of_images/validation"
    counts = np.array([[5, 1], [2, 7]])
    path = draw_confusion(tmp_path / "cm.png", counts, ["a", "b"], normalize="true", title=title)
    with Image.open(path) as image:
        title_band = np.asarray(image.convert("L"))[:30]
    inked = np.nonzero((title_band < 128).any(axis=0))[0]
    assert inked[-1] - inked[0] + 1 >= text_width(title, 16) - 8, "the whole title is drawn"

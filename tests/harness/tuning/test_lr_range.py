"""The learning-rate range test: the smoothing and the suggestion, then the command on a real tiny model."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from harness.settings import Settings, settings_to_toml
from harness.tune import main
from harness.tuning.lr_files import lr_chart
from harness.tuning.lr_range import RangeTest, smooth, smooth_both_ways, suggest

MakeSettings = Callable[..., Settings]


def test_the_smoothing_is_bias_corrected_and_keeps_a_nan() -> None:
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert math.isnan(smooth([1.0, math.nan, 1.0])[-1])


def test_the_smoothing_both_ways_keeps_the_lowest_point_where_it_is() -> None:
    # A noisy valley whose bottom is step 80: the forward average finds it far to the right.
    noise = random.Random(0)
    losses = [1.0 + abs(i - 80) / 40 + noise.gauss(0, 0.3) for i in range(200)]
    both = smooth_both_ways(losses)
    assert abs(min(range(200), key=lambda i: both[i]) - 80) <= 5
    forward = smooth(losses)
    assert min(range(200), key=lambda i: forward[i]) > 100
    assert smooth_both_ways([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_the_smoothing_both_ways_stops_at_the_first_non_finite_loss() -> None:
    smoothed = smooth_both_ways([3.0, 1.0, 2.0, math.nan, 1.0])
    assert all(math.isfinite(s) for s in smoothed[:3]) and smoothed[0] > smoothed[2]
    assert all(math.isnan(s) for s in smoothed[3:])


def test_the_suggestion_is_where_the_loss_stops_falling() -> None:
    # A ramp of 200 steps from 1e-7 to 1: the noisy loss falls to its lowest at 1e-3, then rises.
    lrs = [10 ** (-7 + 7 * i / 199) for i in range(200)]
    noise = random.Random(1)
    losses = [1.0 + 0.4 * abs(math.log10(lr / 1e-3)) + noise.gauss(0, 0.3) for lr in lrs]
    assert 1e-3 / 1.5 < suggest(lrs, smooth_both_ways(losses)) < 1e-3 * 1.5


def test_the_suggestion_is_a_rate_of_the_ramp_and_survives_nan() -> None:
    lrs = [1e-5, 1e-4, 1e-3]
    assert suggest(lrs, [1.0, 2.0, 3.0]) == 1e-5
    assert suggest(lrs, [2.0, 1.0, math.nan]) == 1e-4
    assert suggest(lrs, [math.nan, math.nan, math.nan]) == 1e-5


def test_the_picture_marks_the_suggestion() -> None:
    lrs = (1e-5, 1e-4, 1e-3, 1e-2)
    result = RangeTest(
        lrs=lrs, losses=(2, 1.5, 1, 3), smoothed=(2, 1.8, 1.4, 2.5), suggestion=1e-3, stopped="diverged"
    )
    chart = lr_chart(result)
    assert chart.marked_x == pytest.approx(-3.0)
    assert chart.star == (pytest.approx(-3.0), 1.4)


@pytest.mark.slow
def test_the_finder_on_a_small_model_prints_a_finite_rate_and_draws_it(
    make_settings: MakeSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(settings_to_toml(make_settings()))
    runs = tmp_path / "runs"
    before = sorted(runs.rglob("*")) if runs.exists() else []

    assert main(["lr", str(settings_file), "--steps", "12", "--set", "data.batch_size=4"]) == 0

    out = capsys.readouterr().out.splitlines()
    folder = Path(out[-1])
    record = json.loads((folder / "lr_find.json").read_text())
    assert math.isfinite(record["suggestion"]) and 1e-7 <= record["suggestion"] <= 1.0
    assert out[0].startswith(f"suggested learning rate: {record['suggestion']:.3g}")
    assert record["command"].endswith(f"--set model.lr={record['suggestion']:.3g}")
    assert record["command"] in out[1]
    assert Image.open(folder / "lr_find.png").size == (900, 540)
    assert len((folder / "lr_find.csv").read_text().splitlines()) == record["steps"] + 1
    # Nothing but the finder's own folder was made: no run directory, no checkpoint.
    assert sorted(p for p in runs.rglob("*") if folder not in (p, *p.parents)) == [*before, folder.parent]


@pytest.mark.slow
def test_two_ddp_processes_agree_on_one_suggestion(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(settings_to_toml(make_settings("data.num_workers=0")))
    ddp = ["trainer.strategy='ddp'", "trainer.devices=2", "data.batch_size=4"]
    command = [sys.executable, "-m", "harness", "tune", "lr", str(settings_file), "--steps", "10"]
    done = subprocess.run(
        [*command, *(arg for item in ddp for arg in ("--set", item))],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Both processes ran the test (each checks its suggestion against rank zero's); one wrote it.
    assert done.stdout.count("suggested learning rate:") == 1
    [folder] = (tmp_path / "runs" / "digits").glob("lr_find_*")
    assert 1 <= json.loads((folder / "lr_find.json").read_text())["steps"] <= 10

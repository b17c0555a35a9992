"""harness.report: one HTML page of a run directory, whatever the directory holds."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from harness.core.layout import RunLayout
from harness.report import find_pictures, main, render_report, write_report
from harness.settings import Settings
from harness.training.fit import run

MakeSettings = Callable[..., Settings]


def picture(path: Path, colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    root = tmp_path / "version_0"
    picture(root / "plots" / "losses.png")
    picture(root / "confusion_matrix" / "epoch_000.png")
    picture(root / "confusion_matrix" / "epoch_001.png")
    picture(root / "confusion_matrix" / "latest.png")
    picture(root / "samples" / "name with space é.png")
    picture(root / "confusion_matrix" / ".latest.png.abc.tmp.png")
    (root / "summary.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "best_score": 0.8125,
                "final_metrics": {"val/acc_top1": 0.8125, "val/loss": 0.51},
                "artifacts": {"plots/losses.png": "plots/losses.png"},
                "note": "<script>alert(1)</script>",
            }
        ),
        encoding="utf-8",
    )
    (root / "settings.toml").write_text('[run]\nname = "a <b> & c"\n', encoding="utf-8")
    (root / "labels.json").write_text('{"classes": ["a", "b"]}', encoding="utf-8")
    return root


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_the_page_shows_every_picture_the_summary_and_the_settings(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == RunLayout(run_dir).report
    page = path.read_text(encoding="utf-8")

    sources = image_sources(page)
    assert sources[0] == "plots/losses.png", "the history comes first"
    assert set(sources) == {
        "plots/losses.png",
        "confusion_matrix/latest.png",
        "confusion_matrix/epoch_001.png",
        "confusion_matrix/epoch_000.png",
        "samples/name%20with%20space%20%C3%A9.png",
    }
    for source in sources:
        assert (run_dir / source.replace("%20", " ").replace("%C3%A9", "é")).is_file()
    assert "0.8125" in page and "val/acc_top1" in page and "completed" in page
    assert "<details><summary>2 per-epoch pictures</summary>" in page


def test_text_from_the_run_is_escaped(run_dir: Path) -> None:
    page = render_report(run_dir)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "name = &quot;a &lt;b&gt; &amp; c&quot;" in page


def test_hidden_and_temporary_files_are_not_pictures(run_dir: Path) -> None:
    names = [path.name for path in find_pictures(run_dir)]
    assert ".latest.png.abc.tmp.png" not in names
    assert len(names) == 5


def test_embedded_pictures_make_a_page_that_travels_alone(run_dir: Path) -> None:
    page = render_report(run_dir, embed=True)
    sources = image_sources(page)
    assert len(sources) == 5
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    decoded = base64.b64decode(sources[0].removeprefix("data:image/png;base64,"))
    assert decoded == (run_dir / "plots" / "losses.png").read_bytes()


def test_an_empty_directory_gives_a_page_without_sections(tmp_path: Path) -> None:
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<h2>" not in page
    assert page.startswith("<!DOCTYPE html>")


def test_a_broken_summary_is_shown_as_written(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"status": "run<ning"', encoding="utf-8")
    page = render_report(tmp_path)
    assert "summary.json is not valid JSON" in page
    assert "run&lt;ning" in page


def test_per_epoch_pictures_without_a_latest_copy_show_the_newest(tmp_path: Path) -> None:
    for epoch in range(3):
        picture(tmp_path / "samples" / f"epoch_{epoch:03d}.png")
    sources = image_sources(render_report(tmp_path))
    assert sources[0] == "samples/epoch_002.png"


def test_the_command_writes_the_page_and_refuses_a_missing_directory(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(run_dir)]) == 0
    assert RunLayout(run_dir).report.is_file()
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "nowhere: not a directory (expected a run directory)" in capsys.readouterr().err


def test_the_command_refuses_a_folder_that_is_not_a_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    picture(folder / "holiday.png")
    (folder / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in folder.rglob("*")}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "report", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {folder}: not a run directory (it lacks settings.toml or labels.json); nothing written"
    ]
    assert {p: p.read_bytes() for p in folder.rglob("*")} == before


def test_python_dash_m_runs_it(run_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.report", str(run_dir)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(RunLayout(run_dir).report.name)


@pytest.mark.slow
def test_the_report_of_a_real_run_shows_its_pictures_summary_and_settings(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(
        "confusion_matrix", "plots", "samples", "trainer.max_epochs=2", "trainer.limit_train_batches=1"
    )
    run_dir = run(settings).run_dir
    page = write_report(run_dir).read_text(encoding="utf-8")
    sources = set(image_sources(page))
    expected = {
        f"{folder}/{name}.png"
        for folder, names in {
            "plots": ("losses", "accuracy", "learning_rate"),
            "confusion_matrix": ("latest", "epoch_000", "epoch_001"),
            "samples": ("latest", "epoch_000", "epoch_001"),
        }.items()
        for name in names
    }
    assert expected <= sources
    assert "<h2>Summary</h2>" in page and "completed" in page
    assert "<h2>Settings</h2>" in page and "[subscribers.confusion_matrix]" in page


def test_the_dashboard_of_a_finished_run_reads_its_summary_and_finds_the_best_epoch(tmp_path: Path) -> None:
    picture(tmp_path / "plots" / "accuracy.png")
    picture(tmp_path / "plots" / "losses.png")
    picture(tmp_path / "confusion_matrix" / "latest.png")
    summary = {
        "status": "completed",
        "monitor": "val/acc_top1",
        "best_score": 0.75,
        "epochs_completed": 3,
        "duration_s": 125.0,
        "final_metrics": {"val/acc_top1": 0.5, "val/loss": 0.9},
    }
    RunLayout(tmp_path).summary.write_text(json.dumps(summary), encoding="utf-8")
    events = [
        {"event": "ValidationEpochEnd", "epoch": 0, "metrics": {"val/acc_top1": 0.75}, "sanity_check": True},
        {"event": "BatchEnd", "epoch": 0},
        {"event": "ValidationEpochEnd", "epoch": 0, "metrics": {"val/acc_top1": 0.25}, "sanity_check": False},
        {"event": "ValidationEpochEnd", "epoch": 1, "metrics": {"val/acc_top1": 0.75}, "sanity_check": False},
    ]
    RunLayout(tmp_path).events.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    page = render_report(tmp_path)
    facts = page[page.index('<dl class="facts">') : page.index("</dl>")]
    assert '<dt>best val/acc_top1</dt><dd class="big">0.75</dd><dt>at epoch</dt><dd>1</dd>' in facts
    assert "<dt>epochs done</dt><dd>3</dd><dt>time</dt><dd>2 min 05 s</dd>" in facts
    assert "<dt>val/loss</dt><dd>0.9</dd>" in facts
    dashboard = page[page.index('<section class="dashboard">') : page.index("</section>")]
    assert image_sources(dashboard) == [
        "plots/losses.png",
        "plots/accuracy.png",
        "confusion_matrix/latest.png",
    ]
    assert image_sources(page) == image_sources(dashboard), "each picture once"

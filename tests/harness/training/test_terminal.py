"""What a default run prints: the start-up tables, then about three lines per epoch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EPOCHS = 3
ROOT = Path(__file__).resolve().parents[3]


def train(tmp_path: Path, *flags: str) -> list[str]:
    """`python -m harness train` on the embedded digits set, fewer batches; stdout + stderr lines."""
    command = [
        sys.executable, "-m", "harness", "train", *flags,
        "--set", f"run.output_dir={str(tmp_path / 'runs')!r}",
        "--set", "data.image_size=16",
        "--set", f"trainer.max_epochs={EPOCHS}",
        "--set", "trainer.accelerator='cpu'",
        "--set", "trainer.limit_train_batches=2",
        "--set", "trainer.limit_val_batches=2",
        "--set", "subscribers.onnx_export.enabled=false",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    done = subprocess.run(
        command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return (done.stdout + done.stderr).splitlines()


@pytest.mark.slow
def test_a_default_run_prints_the_tables_once_then_three_lines_per_epoch(tmp_path: Path) -> None:
    lines = train(tmp_path)
    text = "\n".join(lines)
    first = next(i for i, line in enumerate(lines) if line.startswith(f"epoch 1/{EPOCHS}  train loss"))
    tables = lines[:first]
    titles = ["Images per class", "Image sizes", "Model: resnet18", "Sampler draws, epoch 0"]
    assert [t for t in titles if any(t in line for line in tables)] == titles
    # Everything before the first epoch line belongs to those four tables: titles, rules, rows, captions.
    noisy = re.compile(r"\.py:\d+|GPU available|TPU available|WARNING|INFO|Warning")
    assert [line for line in lines if noisy.search(line)] == [], text
    after = lines[first:]
    assert len(after) <= 3 * EPOCHS + 1, text  # + the run directory, the last line
    assert [line for line in after if line.startswith("epoch ")] == [
        line for line in after if line.startswith("epoch ") and "ETA" in line
    ]
    assert sum(line.startswith("epoch ") for line in after) == EPOCHS
    for noise in (
        "Tip:",
        "litlogger",
        "LeafSpec",
        "logging interval",
        "exists and is not empty",
        "Sampler draws, epoch 1",
    ):
        assert noise not in text, noise
    assert Path(lines[-1], "report.html").is_file()


@pytest.mark.slow
def test_quiet_prints_the_run_directory_only(tmp_path: Path) -> None:
    lines = train(tmp_path, "--quiet")
    assert len(lines) == 1, lines
    assert Path(lines[0], "summary.json").is_file()

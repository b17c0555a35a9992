"""``python -m bench --device cuda --smoke``: the GPU benchmark's code paths, on the CPU here."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_the_gpu_smoke_runs_every_path_and_prints_every_row() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--device", "cuda", "--smoke", "--only", "gpu", "--details"],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    out = completed.stdout
    for row in (
        "gpu: training step",
        "channels-last",
        "EMA update",
        "EMA swap",
        "fed by the harness's JPEG loader",
        "JPEG decoding",
        "decode_jpeg",
        "peak GPU memory",
    ):
        assert row in out, f"{row!r} missing from:\n{out}"
    if not torch.cuda.is_available():
        assert "no CUDA device: the smoke runs the GPU code paths on the CPU" in completed.stderr

"""Runs that survive, round two: real kills, interrupts, mounts and plugins (issue 25)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from harness.run import main
from tests.harness.training.test_faults import harness_run, only_run_dir
from tests.harness.training.test_resume import argv, digests, one_line, tmpfs


def test_a_foreign_checkpoint_with_a_state_dict_key_is_one_line_and_nothing_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "downloads" / "weights.pt"
    foreign.parent.mkdir()
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 4)}, "epoch": 7}, foreign)
    before = digests(foreign.parent)

    assert main(argv(tmp_path, f"trainer.resume='{foreign}'")) == 2

    assert one_line(capsys) == (
        f"error: [trainer].resume: {foreign} is not a Lightning checkpoint: it has a state_dict but no "
        "pytorch-lightning_version, global_step, loops (a plain torch.save of weights cannot resume a run)"
    )
    assert not (tmp_path / "runs").exists()
    assert digests(foreign.parent) == before


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_leaves_a_temporary_that_the_resume_removes(tmp_path: Path) -> None:
    killed = harness_run(
        tmp_path, "trainer.max_epochs=2", env={"FAULT_AT": "CheckpointSaving:1:1", "FAULT": "kill-mid-write"}
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    checkpoints = run_dir / "checkpoints"
    (stale,) = checkpoints.glob(".*.tmp")
    assert stale.name.endswith(".tmp") and stale.stat().st_size > 0
    (first,) = checkpoints.glob("epoch=000*.ckpt")
    before = first.read_bytes()

    resumed = harness_run(tmp_path, "trainer.max_epochs=2", "trainer.resume='last'")

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(checkpoints.glob(".*.tmp")), "the dead writer's temporary file is gone"
    assert first.read_bytes() == before
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_resuming_on_a_read_only_file_system_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(tmp_path, "trainer.max_epochs=1")) == 0
    capsys.readouterr()
    mounts = tmpfs(tmp_path / "mounted", "size=250m")
    mount = next(mounts)
    run_dir = mount / "runs" / "digits" / "version_0"
    for name in ("settings.toml", "labels.json", "summary.json", "checkpoints/last.ckpt"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tmp_path / "runs" / "digits" / "version_0" / name, run_dir / name)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, check=False)
    assert remounted.returncode == 0, remounted.stderr
    try:
        before = digests(mount)
        code = main(
            [
                *argv(tmp_path, "trainer.resume='last'", "trainer.max_epochs=2"),
                "--set",
                f"run.output_dir='{mount / 'runs'}'",
            ]
        )
        assert code == 2
        assert one_line(capsys) == (
            f"error: {run_dir}: cannot write in the run directory (Read-only file system); "
            "a run or resume writes its checkpoints and record there"
        )
        assert digests(mount) == before
    finally:
        next(mounts, None)

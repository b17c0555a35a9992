"""SLURM's requeue signal: the run stops resumable, asks SLURM to requeue, and the requeued job resumes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from harness.training.stop_signal import requeue_slurm_job
from tests.harness.training.test_faults import harness_run
from tests.harness.training.test_nodes import check_one_run, only_run_dir, slurm, two_nodes

SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "harness",
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "127.0.0.1",
}


def _fake_scontrol(folder: Path, exit_code: int = 0) -> Path:
    """An ``scontrol`` that appends its arguments to ``calls.txt`` beside it and exits `exit_code`."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scontrol"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> "{folder / "calls.txt"}"\necho refused >&2\nexit {exit_code}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def test_requeueing_says_what_scontrol_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    failed = requeue_slurm_job()
    assert failed.startswith("requeueing SLURM job 4242 failed (FileNotFoundError: ")
    assert failed.endswith("'scontrol')")
    monkeypatch.setenv("PATH", str(_fake_scontrol(tmp_path / "refusing", exit_code=1)))
    assert requeue_slurm_job() == "requeueing SLURM job 4242 failed (scontrol exit 1: refused)"
    monkeypatch.setenv("PATH", str(_fake_scontrol(tmp_path / "bin")))
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert requeue_slurm_job() == "SLURM job 77_3 requeued; it resumes this run"
    assert (tmp_path / "bin" / "calls.txt").read_text() == "requeue 77_3\n"


@pytest.mark.slow
def test_the_requeue_signal_leaves_a_resumable_run_that_the_requeued_job_resumes(tmp_path: Path) -> None:
    bin_dir = _fake_scontrol(tmp_path / "bin")
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    stopped = harness_run(
        tmp_path,
        "trainer.max_epochs=2",
        env={**SLURM, "PATH": path, "FAULT_AT": "BatchEnd:0:2", "FAULT": "usr1"},
    )
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs" / "digits").glob("version_*")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    last_line = stopped.stderr.strip().splitlines()[-1]
    assert last_line.startswith("stopped: SLURM requeue signal at step 2: checkpoint")
    assert "SLURM job 4242 requeued; it resumes this run" in last_line
    assert (bin_dir / "calls.txt").read_text() == "requeue 4242\n"
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt")), "Lightning's own requeue handler ran"

    # SLURM starts the same command again, counting the restart.
    requeued = harness_run(
        tmp_path, "trainer.max_epochs=2", env={**SLURM, "PATH": path, "SLURM_RESTART_COUNT": "1"}
    )
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert [p.name for p in (tmp_path / "runs" / "digits").glob("version_*")] == [run_dir.name]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert len(summary["attempts"]) == 1 and summary["attempts"][0]["status"] == "interrupted"


@pytest.mark.slow
def test_the_requeue_signal_to_one_of_two_slurm_tasks_requeues_once_and_both_resume(tmp_path: Path) -> None:
    """``scancel --signal=USR1`` (or ``--signal=USR1@90``) as it reaches task 1 alone of two (gloo)."""
    bin_dir = _fake_scontrol(tmp_path / "bin")
    path = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    stopped = two_nodes(
        tmp_path,
        slurm,
        "trainer.max_epochs=1",
        fault={"FAULT_AT": "BatchEnd:0:2", "FAULT": "usr1", "FAULT_RANK": "1"},
        extra_env=path,
    )
    assert [node.returncode for node in stopped] == [143, 143], [node.stderr[-3000:] for node in stopped]
    # 24 training images, 12 a task, 3 batches of 4 an epoch: the signal came after step 2, on both.
    lines = [node.stderr.strip().splitlines()[-1] for node in stopped]
    assert all(line.startswith("stopped: SLURM requeue signal at step 2: checkpoint ") for line in lines), (
        lines
    )
    assert "SLURM job 4242 requeued; it resumes this run" in lines[0]
    assert "rank zero requeues the job" in lines[1]
    assert (bin_dir / "calls.txt").read_text() == "requeue 4242\n", "rank zero requeues, once"
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] == 2
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == 2
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"], "written once"
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt")), "Lightning's own requeue handler ran"

    # SLURM starts the same command on both tasks again, counting the restart.
    requeued = two_nodes(
        tmp_path, slurm, "trainer.max_epochs=1", extra_env={**path, "SLURM_RESTART_COUNT": "1"}
    )
    assert check_one_run(tmp_path, requeued) == run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["global_step"] == 3
    assert [attempt["status"] for attempt in summary["attempts"]] == ["interrupted"]
    assert (bin_dir / "calls.txt").read_text() == "requeue 4242\n"

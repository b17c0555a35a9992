"""Faults with real processes: killed, interrupted, raising subscribers, two ranks, replay."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.core.testing import write_imagefolder
from harness.replay import main as replay_main

pytestmark = pytest.mark.slow

PLUGINS = Path(__file__).parents[2] / "plugins"
DDP = ("trainer.strategy='ddp'", "trainer.devices=2", "data.batch_size=4")
"""Two processes on the CPU (gloo), as Lightning's own CI runs ddp."""


def harness_run(
    tmp_path: Path, *overrides: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m harness.run`` on a tiny tree, leading a process group of its own.

    Past `timeout`, the whole group (every rank and data-loader worker) is killed, so a
    hung run fails its test instead of hanging the suite.
    """
    data = tmp_path / "data"
    if not data.exists():
        write_imagefolder(data, {"red": 10, "green": 10, "blue": 10}, size=10)
    argv = [
        sys.executable,
        "-m",
        "harness.run",
        "--set",
        f"data.root='{data}'",
        "--set",
        "data.image_size=16",
        "--set",
        "data.batch_size=8",
        "--set",
        "trainer.accelerator='cpu'",
        "--set",
        "trainer.devices=1",
        "--set",
        "trainer.num_sanity_val_steps=0",
        "--set",
        "trainer.progress_bar=false",
        "--set",
        f"run.output_dir='{tmp_path / 'runs'}'",
        "--set",
        "run.plugins=['fault_plugins:Fault', 'fault_plugins:RankReport']",
        *(f"--set={name}" for name in disabled("onnx_export", "samples", "dataset_stats", "model_info")),
    ]
    for override in overrides:
        argv += ["--set", override]
    return run_group(argv, {**os.environ, "PYTHONPATH": str(PLUGINS), **(env or {})}, timeout)


def run_group(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `argv` leading a process group of its own; past `timeout`, kill the group and fail."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    ) as process:
        try:
            # The pipes close when every process of the group has exited, ranks above zero included.
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"the run took over {timeout} s; its process group was killed\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def disabled(*names: str) -> list[str]:
    return [f"subscribers.{name}.enabled=false" for name in names]


def only_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs" / "digits").glob("version_*")
    return run_dir


def check_artifacts_whole(run_dir: Path) -> None:
    """Every visible artifact parses: JSON, CSV, PNG, checkpoints."""
    for path in run_dir.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        elif path.suffix == ".ckpt":
            torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    "where", ["BatchEnd:1:2", "CheckpointSaving:1:1"], ids=["mid-epoch", "checkpoint-write"]
)
def test_killed_run_resumes_from_last_and_keeps_its_history(tmp_path: Path, where: str) -> None:
    killed = harness_run(tmp_path, "trainer.max_epochs=3", env={"FAULT_AT": where, "FAULT": "kill"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    check_artifacts_whole(run_dir)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0, "epoch 1 never completed, so last.ckpt is epoch 0's"

    resumed = harness_run(tmp_path, "trainer.max_epochs=3", "trainer.resume='last'")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert Path(resumed.stdout.strip().splitlines()[-1]) == run_dir
    check_artifacts_whole(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3

    with (run_dir / "plots" / "history.csv").open() as handle:
        epochs = [row["epoch"] for row in csv.DictReader(handle)]
    assert epochs == ["0", "1", "2"], "the plot history continues from the checkpoint"
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["harness"]["ema"]["updates"] == final["global_step"]
    sampler_rows = (run_dir / "sampler_tracking" / "draws.csv").read_text().strip().splitlines()
    assert len(sampler_rows) == 1 + 3, "one row per epoch, header first"


def test_sigterm_writes_a_checkpoint_at_that_moment_and_exits_143(tmp_path: Path) -> None:
    """What SLURM and Kubernetes send before a kill: a real signal to the real run."""
    stopped = harness_run(tmp_path, "trainer.max_epochs=3", env={"FAULT_AT": "BatchEnd:1:2", "FAULT": "term"})
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM at step ") and "last.ckpt written at step" in last
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "trainer.resume=" in summary["resume"]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] > 4, "the checkpoint is from the moment of the signal"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    [failed] = [event for event in events if event["event"] == "RunFailed"]
    assert failed["interrupted"] is True


@pytest.mark.parametrize(
    ("fault", "rank"), [("term-group", "0"), ("term", "1")], ids=["whole-group", "rank-1-only"]
)
def test_sigterm_under_ddp_stops_every_rank_at_one_step_and_exits_143(
    tmp_path: Path, fault: str, rank: str
) -> None:
    """SLURM and ``kill -TERM -<pgid>`` signal every process (and data-loader worker); a stray
    signal may reach one rank only. Either way both ranks stop after the same batch."""
    stopped = harness_run(
        tmp_path,
        "trainer.max_epochs=2",
        *DDP,
        env={"FAULT_AT": "BatchEnd:1:2", "FAULT": fault, "FAULT_RANK": rank},
        timeout=300,
    )
    assert stopped.returncode == 143, stopped.stderr[-4000:]
    # Each rank prints the line that harness.errors.report prints for the exit code 143.
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("stopped: SIGTERM at step ")]
    assert len(lines) == 2, stopped.stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "trainer.resume=" in summary["resume"]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # 24 training images, 12 a rank, 3 batches of 4 an epoch: the second batch of epoch 1 is step 5.
    assert saved["epoch"] == 1 and saved["global_step"] == summary["global_step"] == 5
    assert all(line.startswith("stopped: SIGTERM at step 5: ") for line in lines), lines
    if fault != "term-group":
        return
    resumed = harness_run(tmp_path, "trainer.max_epochs=2", *DDP, "trainer.resume='last'", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2


def test_a_stop_request_on_one_rank_stops_every_rank_after_the_same_step(tmp_path: Path) -> None:
    """Rank 1 asks (`RunContext.request_stop`); both ranks agree at that batch's end and the run is whole."""
    stopped = harness_run(
        tmp_path,
        "trainer.max_epochs=2",
        *DDP,
        env={"FAULT_AT": "BatchEnd:0:2", "FAULT": "stop", "FAULT_RANK": "1"},
        timeout=300,
    )
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["resume"] is None
    assert summary["global_step"] == 2, "after the second step of epoch 0, on both ranks"
    assert summary["stop"]["reason"] == "requested by a subscriber on another process"
    digests = [json.loads((run_dir / f"rank_{rank}.json").read_text())["digest"] for rank in (0, 1)]
    assert digests[0] == digests[1], "both ranks ended with the same weights"


def test_ctrl_c_writes_a_last_checkpoint_and_says_how_to_resume(tmp_path: Path) -> None:
    interrupted = harness_run(
        tmp_path, "trainer.max_epochs=3", env={"FAULT_AT": "BatchEnd:1:2", "FAULT": "interrupt"}
    )
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert "trainer.resume=" in summary["resume"]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] > 4, (
        "the checkpoint is from the moment of the interrupt"
    )

    resumed = harness_run(tmp_path, "trainer.max_epochs=3", "trainer.resume='last'")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_a_raising_subscriber_stops_the_run_by_default(tmp_path: Path) -> None:
    failed = harness_run(tmp_path, "trainer.max_epochs=2", env={"FAULT_AT": "BatchEnd:1:1", "FAULT": "raise"})
    assert failed.returncode == 1
    assert "subscriber fault failed on BatchEnd at step" in failed.stderr
    assert "RuntimeError: injected failure" in failed.stderr
    run_dir = only_run_dir(tmp_path)
    check_artifacts_whole(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    (failure,) = summary["failures"]
    assert (failure["subscriber"], failure["event"]) == ("fault", "BatchEnd")
    assert "injected failure" in failure["error"] and failure["step"] > 0


def test_an_isolated_raising_subscriber_is_reported_and_the_run_finishes(tmp_path: Path) -> None:
    done = harness_run(
        tmp_path,
        "trainer.max_epochs=2",
        "subscribers.fault.on_error='isolate'",
        env={"FAULT_AT": "BatchEnd:1:1", "FAULT": "raise"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "completed"
    (failure,) = summary["failures"]
    assert failure["subscriber"] == "fault" and failure["event"] == "BatchEnd"
    assert "injected failure" in failure["error"]


def test_two_processes_write_once_count_once_and_agree(tmp_path: Path) -> None:
    done = harness_run(tmp_path, "trainer.max_epochs=2", *DDP)
    assert done.returncode == 0, done.stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    val_size = sum(1 for line in (run_dir / "events.jsonl").read_text().splitlines() if '"validate"' in line)
    assert val_size > 0
    with (run_dir / "confusion_matrix" / "latest.csv").open() as handle:
        rows = list(csv.reader(handle))
    counted = sum(int(value) for row in rows[1:] for value in row[1:])
    assert counted == 6, "every validation image of both ranks counted exactly once (6 = 20% of 30)"
    reports = [json.loads((run_dir / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert reports[0]["digest"] == reports[1]["digest"], "EMA weights agree across ranks"
    assert len(list(run_dir.parent.glob("version_*"))) == 1, "rank 1 joined rank 0's run directory"


def test_replay_rebuilds_the_plots_from_the_event_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = harness_run(tmp_path, "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    assert replay_main([str(run_dir)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir / "replay")
    original = (run_dir / "plots" / "history.csv").read_text()
    assert (run_dir / "replay" / "plots" / "history.csv").read_text() == original
    for name in ("losses.png", "accuracy.png"):
        assert (run_dir / "replay" / "plots" / name).is_file()

"""Two machines simulated on one: two "nodes" under torchrun, SLURM's variables and Lightning's.

Each node is a process group of its own with its own ``$HARNESS_CACHE`` and ``$TMPDIR``;
only the output directory is shared, as on a cluster without a shared home.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from harness.core.context import DatasetInfo
from harness.core.errors import SettingsError
from harness.core.testing import write_imagefolder
from harness.settings.tree import TrainerSettings
from harness.training.nodes import launch_of, rebase

PLUGINS = Path(__file__).parents[2] / "plugins"
TIMEOUT = 240.0
"""Past it, every process of both nodes is killed and the test fails (never the suite)."""

RUN = (
    "trainer.accelerator='cpu'",
    "trainer.devices=1",
    "trainer.num_nodes=2",
    "trainer.strategy='ddp'",
    "trainer.num_sanity_val_steps=0",
    "trainer.progress_bar=false",
    "data.image_size=16",
    "data.batch_size=4",
    "run.plugins=['fault_plugins:Fault', 'fault_plugins:RankReport']",
    *(f"subscribers.{name}.enabled=false" for name in ("onnx_export", "samples", "model_info")),
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Launcher = Callable[[int, int], tuple[list[str], dict[str, str]]]
"""(node rank, port) -> the command's prefix and the launcher's variables for that node."""


def torchrun(node: int, port: int) -> tuple[list[str], dict[str, str]]:
    prefix = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    prefix += ["--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port)]
    return [*prefix, "-m", "harness.run"], {}


def slurm(node: int, port: int) -> tuple[list[str], dict[str, str]]:
    """What ``srun`` sets for task `node` of ``sbatch --nodes 2 --ntasks-per-node 1``."""
    variables = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "harness",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "2",
        "SLURM_PROCID": str(node),
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": str(node),
        "SLURM_NODELIST": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    return [sys.executable, "-m", "harness.run"], variables


def lightning(node: int, port: int) -> tuple[list[str], dict[str, str]]:
    variables = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node)}
    return [sys.executable, "-m", "harness.run"], variables


def two_nodes(
    tmp_path: Path,
    launcher: Launcher,
    *overrides: str,
    fault: dict[str, str] | None = None,
    settings_file: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    """Start the same command as node 0 and node 1; wait for both, killing both past `TIMEOUT`.

    Without `settings_file`, the tiny run of `RUN` on a generated tree; with it, that file.
    `extra_env` is added to both nodes' environment (after the launcher's).
    """
    data = tmp_path / "data"
    if not data.exists():
        write_imagefolder(data, {"red": 10, "green": 10, "blue": 10}, size=10)
    settings = [*overrides]
    if settings_file is None:
        settings = [f"data.root='{data}'", f"run.output_dir='{tmp_path / 'runs'}'", *RUN, *overrides]
    port = free_port()
    nodes: list[subprocess.Popen[str]] = []
    for node in (0, 1):
        prefix, variables = launcher(node, port)
        home = tmp_path / f"node{node}"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "NODE_RANK"))},
            "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
            "HARNESS_CACHE": str(home / "cache"),
            "TMPDIR": str(home / "tmp"),
            **variables,
            **(fault or {}),
            **(extra_env or {}),
        }
        argv = [*prefix, *([str(settings_file)] if settings_file else [])]
        argv += [f"--set={setting}" for setting in settings]
        nodes.append(
            subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=home,
                start_new_session=True,
            )
        )
    deadline = time.monotonic() + TIMEOUT
    done: list[subprocess.CompletedProcess[str]] = []
    try:
        for process in nodes:
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for process in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        tails = "\n".join((process.communicate()[1] or "")[-3000:] for process in nodes)
        pytest.fail(f"two nodes took over {TIMEOUT} s; both were killed\n{tails}")
    return done


def only_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs" / "digits").glob("version_*")
    return run_dir


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No launcher's variables but those a test sets."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) or name in LAUNCH_VARIABLES:
            monkeypatch.delenv(name)
    return monkeypatch


LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "NODE_RANK")


def as_torchrun(monkeypatch: pytest.MonkeyPatch, node: int) -> None:
    for name, value in {"RANK": node, "LOCAL_RANK": 0, "GROUP_RANK": node, "LOCAL_WORLD_SIZE": 1}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")


def test_the_issues_torchrun_nodes_without_num_nodes_are_one_line_naming_the_settings(
    environment: pytest.MonkeyPatch,
) -> None:
    as_torchrun(environment, 1)
    with pytest.raises(SettingsError) as refused:
        launch_of(TrainerSettings(devices=1, strategy="ddp"))
    assert str(refused.value) == (
        "[trainer].num_nodes = 1 times devices = 1 is 1 process(es), but torchrun (WORLD_SIZE) started 2: "
        "set num_nodes to the number of machines and devices to the processes on each"
    )


@pytest.mark.parametrize("node", [0, 1])
def test_each_launcher_gives_this_process_its_global_rank(environment: pytest.MonkeyPatch, node: int) -> None:
    settings = TrainerSettings(devices=1, num_nodes=2, accelerator="cpu")
    as_torchrun(environment, node)
    launch = launch_of(settings)
    assert launch is not None and (launch.rank, launch.world_size, launch.is_zero) == (node, 2, node == 0)
    for name in (*LAUNCH_VARIABLES, "TORCHELASTIC_RUN_ID"):
        environment.delenv(name, raising=False)
    for name, value in slurm(node, 1234)[1].items():
        environment.setenv(name, value)
    launch = launch_of(settings)
    assert launch is not None and launch.launcher.startswith("SLURM") and launch.rank == node
    for name in slurm(node, 1234)[1]:
        environment.delenv(name, raising=False)
    environment.setenv("NODE_RANK", str(node))
    launch = launch_of(settings)
    assert launch is not None and (launch.rank, launch.world_size) == (node, 2)


def test_alone_or_forked_by_lightning_there_is_no_launch(environment: pytest.MonkeyPatch) -> None:
    assert launch_of(TrainerSettings()) is None
    environment.setenv("LOCAL_RANK", "1")  # forked by Lightning's ddp launcher on node 1
    environment.setenv("NODE_RANK", "1")
    assert launch_of(TrainerSettings(devices=2, num_nodes=2, accelerator="cpu")) is None


def test_lightnings_variables_with_several_devices_a_node_are_refused(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("NODE_RANK", "0")
    with pytest.raises(SettingsError, match=r"^\[trainer\].num_nodes = 2 with devices = 2 under Lightning"):
        launch_of(TrainerSettings(devices=2, num_nodes=2, accelerator="cpu"))
    environment.setenv("NODE_RANK", "2")
    with pytest.raises(SettingsError, match="NODE_RANK = 2 is outside the 2 node"):
        launch_of(TrainerSettings(devices=1, num_nodes=2, accelerator="cpu"))


def test_rank_zeros_scan_is_moved_to_this_nodes_copy_of_the_embedded_data() -> None:
    scanned = DatasetInfo(
        root=Path("/n0/cache/digits"),
        train=(("/n0/cache/digits/1/a.png", 1),),
        val=(("/n0/cache/digits/0/b.png", 0),),
    )
    moved = rebase(scanned, "/n0/cache/digits", "/n1/c/digits")
    assert moved.root == Path("/n1/c/digits")
    assert moved.train == (("/n1/c/digits/1/a.png", 1),) and moved.val == (("/n1/c/digits/0/b.png", 0),)


def check_one_run(
    tmp_path: Path, nodes: list[subprocess.CompletedProcess[str]], *, scanned: bool = True
) -> Path:
    """Both nodes finished one run: one directory, each artifact once, every image counted once.

    With `scanned`, rank zero's scan of an ImageFolder tree is in node 0's cache (a stream's
    manifest is read, not scanned)."""
    for node in nodes:
        assert node.returncode == 0, node.stderr[-4000:]
    run_dir = only_run_dir(tmp_path)
    assert [node.stdout.strip().splitlines()[-1] for node in nodes] == [str(run_dir)] * 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (summary["world_size"], summary["num_nodes"]) == (2, 2)
    with (run_dir / "confusion_matrix" / "latest.csv").open() as handle:
        rows = list(csv.reader(handle))
    counted = sum(int(value) for row in rows[1:] for value in row[1:])
    assert counted == 6, "every validation image of both nodes counted once (6 = 20% of 30)"
    reports = [json.loads((run_dir / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert reports[0]["digest"] == reports[1]["digest"], "one model: the weights agree across nodes"
    # Rank zero alone records and writes: one FitStart and one RunEnd an attempt.
    events = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
    attempts = 1 + len(summary["attempts"])
    assert events.count("FitStart") == attempts and events.count("RunEnd") == attempts, events
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))
    assert checkpoints == [f"epoch=000-score={summary['best_score']:.4f}.ckpt", "last.ckpt"]
    # The scan ran on rank zero alone: node 1's cache was never made.
    assert (tmp_path / "node0" / "cache" / "scans").is_dir() == scanned
    assert not (tmp_path / "node1" / "cache").exists()
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [torchrun, slurm], ids=lambda launcher: launcher.__name__)
def test_sigterm_on_one_node_stops_both_after_one_batch_and_the_resume_completes(
    tmp_path: Path, launcher: Launcher
) -> None:
    stopped = two_nodes(
        tmp_path,
        launcher,
        "trainer.max_epochs=1",
        fault={"FAULT_AT": "BatchEnd:0:2", "FAULT": "term", "FAULT_RANK": "1"},
    )
    # 24 training images, 12 a node, 3 batches of 4 an epoch: the signal came after step 2.
    lines = [
        line for node in stopped for line in node.stderr.splitlines() if line.startswith("stopped: SIGTERM")
    ]
    assert len(lines) == 2 and all(line.startswith("stopped: SIGTERM at step 2: ") for line in lines), [
        node.stderr[-3000:] for node in stopped
    ]
    if launcher is slurm:
        assert [node.returncode for node in stopped] == [143, 143]
    else:  # torchrun exits 1 for any failed worker, and names the worker's exit code
        for node in stopped:
            assert node.returncode == 1 and "exitcode  : 143 " in node.stderr, node.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] == 2
    last = run_dir / "checkpoints" / "last.ckpt"
    assert (
        summary["resume"] == f"python -m harness.run {run_dir / 'settings.toml'} --set trainer.resume={last}"
    )
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == 2

    # The resume command, under the same launcher on both nodes.
    resumed = two_nodes(tmp_path, launcher, f"trainer.resume={last}", settings_file=run_dir / "settings.toml")
    check_one_run(tmp_path, resumed)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["global_step"] == 3
    assert [attempt["status"] for attempt in summary["attempts"]] == ["interrupted"]


@pytest.mark.slow
def test_two_nodes_under_lightnings_own_variables_train_one_model(tmp_path: Path) -> None:
    """``MASTER_ADDR``, ``MASTER_PORT`` and ``NODE_RANK`` on each machine, one process each."""
    check_one_run(tmp_path, two_nodes(tmp_path, lightning, "trainer.max_epochs=1"))


@pytest.mark.slow
def test_rank_zeros_error_stops_every_node_with_the_same_line(tmp_path: Path) -> None:
    """Only rank zero scans; its `DataError` reaches node 1 over the process group."""
    nodes = two_nodes(tmp_path, slurm, f"data.root='{tmp_path / 'missing'}'")
    assert [node.returncode for node in nodes] == [2, 2], [node.stderr[-2000:] for node in nodes]
    lines = [node.stderr.strip().splitlines()[-1] for node in nodes]
    assert lines[0] == lines[1] == f"error: [data].root = '{tmp_path / 'missing'}': no such directory"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_nodes_under_torchrun_train_one_model_from_a_stream(tmp_path: Path) -> None:
    """The tree optimized as a stream (the same 24 + 6 split): each node reads its share."""
    pytest.importorskip("litdata")
    from harness.data import main as data_main

    data, stream = tmp_path / "data", tmp_path / "stream"
    write_imagefolder(data, {"red": 10, "green": 10, "blue": 10}, size=10)
    assert data_main(["optimize", str(data), str(stream)]) == 0
    nodes = two_nodes(tmp_path, torchrun, f"data.root='{stream}'", "trainer.max_epochs=1")
    run_dir = check_one_run(tmp_path, nodes, scanned=False)
    # 24 training images, 3 whole batches of 4 on each node (litdata's drop_last).
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 3

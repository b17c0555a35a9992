"""Runs that survive, round two: real kills, interrupts, mounts and plugins (issue 25)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from harness.core.testing import write_imagefolder
from harness.run import main
from tests.harness.training.test_faults import PLUGINS, harness_run, only_run_dir
from tests.harness.training.test_resume import argv, digests, one_line, tmpfs


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``data/`` and a completed one-epoch run under ``runs/`` (tests leave it as it was)."""
    folder = tmp_path_factory.mktemp("finished")
    assert main(argv(folder, "trainer.max_epochs=1")) == 0
    return folder


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
    # two best files, so that epoch 0's is kept beside epoch 1's
    keep = ("trainer.max_epochs=2", "checkpoint.save_top_k=2")
    killed = harness_run(tmp_path, *keep, env={"FAULT_AT": "CheckpointSaving:1:1", "FAULT": "kill-mid-write"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    checkpoints = run_dir / "checkpoints"
    (stale,) = checkpoints.glob(".*.tmp")
    assert stale.name.endswith(".tmp") and stale.stat().st_size > 0
    (first,) = checkpoints.glob("epoch=000*.ckpt")
    before = torch.load(first, weights_only=True)["state_dict"]

    resumed = harness_run(tmp_path, *keep, "trainer.resume='last'")

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list(checkpoints.glob(".*.tmp")), "the dead writer's temporary file is gone"
    # epoch 0's file was last.ckpt itself until epoch 1 replaced it; now lean, the same weights
    after = torch.load(first, weights_only=True)
    assert after["weights_only"] is True
    assert all(torch.equal(after["state_dict"][key], value) for key, value in before.items())
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_resuming_on_a_read_only_file_system_is_one_line(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    mounts = tmpfs(finished / "mounted", "size=250m")
    mount = next(mounts)
    run_dir = mount / "runs" / "digits" / "version_0"
    for name in ("settings.toml", "labels.json", "summary.json", "checkpoints/last.ckpt"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(finished / "runs" / "digits" / "version_0" / name, run_dir / name)
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, check=False)
    assert remounted.returncode == 0, remounted.stderr
    try:
        before = digests(mount)
        code = main(
            [
                *argv(finished, "trainer.resume='last'", "trainer.max_epochs=2"),
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


@pytest.mark.slow
def test_a_plugin_state_unloadable_after_two_saves_meets_its_failure_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    # Every epoch saves once: its top-k file, which last.ckpt then names too (a hard link);
    # the third save is epoch 2's.
    plugin = [
        "run.plugins=['state_plugins:LateUnloadable']",
        "checkpoint.save_top_k=-1",
        "trainer.max_epochs=3",
    ]

    isolated = argv(
        tmp_path, *plugin, "subscribers.late_unloadable.on_error='isolate'", "run.name='isolated'"
    )
    assert main(isolated) == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs" / "isolated").glob("version_*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    [failure] = summary["failures"]
    assert failure["subscriber"] == "late_unloadable" and failure["event"] == "CheckpointSaving"
    assert (
        "cannot be loaded with torch.load(weights_only=True): it holds a fractions.Fraction"
        in failure["error"]
    )
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        torch.load(checkpoint, weights_only=True)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and "late_unloadable" not in last["harness"], "isolated: saved without it"

    assert main(argv(tmp_path, *plugin, "run.name='raised'")) == 1
    message = one_line(capsys)
    assert message.startswith("error: subscriber late_unloadable failed on CheckpointSaving at step ")
    assert message.endswith("it holds a fractions.Fraction")
    (run_dir,) = (tmp_path / "runs" / "raised").glob("version_*")
    kept = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert kept["harness"]["late_unloadable"] == {"epochs": 2}, "the last good save is kept whole"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("plugin", "name", "says"),
    [
        (
            "BrokenAtBuild",
            "broken_at_build",
            "raised while it was built: FileNotFoundError: lookup.csv: no such file",
        ),
        (
            "BrokenAtConnect",
            "broken_at_connect",
            "raised while it was connected: RuntimeError: cannot subscribe",
        ),
        (
            "NeedsZebra",
            "needs_zebra",
            "class 'zebra' is not among the data's classes ['blue', 'green', 'red']",
        ),
    ],
)
def test_a_subscriber_raising_while_built_or_connected_is_one_line_and_nothing_made(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plugin: str,
    name: str,
    says: str,
) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    command = argv(
        tmp_path, f"run.plugins=['state_plugins:{plugin}']", f"subscribers.{name}.on_error='isolate'"
    )
    before = digests(tmp_path)

    assert main(command) == 2

    assert one_line(capsys) == f"error: [subscribers.{name}]: {says}"
    assert not (tmp_path / "runs").exists(), "no run directory, no .lock"
    assert digests(tmp_path) == before


@pytest.mark.slow
def test_a_loose_checkpoint_with_other_classes_or_size_is_refused_and_no_run_directory_made(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = finished / "downloads" / "model.ckpt"
    loose.parent.mkdir()
    shutil.copy(finished / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt", loose)
    renamed = write_imagefolder(finished / "renamed", {"wolf": 8, "green": 8, "blue": 8}, size=10)
    before = digests(finished)
    capsys.readouterr()

    code = main(
        argv(
            finished,
            f"trainer.resume='{loose}'",
            "trainer.max_epochs=2",
            "data.image_size=20",
            "data.resize='crop'",
            data=renamed,
        )
    )

    assert code == 2
    assert one_line(capsys) == (
        f"error: [trainer].resume: {loose} does not fit these settings: classes ['blue', 'green', 'red'] "
        "in the checkpoint, ['blue', 'green', 'wolf'] now; [data].image_size 16 in the checkpoint, 20 now; "
        "preprocessing crop_fraction 1.0 in the checkpoint, 0.875 now; "
        "preprocessing resize 'squash' in the checkpoint, 'crop' now"
    )
    assert sorted(p.name for p in (finished / "runs" / "digits").iterdir()) == ["version_0"]
    assert digests(finished) == before


@pytest.mark.slow
def test_ctrl_c_during_the_onnx_export_then_the_resume_command_finishes_the_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for seed, split in enumerate(("train", "val", "test")):
        write_imagefolder(data / split, {"red": 6, "green": 6, "blue": 6}, size=10, seed=seed)
    export = "subscribers.onnx_export.enabled=true"
    interrupted = harness_run(
        tmp_path,
        "trainer.max_epochs=1",
        export,
        env={"FAULT_AT": "TrainLoopEnd:*:1", "FAULT": "interrupt-soon"},
    )
    assert interrupted.returncode == 130, interrupted.stderr[-2000:]
    run_dir = only_run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert not (run_dir / "onnx_export" / "model.onnx").exists(), "the interrupt came during the export"
    settings, resume = summary["resume"].split(" --set ")
    assert settings == f"python -m harness.run {run_dir / 'settings.toml'}"

    resumed = harness_run(tmp_path, "trainer.max_epochs=1", export, resume.removeprefix("--set "))

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (run_dir / "onnx_export" / "model.onnx").is_file()
    assert summary["artifacts"]["onnx_model"] == "onnx_export/model.onnx"
    assert summary["best_checkpoint"] is not None
    assert summary["test"] is not None and summary["test"]["images"] == 18

"""Resumes and run directories as clusters and users treat them: nothing earlier is overwritten.

Each case runs the real command and asserts its exit code, its one-line message, and that
every file that existed before is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness.core.testing import write_imagefolder
from harness.run import main
from harness.training.run_dir import newest_checkpoint

FAST = [
    "data.image_size=16",
    "data.batch_size=8",
    "model.arch='resnet18'",
    "trainer.accelerator='cpu'",
    "trainer.devices=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.progress_bar=false",
    "run.terminal='quiet'",
    *(
        f"subscribers.{name}.enabled=false"
        for name in ("onnx_export", "samples", "dataset_stats", "model_info", "report", "trackers", "plots")
    ),
]


def argv(tmp_path: Path, *overrides: str, data: Path | None = None) -> list[str]:
    root = data or tmp_path / "data"
    if not root.exists():
        write_imagefolder(root, {"red": 8, "green": 8, "blue": 8}, size=10)
    items = [f"data.root='{root}'", f"run.output_dir='{tmp_path / 'runs'}'", *FAST, *overrides]
    return [arg for item in items for arg in ("--set", item)]


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [
        line
        for line in capsys.readouterr().err.strip().splitlines()
        if line.startswith(("error:", "stopped:"))
    ]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    """A completed one-epoch run."""
    assert main(argv(tmp_path, "trainer.max_epochs=1")) == 0
    (run_dir,) = (tmp_path / "runs" / "digits").glob("version_*")
    return run_dir


@pytest.mark.slow
def test_a_resume_with_other_data_or_architecture_stops_before_writing(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(tmp_path / "runs")
    other = write_imagefolder(tmp_path / "other", {"red": 8, "blue": 8, "green": 8, "gold": 8}, size=10)
    code = main(
        argv(tmp_path, "trainer.resume='last'", "trainer.max_epochs=2", "data.image_size=20", data=other)
    )
    assert code == 2
    message = one_line(capsys)
    assert "does not fit these settings" in message
    assert "classes ['blue', 'green', 'red'] in the checkpoint" in message and "'gold'" in message
    assert "[data].image_size 16 in the checkpoint, 20 now" in message
    assert digests(tmp_path / "runs") == before


@pytest.mark.slow
def test_a_completed_run_resumed_does_nothing_and_a_longer_one_keeps_the_record(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(tmp_path / "runs")
    assert main(argv(tmp_path, "trainer.resume='last'", "trainer.max_epochs=1")) == 0
    assert "already completed 1 epoch(s); nothing to do" in capsys.readouterr().err
    assert digests(tmp_path / "runs") == before

    first = json.loads((finished / "summary.json").read_text())
    assert main(argv(tmp_path, "trainer.resume='last'", "trainer.max_epochs=2")) == 0
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    [attempt] = summary["attempts"]
    assert attempt["record"] == "attempts/001" and attempt["epochs_completed"] == first["epochs_completed"]
    assert json.loads((finished / "attempts" / "001" / "summary.json").read_text()) == first
    assert set(first["artifacts"]) <= set(summary["artifacts"]), "nothing earlier drops out of the record"


@pytest.mark.slow
def test_a_checkpoint_outside_a_run_directory_resumes_into_a_new_one(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    shutil.copy(finished / "checkpoints" / "last.ckpt", elsewhere / "model.ckpt")
    (elsewhere / "settings.toml").write_text("# the user's own file\n")
    before = digests(elsewhere)
    code = main(argv(tmp_path, f"trainer.resume='{elsewhere / 'model.ckpt'}'", "trainer.max_epochs=2"))
    assert code == 0, capsys.readouterr().err
    assert digests(elsewhere) == before
    assert sorted(p.name for p in (tmp_path / "runs" / "digits").glob("version_*")) == [
        "version_0",
        "version_1",
    ]


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused_naming_the_holder(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from harness.io.lock import RunLock; "
            f"lock = RunLock(Path({str(finished)!r})); lock.acquire(); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = digests(tmp_path / "runs")
        assert main(argv(tmp_path, "trainer.resume='last'", "trainer.max_epochs=2")) == 2
        assert f"another process (PID {holder.pid}) is running in this run directory" in one_line(capsys)
        assert digests(tmp_path / "runs") == before
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert main(argv(tmp_path, "trainer.resume='last'", "trainer.max_epochs=2")) == 0, (
        "the dead holder's lock is gone"
    )


def test_a_monitor_the_model_never_logs_stops_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(tmp_path, "checkpoint.monitor='val/f1'")) == 2
    message = one_line(capsys)
    assert "[checkpoint].monitor = 'val/f1' is not a metric the model logs; one of: val/acc_top1" in message
    assert not (tmp_path / "runs").exists()


def test_output_under_a_regular_file_is_one_line_and_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    assert main([*argv(tmp_path), "--set", f"run.output_dir='{blocker / 'runs'}'"]) == 2
    assert "[run].output_dir: cannot make the run directory under" in one_line(capsys)
    assert blocker.read_text() == "a file"


def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A real tmpfs at `mount` (made here) with `options`; the test is skipped where mounting is refused."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system (root ignores permission bits, not a read-only mount)."""
    yield from tmpfs(tmp_path / "read_only", "ro,size=1m")


def test_a_harness_cache_under_a_regular_file_is_one_line_and_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a data root of one's own, the cache holds the scan's verdicts."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    monkeypatch.setenv("HARNESS_CACHE", str(blocker / "cache"))
    assert main(argv(tmp_path)) == 2
    message = one_line(capsys)
    assert f"HARNESS_CACHE = '{blocker / 'cache'}': cannot write there (Not a directory)" in message
    assert not (tmp_path / "runs").exists()
    assert blocker.read_text() == "a file"


def test_a_read_only_harness_cache_is_one_line_and_no_run_directory(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    read_only_mount: Path,
) -> None:
    """Without a data root, the embedded digits would be written there."""
    monkeypatch.setenv("HARNESS_CACHE", str(read_only_mount))
    overrides = [f"run.output_dir='{tmp_path / 'runs'}'", *FAST]
    assert main([arg for item in overrides for arg in ("--set", item)]) == 2
    message = one_line(capsys)
    assert f"HARNESS_CACHE = '{read_only_mount}': cannot write there (Read-only file system)" in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 torn off"], ids=["empty", "truncated"])
def test_an_empty_or_truncated_checkpoint_given_to_resume_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(content)
    assert main(argv(tmp_path, f"trainer.resume='{broken}'")) == 2
    assert f"[trainer].resume: {broken} is not a readable checkpoint" in one_line(capsys)
    assert not (tmp_path / "runs").exists()
    assert broken.read_bytes() == content


def test_resume_reads_the_newest_checkpoint_by_global_step_not_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    for name, step in (("last.ckpt", 12), ("last-v1.ckpt", 30), ("epoch=001.ckpt", 20)):
        torch.save({"state_dict": {}, "global_step": step, "epoch": 0}, folder / name)
    assert newest_checkpoint(tmp_path / "run") == folder / "last-v1.ckpt"


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 30 MB file system, too small for one ResNet-18 checkpoint."""
    yield from tmpfs(tmp_path / "small", "size=30m")


@pytest.mark.slow
def test_a_full_disk_leaves_no_partial_checkpoint_and_says_so_in_one_line(
    tmp_path: Path, full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = full_disk / "earlier.txt"
    earlier.write_text("kept")
    code = main([*argv(tmp_path), "--set", f"run.output_dir='{full_disk / 'runs'}'"])
    assert code == 1
    message = one_line(capsys)
    assert "cannot write the checkpoint (No space left on device)" in message
    assert "the earlier checkpoints are untouched" in message
    (run_dir,) = (full_disk / "runs" / "digits").glob("version_*")
    assert not list((run_dir / "checkpoints").glob("*")), "no partial or temporary checkpoint is left"
    assert earlier.read_text() == "kept"


UNLOADABLE = """
from fractions import Fraction

from harness.core.events import BatchEnd


class Keeper:
    def __init__(self, context):
        self.context = context

    def connect(self, bus):
        bus.subscribe(BatchEnd, lambda event: None)

    def state_dict(self):
        return {"ratio": Fraction(1, 3)}

    def load_state_dict(self, state):
        pass
"""


@pytest.mark.slow
def test_a_subscriber_state_that_weights_only_cannot_load_stops_at_the_first_save(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keeper_plugin.py").write_text(UNLOADABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(argv(tmp_path, "run.plugins=['keeper_plugin:Keeper']", "trainer.max_epochs=2")) == 1
    message = one_line(capsys)
    assert "subscriber keeper failed on CheckpointSaving" in message
    assert "cannot be loaded with torch.load(weights_only=True): it holds a fractions.Fraction" in message

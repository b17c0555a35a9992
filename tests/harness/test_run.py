"""End to end with the real Trainer: event order, run directories, resume of subscriber state."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.core.bus import Bus
from harness.core.events import BatchEnd
from harness.core.testing import Recorder
from harness.run import main
from harness.settings import Settings
from harness.training.fit import run

MakeSettings = Callable[..., Settings]

pytestmark = pytest.mark.slow


def compress(names: list[str]) -> list[tuple[str, int]]:
    runs: list[tuple[str, int]] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + 1)
        else:
            runs.append((name, 1))
    return runs


def test_events_fire_in_the_documented_order(make_settings: MakeSettings) -> None:
    settings = make_settings(
        "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"
    )
    recorder = Recorder()
    run(settings, extra_subscribers={"recorder": recorder})

    sanity = [("ValidationSwapIn", 1), ("BatchEnd", 1), ("ValidationEpochEnd", 1), ("ValidationSwapOut", 1)]
    epoch = [
        ("TrainEpochStart", 1),
        ("BatchEnd", 2),
        ("ValidationSwapIn", 1),
        ("BatchEnd", 1),
        ("ValidationEpochEnd", 1),
        ("ValidationSwapOut", 1),
        ("TrainEpochEnd", 1),
        ("EpochJobsQueued", 1),
        ("CheckpointSaving", 1),  # the best file, which last.ckpt names too (or last.ckpt alone)
    ]
    expected = [
        ("FitStart", 1),
        *sanity,
        *epoch,
        *epoch,
        ("TrainLoopEnd", 1),
        ("TrainEnd", 1),
        ("FitEnd", 1),
        ("RunEnd", 1),
    ]
    assert compress(recorder.names()) == expected

    batches = recorder.of(BatchEnd)
    assert [b.sanity_check for b in batches] == [True, False, False, False, False, False, False]
    assert [(b.stage, b.global_step) for b in batches if b.stage == "train"] == [
        ("train", 1),
        ("train", 2),
        ("train", 3),
        ("train", 4),
    ]
    assert all(b.optimizer_stepped for b in batches if b.stage == "train")
    assert all(b.logits.shape == (len(b.targets), 3) and not b.logits.requires_grad for b in batches)
    validation_ends = [e for e in recorder.events if type(e).__name__ == "ValidationEpochEnd"]
    assert {"val/acc_top1", "val/acc_top5", "val/loss"} <= set(validation_ends[-1].metrics)  # type: ignore[attr-defined]


def test_gradient_accumulation_marks_the_batches_that_stepped(make_settings: MakeSettings) -> None:
    settings = make_settings("trainer.limit_train_batches=3", "trainer.accumulate_grad_batches=2")
    recorder = Recorder()
    run(settings, extra_subscribers={"recorder": recorder})
    train = [b for b in recorder.of(BatchEnd) if b.stage == "train"]
    assert [(b.optimizer_stepped, b.global_step) for b in train] == [(False, 0), (True, 1), (True, 2)]


class Counter:
    """Counts training batches; its count must survive a resume."""

    def __init__(self) -> None:
        self.batches = 0
        self.loaded: dict[str, Any] | None = None

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="train")

    def on_batch_end(self, event: BatchEnd) -> None:
        self.batches += 1

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "tensor": torch.arange(3)}

    def load_state_dict(self, state: Any) -> None:
        self.loaded = dict(state)
        self.batches = state["batches"]


def test_resume_from_last_continues_the_run_with_subscriber_state(make_settings: MakeSettings) -> None:
    first = Counter()
    settings = make_settings("trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    done = run(settings, extra_subscribers={"counter": first})
    assert first.batches == 2

    second = Counter()
    resumed = run(
        make_settings(
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.max_epochs=2",
            "trainer.resume='last'",
        ),
        extra_subscribers={"counter": second},
    )
    assert resumed.run_dir == done.run_dir
    assert second.loaded is not None and torch.equal(second.loaded["tensor"], torch.arange(3))
    assert second.batches == 4
    assert resumed.summary.epochs_completed == 2


def test_every_run_gets_a_new_directory_and_a_summary(make_settings: MakeSettings, capsys: Any) -> None:
    settings = make_settings("trainer.limit_train_batches=1", "trainer.limit_val_batches=1")
    first = run(settings).run_dir
    toml = first / "settings.toml"
    assert main([str(toml), "--set", "trainer.max_epochs=1"]) == 0
    second = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first.name, second.name) == ("version_0", "version_1")
    assert second.parent == first.parent

    summary = json.loads((second / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["monitor"] == "val/acc_top1"
    assert summary["epochs_completed"] == 1
    assert summary["best_checkpoint"].startswith("checkpoints/")
    assert (second / summary["best_checkpoint"]).is_file()
    assert 0.0 <= summary["best_score"] <= 1.0
    assert "val/acc_top1" in summary["final_metrics"]
    for relative in summary["artifacts"].values():
        assert (second / relative).exists(), relative
    assert (second / "checkpoints" / "last.ckpt").is_file()


def test_a_subscriber_stops_the_run_after_a_step_and_it_ends_stopped_exported_and_scored(
    tmp_path: Path,
    make_settings: MakeSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from importlib import resources

    import jsonschema

    from harness.core.testing import write_imagefolder
    from harness.settings import settings_to_toml

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "plugins"))
    data = tmp_path / "split"
    for seed, split in enumerate(("train", "val", "test")):
        write_imagefolder(data / split, {"red": 8, "green": 8, "blue": 8}, seed=seed)
    settings = make_settings(
        "onnx_export",
        "trainer.max_epochs=3",
        "run.plugins=['stop_plugins:SPEC']",
        "subscribers.stop_at_step.step=2",
        root=data,
    )
    written = tmp_path / "settings.toml"
    written.write_text(settings_to_toml(settings))
    code = main([str(written)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "stopped at step 2 as a subscriber asked: step 2 reached" in err
    assert "no resume is needed" in err
    run_dir = Path(out.strip().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert summary["stop"] == {"reason": "step 2 reached", "at": "step", "epoch": 0, "global_step": 2}
    assert summary["global_step"] == 2, "it ended after the step that asked, not at the end of the epoch"
    assert summary["resume"] is None
    assert summary["best_checkpoint"], "the stopped epoch was validated and checkpointed"
    assert (run_dir / "onnx_export" / "model.onnx").is_file()
    assert summary["test"]["images"] == 24
    assert (run_dir / "run_end_status.txt").read_text() == "stopped"
    schema = json.loads((resources.files("harness") / "summary.schema.json").read_text())
    jsonschema.validate(summary, schema)

"""Top-k checkpoints hold the validated weights alone; last.ckpt is whole and the only resumable one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from harness.core.errors import SettingsError
from harness.evaluate import main as evaluate_main
from harness.settings import Settings
from harness.training.evaluation import load_checkpoint
from harness.training.fit import run
from harness.training.lean_checkpoint import LEAN_KEY, lean
from harness.training.run_dir import check_resume

MakeSettings = Callable[..., Settings]

# Every subscriber the default settings enable, the way the default run has them.
DEFAULT = (
    "dataset_stats",
    "model_info",
    "augment_preview",
    "ema",
    "sampler_tracking",
    "confusion_matrix",
    "samples",
    "plots",
    "onnx_export",
    "epoch_line",
    "trackers",
    "report",
)


def _bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def test_lean_keeps_the_weights_what_names_them_and_the_score_only() -> None:
    whole = {
        "epoch": 2,
        "global_step": 20,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {"w": torch.ones(2)},
        "hyper_parameters": {"arch": "resnet18"},
        "optimizer_states": [{"state": {}}],
        "lr_schedulers": [{}],
        "loops": {},
        "harness": {"ema": {"training": {"w": torch.zeros(2)}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val/acc_top1'}": {"current_score": 0.5},
            "BusCallback": {},
        },
    }
    kept = lean(whole)
    assert set(kept) == {
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "state_dict",
        "hyper_parameters",
        "callbacks",
        LEAN_KEY,
    }
    assert list(kept["callbacks"]) == ["ModelCheckpoint{'monitor': 'val/acc_top1'}"]


@pytest.mark.slow
def test_the_default_run_keeps_whole_only_last_and_every_top_k_file_evaluates(
    make_settings: MakeSettings, tiny_imagefolder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        *DEFAULT,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=1",
        "run.terminal='quiet'",
        # three steps: without these the average of so short a run is the weights themselves
        "subscribers.ema.horizon=0",
        "subscribers.ema.decay=0.5",
    )
    result = run(settings)
    folder = result.run_dir / "checkpoints"
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    weights = _bytes(last["state_dict"])
    top_k = sorted(path for path in folder.glob("*.ckpt") if path.name != "last.ckpt")
    assert len(top_k) == 3
    for path in top_k:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        assert saved[LEAN_KEY] is True
        assert "optimizer_states" not in saved and "harness" not in saved
        assert path.stat().st_size < 1.05 * weights
        assert load_checkpoint(path).module.net is not None
    assert "optimizer_states" in last and not last.get(LEAN_KEY)
    # the EMA's promise: a checkpoint holds the weights that were validated and kept (the
    # better of the average and the training weights); the EMA's state holds the other set
    newest = torch.load(top_k[-1], map_location="cpu", weights_only=True)
    ema = last["harness"]["ema"]
    validated, other = newest["state_dict"], ema["average" if ema["kept"] == "training" else "training"]
    assert other
    assert all(torch.equal(validated[key], last["state_dict"][key]) for key in validated)
    assert not all(torch.equal(validated[key], other[key]) for key in other)
    # three top-k files, last.ckpt (weights, average, AdamW's two moments) and the ONNX model
    size = sum(path.stat().st_size for path in result.run_dir.rglob("*") if path.is_file())
    assert size < 8.5 * weights, f"{size / weights:.2f} x the weights"
    assert evaluate_main([str(top_k[0]), str(tiny_imagefolder), "--accelerator", "cpu"]) == 0
    capsys.readouterr()
    with pytest.raises(SettingsError, match=r"holds the validated weights alone.*last\.ckpt"):
        check_resume(top_k[0], result.run_dir, settings, ["a", "b"], ["ema"])

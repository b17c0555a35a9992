"""Top-k checkpoints hold the validated weights alone; last.ckpt is whole and the only resumable one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch

from harness.core.errors import SettingsError
from harness.evaluate import main as evaluate_main
from harness.settings import Settings
from harness.training.checkpoint_io import AtomicCheckpointIO
from harness.training.evaluation import load_checkpoint
from harness.training.fit import run
from harness.training.lean_checkpoint import LEAN_KEY, LeanModelCheckpoint, lean
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


class _Peaked(L.LightningModule):
    """A tiny real model whose validation score is `scores[epoch]`: it climbs to epoch 2, then falls."""

    def __init__(self, scores: tuple[float, ...] = (0, 1, 2, 1, 0)) -> None:
        super().__init__()
        self.scores = scores
        self.net = torch.nn.Linear(4, 2)
        self.weights_at: dict[int, dict[str, torch.Tensor]] = {}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.net(batch).square().mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("score", float(self.scores[self.current_epoch]))

    def on_validation_epoch_end(self) -> None:
        self.weights_at[self.current_epoch] = {k: v.clone() for k, v in self.state_dict().items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader[torch.Tensor]:
        return torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=4)

    def val_dataloader(self) -> torch.utils.data.DataLoader[torch.Tensor]:
        return torch.utils.data.DataLoader(torch.randn(4, 4), batch_size=4)


def _fit(folder: Path, model: _Peaked, epochs: int, resume: Path | None = None) -> None:
    checkpoints = LeanModelCheckpoint(
        dirpath=folder, filename="{epoch}", monitor="score", mode="max", save_top_k=1, save_last=True,
        enable_version_counter=False,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=epochs, callbacks=[checkpoints], plugins=[AtomicCheckpointIO()], accelerator="cpu",
        logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, ckpt_path=resume)


def _inodes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_ino for path in sorted(folder.glob("*.ckpt"))}


def test_the_newest_best_file_is_last_ckpt_itself_until_a_later_epoch_makes_it_lean(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    first = _Peaked()
    _fit(folder, first, epochs=3)
    # epoch 2 is the best and the newest: one whole file under two names
    inodes = _inodes(folder)
    assert set(inodes) == {"epoch=2.ckpt", "last.ckpt"} and inodes["epoch=2.ckpt"] == inodes["last.ckpt"]
    assert not torch.load(folder / "epoch=2.ckpt", weights_only=True).get(LEAN_KEY)
    # a resumed run: epochs 3 and 4 score lower; last.ckpt moves on at each, the best file
    # keeps epoch 2's weights, rewritten lean (Lightning 2.6.6 alone left last.ckpt at epoch 2)
    second = _Peaked()
    _fit(folder, second, epochs=5, resume=folder / "last.ckpt")
    inodes = _inodes(folder)
    assert set(inodes) == {"epoch=2.ckpt", "last.ckpt"} and inodes["epoch=2.ckpt"] != inodes["last.ckpt"]
    best = torch.load(folder / "epoch=2.ckpt", weights_only=True)
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert best[LEAN_KEY] is True and "optimizer_states" not in best
    assert (best["epoch"], last["epoch"]) == (2, 4) and "optimizer_states" in last
    for key, value in first.weights_at[2].items():
        assert torch.equal(best["state_dict"][key], value)
        assert torch.equal(last["state_dict"][key], second.weights_at[4][key])


def test_of_two_equal_scores_the_newer_epoch_is_kept_and_costs_no_disk(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    _fit(folder, _Peaked(scores=(0, 1, 1)), epochs=3)
    inodes = _inodes(folder)
    assert set(inodes) == {"epoch=2.ckpt", "last.ckpt"} and inodes["epoch=2.ckpt"] == inodes["last.ckpt"]


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


def _disk(folder: Path) -> int:
    """Bytes on disk under `folder`, each file counted once however many names it has."""
    inodes = {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    return sum(inodes.values())


@pytest.mark.slow
def test_the_default_run_is_under_250_mb_and_every_top_k_file_evaluates(
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
    last_path = folder / "last.ckpt"
    last = torch.load(last_path, map_location="cpu", weights_only=True)
    weights = _bytes(last["state_dict"])
    top_k = sorted(path for path in folder.glob("*.ckpt") if path.name != "last.ckpt")
    assert len(top_k) == 1
    (best_path,) = top_k
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    assert "optimizer_states" in last and not last.get(LEAN_KEY) and last["epoch"] == 2
    # the last epoch ties or beats the others here (seeded): the best file is last.ckpt itself
    assert best_path.samefile(last_path) and best["epoch"] == 2
    # the EMA's promise: a checkpoint holds the weights that were validated and kept (the
    # better of the average and the training weights); the EMA's state holds the other set
    ema = last["harness"]["ema"]
    other = ema["average" if ema["kept"] == "training" else "training"]
    assert other and not all(torch.equal(last["state_dict"][key], other[key]) for key in other)
    # last.ckpt (weights, average, AdamW's two moments) and the ONNX model: ResNet-18's
    # 44.7 MB of weights make that 224 MB (a lean best file of an older epoch would add 45)
    size = _disk(result.run_dir)
    assert size < 5.2 * weights and size < 250e6, f"{size / 1e6:.0f} MB, {size / weights:.2f} x the weights"
    assert load_checkpoint(best_path).module.net is not None
    assert evaluate_main([str(best_path), str(tiny_imagefolder), "--accelerator", "cpu"]) == 0
    capsys.readouterr()
    # a lean best file (of an older epoch) loads for evaluation and is refused for resume
    torch.save(lean(last), folder / "old.ckpt")
    assert load_checkpoint(folder / "old.ckpt").module.net is not None
    with pytest.raises(SettingsError, match=r"holds the validated weights alone.*last\.ckpt"):
        check_resume(folder / "old.ckpt", result.run_dir, settings, ["a", "b"], ["ema"])

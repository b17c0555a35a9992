"""A streamed data set: ``harness data optimize``, then training, evaluation and a resume from it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from harness.core.bus import Bus
from harness.core.events import BatchEnd
from harness.core.testing import write_imagefolder
from harness.data import main as data_main
from harness.evaluate import main as evaluate_main
from harness.io.stream import is_stream, read_manifest
from tests.conftest import MakeSettings

pytest.importorskip("litdata")


def _split_tree(root: Path, corrupt: bool = True) -> Path:
    """train/ (8 a class), val/ and test/ (3 a class): three classes of 16 px images, one corrupt file."""
    for split, count, seed in (("train", 8, 0), ("val", 3, 1), ("test", 3, 2)):
        write_imagefolder(root / split, {"red": count, "green": count, "blue": count}, size=16, seed=seed)
    if corrupt:
        (root / "train" / "green" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_optimize_names_an_unreadable_image_and_writes_nothing(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _split_tree(tmp_path / "tree")
    assert data_main(["optimize", str(tree), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "broken.png" in error and "--on-corrupt skip" in error
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_optimize_refuses_a_destination_that_holds_files(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = _split_tree(tmp_path / "tree", corrupt=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert data_main(["optimize", str(tree), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_optimize_keeps_every_split_and_the_label_map_in_order(tmp_path: Path, cache: Path) -> None:
    tree = _split_tree(tmp_path / "tree")
    out = tmp_path / "out"
    assert data_main(["optimize", str(tree), str(out), "--on-corrupt", "skip", "--workers", "2"]) == 0
    assert is_stream(str(out)) and not is_stream(str(tree))
    manifest = read_manifest(str(out), "test")
    assert manifest.classes == ("blue", "green", "red")
    assert {split: len(samples) for split, samples in manifest.splits.items()} == {
        "train": 24,
        "val": 9,
        "test": 9,
    }
    assert [Path(path).name for path in manifest.skipped] == ["broken.png"]
    from litdata import StreamingDataset

    # The list's order is the chunks' order, and the items are the files' bytes.
    items = list(StreamingDataset(str(out / "train")))
    assert [item["key"] for item in items] == [key for key, _ in manifest.splits["train"]]
    assert [int(item["label"]) for item in items] == [target for _, target in manifest.splits["train"]]
    assert items[0]["image"] == (tree / items[0]["key"]).read_bytes()


class _Order:
    """The class indices of every training batch, by global step."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.batches: dict[int, list[int]] = {}
        self.stop_at = stop_at

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="train")

    def on_batch_end(self, event: BatchEnd) -> None:
        self.batches[event.global_step] = [int(t) for t in event.targets]
        if event.global_step == self.stop_at:
            raise KeyboardInterrupt  # Ctrl-C: the run writes last.ckpt and stops


@pytest.mark.slow
def test_a_run_trains_validates_and_tests_from_the_stream_and_evaluate_reads_it(
    tmp_path: Path,
    cache: Path,
    make_settings: MakeSettings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from harness.training.fit import run

    out = tmp_path / "out"
    assert data_main(["optimize", str(_split_tree(tmp_path / "tree")), str(out), "--on-corrupt", "skip"]) == 0
    capsys.readouterr()
    settings = make_settings("dataset_stats", "data.num_workers=0", "data.batch_size=4", root=out)
    result = run(settings)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["test"]["images"] == 9 and summary["test"].get("error") is None
    stats = json.loads((result.run_dir / "dataset_stats" / "dataset_stats.json").read_text())
    assert [Path(path).name for path in stats["skipped"]] == ["broken.png"]
    assert "skipping 1 unreadable image file(s)" in caplog.text and "broken.png" in caplog.text
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    (loader,) = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader["num_samples_yielded"] == 24  # litdata's loader state rides in the checkpoint
    assert evaluate_main([str(result.run_dir), str(out), "--output", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["samples"] == 9


@pytest.mark.slow
def test_a_resume_mid_epoch_continues_the_same_sample_order(
    tmp_path: Path, cache: Path, make_settings: MakeSettings
) -> None:
    from harness.training.fit import run

    out = tmp_path / "out"
    assert data_main(["optimize", str(_split_tree(tmp_path / "tree", corrupt=False)), str(out)]) == 0
    items = (
        "data.num_workers=0",
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.limit_val_batches=1",
    )
    from litdata import StreamingDataset

    from harness.training.stream import ResumableStreamingLoader

    # litdata's own order, uninterrupted: the run shuffles with the run's seed, in batches of 4.
    seed = make_settings(*items, root=out).run.seed
    loader = ResumableStreamingLoader(
        StreamingDataset(str(out / "train"), shuffle=True, seed=seed), batch_size=4
    )
    order = [[int(t) for t in batch["label"]] for _ in range(2) for batch in loader]
    whole = dict(enumerate(order, start=1))  # by global step after the batch
    assert len(whole) == 12 and len({tuple(labels) for labels in order[:6]}) > 1

    cut = _Order(stop_at=3)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's answer to Ctrl-C, after the harness's checkpoint
            run(make_settings(*items, "run.name='cut'", root=out), extra_subscribers={"order": cut})
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C from then on
    (stopped,) = (tmp_path / "runs" / "cut").glob("version_*")
    assert json.loads((stopped / "summary.json").read_text())["status"] == "interrupted"
    resumed = _Order()
    run(
        make_settings(*items, "run.name='cut'", "trainer.resume='last'", root=out),
        extra_subscribers={"order": resumed},
    )
    # Steps count from 1: the rest of the first epoch (4-6), then the whole second one (7-12).
    assert sorted(resumed.batches) == list(range(4, 13))
    assert cut.batches == {step: whole[step] for step in range(1, 4)}
    assert resumed.batches == {step: whole[step] for step in range(4, 13)}


def test_a_stream_under_several_processes_is_refused_before_anything_is_made(
    tmp_path: Path, cache: Path, make_settings: MakeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.core.errors import SettingsError
    from harness.training.fit import run

    out = tmp_path / "out"
    assert data_main(["optimize", str(_split_tree(tmp_path / "tree", corrupt=False)), str(out)]) == 0
    capsys.readouterr()
    ddp = ("trainer.accelerator='cpu'", "trainer.strategy='ddp'", "trainer.devices=2")
    settings = make_settings(*ddp, root=out)
    with pytest.raises(SettingsError, match=r"\[data\].root = .* is streamed.*devices = 2"):
        run(settings)
    assert not Path(settings.run.output_dir).exists() or not any(Path(settings.run.output_dir).iterdir())

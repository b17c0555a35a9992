"""A streamed data set: ``harness data optimize``, then training, evaluation and a resume from it."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
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
from tests.harness.training.test_faults import PLUGINS, run_group

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


DDP = (
    "trainer.accelerator='cpu'",
    "trainer.strategy='ddp'",
    "trainer.devices=2",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=1",
    "trainer.progress_bar=false",
    "data.image_size=16",
    "data.batch_size=4",
    "data.num_workers=0",
    "run.plugins=['fault_plugins:Fault', 'fault_plugins:RankReport', 'fault_plugins:BatchOrder']",
    *(
        f"subscribers.{name}.enabled=false"
        for name in ("onnx_export", "samples", "dataset_stats", "model_info")
    ),
)
"""Two processes on the CPU (gloo) under Lightning's ``ddp`` launcher; no ONNX export, so the
end-of-run test scores the checkpoint with a Trainer on rank zero while the process group is open."""


def _two_processes(
    tmp_path: Path, stream: Path, *overrides: str, fault: str = ""
) -> subprocess.CompletedProcess[str]:
    """``python -m harness.run`` from `stream` under DDP, killed as a group past 300 s."""
    argv = [sys.executable, "-m", "harness.run", f"--set=data.root='{stream}'"]
    argv += [f"--set=run.output_dir='{tmp_path / 'runs'}'", *(f"--set={item}" for item in (*DDP, *overrides))]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
        **({"FAULT_AT": "BatchEnd:0:2", "FAULT": fault, "FAULT_RANK": "1"} if fault else {}),
    }
    return run_group(argv, env, timeout=300)


def _rank_order(stream: Path, seed: int, rank: int) -> list[list[int]]:
    """litdata's own order of rank `rank`'s training batches of 4 among two processes."""
    from litdata import StreamingDataset

    from harness.io.stream import read_as
    from harness.training.stream import ResumableStreamingLoader

    dataset = StreamingDataset(str(stream / "train"), shuffle=True, seed=seed)
    read_as(dataset, world_size=2, rank=rank, num_nodes=1, drop_last=True)
    loader = ResumableStreamingLoader(dataset, batch_size=4, drop_last=True)
    return [[int(t) for t in batch["label"]] for batch in loader]


@pytest.mark.slow
def test_two_processes_train_on_equal_shares_count_each_image_once_and_resume_mid_epoch(
    tmp_path: Path, cache: Path, make_settings: MakeSettings
) -> None:
    out = tmp_path / "out"
    assert data_main(["optimize", str(_split_tree(tmp_path / "tree", corrupt=False)), str(out)]) == 0
    # 24 training images: litdata gives each rank 3 whole batches of 4 (drop_last: 6 batches / 2).
    seed = make_settings(root=out).run.seed
    expected = [_rank_order(out, seed, rank) for rank in (0, 1)]
    assert [len(order) for order in expected] == [3, 3] and expected[0] != expected[1]
    assert sorted(t for order in expected for batch in order for t in batch) == sorted([0, 1, 2] * 8)

    cut = _two_processes(tmp_path, out, fault="term")  # SIGTERM to rank 1 after its second batch
    assert cut.returncode == 143, cut.stderr[-4000:]
    (run_dir,) = (tmp_path / "runs" / "digits").glob("version_*")
    resumed = _two_processes(tmp_path, out, "trainer.resume='last'")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert len(list(run_dir.parent.glob("version_*"))) == 1

    for rank in (0, 1):
        lines = (run_dir / f"order_{rank}.jsonl").read_text().splitlines()
        batches = {line["step"]: line["targets"] for line in map(json.loads, lines)}
        # Steps 1-2 before the signal, step 3 after the resume: litdata's order for this rank.
        assert list(batches) == [1, 2, 3] and list(batches.values()) == expected[rank], rank
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert [attempt["status"] for attempt in summary["attempts"]] == ["interrupted"]
    assert summary["world_size"] == 2
    with (run_dir / "confusion_matrix" / "latest.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert sum(int(value) for row in rows[1:] for value in row[1:]) == 9, "each validation image once"
    assert summary["test"]["images"] == 9 and summary["test"].get("error") is None
    assert summary["test"]["source"]["kind"] == "checkpoint"
    digests = [json.loads((run_dir / f"rank_{rank}.json").read_text())["digest"] for rank in (0, 1)]
    assert digests[0] == digests[1], "one model: the weights agree across the ranks"


def test_ranks_read_contiguous_shares_of_the_validation_split_each_image_once() -> None:
    from torch.utils.data import DistributedSampler

    from harness.training.stream import IndexedStream, RankShare

    for size, world in ((9, 2), (10, 4), (3, 4), (64, 3)):
        items = IndexedStream(None, size)  # type: ignore[arg-type]  # a sampler reads its length only
        shares = [list(RankShare(items, world_size=world, rank=rank)) for rank in range(world)]
        assert [index for share in shares for index in share] == list(range(size))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert [len(RankShare(items, world_size=world, rank=rank)) for rank in range(world)] == list(
            map(len, shares)
        )
    # Lightning keeps a DistributedSampler as it is (it would split any other sampler again).
    assert isinstance(RankShare(IndexedStream(None, 4), world_size=2, rank=0), DistributedSampler)  # type: ignore[arg-type]


def test_gpu_decoding_of_a_stream_is_refused_naming_the_setting(
    tmp_path: Path, cache: Path, make_settings: MakeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.core.errors import SettingsError
    from harness.training.data import ImageDataModule, run_preprocessing, scan

    out = tmp_path / "out"
    assert data_main(["optimize", str(_split_tree(tmp_path / "tree", corrupt=False)), str(out)]) == 0
    settings = make_settings("data.decode='gpu'", root=out)
    info, _ = scan(settings.data, settings.run.seed)
    with pytest.raises(SettingsError) as refused:
        ImageDataModule(info, run_preprocessing(settings), settings.data)
    message = str(refused.value)
    assert "\n" not in message and message.startswith('[data].decode = "gpu" ') and repr(str(out)) in message

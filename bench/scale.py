"""How the confusion matrix's and the sampler tracking's epoch cost grows with the class count.

    .venv/bin/python -m bench.scale [--classes 10 100 1000] [--repeats 3]
    .venv/bin/python -m bench.scale --runs 100 10000 [--images 20000] [--epochs 2]

For 10, 100 and 1,000 classes, the CPU time per epoch of everything each subscriber does,
wherever it runs: its handlers on the training process and the drawing job it hands the
background writer (run here in the same process, timed apart; in a run the writer's
worker process runs the same code).

- confusion matrix: the torchmetrics update for each validation batch, the epoch end
  (compute, copy to numpy) and the job (the PNG, the counts and per-class CSVs, the
  `latest` copies). Anchor: the validation epoch it rides on, the forward passes of
  ResNet-18 (with a head of that many classes) over 128 images at 32 px in batches of 64,
  as in ``bench.epoch``: the work the subscriber adds to.
- sampler tracking: the per-batch class counts of 8 training batches of 64, the epoch
  end (the draw counted per class, the expected shares, the terminal table) and the job
  (``draws.csv``, ``trained.csv``, ``draws.png``), over a data set of 20 images per
  class drawn once per epoch, at the third epoch of history. Anchor: the training epoch
  it rides on, 8 steps of ResNet-18 (batch 64, 32 px, AdamW), estimated as 8 times the
  median step.

Every figure is process CPU time on one torch thread (a shared machine's load moves it
little), the median over `repeats` epochs. The ratio reads as "the epoch with the
subscriber, against the epoch without": (anchor + subscriber) / anchor.

``--runs`` trains for real instead (`real_run`): ``python -m harness.run`` on a generated
tree of `--images` 8-pixel images spread over each class count (every subscriber on),
each run in a process of its own, and reports its peak memory (RSS of the run and its
background writer), its run directory's growth per epoch (without checkpoints, and the
checkpoints apart) and its wall and CPU time per epoch, against the first class count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import torch

from bench._timing import Row, format_seconds, markdown_table, rows_table
from harness.core.bus import Bus
from harness.core.context import Job, Record, RunContext
from harness.core.events import BatchEnd, TrainEpochEnd, TrainEpochStart, ValidationEpochEnd
from harness.core.testing import make_context
from harness.training.model import Classifier
from harness.training.sampler import make_sampler
from subscribers.confusion_matrix import ConfusionMatrix
from subscribers.sampler_tracking import SamplerTracking

__all__ = ["main", "rows"]

CLASSES = (10, 100, 1000)
BATCH = 64
VAL_IMAGES = 128
TRAIN_STEPS = 8
IMAGES_PER_CLASS = 20
HISTORY = 3
"""The epoch the sampler tracking is timed at: its files hold every epoch so far."""
clock = time.process_time


@attrs.define
class Parts:
    """CPU seconds of one epoch of a subscriber: on the training process, and its job."""

    handlers: float = 0.0
    job: float = 0.0

    @property
    def total(self) -> float:
        return self.handlers + self.job


class TimedJobs:
    """A `JobRunner` that runs each job inline, adding its CPU time to `parts.job`."""

    def __init__(self) -> None:
        self.parts = Parts()

    def submit(self, owner: str, job: Job, *, record: Record, step: int = -1) -> None:
        started = clock()
        job(record)
        self.parts.job += clock() - started


def _timed(run: Callable[[], None], jobs: TimedJobs) -> Parts:
    """The CPU of `run`, split into the jobs it submitted and the rest (its handlers)."""
    jobs.parts = Parts()
    started = clock()
    # The sampler tracking prints its table: the work is timed, the text is not shown.
    with contextlib.redirect_stdout(io.StringIO()):
        run()
    spent = clock() - started
    return Parts(handlers=spent - jobs.parts.job, job=jobs.parts.job)


def _median(parts: Sequence[Parts]) -> Parts:
    return Parts(
        handlers=statistics.median(p.handlers for p in parts), job=statistics.median(p.job for p in parts)
    )


def _network(classes: int) -> torch.nn.Module:
    """The network a run trains (`harness.training.model.Classifier`'s), with `classes` outputs."""
    return Classifier(arch="resnet18", num_classes=classes, load_weights=False).net


def _context(directory: Path, classes: int, jobs: TimedJobs) -> RunContext:
    base = make_context(directory, num_classes=classes, image_size=32, samples_per_class=IMAGES_PER_CLASS)
    return attrs.evolve(base, background=jobs)


def _event(
    stage: str, index: int, inputs: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor
) -> BatchEnd:
    return BatchEnd(
        stage=stage,  # type: ignore[arg-type]
        epoch=0,
        global_step=index,
        batch_idx=index,
        inputs=inputs,
        targets=targets,
        logits=logits,
    )


def confusion_matrix(classes: int, directory: Path, repeats: int) -> tuple[float, Parts]:
    """CPU seconds of the validation forward passes (the anchor) and of the subscriber, per epoch."""
    generator = torch.Generator().manual_seed(classes)
    model = _network(classes).eval()
    batches = [
        (
            torch.randn(BATCH, 3, 32, 32, generator=generator),
            torch.randint(0, classes, (BATCH,), generator=generator),
        )
        for _ in range(VAL_IMAGES // BATCH)
    ]
    jobs = TimedJobs()
    context = _context(directory, classes, jobs)
    bus = Bus()
    bus.attach(ConfusionMatrix(context))
    forwards: list[float] = []
    spent: list[Parts] = []
    for epoch in range(repeats + 1):
        started = clock()
        with torch.inference_mode():
            logits = [model(inputs) for inputs, _ in batches]
        forward = clock() - started
        events = [
            _event("validate", i, x, y, z) for i, ((x, y), z) in enumerate(zip(batches, logits, strict=True))
        ]

        def validation(events: list[BatchEnd] = events, epoch: int = epoch) -> None:
            with torch.inference_mode():
                for event in events:
                    bus.publish(event)
                bus.publish(ValidationEpochEnd(epoch=epoch, global_step=epoch, metrics={}))

        parts = _timed(validation, jobs)
        if epoch:  # the first epoch pays first-use costs (fonts, allocator)
            forwards.append(forward)
            spent.append(parts)
    return statistics.median(forwards), _median(spent)


def training_step(classes: int, repeats: int) -> float:
    """CPU seconds of one training step of ResNet-18, batch 64 at 32 px, AdamW: the median."""
    generator = torch.Generator().manual_seed(classes)
    model = _network(classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs = torch.randn(BATCH, 3, 32, 32, generator=generator)
    targets = torch.randint(0, classes, (BATCH,), generator=generator)
    steps: list[float] = []
    for step in range(repeats + 1):
        started = clock()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        torch.autograd.backward(loss)
        optimizer.step()
        if step:
            steps.append(clock() - started)
    return statistics.median(steps)


def sampler_tracking(classes: int, directory: Path, repeats: int) -> Parts:
    """CPU seconds of the sampler tracking's epoch, at epoch `HISTORY` of a run."""
    jobs = TimedJobs()
    context = _context(directory, classes, jobs)
    assert context.data is not None
    sampler = make_sampler(context.data.train_targets, balanced=True, seed=0)
    context.train_sampler = sampler
    generator = torch.Generator().manual_seed(classes)
    batches = [torch.randint(0, classes, (BATCH,), generator=generator) for _ in range(TRAIN_STEPS)]
    inputs = torch.zeros(BATCH, 3, 1, 1)
    logits = torch.zeros(BATCH, classes)
    spent: list[Parts] = []
    for _ in range(repeats):
        bus = Bus()
        bus.attach(SamplerTracking(context))
        for epoch in range(HISTORY):
            list(sampler)  # the epoch's draw, as the data loader makes it: the anchor's work

            def train_epoch(epoch: int = epoch, bus: Bus = bus) -> None:
                bus.publish(TrainEpochStart(epoch=epoch, global_step=epoch * TRAIN_STEPS))
                for index, targets in enumerate(batches):
                    bus.publish(_event("train", index, inputs, targets, logits))
                bus.publish(TrainEpochEnd(epoch=epoch, global_step=(epoch + 1) * TRAIN_STEPS, metrics={}))

            parts = _timed(train_epoch, jobs)
        spent.append(parts)
    return _median(spent)


def rows(
    *,
    classes: Sequence[int] = CLASSES,
    repeats: int = 3,
    smoke: bool = False,
    details: Callable[[str], None] = print,
) -> list[Row]:
    """Per class count, each subscriber's epoch against the epoch it rides on; the split in `details`."""
    if smoke:
        classes, repeats = classes[:1], 1
    measured: list[Row] = []
    table: list[list[str]] = []
    with tempfile.TemporaryDirectory() as directory:
        for count in classes:
            where = Path(directory) / str(count)
            forward, matrix = confusion_matrix(count, where / "cm", repeats)
            tracking = sampler_tracking(count, where / "st", repeats)
            training = TRAIN_STEPS * training_step(count, repeats)
            measured += [
                Row(
                    benchmark="subscriber cost by class count",
                    variant=f"confusion matrix, {count} classes",
                    anchor=f"validation forward, {VAL_IMAGES} images, {count}-class head",
                    seconds=forward + matrix.total,
                    anchor_seconds=forward,
                    unit="epoch, CPU",
                ),
                Row(
                    benchmark="subscriber cost by class count",
                    variant=f"sampler tracking, {count} classes",
                    anchor=f"training epoch, {TRAIN_STEPS} steps of {BATCH}, {count}-class head",
                    seconds=training + tracking.total,
                    anchor_seconds=training,
                    unit="epoch, CPU",
                ),
            ]
            table.append(
                [
                    f"{count:,}",
                    format_seconds(matrix.handlers),
                    format_seconds(matrix.job),
                    format_seconds(forward),
                    format_seconds(tracking.handlers),
                    format_seconds(tracking.job),
                    format_seconds(training),
                ]
            )
    details(
        "CPU per epoch; 'process' is the subscriber's handlers on the training process, 'job' its "
        "drawing and writing (the background writer's worker in a run)\n\n"
        + markdown_table(
            [
                "classes",
                "confusion matrix: process",
                "job",
                "validation forward",
                "sampler tracking: process",
                "job",
                "training epoch",
            ],
            table,
        )
    )
    return measured


@attrs.frozen(kw_only=True)
class RunCost:
    """What a real run of `classes` classes cost, per epoch where it says so."""

    classes: int
    peak_rss_mb: float
    disk_mb_per_epoch: float
    checkpoints_mb: float
    wall_s_per_epoch: float
    cpu_s_per_epoch: float


def _tree(root: Path, classes: int, images: int) -> Path:
    """`images` 8-pixel PNGs over `classes` folders (a colour per class, noise on top), train/val split."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(classes)
    per_class = max(2, images // classes)
    for c in range(classes):
        colour = rng.integers(0, 256, 3)
        for n in range(per_class):
            split = "val" if n == 0 else "train"
            folder = root / split / f"c{c:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            noise = rng.normal(0, 30, (8, 8, 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="RGB").save(folder / f"{n}.png")
    return root


def real_run(classes: int, images: int, epochs: int, directory: Path) -> RunCost:
    """Train `epochs` epochs on `images` images of `classes` classes in a process of its own."""
    data = _tree(directory / "data", classes, images)
    command = [
        sys.executable,
        "-m",
        "bench.scale",
        "--one-run",
        str(data),
        str(directory / "runs"),
        str(epochs),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {classes}-class run failed:\n{done.stderr[-3000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    run_dir = Path(measured["run_dir"])
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    checkpoints = sum(p.stat().st_size for p in files if p.suffix == ".ckpt")
    rest = sum(p.stat().st_size for p in files if p.suffix != ".ckpt")
    return RunCost(
        classes=classes,
        peak_rss_mb=measured["peak_rss_mb"],
        disk_mb_per_epoch=rest / 1e6 / epochs,
        checkpoints_mb=checkpoints / 1e6,
        wall_s_per_epoch=measured["wall_s"] / epochs,
        cpu_s_per_epoch=measured["cpu_s"] / epochs,
    )


def _one_run(data: str, output: str, epochs: int) -> None:
    """The child of `real_run`: one run, then its figures as one JSON line."""
    from harness.settings import load_settings
    from harness.training.fit import run

    settings = load_settings(
        None,
        [
            f"data.root='{data}'",
            f"run.output_dir='{output}'",
            "data.image_size=8",
            "data.batch_size=64",
            "data.num_workers=0",
            f"trainer.max_epochs={epochs}",
            "trainer.num_sanity_val_steps=0",
            "trainer.accelerator='cpu'",
            "trainer.devices=1",
            "trainer.progress_bar=false",
            "run.terminal='quiet'",
        ],
    )
    started, cpu = time.monotonic(), time.process_time()
    result = run(settings)
    wall = time.monotonic() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = {
        "run_dir": str(result.run_dir),
        "peak_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024,
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu + children.ru_utime + children.ru_stime,
    }
    print(json.dumps(figures))


def run_table(classes: Sequence[int], images: int, epochs: int) -> str:
    """A real run per class count; a markdown table with each figure's ratio to the first count's."""
    costs: list[RunCost] = []
    with tempfile.TemporaryDirectory() as directory:
        for count in classes:
            costs.append(real_run(count, images, epochs, Path(directory) / str(count)))
    anchor = costs[0]

    def cell(value: float, anchor_value: float, text: str) -> str:
        return f"{text} ({value / anchor_value:.2f}x)" if anchor_value > 0 else text

    table = [
        [
            f"{cost.classes:,}",
            cell(cost.peak_rss_mb, anchor.peak_rss_mb, f"{cost.peak_rss_mb:,.0f} MB"),
            cell(cost.disk_mb_per_epoch, anchor.disk_mb_per_epoch, f"{cost.disk_mb_per_epoch:.2f} MB"),
            cell(cost.checkpoints_mb, anchor.checkpoints_mb, f"{cost.checkpoints_mb:,.0f} MB"),
            cell(cost.wall_s_per_epoch, anchor.wall_s_per_epoch, f"{cost.wall_s_per_epoch:.1f} s"),
            cell(cost.cpu_s_per_epoch, anchor.cpu_s_per_epoch, f"{cost.cpu_s_per_epoch:.1f} s"),
        ]
        for cost in costs
    ]
    return (
        f"real runs, {images:,} images of 8 px, {epochs} epoch(s), every subscriber on\n\n"
        + markdown_table(
            [
                "classes",
                "peak RSS",
                "run directory per epoch (no checkpoints)",
                "checkpoints",
                "wall per epoch",
                "CPU per epoch",
            ],
            table,
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=list(CLASSES), help="class counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs; the median is kept")
    parser.add_argument("--smoke", action="store_true", help="the first class count, one epoch")
    parser.add_argument("--runs", type=int, nargs="+", help="real runs of these class counts instead")
    parser.add_argument("--images", type=int, default=20_000, help="images of each real run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each real run")
    parser.add_argument("--one-run", nargs=3, metavar=("DATA", "OUTPUT", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.one_run:
        _one_run(args.one_run[0], args.one_run[1], int(args.one_run[2]))
        return
    if args.runs:
        print(run_table(args.runs, args.images, args.epochs))
        return
    measured = rows(classes=args.classes, repeats=args.repeats, smoke=args.smoke)
    print()
    print(rows_table(measured))


if __name__ == "__main__":
    main()

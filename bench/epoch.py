"""A whole training epoch with every subscriber on, against bare Lightning with and without callbacks.

    .venv/bin/python -m bench.epoch                    # CPU: ResNet-18, 32 px, batch 64
    .venv/bin/python -m bench.epoch --device cuda      # one GPU: ResNet-18 and ResNet-50, bf16-mixed
    .venv/bin/python -m bench.epoch --smoke            # the GPU's code paths, tiny, on the CPU

Three variants train the same `harness.training.model.Classifier` on the same in-memory images (the
embedded digits, decoded once, resized and normalised as a run does, drawn by the same
seeded `harness.training.sampler` sampler), with the same Trainer settings:

- bare: Lightning with no callbacks (the anchor);
- plain: Lightning with the callbacks a user would write without the harness: Lightning's
  `EMAWeightAveraging`, a confusion matrix that runs the forward pass again in
  ``on_validation_batch_end``, and loss/accuracy curves drawn with pyplot at epoch end;
- harness: the run `harness.run` makes with the default settings, put together by the same
  assembly (`harness.training.assembly`): `BusCallback` with every built-in subscriber, the
  loggers and their trackers, the augmentation preview, the event log, and a
  `harness.io.background.BackgroundWriter` whose worker process draws the pictures.

An epoch is timed from ``on_train_epoch_start`` (a clock placed first among the callbacks)
to ``on_train_epoch_end`` (a clock placed last), so it holds the training batches, the
validation and every epoch-end handler. After two untimed one-step warm-up fits (plain,
harness: they pay the first imports of pyplot and of the ONNX exporter), fits take turns
(bare, plain, harness, then the next round in a rotated order); the figures are medians
over every timed epoch. The harness's one-off costs, outside any epoch, are timed the
same way: ``FitStart`` (data set and model reports), the end of training (ONNX export
with its parity check) and, after the fit, the wait for the background writer to finish
the last epoch's pictures. Each subscriber's handlers are timed too, through a wrapper that
adds about a microsecond per call: that shows where the harness's time goes, and gives
an estimate of its epoch that the machine's noise hardly moves (the "accounted" row: the
bare epoch plus the handlers' time).

On the CPU it runs on one torch thread by default: on a shared 2-core machine two threads
spin against other processes and a step takes several times longer. There every figure
comes on two clocks: wall time, and the process's CPU time, which other processes barely
disturb (the goals are checked on both). The background writer's worker process draws
on the other core: its CPU time is in neither clock, and is reported beside them, from
the operating system's account of finished child processes. On a GPU only wall time
means anything; the clocks synchronise the device before each reading.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassConfusionMatrix
from typing_extensions import override

from bench._timing import Row, format_seconds, markdown_table, median_of, quiet_lightning, rows_table
from harness.core.bus import Bus, OnError, Subscriber
from harness.core.context import DatasetInfo, Samples
from harness.core.events import Event
from harness.core.preprocessing import Preprocessing
from harness.io.background import BackgroundWriter
from harness.settings import DataSettings, load_settings
from harness.training.assembly import assemble
from harness.training.callback import BusCallback
from harness.training.data import ImageFiles, scan
from harness.training.loggers import LoggerTrackers, build_loggers
from harness.training.model import Classifier
from harness.training.sampler import make_sampler

__all__ = ["Config", "main", "pin_to_one_core", "rows"]

BARE = "bare Lightning, no callbacks"
PLAIN = "Lightning + plain callbacks"
HARNESS = "harness, every subscriber on"
VARIANTS = (BARE, PLAIN, HARNESS)
E = TypeVar("E", bound=Event)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "CPU": time.process_time}
"""Wall time, and the CPU time of this process: the second barely moves when other
processes load a shared machine, as long as torch runs on one thread (ops then run
inline in the calling thread, so waiting for the CPU is not counted as work)."""
PLAIN_DETAIL = "EMAWeightAveraging, confusion matrix re-running forward, pyplot curves"


@attrs.frozen(kw_only=True)
class Config:
    """The size of one measurement: what trains, on what, how often."""

    device: str = "cpu"
    arch: str = "resnet18"
    image_size: int = 32
    batch_size: int = 64
    train_steps: int = 8
    val_images: int | None = 128
    epochs: int = 2
    repeats: int = 2
    precision: str = "32-true"
    warmup: bool = True

    @property
    def clocks(self) -> tuple[str, ...]:
        """The clocks reported, the first one leading: CPU time means nothing on a GPU."""
        return ("wall",) if self.device == "cuda" else ("CPU", "wall")

    @classmethod
    def for_device(cls, device: str, arch: str) -> Config:
        """The default size on `device`: seconds per fit on this 2-core CPU, or one GPU."""
        if device == "cuda":
            return cls(
                device="cuda",
                arch=arch,
                image_size=128,
                batch_size=128,
                train_steps=100,
                val_images=None,
                epochs=2,
                repeats=2,
                precision="bf16-mixed",
            )
        return cls(device=device, arch=arch)

    @classmethod
    def smoke(cls, device: str, arch: str) -> Config:
        """The GPU's code paths (both ResNets, bf16-mixed) at a size that only checks they run."""
        return cls(
            device=device,
            arch=arch,
            image_size=16,
            batch_size=8,
            train_steps=1,
            val_images=16,
            epochs=1,
            repeats=1,
            precision="bf16-mixed",
            warmup=False,
        )


class InMemory(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images and targets as two tensors, fetched a whole batch at a time."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images = images
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # DataLoader hands a batch's indices here at once; one gather instead of a stack of many.
        index = torch.as_tensor(indices, device=self.targets.device)
        return self.images[index], self.targets[index]


def _keep(batch: Any) -> Any:
    """The collate function for `InMemory`, whose batches come out whole."""
    return batch


@attrs.frozen(kw_only=True)
class Data:
    """The digits, decoded once; `info` is the scan a run makes, for the data-set report."""

    info: DatasetInfo
    classes: tuple[str, ...]
    train: InMemory
    val: InMemory

    @classmethod
    def load(cls, image_size: int, device: str, val_images: int | None = None) -> Data:
        """Decode and preprocess every image once; keep `val_images` of the validation split."""
        info, classes = scan(DataSettings(image_size=image_size), seed=0)
        preprocessing = Preprocessing(image_size=image_size)
        val = list(info.val)
        if val_images is not None and val_images < len(val):
            keep = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))[:val_images]
            val = [val[i] for i in sorted(keep.tolist())]

        def decode(samples: Sequence[tuple[str, int]]) -> InMemory:
            files = ImageFiles(samples, preprocessing)
            images = torch.stack([files[i][0] for i in range(len(files))])
            targets = torch.tensor([target for _, target in samples])
            return InMemory(images.to(device), targets.to(device))

        return cls(info=info, classes=classes, train=decode(info.train), val=decode(val))

    def loaders(self, config: Config) -> tuple[DataLoader[Any], DataLoader[Any], Any]:
        sampler = make_sampler(
            self.info.train_targets,
            balanced=True,
            seed=0,
            num_samples=config.train_steps * config.batch_size,
        )
        train = DataLoader(self.train, batch_size=config.batch_size, sampler=sampler, collate_fn=_keep)
        val = DataLoader(self.val, batch_size=config.batch_size, collate_fn=_keep)
        return train, val, sampler


class Clock(Callback):
    """Notes the time at the hooks that bound an epoch, a fit's start and training's end.

    Two instances work as a pair: `first` goes before every other callback, `last` after.
    Each mark holds every clock of `CLOCKS`, in its order.
    """

    def __init__(self, marks: Marks, role: str, device: str) -> None:
        self.marks = marks
        self.role = role
        self.device = device

    def _mark(self, hook: str) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.marks.setdefault(f"{hook}:{self.role}", []).append(tuple(clock() for clock in CLOCKS.values()))

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark("fit_start")

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark("epoch_start")

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark("validation_start")

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark("epoch_end")

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark("train_end")


class RecomputingConfusionMatrix(Callback):
    """The confusion matrix as written without the harness: a second forward pass per batch."""

    def __init__(self, num_classes: int, directory: Path) -> None:
        self.matrix = MulticlassConfusionMatrix(num_classes=num_classes)
        self.directory = directory

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        inputs, targets = batch
        with torch.no_grad():
            logits = pl_module(inputs)
        self.matrix.to(logits.device).update(logits.float(), targets)

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import matplotlib.pyplot as plt

        figure, _ = self.matrix.plot()
        figure.savefig(self.directory / f"confusion_{trainer.current_epoch:03d}.png")
        plt.close(figure)
        self.matrix.reset()


class PyplotCurves(Callback):
    """Loss and accuracy curves redrawn with pyplot at every epoch end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.history: list[dict[str, float]] = []

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import matplotlib.pyplot as plt

        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.history.append(metrics)
        for family in ("loss", "acc"):
            plt.figure(figsize=(6, 4))
            for name in sorted({k for entry in self.history for k in entry if family in k}):
                plt.plot([entry.get(name, float("nan")) for entry in self.history], label=name)
            plt.xlabel("epoch")
            plt.legend()
            plt.savefig(self.directory / f"{family}.png")
            plt.close()


Marks = dict[str, list[tuple[float, ...]]]
ONCE_PER_FIT = frozenset({"FitStart", "TrainLoopEnd", "TrainEnd", "FitEnd", "RunFailed"})
Spent = dict[tuple[str, str], float]


class _TimedBus:
    """What a subscriber's `connect` is handed: the real bus, every handler wrapped in a clock.

    The wrapper adds about a microsecond per handler call (two clock reads), which is
    noise against an epoch; it names each subscription as the bus would and carries the
    subscriber's failure policy explicitly, since the wrapper is not the attached object.
    """

    def __init__(
        self, bus: Bus, key: str, on_error: OnError, spent: Spent, clock: Callable[[], float]
    ) -> None:
        self._bus = bus
        self._key = key
        self._on_error = on_error
        self._spent = spent
        self._clock = clock

    def subscribe(self, event_type: type[E], handler: Callable[[E], None], **filters: Any) -> Any:
        key, spent, clock = self._key, self._spent, self._clock

        def timed(event: E) -> None:
            start = clock()
            try:
                handler(event)
            finally:
                stage = getattr(event, "stage", None)
                slot = (key, type(event).__name__ + (f"({stage})" if stage else ""))
                spent[slot] = spent.get(slot, 0.0) + clock() - start

        owner = getattr(handler, "__self__", handler)
        filters.setdefault("name", f"{type(owner).__name__}.{getattr(handler, '__name__', '?')}")
        filters.setdefault("on_error", self._on_error)
        return self._bus.subscribe(event_type, timed, **filters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)


class Timed:
    """A subscriber whose handlers are timed by `clock` into `spent[(key, event name)]`."""

    def __init__(
        self, subscriber: Subscriber, key: str, on_error: OnError, spent: Spent, clock: Callable[[], float]
    ) -> None:
        self.subscriber = subscriber
        self.key = key
        self.on_error = on_error
        self.spent = spent
        self.clock = clock

    def connect(self, bus: Bus) -> None:
        timed = _TimedBus(bus, self.key, self.on_error, self.spent, self.clock)
        self.subscriber.connect(timed)  # type: ignore[arg-type]


def _preview(data: Data) -> Samples:
    """The augmentation preview's images: the bench's images are decoded once, not augmented."""

    def samples(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        picked = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:count]
        return data.train.images[picked].cpu(), data.train.targets[picked].cpu()

    return samples


def _harness(
    data: Data, config: Config, sampler: Any, run_dir: Path, spent: Spent, writer: BackgroundWriter | None
) -> tuple[BusCallback, list[Logger]]:
    """`BusCallback` and the loggers of the default settings, assembled as `harness.run` assembles them.

    The same assembly (`harness.training.assembly`) with the same pieces: the loggers and
    their trackers, the augmentation preview, the background writer, the event log; each
    subscriber is wrapped in a clock.
    """
    settings = load_settings(None)
    loggers = build_loggers(settings.logger, run_dir, settings.run.name)
    clock = CLOCKS[config.clocks[0]]
    assembly = assemble(
        settings,
        run_dir=run_dir,
        class_names=data.classes,
        preprocessing=Preprocessing(image_size=config.image_size),
        data=data.info,
        train_sampler=sampler,
        background=writer,
        augmented_samples=_preview(data),
        trackers=LoggerTrackers.of(loggers),
        record_events=settings.run.record_events,
        wrap=lambda key, subscriber, on_error: Timed(subscriber, key, on_error, spent, clock),
    )
    return BusCallback(assembly.bus, assembly.context, assembly.subscribers), loggers


def _callbacks(
    variant: str,
    data: Data,
    config: Config,
    sampler: Any,
    run_dir: Path,
    spent: Spent,
    writer: BackgroundWriter | None,
) -> tuple[list[Callback], list[Logger]]:
    """The variant's callbacks and loggers (the harness's are those of a default run)."""
    if variant == PLAIN:
        return [
            EMAWeightAveraging(decay=0.999),
            RecomputingConfusionMatrix(len(data.classes), run_dir),
            PyplotCurves(run_dir),
        ], []
    if variant == HARNESS:
        callback, loggers = _harness(data, config, sampler, run_dir, spent, writer)
        return [callback], loggers
    return [], []


@attrs.frozen(kw_only=True)
class Fit:
    """The clock marks of one fit, turned into durations."""

    epochs: dict[str, list[float]]
    train_parts: dict[str, list[float]]
    fit_start: float
    train_end: float
    background_drain: float
    background_cpu: float
    spent: Spent


def _children_cpu() -> float:
    """CPU seconds of this process's finished child processes (the writer's worker, once closed)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fit(variant: str, data: Data, config: Config, *, epochs: int, steps: int | None = None) -> Fit:
    """Train one variant for `epochs` in a fresh run directory and return its timings."""
    torch.manual_seed(0)
    module = Classifier(arch=config.arch, num_classes=len(data.classes))
    train, val, sampler = data.loaders(config)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-epoch-"))
    marks: Marks = {}
    spent: Spent = {}
    # As harness.run does: one writer per run, closed when the fit is over.
    writer = BackgroundWriter() if variant == HARNESS else None
    if writer is not None:
        writer.start()  # as harness.run does, before the Trainer starts
    children_cpu = _children_cpu()
    own, loggers = _callbacks(variant, data, config, sampler, run_dir, spent, writer)
    callbacks = [Clock(marks, "first", config.device), *own, Clock(marks, "last", config.device)]
    trainer = L.Trainer(
        accelerator=config.device,
        devices=1,
        precision=config.precision,  # type: ignore[arg-type]
        max_epochs=epochs,
        limit_train_batches=steps,
        num_sanity_val_steps=0,
        logger=loggers or False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    drain = 0.0
    try:
        # Subscribers print rich tables; the work is timed, the text is not shown.
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
        if writer is not None:
            started = time.perf_counter()
            failures = writer.close()
            drain = time.perf_counter() - started
            if failures:
                raise RuntimeError(f"bench.epoch: background jobs failed: {failures}")
    finally:
        if writer is not None:
            writer.close()
        shutil.rmtree(run_dir, ignore_errors=True)

    def spans(start: str, end: str, clock: str = "wall") -> list[float]:
        index = tuple(CLOCKS).index(clock)
        pairs = zip(marks[f"{start}:first"], marks[f"{end}:last"], strict=True)
        return [b[index] - a[index] for a, b in pairs]

    return Fit(
        epochs={clock: spans("epoch_start", "epoch_end", clock) for clock in CLOCKS},
        train_parts={clock: spans("epoch_start", "validation_start", clock) for clock in CLOCKS},
        fit_start=spans("fit_start", "fit_start")[0],
        train_end=spans("train_end", "train_end")[0],
        background_drain=drain,
        background_cpu=_children_cpu() - children_cpu,
        spent=spent,
    )


@attrs.frozen(kw_only=True)
class Measurement:
    """Medians per clock and variant (epoch, its training part), the one-off costs (wall),
    and where the harness's time went: seconds per subscriber, per epoch and once per fit,
    on the leading clock. `later_epoch` leaves out each fit's first epoch: from the second
    on, the background writer is still drawing the previous epoch's pictures while the
    epoch trains, as in a run of many epochs."""

    config: Config
    epoch: dict[str, dict[str, float]]
    later_epoch: dict[str, dict[str, float]] | None
    train_part: dict[str, dict[str, float]]
    fit_start: dict[str, float]
    train_end: dict[str, float]
    per_epoch: dict[str, float]
    per_fit: dict[str, float]
    per_train_step: float
    background_drain: float
    background_cpu_per_epoch: float


def measure(config: Config, data: Data, progress: Callable[[str], None] = lambda _: None) -> Measurement:
    """Warm up once, then `config.repeats` rounds of fits of every variant, taking turns.

    The warm-up fits (one step each; bare Lightning is a subset of the plain variant) pay
    the first-use costs: imports of pyplot and of the ONNX exporter, font caches, kernels.
    """
    for variant in (PLAIN, HARNESS) if config.warmup else ():
        progress(f"{config.arch} warm-up: {variant}")
        fit(variant, data, config, epochs=1, steps=1)
    fits: dict[str, list[Fit]] = {variant: [] for variant in VARIANTS}
    for round_index in range(config.repeats):
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            progress(f"{config.arch} round {round_index + 1}/{config.repeats}: {variant}")
            fits[variant].append(fit(variant, data, config, epochs=config.epochs))

    def median(pick: Callable[[Fit], Sequence[float]]) -> dict[str, float]:
        return {v: median_of([x for f in fits[v] for x in pick(f)]) for v in VARIANTS}

    def medians(field: str, first: int = 0) -> dict[str, dict[str, float]]:
        return {
            clock: {
                v: median_of([x for f in fits[v] for x in getattr(f, field)[clock][first:]]) for v in VARIANTS
            }
            for clock in config.clocks
        }

    harness_fits = fits[HARNESS]
    epochs = sum(len(f.epochs["wall"]) for f in harness_fits)
    per_epoch: dict[str, float] = {}
    per_fit: dict[str, float] = {}
    per_train_step = 0.0
    for f in harness_fits:
        for (key, event), seconds in f.spent.items():
            if event == "BatchEnd(train)":
                per_train_step += seconds / (epochs * config.train_steps)
            if event in ONCE_PER_FIT:
                per_fit[key] = per_fit.get(key, 0.0) + seconds / len(harness_fits)
            else:
                per_epoch[key] = per_epoch.get(key, 0.0) + seconds / epochs
    return Measurement(
        config=config,
        epoch=medians("epochs"),
        later_epoch=medians("epochs", first=1) if config.epochs > 1 else None,
        train_part=medians("train_parts"),
        fit_start=median(lambda f: [f.fit_start]),
        train_end=median(lambda f: [f.train_end]),
        per_epoch=per_epoch,
        per_fit=per_fit,
        per_train_step=per_train_step,
        background_drain=median_of([f.background_drain for f in harness_fits]),
        background_cpu_per_epoch=sum(f.background_cpu for f in harness_fits) / epochs,
    )


def _clock_rows(
    name: str, clock: str, epoch: Mapping[str, float], train: Mapping[str, float], steps: int
) -> list[Row]:
    """The epoch ratios (with their goals) and the time per training step, on one clock."""
    epochs = [
        Row(
            benchmark=name,
            variant=variant,
            anchor=anchor,
            seconds=epoch[variant],
            anchor_seconds=epoch[anchor],
            unit=f"epoch ({steps} steps + val), {clock}",
            goal=goal,
        )
        for variant, anchor, goal in ((HARNESS, BARE, 1.10), (HARNESS, PLAIN, 1.0), (PLAIN, BARE, None))
    ]
    per_step = [
        Row(
            benchmark=name,
            variant=f"{variant}: training step",
            anchor=BARE,
            seconds=train[variant] / steps,
            anchor_seconds=train[BARE] / steps,
            unit=f"train step, {clock}",
        )
        for variant in (HARNESS, PLAIN)
    ]
    return epochs + per_step


def to_rows(measurement: Measurement) -> list[Row]:
    """The ratios the project promises on each clock, time per training step, one-off costs.

    The "accounted" row adds the time the subscribers' handlers took (a sum of many short,
    directly timed calls) to the bare epoch: an estimate of the harness's epoch that the
    machine's noise, which moves whole epochs by several per cent, hardly touches.
    """
    config = measurement.config
    name = f"training epoch, {config.arch} {config.device}"
    result: list[Row] = []
    for clock in config.clocks:
        result += _clock_rows(
            name, clock, measurement.epoch[clock], measurement.train_part[clock], config.train_steps
        )
    lead = config.clocks[0]
    bare = measurement.epoch[lead][BARE]
    result.insert(
        1,
        Row(
            benchmark=name,
            variant=f"{HARNESS}, accounted: bare epoch + its subscribers' handler time",
            anchor=BARE,
            seconds=bare + sum(measurement.per_epoch.values()),
            anchor_seconds=bare,
            unit=f"epoch ({config.train_steps} steps + val), {lead}",
        ),
    )
    if "CPU" in config.clocks:
        result.append(
            Row(
                benchmark=name,
                variant=f"{HARNESS}, CPU of all processes (training + the writer's worker with its start-up)",
                anchor=BARE,
                seconds=measurement.epoch["CPU"][HARNESS] + measurement.background_cpu_per_epoch,
                anchor_seconds=measurement.epoch["CPU"][BARE],
                unit=f"epoch ({config.train_steps} steps + val), CPU",
                goal=1.10,
            )
        )
    later = measurement.later_epoch or {}
    for clock in later:
        result.append(
            Row(
                benchmark=name,
                variant=f"{HARNESS}, a fit's later epochs (the previous epoch's pictures drawn meanwhile)",
                anchor=f"{BARE}, the same epochs",
                seconds=later[clock][HARNESS],
                anchor_seconds=later[clock][BARE],
                unit=f"epoch ({config.train_steps} steps + val), {clock}",
                goal=1.10,
            )
        )
    for what, seconds in (
        ("FitStart reports", measurement.fit_start[HARNESS]),
        ("ONNX export + parity at TrainEnd", measurement.train_end[HARNESS]),
        ("waiting for the background writer after the fit", measurement.background_drain),
    ):
        result.append(
            Row(
                benchmark=name,
                variant=f"{HARNESS}: {what}, once per fit",
                anchor=f"{BARE} (one epoch)",
                seconds=seconds,
                anchor_seconds=measurement.epoch["wall"][BARE],
                unit="fit, wall",
            )
        )
    return result


def explain(measurement: Measurement) -> str:
    """Time per training step and the parts of an epoch per variant and clock; then the
    harness's time per subscriber, and the epoch length at which it meets its goal."""
    config = measurement.config
    steps = config.train_steps
    lines = []
    for variant in VARIANTS:
        line = [variant]
        for clock in config.clocks:
            epoch = measurement.epoch[clock][variant]
            train = measurement.train_part[clock][variant]
            line += [
                format_seconds(train / steps),
                format_seconds(epoch - train),
                format_seconds(epoch),
                f"{epoch / measurement.epoch[clock][BARE]:.3f}x",
            ]
        line += [
            format_seconds(measurement.fit_start[variant]),
            format_seconds(measurement.train_end[variant]),
        ]
        lines.append(line)
    headers = [f"{config.arch}, {config.device}"]
    for clock in config.clocks:
        headers += [
            f"train step ({clock})",
            f"validation + epoch end ({clock})",
            f"epoch ({clock})",
            f"x bare ({clock})",
        ]
    headers += ["fit start (wall)", "train end (wall)"]
    lead = config.clocks[0]
    bare = measurement.epoch[lead][BARE]
    keys = sorted(
        set(measurement.per_epoch) | set(measurement.per_fit),
        key=lambda k: -measurement.per_epoch.get(k, 0.0),
    )
    shares = [
        [
            key,
            format_seconds(measurement.per_epoch.get(key, 0.0)),
            f"{100 * measurement.per_epoch.get(key, 0.0) / bare:.1f} %",
            format_seconds(measurement.per_fit.get(key, 0.0)),
        ]
        for key in keys
    ]
    total = sum(measurement.per_epoch.values())
    shares.append(["all subscribers", format_seconds(total), f"{100 * total / bare:.1f} %", ""])
    background = measurement.background_cpu_per_epoch
    shares.append(
        [
            "background writer's worker process (CPU, with its start-up)",
            format_seconds(background),
            f"{100 * background / bare:.1f} %",
            format_seconds(measurement.background_drain) + " wait (wall)",
        ]
    )
    return (
        markdown_table(headers, lines)
        + f"\n\nThe harness's time in its subscribers' handlers ({lead} time, timed fits), and the "
        "CPU time of the writer's worker process, which draws meanwhile on the other core\n\n"
        + markdown_table(["subscriber", "per epoch", "of a bare epoch", "once per fit"], shares)
        + "\n\n"
        + break_even(measurement)
    )


def break_even(measurement: Measurement, goal: float = 1.10) -> str:
    """How long an epoch must be for the harness to stay within `goal` of bare Lightning.

    An epoch costs ``steps * step + validation + epoch_end``. The harness adds its
    handlers' time per training step (the EMA, mostly) and per epoch outside the steps
    (pictures, tables): both timed directly, so the estimate is steadier than a
    difference of two noisy epochs. It leaves out Lightning's dispatch to `BusCallback`
    (tens of microseconds per batch).
    """
    config = measurement.config
    clock = config.clocks[0]
    epoch, train = measurement.epoch[clock], measurement.train_part[clock]
    steps = config.train_steps
    bare_step = train[BARE] / steps
    bare_rest = epoch[BARE] - train[BARE]
    added_step = measurement.per_train_step
    added_rest = sum(measurement.per_epoch.values()) - added_step * steps
    summary = (
        f"On {clock} time the subscribers' handlers add {format_seconds(added_step)} per training step "
        f"(a bare step takes {format_seconds(bare_step)}) and {format_seconds(added_rest)} per epoch "
        f"outside the steps. The writer's worker process draws meanwhile on the other core "
        f"({format_seconds(measurement.background_cpu_per_epoch)} of CPU per epoch, its start-up "
        "included)."
    )
    margin = (goal - 1) * bare_step - added_step
    fixed = added_rest - (goal - 1) * bare_rest
    if fixed <= 0:
        return f"{summary} That is within {goal:.2f}x of bare Lightning at any epoch length."
    if margin <= 0:
        return f"{summary} The per-step cost alone exceeds {goal:.2f}x: no epoch length meets it."
    needed = int(fixed / margin) + 1
    return (
        f"{summary} So the harness stays within {goal:.2f}x of bare Lightning for epochs of "
        f"{needed} training steps or more ({needed * config.batch_size} images at batch "
        f"{config.batch_size}); this measurement used {steps}."
    )


def describe(config: Config) -> str:
    val = "all the" if config.val_images is None else str(config.val_images)
    return (
        f"{config.arch}, {config.image_size} px, batch {config.batch_size}, {config.train_steps} training "
        f"steps and {val} validation images per epoch, {config.precision}, {config.device}; "
        f"{config.repeats} interleaved rounds of {config.epochs}-epoch fits; medians over every timed "
        f"epoch. Plain callbacks: {PLAIN_DETAIL}."
    )


def pin_to_one_core() -> None:
    """Run this process, and every process it starts (the writer's worker), on one core: the
    wall clock then shows what the harness costs on a machine with no core to spare."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def require_device(device: str) -> None:
    """Exit with one clear line when `device` cannot run here."""
    if device == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda or "no CUDA support"
        sys.exit(
            f"error: --device cuda: no CUDA device is available (torch {torch.__version__}, built with "
            f"{built}); run with --device cpu"
        )


def rows(
    device: str = "cpu",
    archs: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _: None,
    details: Callable[[str], None] = lambda _: None,
    smoke: bool = False,
) -> list[Row]:
    """Measure each architecture on `device` (both ResNets on CUDA, ResNet-18 on the CPU).

    `overrides` replace `Config` fields; `progress` gets a line per fit, `details` the
    per-variant and per-subscriber tables of each architecture. `smoke` runs the GPU's
    code paths (both ResNets, bf16-mixed) at a tiny size, on any device: it checks that
    everything runs, its figures mean nothing. The caller chooses the number of torch
    threads (``python -m bench`` uses one on the CPU).
    """
    require_device(device)
    quiet_lightning()
    both = device == "cuda" or smoke
    chosen = archs or (("resnet18", "resnet50") if both else ("resnet18",))
    sized = Config.smoke if smoke else Config.for_device
    result: list[Row] = []
    loaded: dict[tuple[int, int | None], Data] = {}
    for arch in chosen:
        config = attrs.evolve(sized(device, arch), **dict(overrides or {}))
        key = (config.image_size, config.val_images)
        data = loaded.get(key) or Data.load(config.image_size, device, config.val_images)
        loaded[key] = data
        measurement = measure(config, data, progress)
        details(describe(config) + "\n\n" + explain(measurement) + "\n")
        result.extend(to_rows(measurement))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.epoch", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", action="append", help="torchvision architecture (repeatable)")
    parser.add_argument("--steps", type=int, help="training steps per epoch")
    parser.add_argument("--repeats", type=int, help="interleaved rounds of fits")
    parser.add_argument("--epochs", type=int, help="epochs per fit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    parser.add_argument("--smoke", action="store_true", help="the GPU's code paths at a tiny size")
    parser.add_argument(
        "--one-core", action="store_true", help="pin this process and its children to one core"
    )
    args = parser.parse_args(argv)
    if args.one_core:
        pin_to_one_core()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    overrides = {
        key: value
        for key, value in (("train_steps", args.steps), ("repeats", args.repeats), ("epochs", args.epochs))
        if value is not None
    }
    started = time.perf_counter()
    measured = rows(
        args.device,
        args.arch,
        overrides,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        details=print,
        smoke=args.smoke,
    )
    print(rows_table(measured))
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()

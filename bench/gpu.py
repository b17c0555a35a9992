"""The GPU rows: a training step as the harness runs it, its speed-ups, the EMA, JPEG decoding, memory.

    .venv/bin/python -m bench --device cuda --only gpu epoch   # one GPU, about 3 minutes
    .venv/bin/python -m bench.gpu --device cuda                # this one alone
    .venv/bin/python -m bench.gpu --smoke                      # the same code paths, tiny, on the CPU

On one GPU (ResNet-50, 224 px, batch 128, bf16 autocast, AdamW, 100 classes), each
against its anchor measured in the same process:

- a training step of `harness.training.model.Classifier` (``run_network``, cross-entropy,
  backward, optimizer step) on synthetic tensors already on the device: eager NCHW (the
  anchor), channels-last, `torch.compile`, both (`Classifier.accelerate`);
- the EMA (`subscribers._ema.ShadowWeights`) of that network: one update, and the swap in
  and out for validation, against the eager step;
- the step fed by the harness's training loader (`ImageDataModule.train_dataloader`, real
  JPEGs decoded by PIL in its workers, random resized crop and colour jitter, pinned
  memory), against the step on synthetic tensors: whether the input pipeline keeps up;
- decoding those JPEGs: the loader's images/s against ``[data].decode = "gpu"``
  (`harness.training.gpu_decode.decode_batch`: ``torchvision.io.decode_jpeg`` of a whole
  batch on the device, then the same augmentation there);
- peak GPU memory of each step variant, above what its model and optimizer hold.

The step variants take turns (`bench._timing.interleaved`); every timed call synchronises
the device. `--smoke` runs every path at a tiny size on the CPU (or on the GPU when
``--device cuda``): a check that it runs, not a measurement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
import torchvision

from bench._timing import Row, interleaved, quiet_lightning, rows_table
from bench._trees import cache_at, jpegs, write_tree
from harness.settings import AugmentSettings, DataSettings
from harness.training.augment import train_transform
from harness.training.data import ImageDataModule, scan
from harness.training.gpu_decode import decode_batch
from harness.training.model import Classifier
from harness.training.networks import split_outputs
from harness.training.sampler import make_sampler
from subscribers._ema import ShadowWeights

__all__ = ["Size", "main", "rows"]

EAGER = "eager, NCHW"
VARIANTS = {
    EAGER: (False, False),
    "channels-last": (True, False),
    "torch.compile": (False, True),
    "torch.compile + channels-last": (True, True),
}
CLASSES = 100


@attrs.frozen(kw_only=True)
class Size:
    """What one measurement trains and decodes."""

    arch: str
    image_size: int
    batch_size: int
    steps: int
    repeats: int
    jpeg_files: int
    jpeg_size: int

    @classmethod
    def of(cls, smoke: bool) -> Size:
        if smoke:
            return cls(
                arch="resnet18", image_size=16, batch_size=4, steps=1, repeats=1, jpeg_files=16, jpeg_size=24
            )
        return cls(
            arch="resnet50",
            image_size=224,
            batch_size=128,
            steps=20,
            repeats=5,
            jpeg_files=4096,
            jpeg_size=256,
        )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@attrs.define
class Step:
    """One variant's model, optimizer and a training step on a given batch."""

    module: Classifier
    optimizer: torch.optim.Optimizer
    device: str

    @classmethod
    def prepare(cls, size: Size, device: str, channels_last: bool, compiled: bool) -> Step:
        torch.manual_seed(0)
        module = Classifier(arch=size.arch, num_classes=CLASSES).to(device)
        module.accelerate(channels_last=channels_last, compile=compiled)
        return cls(module, torch.optim.AdamW(module.parameters(), lr=1e-4), device)

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        with torch.autocast(self.device, dtype=torch.bfloat16):
            logits, _ = split_outputs(self.module.run_network(inputs))
            loss = F.cross_entropy(logits, targets)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _steps(step: Step, batch: tuple[torch.Tensor, torch.Tensor], count: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(count):
            step(*batch)
        _sync(step.device)

    return run


def _peak_memory(step: Step, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Bytes the step allocates at its peak above what is resident before it (0 on the CPU)."""
    if step.device != "cuda":
        return 0.0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(*batch)
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


def _loader(root: Path, size: Size, cache: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    settings = DataSettings(root=str(root), image_size=size.image_size, batch_size=size.batch_size)
    with cache_at(cache):
        info, _ = scan(settings, seed=0)
    sampler = make_sampler(info.train_targets, balanced=True, seed=0, num_samples=1000 * size.batch_size)
    module = ImageDataModule(info, settings.preprocessing(), settings, sampler, AugmentSettings())
    return iter(module.train_dataloader())


def _gpu_decode(files: Sequence[Path], size: Size, device: str) -> Callable[[], None]:
    """A batch as ``[data].decode = "gpu"`` makes it: `decode_batch` (decode_jpeg, augmented on `device`)."""
    data = [torchvision.io.read_file(str(path)) for path in files[: size.batch_size]]
    settings = DataSettings(image_size=size.image_size)
    transform = train_transform(settings.preprocessing(), AugmentSettings())

    def run() -> None:
        decode_batch(data, transform, device).sum()
        _sync(device)

    return run


def rows(
    device: str = "cpu",
    smoke: bool = False,
    progress: Callable[[str], None] = lambda _: None,
    details: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    """The rows of the module docstring, on `device` (smoke: tiny sizes, and no compile on the CPU)."""
    quiet_lightning()
    size = Size.of(smoke)
    what = f"{size.arch}, {size.image_size} px, batch {size.batch_size}, bf16, {device}"
    generator = torch.Generator().manual_seed(0)
    synthetic = (
        torch.randn(size.batch_size, 3, size.image_size, size.image_size, generator=generator).to(device),
        torch.randint(0, CLASSES, (size.batch_size,), generator=generator).to(device),
    )
    variants = dict(VARIANTS)
    if smoke and device == "cpu":
        # Inductor takes minutes to build a ResNet's C++ kernels on a small CPU; the compiled
        # path is tested on the CPU by tests/harness/training/test_acceleration.py instead.
        variants = {name: flags for name, flags in variants.items() if not flags[1]}
        details("smoke on the CPU: the torch.compile variants are left out")
    progress(f"gpu: building and warming up {len(variants)} step variants ({what})")
    steps = {name: Step.prepare(size, device, *flags) for name, flags in variants.items()}
    for name, step in steps.items():
        started = time.perf_counter()
        _steps(step, synthetic, 3 if not smoke else 1)()  # compiles, picks cuDNN kernels
        progress(f"gpu: {name}: warm-up {time.perf_counter() - started:.1f} s")
    timed = interleaved(
        {name: _steps(step, synthetic, size.steps) for name, step in steps.items()},
        repeats=size.repeats,
        warmup=0,
    )
    per_step = {name: seconds / size.steps for name, seconds in timed.items()}
    anchor = per_step[EAGER]
    found = [
        Row(
            benchmark=f"gpu: training step, {what}",
            variant=f"{name} (anchor)" if name == EAGER else name,
            anchor=EAGER,
            seconds=seconds,
            anchor_seconds=anchor,
            unit="step",
        )
        for name, seconds in per_step.items()
    ]
    memory = {name: _peak_memory(step, synthetic) for name, step in steps.items()}
    details(
        "peak GPU memory of a step above its resident model and optimizer: "
        + ", ".join(f"{name} {value / 2**30:.2f} GiB" for name, value in memory.items())
        + (
            f"; whole process peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
            if device == "cuda"
            else ""
        )
    )

    net = steps[EAGER].module.net
    shadow = ShadowWeights(net)

    def update() -> None:
        shadow.update(0.999)
        _sync(device)

    def swap() -> None:
        shadow.exchange()
        shadow.exchange()
        _sync(device)

    ema = interleaved({"update": update, "swap": swap}, number=10, repeats=size.repeats)
    found += [
        Row(
            benchmark=f"gpu: EMA of {size.arch} vs one eager step",
            variant=f"EMA {name}" + (" (in and out)" if name == "swap" else " (foreach lerp)"),
            anchor=EAGER,
            seconds=seconds,
            anchor_seconds=anchor,
            unit="step",
        )
        for name, seconds in ema.items()
    ]
    steps = {EAGER: steps[EAGER]}

    with tempfile.TemporaryDirectory() as directory:
        root = write_tree(Path(directory) / "data", size.jpeg_files, 10, jpegs(64, size.jpeg_size))
        batches = _loader(root, size, str(Path(directory) / "cache"))
        progress("gpu: starting the loader's workers")
        next(batches)
        step = steps[EAGER]

        def fed() -> None:
            inputs, targets = next(batches)
            step(inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True))

        fed_seconds = interleaved(
            {"fed": _steps_fed(fed, size.steps, device), "synthetic": _steps(step, synthetic, size.steps)},
            repeats=size.repeats,
            warmup=0,
        )
        found.append(
            Row(
                benchmark=f"gpu: training step fed by the harness's JPEG loader, {what}",
                variant="JPEGs decoded and augmented by the loader's workers",
                anchor="synthetic tensors on the device",
                seconds=fed_seconds["fed"] / size.steps,
                anchor_seconds=fed_seconds["synthetic"] / size.steps,
                unit="step",
            )
        )
        files = sorted(root.rglob("*.jpg"))
        count = size.batch_size * max(1, size.steps // 4)

        def loader_epoch() -> None:
            for _ in range(count // size.batch_size):
                next(batches)

        decode = interleaved(
            {"loader": loader_epoch, "device": _gpu_decode(files, size, device)},
            repeats=size.repeats,
            warmup=1,
        )
    found += [
        Row(
            benchmark=f"gpu: JPEG decoding, {size.jpeg_size} px to {size.image_size} px",
            variant=variant,
            anchor="the harness's loader (PIL in workers, augmented)",
            seconds=seconds,
            anchor_seconds=decode["loader"] / count,
            unit="image",
        )
        for variant, seconds in (
            ("the harness's loader (PIL in workers, augmented) (anchor)", decode["loader"] / count),
            (
                f'[data].decode = "gpu": decode_jpeg(device={device!r}) and augmented there, a batch',
                decode["device"] / size.batch_size,
            ),
        )
    ]
    details(f"EMA update {ema['update'] * 1e3:.3f} ms, swap in and out {ema['swap'] * 1e3:.3f} ms")
    return found


def _steps_fed(fed: Callable[[], None], count: int, device: str) -> Callable[[], None]:
    def run() -> None:
        for _ in range(count):
            fed()
        _sync(device)

    return run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--smoke", action="store_true", help="every path at a tiny size")
    args = parser.parse_args(argv)
    print(rows_table(rows(args.device, smoke=args.smoke, progress=print, details=print)))


if __name__ == "__main__":
    main()

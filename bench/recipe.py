"""The training recipe: the harness's defaults and two ablations, against a plain-PyTorch loop.

    .venv/bin/python -m bench.recipe                      # 6 and 20 epochs, seeds 0 1 2 (25 min, 2 cores)
    .venv/bin/python -m bench.recipe --epochs 6 --seeds 0 1
    .venv/bin/python -m bench.recipe --smoke              # 1 epoch, 1 seed, a tiny set: checks that it runs
    .venv/bin/python -m bench.recipe --parallel 1 --json results.json

It measures accuracy, not time, so it is not one of ``python -m bench``'s rows (those are
times against an anchor); it runs on its own and prints one markdown table per epoch count.

The data: the embedded digits (`harness.training.data.materialise_digits`), 10 classes,
as an ImageFolder tree with ``train/`` and ``val/`` folders. Validation is balanced: 36
images of each class. Training has a 10:1 imbalance: the counts fall geometrically from
140 to 14 images, the order of the classes a fixed shuffle (`imbalanced_counts`). The
set is built once per invocation from a fixed seed; the seeds vary the training only.
No flips anywhere: a mirrored digit is another symbol.

The recipes, each trained from scratch at 32 px, batch 64, for each epoch count and seed:

- anchor: `anchor_top1`, a plain PyTorch loop (torchvision ResNet-18 and ImageFolder, no
  Lightning, no harness code): AdamW 1e-3, weight decay 0.05, one epoch of linear warm-up
  then cosine per step, RandomResizedCrop(32, scale 0.7-1, ratio 0.9-1.1), ColorJitter 0.2,
  a class-balanced `WeightedRandomSampler`, label smoothing 0.1, ImageNet normalisation.
- defaults: `harness.training.fit.run` with the repository's ``settings.toml``, the same
  function ``python -m harness.run`` calls. Only what cannot change the weights is turned
  off: every subscriber but EMA (pictures, reports, ONNX export), checkpoints, the event
  record. EMA stays as the defaults have it: the validated weights are the average's.
- EMA off: the defaults with ``[subscribers.ema].enabled = false``: the one thing the
  harness adds to the anchor's recipe, so it says what the average is worth (or costs).
- old optimiser: the defaults with the optimiser the harness had before the recipe
  (Nesterov SGD 0.05, weight decay 5e-4, no warm-up), which the recipe replaced.

Top-1 is the final epoch's, on the validation split, for every recipe (not the best
epoch's: picking the best of several validations flatters a noisy recipe). Each run is a
fresh process with one torch thread; ``--parallel`` of them run at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from harness.core.layout import RunLayout

__all__ = [
    "RECIPES",
    "Recipe",
    "anchor_top1",
    "harness_top1",
    "imbalanced_counts",
    "make_imbalanced_digits",
    "main",
    "recipe_table",
]

REPO = Path(__file__).resolve().parent.parent
# The repository's settings file has the name a run directory gives its own.
SETTINGS = RunLayout(REPO).settings
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
GOAL_SPREAD = 3.0
"""The most the defaults' top-1 may vary across seeds, in points."""


@attrs.frozen(kw_only=True)
class Recipe:
    """One row of the table: the anchor loop, or the harness with these ``--set`` overrides."""

    name: str
    overrides: tuple[str, ...] = ()
    anchor: bool = False


ANCHOR = Recipe(name="plain PyTorch loop (anchor)", anchor=True)
DEFAULTS = Recipe(name="harness defaults")
RECIPES: tuple[Recipe, ...] = (
    ANCHOR,
    DEFAULTS,
    Recipe(name="defaults, EMA off", overrides=("subscribers.ema.enabled=false",)),
    Recipe(
        name="defaults, old optimiser (SGD 0.05, wd 5e-4, no warm-up)",
        overrides=("model.optimizer=sgd", "model.lr=0.05", "model.weight_decay=5e-4", "model.warmup=0"),
    ),
)


def imbalanced_counts(largest: int, classes: int = 10, ratio: float = 10.0) -> list[int]:
    """Training images per class rank: geometric from `largest` down to `largest / ratio`."""
    return [round(largest * ratio ** (-rank / (classes - 1))) for rank in range(classes)]


def make_imbalanced_digits(
    root: Path, *, largest: int = 140, val_per_class: int = 36, seed: int = 0
) -> dict[str, int]:
    """Write the benchmark's ImageFolder tree under `root`; returns training images per class.

    Each digit's files are shuffled (`seed`); the first `val_per_class` go to ``val/``, the
    next ``imbalanced_counts(largest)[rank]`` to ``train/``, the digits' ranks a shuffle too.
    """
    from harness.training.data import materialise_digits

    digits = materialise_digits()
    rng = random.Random(seed)
    names = sorted(p.name for p in digits.iterdir() if p.is_dir() and not p.name.startswith("."))
    ranks = list(range(len(names)))
    rng.shuffle(ranks)
    counts = imbalanced_counts(largest, len(names))
    kept: dict[str, int] = {}
    for name, rank in zip(names, ranks, strict=True):
        files = sorted((digits / name).glob("*.png"))
        rng.shuffle(files)
        wanted = counts[rank]
        if len(files) < val_per_class + wanted:
            raise ValueError(f"digit {name}: {len(files)} images, fewer than {val_per_class} + {wanted}")
        for split, chosen in (("val", files[:val_per_class]), ("train", files[val_per_class:][:wanted])):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copyfile(path, folder / path.name)
        kept[name] = wanted
    return kept


def anchor_top1(data: Path, seed: int, epochs: int, batch_size: int = 64) -> float:
    """The plain-PyTorch recipe trained on ``data/train``: final-epoch top-1 on ``data/val``."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader, WeightedRandomSampler
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(*IMAGENET)]
    crop = v2.RandomResizedCrop(32, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True)
    augment = v2.Compose([v2.ToImage(), crop, v2.ColorJitter(0.2, 0.2, 0.2), *finish])
    plain = v2.Compose([v2.ToImage(), v2.Resize((32, 32), antialias=True), *finish])
    train = torchvision.datasets.ImageFolder(str(data / "train"), transform=augment)
    val = torchvision.datasets.ImageFolder(str(data / "val"), transform=plain)
    targets = torch.tensor(train.targets)
    weights = (1.0 / torch.bincount(targets).double())[targets]
    draws = torch.Generator().manual_seed(seed)
    sampler = WeightedRandomSampler(weights.tolist(), len(train), replacement=True, generator=draws)
    loader = DataLoader(train, batch_size=batch_size, sampler=sampler)
    model = torchvision.models.resnet18(num_classes=len(train.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    warm, total = len(loader), epochs * len(loader)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    loss_of = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for _ in range(epochs):
        model.train()
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss_of(model(inputs), labels).backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, labels in DataLoader(val, batch_size=256):
            correct += int((model(inputs).argmax(1) == labels).sum())
    return correct / len(val)


def harness_top1(recipe: Recipe, data: Path, seed: int, epochs: int, output_dir: Path) -> float:
    """`recipe` trained by `harness.training.fit.run`: the final epoch's ``val/acc_top1``."""
    from harness.settings import load_settings, resolve_specs
    from harness.training.fit import run

    quiet = [f"subscribers.{name}.enabled=false" for name in resolve_specs(()) if name != "ema"]
    overrides = [
        f"data.root={data}",
        f"run.seed={seed}",
        f"run.output_dir={output_dir}",
        f"run.name=seed{seed}-e{epochs}",
        "run.terminal=quiet",
        "run.record_events=false",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.progress_bar=false",
        "checkpoint.enabled=false",
        *quiet,
        *recipe.overrides,
    ]
    result = run(load_settings(SETTINGS, overrides))
    if result.summary.status != "completed":
        raise RuntimeError(f"{recipe.name}, seed {seed}: the run ended {result.summary.status}")
    return float(result.summary.final_metrics["val/acc_top1"])


def _job(recipe_index: int, data: Path, seed: int, epochs: int, out: Path) -> None:
    """Inside a child process: train one recipe once and write its top-1 to `out`."""
    import torch

    torch.set_num_threads(1)
    recipe = RECIPES[recipe_index]
    started = time.perf_counter()
    if recipe.anchor:
        top1 = anchor_top1(data, seed, epochs)
    else:
        from harness.training.terminal import quiet_libraries

        quiet_libraries("quiet")
        with tempfile.TemporaryDirectory() as runs:
            top1 = harness_top1(recipe, data, seed, epochs, Path(runs))
    out.write_text(json.dumps({"top1": top1, "seconds": time.perf_counter() - started}))


@attrs.frozen(kw_only=True)
class _Pending:
    recipe: int
    seed: int
    epochs: int


def _run_all(pending: Sequence[_Pending], data: Path, scratch: Path, parallel: int) -> dict[_Pending, float]:
    """Every job in a child process of its own, `parallel` at a time; top-1 by job."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_CACHE": str(scratch / "cache")}
    queue = list(enumerate(pending))
    running: list[tuple[_Pending, Path, subprocess.Popen[bytes]]] = []
    results: dict[_Pending, float] = {}
    while queue or running:
        while queue and len(running) < parallel:
            number, job = queue.pop(0)
            out = scratch / f"job{number}.json"
            command = [sys.executable, "-m", "bench.recipe", "--job", str(job.recipe), str(job.seed)]
            command += [str(job.epochs), "--data", str(data), "--out", str(out)]
            running.append((job, out, subprocess.Popen(command, env=environment, cwd=REPO)))
        time.sleep(0.5)
        for entry in list(running):
            job, out, process = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            if process.returncode != 0 or not out.is_file():
                raise RuntimeError(f"{RECIPES[job.recipe].name}, seed {job.seed}: exit {process.returncode}")
            done = json.loads(out.read_text())
            results[job] = float(done["top1"])
            print(
                f"{RECIPES[job.recipe].name}, {job.epochs} epoch(s), seed {job.seed}: "
                f"top-1 {done['top1']:.3f} in {done['seconds']:.0f} s ({len(results)}/{len(pending)})",
                file=sys.stderr,
                flush=True,
            )
    return results


def recipe_table(top1: dict[str, list[float]]) -> str:
    """The markdown table of one epoch count: top-1 by recipe name, the anchor's first."""
    from bench._timing import markdown_table

    anchor = statistics.mean(top1[ANCHOR.name])
    rows = []
    for name, values in top1.items():
        mean = statistics.mean(values)
        spread = 100 * (max(values) - min(values))
        verdict = ""
        if name == ANCHOR.name:
            verdict = "anchor"
        elif name == DEFAULTS.name:
            met = mean >= anchor and spread <= GOAL_SPREAD
            verdict = f"mean >= anchor, spread <= {GOAL_SPREAD:g}: {'met' if met else 'MISSED'}"
        rows.append(
            [
                name,
                f"{100 * mean:.1f}",
                f"{100 * (mean - anchor):+.1f}",
                f"{spread:.1f}",
                " / ".join(f"{100 * v:.1f}" for v in values),
                verdict,
            ]
        )
    headers = ["recipe", "top-1 %", "vs anchor", "spread (points)", "per seed", "goal"]
    return markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[6, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch, seed 0, 42 images: checks that it runs"
    )
    parser.add_argument("--json", type=Path, help="also write every top-1 here")
    parser.add_argument("--job", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        _job(args.job[0], args.data, args.job[1], args.job[2], args.out)
        return 0
    largest, val_per_class = (140, 36) if not args.smoke else (10, 4)
    epochs, seeds = (args.epochs, args.seeds) if not args.smoke else ([1], [0])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        data = scratch / "digits-10to1"
        counts = make_imbalanced_digits(data, largest=largest, val_per_class=val_per_class)
        pending = [
            _Pending(recipe=index, seed=seed, epochs=count)
            for count in epochs
            for seed in seeds
            for index in range(len(RECIPES))
        ]
        results = _run_all(pending, data, scratch, max(1, args.parallel))
    shown = ", ".join(f"{name}: {count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(
        f"Digits with a 10:1 imbalance: {sum(counts.values())} training images ({shown}); "
        f"validation {val_per_class} per class ({val_per_class * len(counts)} images). "
        f"ResNet-18 from scratch, 32 px, batch 64; top-1 of the final epoch; seeds {seeds}.\n"
    )
    everything: dict[str, dict[str, list[float]]] = {}
    for count in epochs:
        top1 = {
            recipe.name: [results[_Pending(recipe=i, seed=s, epochs=count)] for s in seeds]
            for i, recipe in enumerate(RECIPES)
        }
        everything[str(count)] = top1
        print(f"{count} epoch(s)\n\n{recipe_table(top1)}\n")
    print(f"{time.perf_counter() - started:.0f} s in all, {args.parallel} run(s) at once")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "seeds": seeds, "top1": everything}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

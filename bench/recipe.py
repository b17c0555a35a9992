"""The training recipe: the harness's defaults against a plain-PyTorch loop, on several kinds of data.

    .venv/bin/python -m bench.recipe                      # 6 and 20 epochs, seeds 0 1 2, every kind
    .venv/bin/python -m bench.recipe --epochs 6 --kinds photos symbols-10to1
    .venv/bin/python -m bench.recipe --smoke              # 1 epoch, 1 seed, tiny sets: checks that it runs
    .venv/bin/python -m bench.recipe --parallel 1 --json results.json

It measures accuracy, not time, so it is not one of ``python -m bench``'s rows (those are
times against an anchor); it runs on its own and prints one markdown table per kind of
data and epoch count. The defaults must not be tuned on one set: each kind has its own
anchor, the best-known plain recipe for that kind, trained in the same invocation.

The kinds (`KINDS`; each built once per invocation from a fixed seed, the seeds vary the
training only; validation is balanced):

- ``symbols-10to1``: the embedded digits (`harness.training.data.materialise_digits`),
  8x8, training cut to a 10:1 imbalance (140 down to 14 per class, `imbalanced_counts`),
  36 per class for validation.
- ``symbols-nonsquare-10to1``: the same images stretched to 22x41 (tall) and 44x31 (wide),
  alternately: non-square symbols, where the training crop must live in the evaluation frame.
- ``symbols-balanced``: the digits, 60 per class for training, 36 for validation.
- ``photos``: Fashion-MNIST (grey product photos, 28x28) from Debian's
  ``dataset-fashion-mnist`` (`FASHION_MNIST`), 100 per class for training and 50 for
  validation; left out, with a note, where the package is not installed.

The recipes, each trained from scratch at 32 px, batch 64, for each epoch count and seed:

- anchor: `anchor_top1`, a plain PyTorch loop (torchvision ResNet-18 and ImageFolder, no
  Lightning, no harness code): AdamW 1e-3, weight decay 0.05, one epoch of linear warm-up
  then cosine per step, label smoothing 0.1, ImageNet normalisation. For symbols: squash
  to 32 squared, then RandomResizedCrop(32, scale 0.7-1, ratio 0.9-1.1), ColorJitter 0.2,
  no flips, a class-balanced `WeightedRandomSampler` (shuffled where balanced). For
  photos: resize to 32, reflect-padded RandomCrop(32, padding 4), horizontal flip, shuffled.
- defaults: `harness.training.fit.run` with the repository's ``settings.toml``, the same
  function ``python -m harness.run`` calls. Only what cannot change the weights is turned
  off: every subscriber but EMA (pictures, reports, ONNX export), checkpoints, the event
  record. The top-1 is the kept weights' (the EMA's average or the training weights,
  whichever validated better: ``summary.json`` ``validated_weights``); the row "raw
  weights alone" is the training weights' top-1 in the same runs, which is what the
  defaults with the EMA off would score (the EMA never changes the training).
- on imbalanced symbols, two sampling alternatives to the defaults' class-balanced
  sampler: a plain shuffle, and a shuffle with the loss weighted 1 / class count.

Top-1 is the final epoch's, on the validation split, for every recipe (not the best
epoch's: picking the best of several validations flatters a noisy recipe). Each run is a
fresh process with one torch thread; ``--parallel`` of them run at once.
"""

from __future__ import annotations

import argparse
import gzip
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from harness.core.layout import RunLayout

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "KINDS",
    "Kind",
    "Recipe",
    "anchor_top1",
    "harness_top1",
    "imbalanced_counts",
    "make_balanced_digits",
    "make_fashion",
    "make_imbalanced_digits",
    "make_non_square",
    "main",
    "recipe_table",
]

REPO = Path(__file__).resolve().parent.parent
# The repository's settings file has the name a run directory gives its own.
SETTINGS = RunLayout(REPO).settings
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` puts the idx files."""
GOAL_SPREAD = 3.0
"""The most the defaults' top-1 may vary across seeds, in points."""
GOAL_MARGIN = 0.5
"""The most the defaults' mean top-1 may trail the anchor's, in points."""
TALL, WIDE = (22, 41), (44, 31)
"""(width, height) of the non-square symbols."""


@attrs.frozen(kw_only=True)
class Recipe:
    """One row of a table: the anchor loop, or the harness with these ``--set`` overrides."""

    name: str
    overrides: tuple[str, ...] = ()
    anchor: bool = False


ANCHOR = Recipe(name="plain PyTorch loop (anchor)", anchor=True)
DEFAULTS = Recipe(name="harness defaults")
RAW = "defaults, raw weights alone (EMA off)"
SHUFFLE = Recipe(name="defaults, sampling = shuffle", overrides=("data.sampling=shuffle",))
WEIGHTED = Recipe(name="defaults, class_weights = auto (shuffled)", overrides=("data.class_weights=auto",))


@attrs.frozen(kw_only=True)
class Kind:
    """A kind of data: how to write its tree, its anchor's recipe, and the harness rows to train."""

    key: str
    write: Callable[[Path, bool], str]
    anchor: Literal["symbols", "photos"]
    recipes: tuple[Recipe, ...] = (ANCHOR, DEFAULTS)


def imbalanced_counts(largest: int, classes: int = 10, ratio: float = 10.0) -> list[int]:
    """Training images per class rank: geometric from `largest` down to `largest / ratio`."""
    return [round(largest * ratio ** (-rank / (classes - 1))) for rank in range(classes)]


def _copy_digits(root: Path, counts: Sequence[int], val_per_class: int, seed: int) -> dict[str, int]:
    """Copy digits to ``root/{train,val}``: `val_per_class` each, then ``counts[rank]`` for training."""
    from harness.training.data import materialise_digits

    digits = materialise_digits()
    rng = random.Random(seed)
    names = sorted(p.name for p in digits.iterdir() if p.is_dir() and not p.name.startswith("."))
    ranks = list(range(len(names)))
    rng.shuffle(ranks)
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


def make_imbalanced_digits(
    root: Path, *, largest: int = 140, val_per_class: int = 36, seed: int = 0
) -> dict[str, int]:
    """Write the 10:1 digits tree under `root`; returns training images per class.

    Each digit's files are shuffled (`seed`); the first `val_per_class` go to ``val/``, the
    next ``imbalanced_counts(largest)[rank]`` to ``train/``, the digits' ranks a shuffle too.
    """
    return _copy_digits(root, imbalanced_counts(largest), val_per_class, seed)


def make_balanced_digits(
    root: Path, *, per_class: int = 60, val_per_class: int = 36, seed: int = 0
) -> dict[str, int]:
    """Write a balanced digits tree under `root`: `per_class` training images of each digit."""
    return _copy_digits(root, [per_class] * 10, val_per_class, seed)


def make_non_square(source: Path, root: Path) -> int:
    """Copy the tree at `source` to `root` with every image stretched to `TALL` or `WIDE`, alternately."""
    from PIL import Image

    count = 0
    for index, path in enumerate(sorted(source.rglob("*.png"))):
        target = root / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.resize(TALL if index % 2 else WIDE, Image.Resampling.BICUBIC).save(target)
        count += 1
    return count


def _idx(path: Path) -> np.ndarray:
    import numpy as np

    with gzip.open(path) as opened:
        data = opened.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def make_fashion(
    root: Path, *, per_class: int = 100, val_per_class: int = 50, seed: int = 0
) -> dict[str, int]:
    """Write a Fashion-MNIST subset under `root`: `per_class` training and `val_per_class` validation images.

    Both come from the package's training file, drawn without overlap by `seed`.
    """
    import numpy as np
    from PIL import Image

    images = _idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    labels = _idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    for label in range(10):
        chosen = rng.permutation(np.flatnonzero(labels == label))[: per_class + val_per_class]
        for split, indices in (("val", chosen[:val_per_class]), ("train", chosen[val_per_class:])):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in indices:
                Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
    return {f"class_{label}": per_class for label in range(10)}


def _describe(counts: dict[str, int], val_per_class: int, what: str) -> str:
    shown = ", ".join(str(count) for count in sorted(counts.values(), reverse=True))
    return (
        f"{what}: {sum(counts.values())} training images ({shown} per class), "
        f"validation {val_per_class} per class"
    )


def _symbols(root: Path, smoke: bool) -> str:
    largest, val = (10, 4) if smoke else (140, 36)
    return _describe(
        make_imbalanced_digits(root, largest=largest, val_per_class=val), val, "digits 8x8, 10:1"
    )


def _non_square(root: Path, smoke: bool) -> str:
    largest, val = (10, 4) if smoke else (140, 36)
    square = root.with_name(root.name + "-square")
    counts = make_imbalanced_digits(square, largest=largest, val_per_class=val)
    make_non_square(square, root)
    shutil.rmtree(square)
    return _describe(counts, val, "digits stretched to 22x41 and 44x31, 10:1")


def _balanced(root: Path, smoke: bool) -> str:
    per_class, val = (4, 4) if smoke else (60, 36)
    return _describe(
        make_balanced_digits(root, per_class=per_class, val_per_class=val), val, "digits 8x8, balanced"
    )


def _photos(root: Path, smoke: bool) -> str:
    per_class, val = (4, 4) if smoke else (100, 50)
    counts = make_fashion(root, per_class=per_class, val_per_class=val)
    return _describe(counts, val, "Fashion-MNIST 28x28 grey photos, balanced")


KINDS: tuple[Kind, ...] = (
    Kind(key="photos", write=_photos, anchor="photos"),
    Kind(
        key="symbols-10to1", write=_symbols, anchor="symbols", recipes=(ANCHOR, DEFAULTS, SHUFFLE, WEIGHTED)
    ),
    Kind(key="symbols-nonsquare-10to1", write=_non_square, anchor="symbols"),
    Kind(key="symbols-balanced", write=_balanced, anchor="symbols"),
)


def anchor_top1(
    data: Path, seed: int, epochs: int, batch_size: int = 64, kind: Literal["symbols", "photos"] = "symbols"
) -> float:
    """The plain-PyTorch recipe for `kind` trained on ``data/train``: final-epoch top-1 on ``data/val``."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader, WeightedRandomSampler
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    finish = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(*IMAGENET)]
    square = v2.Resize((32, 32), antialias=True)
    if kind == "photos":
        steps = [square, v2.RandomCrop(32, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip()]
    else:
        crop = v2.RandomResizedCrop(32, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True)
        steps = [square, crop, v2.ColorJitter(0.2, 0.2, 0.2)]
    augment = v2.Compose([v2.ToImage(), *steps, *finish])
    plain = v2.Compose([v2.ToImage(), square, *finish])
    train = torchvision.datasets.ImageFolder(str(data / "train"), transform=augment)
    val = torchvision.datasets.ImageFolder(str(data / "val"), transform=plain)
    targets = torch.tensor(train.targets)
    counts = torch.bincount(targets)
    draws = torch.Generator().manual_seed(seed)
    if kind == "symbols" and int(counts.max()) > int(counts.min()):
        weights = (1.0 / counts.double())[targets]
        sampler = WeightedRandomSampler(weights.tolist(), len(train), replacement=True, generator=draws)
        loader = DataLoader(train, batch_size=batch_size, sampler=sampler)
    else:
        loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=draws)
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


def harness_top1(recipe: Recipe, data: Path, seed: int, epochs: int, output_dir: Path) -> dict[str, object]:
    """`recipe` trained by `harness.training.fit.run`: the kept weights' top-1, the raw weights', the recipe.

    ``top1`` is the kept weights' final-epoch top-1 (``val/acc_top1`` when no EMA ran),
    ``raw`` the training weights' (the same without an EMA), ``kept`` which were kept.
    """
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
    summary = run(load_settings(SETTINGS, overrides)).summary
    if summary.status != "completed":
        raise RuntimeError(f"{recipe.name}, seed {seed}: the run ended {summary.status}")
    final = float(summary.final_metrics["val/acc_top1"])
    weights, chosen = summary.validated_weights, summary.recipe
    found: dict[str, object] = {"top1": final, "raw": final, "kept": "training (no EMA)"}
    if weights is not None:
        found = {
            "top1": max(weights.average_top1, weights.training_top1),
            "raw": weights.training_top1,
            "kept": weights.kept,
        }
    if chosen is not None:
        found |= {"preset": chosen.preset, "sampling": chosen.sampling}
    return found


def _job(kind_key: str, recipe_index: int, data: Path, seed: int, epochs: int, out: Path) -> None:
    """Inside a child process: train one recipe once and write its top-1 to `out`."""
    import torch

    torch.set_num_threads(1)
    kind = next(k for k in KINDS if k.key == kind_key)
    recipe = kind.recipes[recipe_index]
    started = time.perf_counter()
    result: dict[str, object]
    if recipe.anchor:
        result = {"top1": anchor_top1(data, seed, epochs, kind=kind.anchor)}
    else:
        from harness.training.terminal import quiet_libraries

        quiet_libraries("quiet")
        with tempfile.TemporaryDirectory() as runs:
            result = harness_top1(recipe, data, seed, epochs, Path(runs))
    out.write_text(json.dumps({**result, "seconds": time.perf_counter() - started}))


@attrs.frozen(kw_only=True)
class _Pending:
    kind: str
    recipe: int
    seed: int
    epochs: int


def _run_all(
    pending: Sequence[_Pending], data: dict[str, Path], scratch: Path, parallel: int
) -> dict[_Pending, dict[str, object]]:
    """Every job in a child process of its own, `parallel` at a time; results by job."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_CACHE": str(scratch / "cache")}
    queue = list(enumerate(pending))
    running: list[tuple[_Pending, Path, subprocess.Popen[bytes]]] = []
    results: dict[_Pending, dict[str, object]] = {}
    while queue or running:
        while queue and len(running) < parallel:
            number, job = queue.pop(0)
            out = scratch / f"job{number}.json"
            command = [
                sys.executable,
                "-m",
                "bench.recipe",
                "--job",
                job.kind,
                str(job.recipe),
                str(job.seed),
            ]
            command += [str(job.epochs), "--data", str(data[job.kind]), "--out", str(out)]
            running.append((job, out, subprocess.Popen(command, env=environment, cwd=REPO)))
        time.sleep(0.5)
        for entry in list(running):
            job, out, process = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            name = _recipe(job).name
            if process.returncode != 0 or not out.is_file():
                raise RuntimeError(f"{job.kind}, {name}, seed {job.seed}: exit {process.returncode}")
            done = json.loads(out.read_text())
            results[job] = done
            extra = "".join(
                f", {key} {done[key]}" for key in ("raw", "kept", "preset", "sampling") if key in done
            )
            print(
                f"{job.kind}, {name}, {job.epochs} epoch(s), seed {job.seed}: "
                f"top-1 {done['top1']:.3f}{extra} in {done['seconds']:.0f} s ({len(results)}/{len(pending)})",
                file=sys.stderr,
                flush=True,
            )
    return results


def _recipe(job: _Pending) -> Recipe:
    return next(k for k in KINDS if k.key == job.kind).recipes[job.recipe]


def recipe_table(top1: dict[str, list[float]]) -> str:
    """The markdown table of one kind and epoch count: top-1 by recipe name, the anchor's first."""
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
            met = 100 * (mean - anchor) >= -GOAL_MARGIN - 1e-9 and spread <= GOAL_SPREAD
            goal = f"mean >= anchor - {GOAL_MARGIN:g}, spread <= {GOAL_SPREAD:g}"
            verdict = f"{goal}: {'met' if met else 'MISSED'}"
        elif name == RAW:
            kept = top1.get(DEFAULTS.name, [])
            met = len(kept) == len(values) and all(k >= r for k, r in zip(kept, values, strict=True))
            verdict = f"defaults (kept) >= raw on every seed: {'met' if met else 'MISSED'}"
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
    parser.add_argument("--kinds", nargs="+", choices=[k.key for k in KINDS], default=[k.key for k in KINDS])
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument(
        "--smoke", action="store_true", help="1 epoch, seed 0, tiny sets: checks that it runs"
    )
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--job", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        kind, recipe, seed, epochs = args.job
        _job(kind, int(recipe), args.data, int(seed), int(epochs), args.out)
        return 0
    epochs, seeds = (args.epochs, args.seeds) if not args.smoke else ([1], [0])
    kinds = [k for k in KINDS if k.key in args.kinds]
    if any(k.key == "photos" for k in kinds) and not FASHION_MNIST.is_dir():
        print(
            f"photos left out: {FASHION_MNIST} is missing (apt install dataset-fashion-mnist)",
            file=sys.stderr,
        )
        kinds = [k for k in kinds if k.key != "photos"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        data = {kind.key: scratch / kind.key for kind in kinds}
        described = {kind.key: kind.write(data[kind.key], args.smoke) for kind in kinds}
        # The anchors and the defaults over every seed first, the alternatives after them.
        pending = sorted(
            (
                _Pending(kind=kind.key, recipe=index, seed=seed, epochs=count)
                for count in epochs
                for seed in seeds
                for kind in kinds
                for index in range(len(kind.recipes))
            ),
            key=lambda job: (job.epochs, job.recipe >= 2),
        )
        results = _run_all(pending, data, scratch, max(1, args.parallel))
    print(f"ResNet-18 from scratch, 32 px, batch 64; top-1 of the final epoch; seeds {seeds}.\n")
    everything: dict[str, dict[str, dict[str, list[float]]]] = {}
    for kind in kinds:
        for count in epochs:
            top1: dict[str, list[float]] = {}
            for index, recipe in enumerate(kind.recipes):
                done = [results[_Pending(kind=kind.key, recipe=index, seed=s, epochs=count)] for s in seeds]
                top1[recipe.name] = [float(d["top1"]) for d in done]  # type: ignore[arg-type]
                if recipe == DEFAULTS:
                    top1[RAW] = [float(d["raw"]) for d in done]  # type: ignore[arg-type]
                    chosen = {f"{d['preset']}, {d['sampling']}, kept {d['kept']}" for d in done}
            everything.setdefault(kind.key, {})[str(count)] = top1
            print(
                f"{kind.key}, {count} epoch(s): {described[kind.key]}; "
                f"defaults chose {'; '.join(sorted(chosen))}\n"
            )
            print(f"{recipe_table(top1)}\n")
    print(f"{time.perf_counter() - started:.0f} s in all, {args.parallel} run(s) at once")
    if args.json:
        args.json.write_text(
            json.dumps({"seeds": seeds, "described": described, "top1": everything}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

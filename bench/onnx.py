"""The ONNX export and CPU inference of the exported model, ResNet-18.

    .venv/bin/python -m bench.onnx [--size 64] [--threads 1] [--export-sizes 32 224]

Export: the harness's whole export (`harness.onnx.bundle.export_bundle`, what `OnnxExport`
runs when training ends: a CPU copy, torch's dynamo exporter, the model card, one file,
`onnx.checker`, the parity check in onnxruntime on 8 images at batch sizes 1 and 8, the
JSON files) against its anchor, the exporter alone: ``torch.onnx.export`` of the same
model with the same settings (dynamo, dynamic batch, opset 18, optimised), saved to one
file. Interleaved round by round, at 32 px (the default image size) and 224 px, on the
process's CPU time (the exporter is single-threaded Python; wall time is in the details).
The goal, at most 1.15x, bounds what the harness adds to torch's exporter; the seconds
themselves (the project's goal: under 2 s for ResNet-18) and the first export in the
process, which also pays the exporter's imports as a run does, are in the details.

Inference: the anchor is eager PyTorch (``torch.inference_mode``, ``eval()``) on the same random-init
ResNet-18, same inputs, same thread count. Against it, in the same process and
interleaved round by round: the file `harness.onnx.bundle.export_bundle` writes (what
`OnnxExport` publishes), run by onnxruntime's CPUExecutionProvider. Figures are per image;
the table also gives images per second. One thread by default, so that figures on a shared
machine are steadier; ``--threads`` sets both runtimes alike.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import onnxruntime as ort
import torch
from torchvision.models import resnet18

from bench._timing import Row, interleaved, rows_table
from harness.core.preprocessing import Preprocessing
from harness.onnx.bundle import DEFAULT_OPSET, PARITY_IMAGES, ExportResult, export_bundle
from harness.onnx.card import ExportSource

BENCHMARK = "ResNet-18 CPU inference"
EXPORT_BENCHMARK = "ResNet-18 ONNX export"
EXPORT_ANCHOR = "torch.onnx.export alone"
BATCHES = (1, 32)
EXPORT_SIZES = (32, 224)
EXPORT_GOAL = 1.15
"""What the harness may add to torch's exporter: copy, card, checker, parity, files."""
GOAL_SECONDS = 2.0
"""The project's goal for the whole export of ResNet-18, on the machine of the README."""


def _export(model: torch.nn.Module, size: int, directory: Path, images: torch.Tensor | None) -> ExportResult:
    """`export_bundle` of a 10-class `model` as it is, at `size` px, into `directory`."""
    return export_bundle(
        model,
        None,
        class_names=tuple(str(i) for i in range(10)),
        preprocessing=Preprocessing(image_size=size),
        source=ExportSource(checkpoint=None),
        images=images,
        directory=directory,
    )


def _bundle(model: torch.nn.Module, size: int, directory: Path) -> float:
    """One `export_bundle` of `model` at `size` px with 8 parity images; the parity's largest difference."""
    images = torch.randn(PARITY_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(size))
    return _export(model, size, directory, images).parity.max_abs_diff


def _plain(model: torch.nn.Module, size: int, path: Path) -> None:
    """The anchor: torch's exporter with the settings `export_bundle` uses, saved to one file."""
    example = torch.randn(2, 3, size, size)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        opset_version=DEFAULT_OPSET,
        external_data=False,
        verbose=False,
    )
    assert program is not None
    program.save(path, external_data=False)


def _clocked(
    candidates: Mapping[str, Callable[[], object]], repeats: int
) -> dict[str, dict[str, list[float]]]:
    """Wall and process CPU seconds of each call, the candidates taking turns, order rotating."""
    names = list(candidates)
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "CPU": []} for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            samples[name]["wall"].append(time.perf_counter() - wall)
            samples[name]["CPU"].append(time.process_time() - cpu)
    return samples


def export_rows(*, sizes: Sequence[int] = EXPORT_SIZES, repeats: int = 3) -> tuple[list[Row], dict[str, str]]:
    """CPU seconds per export, the harness's against the exporter alone; wall seconds in the facts.

    The exporter is Python on one thread, so its CPU time is its wall time on an idle
    machine, and moves much less than wall time on a loaded one.
    """
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    measured: list[Row] = []
    facts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as directory:
        where = Path(directory)
        wall, cpu = time.perf_counter(), time.process_time()
        _bundle(model, sizes[0], where / "first")
        facts[f"first export_bundle in the process (its imports included), {sizes[0]} px"] = (
            f"{time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"
        )
        for size in sizes:
            candidates: dict[str, Callable[[], object]] = {
                EXPORT_ANCHOR: functools.partial(_plain, model, size, where / "plain.onnx"),
                "export_bundle": functools.partial(_bundle, model, size, where / "bundle"),
            }
            timed = _clocked(candidates, repeats)
            median = {
                name: {k: statistics.median(v) for k, v in clocks.items()} for name, clocks in timed.items()
            }
            for name in candidates:
                anchor = name == EXPORT_ANCHOR
                measured.append(
                    Row(
                        benchmark=EXPORT_BENCHMARK,
                        variant=f"{name}, {size} px" + (" (anchor)" if anchor else ""),
                        anchor=f"{EXPORT_ANCHOR}, {size} px",
                        seconds=median[name]["CPU"],
                        anchor_seconds=median[EXPORT_ANCHOR]["CPU"],
                        unit="export, CPU",
                        goal=None if anchor else EXPORT_GOAL,
                    )
                )
            ours, plain = median["export_bundle"], median[EXPORT_ANCHOR]
            verdict = "met" if ours["CPU"] <= GOAL_SECONDS else "MISSED"
            facts[f"export_bundle, {size} px"] = (
                f"{ours['CPU']:.2f} s CPU, {ours['wall']:.2f} s wall (goal {GOAL_SECONDS:g} s: {verdict}); "
                f"the exporter alone {plain['CPU']:.2f} s CPU, {plain['wall']:.2f} s wall"
            )
    return measured, facts


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def rows(
    *,
    size: int = 64,
    threads: int = 1,
    repeats: int = 5,
    export_sizes: Sequence[int] = EXPORT_SIZES,
    smoke: bool = False,
) -> tuple[list[Row], dict[str, str]]:
    """The export rows, then seconds per image of each runtime at each batch size; facts beside.

    `smoke` exports at 32 px only, once, and times one inference round.
    """
    torch.set_num_threads(threads)
    measured, facts = export_rows(
        sizes=export_sizes[:1] if smoke else export_sizes, repeats=1 if smoke else 3
    )
    inference, inference_facts = inference_rows(size=size, threads=threads, repeats=1 if smoke else repeats)
    return measured + inference, {**facts, **inference_facts}


def inference_rows(*, size: int = 64, threads: int = 1, repeats: int = 5) -> tuple[list[Row], dict[str, str]]:
    """Seconds per image of each runtime at each batch size; the largest logit differences."""
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    with tempfile.TemporaryDirectory() as directory:
        exported = _export(model, size, Path(directory), None)
        session = _session(exported.model, threads)
        measured: list[Row] = []
        difference = 0.0
        for batch in BATCHES:
            inputs = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
            array = inputs.numpy()

            def eager(inputs: torch.Tensor = inputs) -> torch.Tensor:
                with torch.inference_mode():
                    logits: torch.Tensor = model(inputs)
                return logits

            def onnx(array: object = array) -> object:
                return session.run(["logits"], {"input": array})

            candidates: dict[str, Callable[[], object]] = {"PyTorch eager": eager, "onnxruntime": onnx}
            number = max(1, 8 // batch)
            timed = interleaved(candidates, number=number, repeats=repeats, warmup=1)
            anchor = f"PyTorch eager, batch {batch}"
            measured += [
                Row(
                    benchmark=BENCHMARK,
                    variant=f"{name}, batch {batch}" + (" (anchor)" if name == "PyTorch eager" else ""),
                    anchor=anchor,
                    seconds=seconds / batch,
                    anchor_seconds=timed["PyTorch eager"] / batch,
                    unit="image",
                )
                for name, seconds in timed.items()
            ]
            difference = max(difference, float((eager() - torch.from_numpy(onnx()[0])).abs().max()))  # type: ignore[index]
    return measured, {
        "max |logit difference| onnxruntime vs eager": f"{difference:.2e}",
        f"max |logit difference| of the parity check, {size} px": f"{exported.parity.max_abs_diff:.2e}",
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference rounds; the median is kept")
    parser.add_argument(
        "--export-sizes",
        type=int,
        nargs="+",
        default=list(EXPORT_SIZES),
        help="image sides of the export rows",
    )
    parser.add_argument("--smoke", action="store_true", help="one export at the first size, one round")
    args = parser.parse_args(argv)
    measured, facts = rows(
        size=args.size,
        threads=args.threads,
        repeats=args.repeats,
        export_sizes=args.export_sizes,
        smoke=args.smoke,
    )
    print(
        f"ResNet-18 (random init, 10 classes), CPU, {args.threads} thread(s); export: median of 3 "
        f"interleaved rounds; inference: {args.size}x{args.size} px, median of {args.repeats}\n"
    )
    print(rows_table(measured))
    print("\n| variant | images/s | speed-up over eager |\n|---|---:|---:|")
    for row in measured:
        if row.benchmark == BENCHMARK:
            print(f"| {row.variant} | {1 / row.seconds:.0f} | {row.anchor_seconds / row.seconds:.2f}x |")
    print()
    for key, value in facts.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()

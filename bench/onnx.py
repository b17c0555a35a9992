"""CPU inference of the exported model: onnxruntime against eager PyTorch, ResNet-18, batch 1 and 32.

    .venv/bin/python -m bench.onnx [--size 64] [--threads 1]

Anchor: eager PyTorch (``torch.inference_mode``, ``eval()``) on the same random-init
ResNet-18, same inputs, same thread count. Against it, in the same process and
interleaved round by round: the file `harness.onnx.bundle.export_bundle` writes (what
`OnnxExport` publishes), run by onnxruntime's CPUExecutionProvider. Figures are per image;
the table also gives images per second. One thread by default, so that figures on a shared
machine are steadier; ``--threads`` sets both runtimes alike.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnxruntime as ort
import torch
from torchvision.models import resnet18

from bench._timing import Row, interleaved, rows_table
from harness.core.preprocessing import Preprocessing
from harness.onnx.bundle import export_bundle
from harness.onnx.card import ExportSource

BENCHMARK = "ResNet-18 CPU inference"
BATCHES = (1, 32)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def rows(*, size: int = 64, threads: int = 1, repeats: int = 5) -> tuple[list[Row], dict[str, float]]:
    """Seconds per image of each runtime at each batch size, and facts about the export."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        exported = export_bundle(
            model,
            None,
            class_names=tuple(str(i) for i in range(10)),
            preprocessing=Preprocessing(image_size=size),
            source=ExportSource(checkpoint=None),
            images=None,
            directory=Path(directory),
        )
        export_seconds = time.perf_counter() - started
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
        "export_seconds": export_seconds,
        "max_abs_diff": difference,
        "parity_max_abs_diff": exported.parity.max_abs_diff,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is kept")
    args = parser.parse_args(argv)
    measured, facts = rows(size=args.size, threads=args.threads, repeats=args.repeats)
    print(
        f"ResNet-18 (random init, 10 classes), {args.size}x{args.size} px, CPU, {args.threads} thread(s), "
        f"median of {args.repeats} interleaved rounds\n"
    )
    print(rows_table(measured))
    print("\n| variant | images/s | speed-up over eager |\n|---|---:|---:|")
    for row in measured:
        print(f"| {row.variant} | {1 / row.seconds:.0f} | {row.anchor_seconds / row.seconds:.2f}x |")
    print(
        f"\nexport + parity check: {facts['export_seconds']:.1f} s; "
        f"max |logit difference| onnxruntime vs eager: {facts['max_abs_diff']:.2e}"
    )


if __name__ == "__main__":
    main()

"""Run every benchmark of the project and print one markdown table of ratios.

    .venv/bin/python -m bench                     # all of them, on the CPU (a few minutes)
    .venv/bin/python -m bench --only bus epoch    # a selection
    .venv/bin/python -m bench --device cuda       # one GPU: the ones that take a device (gpu, epoch)
    .venv/bin/python -m bench --device cuda --smoke  # their code paths, tiny; on the CPU without a GPU
    .venv/bin/python -m bench --details           # each benchmark's own tables too
    .venv/bin/python -m bench --smoke             # tiny sizes where offered: checks that it runs
    .venv/bin/python -m bench --one-core          # pinned to one core: wall time with no core to spare
    .venv/bin/python -m bench --list

Each benchmark runs in a process of its own (a fresh interpreter: no thread setting,
import or allocator state leaks from one into the next) and measures its variants side by
side against its anchor there. Its rows come back as JSON; see `bench` for the protocol.
`bench.recipe` compares accuracy, not time, and takes half an hour: it is not among them
(``python -m bench.recipe``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from bench._timing import Row, rows_table

__all__ = ["BENCHMARKS", "Benchmark", "main", "parse_tables"]


@attrs.frozen(kw_only=True)
class Benchmark:
    """A module ``bench.<name>`` and what it compares."""

    name: str
    compares: str


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(name="bus", compares="event dispatch to 8 receivers: Bus vs Lightning's hooks vs blinker"),
    Benchmark(name="ema", compares="EMA update and swap vs Lightning's EMAWeightAveraging"),
    Benchmark(
        name="confusion_matrix",
        compares="validation with the confusion matrix vs without, vs a second forward pass",
    ),
    Benchmark(
        name="onnx", compares="the ONNX export vs torch.onnx.export alone; onnxruntime inference vs eager"
    ),
    Benchmark(
        name="scale",
        compares="confusion matrix, sampler tracking at 10, 100, 1,000 classes vs the epoch they ride on",
    ),
    Benchmark(
        name="epoch",
        compares="a training epoch, every subscriber on, vs bare Lightning with plain callbacks, with none",
    ),
    Benchmark(
        name="scan",
        compares="the data scan at 10k and 100k files, first and second start, vs torchvision's ImageFolder",
    ),
    Benchmark(
        name="loader",
        compares="the training data loader's images/s vs ImageFolder + DataLoader, same transforms",
    ),
    Benchmark(
        name="stream",
        compares="the streaming (litdata) training loader's images/s vs the ImageFolder loader, 224 px JPEG",
    ),
    Benchmark(
        name="gpu",
        compares="a training step: channels-last, torch.compile, EMA, JPEG loader and GPU decoding vs eager",
    ),
)

_TIME_HEADER = re.compile(r"(?:^|[\s(])(us|µs|ms|s)(?:$|[\s)/])", re.IGNORECASE)
_SCALE = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_tables(text: str, benchmark: str) -> list[Row]:
    """Rows from the markdown tables a benchmark printed, for one that has no `rows()`.

    The convention of ``bench/``: in each table the first column names the variant, the
    first data row is the anchor, and one column holds the time, its header the unit
    (``ms``, ``us`` or ``s``). A table without such a column is skipped.
    """
    found: list[Row] = []
    blocks = re.split(r"\n(?!\|)", text)
    for block in blocks:
        lines = [line.strip() for line in block.splitlines() if line.strip().startswith("|")]
        if len(lines) < 3:
            continue
        cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
        header, data = cells[0], cells[2:]
        column = next((i for i, h in enumerate(header) if i and _TIME_HEADER.search(h)), None)
        if column is None or not data:
            continue
        match = _TIME_HEADER.search(header[column])
        scale = _SCALE[match.group(1).lower()] if match else 1e-3
        times = []
        for row in data:
            number = _NUMBER.search(row[column]) if column < len(row) else None
            times.append(float(number.group()) * scale if number else None)
        if times[0] is None:
            continue
        anchor = re.sub(r"\s*\(anchor\)\s*$", "", data[0][0])
        for row, seconds in zip(data, times, strict=True):
            if seconds is None:
                continue
            found.append(
                Row(
                    benchmark=f"{benchmark}: {header[0]}" if header[0] else benchmark,
                    variant=row[0],
                    anchor=anchor,
                    seconds=seconds,
                    anchor_seconds=times[0],
                    unit="call",
                )
            )
    return found


def _call_rows(module: Any, device: str, smoke: bool, details: list[str]) -> list[Row] | None:
    """The module's `rows()`, given whatever of device, progress, details, smoke it accepts.

    None when it takes no `device` and the device is not the CPU.
    """
    parameters = inspect.signature(module.rows).parameters
    kwargs: dict[str, Any] = {}
    if "device" in parameters:
        kwargs["device"] = _effective(device, smoke)
    elif device != "cpu":
        return None
    if "progress" in parameters:
        kwargs["progress"] = lambda line: print(line, file=sys.stderr, flush=True)
    if "details" in parameters:
        kwargs["details"] = details.append
    if smoke and "smoke" in parameters:
        kwargs["smoke"] = True
    result = module.rows(**kwargs)
    if isinstance(result, tuple):
        # A benchmark may return (rows, facts): the facts are shown with its details.
        result, *facts = result
        for fact in facts:
            if isinstance(fact, dict):
                details.append("\n".join(f"{key}: {value}" for key, value in fact.items()))
    return list(result)


def _effective(device: str, smoke: bool) -> str:
    """`device`, except the CPU for a smoke run of the GPU benchmarks on a machine without one."""
    if device == "cuda" and smoke:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _worker(name: str, device: str, threads: int, smoke: bool, out: Path, one_core: bool = False) -> int:
    """Inside the child process: measure one benchmark and write its rows to `out`."""
    if one_core:
        # Before any import starts threads: every thread and child process inherits it.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if _effective(device, smoke) == "cpu":
        import torch

        torch.set_num_threads(threads)
    module = importlib.import_module(f"bench.{name}")
    details: list[str] = []
    if hasattr(module, "rows"):
        measured = _call_rows(module, device, smoke, details)
        if measured is None:
            out.write_text(json.dumps({"skipped": f"bench.{name} runs on the CPU only"}))
            return 0
        details.append(rows_table(measured))
    elif device != "cpu":
        out.write_text(json.dumps({"skipped": f"bench.{name} runs on the CPU only"}))
        return 0
    else:
        buffer = io.StringIO()
        argv = sys.argv
        sys.argv = [f"python -m bench.{name}"]
        try:
            with contextlib.redirect_stdout(buffer):
                module.main()
        finally:
            sys.argv = argv
        details.append(buffer.getvalue())
        measured = parse_tables(buffer.getvalue(), name)
    print("\n\n".join(details))
    out.write_text(json.dumps({"rows": [attrs.asdict(row) for row in measured]}))
    return 0


def _machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    where = f"{os.cpu_count()}-core CPU ({cpu})"
    if device == "cuda":
        import torch

        where = f"{torch.cuda.get_device_name(0)}, {where}"
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("torch", "lightning"))
    return f"{where}; {versions}, Python {platform.python_version()}"


def _require(device: str, smoke: bool) -> str:
    """The device the benchmarks run on: `device`, or the CPU for a smoke run without a GPU."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available() and smoke:
            print("no CUDA device: the smoke runs the GPU code paths on the CPU", file=sys.stderr)
            return "cpu"
        if not torch.cuda.is_available():
            built = torch.version.cuda or "no CUDA support"
            sys.exit(
                f"error: --device cuda: no CUDA device is available (torch {torch.__version__}, built "
                f"with {built}); run with --device cpu"
            )
    return device


def _run(benchmark: Benchmark, args: argparse.Namespace) -> tuple[list[Row], str, str | None]:
    """Run one benchmark in a child process: its rows, its own output, and why it failed."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "rows.json"
        command = [
            sys.executable,
            "-m",
            "bench",
            "--worker",
            benchmark.name,
            "--device",
            args.device,
            "--threads",
            str(args.threads),
            "--out",
            str(out),
            *(["--smoke"] if args.smoke else []),
            *(["--one-core"] if args.one_core else []),
        ]
        completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        if completed.returncode != 0 or not out.is_file():
            return [], completed.stdout, f"exit status {completed.returncode}"
        result = json.loads(out.read_text())
    if "skipped" in result:
        return [], completed.stdout, str(result["skipped"])
    return [Row(**row) for row in result["rows"]], completed.stdout, None


def main(argv: Sequence[str] | None = None) -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=f"run these: {names}")
    parser.add_argument(
        "--skip", nargs="+", choices=names, metavar="NAME", default=[], help="leave these out"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    parser.add_argument("--details", action="store_true", help="print each benchmark's own tables too")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes where offered (the epoch: the GPU code paths); figures mean nothing",
    )
    parser.add_argument(
        "--one-core",
        action="store_true",
        help="pin each benchmark (and the processes it starts) to one core: wall time without a spare core",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.device, args.threads, args.smoke, args.out, args.one_core)
    if args.list:
        for benchmark in BENCHMARKS:
            print(f"{benchmark.name:18} {benchmark.compares}")
        return 0
    ran_on = _require(args.device, args.smoke)

    chosen = [b for b in BENCHMARKS if (not args.only or b.name in args.only) and b.name not in args.skip]
    started = time.perf_counter()
    measured: list[Row] = []
    notes: list[str] = []
    outputs: list[tuple[str, str]] = []
    for benchmark in chosen:
        if importlib.util.find_spec(f"bench.{benchmark.name}") is None:
            notes.append(f"bench.{benchmark.name}: not written yet")
            continue
        print(f"bench.{benchmark.name}: {benchmark.compares} ...", file=sys.stderr, flush=True)
        clock = time.perf_counter()
        rows, output, problem = _run(benchmark, args)
        seconds = time.perf_counter() - clock
        outputs.append((benchmark.name, output))
        measured.extend(rows)
        if problem:
            notes.append(f"bench.{benchmark.name}: {problem}")
            if "exit status" in problem and output:
                print(output, file=sys.stderr)
        print(f"bench.{benchmark.name}: {seconds:.0f} s", file=sys.stderr, flush=True)
        notes.append(f"bench.{benchmark.name}: {seconds:.0f} s")

    if args.details:
        for name, output in outputs:
            print(f"## bench.{name}\n\n{output.strip()}\n")
    threads = f", {args.threads} torch thread(s)" if ran_on == "cpu" else ""
    if args.one_core:
        threads += ", every benchmark pinned to one core"
    print(f"Benchmarks on {_machine(ran_on)}{threads}\n")
    if measured:
        print(rows_table(measured))
    print()
    print("; ".join(notes) + f"; {time.perf_counter() - started:.0f} s in all")
    return 1 if any("exit status" in note for note in notes) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``harness`` command: one entry point, a subcommand per tool.

    harness train [settings.toml] [--set section.key=value ...] [--quiet | --verbose]
    harness evaluate ...      (when harness.evaluate is installed)
    harness predict MODEL.onnx IMAGE_OR_FOLDER ...
    harness export CHECKPOINT ...
    harness report RUN_DIR [--embed]
    harness replay RUN_DIR ...
    harness audit DATA [--run RUN_DIR] [--output DIR] [--fail-on KIND]
    harness tune lr [settings.toml] [--set ...]
    harness data optimize SRC DST [--workers N]
    harness sweep settings.toml --space space.toml --trials N [--jobs J] [--set ...]

Each subcommand is the tool's own command line (``harness train --help`` is
``python -m harness.run --help``), with the same arguments and exit codes; ``python -m
harness`` is the same command. The current directory comes first on ``sys.path``, as
under ``python -m``, so ``[run].plugins`` imports a plugin module beside the settings
the same way either way. A tool is imported only when its subcommand runs, so
``harness predict`` stays torch-free.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("harness.run", "train a classifier from settings (python -m harness.run)"),
    "evaluate": ("harness.evaluate", "evaluate a trained model on a data set (python -m harness.evaluate)"),
    "predict": ("harness.predict", "classify images with an exported ONNX model, torch-free"),
    "export": ("harness.export", "export a checkpoint as a parity-checked ONNX bundle"),
    "report": ("harness.report", "write a run directory's report.html"),
    "replay": ("harness.replay", "rebuild a run's pictures from its events.jsonl, without training"),
    "audit": (
        "harness.audit",
        "find duplicates, leakage across splits and likely label errors in a data set",
    ),
    "tune": ("harness.tune", "find a learning rate by a range test (harness tune lr settings.toml)"),
    "data": ("harness.data", "write an ImageFolder tree as a streamed (litdata) data set for [data].root"),
    "sweep": ("harness.sweep", "search settings with Optuna: trials as run directories, a leaderboard"),
}
"""Subcommand -> (the tool's module, whose ``main(argv)`` it runs; one line of help)."""


def _available() -> dict[str, tuple[str, str]]:
    return {
        name: (module, help)
        for name, (module, help) in SUBCOMMANDS.items()
        if importlib.util.find_spec(module) is not None
    }


def _usage(commands: dict[str, tuple[str, str]]) -> str:
    width = max(len(name) for name in commands)
    lines = [
        "usage: harness <command> [arguments]  (harness <command> --help for its own)",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {help}" for name, (_, help) in commands.items()),
    ]
    return "\n".join(lines)


def _current_directory_first() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does (not under ``-P``).

    A console script starts with its own ``bin/`` folder there instead, so without this
    ``harness train`` would not find the ``loss_spikes.py`` that ``python -m harness.run``
    finds in the same folder.
    """
    here = str(Path.cwd())
    if not sys.flags.safe_path and "" not in sys.path and here not in sys.path:
        sys.path.insert(0, here)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand named first in `argv` with the rest; its exit code, or 2 for an unknown one."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    if not args or args[0] in ("-h", "--help"):
        print(_usage(commands))
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"harness: unknown command {name!r}; one of: {', '.join(commands)}", file=sys.stderr)
        print(_usage(commands), file=sys.stderr)
        return 2
    _current_directory_first()
    tool: Callable[[Sequence[str]], int] = importlib.import_module(commands[name][0]).main
    try:
        return tool(rest)
    except SystemExit as exit:  # argparse's --help and usage errors
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)

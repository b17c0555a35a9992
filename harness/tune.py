"""Find a learning rate: ``harness tune lr settings.toml [--set section.key=value ...]``.

Runs the range test of `harness.tuning.lr_range` on the run's own data, model,
augmentation and optimiser (also under ``trainer.strategy = "ddp"``), prints the
suggested rate and the command that trains with it, and writes the curve, the suggestion
marked, in a new ``<output_dir>/<name>/lr_find_<n>/`` (see `harness.tuning.lr_files`).
No run directory and no data is changed. Exit codes: 0 done, 1 the test failed, 2 bad
settings or data.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.core.errors import HarnessError, SettingsError, report
from harness.settings import load_settings
from harness.training.terminal import quiet_libraries
from harness.tuning.lr_files import new_folder, write_range_test
from harness.tuning.lr_range import find_lr

__all__ = ["main"]


def _command(settings: Path | None, overrides: Sequence[str], lr: float) -> str:
    kept = [o for o in overrides if not o.replace(" ", "").startswith("model.lr=")]
    sets = [arg for o in (*kept, f"model.lr={lr:.3g}") for arg in ("--set", o)]
    return shlex.join(["harness", "train", *([str(settings)] if settings else []), *sets])


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit codes: 0 done, 1 the test failed, 2 bad settings or data."""
    parser = argparse.ArgumentParser(prog="python -m harness.tune", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["lr"], help="what to tune: lr, the learning rate")
    parser.add_argument(
        "settings", nargs="?", type=Path, help="settings.toml (defaults everywhere if omitted)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--steps", type=int, default=200, help="most optimizer steps of the ramp (200)")
    parser.add_argument("--min-lr", type=float, default=1e-7, help="the ramp's first rate (1e-7)")
    parser.add_argument("--max-lr", type=float, default=1.0, help="the ramp's last rate (1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.steps < 10 or not 0 < args.min_lr < args.max_lr:
            raise SettingsError(
                f"--steps {args.steps} --min-lr {args.min_lr:g} --max-lr {args.max_lr:g}: "
                "need at least 10 steps and 0 < min-lr < max-lr"
            )
        settings = load_settings(args.settings, args.overrides)
        quiet_libraries(settings.run.terminal)
        result = find_lr(settings, steps=args.steps, min_lr=args.min_lr, max_lr=args.max_lr)
        if result.rank != 0:
            return 0
        command = _command(args.settings, args.overrides, result.suggestion)
        folder = new_folder(Path(settings.run.output_dir) / settings.run.name)
        write_range_test(result, folder, command)
    except HarnessError as error:
        return report(error)
    except OSError as error:
        return report(HarnessError(f"cannot write the range test's files: {error}"))
    print(f"suggested learning rate: {result.suggestion:.3g} ({len(result.lrs)} steps, {result.stopped})")
    print(f"train with it:           {command}")
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())

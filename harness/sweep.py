"""Search settings with Optuna: ``harness sweep settings.toml --space space.toml --trials N``.

Every trial is a normal run directory ``<dir>/trial_<NNN>/version_0/`` (``--set`` values
apply to all of them); the study is ``<dir>/study.db`` (or ``--storage URL``, shared by
several machines); running the same command again resumes. ``<dir>`` (``--dir``, default
``<output_dir>/<name>_sweep``) gets ``leaderboard.csv``, ``leaderboard.html`` and
``best.toml`` after every trial. See `harness.tuning.sweep`. Exit codes: 0 done, 1 the
sweep failed, 2 bad settings, space or data (before any trial runs), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.errors import HarnessError, SettingsError, report
from harness.settings import load_settings

if TYPE_CHECKING:
    from harness.tuning.sweep import TrialOutcome
from harness.training.model import check_monitor

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.sweep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "settings", type=Path, nargs="?", help="settings.toml (defaults everywhere if omitted)"
    )
    parser.add_argument(
        "--space", type=Path, required=True, help='a TOML file: "model.lr" = {log_uniform = [1e-4, 1e-2]}'
    )
    parser.add_argument("--trials", type=int, required=True, help="trials to finish (all processes together)")
    parser.add_argument("--jobs", type=int, default=1, help="trials run at once, each in its own process (1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--dir", type=Path, help="the sweep's folder (default <output_dir>/<name>_sweep)")
    parser.add_argument(
        "--storage", help="an Optuna RDB URL shared by several machines (default <dir>/study.db)"
    )
    parser.add_argument("--study-name", default="sweep", help="the study's name in the storage (sweep)")
    parser.add_argument(
        "--sampler",
        choices=["tpe", "random", "grid"],
        default="tpe",
        help="tpe (default), random, or grid (every choice)",
    )
    parser.add_argument(
        "--pruner", choices=["median", "none"], default="median", help="median (default) or none"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit codes: 0 done, 1 the sweep failed, 2 bad settings or space, 130 interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("harness").setLevel(logging.INFO)
    try:
        from harness.tuning.space import load_space

        if args.trials < 1 or args.jobs < 1:
            raise SettingsError(f"--trials {args.trials} --jobs {args.jobs}: both must be at least 1")
        settings = load_settings(args.settings, args.overrides)
        space = load_space(args.space, args.settings, args.overrides)
        if args.sampler == "grid" and any(d.kind != "choice" for d in space.dimensions):
            raise SettingsError(f"{args.space}: --sampler grid needs every key to be a choice")
        monitor, mode = settings.checkpoint.monitor, settings.checkpoint.mode
        check_monitor(monitor, mode)
        try:
            from harness.tuning.sweep import SweepPlan, run_sweep
        except ModuleNotFoundError as missing:
            raise SettingsError(
                f"harness sweep needs {missing.name}: pip install 'harness[optuna]'"
            ) from None
        folder = args.dir or Path(settings.run.output_dir) / f"{settings.run.name}_sweep"
        plan = SweepPlan(
            settings=args.settings,
            overrides=tuple(args.overrides),
            space=space,
            trials=args.trials,
            jobs=args.jobs,
            folder=folder,
            storage=args.storage,
            study_name=args.study_name,
            sampler=args.sampler,
            pruner=args.pruner,
            monitor=monitor,
            mode=mode,
            seed=settings.run.seed,
        )
        rows = run_sweep(plan, progress=_line)
    except HarnessError as error:
        return report(error)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume the sweep", file=sys.stderr)
        return 130
    best = next((row for row in rows if row.status == "completed"), None)
    if best is not None:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        print(f"best: trial {best.number}, {monitor} = {best.value:.4f} ({params})")
        print(f"train it again: harness train {folder / 'best.toml'}")
    print(folder / "leaderboard.html")
    return 0


def _line(outcome: TrialOutcome, done: int, total: int) -> None:
    value = "" if outcome.value is None else f" {outcome.value:.4f}"
    why = f" ({outcome.error})" if outcome.error and outcome.status != "completed" else ""
    print(
        f"[{done}/{total}] trial {outcome.number} {outcome.status}{value} in {outcome.duration_s:.0f} s{why}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

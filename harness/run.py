"""Train a classifier: ``python -m harness.run settings.toml [--set section.key=value ...]``.

Reads and validates the settings (every mistake ends here with exit code 2, before
anything is written), then runs `harness.training.fit.run`. The last line printed is the
run directory. Exit codes: 0 done (also when a subscriber stopped the run early, which it
says), 1 the run failed, 2 bad settings or data, 130
interrupted (Ctrl-C; ``summary.json`` holds the resume command).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.core.errors import HarnessError, report
from harness.settings import load_settings
from harness.training.fit import run
from harness.training.run_dir import AlreadyComplete
from harness.training.terminal import quiet_libraries

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit codes: 0 done, 1 the run failed, 2 bad settings or data."""
    parser = argparse.ArgumentParser(prog="python -m harness.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "settings", nargs="?", type=Path, help="settings.toml (defaults everywhere if omitted)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, validated like the file (repeatable)",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "--quiet", action="store_true", help="print warnings and the run directory ([run].terminal=quiet)"
    )
    loudness.add_argument(
        "--verbose",
        action="store_true",
        help="print everything: Lightning's messages, every sampler table ([run].terminal=verbose)",
    )
    args = parser.parse_args(argv)
    if args.quiet or args.verbose:
        args.overrides.append(f"run.terminal={'quiet' if args.quiet else 'verbose'}")
    # The harness speaks at INFO; libraries (onnxscript's passes, say) only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("harness").setLevel(logging.INFO)
    logging.getLogger("subscribers").setLevel(logging.INFO)
    try:
        settings = load_settings(args.settings, args.overrides)
        quiet_libraries(settings.run.terminal)
        result = run(settings)
    except AlreadyComplete as done:
        print(done, file=sys.stderr)
        return 0
    except HarnessError as error:
        return report(error)
    except SystemExit:
        print("interrupted: see summary.json in the run directory for the resume command", file=sys.stderr)
        return 130
    stop = result.summary.stop
    if stop is not None:
        print(
            f"stopped at step {stop.global_step} as a subscriber asked: {stop.reason}; the run "
            "is complete as it stands (checkpoints, export, summary.json): no resume is needed",
            file=sys.stderr,
        )
    print(result.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rebuild a run's pictures from its event log: ``python -m harness.replay RUN_DIR``.

Reads ``RUN_DIR/events.jsonl`` and publishes its tensor-free events on a fresh bus to
every subscriber the run had enabled whose spec is `replayable` (the history plots, say)
and to any ``--plugin package.module:NAME``, with the run's own settings, writing into
``RUN_DIR/replay/`` unless ``--output`` says otherwise. Nothing is trained, and the run
directory itself is left as it was; a new plot subscriber can be tried on a real run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.core.context import RunContext
from harness.core.errors import DataError, HarnessError, SubscriberError, report
from harness.core.layout import RunLayout
from harness.io.artifacts import read_label_map
from harness.io.record import read_events
from harness.settings import load_settings, resolve_plugin
from harness.training.assembly import assemble

__all__ = ["main", "replay"]


def replay(run_dir: Path, output: Path | None = None, plugins: Sequence[str] = ()) -> RunContext:
    """Publish the events logged in `run_dir` to fresh subscribers writing under `output`."""
    layout = RunLayout(run_dir)
    log = layout.events
    if not log.is_file():
        raise DataError(f"{run_dir}: no {log.name} here (was [run].record_events off?)")
    # The run's own plugins need not be importable here: only the --plugin ones are loaded.
    asked = {resolve_plugin(target, "--plugin").name for target in plugins}
    settings = load_settings(layout.settings, plugins=plugins, other_tables="ignore")
    output = output or layout.replay
    output.mkdir(parents=True, exist_ok=True)
    assembly = assemble(
        settings,
        run_dir=output,
        class_names=read_label_map(run_dir),
        select=lambda name, spec: spec.replayable or name in asked,
    )
    context = assembly.context
    for event in read_events(log):
        context.epoch, context.global_step = event.epoch, event.global_step
        assembly.bus.publish(event)
    if assembly.bus.failures:  # an isolated subscriber went on without it: the replay failed all the same
        failure = assembly.bus.failures[0]
        raise SubscriberError(failure.subscriber, failure.event, failure.step, failure.error)
    return context


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit codes: 0 done, 1 a subscriber failed, 2 bad input."""
    parser = argparse.ArgumentParser(prog="python -m harness.replay", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--output", type=Path, default=None, help="where to write (default RUN_DIR/replay)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE:NAME")
    args = parser.parse_args(argv)
    try:
        context = replay(args.run_dir, args.output, args.plugin)
    except HarnessError as error:
        return report(error)
    for name, path in sorted(context.artifacts.items()):
        print(f"{name}: {context.run_dir / path}")
    print(context.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

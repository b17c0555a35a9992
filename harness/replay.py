"""Rebuild a run's pictures from its event log: ``python -m harness.replay RUN_DIR``.

Reads ``RUN_DIR/events.jsonl`` and publishes its tensor-free events on a fresh bus to
the plots subscriber (and to any ``--plugin package.module:Class``), writing into
``RUN_DIR/replay/`` unless ``--output`` says otherwise. Nothing is trained, and the run
directory itself is left as it was; a new plot subscriber can be tried on a real run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.artifacts import read_label_map
from harness.bus import Bus, Subscriber
from harness.context import Preprocessing, RunContext
from harness.errors import HarnessError
from harness.record import EVENTS_FILE, read_events
from harness.settings import load_settings

__all__ = ["main", "replay"]


def replay(run_dir: Path, output: Path | None = None, plugins: Sequence[str] = ()) -> RunContext:
    """Publish the events logged in `run_dir` to fresh subscribers writing under `output`."""
    from harness.run import _import  # the run's plugin importer, with its error messages
    from subscribers.plots import Plots

    log = run_dir / EVENTS_FILE
    if not log.is_file():
        raise HarnessError(f"{run_dir}: no {EVENTS_FILE} here (was [run].record_events off?)")
    settings = load_settings(run_dir / "settings.toml")
    output = output or run_dir / "replay"
    output.mkdir(parents=True, exist_ok=True)
    context = RunContext(
        run_dir=output,
        class_names=tuple(read_label_map(run_dir)),
        preprocessing=Preprocessing(image_size=settings.data.image_size),
        monitor=settings.checkpoint.monitor,
    )
    bus = Bus()
    subscribers: list[Subscriber] = [Plots(context, settings.subscribers.plots)]
    subscribers += [_import(target, "--plugin")(context) for target in plugins]
    for subscriber in subscribers:
        bus.attach(subscriber)
    for event in read_events(log):
        context.epoch, context.global_step = event.epoch, event.global_step
        bus.publish(event)
    return context


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.replay", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--output", type=Path, default=None, help="where to write (default RUN_DIR/replay)")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE:CLASS")
    args = parser.parse_args(argv)
    try:
        context = replay(args.run_dir, args.output, args.plugin)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, path in sorted(context.artifacts.items()):
        print(f"{name}: {context.run_dir / path}")
    print(context.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data-set tools: ``harness data optimize SRC DST [--workers N]``.

``optimize`` turns an ImageFolder tree into a streamed data set (`harness.io.stream`):
one litdata folder per split, the label map and the list of samples beside them. The tree
is read exactly as training reads it (`harness.training.data.scan`: the same split
folders, the same check of every file), so an unreadable image is named before anything
is written (exit 2), or with ``--on-corrupt skip`` left out and named by every run that
trains from DST; never found mid-epoch. A tree without split folders is split by
``--val-fraction`` and ``--seed``, as a run would split it; each split is written in an
order shuffled by ``--seed`` (litdata shuffles chunks and a window of items, not a split).
The files' encoded bytes are stored (the chunks stay the size of the files) and decoded
when read. DST is a new local
folder, written beside itself and renamed when complete; copy it to an object store
afterwards (``s3://...``) and name that in ``[data].root``.

Exit codes: 0 done, 1 another harness error, 2 bad input (the message names it).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness.core.errors import DataError, HarnessError, report

__all__ = ["main", "optimize"]


def _for_the_command_line(error: DataError, source: Path) -> DataError:
    """`error` from the training scan, its advice about settings given as this command's flags."""
    text = str(error)
    for setting, flag in (
        ('set [data].on_corrupt = "skip"', "pass --on-corrupt skip"),
        ('set [data].unknown_classes = "skip"', "pass --unknown-classes skip"),
        ("raise [data].val_fraction", "raise --val-fraction"),
        (f"[data].root = {str(source)!r}", f"SRC {str(source)!r}"),
    ):
        text = text.replace(setting, flag)
    return DataError(text)


def optimize(
    source: Path,
    destination: Path,
    *,
    workers: int = 4,
    on_corrupt: str = "stop",
    unknown_classes: str = "stop",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, int]:
    """Write the tree at `source` as a streamed data set at `destination`; images per split."""
    if "://" in str(destination):
        raise DataError(
            f"DST {str(destination)!r}: optimize writes a local folder; copy it to the store after"
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DataError(
            f"DST {str(destination)!r}: already exists and is not an empty folder; name a new one"
        )
    from harness.io.stream import require_litdata, write_stream
    from harness.settings import DataSettings
    from harness.training.data import scan

    require_litdata("harness data optimize")
    source = source.expanduser().resolve()
    try:
        settings = DataSettings(
            root=str(source),
            on_corrupt=on_corrupt,  # type: ignore[arg-type]
            unknown_classes=unknown_classes,  # type: ignore[arg-type]
            val_fraction=val_fraction,
        )
    except ValueError as error:
        raise DataError(f"--val-fraction {val_fraction}: {error}") from None
    try:
        info, classes = scan(settings, seed)
    except DataError as error:
        raise _for_the_command_line(error, source) from None
    for path in info.skipped:
        print(f"skipped, unreadable: {path}", file=sys.stderr)
    if destination.is_dir():
        destination.rmdir()  # empty: replaced by the complete folder
    return write_stream(
        info, classes, source, destination.expanduser().absolute(), workers=workers, seed=seed
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m harness.data", description="Data-set tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    optimizing = commands.add_parser(
        "optimize",
        help="an ImageFolder tree (with its splits) as a litdata data set for [data].root",
        description="Write an ImageFolder tree as a streamed (litdata) data set, every image checked.",
        epilog="Exit codes: 0 done, 1 another harness error, 2 bad input (the message names it).",
    )
    optimizing.add_argument("source", type=Path, metavar="SRC", help="an ImageFolder tree")
    optimizing.add_argument("destination", type=Path, metavar="DST", help="a new local folder")
    optimizing.add_argument("--workers", type=int, default=4, help="threads reading the files (default 4)")
    optimizing.add_argument(
        "--on-corrupt", choices=("stop", "skip"), default="stop", help="an unreadable image: stop, or skip it"
    )
    optimizing.add_argument(
        "--unknown-classes",
        choices=("stop", "skip"),
        default="stop",
        help="class folders of val/ or test/ that train/ lacks: stop, or leave them out",
    )
    optimizing.add_argument(
        "--val-fraction", type=float, default=0.2, help="held out for validation without split folders"
    )
    optimizing.add_argument("--seed", type=int, default=0, help="the seed of that split (default 0)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be a positive integer, got {args.workers}")
    started = time.monotonic()
    try:
        written = optimize(
            args.source,
            args.destination,
            workers=args.workers,
            on_corrupt=args.on_corrupt,
            unknown_classes=args.unknown_classes,
            val_fraction=args.val_fraction,
            seed=args.seed,
        )
    except HarnessError as error:
        return report(error)
    counts = ", ".join(f"{split} {count}" for split, count in written.items())
    print(f"{args.destination}: {counts} images, in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

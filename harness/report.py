"""Write the HTML page of a run directory: ``python -m harness.report RUN_DIR [--embed]``.

Every run writes ``report.html`` itself (the ``report`` subscriber, at each epoch end and
when it ends); this command writes it again, for any run directory, finished or not.
The page is `harness.io.report_page`'s: status, pictures, tables, settings and files.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from harness.core.errors import DataError, HarnessError, report
from harness.core.layout import RunLayout
from harness.io.report_page import find_pictures, render_report, write_report

__all__ = ["find_pictures", "main", "render_report", "write_report"]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit codes: 0 written, 1 not writable, 2 not a directory."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Write RUN_DIR/report.html: status, pictures, tables, settings, files.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory, as written by harness.run")
    parser.add_argument("--embed", action="store_true", help="put the pictures in the page (base64)")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        return report(DataError(f"{run_dir}: not a directory (expected a run directory)"))
    try:
        page = write_report(run_dir, embed=args.embed)
    except OSError as error:
        return report(
            HarnessError(f"{RunLayout(run_dir).report}: cannot write the report ({error.strerror})")
        )
    print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

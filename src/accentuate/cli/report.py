"""``accentuate report``: (re)build ``report.html`` for an existing output folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from textwrap import fill

from .common import UsageError

EXAMPLE = """\
examples:
  accentuate report accentuate-runs/20250101-120000
  accentuate report runs/sweep runs/explain

Each command already writes report.html in its output folder when Jinja2 is installed
(pip install "accentuate[report]"); this rebuilds it, e.g. after a resumed run or in a
folder written before the report existed. Open the file in a browser: it works offline
from the disk and loads nothing from anywhere else. Exit status: 0 written, 2 no such
folder, no record in it, or Jinja2 missing."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write report.html for an output folder",
        description=fill(
            "Write report.html in each DIR (an output folder of run, demo, explain, pathway, sweep, "
            "latent, sanity, concepts or study): a page of every pair with its seed, accentuation and opacity, the "
            "numbers before and after, the history and the files, or the analysis's plots and "
            "tables, with the command, settings, versions and timings.", 88),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="output folders")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    for d in args.dirs:
        if not Path(d).is_dir():
            raise UsageError(f"no such folder {d!r}; give an output folder of accentuate (e.g. accentuate-runs/...)")
    for d in args.dirs:
        path = write_report(d)
        if not args.quiet:
            print(f"report: {path}")
            print(f"  open {path.resolve().as_uri()}")
    return 0

"""``accentuate evaluate``: judge a finished output folder with other models."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from textwrap import fill

from .command import add_judge_option, print_judges
from .common import UsageError

EXAMPLE = """\
examples:
  accentuate evaluate runs/fish --judge mobilenet_v2
  accentuate evaluate runs/fish --judge mobilenet_v2 efficientnet_lite1 efficientnet_lite2

Shows every pair of DIR (an output folder of run or explain) to each judge: the seed and the
accentuation, each through the judge's own preprocessing. Per pair and judge, the target's
rank and probability before and after, and the change of the judge's features (1 - cosine of
its pooled features at the layer that feeds its classifier) go to run.json ("judges") and
report.html. A judge that is the model accentuated (its name or its weights) is refused.
The seeds are read from their recorded paths; a seed no longer there leaves its pairs without
a "before". Exit status: 0 done, 2 bad usage (no run.json, a judge that is the model)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="judge a finished run with other models",
        description=fill(
            "Would another model see it too? Show every pair of DIR, before and after, to the --judge models "
            "and record the target's rank and probability on each, and the change of its features, in "
            "run.json and report.html.", 88),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", metavar="DIR", help="an output folder of accentuate run or explain")
    add_judge_option(p)
    p.add_argument("--batch", type=int, default=16, metavar="B", help="images per judge pass (default 16)")
    p.set_defaults(func=run)


def _run_model(folder: Path) -> object | None:
    """The model DIR's run accentuated, loaded by the name run.json gives (its weights refuse a
    judge that has them; its class names find classes in judges with other names); ``None`` when it
    cannot be loaded (judges are then checked by name)."""
    import json

    from ..models import load

    try:
        m = json.loads((folder / "run.json").read_text("utf-8")).get("model") or {}
    except (OSError, ValueError):
        return None
    name = m.get("arg") or m.get("name")
    if not name:
        return None
    try:
        return load(str(name))
    except Exception as e:  # noqa: BLE001 (a model of a factory no longer importable: judged by name)
        warnings.warn(f"the run's model {name!r} cannot be loaded here ({type(e).__name__}: {e}); judges are "
                      "checked against its name only", stacklevel=2)
        return None


def run(args: argparse.Namespace) -> int:
    from ..report import maybe_write_report
    from ..runs.judged import judge_folder

    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"no such folder {args.dir!r}; give an output folder of accentuate run or explain")
    if not args.judge:
        raise UsageError("no judge given; add --judge MODEL [MODEL ...], e.g. --judge mobilenet_v2")
    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1; got {args.batch}")
    if not (folder / "run.json").is_file():
        raise UsageError(f"no run.json in {args.dir!r}; give an output folder of accentuate run or explain")
    model = _run_model(folder)
    path, section = judge_folder(folder, args.judge, model=model, batch=args.batch)  # type: ignore[arg-type]
    page = maybe_write_report(folder)
    if not args.quiet:
        print(f"judged {len({(r['seed'], r['target']) for r in section['pairs']})} pair(s) of {folder}")
        print_judges(section)
        print(f"record: {path}")
        if page is not None:
            print(f"report: {page}")
    return 0

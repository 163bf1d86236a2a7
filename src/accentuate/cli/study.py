"""``accentuate study build | serve | page | observe | analyze``: a human extrapolation study of a model's
features, as a kit a lab runs (:mod:`accentuate.study`; docs/study.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from textwrap import fill
from typing import Any

from ..errors import UsageError
from .common import (
    accentuation_kwargs,
    add_accentuation_options,
    add_global_options,
    add_model_options,
    load_model_from_args,
)

__all__ = ["register"]

EXAMPLE = """\
examples:
  accentuate study build photos/ --features classes:4 --trials 6 --out study
  accentuate study build photos/ --features classes:3 channels:blocks.14:2 --steps 20 --crops 4 --canvas 256
  accentuate study build photos/ --model dinov2_vits14_focus --features directions:layernorm:4
  accentuate study observe study --model dinov2_vits14_focus      (pilot: a model answers the trials)
  accentuate study serve study --port 8000                         (lab machines: saves each participant)
  accentuate study page study --prolific-code C1A2B3C4             (online: back to Prolific at the end)
  accentuate study analyze study                                   (accuracy per condition, report.html)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``study`` subcommand and its five commands."""
    p = subparsers.add_parser(
        "study", help="a human study of the model's features: build it, serve it, pilot it, analyze it",
        description=fill("Two-alternative forced choice (Borowski et al. 2021): people shown reference images of a "
                         "feature pick the query photo on which it is stronger. Conditions: accentuations, "
                         "noise-seeded feature visualizations, natural photos, no references.", 88),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="study_command", metavar="STEP", title="steps")
    _build_parser(sub)
    s = sub.add_parser("serve", help="serve the study's page on this machine and save each participant's file",
                       description="Serve DIR's index.html on a local port; each finished participant's data is "
                       "saved under DIR/responses/ (the page keeps it and sends it again until the server confirms "
                       "the save). Online, put it behind an HTTPS proxy (docs/study.md). -q: no log lines.")
    s.add_argument("directory", metavar="DIR", help="the study folder")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.set_defaults(func=_serve)
    g = sub.add_parser("page", help="write the study's page again (after editing instructions.md), or set the "
                       "Prolific codes", description="Write DIR/index.html from DIR/trials.json and "
                       "DIR/instructions.md; with --prolific-code, the end of the study sends each participant "
                       "whose data the server saved to Prolific's completion URL.")
    g.add_argument("directory", metavar="DIR", help="the study folder")
    _prolific_options(g)
    g.add_argument("--no-prolific", action="store_true", help="remove the Prolific codes")
    g.set_defaults(func=_page)
    o = sub.add_parser("observe", help="answer the trials with a model (a pilot before recruiting anyone)",
                       description=fill("A model observer picks the query whose representation is more like the "
                                        "strong references than the weak ones; written to DIR/observers/.", 88))
    o.add_argument("directory", metavar="DIR", help="the study folder")
    o.add_argument("--layer", help="the observer model's layer (default: its like layer)")
    o.add_argument("--name", help="the observer's name in the tables (default: the model's)")
    add_model_options(o)
    o.set_defaults(func=_observe)
    a = sub.add_parser("analyze", help="accuracy per condition and feature kind, with bootstrap intervals",
                       description="Read DIR/responses/ (or the files given) and DIR/observers/, write study.md, "
                       "study.json, study.png and report.html into DIR.")
    a.add_argument("directory", metavar="DIR", help="the study folder")
    a.add_argument("responses", nargs="*", metavar="FILE", help="response files (default: DIR/responses/*)")
    a.add_argument("--catch-min", type=float, default=0.75, metavar="F",
                   help="exclude a participant below this accuracy on the catch trials (default 0.75)")
    a.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates (default 2000)")
    a.set_defaults(func=_analyze)
    for q in (s, g, o, a):
        add_global_options(q)
    p.set_defaults(func=lambda args: _missing_step(p))


def _missing_step(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _build_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "build", help="pick features and query pairs from the photos, make the references, write the page",
        description=fill("Pick features and query pairs by the model's own responses on the photos, make every "
                         "reference image with the engine (resumable: rerun the same command), and write "
                         "DIR/trials.json, DIR/design.json, DIR/images/ and DIR/index.html.", 88),
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    b.add_argument("photos", nargs="+", metavar="PHOTOS", help="folders (with their subfolders) or files")
    b.add_argument("--features", nargs="+", metavar="F",
                   help="classes:N, channels:LAYER:N, directions:LAYER:N, or targets as for run --target "
                        "(default classes:4, or directions at the last layer for a model without classes)")
    from ..study import CONDITIONS

    b.add_argument("--conditions", nargs="+", default=list(CONDITIONS), metavar="C",
                   help=f"of {', '.join(CONDITIONS)} (default: all)")
    b.add_argument("--trials", type=int, default=6, metavar="N",
                   help="query pairs per feature, each shown in every condition (default 6)")
    b.add_argument("--references", type=int, default=3, metavar="K",
                   help="strong and weak references per feature and condition (default 3 of each)")
    b.add_argument("--catch", type=int, default=1, metavar="N",
                   help="catch trials per feature and condition with references (default 1)")
    b.add_argument("--title", help="the page's title")
    b.add_argument("--show-feature-names", action="store_true", help="show each feature's name above its references")
    b.add_argument("--keys", nargs=2, default=["f", "j"], metavar=("LEFT", "RIGHT"),
                   help="response keys (default f j)")
    _prolific_options(b)
    add_model_options(b)
    add_accentuation_options(b)
    b.set_defaults(func=_build)


def _prolific_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prolific-code", metavar="CODE",
                   help="Prolific's completion code: once the server has saved a participant's data, the page "
                        "sends them to Prolific's completion URL with it (kept off the page)")
    p.add_argument("--no-consent-code", metavar="CODE",
                   help="with --prolific-code: the Prolific code for a participant who declines consent")


def _features(args: argparse.Namespace, model: Any) -> list[Any] | None:
    if not args.features:
        return None
    from ..objectives import parse_target
    from ..study.design import is_request

    return [f if is_request(f) else (f, parse_target(f, model)) for f in args.features]


def _build(args: argparse.Namespace) -> int:
    from ..study import build

    if not args.out:
        raise UsageError("give the study's folder with --out DIR")
    if args.until is not None:
        raise UsageError("--until stops an accentuation at a class; a study's references are made to a fixed "
                         "number of steps: leave --until out")
    from ..study.page import check_prolific

    check_prolific(args.prolific_code, args.no_consent_code)  # before the long part
    kw = accentuation_kwargs(args)
    seed = kw.pop("seed", 0)
    kw.pop("until", None)  # --preview's stop is for classes
    started = time.perf_counter()
    for p in args.photos:  # a wrong path fails before the model loads
        if not Path(p).exists():
            raise UsageError(f"no such file or folder {p!r}; check the path")
    model = load_model_from_args(args)
    try:
        study = build(model, args.photos, args.out, features=_features(args, model), conditions=args.conditions,
                      trials=args.trials, references=args.references, catch=args.catch, seed=seed, title=args.title,
                      show_feature_names=args.show_feature_names, keys=tuple(args.keys), progress=not args.quiet,
                      prolific_code=args.prolific_code, no_consent_code=args.no_consent_code, **kw)
    except KeyboardInterrupt:
        kept = len(list((Path(args.out) / "work").glob("*/key.json")))
        print(f"accentuate: study build interrupted; {kept} finished engine run(s) are kept in "
              f"{Path(args.out) / 'work'}: run the same command to go on", file=sys.stderr)
        raise
    if not args.quiet:
        made = sum(1 for r in study.runs.values() if not r["read_back"])
        print(f"study {study.study_id}: {len(study.trials)} trials ({sum(t['catch'] for t in study.trials)} catch) over "
              f"{len(study.doc['features'])} feature(s) x {len(study.doc['conditions'])} condition(s); "
              f"{made} engine run(s) made, {len(study.runs) - made} read back; {time.perf_counter() - started:.0f} s")
        print(f"page: {Path(args.out) / 'index.html'} (open it, or `accentuate study serve {args.out}`)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..study.serve import serve

    serve(args.directory, host=args.host, port=args.port, quiet=args.quiet)
    return 0


def _page(args: argparse.Namespace) -> int:
    from ..study.page import read_prolific, set_prolific, write_page

    if args.no_prolific and (args.prolific_code or args.no_consent_code):
        raise UsageError("--no-prolific removes the Prolific codes: leave out --prolific-code and --no-consent-code")
    if args.no_prolific:
        set_prolific(args.directory, None)
    path = write_page(args.directory, prolific_code=args.prolific_code, no_consent_code=args.no_consent_code)
    if not args.quiet:
        codes = read_prolific(args.directory)
        prolific = ("Prolific: completion code " + str(codes["completion_code"]) + (
            f", no-consent code {codes['no_consent_code']}" if codes["no_consent_code"] else "") if codes
            else "no Prolific codes")
        print(f"page: {path} ({prolific})")
    return 0


def _observe(args: argparse.Namespace) -> int:
    from ..study import observe

    model = load_model_from_args(args)
    path = observe(args.directory, model, layer=args.layer, name=args.name)
    if not args.quiet:
        print(f"observer answers: {path}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from ..report.build import maybe_write_report
    from ..study import analyze

    result = analyze(args.directory, args.responses or None, catch_min=args.catch_min, replicates=args.replicates)
    report = maybe_write_report(args.directory)
    if not args.quiet:
        print(result.to_markdown())
        print(f"wrote study.md, study.json{', study.png' if (Path(args.directory) / 'study.png').exists() else ''}"
              f"{' and report.html' if report else ''} in {args.directory}")
    return 0

"""``accentuate demo``: the main job on a bundled photo, to see what accentuate does."""

from __future__ import annotations

import argparse
from textwrap import fill

from ..photos import photo
from ..runs import execute
from .command import Command, add_run_options, finish
from .common import add_accentuation_options, add_model_options

DEMO_PHOTO = "chelsea"
DEMO_TARGETS = ("tiger cat", "goldfish")

EXAMPLE = f"""\
examples:
  accentuate demo
  accentuate demo --preview --out demo-run    # a quick first look (256-pixel canvas, 8 crops)

Accentuates the bundled photo '{DEMO_PHOTO}' (a cat) toward {' and '.join(repr(t) for t in DEMO_TARGETS)}
with the embedded model and its default settings (a few minutes on a laptop CPU), then
prints where the pictures are. The same as:
  accentuate run PHOTO --target {' '.join(repr(t) for t in DEMO_TARGETS)}"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="accentuate a bundled photo to see what accentuate does",
        description=fill(
            "Run the main job on a bundled photo with the embedded model: accentuate "
            f"'{DEMO_PHOTO}' toward {len(DEMO_TARGETS)} ImageNet classes and say where the results are.",
            88,
        ),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    add_accentuation_options(p)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cmd = Command(args, "demo")
    targets = cmd.targets(DEMO_TARGETS)
    settings = cmd.settings(targets)
    images = cmd.images([photo(DEMO_PHOTO)], settings)
    p = cmd.plan(settings, images, targets)
    status = finish(p, execute(p))
    if status == 0 and not args.quiet:
        print("next: open the contact sheet and the *_figure.png files; then try your own photo:")
        print("  accentuate run YOUR_PHOTO.jpg --target \"tiger cat\"")
        print("  accentuate explain YOUR_PHOTO.jpg --top 3")
    return status

"""``accentuate layers``: the model's layer names and output shapes."""

from __future__ import annotations

import argparse
from textwrap import fill
import sys

from .common import add_model_options, load_model_from_args

EXAMPLE = """\
examples:
  accentuate layers
  accentuate layers --grep blocks.5
  accentuate layers --model torchvision:resnet50 --depth 1

Use a name as --reg-layer, or as a target: LAYER:CHANNEL (a channel's mean) or
LAYER:CHANNEL@Y,X (one neuron; Y, X index the layer's grid)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "layers", help="list layer names and output shapes",
        description=fill(
            "List the model's hookable layers (named_modules() paths) in execution order, "
            "with the output shape of each for one input of the model's size (its spec's, else the "
            "size its Hugging Face or timm config declares, else 224 x 224).",
            88,
        ),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    p.add_argument("--grep", metavar="TEXT", help="only layers whose name contains TEXT")
    p.add_argument("--depth", type=int, metavar="D",
                   help="only names with at most D dots + 1 parts (1: top-level blocks)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hooks import layers
    from ..spec import spec_of

    model = load_model_from_args(args)
    spec = spec_of(model)  # its own, else what the model declares (Hugging Face / timm config)
    rows = layers(model)
    if args.grep:
        rows = [(n, s) for n, s in rows if args.grep in n]
    if args.depth is not None:
        rows = [(n, s) for n, s in rows if n.count(".") < max(1, args.depth)]
    width = max((len(n) for n, _ in rows), default=5)
    reg = spec.reg_layer
    out = sys.stdout
    size = spec.input_size
    print(f"{'layer':<{width}}  output shape (input 1 x 3 x {size[0]} x {size[1]})", file=out)
    for name, shape in rows:
        mark = "  <- default --reg-layer" if name == reg else ""
        print(f"{name:<{width}}  {' x '.join(map(str, shape))}{mark}", file=out)
    if not rows:
        print("(no layers match)", file=sys.stderr)
    return 0

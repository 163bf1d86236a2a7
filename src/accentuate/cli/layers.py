"""``accentuate layers``: the model's layer names and output shapes."""

from __future__ import annotations

import argparse
import sys
from textwrap import fill

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
            "List the model's hookable layers (named_modules() paths) in the order their outputs "
            "complete, with the output shape of each for one input of the model's size (its spec's, else "
            "the size its Hugging Face or timm config declares, else 224 x 224) and its layout: nchw "
            "CxHxW (conv), nhwc (channels-last stage), tokens P+HxW xC (P leading class/register tokens "
            "before an HxW patch grid), or vector C.",
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
    import warnings

    from ..hooks import ModelRunner
    from ..spec import resolve_spec

    model = load_model_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shapes do not depend on the assumed normalization
        spec = resolve_spec(model)
    runner = ModelRunner(model, spec)
    rows = runner.trace()
    reg = runner.default_reg_layer()  # the spec's, else the stated rule's choice (e.g. for a ViT)
    if args.grep:
        rows = [r for r in rows if args.grep in r.name]
    if args.depth is not None:
        rows = [r for r in rows if r.name.count(".") < max(1, args.depth)]
    width = max((len(r.name) for r in rows), default=5)
    out = sys.stdout
    size = spec.input_size
    shapes = [" x ".join(map(str, r.shape)) for r in rows]
    sw = max((len(s) for s in shapes), default=12)
    print(f"{'layer':<{width}}  {'output shape':<{sw}}  layout (input 1 x 3 x {size[0]} x {size[1]})", file=out)
    for r, shape in zip(rows, shapes):
        mark = "  <- default --reg-layer" if r.name == reg else ""
        lay = str(r.layout) if r.layout is not None else "-"
        print(f"{r.name:<{width}}  {shape:<{sw}}  {lay}{mark}", file=out)
    if not rows:
        print("(no layers match)", file=sys.stderr)
    return 0

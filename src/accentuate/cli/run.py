"""``accentuate run``: accentuate each image toward each target."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from textwrap import fill

from ..images import IMAGE_SUFFIXES
from ..outputs.record import TargetInfo
from ..spec import resolve_spec
from .common import (
    UsageError,
    accentuation_kwargs,
    add_accentuation_options,
    add_model_options,
    load_model_from_args,
    output_dir,
    parse_target,
)
from .runner import Plan, add_run_options, build_settings, check_run_options, execute, expand_paths, load_images
from .worklist import check_manifest_images, read_manifest, resolve_manifest

EXAMPLE = """\
examples:
  accentuate run cat.jpg --target goldfish
  accentuate run photos/ --target goldfish --out runs/fish      (every image in a folder)
  accentuate run cat.jpg dog.jpg --target "tiger cat" 207 --steps 80 --out runs/pets
  accentuate run cat.jpg --target blocks.5:20 blocks.5:20@7,7     (a channel, a neuron)
  accentuate run cat.jpg --target goldfish --model mymodels:build  (your factory)
  accentuate run --manifest pairs.csv --out runs/big                (a work list)
  torchrun --nproc-per-node 4 -m accentuate run --manifest pairs.csv --out runs/big

A manifest is a CSV with the header image,target and optional columns lam, steps,
reg_layer, until (empty cells: the run's values), or JSON Lines with the same fields;
paths are relative to the manifest. Under torchrun the ranks share the batches and
rank 0 writes the one run.json (docs/cli.md, "Scaling out").

Targets: a class name (case-insensitive; `accentuate classes QUERY` searches them), a
class index, LAYER:CHANNEL, or LAYER:CHANNEL@Y,X (`accentuate layers` lists layers).
A file in a folder that cannot be read is skipped with a warning (listed in run.json).
Rerunning with the same --out skips pairs that are complete. Exit status: 0 done,
1 failed, 2 bad usage, 130 interrupted (Ctrl-C keeps what is finished; 143 for SIGTERM)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="accentuate images toward targets",
        description=fill(
            "Accentuate each IMAGE toward each target: change the photo so the target "
            "(a class logit, a channel or a neuron) rises while the model's activations at the "
            "regularization layer stay close to the photo's. Writes per pair a PNG, an RGBA PNG "
            "(alpha = where the target's gradient went), a figure and an animation, plus a "
            "contact sheet and run.json.",
            88,
        ),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="seed image files or folders of them (one or more)")
    p.add_argument("--target", "-t", nargs="+", action="extend", metavar="T",
                   help="class name, class index, LAYER:CHANNEL or LAYER:CHANNEL@Y,X (several allowed)")
    p.add_argument("--manifest", metavar="FILE",
                   help="a work list instead of IMAGEs and --target: CSV (image,target[,lam,steps,reg_layer,until]) "
                   "or JSON Lines; paths relative to it")
    add_model_options(p)
    add_accentuation_options(p)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_run_options(args)
    if args.manifest is not None:
        return run_manifest(args)
    if not args.target:
        raise UsageError("no --target given; e.g. accentuate run cat.jpg --target goldfish "
                         "(or --manifest FILE for a work list)")
    for t in args.target:
        if Path(t).suffix.lower() in IMAGE_SUFFIXES and Path(t).exists():
            raise UsageError(f"target {t!r} is an image file; put the images before --target")
    if not args.images:
        raise UsageError("no IMAGE given; e.g. accentuate run cat.jpg --target goldfish")
    kw = accentuation_kwargs(args)
    paths = expand_paths(args.images)
    output_dir(args, create=False)
    t0 = time.perf_counter()
    model = load_model_from_args(args)
    load_s = time.perf_counter() - t0
    targets = [TargetInfo(t, parse_target(t, model)) for t in args.target]
    spec = resolve_spec(model)
    settings = build_settings(model, spec, kw, targets)
    skipped: list[dict[str, str]] = []
    images = load_images(paths, settings.canvas, skipped)
    out = output_dir(args)
    plan = Plan(subcommand="run", argv=list(args.argv), model_arg=args.model, model=model, images=images,
                targets=targets, spec=spec, settings=settings, out=out, quiet=args.quiet, batch=args.batch,
                frames=args.frames, model_load_s=load_s,
                extra={"skipped_images": skipped} if skipped else {})
    return execute(plan)


def run_manifest(args: argparse.Namespace) -> int:
    """``accentuate run --manifest FILE``: the pairs a manifest lists, each row checked before any work."""
    if args.images or args.target:
        raise UsageError("--manifest lists the images and targets; give either --manifest FILE or IMAGEs with "
                         "--target, not both")
    rows = read_manifest(args.manifest)
    check_manifest_images(rows)
    kw = accentuation_kwargs(args)
    output_dir(args, create=False)
    t0 = time.perf_counter()
    model = load_model_from_args(args)
    load_s = time.perf_counter() - t0
    spec = resolve_spec(model)
    settings = build_settings(model, spec, kw)
    skipped: list[dict[str, str]] = []
    work = resolve_manifest(rows, model, spec, settings, parse_target, load_images, skipped)
    out = output_dir(args)
    extra: dict[str, object] = {"manifest": {"path": str(Path(args.manifest)), "rows": len(rows),
                                             "pairs": len(work.pairs)}}
    if skipped:
        extra["skipped_images"] = skipped
    plan = Plan(subcommand="run", argv=list(args.argv), model_arg=args.model, model=model, images=work.images,
                targets=work.targets, spec=spec, settings=settings, out=out, quiet=args.quiet, batch=args.batch,
                frames=args.frames, model_load_s=load_s, extra=extra, pairs=work.pairs)
    return execute(plan)

"""The analysis subcommands: ``pathway``, ``sweep``, ``latent`` and ``sanity``.

Each is thin over :mod:`accentuate.analysis`: it parses the options, runs the
analysis, prints its table on stdout and writes the table (``.md``), the numbers
(``.json``) and the figures (``.png``) into the output folder. Line plots need
matplotlib (``pip install accentuate[plot]``); without it they are skipped with a
warning and the rest is written.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .common import (
    UsageError,
    accentuation_kwargs,
    add_accentuation_options,
    add_model_options,
    load_timed,
    output_dir,
)

__all__ = ["register"]

_PATHWAY_EXAMPLE = """\
examples:
  accentuate pathway espresso --class-images espresso_photos/ --seeds cat.jpg dog.jpg
  accentuate pathway espresso --class-images coffee.jpg --views 8 --seeds cat.jpg \\
      --feature-vis 2 --steps 50 --crops 8 --canvas 256 --out runs/pathway
  accentuate pathway hammer --class-images hammer_photos/ --seeds fish.jpg dog.jpg \\
      --feature-vis 4 --lam0 --intervals 2000
  accentuate pathway hammer --class-images hammer_photos/ --seeds fish.jpg --measure attribution

For each layer, the Pearson correlation between the activations of the
accentuations (and of their seeds, of noise-seeded feature visualizations, and of
the class images among themselves) and those of the class images. Pooled = channel
vectors (spatial means), the main number; unpooled = whole C x H x W tensors.
--measure attribution compares instead each channel's spatial mean of activation
x gradient of the target (absolute |a||g|, then signed a*g: the paper's circuits).
--views N replaces each class image by N random crops/flips of it (for when you
have only a few photos of the class; views of one photo correlate more than
distinct photos would). --lam0 adds the seeds accentuated without the
regularizer; --intervals N adds bootstrap intervals that resample the images
(seeds, feature visualizations, class images), not their pairs. Several classes
at once: accentuate.analysis.pathway_study, module accentuate.analysis.pathway_pool (benchmarks/pathway_pool.py)."""

def _target_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", "-t", required=True, metavar="T",
                   help="a target as for run --target: a class name or index, LAYER:C, LAYER:C@Y,X, LAYER:C@cls, "
                   "LAYER:C@tokI, LAYER:head=H[:U] or LAYER:FILE.npy|.pt")


_SWEEP_EXAMPLE = """\
examples:
  accentuate sweep cat.jpg --target goldfish
  accentuate sweep cat.jpg --target goldfish --lam-range 0.001 100 --num 11 --steps 50
  accentuate sweep cat.jpg --target blocks.10:7 --lams 0.01 0.1 1 10

The sensitive region is where the target's gain, normalized by its maximum (and by
the gain without regularization, unless --no-reference), falls from 0.9 to 0.1,
interpolated on log(lam). Both ends lie inside the sweep; otherwise the reason is
printed (extend the sweep downward or upward)."""

_LATENT_EXAMPLE = """\
examples:
  accentuate latent photos/ --target blocks.10:7
  accentuate latent a.jpg b.jpg c.jpg --target blocks.12:100@3,3 --batch 4 --canvas 256

Every image is centre-cropped to a square canvas, the feature is accentuated in
each (in batches), and the grid is sorted by how much the feature rose. Opacity
masks are normalized over the whole set, so they compare between images."""

_SANITY_EXAMPLE = """\
examples:
  accentuate sanity cat.jpg --target goldfish
  accentuate sanity cat.jpg --target goldfish --every 2 --steps 40 --crops 8
  accentuate sanity cat.jpg --target blocks.10:7 --cascade head blocks.15 blocks.14

Randomizes the model's units from the top down (cumulatively; a copy, never the
loaded weights), accentuates the same target after each step, and reports the
similarity to the original accentuation. The line for the original model rerun
with other random crops shows the noise level: a sane explanation falls below it."""


def _parser(subparsers: argparse._SubParsersAction, name: str, help_: str, description: str,
            example: str) -> argparse.ArgumentParser:
    import textwrap

    return subparsers.add_parser(name, help=help_, description=textwrap.fill(description, 80), epilog=example,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pathway``, ``sweep``, ``latent`` and ``sanity`` subcommands."""
    # One piece: a declaration, option after option, of the four subcommands (their help reads in
    # this order); it holds no logic to split.
    p = _parser(subparsers, "pathway", "compare how accentuations and feature visualizations travel "
                "through the model", "Pathway similarity: layer-by-layer correlation with natural images "
                "of the target class, for accentuations, their seeds, noise-seeded feature "
                "visualizations and the natural images among themselves.", _PATHWAY_EXAMPLE)
    p.add_argument("target", metavar="CLASS", nargs="?",
                   help="the class (name or index) whose pathway is studied (or give --like IMAGE)")
    p.add_argument("--like", metavar="IMAGE",
                   help="instead of a class: the target is 'look more like IMAGE' (acc.like, for models "
                        "without classes such as DINOv2); --class-images default to IMAGE itself")
    p.add_argument("--class-images", nargs="+", metavar="PATH",
                   help="natural images of the class (files or folders); with --like: photos that show "
                        "what IMAGE shows (default: IMAGE)")
    p.add_argument("--seeds", nargs="+", required=True, metavar="PATH",
                   help="seed images to accentuate toward the class (files or folders)")
    p.add_argument("--views", type=int, default=0, metavar="N",
                   help="use N random crops/flips of each class image instead of the image (default: off)")
    p.add_argument("--feature-vis", type=int, default=1, metavar="N",
                   help="noise-seeded feature visualizations to compare (default 1; 0 leaves them out)")
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="layers to compare in depth order (default: the model's pathway layers)")
    p.add_argument("--lam0", action="store_true",
                   help="also accentuate the seeds without the regularizer (lam 0) and compare them")
    p.add_argument("--measure", choices=("activation", "attribution"), default="activation",
                   help="what each layer is described by: activation (channel means of its output; the "
                        "default) or attribution (per channel, the spatial mean of activation x gradient of "
                        "the target, the paper's circuits; only layers upstream of the target)")
    p.add_argument("--intervals", type=int, default=0, metavar="N",
                   help="after the table, 95%% bootstrap intervals per layer from N replicates that resample "
                        "the seeds, feature visualizations and class images (not their pairs); also written "
                        "to pathway_intervals.md (default 0: off)")
    add_model_options(p)
    add_accentuation_options(p)
    p.set_defaults(func=run_pathway)

    p = _parser(subparsers, "sweep", "sweep the regularization weight and find its sensitive region",
                "Lambda sweep: accentuate one seed toward one target at log-spaced values of --lam "
                "(same random crops in every run), record the target's value, rank and distance to "
                "the seed, and find the sensitive region.", _SWEEP_EXAMPLE)
    p.add_argument("seed_image", metavar="IMAGE", help="the seed image")
    _target_option(p)
    p.add_argument("--lams", nargs="+", type=float, metavar="L", help="the values to sweep (increasing)")
    p.add_argument("--lam-range", nargs=2, type=float, default=(1e-3, 1e2), metavar=("LO", "HI"),
                   help="range of log-spaced values when --lams is not given (default 0.001 100)")
    p.add_argument("--num", type=int, default=11, metavar="N",
                   help="number of values in --lam-range (default 11)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the lam = 0 run (the reference gain without regularization)")
    p.add_argument("--batch", type=int, default=4, metavar="B",
                   help="values of lam optimized together in one batch (default 4); lower it if "
                   "memory runs out")
    add_model_options(p)
    add_accentuation_options(p)
    p.set_defaults(func=run_sweep)

    p = _parser(subparsers, "latent", "accentuate one feature in many images, sorted by its rise",
                "Latent features: accentuate one neuron, channel or class in every image of a set "
                "(batched) and lay the results out sorted by how much the feature rose, with "
                "opacity masks normalized across the set.", _LATENT_EXAMPLE)
    p.add_argument("seeds", nargs="+", metavar="PATH", help="seed images (files or folders)")
    _target_option(p)
    p.add_argument("--batch", type=int, default=8, metavar="B", help="images per batch (default 8)")
    p.add_argument("--columns", type=int, default=6, metavar="C",
                   help="images per row of the grid (default 6)")
    add_model_options(p)
    add_accentuation_options(p)
    p.set_defaults(func=run_latent)

    p = _parser(subparsers, "sanity", "sanity check: randomize the model from the top down",
                "Cascading randomization: re-draw the weights of the model's units from the top "
                "down (cumulatively, on a copy), accentuate the same target after each, and report "
                "how similar the result stays to the original accentuation.", _SANITY_EXAMPLE)
    p.add_argument("seed_image", metavar="IMAGE", help="the seed image")
    _target_option(p)
    p.add_argument("--cascade", nargs="+", metavar="MODULE",
                   help="modules to randomize, top first (default: the model's units, top down)")
    p.add_argument("--every", type=int, default=1, metavar="K",
                   help="accentuate after every K-th randomized module (default 1)")
    p.add_argument("--bn-stats", choices=("keep", "reset"), default="keep",
                   help="BatchNorm running statistics of randomized modules (default keep)")
    p.add_argument("--weights-seed", type=int, default=0, metavar="S", help="seed of the random weights")
    p.add_argument("--no-repeat", action="store_true",
                   help="skip the rerun of the original model with other crops (the noise level)")
    add_model_options(p)
    add_accentuation_options(p)
    p.set_defaults(func=run_sanity)


# -- shared steps ---------------------------------------------------------------------------
def _kwargs(args: argparse.Namespace, forbid: tuple[str, ...] = ()) -> dict[str, Any]:
    kw = accentuation_kwargs(args)
    if getattr(args, "preview", False) and getattr(args, "until", None) is None:
        kw.pop("until", None)  # the analyses compare fixed-length runs
    for opt in forbid:
        if opt in kw:
            raise UsageError(f"--{opt.replace('_', '-')} cannot be used with `accentuate {args.command}`")
    kw.pop("seed", None)  # passed as seed= (each analysis derives its runs' seeds from it)
    kw["progress"] = not args.quiet
    return kw


def _paths(paths: list[str], option: str) -> list[str]:
    for p in paths:
        if not Path(p).exists():
            raise UsageError(f"{option}: no such file or folder {p!r}")
    return paths


def _positive(value: int, option: str) -> int:
    if value < 1:
        raise UsageError(f"{option} must be a positive integer; got {value}")
    return value


def _model(args: argparse.Namespace, kw: dict[str, Any]) -> tuple[Any, Any]:
    """``--model`` loaded, with the command's one :class:`~accentuate.hooks.ModelRunner` put into
    ``kw`` (every pass of the analysis reuses it), and a target reader: ``(model, read(text))``."""
    from ..hooks import ModelRunner
    from ..objectives import parse_target

    model, spec, _ = load_timed(args)
    runner = kw["runner"] = ModelRunner(model, spec)
    return model, lambda text: parse_target(text, model, spec, runner)


def _finish(result: Any, args: argparse.Namespace, started: float, model: Any = None, **save_kw: Any) -> Path:
    """Write the analysis's files, ``command.json`` and the report into the output folder, print the
    table; returns the folder (made once: a later file of the command goes beside the others)."""
    from ..hooks import model_device
    from ..report import maybe_write_report, write_command_record
    from ..runs.record import device_record

    out = output_dir(args)
    try:
        written = result.save(out, **save_kw)
    except ImportError as e:  # no matplotlib: write the rest
        warnings.warn(f"{e}; the line plot was skipped", stacklevel=2)
        written = result.save(out, plot=False)
    written.append(write_command_record(out, args.argv, args.command, time.perf_counter() - started,
                                        device_record(model_device(model)) if model is not None else None))
    page = maybe_write_report(out)
    written += [page] if page is not None else []
    print(result.to_markdown())
    if not args.quiet:
        names = ", ".join(p.name for p in written)
        print(f"wrote {names} to {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


# -- subcommands ----------------------------------------------------------------------------
def run_pathway(args: argparse.Namespace) -> int:
    """``accentuate pathway``."""
    from ..analysis import augmented_views, pathway_similarity

    started = time.perf_counter()
    kw = _kwargs(args, forbid=("until",))
    if (args.target is None) == (args.like is None):
        raise UsageError("give the target class (CLASS) or --like IMAGE, not both and not neither")
    if args.like is not None:
        _paths([args.like], "--like")
        if not args.class_images:
            args.class_images = [args.like]
    elif not args.class_images:
        raise UsageError("--class-images is required with a CLASS target: natural images of the class")
    _paths(args.class_images, "--class-images")
    _paths(args.seeds, "--seeds")
    if args.views < 0 or args.feature_vis < 0:
        raise UsageError("--views and --feature-vis must be >= 0")
    if args.intervals < 0 or args.intervals == 1:
        raise UsageError(f"--intervals must be 0 (off) or at least 2 replicates; got {args.intervals}")
    model, read = _model(args, kw)
    if args.like is not None:
        from ..objectives import like

        try:
            target: Any = like(args.like, model, runner=kw["runner"])
        except ValueError as e:
            raise UsageError(f"--like {args.like!r}: {e}") from None
    else:
        target = read(args.target)
    class_images: Any = args.class_images
    if args.views:
        class_images = augmented_views(args.class_images, args.views, generator=args.seed)
    result = pathway_similarity(model, target, class_images, args.seeds, feature_vis=args.feature_vis,
                                lam0=args.lam0, layers=args.layers, seed=args.seed, measure=args.measure,
                                **kw)
    out = _finish(result, args, started, model)
    if args.intervals:
        from ..outputs.io import atomic_write

        table = result.intervals_markdown(result.intervals(args.intervals, generator=args.seed))
        what = "Pooled r" if args.measure == "activation" else "Absolute attribution r"
        print(f"\n{what}, mean [95% interval] ({args.intervals} bootstrap replicates over images, not pairs):")
        print(table)
        atomic_write(out / "pathway_intervals.md", (table + "\n").encode())
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    """``accentuate sweep``."""
    from ..analysis import lambda_sweep

    started = time.perf_counter()
    kw = _kwargs(args, forbid=("lam", "until"))
    _paths([args.seed_image], "IMAGE")
    lo, hi = args.lam_range
    if not 0 < lo < hi:
        raise UsageError(f"--lam-range must satisfy 0 < LO < HI; got {lo:g} {hi:g}")
    _positive(args.batch, "--batch")
    if args.num < 2:
        raise UsageError(f"--num must be at least 2; got {args.num}")
    if args.lams is not None:
        if len(args.lams) < 2 or any(v <= 0 for v in args.lams) or any(
                b <= a for a, b in zip(args.lams, args.lams[1:])):
            raise UsageError("--lams needs at least 2 positive, strictly increasing values")
    model, read = _model(args, kw)
    result = lambda_sweep(model, args.seed_image, read(args.target), args.lams, num=args.num, lam_range=(lo, hi),
                          reference=not args.no_reference, batch=args.batch, seed=args.seed, **kw)
    _finish(result, args, started, model)
    if not result.region.found:
        print(f"accentuate: sensitive region not found: {result.region.reason}", file=sys.stderr)
    return 0


def run_latent(args: argparse.Namespace) -> int:
    """``accentuate latent``."""
    from ..analysis import latent_features
    from ..images import square_side

    started = time.perf_counter()
    kw = _kwargs(args, forbid=("until",))
    _paths(args.seeds, "PATH")
    _positive(args.batch, "--batch")
    _positive(args.columns, "--columns")
    canvas = kw.pop("canvas", None)
    model, read = _model(args, kw)
    canvas = square_side(kw["runner"].spec, canvas, "latent", "--canvas")
    result = latent_features(model, args.seeds, read(args.target), canvas=canvas, batch=args.batch,
                             seed=args.seed, **kw)
    _finish(result, args, started, model, columns=args.columns)
    return 0


def run_sanity(args: argparse.Namespace) -> int:
    """``accentuate sanity``."""
    from ..analysis import cascading_randomization

    started = time.perf_counter()
    kw = _kwargs(args, forbid=("until",))
    _paths([args.seed_image], "IMAGE")
    _positive(args.every, "--every")
    model, read = _model(args, kw)
    result = cascading_randomization(model, args.seed_image, read(args.target), cascade=args.cascade, every=args.every,
                                     bn_stats=args.bn_stats, weights_seed=args.weights_seed,
                                     repeat=not args.no_repeat, seed=args.seed, **kw)
    _finish(result, args, started, model)
    return 0

"""``accentuate sae train FOLDER --layer L --latents N --k K --out DIR``: a sparse autoencoder on a layer.

Thin over :func:`accentuate.train_sae` (:mod:`accentuate.analysis.sae_training`): the photos (the
folder's subfolders too) are read a chunk at a time as the concepts command sees them, the
layer's activations at every position go to ``DIR/train/``, and a TopK SAE is trained on them
(and a second one from the next seed, to measure how stable its latents are). The checkpoint,
``DIR/sae_weights.safetensors`` and ``DIR/cfg.json``, is what ``--target sae:DIR:UNIT@LAYER`` and
``accentuate concepts --method sae --sae DIR`` read; ``DIR/quality.json`` holds the numbers that
are printed. Ctrl-C saves the training state; the same command resumes from it.
"""

from __future__ import annotations

import argparse
import sys
from textwrap import fill

from ..errors import UsageError
from .common import add_global_options, add_model_options, load_timed

__all__ = ["register", "run"]

EXAMPLE = """\
examples:
  accentuate sae train photos/ --layer blocks.10 --latents 2048 --k 32 --out runs/sae-b10
  accentuate sae train photos/ --model dinov2_vits14_focus --layer layernorm --out runs/sae-vit
  accentuate run photo.jpg --target sae:runs/sae-b10:1234@blocks.10
  accentuate concepts photos/ --method sae --sae runs/sae-b10 --latents 8

Every position of the layer (a conv map's pixel, a ViT's patch token) of every photo is one
training row; a tenth of the photos is held out to measure the quality. Printed and written to
DIR/quality.json: the fraction of variance explained on the held-out photos, the mean number of
active latents, the dead latents, and the stability of the latents between two seeds (Hungarian
matching of the decoder directions; --no-stability trains one seed only, half the time)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sae`` command and its ``train`` subcommand."""
    p = subparsers.add_parser(
        "sae", help="train a sparse autoencoder (a dictionary of latents) on a layer over a photo set",
        description=fill("Sparse autoencoders on a layer's activations. `accentuate sae train` trains a TopK SAE "
                         "on every position of a layer over a photo set and writes a checkpoint that "
                         "--target sae:DIR:UNIT@LAYER and `accentuate concepts --method sae` read.", 88),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sae_command", metavar="SUBCOMMAND", title="subcommands")
    t = sub.add_parser(
        "train", help="train a TopK SAE on a layer over a photo set",
        description=fill("Train a TopK sparse autoencoder on every position of LAYER over the photos, with unit-norm "
                         "decoder directions and dead-latent revival, from a fixed seed; print and record its "
                         "quality. Ctrl-C saves the state, and the same command resumes.", 88),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("photos", nargs="+", metavar="FOLDER", help="the photos: folders (with their subfolders) or files")
    t.add_argument("--layer", metavar="LAYER",
                   help="the layer (default: the model's last spatial pathway layer, as for concepts)")
    t.add_argument("--latents", type=int, default=2048, metavar="N", help="latents of the SAE (default 2048)")
    t.add_argument("--k", type=int, default=32, metavar="K", help="active latents per position (default 32)")
    t.add_argument("--out", required=True, metavar="DIR", help="the checkpoint folder (resumed when it exists)")
    t.add_argument("--epochs", type=float, default=30.0, metavar="E",
                   help="passes over the training rows (default 30)")
    t.add_argument("--steps", type=int, metavar="N", help="Adam steps (default: from --epochs)")
    t.add_argument("--batch", type=int, default=1024, metavar="N", help="rows per step (default 1024)")
    t.add_argument("--lr", type=float, metavar="LR", help="Adam's learning rate (default 2e-3 * sqrt(2048 / latents), at most 4e-3)")
    t.add_argument("--seed", type=int, default=0, metavar="S", help="the torch seed (default 0)")
    t.add_argument("--held-out", type=float, default=0.1, metavar="F",
                   help="share of the photos kept out of training to measure the quality (default 0.1)")
    t.add_argument("--stability", action=argparse.BooleanOptionalAction, default=True,
                   help="also train from seed + 1 and match the latents of the two (default: on)")
    t.add_argument("--canvas", type=int, metavar="PX", help="side of the square canvas (default: the model's)")
    add_model_options(t)
    add_global_options(t)
    t.set_defaults(func=run)
    p.set_defaults(func=_no_subcommand)


def _no_subcommand(args: argparse.Namespace) -> int:
    raise UsageError("give a subcommand: accentuate sae train FOLDER --layer LAYER --out DIR")


def _check(args: argparse.Namespace) -> None:
    if args.latents < 1:
        raise UsageError(f"--latents must be >= 1; got {args.latents}")
    if not 1 <= args.k <= args.latents:
        raise UsageError(f"--k must be in 1..--latents ({args.latents}); got {args.k}")
    for opt in ("batch", "steps"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise UsageError(f"--{opt} must be >= 1; got {v}")
    if args.epochs <= 0:
        raise UsageError(f"--epochs must be > 0; got {args.epochs}")
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be > 0; got {args.lr}")
    if not 0 <= args.held_out < 1:
        raise UsageError(f"--held-out must be in [0, 1); got {args.held_out}")


def run(args: argparse.Namespace) -> int:
    """``accentuate sae train``."""
    from ..analysis.sae_training import train_sae
    from ..hooks import ModelRunner, readable_layouts
    from ..images import photo_set

    _check(args)
    photos = photo_set(args.photos)  # before the model loads: a wrong path fails fast
    model, spec, _ = load_timed(args)
    if args.layer:
        readable_layouts(ModelRunner(model, spec), [args.layer])  # exists, runs, has channels
    if not args.quiet:
        print(f"accentuate: {len(photos)} photo(s), {spec.name} at {args.layer or 'its default layer'}: "
              f"{args.latents} latents, k {args.k}; output: {args.out}", file=sys.stderr)
    run_ = train_sae(model, args.photos, args.layer, args.latents, args.k, out=args.out, steps=args.steps,
                     epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed, held_out=args.held_out,
                     stability=args.stability, canvas=args.canvas, spec=spec, progress=not args.quiet)
    if not args.quiet:
        print(run_.summary())
        print(f"checkpoint: {args.out} (sae_weights.safetensors, cfg.json); numbers: {args.out}/quality.json; "
              f"a latent as a target: --target sae:{args.out}:UNIT@{run_.layer}")
    return 0

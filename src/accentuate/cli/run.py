"""``accentuate run``: accentuate each image toward each target."""

from __future__ import annotations

import argparse
from pathlib import Path
from textwrap import fill

from torch import nn

from ..hooks import OUTPUT, ModelRunner, readable_layouts
from ..images import IMAGE_SUFFIXES, photo_set
from ..runs import TargetInfo, execute
from ..runs.manifest import check_manifest_images, read_manifest, resolve_manifest
from .command import Command, add_judge_option, add_run_options, finish
from .common import UsageError, add_accentuation_options, add_model_options

EXAMPLE = """\
examples:
  accentuate run cat.jpg --target goldfish
  accentuate run photos/ --target goldfish --out runs/fish      (every image in a folder)
  accentuate run cat.jpg dog.jpg --target "tiger cat" 207 --steps 80 --out runs/pets
  accentuate run cat.jpg --target blocks.5:20 blocks.5:20@7,7     (a channel, a neuron)
  accentuate run cat.jpg --target blocks.5:vec.npy                (a direction, from a file)
  accentuate run cat.jpg --target goldfish --model mymodels:build  (your factory)
  accentuate run cat.jpg --model M -t layers.5:20@cls layers.5:head=3 layers.5:head=3:7
  accentuate run cat.jpg --model M --like dog.jpg --like-pool mean   (look more like dog.jpg)
  accentuate run cat.jpg --model clip:DIR --text "a photo of a dog" --away-from "a photo of a cat"
  accentuate run --manifest pairs.csv --out runs/big                (a work list)
  accentuate run cat.jpg -t goldfish --until top1 --judge mobilenet_v2 efficientnet_lite1
  torchrun --nproc-per-node 4 -m accentuate run --manifest pairs.csv --out runs/big

A manifest is a CSV with the header image,target and optional columns lam, steps,
reg_layer, until (empty cells: the run's values), or JSON Lines with the same fields;
paths are relative to the manifest. Under torchrun the ranks share the batches and
rank 0 writes the one run.json (docs/cli.md, "Scaling out").

Targets: a class name (case-insensitive; `accentuate classes QUERY` searches them), a
class index, LAYER:C (channel mean over positions / patch tokens), LAYER:C@Y,X (neuron),
LAYER:C@cls or LAYER:C@tokI (a leading token), LAYER:head=H[:U] (an attention head's output,
or its unit U; LAYER is the attention output projection or its block), or LAYER:FILE.npy /
LAYER:FILE.pt (a direction: a vector with one entry per channel); `accentuate layers` lists
layers. --like IMAGE: look more like IMAGE to the model (cosine of pooled features at
--like-layer). --text / --away-from PROMPT: toward / away from a prompt (CLIP models).
A file in a folder that cannot be read is skipped with a warning (listed in run.json).
Rerunning with the same --out skips pairs that are complete. Exit status: 0 done,
1 failed, 2 bad usage, 130 interrupted (Ctrl-C keeps what is finished; 143 for SIGTERM)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="accentuate images toward targets",
        description=fill(
            "Accentuate each IMAGE toward each target: change the photo so the target "
            "(a class logit, a channel, a neuron, an attention head, a reference image or a text prompt) rises while the model's activations at the "
            "regularization layer stay close to the photo's. Writes per pair a PNG, an RGBA PNG "
            "(alpha = where the target's gradient went), a figure and (unless --frames 0) an animation, plus a "
            "contact sheet, run.json and report.html (a page to look at it all).",
            88,
        ),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="seed image files or folders of them (one or more)")
    p.add_argument("--target", "-t", nargs="+", action="extend", default=[], metavar="T",
                   help="class name, class index, LAYER:C, LAYER:C@Y,X, LAYER:C@cls, LAYER:C@tokI, "
                   "LAYER:head=H, LAYER:head=H:U or LAYER:FILE.npy|.pt (a direction) (several allowed)")
    p.add_argument("--manifest", metavar="FILE",
                   help="a work list instead of IMAGEs and --target: CSV (image,target[,lam,steps,reg_layer,until]) "
                   "or JSON Lines; paths relative to it")
    g = p.add_argument_group("reference-image and text targets")
    g.add_argument("--like", nargs="+", action="extend", default=[], metavar="IMAGE",
                   help="a target per IMAGE: make the photo look more like IMAGE to the model")
    g.add_argument("--like-layer", metavar="LAYER",
                   help="layer whose features --like compares (default: the last token or feature-map "
                   "layer; '@output' is the model's output, e.g. CLIP's image embedding)")
    g.add_argument("--like-pool", choices=("cls", "mean"),
                   help="feature of a layer: its class token or the mean of its patch positions "
                   "(default: cls when the layer has a leading token, else mean)")
    g.add_argument("--like-measure", choices=("cosine", "dot"), default="cosine",
                   help="how features compare (default cosine)")
    g.add_argument("--text", nargs="+", action="extend", default=[], metavar="PROMPT",
                   help="a target per PROMPT: toward the prompt in CLIP's joint embedding (--model clip:...)")
    g.add_argument("--away-from", nargs="+", action="extend", default=[], metavar="PROMPT",
                   help="a target per PROMPT: away from the prompt (CLIP models)")
    add_model_options(p)
    add_accentuation_options(p)
    add_run_options(p)
    add_judge_option(p.add_argument_group("judges"))  # type: ignore[arg-type]
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        return run_manifest(args)
    for t in args.target:
        if Path(t).suffix.lower() in IMAGE_SUFFIXES and Path(t).exists():
            raise UsageError(f"target {t!r} is an image file; put the images before --target")
    if not args.images:
        raise UsageError("no IMAGE given; e.g. accentuate run cat.jpg --target goldfish")
    if (args.like_layer or args.like_pool) and not args.like:
        raise UsageError("--like-layer and --like-pool apply to --like IMAGE targets; add --like IMAGE")
    if not (args.target or args.like or args.text or args.away_from):
        raise UsageError("no target given; use --target T (or --like IMAGE, --text PROMPT, --away-from PROMPT, "
                         "or --manifest FILE for a work list)")
    for ref in args.like:
        if not Path(ref).is_file():
            raise UsageError(f"--like {ref!r}: image not found; give the path of a reference image")
    paths = [(str(src), inside) for src, inside, _ in photo_set(args.images, recursive=False)]
    cmd = Command(args, "run")
    targets = cmd.targets(args.target) + reference_targets(args, cmd.model, cmd.runner)
    settings = cmd.settings(targets)
    images = cmd.images(paths, settings)
    p = cmd.plan(settings, images, targets)
    return finish(p, execute(p))


def reference_targets(args: argparse.Namespace, model: nn.Module, runner: ModelRunner) -> list[TargetInfo]:
    """The ``--like``, ``--text`` and ``--away-from`` targets, in that order (``runner``: the
    command's).

    Raises:
        UsageError: a text target on a model that is not CLIP, or a reference layer or pool
            that does not fit the model (the message names the problem).
    """
    from ..clip import CLIPImage, clip_text
    from ..objectives import Objective, like

    out: list[TargetInfo] = []
    if args.like_layer and args.like_layer != OUTPUT:
        readable_layouts(runner, [args.like_layer])  # a wrong name lists the closest ones
    for ref in args.like:
        obj: Objective
        try:
            obj = like(ref, model, args.like_layer, pool=args.like_pool, measure=args.like_measure,
                       runner=runner)
        except ValueError as e:
            if isinstance(e, UsageError):
                raise
            raise UsageError(f"--like {ref!r}: {e}") from None
        out.append(TargetInfo(f"like:{ref}", obj))
    prompts = [(p, False) for p in args.text] + [(p, True) for p in args.away_from]
    if prompts and not isinstance(model, CLIPImage):
        raise UsageError(f"--text and --away-from need a CLIP model (--model clip:NAME or clip:/saved/folder); "
                         f"--model {args.model} is not one")
    for prompt, away in prompts:
        if not prompt.strip():
            raise UsageError("an empty --text / --away-from prompt; give the text, e.g. \"a photo of a dog\"")
        try:
            obj = clip_text(prompt, model, away=away)
        except ValueError as e:
            raise UsageError(f"{'--away-from' if away else '--text'} {prompt!r}: {e}") from None
        out.append(TargetInfo(("away:" if away else "text:") + prompt, obj))
    return out
def run_manifest(args: argparse.Namespace) -> int:
    """``accentuate run --manifest FILE``: the pairs a manifest lists, each row checked before any work."""
    if args.images or args.target:
        raise UsageError("--manifest lists the images and targets; give either --manifest FILE or IMAGEs with "
                         "--target, not both")
    rows = read_manifest(args.manifest)
    check_manifest_images(rows)
    cmd = Command(args, "run")
    settings = cmd.settings()
    images, targets, pairs, where = resolve_manifest(rows, cmd.runner, settings,
                                                     lambda paths: cmd.images(paths, settings))
    settings = settings.for_targets([t.objective for t in targets])  # --preview's until: classes only
    extra = {"manifest": {"path": str(Path(args.manifest)), "rows": len(rows), "pairs": len(pairs)}}
    p = cmd.plan(settings, images, targets, pairs=pairs, kind="manifest", rows=where, extra=extra)
    return finish(p, execute(p))

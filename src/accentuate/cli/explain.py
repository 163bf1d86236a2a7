"""``accentuate explain``: what drives each of the model's top logits on one image."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from textwrap import fill
from typing import Any

import torch

from ..analysis.explain import Explanation, choose_classes, class_probabilities
from ..objectives import logit
from ..outputs import figures
from ..outputs.io import atomic_write
from ..runs import RunWriter, TargetInfo, execute
from ..runs.saved import result_from_record
from ..spec import ModelSpec
from .command import Command, add_judge_option, add_run_options, finish
from .common import UsageError, add_accentuation_options, add_model_options

EXAMPLE = """\
examples:
  accentuate explain cat.jpg --top 3
  accentuate explain cat.jpg --top 2 --bottom 1
  accentuate explain misclassified.jpg --top 1 --label "golden retriever"
  accentuate explain val/ --misclassified --out runs/mistakes   (val/<class name>/*.jpg)

Accentuates the model's K most likely classes on the image (--bottom: the least
likely too; --label: the true class, to explain a misclassification) in one batched
run, with the opacity normalized over the whole panel so regions compare. Rerunning
with the same --out finishes an interrupted run; under torchrun one process runs the
batch. result.npz keeps every tensor (Result.load reads it back exactly)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain", help="accentuate the model's top-K classes on an image",
        description=fill(
            "Show what drives each logit: accentuate the model's top-K predicted classes "
            "(and optionally the least likely ones and the true label) on IMAGE. Writes the usual "
            "per-pair files plus explain_panel.png: the seed, then each class with its opacity "
            "normalized over the panel.",
            88,
        ),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", metavar="IMAGE", help="the image to explain (with --misclassified: ROOT of a labelled "
                   "tree ROOT/<class name>/*.jpg)")
    p.add_argument("--top", type=int, default=None, metavar="K", help="the K most likely classes (default 3)")
    p.add_argument("--bottom", type=int, default=0, metavar="K", help="also the K least likely classes")
    p.add_argument("--label", metavar="NAME", help="the true class (name or index), added if not in the top")
    p.add_argument("--misclassified", action="store_true",
                   help="IMAGE is a labelled tree ROOT/<class name>/*: for each image the model gets wrong, "
                   "accentuate its predicted and its true class; then the most frequent confusions with panels")
    p.add_argument("--confusions", type=int, default=5, metavar="K",
                   help="with --misclassified: panels for the K most frequent confusions (default 5)")
    add_model_options(p)
    add_accentuation_options(p)
    add_run_options(p)
    add_judge_option(p.add_argument_group("judges"))  # type: ignore[arg-type]
    p.set_defaults(func=run)


def _prob(numbers: dict) -> str:
    """A recorded probability as text (``n/a`` for a failed pair's, which is not finite)."""
    p = numbers.get("prob")
    return "n/a" if p is None else f"{p:.3f}"


def _check(args: argparse.Namespace) -> None:
    """The options of ``explain IMAGE``, checked before anything loads."""
    if args.top < 0 or args.bottom < 0:
        raise UsageError(f"--top and --bottom must be >= 0; got --top {args.top} --bottom {args.bottom}")
    if args.top + args.bottom == 0 and args.label is None:
        raise UsageError("nothing to explain: give --top K >= 1, --bottom K >= 1 or --label NAME")
    if not Path(args.image).exists():
        raise UsageError(f"image not found: {args.image!r}; check the path")
    if Path(args.image).is_dir():
        raise UsageError(f"{args.image!r} is a folder, not an image file; pass one image (or --misclassified for "
                         "a labelled tree)")


def run(args: argparse.Namespace) -> int:
    if args.misclassified:
        from .misclassified import run_misclassified

        if args.top is None:
            args.top = 0
        return run_misclassified(args)
    if args.top is None:
        args.top = 3
    _check(args)
    cmd = Command(args, "explain")
    spec, labels = cmd.spec, cmd.spec.labels
    settings = cmd.settings()
    images = cmd.images([args.image], settings)
    seed = images[0].tensor
    assert seed is not None  # load_images keeps the fitted tensor
    probs = class_probabilities(cmd.model, seed[None], spec, cmd.runner)
    classes, reasons = choose_classes(probs, args.top, args.bottom, args.label, labels)
    names = [labels[c] if labels is not None and c < len(labels) else None for c in classes]
    targets = [TargetInfo(str(c), logit(c).resolve(labels)) for c in classes]
    # One batched run of the seed x its classes (one batch: the opacity is normalized over the panel,
    # and result.npz keeps every tensor, from which the panel is drawn, fresh or resumed alike).
    p = cmd.plan(settings, images, targets, batch=len(targets), kind="explain", collective=True, lossless=True)
    explained: list[Explanation] = []

    def panel(writer: RunWriter) -> None:
        """The panel and the ``explain`` section, from the run's lossless copy (all classes done)."""
        if writer.missing() or any(e["status"] == "partial" for e in writer.entries()):
            return
        res = result_from_record(writer.out, writer.document())
        ex = Explanation(result=res, classes=classes, names=names, reasons=reasons, probs=probs,
                         alpha=res.alpha(collective=True))
        _write_panel(ex, writer.entries(), seed, images[0].name, spec, writer)
        writer.add_sections(explain={
            "classes": classes, "names": names, "reasons": reasons,
            "probs_before": [round(float(probs[c]), 6) for c in classes],
            "opacity": "collective (normalized over all classes of the panel)",
            "top": args.top, "bottom": args.bottom, "label": args.label,
            "overtaken_by": [[{"index": k, "name": labels[k] if labels else None} for k in ex.overtaken_by(j)]
                             for j in range(len(classes))],
        })
        explained.append(ex)

    outcome = execute(p, before_save=panel)
    if outcome.status in (0, 1) and explained and not args.quiet and outcome.lead:
        ex = explained[0]
        print(f"explained {images[0].name} in {outcome.seconds:.0f} s:")
        for j, (e, reason) in enumerate(zip(outcome.entries, ex.reasons)):
            print(f"  {e['target_label']} [{reason}]: p {_prob(e['before'])} -> {_prob(e['after'])}, "
                  f"{ex.rank_change(j)}")
    return finish(p, outcome, listing=[("panel", p.out / "explain_panel.png"), ("record", outcome.writer.path)],
                  pairs=False, hint=f"rerun with another --seed or a lower --lr, e.g. accentuate explain "
                  f"{shlex.quote(args.image)} --lr 0.02")


def _write_panel(ex: Explanation, entries: list[dict[str, Any]], seed: torch.Tensor, name: str, spec: ModelSpec,
                 writer: RunWriter) -> None:
    """``explain_panel.png``: the seed with the model's two likeliest classes, then each class's
    accentuation with its opacity, probability and rank change."""
    res = ex.result
    top = ex.probs.topk(min(2, ex.probs.numel())).indices.tolist()
    seed_cap = ", ".join(f"{(spec.labels[c] if spec.labels else None) or c} {float(ex.probs[c]):.2f}" for c in top)
    items = []
    for j, e in enumerate(entries):
        img = figures.composite(res.images[0, j], ex.alpha[0, j])
        heading = f"{ex.names[j] or ex.classes[j]} [{ex.reasons[j]}]"
        caption = f"p {_prob(e['before'])} -> {_prob(e['after'])},  {ex.rank_change(j)}"
        items.append((img, heading, caption))
    title = (f"{name}: what drives each class ({spec.name}; opacity normalized over the panel, "
             f"{res.steps_done} steps)")
    panel = figures.panel((figures.to_pil(seed), f"model: {seed_cap}"), items, title=title)
    atomic_write(writer.out / "explain_panel.png", figures.png_bytes(panel))
    writer.add_output("explain_panel", "explain_panel.png")

"""``accentuate explain``: what drives each of the model's top logits on one image."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from textwrap import fill
from typing import Any

import torch

from ..analysis.explain import Explanation, explain
from ..outputs import figures
from ..outputs.animation import snapshot_interval
from ..outputs.record import RunWriter
from ..outputs.worklist import TargetInfo
from ..report import maybe_write_report
from ..spec import ModelSpec
from .common import UsageError, add_accentuation_options, add_model_options
from .runner import Command, add_run_options, check_paths, header, print_results, say, steps_bar

EXAMPLE = """\
examples:
  accentuate explain cat.jpg --top 3
  accentuate explain cat.jpg --top 2 --bottom 1
  accentuate explain misclassified.jpg --top 1 --label "golden retriever"
  accentuate explain val/ --misclassified --out runs/mistakes   (val/<class name>/*.jpg)

Accentuates the model's K most likely classes on the image (--bottom: the least
likely too; --label: the true class, to explain a misclassification) in one batched
run, with the opacity normalized over the whole panel so regions compare."""


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
    p.set_defaults(func=run)


def _prob(numbers: dict) -> str:
    """A recorded probability as text (``n/a`` for a failed pair's, which is not finite)."""
    p = numbers.get("prob")
    return "n/a" if p is None else f"{p:.3f}"


def _check(args: argparse.Namespace) -> None:
    """The options of ``explain IMAGE``, checked before anything loads."""
    from .distributed import Ranks

    if Ranks.from_env().distributed:
        raise UsageError("explain IMAGE runs in one process; under torchrun use accentuate run or "
                         "accentuate explain ROOT --misclassified")
    if args.top < 0 or args.bottom < 0:
        raise UsageError(f"--top and --bottom must be >= 0; got --top {args.top} --bottom {args.bottom}")
    if args.top + args.bottom == 0 and args.label is None:
        raise UsageError("nothing to explain: give --top K >= 1, --bottom K >= 1 or --label NAME")
    check_paths([args.image])


def run(args: argparse.Namespace) -> int:
    if args.misclassified:
        from .misclassified import run_misclassified

        if args.top is None:
            args.top = 0
        return run_misclassified(args)
    if args.top is None:
        args.top = 3
    _check(args)
    t0 = time.perf_counter()
    cmd = Command(args, "explain")
    model, spec = cmd.model, cmd.spec
    settings = cmd.settings()
    images = cmd.images([args.image], settings)
    if spec.labels is not None and args.label is not None:  # fail on a bad label before running
        from ..labels import find_class

        find_class(args.label, spec.labels)

    steps = settings.steps
    k = args.top + args.bottom + (1 if args.label is not None else 0)
    say(args.quiet, f"accentuate: explaining {images[0].name} with {spec.name} on {k} class(es) at most; "
        f"output: {cmd.out}")
    update, close = steps_bar(args.quiet, f"explain {images[0].name}", steps)
    started = time.perf_counter()
    seed = images[0].tensor
    assert seed is not None  # load_images keeps the fitted tensor
    try:
        ex = explain(model, seed, top=args.top, bottom=args.bottom, label=args.label,
                     settings=settings, progress=update, runner=cmd.runner,
                     snapshots=snapshot_interval(steps, args.frames) if args.frames else ())
    finally:
        close()
    seconds = time.perf_counter() - started
    res = ex.result
    targets = [TargetInfo(str(c), o) for c, o in zip(ex.classes, res.targets)]
    # One batched run of the seed x its classes: the work list is one batch.
    plan = cmd.plan(res.config, images, targets, batch=len(targets))
    out = plan.out
    writer = RunWriter(out, header(plan), plan.work)
    entries = writer.write_batch(res, plan.work.batches[0], seconds, alpha=ex.alpha,
                                 timing={"rank": 0, "generator_seed": res.config.seed,
                                         "threads": torch.get_num_threads()})
    _write_panel(ex, entries, seed, images[0].name, spec, writer)
    writer.add_sections(explain={
        "classes": ex.classes, "names": ex.names, "reasons": ex.reasons,
        "probs_before": [round(float(ex.probs[c]), 6) for c in ex.classes],
        "opacity": "collective (normalized over all classes of the panel)",
        "top": args.top, "bottom": args.bottom, "label": args.label,
        "overtaken_by": [[{"index": k, "name": spec.labels[k] if spec.labels else None} for k in ex.overtaken_by(j)]
                         for j in range(len(ex.classes))],
    })
    writer.timing(model_load_s=cmd.load_s, total_s=time.perf_counter() - t0)
    if res.interrupted:
        writer.save("interrupted")
        maybe_write_report(out)
        print(f"accentuate: interrupted at step {res.steps_done} of {steps}; wrote the partial state of "
              f"{len(entries)} pair(s) (marked \"partial\" in run.json) to {out}", file=sys.stderr)
        return 130
    writer.save("complete")
    return _summary(args, ex, entries, images[0].name, seconds, writer, maybe_write_report(out))


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
    from ..outputs.io import atomic_write

    atomic_write(writer.out / "explain_panel.png", figures.png_bytes(panel))
    writer.add_output("explain_panel", "explain_panel.png")


def _summary(args: argparse.Namespace, ex: Explanation, entries: list[dict[str, Any]], name: str, seconds: float,
             writer: RunWriter, page: Path | None) -> int:
    """What ``explain`` prints at the end, and its exit status (1 when a class failed)."""
    failed = [e for e in entries if e["status"] == "failed"]
    for e in failed:
        print(f"accentuate: warning: {e['target_label']} failed: {e['failed']}", file=sys.stderr)
    if not args.quiet:
        print(f"explained {name} in {seconds:.0f} s:")
        for j, (e, reason) in enumerate(zip(entries, ex.reasons)):
            print(f"  {e['target_label']} [{reason}]: "
                  f"p {_prob(e['before'])} -> {_prob(e['after'])}, {ex.rank_change(j)}")
        print_results(writer.out, [("panel", writer.out / "explain_panel.png"), ("record", writer.path),
                                   ("report", page)])
    if failed:
        print(f"accentuate: error: {len(failed)} of {len(entries)} class(es) failed (numerical trouble); "
              f"see run.json; rerun with another --seed or a lower --lr, e.g. "
              f"accentuate explain {shlex.quote(args.image)} --lr 0.02", file=sys.stderr)
        return 1
    return 0

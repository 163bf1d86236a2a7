"""``accentuate explain ROOT --misclassified``: the model's mistakes over a labelled folder tree.

For each image of ``ROOT/<class name>/*`` that the model gets wrong, accentuate its
predicted class and its true class (pairs of an ordinary run: batches, torchrun,
resume and ``run.json`` as for ``accentuate run``), then summarize the most frequent
confusions, each with a panel (``confusion-TRUE__PREDICTED.png``: its images, toward the
predicted class and toward the true one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from PIL import Image

from ..analysis.misclassified import classify, confusions, labelled_tree
from ..errors import UsageError
from ..objectives import logit
from ..outputs import figures
from ..outputs.record import TargetInfo, slug
from ..result import atomic_write
from .common import accentuation_kwargs, load_timed, output_dir
from .distributed import Ranks
from .runner import Plan, build_settings, execute, load_images, say

__all__ = ["run_misclassified"]


def run_misclassified(args: argparse.Namespace) -> int:
    """Classify every image of the tree, accentuate the wrong ones (predicted and true class),
    and write the confusion summary. Returns the exit status."""
    root = Path(args.image)
    if not root.is_dir():
        raise UsageError(f"--misclassified needs a folder ROOT/<class name>/*.jpg; {args.image!r} is not a folder")
    if args.top or args.bottom or args.label is not None:
        raise UsageError("--misclassified picks the classes itself (predicted and true); leave out --top, --bottom "
                         "and --label")
    kw = accentuation_kwargs(args)
    output_dir(args, create=False)
    model, spec, load_s = load_timed(args)
    tree = labelled_tree(root, spec.labels)
    settings = build_settings(model, spec, kw)
    skipped: list[dict[str, str]] = []
    images = load_images([(str(t.path), True) for t in tree], settings.canvas, skipped)
    truth = {str(t.path): t.label for t in tree}
    true = [truth[im.path] for im in images]
    probs = classify(model, spec, [im.tensor for im in images])  # type: ignore[misc]
    pred = probs.argmax(1).tolist()
    labels = spec.labels or ()
    wrong = [k for k in range(len(images)) if pred[k] != true[k]]
    summary: dict[str, Any] = {
        "root": str(root), "images": len(images), "wrong": len(wrong),
        "accuracy": round(1 - len(wrong) / max(1, len(images)), 6),
        "mistakes": [{"image": str(Path(images[k].path).relative_to(root)), "true": labels[true[k]],
                      "predicted": labels[pred[k]], "prob_predicted": round(float(probs[k, pred[k]]), 6),
                      "prob_true": round(float(probs[k, true[k]]), 6)} for k in wrong],
    }
    out = output_dir(args)
    lead = Ranks.from_env().rank == 0
    if not wrong:
        if lead:
            atomic_write(out / "misclassified.json", (json.dumps(summary, indent=2) + "\n").encode())
            say(args.quiet, f"accentuate: {spec.name} gets all {len(images)} image(s) of {root} right; nothing to "
                "explain (summary in misclassified.json)")
        return 0
    classes = sorted({pred[k] for k in wrong} | {true[k] for k in wrong})
    col = {c: n for n, c in enumerate(classes)}
    targets = [TargetInfo(labels[c], logit(c).resolve(spec.labels)) for c in classes]
    pairs = [p for r, k in enumerate(wrong) for p in ((r, col[pred[k]]), (r, col[true[k]]))]
    say(args.quiet and lead, f"accentuate: {spec.name} gets {len(wrong)} of {len(images)} image(s) wrong; "
        f"accentuating each one's predicted and true class")
    plan = Plan(subcommand="explain", argv=list(args.argv), model_arg=args.model, model=model,
                images=[images[k] for k in wrong], targets=targets, spec=spec, settings=settings, out=out,
                quiet=args.quiet, batch=args.batch, frames=args.frames, model_load_s=load_s,
                extra={"misclassified": summary, **({"skipped_images": skipped} if skipped else {})}, pairs=pairs)
    code = execute(plan)
    if not lead or not (out / "run.json").exists():
        return code
    doc = json.loads((out / "run.json").read_text("utf-8"))
    cells = {(e["seed"], e["target"]): e for e in doc["pairs"]}
    listed: list[dict[str, Any]] = []
    for c in confusions([true[k] for k in wrong], [pred[k] for k in wrong])[:args.confusions]:
        name = f"confusion-{slug(labels[c.true])}__{slug(labels[c.predicted])}.png"
        seeds, grid = [], {}
        for r, row in enumerate(c.images):
            im = plan.images[row]
            seeds.append((str(Path(im.path).relative_to(root)), figures.to_pil(im.tensor)))  # type: ignore[arg-type]
            for k, cls in enumerate((c.predicted, c.true)):
                e = cells.get((row, col[cls]))
                if e is None or "image" not in e.get("files", {}):
                    continue
                with Image.open(out / e["files"]["image"]) as f:
                    grid[(r, k)] = (f.convert("RGB"), f"p {figures_prob(e['before'])} -> {figures_prob(e['after'])}")
        sheet = figures.contact_sheet(seeds, [f"toward predicted: {labels[c.predicted]}",
                                              f"toward true: {labels[c.true]}"], grid,
                                      title=f"{c.count} x {labels[c.true]} taken for {labels[c.predicted]} "
                                      f"({spec.name})")
        atomic_write(out / name, figures.png_bytes(sheet))
        listed.append({"true": labels[c.true], "predicted": labels[c.predicted], "count": c.count, "panel": name,
                       "images": [seeds[r][0] for r in range(len(c.images))]})
    doc["misclassified"]["confusions"] = listed
    atomic_write(out / "run.json", (json.dumps(doc, indent=2, default=str) + "\n").encode())
    if not args.quiet:
        print(f"{len(wrong)} of {len(images)} image(s) misclassified by {spec.name}; most frequent confusions:")
        for item in listed:
            print(f"  {item['count']} x {item['true']} -> {item['predicted']}: {out / item['panel']}")
    return code


def figures_prob(numbers: dict[str, Any]) -> str:
    """The target class's probability of a recorded pair, as text (``n/a`` when not finite)."""
    p = numbers.get("prob")
    return "n/a" if p is None else f"{p:.2f}"

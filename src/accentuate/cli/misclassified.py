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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..analysis.misclassified import classify, confusions, labelled_tree
from ..errors import UsageError
from ..objectives import logit
from ..outputs import figures
from ..outputs.io import atomic_write
from ..runs import ImageInfo, RunWriter, TargetInfo, execute
from ..runs.distributed import Ranks
from ..runs.work import slug
from .command import Command, finish, say
from .common import make_output

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
    cmd = Command(args, "explain")
    model, spec = cmd.model, cmd.spec
    tree = labelled_tree(root, spec.labels)
    settings = cmd.settings()
    images = cmd.images([(str(t.path), True) for t in tree], settings)
    truth = {str(t.path): t.label for t in tree}
    true = [truth[im.path] for im in images]
    probs = classify(model, spec, [im.tensor for im in images], runner=cmd.runner)  # type: ignore[misc]
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
    lead = Ranks.from_env().rank == 0
    if not wrong:
        out = make_output(cmd.out)
        if lead:
            atomic_write(out / "misclassified.json", (json.dumps(summary, indent=2) + "\n").encode())
            say(args.quiet, f"accentuate: {spec.name} gets all {len(images)} image(s) of {root} right; nothing to "
                "explain (summary in misclassified.json)")
        return 0
    classes = sorted({pred[k] for k in wrong} | {true[k] for k in wrong})
    col = {c: n for n, c in enumerate(classes)}
    targets = [TargetInfo(labels[c], logit(c).resolve(spec.labels)) for c in classes]
    pairs = [p for r, k in enumerate(wrong) for p in ((r, col[pred[k]]), (r, col[true[k]]))]
    say(args.quiet or not lead, f"accentuate: {spec.name} gets {len(wrong)} of {len(images)} image(s) wrong; "
        f"accentuating each one's predicted and true class")
    plan = cmd.plan(settings, [images[k] for k in wrong], targets, pairs=pairs, kind="misclassified",
                    extra={"misclassified": summary})
    listed: list[dict[str, Any]] = []

    def panels(writer: RunWriter) -> None:
        """The confusion panels, from every recorded pair (all ranks'), into the record."""
        cells = {(e["seed"], e["target"]): e for e in writer.entries()}
        for c in confusions([true[k] for k in wrong], [pred[k] for k in wrong])[:args.confusions]:
            listed.append(_panel(plan.out, c, plan.images, cells, col, labels, root, spec.name))
        summary["confusions"] = listed
        writer.add_sections(misclassified=summary)

    code = finish(plan, execute(plan, before_save=panels))
    if lead and not args.quiet and listed:
        print(f"{len(wrong)} of {len(images)} image(s) misclassified by {spec.name}; most frequent confusions:")
        for item in listed:
            print(f"  {item['count']} x {item['true']} -> {item['predicted']}: {plan.out / item['panel']}")
    return code


def _panel(out: Path, c: Any, images: Sequence[ImageInfo], cells: dict[tuple[int, int], dict[str, Any]],
           col: dict[int, int], labels: Sequence[str], root: Path, model_name: str) -> dict[str, Any]:
    """One confusion's panel (its images toward the predicted and the true class), written to
    ``out``; returns its record."""
    name = f"confusion-{slug(labels[c.true])}__{slug(labels[c.predicted])}.png"
    seeds, grid = [], {}
    for r, row in enumerate(c.images):
        im = images[row]
        seeds.append((str(Path(im.path).relative_to(root)), figures.to_pil(im.tensor)))  # type: ignore[arg-type]
        for k, cls in enumerate((c.predicted, c.true)):
            e = cells.get((row, col[cls]))
            if e is None or "image" not in e.get("files", {}):
                continue
            with Image.open(out / e["files"]["image"]) as f:
                grid[(r, k)] = (f.convert("RGB"), f"p {figures_prob(e['before'])} -> {figures_prob(e['after'])}")
    sheet = figures.contact_sheet(seeds, [f"toward predicted: {labels[c.predicted]}",
                                          f"toward true: {labels[c.true]}"], grid,
                                  title=f"{c.count} x {labels[c.true]} taken for {labels[c.predicted]} ({model_name})")
    atomic_write(out / name, figures.png_bytes(sheet))
    return {"true": labels[c.true], "predicted": labels[c.predicted], "count": c.count, "panel": name,
            "images": [seeds[r][0] for r in range(len(c.images))]}


def figures_prob(numbers: dict[str, Any]) -> str:
    """The target class's probability of a recorded pair, as text (``n/a`` when not finite)."""
    p = numbers.get("prob")
    return "n/a" if p is None else f"{p:.2f}"

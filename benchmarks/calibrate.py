"""Calibration of the embedded model's defaults: does the target show up, and how much changes?

For each bundled photo, draws random ImageNet classes (fixed seed; classes already in the
photo's top-5 are excluded) and accentuates them with the model's default settings (or the
overrides given on the command line). Snapshots every ``--every`` steps give, from one run,
the figures a run of 10, 20, ... steps would have given (the optimization is deterministic
for a fixed generator, so step t of a long run is a t-step run).

Reports per pair: rank before/after, probability, SSIM to the seed (grayscale, both resized
to 224 x 224); and per step count: the share of pairs whose target is the model's top-1 on
the final un-augmented image, and the mean SSIM.

    python benchmarks/calibrate.py                       # defaults, 6 photos x 4 classes
    python benchmarks/calibrate.py --lam 0.1 --out benchmarks/calibration/lam0.1.json
    python benchmarks/calibrate.py --until top1          # least-change stopping on the same pairs
    python benchmarks/calibrate.py --least-change 3 --photos chelsea coffee   # + lambda search
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import accentuate as acc
from accentuate.images import resize
from accentuate.metrics import ssim

PHOTOS = ["chelsea", "coffee", "motorcycle", "astronaut", "rocket", "hubble"]


def draw_pairs(model: torch.nn.Module, per_photo: int, seed: int) -> list[tuple[str, list[int]]]:
    """Random classes per photo, excluding the photo's own top-5 (fixed generator)."""
    g = torch.Generator().manual_seed(seed)
    spec = model.accentuate_spec
    out = []
    for name in PHOTOS:
        x = resize(acc.load_image(acc.photo(name)), spec.input_size)[None]
        with torch.no_grad():
            top5 = set(spec.forward(model, x)[0].topk(5).indices.tolist())
        classes: list[int] = []
        while len(classes) < per_photo:
            c = int(torch.randint(0, 1000, (1,), generator=g))
            if c not in top5 and c not in classes:
                classes.append(c)
        out.append((name, classes))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-photo", type=int, default=4)
    ap.add_argument("--pairs-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="generator seed of each run")
    ap.add_argument("--every", type=int, default=10, help="snapshot interval (steps)")
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--reg-layer", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--param", default=None)
    ap.add_argument("--canvas", type=int, default=None)
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--until", default=None)
    ap.add_argument("--preview", action="store_true",
                    help="the preview preset (accentuate.settings.PRESETS['preview']: canvas, crops, "
                         "until, check_every), as `accentuate run --preview` uses it")
    ap.add_argument("--least-change", type=int, default=0, metavar="ROUNDS",
                    help="least-change search (accentuate.least_change, until top-1, lambda bisected) "
                         "with this many rounds per photo, instead of fixed-lambda runs")
    ap.add_argument("--photos", nargs="*", default=None, help="subset of bundled photos")
    ap.add_argument("--out", default="benchmarks/calibration/defaults.json")
    ap.add_argument("--images", default=None, help="folder for the result PNGs (to look at)")
    ap.add_argument("--markdown", default=None, help="also write the tables as markdown here")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = acc.load_model("efficientnet_lite0")
    labels = model.accentuate_spec.labels
    pairs = draw_pairs(model, args.per_photo, args.pairs_seed)
    if args.photos:
        pairs = [p for p in pairs if p[0] in args.photos]
    overrides = {k: v for k, v in dict(lam=args.lam, reg_layer=args.reg_layer, steps=args.steps, lr=args.lr,
                                        param=args.param, canvas=args.canvas).items() if v is not None}
    if args.preview:
        from accentuate.settings import PRESETS

        preset = dict(PRESETS["preview"])
        args.crops = preset.pop("crops")
        args.until = preset.pop("until")
        overrides.update(preset)
    if args.least_change:
        return least_change_report(args, model, pairs, overrides)
    rows, per_step = [], {}
    started = time.time()
    config = None
    for name, classes in pairs:
        t0 = time.time()
        res = acc.accentuate(model, acc.photo(name), classes, crops=args.crops, seed=args.seed,
                             snapshots=args.every, until=args.until, **overrides)
        config = {**res.config.to_dict(), **res.run}
        seed = res.seeds[0]
        hist_rank = res.history.rank  # (records, 1, M); record i is after step i + 1
        for j, c in enumerate(classes):
            for step, snap in sorted(res.snapshots.items()):
                if step == 0:
                    continue
                rank = int(hist_rank[min(step, len(hist_rank)) - 1, 0, j])
                s = float(ssim(snap[0, j].float() / 255, seed))
                per_step.setdefault(step, []).append((rank, s))
            final = res.images[0, j]
            row = {
                "photo": name, "class": c, "name": labels[c],
                "rank_before": int(res.before["rank"][0, j]), "rank_after": int(res.after["rank"][0, j]),
                "prob_after": round(float(res.after["prob"][0, j]), 4),
                "ssim": round(float(ssim(final, seed)), 4),
                "steps_used": int(res.steps_used[0, j]),
                "lam_effective": round(float(res.lam_effective[0, j]), 5),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        save_images(args.images, name, classes, res.images[0])
        print(f"# {name}: {time.time() - t0:.0f} s", flush=True)
    summary = {
        str(step): {"pairs": len(v), "top1": sum(r == 1 for r, _ in v) / len(v),
                    "mean_ssim": round(sum(s for _, s in v) / len(v), 4)}
        for step, v in sorted(per_step.items())
    }
    final = {"pairs": len(rows), "top1": sum(r["rank_after"] == 1 for r in rows) / len(rows),
             "mean_ssim": round(sum(r["ssim"] for r in rows) / len(rows), 4),
             "mean_steps": sum(r["steps_used"] for r in rows) / len(rows)}
    doc = {"config": config, "overrides": overrides, "until": args.until, "final": final,
           "by_steps": summary, "pairs": rows, "seconds": round(time.time() - started),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps(doc, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(doc, " ".join(sys.argv[1:])))
    print(json.dumps(final))


def save_images(folder: str | None, photo: str, classes: list[int], images: torch.Tensor, suffix: str = "") -> None:
    """The results of one photo as PNGs named ``{photo}_{class}{suffix}.png`` (to look at)."""
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    for j, c in enumerate(classes):
        acc.images.tensor_to_pil(images[j]).save(Path(folder) / f"{photo}_{c}{suffix}.png")


def least_change_report(args: argparse.Namespace, model: torch.nn.Module, pairs: list[tuple[str, list[int]]],
                        overrides: dict) -> None:
    """Least-change mode on the calibration pairs: per pair, round 1 (default lambda,
    stopped at top-1) and the kept result of the lambda search."""
    labels = model.accentuate_spec.labels
    rows = []
    started = time.time()
    config = None
    for name, classes in pairs:
        t0 = time.time()
        lc = acc.least_change(model, acc.photo(name), classes, rounds=args.least_change, until="top1",
                              crops=args.crops, seed=args.seed, **overrides)
        config = {**lc.result.config.to_dict(), **lc.result.run}
        first = lc.rounds[0]
        for j, c in enumerate(classes):
            row = {
                "photo": name, "class": c, "name": labels[c],
                "first_reached": bool(first["reached"][0, j]), "first_steps": int(first["steps"][0, j]),
                "first_ssim": round(float(first["ssim"][0, j]), 4), "first_lam": float(first["lam"][0, j]),
                "reached": bool(lc.reached[0, j]), "lam": round(float(lc.lam[0, j]), 4),
                "steps": int(lc.steps[0, j]), "ssim": round(float(lc.ssim[0, j]), 4), "rank": int(lc.rank[0, j]),
                "lams_tried": [round(float(r["lam"][0, j]), 4) for r in lc.rounds],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        save_images(args.images, name, classes, lc.images[0], "_least")
        print(f"# {name}: {time.time() - t0:.0f} s", flush=True)
    n = len(rows)
    final = {"pairs": n, "first_reached": sum(r["first_reached"] for r in rows) / n,
             "first_mean_ssim": round(sum(r["first_ssim"] for r in rows) / n, 4),
             "first_mean_steps": sum(r["first_steps"] for r in rows) / n,
             "reached": sum(r["reached"] for r in rows) / n, "mean_ssim": round(sum(r["ssim"] for r in rows) / n, 4),
             "mean_steps": sum(r["steps"] for r in rows) / n}
    doc = {"config": config, "overrides": overrides, "rounds": args.least_change, "final": final, "pairs": rows,
           "seconds": round(time.time() - started), "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps(doc, indent=1))
    if args.markdown:
        lines = [f"Command: `python benchmarks/calibrate.py {' '.join(sys.argv[1:])}`", "",
                 f"Machine: {doc['machine']}, torch {doc['torch']}, {doc['date']}, {doc['seconds']} s.", "",
                 "| photo | class | round 1: steps to top-1 | round 1: SSIM | lambdas tried | kept lambda | "
                 "kept steps | kept SSIM | rank |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
        for r in rows:
            first = f"{r['first_steps']}" if r["first_reached"] else f"not in {r['first_steps']}"
            lines.append(f"| {r['photo']} | {r['class']} {r['name']} | {first} | {r['first_ssim']:.3f} | "
                         f"{', '.join(f'{v:g}' for v in r['lams_tried'])} | {r['lam']:g} | {r['steps']} | "
                         f"{r['ssim']:.3f} | {r['rank']} |")
        lines += ["", f"**{n} pairs. Round 1 (default lambda, stop at top-1): reached {final['first_reached']:.0%}, "
                  f"mean steps {final['first_mean_steps']:.1f}, mean SSIM {final['first_mean_ssim']:.3f}. "
                  f"Kept (after the lambda search): reached {final['reached']:.0%}, mean steps "
                  f"{final['mean_steps']:.1f}, mean SSIM {final['mean_ssim']:.3f}.**"]
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    print(json.dumps(final))


def markdown(doc: dict, argv: str) -> str:
    """The calibration table as markdown."""
    lines = [f"Command: `python benchmarks/calibrate.py {argv}`", "",
             f"Machine: {doc['machine']}, torch {doc['torch']}, {doc['date']}, {doc['seconds']} s.", "",
             f"Settings: {json.dumps({k: doc['config'][k] for k in ('reg_layer', 'lam', 'steps', 'lr', 'param', 'canvas', 'crops', 'crop_range', 'until') if doc['config'] and k in doc['config']})}",
             "", "| photo | class | rank before | rank after | p after | SSIM | steps | lam x balance |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["pairs"]:
        lines.append(f"| {r['photo']} | {r['class']} {r['name']} | {r['rank_before']} | {r['rank_after']} | "
                     f"{r['prob_after']:.3f} | {r['ssim']:.3f} | {r['steps_used']} | {r['lam_effective']:.3f} |")
    f = doc["final"]
    lines += ["", f"**{f['pairs']} pairs: top-1 in {f['top1']:.0%}, mean SSIM {f['mean_ssim']:.3f}, "
              f"mean steps {f['mean_steps']:.1f}.**", "",
              "By step count (the same runs, read at each snapshot):", "",
              "| steps | pairs | top-1 | mean SSIM |", "|---:|---:|---:|---:|"]
    for step, v in doc["by_steps"].items():
        lines.append(f"| {step} | {v['pairs']} | {v['top1']:.0%} | {v['mean_ssim']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

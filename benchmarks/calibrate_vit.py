"""Calibration on a model without classes: reference-image ("like") pairs, with patch-grid scores.

Each bundled photo is accentuated toward another one (``acc.like``: the cosine between the
two images' features at the model's default like layer, for DINOv2 the final layer norm's
class token). Reports per pair the cosine to the reference before and after, SSIM to the
seed (grayscale, 224 x 224) and the patch-grid score of the change (``result - seed``,
:func:`accentuate.metrics.patch_grid_score` at ``input / patch`` periods per extent, up
to half the input size: what the model sees in the whole view). Snapshots every
``--every`` steps give the figures of shorter runs from the same runs.

The same pairs on EfficientNet-Lite0 (``--model efficientnet_lite0``) give the CNN's
grid score at the same frequencies (it has no patches: its score is the level of a
model without a grid).

    python benchmarks/calibrate_vit.py --out benchmarks/calibration/vit-defaults.json
    python benchmarks/calibrate_vit.py --reg-layer encoder.layer.7 --out ...
    python benchmarks/calibrate_vit.py --model efficientnet_lite0 --out ...
    python benchmarks/calibrate_vit.py --summarize a.json b.json --markdown table.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import accentuate as acc
from accentuate.metrics import patch_grid_score, ssim

#: (seed, reference) pairs: every bundled photo once as a seed.
PAIRS = [("chelsea", "astronaut"), ("coffee", "chelsea"), ("motorcycle", "rocket"), ("astronaut", "chelsea"),
         ("rocket", "motorcycle"), ("hubble", "coffee")]


def grid(change: torch.Tensor, input_size: tuple[int, int], patch: int) -> float:
    """The patch-grid score of one change image at the model's patch frequency."""
    return float(patch_grid_score(change, input_size[0] / patch, limit=input_size[0] / 2))


def run(args: argparse.Namespace) -> dict:
    model = acc.load_model(args.model)
    spec = model.accentuate_spec
    patch = spec.patch_size or args.patch
    pairs = [p for p in PAIRS if not args.photos or p[0] in args.photos]
    overrides = {k: v for k, v in dict(lam=args.lam, reg_layer=args.reg_layer, steps=args.steps, lr=args.lr,
                                        param=args.param, crops=args.crops,
                                        canvas=None if args.canvas is None else (
                                            args.canvas[0] if len(args.canvas) == 1 else tuple(args.canvas)),
                                        crop_range=tuple(args.crop_range) if args.crop_range else None).items()
                 if v is not None}
    rows, per_step, config = [], {}, None
    started = time.time()
    for seed_name, ref_name in pairs:
        t0 = time.time()
        target = acc.like(acc.photo(ref_name), model, args.layer)
        res = acc.accentuate(model, acc.photo(seed_name), target, seed=args.seed, snapshots=args.every,
                             progress=False, **overrides)
        config = {**res.config.to_dict(), **{k: v for k, v in res.run.items() if k != "seconds"}}
        seed = res.seeds[0]
        values = res.history.value[:, 0, 0]
        for step, snap in sorted(res.snapshots.items()):
            if step == 0:
                continue
            img = snap[0, 0].float() / 255
            per_step.setdefault(step, []).append(
                (float(values[min(step, len(values)) - 1]), float(ssim(img, seed)),
                 grid(img - seed, spec.input_size, patch)))
        final = res.images[0, 0]
        row = {"seed": seed_name, "reference": ref_name, "layer": target.layer,
               "cos_before": round(float(res.before["value"][0, 0]), 4),
               "cos_after": round(float(res.after["value"][0, 0]), 4),
               "ssim": round(float(ssim(final, seed)), 4),
               "grid_db": round(grid(final - seed, spec.input_size, patch), 3),
               "lam_effective": round(float(res.lam_effective[0, 0]), 5),
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.images:
            Path(args.images).mkdir(parents=True, exist_ok=True)
            stem = Path(args.images) / f"{seed_name}_like_{ref_name}"
            acc.images.tensor_to_pil(final).save(f"{stem}.png")
            acc.images.tensor_to_pil(seed).save(f"{stem}_seed.png")
            # The change, amplified 4 x around mid-grey (what the grid score is computed on).
            acc.images.tensor_to_pil((0.5 + 4 * (final - seed)).clamp(0, 1)).save(f"{stem}_change.png")
    n = len(rows)
    final_ = {"pairs": n, "mean_cos_before": round(sum(r["cos_before"] for r in rows) / n, 4),
              "mean_cos_after": round(sum(r["cos_after"] for r in rows) / n, 4),
              "raised": sum(r["cos_after"] > r["cos_before"] for r in rows),
              "mean_ssim": round(sum(r["ssim"] for r in rows) / n, 4),
              "min_ssim": round(min(r["ssim"] for r in rows), 4),
              "mean_grid_db": round(sum(r["grid_db"] for r in rows) / n, 3)}
    by_steps = {str(s): {"pairs": len(v), "mean_cos": round(sum(a for a, _, _ in v) / len(v), 4),
                         "mean_ssim": round(sum(b for _, b, _ in v) / len(v), 4),
                         "mean_grid_db": round(sum(c for _, _, c in v) / len(v), 3)}
                for s, v in sorted(per_step.items())}
    load = os.getloadavg()
    return {"model": args.model, "tag": args.tag or "", "config": config, "overrides": overrides,
            "final": final_, "by_steps": by_steps, "pairs": rows, "seconds": round(time.time() - started),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"torch threads {torch.get_num_threads()}, load average at end {load[0]:.1f}",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/calibrate_vit.py " + " ".join(sys.argv[1:])}


def markdown(docs: list[dict]) -> str:
    """One table per run, then a comparison row per run."""
    keys = ("reg_layer", "lam", "steps", "lr", "param", "canvas", "crops", "crop_range")
    lines = ["| run | model | settings | pairs | cosine before -> after (mean) | raised | mean SSIM | min SSIM | "
             "grid score (dB) | time |", "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for d in docs:
        f, c = d["final"], d["config"] or {}
        settings = ", ".join(f"{k} {json.dumps(c[k])}" for k in keys if k in c)
        lines.append(f"| {d['tag']} | {d['model']} | {settings} | {f['pairs']} | {f['mean_cos_before']:.3f} -> "
                     f"{f['mean_cos_after']:.3f} | {f['raised']}/{f['pairs']} | {f['mean_ssim']:.3f} | "
                     f"{f['min_ssim']:.3f} | {f['mean_grid_db']:.2f} | {d['seconds']} s |")
    for d in docs:
        lines += ["", f"### {d['tag'] or d['model']}", "", f"Command: `{d['command']}`", "",
                  f"Machine: {d['machine']}, torch {d['torch']}, {d['date']}, {d['seconds']} s.", "",
                  "| seed | like | cosine before | cosine after | SSIM | grid score (dB) | lam x balance |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in d["pairs"]:
            lines.append(f"| {r['seed']} | {r['reference']} | {r['cos_before']:.3f} | {r['cos_after']:.3f} | "
                         f"{r['ssim']:.3f} | {r['grid_db']:.2f} | {r['lam_effective']:.3f} |")
        if d["by_steps"]:
            lines += ["", "| steps | mean cosine | mean SSIM | grid score (dB) |", "|---:|---:|---:|---:|"]
            for s, v in d["by_steps"].items():
                lines.append(f"| {s} | {v['mean_cos']:.3f} | {v['mean_ssim']:.3f} | {v['mean_grid_db']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinov2_vits14_focus")
    ap.add_argument("--layer", default=None, help="the like layer (default: acc.default_like_layer)")
    ap.add_argument("--patch", type=int, default=14,
                    help="grid period in input pixels for a model whose spec has no patch size (the CNN)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed of each run")
    ap.add_argument("--every", type=int, default=10, help="snapshot interval (steps)")
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--reg-layer", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--param", default=None)
    ap.add_argument("--canvas", type=int, nargs="+", default=None, help="the long side, or H W")
    ap.add_argument("--crops", type=int, default=None)
    ap.add_argument("--crop-range", type=float, nargs=2, default=None)
    ap.add_argument("--photos", nargs="*", default=None, help="subset of the pairs, by seed photo")
    ap.add_argument("--tag", default=None, help="the run's name in the tables")
    ap.add_argument("--out", default=None, help="write the run as JSON here")
    ap.add_argument("--images", default=None, help="folder for the result PNGs (to look at)")
    ap.add_argument("--summarize", nargs="*", default=None, help="only build the tables from these JSON files")
    ap.add_argument("--markdown", default=None, help="write the tables as markdown here")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.summarize:
        docs = [json.loads(Path(p).read_text()) for p in args.summarize]
    else:
        doc = run(args)
        if args.out:
            Path(args.out).write_text(json.dumps(doc, indent=1))
        print(json.dumps(doc["final"]))
        docs = [doc]
    if args.markdown:
        Path(args.markdown).write_text(markdown(docs))


if __name__ == "__main__":
    main()

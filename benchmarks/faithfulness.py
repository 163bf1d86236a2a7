"""Recipes side by side: does the accentuation move models that never saw it, and how much does it change?

Pairs: ``--pool`` photos of the GCompris pool (`make photos`, docs/photos.md), drawn with a fixed
generator, each toward a random ImageNet class that is neither its own class nor in the embedded
model's top-5 on it; plus the 24 calibration pairs of ``benchmarks/calibrate.py`` (the bundled
photos). Each pair is accentuated on EfficientNet-Lite0 with each recipe:

- ``naive``: the adversarial baseline: pixel parameterization, lambda 0, no augmentation (one
  full-frame crop, no noise), on the model's own view of the photo (224 x 224, squashed as the
  model sees the canvas), 40 steps;
- ``reference``: the reference recipe (faccent's defaults, /work/shared/PRIOR-ART.md,
  ``accentuate.spec.REFERENCE_DEFAULTS``): lambda 1, Fourier, 100 steps, canvas 512, 16 crops;
- ``defaults``: the model's calibrated defaults, nothing overridden;
- ``preview``: ``accentuate.PRESETS["preview"]`` (``accentuate run --preview``);
- ``least-change``: ``accentuate.least_change`` (stop at top-1, lambda bisected per pair) with 3
  rounds, as ``benchmarks/calibrate.py --least-change 3`` (the library's default is 4; its second
  round, at lambda 4.47, rarely reaches the target, so a fourth round mostly refines the third).

Snapshots of the same runs give, at no cost, the defaults at 10, 20 and 30 steps and the reference
recipe at 20 to 80 steps (step t of a run is a t-step run: the optimization has no schedule).

Then each result is shown to the judges (``accentuate.judges``: MobileNetV2, EfficientNet-Lite1,
EfficientNet-Lite2, each with its own preprocessing): the target's rank and probability before (the
seed) and after, and the change of the judge's pooled penultimate features (1 - cosine to the seed's).

    nice -n 15 python benchmarks/faithfulness.py                    # every stage; resumable
    python benchmarks/faithfulness.py --pool 1 --no-calibration --smoke   # a quick check (2 steps)
    python benchmarks/faithfulness.py --stage report                # tables and figure from the cache

Every result is cached per recipe and pair under ``--cache`` (default
``~/.cache/accentuate/faithfulness``): a rerun skips what is there, so the run can be stopped and
resumed, and the judges and the report can be redone without optimizing again.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import accentuate as acc
from accentuate.digest import canonical_sha256
from accentuate.images import resize, tensor_to_pil
from accentuate.metrics import class_rank, ssim
from accentuate.spec import REFERENCE_DEFAULTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate import draw_pairs  # noqa: E402  (the calibration pairs)
from photos import default_cache  # noqa: E402  (where the pool is)

MODEL = "efficientnet_lite0"

#: The recipes: ``kind`` is ``accentuate`` or ``least_change``; ``settings`` are the overrides;
#: ``view`` = True feeds the model's own 224 x 224 view of the photo as the seed (no canvas);
#: ``snapshots`` are read as extra points (``recipe@step``).
RECIPES: dict[str, dict[str, Any]] = {
    "naive": {"kind": "accentuate", "view": True, "snapshots": [10, 20],
              "settings": {"param": "pixel", "lam": 0.0, "steps": 40, "crops": 1, "crop_range": (1.0, 1.0),
                           "noise": (0.0, 0.0), "canvas": (224, 224)}},
    "preview": {"kind": "accentuate", "settings": dict(acc.PRESETS["preview"])},
    "defaults": {"kind": "accentuate", "snapshots": [10, 20, 30], "settings": {}},
    "least-change": {"kind": "least_change", "rounds": 3, "settings": {}},
    "reference": {"kind": "accentuate", "snapshots": [20, 40, 60, 80],
                  "settings": {k: REFERENCE_DEFAULTS[k] for k in ("lam", "steps", "lr", "param", "canvas",
                                                                   "crops", "crop_range")}},
}


def recipe_key(name: str, smoke: bool) -> str:
    """The cache folder of a recipe: its name and a hash of its definition (a changed recipe reruns)."""
    r = RECIPES[name]
    return f"{name}-{canonical_sha256({'recipe': r, 'smoke': smoke, 'model': MODEL})[:8]}"


# -- pairs ----------------------------------------------------------------------------------------
def model_view(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The logits of the model on its un-augmented view of ``image`` (the whole image resized to its input)."""
    spec = model.accentuate_spec
    with torch.no_grad():
        return spec.forward(model, resize(image[None], spec.input_size))[0]


def pool_pairs(model: torch.nn.Module, cache: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` pool photos (a fixed draw), each toward a random class not its own nor in the model's top-5."""
    path = cache / "manifest.csv"
    if not path.exists():
        raise SystemExit(f"error: no photo pool at {cache}; run `make photos` (or set ACCENTUATE_PHOTOS)")
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=g).tolist()[:count]
    labels = model.accentuate_spec.labels
    pairs = []
    for i in order:
        r = rows[i]
        logits = model_view(model, acc.load_image(cache / r["path"]))
        exclude = set(logits.topk(5).indices.tolist())
        if r["imagenet_index"]:
            exclude.add(int(r["imagenet_index"]))
        while True:
            c = int(torch.randint(0, 1000, (1,), generator=g))
            if c not in exclude:
                break
        pairs.append({"id": f"pool-{r['folder']}-{r['name']}-{c}", "source": "pool", "photo": r["path"],
                      "photo_name": f"{r['folder']}/{r['name']}", "own_class": r["imagenet_class"] or None,
                      "target": c, "target_name": labels[c]})
    return pairs


def calibration_pairs(model: torch.nn.Module) -> list[dict[str, Any]]:
    """The 24 pairs of benchmarks/calibrate.py (bundled photos x 4 random classes, generator 0)."""
    labels = model.accentuate_spec.labels
    return [{"id": f"cal-{name}-{c}", "source": "calibration", "photo": name, "photo_name": name, "own_class": None,
             "target": c, "target_name": labels[c]} for name, classes in draw_pairs(model, 4, 0) for c in classes]


def photo_path(pair: dict[str, Any], cache: Path) -> Path:
    return acc.photo(pair["photo"]) if pair["source"] == "calibration" else cache / pair["photo"]


# -- one recipe on one pair -------------------------------------------------------------------------
def save_png(t: torch.Tensor, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    tensor_to_pil(t).save(tmp)
    os.replace(tmp, path)


def run_one(model: torch.nn.Module, pair: dict[str, Any], recipe: str, folder: Path, photos: Path,
            smoke: bool) -> dict[str, Any]:
    """Accentuate one pair with one recipe; write ``ID.png`` (the result), ``ID_seed.png``,
    ``ID@STEP.png`` (snapshots) and ``ID.json`` (the model's numbers, SSIM, timing)."""
    r = RECIPES[recipe]
    settings = dict(r["settings"])
    if smoke:
        settings["steps"] = 2
    snaps = [s for s in r.get("snapshots", []) if s < settings.get("steps", 10**9)] if not smoke else []
    seed: Any = photo_path(pair, photos)
    image = acc.load_image(seed)
    if r.get("view"):
        seed = resize(image, model.accentuate_spec.input_size)
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    rec: dict[str, Any] = {"pair": pair["id"], "recipe": recipe, "settings": settings}
    if r["kind"] == "least_change":
        lc = acc.least_change(model, seed, pair["target"], generator=0, rounds=r["rounds"], **settings)
        final, seed_t = lc.images[0, 0], lc.result.seeds[0]
        rec.update(steps=int(lc.steps[0, 0]), lam=float(lc.lam[0, 0]), reached=bool(lc.reached[0, 0]),
                   rounds=len(lc.rounds), config=lc.result.config.to_dict())
        history = None
    else:
        res = acc.accentuate(model, seed, pair["target"], generator=0, snapshots=snaps, **settings)
        final, seed_t = res.images[0, 0], res.seeds[0]
        rec.update(steps=int(res.steps_used[0, 0]), lam=float(res.lam_effective[0, 0]), config=res.config.to_dict())
        history = res
    rec.update(seconds=round(time.perf_counter() - t0, 2), cpu_seconds=round(time.process_time() - cpu0, 2),
               load=[round(load0, 2), round(os.getloadavg()[0], 2)], threads=torch.get_num_threads())
    c = torch.tensor(pair["target"])
    rank_b, prob_b = class_rank(model_view(model, seed_t), c)
    rank_a, prob_a = class_rank(model_view(model, final), c)
    rec.update(rank_before=int(rank_b), prob_before=float(prob_b), rank_after=int(rank_a), prob_after=float(prob_a),
               ssim=float(ssim(final, seed_t)), canvas=list(final.shape[-2:]))
    pid = pair["id"]
    save_png(seed_t, folder / f"{pid}_seed.png")
    save_png(final, folder / f"{pid}.png")
    if history is not None and snaps:
        rec["snapshots"] = {}
        for step, snap in sorted(history.snapshots.items()):
            if step not in snaps:
                continue
            img = snap[0, 0].float() / 255
            rk, pb = class_rank(model_view(model, img), c)
            save_png(img, folder / f"{pid}@{step}.png")
            rec["snapshots"][str(step)] = {"rank_after": int(rk), "prob_after": float(pb),
                                           "ssim": float(ssim(img, seed_t))}
    tmp = folder / f"{pid}.json.tmp"
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, folder / f"{pid}.json")
    return rec


def run_stage(args: argparse.Namespace, model: torch.nn.Module, pairs: list[dict[str, Any]], photos: Path,
              log: Callable[[str], None]) -> None:
    """Every recipe on every pair (pair by pair, so that a partial run compares the recipes on the same pairs)."""
    for k, pair in enumerate(pairs):
        for recipe in args.recipes:
            folder = args.cache / recipe_key(recipe, args.smoke)
            folder.mkdir(parents=True, exist_ok=True)
            if (folder / f"{pair['id']}.json").exists():
                continue
            rec = run_one(model, pair, recipe, folder, photos, args.smoke)
            log(f"[{k + 1}/{len(pairs)}] {recipe:13s} {pair['id']}: rank {rec['rank_before']} -> {rec['rank_after']}, "
                f"SSIM {rec['ssim']:.3f}, {rec['seconds']:.0f} s (cpu {rec['cpu_seconds']:.0f} s, load "
                f"{rec['load'][0]:.1f}-{rec['load'][1]:.1f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=100, help="pool photos (one pair each; default 100)")
    ap.add_argument("--pairs-seed", type=int, default=0, help="generator seed of the pool draw")
    ap.add_argument("--no-calibration", action="store_true", help="leave out the 24 calibration pairs")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--stage", choices=("run", "judge", "report", "all"), default="all")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "accentuate" / "faithfulness")
    ap.add_argument("--photos", type=Path, default=None, help="the photo pool (default: make photos' cache)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="2 steps per recipe (a check of the script, not a result)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    photos = args.photos or default_cache()
    args.cache.mkdir(parents=True, exist_ok=True)
    logfile = open(args.cache / "log.txt", "a")

    def log(line: str) -> None:
        print(line, flush=True)
        logfile.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        logfile.flush()

    model = acc.load_model(MODEL)
    pairs = pool_pairs(model, photos, args.pool, args.pairs_seed) if args.pool else []
    if not args.no_calibration:
        pairs += calibration_pairs(model)
    (args.cache / "pairs.json").write_text(json.dumps(pairs, indent=1))
    log(f"# {len(pairs)} pairs, recipes {', '.join(args.recipes)}; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads")
    if args.stage in ("run", "all"):
        run_stage(args, model, pairs, photos, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
- ``stop-top1``, ``stop-p0.5``, ``stop-p0.9``: candidates for the defaults: the defaults, but each pair
  stops as soon as its target is the model's top-1 (or has probability 0.5, 0.9), checked every 2 steps.
  They are read off the defaults' runs (a snapshot every 2 steps and the engine's own evaluation at
  each step): ``until`` only stops a pair, so a run with it is the defaults' run up to its stop.
  ``--stage verify --only PAIR...`` runs them with ``until`` and compares, byte for byte;
  ``stop-p0.9-80``: the last with a budget of 80 steps instead of 40;
- ``least-change``: ``accentuate.least_change`` (stop at top-1, lambda bisected per pair) with 3
  rounds, as ``benchmarks/calibrate.py --least-change 3`` (the library's default is 4; its second
  round, at lambda 4.47, rarely reaches the target, so a fourth round mostly refines the third).

Every recipe runs with ``opacity=False``: the masks are not used here, and without them a regularized
step is one backward pass instead of two (the images are the same up to rounding: the fused backward
of ``objective - weight * distance`` gives the same gradient once the balance is measured), so the
seconds per pair are those of a run without masks.

Snapshots of the same runs give, at no cost, the defaults at 10, 20 and 30 steps and the reference
recipe at 20 to 80 steps (step t of a run is a t-step run: the optimization has no schedule).

Then each result is shown to the judges (``accentuate.judges``: MobileNetV2, EfficientNet-Lite1,
EfficientNet-Lite2, each with its own preprocessing): the target's rank and probability before (the
seed) and after, and the change of the judge's pooled penultimate features (1 - cosine to the seed's).

    nice -n 15 python benchmarks/faithfulness.py                    # every stage; resumable
    nice -n 15 python benchmarks/faithfulness.py --stage run --recipes naive preview defaults   # some recipes first
    nice -n 15 python benchmarks/faithfulness.py --stage run --reverse   # a second worker, from the end
    python benchmarks/faithfulness.py --pool 1 --calibration 0 --smoke --cache /tmp/f   # a check (2 steps)
    nice -n 15 python benchmarks/faithfulness.py --stage run --only cal-hubble-254   # some pairs first
    python benchmarks/faithfulness.py --stage verify --recipes stop-p0.9 --only cal-hubble-254  # read-off check
    python benchmarks/faithfulness.py --stage report                # tables and figure from the cache

A report covers the pairs that every recipe of ``--recipes`` has finished: the costly recipes
(least-change, reference) can run on a subset (``--only``) and be reported apart (``--out``).

Every result is cached per recipe and pair under ``--cache`` (default
``~/.cache/accentuate/faithfulness``): a rerun skips what is there, so the run can be stopped and
resumed, and the judges and the report can be redone without optimizing again.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
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
from accentuate.outputs.io import atomic_write
from accentuate.settings import Until
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
    # Candidates for the defaults: stop each pair once the model sees its target (checked every 2 steps).
    # They are read off the defaults' own runs (kind "stop"): see derive_stop.
    "stop-top1": {"kind": "stop", "base": "defaults", "until": "top1", "check_every": 2},
    "stop-p0.5": {"kind": "stop", "base": "defaults", "until": "p>=0.5", "check_every": 2},
    "stop-p0.9": {"kind": "stop", "base": "defaults", "until": "p>=0.9", "check_every": 2},
    # The same with a budget of 80 steps: a run is step for step the 40-step run until step 40, so the
    # pairs that stopped before 40 are copied from stop-p0.9 and only the others run again.
    "stop-p0.9-80": {"kind": "accentuate", "base": "stop-p0.9",
                     "settings": {"until": "p>=0.9", "check_every": 2, "steps": 80}},
    "reference": {"kind": "accentuate", "snapshots": [20, 40, 60, 80],
                  "settings": {k: REFERENCE_DEFAULTS[k] for k in ("lam", "steps", "lr", "param", "canvas",
                                                                   "crops", "crop_range")}},
}


#: Every recipe runs without opacity masks (see the module docstring).
COMMON = {"opacity": False}


def recipe_key(name: str, smoke: bool) -> str:
    """The cache folder of a recipe: its name and a hash of its definition (a changed recipe reruns)."""
    r = RECIPES[name]
    return f"{name}-{canonical_sha256({'recipe': r, 'common': COMMON, 'smoke': smoke, 'model': MODEL})[:8]}"


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
    settings = {**COMMON, **r["settings"]}
    if smoke:
        settings["steps"] = 2
    base = copy_base(pair, recipe, folder, smoke)
    if base is not None:
        return base
    snaps = [s for s in r.get("snapshots", []) if s < settings.get("steps", 10**9)] if not smoke else []
    stops = stops_of(recipe)
    every = math.gcd(*(RECIPES[n]["check_every"] for n in stops)) if stops else 0
    seed: Any = photo_path(pair, photos)
    image = acc.load_image(seed)
    if r.get("view"):
        seed = resize(image, model.accentuate_spec.input_size)
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    rec: dict[str, Any] = {"pair": pair["id"], "recipe": recipe, "settings": settings}
    if r["kind"] == "least_change":
        lc = acc.least_change(model, seed, pair["target"], seed=0, rounds=r["rounds"], **settings)
        final, seed_t = lc.images[0, 0], lc.result.seeds[0]
        rec.update(steps=int(lc.steps[0, 0]), lam=float(lc.lam[0, 0]), reached=bool(lc.reached[0, 0]),
                   rounds=len(lc.rounds), config=lc.result.config.to_dict())
        history = None
    else:
        # With stop recipes read off this run, a snapshot every `every` steps (the steps their rules check).
        res = acc.accentuate(model, seed, pair["target"], seed=0, snapshots=every or snaps, **settings)
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
    for name in stops:
        derive_stop(model, pair, name, res, rec, seed_t, folder.parent / recipe_key(name, smoke))
    write_json(rec, folder / f"{pid}.json")
    return rec


def write_json(rec: dict[str, Any], path: Path) -> None:
    atomic_write(path, json.dumps(rec, indent=1).encode())


def stops_of(recipe: str) -> list[str]:
    """The stop recipes read off ``recipe``'s runs."""
    return [n for n, r in RECIPES.items() if r["kind"] == "stop" and r["base"] == recipe]


def derive_stop(model: torch.nn.Module, pair: dict[str, Any], name: str, res: Any, base: dict[str, Any],
                seed_t: torch.Tensor, folder: Path) -> None:
    """A stop recipe's result for one pair, read off its base run: the image at the first step where the
    rule holds, checked where the engine checks it (every ``check_every`` steps and at the last step,
    on the same un-augmented evaluation, ``res.history``). A run with ``until`` is this run up to that
    step: ``until`` only stops a pair, the steps before are the same (``--stage verify`` checks it).
    Its seconds are the base run's per step times its steps (marked ``seconds_from_base``)."""
    r = RECIPES[name]
    rule = Until.parse(r["until"], r["check_every"])
    budget = int(res.config.steps)
    ranks, probs = res.history.rank[:, 0, 0], res.history.prob[:, 0, 0]
    stop = budget
    for i, t in enumerate(res.history.steps):
        if (t % rule.every == 0 or t == budget) and bool(rule.reached(ranks[i], probs[i])):
            stop = t
            break
    img = res.snapshots[stop][0, 0].float() / 255
    c = torch.tensor(pair["target"])
    rank_a, prob_a = class_rank(model_view(model, img), c)
    folder.mkdir(parents=True, exist_ok=True)
    pid = pair["id"]
    save_png(seed_t, folder / f"{pid}_seed.png")
    save_png(img, folder / f"{pid}.png")
    share = stop / budget
    rec = {"pair": pid, "recipe": name, "settings": {**COMMON, "until": r["until"], "check_every": r["check_every"]},
           "read_off": base["recipe"], "steps": stop, "lam": base["lam"],
           "config": {**base["config"], "until": r["until"], "check_every": r["check_every"]},
           "seconds": round(base["seconds"] * share, 2), "cpu_seconds": round(base["cpu_seconds"] * share, 2),
           "seconds_from_base": True, "load": base["load"], "threads": base["threads"],
           "rank_before": base["rank_before"], "prob_before": base["prob_before"], "rank_after": int(rank_a),
           "prob_after": float(prob_a), "ssim": float(ssim(img, seed_t)), "canvas": base["canvas"]}
    write_json(rec, folder / f"{pid}.json")


def copy_base(pair: dict[str, Any], recipe: str, folder: Path, smoke: bool) -> dict[str, Any] | None:
    """For a recipe that extends another one's step budget: the other's result when it stopped
    before its budget (the same run), copied into ``folder``; else ``None`` (run it)."""
    base = RECIPES[recipe].get("base")
    if base is None:
        return None
    src = Path(str(folder).replace(recipe_key(recipe, smoke), recipe_key(base, smoke)))
    path = src / f"{pair['id']}.json"
    rec = json.loads(path.read_text())
    if rec["steps"] >= rec["config"]["steps"]:  # ran its whole budget: run again with the larger one
        return None
    for name in (f"{pair['id']}.json", f"{pair['id']}.png", f"{pair['id']}_seed.png"):
        shutil.copyfile(src / name, folder / name)
    rec.update(recipe=recipe, copied_from=base, settings={**COMMON, **RECIPES[recipe]["settings"]})
    write_json(rec, folder / f"{pair['id']}.json")
    return rec


def run_stage(args: argparse.Namespace, model: torch.nn.Module, pairs: list[dict[str, Any]], photos: Path,
              log: Callable[[str], None]) -> None:
    """Every recipe on every pair (pair by pair, so that a partial run compares the recipes on the same pairs).

    A second process started with ``--reverse`` works from the last pair backwards: the two share the
    cache, each skips what the other finished, and they meet in the middle."""
    order = list(enumerate(pairs))
    for k, pair in (reversed(order) if args.reverse else order):
        for recipe in args.recipes:
            folder = args.cache / recipe_key(recipe, args.smoke)
            folder.mkdir(parents=True, exist_ok=True)
            if (folder / f"{pair['id']}.json").exists():
                continue
            if RECIPES[recipe]["kind"] == "stop":
                base_key = recipe_key(RECIPES[recipe]["base"], args.smoke)
                if (args.cache / base_key / f"{pair['id']}.json").exists():
                    log(f"{recipe} {pair['id']}: its base run is cached without it; delete "
                        f"{args.cache / base_key / (pair['id'] + '.json')} to run the base again")
                continue  # written by its base run (run the base recipe)
            base = RECIPES[recipe].get("base")
            if base and not (args.cache / recipe_key(base, args.smoke) / f"{pair['id']}.json").exists():
                continue  # extends a run not made yet
            rec = run_one(model, pair, recipe, folder, photos, args.smoke)
            log(f"[{k + 1}/{len(pairs)}] {recipe:13s} {pair['id']}: rank {rec['rank_before']} -> {rec['rank_after']}, "
                f"SSIM {rec['ssim']:.3f}, {rec['seconds']:.0f} s (cpu {rec['cpu_seconds']:.0f} s, load "
                f"{rec['load'][0]:.1f}-{rec['load'][1]:.1f})")


def verify_stage(args: argparse.Namespace, model: torch.nn.Module, pairs: list[dict[str, Any]], photos: Path,
                 log: Callable[[str], None]) -> int:
    """Each stop recipe run for real (``until``) on the given pairs, against what was read off its base:
    the same stopping step and the same PNG, byte for byte. Returns the number of mismatches."""
    bad = 0
    for recipe in [r for r in args.recipes if RECIPES[r]["kind"] == "stop"]:
        r = RECIPES[recipe]
        folder = args.cache / recipe_key(recipe, args.smoke)
        for pair in pairs:
            path = folder / f"{pair['id']}.json"
            if not path.exists():
                log(f"verify {recipe} {pair['id']}: not read off yet (run its base, {r['base']}, first)")
                continue
            derived = json.loads(path.read_text())
            settings = {**COMMON, **RECIPES[r["base"]]["settings"], "until": r["until"], "check_every": r["check_every"]}
            if args.smoke:
                settings["steps"] = 2
            res = acc.accentuate(model, photo_path(pair, photos), pair["target"], seed=0, **settings)
            real = (res.images[0, 0].clamp(0, 1) * 255).round().int()
            read = (acc.load_image(folder / f"{pair['id']}.png") * 255).round().int()
            steps = int(res.steps_used[0, 0])
            diff = int((real - read).abs().max())
            ok = steps == derived["steps"] and diff == 0
            bad += not ok
            log(f"verify {recipe} {pair['id']}: run with until stopped at {steps}, read off at {derived['steps']}; "
                f"largest pixel difference {diff} -> {'same' if ok else 'DIFFERENT'}")
    return bad


# -- the judges ------------------------------------------------------------------------------------
def variants(rec: dict[str, Any]) -> list[str]:
    """The images of one cached result: ``""`` (the final one) and ``"@STEP"`` per snapshot."""
    return [""] + [f"@{k}" for k in sorted(rec.get("snapshots", {}), key=int)]


def judge_stage(args: argparse.Namespace, pairs: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    """Each cached result (and its snapshots) and its seed shown to each judge; ``ID.judges.json`` per pair."""
    from accentuate.judges import DEFAULT_JUDGES, Judge, judge_pairs

    judges = [Judge.of(name) for name in DEFAULT_JUDGES]
    key = canonical_sha256([j.describe() for j in judges])[:8]
    labels = acc.imagenet_labels()
    for recipe in args.recipes:
        folder = args.cache / recipe_key(recipe, args.smoke)
        done = 0
        for pair in pairs:
            pid = pair["id"]
            out = folder / f"{pid}.judges-{key}.json"
            if out.exists() or not (folder / f"{pid}.json").exists():
                continue
            rec = json.loads((folder / f"{pid}.json").read_text())
            seed = acc.load_image(folder / f"{pid}_seed.png")
            names = variants(rec)
            images = [acc.load_image(folder / f"{pid}{v}.png") for v in names]
            verdict = judge_pairs([seed] * len(images), images, [pair["target"]] * len(images), judges,
                                  labels=labels)
            table: dict[str, dict[str, Any]] = {}
            for r in verdict.rows:
                table.setdefault(names[r["pair"]] or "final", {})[r["judge"]] = {
                    k: r[k] for k in ("rank_before", "prob_before", "rank_after", "prob_after", "feature_change")}
            doc = {"judges": verdict.judges, "variants": table}
            write_json(doc, out)
            done += 1
        log(f"judged {done} new results of {recipe}")


# -- the report -------------------------------------------------------------------------------------
#: Points of the report: (label, recipe, variant). Snapshots read the same runs at fewer steps.
POINTS = [("naive", "naive", ""), ("naive, 20 steps", "naive", "@20"), ("naive, 10 steps", "naive", "@10"),
          ("preview", "preview", ""), ("defaults", "defaults", ""), ("defaults, 30 steps", "defaults", "@30"),
          ("defaults, 20 steps", "defaults", "@20"), ("defaults, 10 steps", "defaults", "@10"),
          ("stop-top1", "stop-top1", ""), ("stop-p0.5", "stop-p0.5", ""),
          ("stop-p0.9", "stop-p0.9", ""), ("stop-p0.9-80", "stop-p0.9-80", ""),
          ("least-change", "least-change", ""), ("reference", "reference", ""),
          ("reference, 80 steps", "reference", "@80"), ("reference, 60 steps", "reference", "@60"),
          ("reference, 40 steps", "reference", "@40"), ("reference, 20 steps", "reference", "@20")]


def load_points(args: argparse.Namespace, pairs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The pairs every recipe finished, and per point the per-pair arrays (model rank, SSIM, judges)."""
    from accentuate.judges import DEFAULT_JUDGES

    recs: dict[str, dict[str, Any]] = {}
    for recipe in args.recipes:
        folder = args.cache / recipe_key(recipe, args.smoke)
        for pair in pairs:
            rec_path = folder / f"{pair['id']}.json"
            judged = sorted(folder.glob(f"{pair['id']}.judges-*.json"))
            if rec_path.exists() and judged:
                rec = json.loads(rec_path.read_text())
                rec["judged"] = json.loads(judged[-1].read_text())["variants"]
                recs[f"{recipe}/{pair['id']}"] = rec
    done = [p for p in pairs if all(f"{r}/{p['id']}" in recs for r in args.recipes)]
    points: dict[str, Any] = {}
    for label, recipe, variant in POINTS:
        if recipe not in args.recipes:
            continue
        rows = [recs[f"{recipe}/{p['id']}"] for p in done]
        if not rows or any((variant or "final") not in r["judged"] for r in rows):
            continue
        snap = [r["snapshots"][variant[1:]] if variant else r for r in rows]
        judged = [r["judged"][variant or "final"] for r in rows]
        points[label] = {
            "recipe": recipe, "variant": variant,
            "model_rank": torch.tensor([float(x["rank_after"]) for x in snap]),
            "ssim": torch.tensor([float(x["ssim"]) for x in snap]),
            "seconds": torch.tensor([float(r["seconds"]) if not variant else math.nan for r in rows]),
            "cpu_seconds": torch.tensor([float(r["cpu_seconds"]) if not variant else math.nan for r in rows]),
            "load": torch.tensor([sum(r["load"]) / 2 for r in rows]),
            "read_off": any(r.get("seconds_from_base") for r in rows),
            "steps": torch.tensor([float(r["steps"]) if not variant else float(variant[1:]) for r in rows]),
            **{f"{w}_{j}": torch.tensor([float(x[j][w]) for x in judged])
               for j in DEFAULT_JUDGES for w in ("rank_before", "rank_after", "feature_change")},
        }
    return done, points


def statistics(pt: dict[str, Any], judges: tuple[str, ...], idx: torch.Tensor) -> torch.Tensor:
    """The report's statistics of one point on resampled pairs ``idx`` ``(R, P)``: ``(R, len(STATS))``."""
    def take(key: str) -> torch.Tensor:
        return pt[key][idx]

    def rate(x: torch.Tensor) -> torch.Tensor:
        return x.double().mean(1)

    def median(x: torch.Tensor) -> torch.Tensor:
        return x.double().quantile(0.5, dim=1)

    cols = [rate(take("model_rank") == 1), take("ssim").double().mean(1)]
    top5, change = [], []
    for j in judges:
        a, b = take(f"rank_after_{j}").double(), take(f"rank_before_{j}").double()
        cols += [rate(a == 1), rate(a <= 5), median(a), rate(b == 1), rate(b <= 5), median(b),
                 take(f"feature_change_{j}").double().mean(1)]
        top5.append(rate(a <= 5))
        change.append(take(f"feature_change_{j}").double().mean(1))
    cols += [torch.stack(top5).mean(0), torch.stack(top5).min(0).values, torch.stack(change).mean(0),
             median(take("seconds")), median(take("cpu_seconds")),
             take("steps").double().mean(1)]
    return torch.stack(cols, dim=1)


def stat_names(judges: tuple[str, ...]) -> list[str]:
    names = ["model_top1", "ssim"]
    for j in judges:
        names += [f"{j}:{k}" for k in ("top1", "top5", "median_rank", "top1_before", "top5_before",
                                      "median_rank_before", "feature_change")]
    return names + ["judges_top5_mean", "judges_top5_min", "feature_change_mean", "seconds_median",
                    "cpu_seconds_median", "steps_mean"]


def report_stage(args: argparse.Namespace, pairs: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    """Tables (markdown, JSON) with bootstrap intervals over pairs, and the frontier figure."""
    from accentuate.analysis import bootstrap
    from accentuate.judges import DEFAULT_JUDGES

    done, points = load_points(args, pairs)
    if not done:
        log("no pair is finished by every recipe yet; nothing to report")
        return
    names = stat_names(DEFAULT_JUDGES)
    table: dict[str, dict[str, list[float]]] = {}
    for label, pt in points.items():
        ci = bootstrap(lambda d, pt=pt: statistics(pt, DEFAULT_JUDGES, d["pair"]), {"pair": len(done)},
                       replicates=args.replicates, generator=0)
        table[label] = {n: [float(ci.estimate[i]), float(ci.lower[i]), float(ci.upper[i])] for i, n in enumerate(names)}
        table[label]["load_mean"] = [float(pt["load"].mean())] * 3
        table[label]["read_off"] = [float(pt["read_off"])] * 3
    # Each point against the defaults on the same resampled pairs (a paired interval of the difference).
    diff: dict[str, dict[str, list[float]]] = {}
    if "defaults" in points:
        base = points["defaults"]
        for label, pt in points.items():
            if label == "defaults":
                continue
            ci = bootstrap(lambda d, pt=pt: statistics(pt, DEFAULT_JUDGES, d["pair"])
                           - statistics(base, DEFAULT_JUDGES, d["pair"]), {"pair": len(done)},
                           replicates=args.replicates, generator=0)
            diff[label] = {n: [float(ci.estimate[i]), float(ci.lower[i]), float(ci.upper[i])]
                           for i, n in enumerate(names)}
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"pairs": len(done), "pool_pairs": sum(p["source"] == "pool" for p in done),
            "calibration_pairs": sum(p["source"] == "calibration" for p in done), "judges": list(DEFAULT_JUDGES),
            "replicates": args.replicates, "recipes": {r: RECIPES[r] for r in args.recipes},
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}
    per_pair = []
    for label, pt in points.items():
        for i, p in enumerate(done):
            per_pair.append({"point": label, "pair": p["id"], "target": p["target_name"],
                             "model_rank": int(pt["model_rank"][i]), "ssim": round(float(pt["ssim"][i]), 4),
                             **{f"{j}_rank_{w}": int(pt[f"rank_{w}_{j}"][i]) for j in DEFAULT_JUDGES
                                for w in ("before", "after")},
                             **{f"{j}_feature_change": round(float(pt[f"feature_change_{j}"][i]), 5)
                                for j in DEFAULT_JUDGES}})
    (args.out / "faithfulness.json").write_text(json.dumps({"meta": meta, "points": table,
                                                            "minus_defaults": diff, "pairs": per_pair}, indent=1))
    (args.out / "faithfulness.md").write_text(markdown_report(meta, table, " ".join(sys.argv[1:]), diff))
    frontier_figure(table, args.figure, meta)
    if args.examples is not None:
        chosen = [p for p in done if p["id"] in args.examples] or done[:4]
        examples_figure(args, chosen, args.figure.with_name(args.figure.stem + "_examples.jpg"))
    log(f"report of {len(done)} pairs: {args.out / 'faithfulness.md'}, {args.figure}")


def markdown_report(meta: dict[str, Any], table: dict[str, dict[str, list[float]]], argv: str,
                    diff: dict[str, dict[str, list[float]]] | None = None) -> str:
    """The tables: the recipes, their differences to the defaults (paired), then per judge."""
    def ci(v: list[float], fmt: str = ".2f", pct: bool = False) -> str:
        e, lo, hi = v
        if math.isnan(e):
            return "-"
        if pct:
            return f"{e:.0%} [{lo:.0%}, {hi:.0%}]"
        return f"{e:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"

    judges = meta["judges"]
    lines = [f"Command: `python benchmarks/faithfulness.py {argv}`".replace("  ", " "), "",
             f"{meta['pairs']} pairs ({meta['pool_pairs']} from the photo pool, {meta['calibration_pairs']} "
             f"calibration pairs); judges {', '.join(judges)}; 95 % bootstrap intervals over pairs "
             f"({meta['replicates']} replicates). {meta['machine']}, torch {meta['torch']}, {meta['date']}.", "",
             "| recipe | model top-1 | judges' top-5 (mean of 3) | judges' top-5 (lowest) | mean SSIM | "
             "feature change (mean of 3) | steps | s / pair (median) | CPU s / pair | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, t in table.items():
        mark = "*" if t.get("read_off", [0])[0] else ""
        sec = "-" if math.isnan(t["seconds_median"][0]) else f"{t['seconds_median'][0]:.0f}{mark}"
        cpu = "-" if math.isnan(t["cpu_seconds_median"][0]) else f"{t['cpu_seconds_median'][0]:.0f}{mark}"
        lines.append(f"| {label} | {ci(t['model_top1'], pct=True)} | {ci(t['judges_top5_mean'], pct=True)} | "
                     f"{ci(t['judges_top5_min'], pct=True)} | {ci(t['ssim'], '.3f')} | "
                     f"{ci(t['feature_change_mean'], '.3f')} | {t['steps_mean'][0]:.1f} | {sec} | {cpu} | "
                     f"{t['load_mean'][0]:.1f} |")
    if any(t.get("read_off", [0])[0] for t in table.values()):
        lines += ["", "\\*: read off the defaults' runs (the same run up to its stop, `--stage verify`); its seconds "
                  "are the defaults' seconds per step times its steps."]
    if diff:
        lines += ["", "Difference to the defaults on the same pairs (recipe minus defaults; 95 % paired bootstrap "
                  "intervals: an interval that excludes 0 says the recipe differs):", "",
                  "| recipe | model top-1 | judges' top-5 (mean of 3) | judges' top-5 (lowest) | mean SSIM | "
                  "feature change (mean of 3) | s / pair (median) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for label, t in diff.items():
            def d(v: list[float], scale: float = 1.0, fmt: str = "+.3f") -> str:
                return "-" if math.isnan(v[0]) else f"{v[0] * scale:{fmt}} [{v[1] * scale:{fmt}}, {v[2] * scale:{fmt}}]"
            lines.append(f"| {label} | {d(t['model_top1'], 100, '+.0f')} pt | {d(t['judges_top5_mean'], 100, '+.0f')} pt | "
                         f"{d(t['judges_top5_min'], 100, '+.0f')} pt | {d(t['ssim'])} | {d(t['feature_change_mean'])} | "
                         f"{d(t['seconds_median'], 1, '+.0f')} |")
    for j in judges:
        lines += ["", f"**{j}** (before: on the seed):", "",
                  "| recipe | top-1 before | top-1 after | top-5 before | top-5 after | median rank before | "
                  "median rank after | feature change |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, t in table.items():
            lines.append(f"| {label} | {ci(t[f'{j}:top1_before'], pct=True)} | {ci(t[f'{j}:top1'], pct=True)} | "
                         f"{ci(t[f'{j}:top5_before'], pct=True)} | {ci(t[f'{j}:top5'], pct=True)} | "
                         f"{ci(t[f'{j}:median_rank_before'], '.0f')} | {ci(t[f'{j}:median_rank'], '.0f')} | "
                         f"{ci(t[f'{j}:feature_change'], '.3f')} |")
    return "\n".join(lines) + "\n"


def frontier_figure(table: dict[str, dict[str, list[float]]], path: Path, meta: dict[str, Any]) -> None:
    """SSIM against the judges' top-5 rate (and against the judges' feature change), each recipe a point
    with its intervals; the snapshots of a run as a line to its final point; the goal's corner shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"naive": "tab:red", "preview": "tab:orange", "defaults": "tab:blue", "stop-top1": "tab:cyan",
              "stop-p0.5": "tab:olive", "stop-p0.9": "tab:brown", "stop-p0.9-80": "tab:pink", "least-change": "tab:green", "reference": "tab:purple"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, key, ylabel in ((axes[0], "judges_top5_mean", "target in the judges' top 5 (mean of 3 judges)"),
                            (axes[1], "feature_change_mean", "judges' feature change, 1 - cosine (mean of 3)")):
        if key == "judges_top5_mean":
            ax.axvspan(0.8, 1.0, ymin=0.9 / 1.05, color="tab:green", alpha=0.08, lw=0)
            ax.text(0.805, 1.02, "goal", color="tab:green", fontsize=9, va="top")
        for recipe, color in colors.items():
            mine = [(lab, t) for lab, t in table.items() if lab.split(",")[0] == recipe]
            if not mine:
                continue
            xs = [t["ssim"][0] for _, t in mine]
            ys = [t[key][0] for _, t in mine]
            order = sorted(range(len(xs)), key=lambda i: xs[i])
            ax.plot([xs[i] for i in order], [ys[i] for i in order], color=color, lw=0.8, alpha=0.5)
            for lab, t in mine:
                final = "," not in lab
                ax.errorbar(t["ssim"][0], t[key][0],
                            xerr=[[t["ssim"][0] - t["ssim"][1]], [t["ssim"][2] - t["ssim"][0]]],
                            yerr=[[t[key][0] - t[key][1]], [t[key][2] - t[key][0]]],
                            fmt="o" if final else ".", ms=8 if final else 5, color=color, capsize=2,
                            alpha=1 if final else 0.6, label=recipe if final else None)
                if not final:
                    ax.annotate(lab.split(", ")[1].replace(" steps", ""), (t["ssim"][0], t[key][0]),
                                textcoords="offset points", xytext=(4, -9), fontsize=7, color=color)
        ax.set_xlabel("mean SSIM to the seed (grayscale, 224 x 224)")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0.4, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Recipes on EfficientNet-Lite0, {meta['pairs']} pairs; judges {', '.join(meta['judges'])} "
                 "(small dots: the same runs at fewer steps; bars: 95 % bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def examples_figure(args: argparse.Namespace, pairs: list[dict[str, Any]], path: Path) -> None:
    """A few pairs (rows) under each recipe (columns), each image with the model's and the judges' ranks
    of the target and its SSIM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from accentuate.judges import DEFAULT_JUDGES

    cols = [r for r in args.recipes]
    fig, axes = plt.subplots(len(pairs), len(cols) + 1, figsize=(2.1 * (len(cols) + 1), 2.0 * len(pairs) + 0.4))
    for i, pair in enumerate(pairs):
        for k, recipe in enumerate([None, *cols]):
            ax = axes[i, k]
            ax.set_xticks([])
            ax.set_yticks([])
            folder = args.cache / recipe_key(recipe or "defaults", args.smoke)
            if recipe is None:
                ax.imshow(acc.load_image(folder / f"{pair['id']}_seed.png").permute(1, 2, 0).numpy())
                ax.set_ylabel(f"{pair['photo_name'].split('/')[-1]}\n-> {pair['target_name']}", fontsize=7)
                if i == 0:
                    ax.set_title("seed", fontsize=8)
                continue
            rec = json.loads((folder / f"{pair['id']}.json").read_text())
            judged = json.loads(sorted(folder.glob(f"{pair['id']}.judges-*.json"))[-1].read_text())["variants"]["final"]
            ax.imshow(acc.load_image(folder / f"{pair['id']}.png").permute(1, 2, 0).numpy())
            ranks = "/".join(str(judged[j]["rank_after"]) for j in DEFAULT_JUDGES)
            ax.set_xlabel(f"model {rec['rank_after']}, judges {ranks}\nSSIM {rec['ssim']:.2f}", fontsize=7)
            if i == 0:
                ax.set_title(recipe, fontsize=8)
    fig.suptitle("Rank of the target on EfficientNet-Lite0 (model) and on MobileNetV2 / Lite1 / Lite2 (judges)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, pil_kwargs={"quality": 85} if path.suffix in (".jpg", ".jpeg") else {})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=100, help="pool photos (one pair each; default 100)")
    ap.add_argument("--pairs-seed", type=int, default=0, help="generator seed of the pool draw")
    ap.add_argument("--calibration", type=int, default=24, metavar="N",
                    help="the first N of the 24 calibration pairs (default: all; 0: none)")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--stage", choices=("run", "judge", "report", "all", "verify"), default="all",
                    help="verify: run the stop recipes for real on --only pairs and compare with what was read off")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "accentuate" / "faithfulness")
    ap.add_argument("--photos", type=Path, default=None, help="the photo pool (default: make photos' cache)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a busy machine two threads mostly wait for each other)")
    ap.add_argument("--reverse", action="store_true",
                    help="run the pairs from the last one backwards (a second worker beside a first one)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/faithfulness"),
                    help="where the report goes (faithfulness.md, faithfulness.json)")
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/faithfulness_frontier.png"))
    ap.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates")
    ap.add_argument("--examples", nargs="*", default=None, metavar="PAIR",
                    help="also draw these pairs under every recipe (FIGURE_examples.jpg; no ids: the first 4)")
    ap.add_argument("--only", nargs="*", default=None, metavar="PAIR",
                    help="run and judge only these pairs (ids as in pairs.json), in the order given")
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
    if args.calibration:
        pairs += calibration_pairs(model)[: args.calibration]
    (args.cache / "pairs.json").write_text(json.dumps(pairs, indent=1))
    log(f"# {len(pairs)} pairs, recipes {', '.join(args.recipes)}; {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads")
    work = pairs
    if args.only is not None:
        by_id = {p["id"]: p for p in pairs}
        unknown = [i for i in args.only if i not in by_id]
        if unknown:
            raise SystemExit(f"error: --only names pairs that are not drawn: {', '.join(unknown)}; see {args.cache}/pairs.json")
        work = [by_id[i] for i in args.only]
    if args.stage == "verify":
        return 1 if verify_stage(args, model, work, photos, log) else 0
    if args.stage in ("run", "all"):
        run_stage(args, model, work, photos, log)
    if args.stage in ("judge", "all"):
        judge_stage(args, work, log)
    if args.stage in ("report", "all"):
        report_stage(args, pairs, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

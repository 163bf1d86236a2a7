"""The paper's pathway claim on real photos, over the GCompris pool, by activation and by attribution.

For several ImageNet classes with at least four natural photos in the pool (`make photos`,
docs/photos.md), pathway similarity per layer between the natural photos of class C and
(a) accentuations toward C of seed photos of other classes at the model's defaults, (b) the
same at lam 0, (c) noise-seeded feature visualizations of C, (d) the unchanged seeds, and the
floor: the natural photos of the OTHER classes; the natural photos of C among themselves are
the reference. Each measure (--measures: activation, the channel means of a layer's output;
attribution, per channel the spatial mean of activation x gradient of the target, the paper's
circuits) is compared by Pearson and Spearman r, against each natural photo (pairs) and against
the class prototype (the mean vector of its photos; a photo against the mean of the others).
Bootstrap intervals resample the seeds, the feature visualizations and the photos
(accentuate.analysis.pathway_study, in accentuate/analysis/pathway_pool.py).

A model with classes (EfficientNet-Lite0): the targets are the classes, and a photo counts as a
natural photo of C when the model puts C in its top-k (--top, default 5) on the view the
pathway analysis uses (the whole photo resized to the model's input); two files of one source
(the pool has the Brandenburg Gate twice) are one photo, the first by path. A model without classes
(DINOv2): the target of class C is "look like" a reference photo of C (its first photo by
name, acc.like with the default layer), compared with the OTHER photos of C (held out).

    nice -n 10 python benchmarks/pathway_pool.py --out runs/pathway-pool               # about an hour
    nice -n 10 python benchmarks/pathway_pool.py --model dinov2_vits14_focus --out runs/pathway-pool-vit
    python benchmarks/pathway_pool.py --steps 2 --crops 2 --out /tmp/pathway-pool-debug  # a quick check

Every engine run is saved under --work (default OUT/work) and read back by a rerun with the same
settings, so the analysis (other measures, replicates, levels) can be redone without optimizing
again; both measures use the same runs. Writes, per measure M, OUT/pathway_pool_M.{md,csv,json}
(every statistic and baseline, the verdict table), OUT/pathway_pool_M.png (the mean over classes:
statistics x baselines), OUT/pathway_pool_M_classes.png (the main statistic per class), the contact
sheet OUT/pathway_pool_M_images.png, and OUT/photos.md (which photos were used, with the model's
rank of their class).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import torch

import accentuate as acc
from accentuate.analysis import pathway_study
from accentuate.analysis.activations import layer_activations
from accentuate.analysis.setup import analysis_spec
from accentuate.analysis.writing import markdown_table
from accentuate.hooks import OUTPUT
from accentuate.images import model_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import default_cache  # noqa: E402  (benchmarks/photos.py: where the pool is)

#: The pool's classes with at least five files (triumphal arch: four distinct photos, its Brandenburg
#: Gate is there twice). Left out: church (the model puts two of its four cathedrals outside its
#: top-5) and screwdriver (four photos; to keep the run near an hour).
CLASSES = ("hammer", "solar dish", "dam", "triumphal arch", "palace")
#: Seeds of none of the classes, all 4:3 (one canvas), public domain: a reef fish, a polar bear,
#: a frying pan, a dog.
SEEDS = ("fishes/fish10", "world_animals/polar_bear", "household/pan", "farm_animals/dog")


def read_manifest(cache: Path) -> list[dict[str, str]]:
    """The pool's manifest rows (docs/photos.md), with a one-line error when the pool is missing."""
    path = cache / "manifest.csv"
    if not path.exists():
        raise SystemExit(f"error: no photo pool at {cache}; run `make photos` (or set ACCENTUATE_PHOTOS)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def class_ranks(model: torch.nn.Module, files: list[Path], index: int) -> list[int]:
    """The model's rank (1 = top) of class ``index`` on each photo, seen as the pathway analysis sees it."""
    spec = analysis_spec(model, {})
    images = [acc.load_image(f) for f in files]
    logits = layer_activations(model, model_view(images, spec.input_size), [OUTPUT], spec)[OUTPUT]
    return [int((row > row[index]).sum()) + 1 for row in logits]


def pick_classes(model: torch.nn.Module, rows: list[dict[str, str]], cache: Path, names: list[str],
                 top: int) -> tuple[dict[str, tuple[Any, list[Path]]], list[str]]:
    """``{class: (target, natural photos)}`` and the lines of photos.md."""
    labels = analysis_spec(model, {}).labels
    lines = ["| class | photo | used as | model's rank of the class |", "|---|---|---|---:|"]
    classes: dict[str, tuple[Any, list[Path]]] = {}
    for name in names:
        mine, sources = [], {}
        for r in sorted((r for r in rows if r["imagenet_class"] == name), key=lambda r: r["path"]):
            if r["source"] in sources:  # the same photo twice (the Brandenburg Gate): one natural photo
                lines.append(f"| {name} | {r['folder']}/{r['name']} | left out (the same photo as "
                             f"{sources[r['source']]}) | |")
                continue
            sources[r["source"]] = f"{r['folder']}/{r['name']}"
            mine.append(r)
        if not mine:
            raise SystemExit(f"error: no photo of class {name!r} in the pool")
        files = [cache / r["path"] for r in mine]
        if labels is not None:
            index = int(mine[0]["imagenet_index"])
            ranks = class_ranks(model, files, index)
            keep = [f for f, k in zip(files, ranks) if top <= 0 or k <= top]
            for f, k in zip(files, ranks):
                lines.append(f"| {name} | {f.parent.name}/{f.stem} | {'natural' if f in keep else 'left out'} | {k} |")
            classes[name] = (index, keep)
        else:  # no classes: look like the first photo, compared with the others
            reference, keep = files[0], files[1:]
            lines += [f"| {name} | {f.parent.name}/{f.stem} | {'reference' if f == reference else 'natural'} | |"
                      for f in files]
            classes[name] = (acc.like(reference, model, name=reference.stem), keep)
        if len(classes[name][1]) < 2:
            raise SystemExit(f"error: class {name!r} has fewer than 2 natural photos left; lower --top or drop it")
    return classes, lines


def main(argv: list[str] | None = None) -> int:
    """Command line: run the study, write and print its tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0", help="model name (default efficientnet_lite0)")
    ap.add_argument("--cache", type=Path, default=None, help="the photo pool (default $ACCENTUATE_PHOTOS or "
                    "~/.cache/accentuate/gcompris)")
    ap.add_argument("--classes", nargs="+", default=list(CLASSES), help="ImageNet class names of the pool")
    ap.add_argument("--floor-classes", nargs="+", default=[], help="more class names of the pool whose natural "
                    "photos only join the floor (no accentuation toward them; e.g. classes left out of --classes "
                    "to save time)")
    ap.add_argument("--seeds", nargs="+", default=list(SEEDS), help="seed photos, FOLDER/NAME in the pool")
    ap.add_argument("--feature-vis", type=int, default=4, help="noise-seeded feature visualizations per class")
    ap.add_argument("--top", type=int, default=5, help="keep a photo of class C when C is in the model's top-k "
                    "(0: keep all; models with classes only)")
    ap.add_argument("--replicates", type=int, default=2000, help="bootstrap replicates")
    ap.add_argument("--level", type=float, default=0.95, help="interval coverage")
    ap.add_argument("--generator", type=int, default=0, help="seed of the accentuations and of the bootstrap")
    ap.add_argument("--steps", type=int, help="override the model's steps (debugging)")
    ap.add_argument("--crops", type=int, help="override the model's crops (debugging)")
    ap.add_argument("--lam", type=float, help="override the model's lambda of condition (a)")
    ap.add_argument("--measures", nargs="+", choices=("activation", "attribution"),
                    default=["activation", "attribution"], help="the measures compared (default both)")
    ap.add_argument("--no-lam0", action="store_true", help="leave out condition (b), the accentuations at lam 0")
    ap.add_argument("--chunk", type=int, default=1, help="classes per engine run, each saved as it finishes "
                    "(default 1: a stopped study loses at most one class's run)")
    ap.add_argument("--runs-only", action="store_true", help="make (or read back) the engine runs and stop: "
                    "no statistics, no files but the runs under --work and photos.md")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--work", type=Path, help="folder of the engine runs (default OUT/work)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    cache = (args.cache or default_cache()).expanduser()
    rows = read_manifest(cache)
    by_name = {f"{r['folder']}/{r['name']}": cache / r["path"] for r in rows}
    missing = [s for s in args.seeds if s not in by_name]
    if missing:
        raise SystemExit(f"error: seeds not in the pool: {', '.join(missing)} (give FOLDER/NAME of manifest.csv)")
    model = acc.load_model(args.model)
    picked, photo_lines = pick_classes(model, rows, cache, args.classes + args.floor_classes, args.top)
    classes = {c: picked[c] for c in args.classes}
    floor_classes = {c: picked[c][1] for c in args.floor_classes}
    overrides = {k: v for k, v in (("steps", args.steps), ("crops", args.crops), ("lam", args.lam)) if v is not None}
    (args.out / "photos.md").parent.mkdir(parents=True, exist_ok=True)
    (args.out / "photos.md").write_text("\n".join(photo_lines) + "\n")
    print(f"{args.model}: {len(classes)} classes" + (f" (and {len(floor_classes)} in the floor only)"
                                                      if floor_classes else "") + f", seeds {', '.join(args.seeds)}")
    print("\n".join(photo_lines))
    written: list[Path] = []
    for measure in args.measures:
        study = pathway_study(model, classes, [by_name[s] for s in args.seeds], feature_vis=args.feature_vis,
                              lam0=not args.no_lam0, seed=args.generator, work=args.work or args.out / "work",
                              chunk=args.chunk, floor_classes=floor_classes, progress=True, measure=measure,
                              **overrides)
        if args.runs_only:
            for name, t in study.config["runs"].items():
                print(f"run {name}: {t['seconds']} s{' (read back)' if t['read_back'] else ''}")
            return 0
        t0 = time.perf_counter()
        ci = study.all_intervals(replicates=args.replicates, level=args.level, generator=args.generator)
        study.config.update({"argv": sys.argv[1:] if argv is None else argv,
                             "seconds": round(time.perf_counter() - started), "seed_photos": args.seeds,
                             "bootstrap_seconds": round(time.perf_counter() - t0)})
        written += study.save(args.out, ci, stem=f"pathway_pool_{measure}")
        main_key = next(iter(ci))
        print(f"\n## {measure}: compared at {len(study.layers)} layers"
              + (f" (left out: {study.config['left_out']})" if study.config.get("left_out") else ""))
        print(f"\nMean over classes ({main_key[0]}, {main_key[1]}; estimate [interval]):\n"
              + study.to_markdown(ci[main_key]))
        print("\nVerdict (layers without the marked ones / all layers):\n"
              + markdown_table(study.verdict_rows(ci)))
        for name, t in study.config["runs"].items():
            print(f"run {name}: {t['seconds']} s{' (read back)' if t['read_back'] else ''}")
        print(f"bootstrap: {study.config['bootstrap_seconds']} s")
    print(f"wrote {', '.join(p.name for p in written)} and photos.md to {args.out} in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

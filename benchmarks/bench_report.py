"""How fast a big run's report.html builds and opens: a synthesized run of 500 pairs.

Writes a run folder in the ``accentuate-run/1`` layout (``--images`` seeds x ``--targets``
targets, each pair with its PNG, RGBA PNG, figure, GIF and a 40-step history), builds
``report.html`` (cold: thumbnails made; warm: reused), then opens it from ``file://`` in
headless Chromium (the system's, driven by Playwright for Python) ``--repeats`` times and
reads the browser's own navigation timings, plus the time to sort the cards by gain and
to open one pair's details.

    python benchmarks/bench_report.py                      # 50 images x 10 targets
    python benchmarks/bench_report.py --markdown benchmarks/RESULTS-report.md

Needs the ``report`` extra (Jinja2) and, for the browser part, Playwright for Python and
Debian's ``chromium``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy, ph = rng.uniform(0.02, 0.12, 3)
    img = np.stack([128 + 100 * np.sin(x * fx + ph), 128 + 90 * np.cos(y * fy), 128 + 60 * np.sin((x + y) * 0.05 + seed)],
                   -1)
    return (img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)


def synthesize(folder: Path, n_images: int, n_targets: int, side: int, steps: int = 40) -> dict[str, Any]:
    """A run folder of ``n_images x n_targets`` pairs; returns the record written."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds_dir = folder.parent / "seeds"
    seeds_dir.mkdir(exist_ok=True)
    h, w = side * 3 // 4, side
    images, targets, pairs = [], [], []
    rng = np.random.default_rng(0)
    for i in range(n_images):
        p = seeds_dir / f"photo_{i:03d}.png"
        data = _png(_pattern(h, w, i))
        p.write_bytes(data)
        images.append({"path": str(p), "name": p.name, "sha256": hashlib.sha256(data).hexdigest(),
                       "size": [w, h], "canvas": [h, w]})
    for j in range(n_targets):
        targets.append({"arg": f"class {j}", "objective": f"Logit({j} 'class {j}')", "kind": "class",
                        "class_index": j, "class_name": f"class {j}", "label": f"class {j} ({j})",
                        "slug": f"class-{j}", "value_name": "logit"})
    for i in range(n_images):
        seed = _pattern(h, w, i)
        for j in range(n_targets):
            stem = f"photo_{i:03d}__class-{j}"
            acc = (seed.astype(np.int16) + rng.integers(-40, 40, seed.shape)).clip(0, 255).astype(np.uint8)
            alpha = (255 * np.exp(-(((np.mgrid[0:h, 0:w][0] - h / 2) ** 2 + (np.mgrid[0:h, 0:w][1] - w / 2) ** 2)
                                    / (2 * (side / 5) ** 2)))).astype(np.uint8)
            files = {"image": _png(acc), "rgba": _png(np.dstack([acc, alpha])),
                     "figure": _png(np.hstack([seed, acc]))}
            gif = io.BytesIO()
            frames = [Image.fromarray(seed).resize((w // 2, h // 2)), Image.fromarray(acc).resize((w // 2, h // 2))]
            frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
            files["gif"] = gif.getvalue()
            names = {"image": f"{stem}.png", "rgba": f"{stem}_rgba.png", "figure": f"{stem}_figure.png",
                     "gif": f"{stem}.gif"}
            for k, data in files.items():
                (folder / names[k]).write_bytes(data)
            vb = float(rng.normal(0, 2))
            gain = float(rng.uniform(0, 12))
            rb = int(rng.integers(2, 900))
            ra = max(1, int(rb * rng.uniform(0, 0.2)))
            obj = list(np.round(vb + gain * (1 - np.exp(-np.arange(1, steps + 1) / 8)), 4))
            dist = list(np.round(np.sqrt(np.arange(1, steps + 1) / steps) * 3.0, 4))
            pairs.append({
                "key": hashlib.sha256(stem.encode()).hexdigest()[:20], "id": stem, "seed": i, "target": j,
                "image": images[i]["name"], "target_label": targets[j]["label"], "objective": targets[j]["objective"],
                "status": "complete", "failed": None,
                "before": {"value": vb, "rank": rb, "prob": 1e-4, "top5": [
                    {"index": k, "name": f"class {k}", "prob": 0.2 - 0.03 * k} for k in range(5)]},
                "after": {"value": vb + gain, "rank": ra, "prob": 0.5, "top5": [
                    {"index": k, "name": f"class {k}", "prob": 0.5 - 0.08 * k} for k in range(5)]},
                "distance": {"pixel_rmse": 0.08, "ssim": 0.7, "reg_layer": 3.0, "reg_layer_name": "blocks.4",
                             "reg_layer_crops_last_step": 3.1},
                "steps_used": steps, "steps_done": steps, "lam_effective": 0.7, "batch": 0,
                "history": {"step": list(range(1, steps + 1)), "objective": [float(v) for v in obj],
                            "distance": [float(v) for v in dist], "value": [float(v) for v in obj],
                            "rank": [float(max(1, rb - k * rb // steps)) for k in range(steps)],
                            "prob": [0.01] * steps, "thinned": False},
                "files": names, "sha256": {k: hashlib.sha256(d).hexdigest() for k, d in files.items()},
                "settings_hash": "0" * 64, "resumed": False,
            })
    doc = {
        "format": "accentuate-run/1", "command": f"accentuate run seeds/ --target {' '.join(str(j) for j in range(n_targets))}",
        "argv": ["run", "seeds/"], "subcommand": "run", "cwd": str(folder.parent),
        "model": {"arg": "efficientnet_lite0", "name": "efficientnet_lite0", "input_size": [224, 224], "classes": 1000},
        "device": "cpu", "device_name": platform.machine(), "threads": 2,
        "settings": {"reg_layer": "blocks.4", "lam": 0.2, "steps": steps, "lr": 0.05, "param": "fourier",
                     "canvas": side, "crops": 16, "crop_range": [0.05, 0.99], "noise": [0.02, 0.02],
                     "balance": True, "optimizer": "adam", "seed": 0, "until": None, "animation_frames": 25},
        "settings_hash": "0" * 64, "versions": {"accentuate": "0.1.0"}, "status": "complete",
        "created": "2025-01-01T00:00:00+00:00", "updated": "2025-01-01T01:00:00+00:00",
        "images": images, "targets": targets,
        "outputs": {"contact_sheet": None, "gif": True, "mp4": False, "opacity": "per pair"},
        "timings": {"model_load_s": 1.0, "total_s": 3600.0, "batches": []},
        "counts": {"complete": len(pairs), "total": len(pairs), "resumed": 0}, "pairs": pairs,
    }
    (folder / "run.json").write_text(json.dumps(doc, indent=2))
    return doc


def _chromium() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""):
        if p and Path(p).exists():
            return p
    return None


def browser_timings(report: Path, repeats: int) -> dict[str, Any]:
    """Navigation timings (ms) of opening ``report`` from file://, and two interactions."""
    from playwright.sync_api import sync_playwright

    exe = _chromium()
    if exe is None:
        raise SystemExit("bench_report: Chromium is not installed; apt-get install chromium")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    out: dict[str, list[float]] = {"dom_content_loaded_ms": [], "load_ms": [], "sort_by_gain_ms": [],
                                   "open_detail_ms": [], "images_loaded_at_load": [], "cards": []}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        for r in range(repeats + 1):  # the first opening warms the disk cache and is not counted
            ctx = b.new_context(viewport={"width": 1366, "height": 900})
            page = ctx.new_page()
            errors: list[str] = []
            page.on("console", lambda m, errs=errors: errs.append(m.text) if m.type == "error" else None)
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            nav = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                                " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
            loaded = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
            sort_ms = page.evaluate("""(() => { const t = performance.now(); const s = document.getElementById('sort');
                s.value = 'gain'; s.dispatchEvent(new Event('change')); document.body.offsetHeight;
                return performance.now() - t; })()""")
            detail_ms = page.evaluate("""(() => { const t = performance.now();
                document.querySelector('#grid .card button.open').click(); document.body.offsetHeight;
                return performance.now() - t; })()""")
            if errors:
                raise SystemExit(f"bench_report: console errors: {errors[:3]}")
            if r:
                out["dom_content_loaded_ms"].append(nav[0])
                out["load_ms"].append(nav[1])
                out["sort_by_gain_ms"].append(sort_ms)
                out["open_detail_ms"].append(detail_ms)
                out["images_loaded_at_load"].append(loaded)
                out["cards"].append(page.evaluate("document.querySelectorAll('.card').length"))
            ctx.close()
        b.close()
    summary: dict[str, Any] = {k: {"median": statistics.median(v), "max": max(v)} for k, v in out.items()}
    summary["chromium"] = version
    return summary


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--side", type=int, default=256, help="canvas width of the synthesized images (default 256)")
    ap.add_argument("--repeats", type=int, default=5, help="page openings measured (default 5)")
    ap.add_argument("--keep", metavar="DIR", help="write the run here and keep it (default: a temporary folder)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the results as markdown")
    args = ap.parse_args(argv)

    from accentuate.report import write_report

    tmp = None
    if args.keep:
        root = Path(args.keep)
    else:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
    folder = root / "run"
    t0 = time.perf_counter()
    doc = synthesize(folder, args.images, args.targets, args.side)
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    path = write_report(folder)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_report(folder)
    warm_s = time.perf_counter() - t0
    html_bytes = path.stat().st_size
    thumbs = sorted((folder / "report-files").iterdir())
    thumb_bytes = sum(p.stat().st_size for p in thumbs)
    run_json = (folder / "run.json").stat().st_size
    nav = browser_timings(path, args.repeats)
    pairs = len(doc["pairs"])
    res = {"pairs": pairs, "images": args.images, "targets": args.targets, "side": args.side,
           "html_bytes": html_bytes, "run_json_bytes": run_json, "thumbnails": len(thumbs),
           "thumbnail_bytes": thumb_bytes, "build_cold_s": cold_s, "build_warm_s": warm_s,
           "synthesize_s": synth_s, "browser": nav, "machine": machine()}
    print(json.dumps(res, indent=2))
    if args.markdown:
        b = nav
        md = f"""# The report page of a 500-pair run

`python benchmarks/bench_report.py{'' if (args.images, args.targets) == (50, 10) else f' --images {args.images} --targets {args.targets}'} --markdown {args.markdown}`

A synthesized run folder in the `accentuate-run/1` layout: {args.images} images x {args.targets} targets =
**{pairs} pairs**, each with its PNG, RGBA PNG, figure, GIF and a {doc['settings']['steps']}-step history in
`run.json`; images {args.side} x {args.side * 3 // 4} pixels. The page is opened from `file://` in headless
Chromium {repeats_note(args.repeats)}; times are the browser's own navigation timings (median, max).

Machine: {res['machine']}; {b['chromium']}. (2 cores shared with other work while measured.)

| what | value |
|---|---|
| `report.html` size | **{html_bytes / 1e6:.2f} MB** ({html_bytes:,} bytes; the limit is 2 MB) |
| opening: DOMContentLoaded | **{b['dom_content_loaded_ms']['median']:.0f} ms** (max {b['dom_content_loaded_ms']['max']:.0f}) |
| opening: load event (the images in view loaded) | **{b['load_ms']['median']:.0f} ms** (max {b['load_ms']['max']:.0f}; the limit is 2 s) |
| images loaded at the load event (lazy loading) | {b["images_loaded_at_load"]["median"]:.0f} of the page's {3 * pairs} image elements |
| sort {pairs} cards by gain | {b['sort_by_gain_ms']['median']:.0f} ms (max {b['sort_by_gain_ms']['max']:.0f}) |
| open a pair's details | {b['open_detail_ms']['median']:.0f} ms (max {b['open_detail_ms']['max']:.0f}) |
| build the report, first time (makes {len(thumbs)} thumbnails and seed copies) | {cold_s:.1f} s |
| build it again (thumbnails reused) | {warm_s:.2f} s |
| `report-files/` (thumbnails, seeds) | {thumb_bytes / 1e6:.1f} MB |
| `run.json` | {run_json / 1e6:.2f} MB |
"""
        Path(args.markdown).write_text(md)
    if tmp is not None:
        tmp.cleanup()
    return 0


def repeats_note(n: int) -> str:
    return f"{n} times (after one unmeasured opening)"


if __name__ == "__main__":
    sys.exit(main())

"""How much a pair's pictures depend on the number of CPU threads torch uses.

A CPU run's floating-point sums are split over torch's intra-op threads, so the same command at
1 and at 2 threads rounds differently, and the optimization carries the difference forward. This
script measures it the way it shows in the files: each thread count runs the same accentuations
in its own process (``torch.set_num_threads`` before any work), keeps the images at a few steps
(``snapshots``, 8-bit as in the PNGs) and compares them: max and mean absolute difference in 8-bit
levels, and the share of pixels that differ. A third process repeats the first thread count, to
show that the same thread count gives the same bytes.

    python benchmarks/thread_drift.py                         # lite0, 2 photos x 2 targets, 3/10/40 steps
    python benchmarks/thread_drift.py --tiny --out ''         # the tiny test model: seconds

The report goes to ``benchmarks/RESULTS-threads.md`` (``--out ''``: print only), with the machine
and its load average before and after. ``docs/scaling-out.md`` states the guarantee it supports.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(cfg: dict) -> None:
    """One process: ``cfg['threads']`` threads, the accentuations, the snapshots as uint8 to a file."""
    import torch

    torch.set_num_threads(cfg["threads"])
    import accentuate as acc

    if cfg["tiny"]:
        sys.path.insert(0, str(HERE.parent / "tests"))
        model = acc.load_model("cli_models:tiny")
        extra = {"canvas": 48, "crops": 4}
        cfg["targets"] = ["banana", "cherry"]
    else:
        model = acc.load_model(cfg["model"])
        extra = {}
    steps = cfg["steps"]
    targets = [acc.channel(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) if ":" in t else t for t in cfg["targets"]]
    res = acc.accentuate(model, [acc.photo(p) for p in cfg["photos"]], targets, steps=max(steps),
                         snapshots=steps, seed=cfg["seed"], **extra)
    torch.save({int(k): v for k, v in res.snapshots.items()}, cfg["file"])


def compare(a: dict, b: dict) -> list[dict]:
    """Per snapshot step: max and mean |a - b| in 8-bit levels, and the share of differing values."""
    rows = []
    for step in sorted(a):
        x, y = a[step].int(), b[step].int()
        d = (x - y).abs()
        rows.append({"step": step, "max": int(d.max()), "mean": float(d.float().mean()),
                     "differ": float((d > 0).float().mean())})
    return rows


def measure(threads: tuple[int, int] | list[int], cfg: dict) -> tuple[list[dict], list[dict]]:
    """Run ``cfg`` (``tiny``, ``model``, ``photos``, ``targets``, ``steps``, ``seed``) at ``threads[0]``,
    at ``threads[1]`` and at ``threads[0]`` again, each in its own process; the :func:`compare` rows of
    the first two (``across``) and of the first and the third (``same``)."""
    import tempfile

    import torch

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, n in (("a", threads[0]), ("b", threads[1]), ("a again", threads[0])):
            one = {**cfg, "threads": n, "file": str(Path(tmp) / f"{label}.pt")}
            env = {**os.environ, "OMP_NUM_THREADS": str(n)}
            subprocess.run([sys.executable, __file__, "--child", json.dumps(one)], check=True, env=env)
            runs[label] = torch.load(one["file"])
    return compare(runs["a"], runs["b"]), compare(runs["a"], runs["a again"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--photos", nargs="+", default=["chelsea", "coffee"])
    p.add_argument("--targets", nargs="+", default=["goldfish", "tiger cat"],
                   help="class names, or LAYER:CHANNEL (a channel's mean)")
    p.add_argument("--steps", nargs="+", type=int, default=[3, 10, 40])
    p.add_argument("--threads", nargs=2, type=int, default=[2, 1], metavar=("A", "B"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="the tiny test model (seconds)")
    p.add_argument("--out", default=str(HERE / "RESULTS-threads.md"),
                   help="the report (appended to when the file exists; '' prints only)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(json.loads(a.child))
        return 0
    import torch

    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    across, same = measure(a.threads, {"tiny": a.tiny, "model": a.model, "photos": a.photos,
                                       "targets": a.targets, "steps": a.steps, "seed": a.seed})
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    model = "tiny test model" if a.tiny else a.model
    targets = ["banana", "cherry"] if a.tiny else a.targets
    lines = [
        f"# Pictures at different CPU thread counts: {a.model if not a.tiny else 'tiny'}",
        "",
        f"- Date: {_dt.datetime.now().isoformat(timespec='minutes')}",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average at start "
        f"{load_start}, at end {load_end}",
        f"- Software: torch {torch.__version__}, Python {platform.python_version()}",
        f"- Command: `python benchmarks/thread_drift.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- Workload: {model}, photos {', '.join(a.photos)} x targets {', '.join(targets)}, the model's default "
        f"settings, seed {a.seed}; each thread count in its own process",
        "",
        f"## {a.threads[0]} threads against {a.threads[1]} thread(s)",
        "",
        "| after step | max abs difference (8-bit levels) | mean abs difference | values that differ |",
        "|---:|---:|---:|---:|",
        *[f"| {r['step']} | {r['max']} | {r['mean']:.3f} | {100 * r['differ']:.1f} % |" for r in across],
        "",
        f"## {a.threads[0]} threads against {a.threads[0]} threads (two processes)",
        "",
        "| after step | max abs difference | values that differ |",
        "|---:|---:|---:|",
        *[f"| {r['step']} | {r['max']} | {100 * r['differ']:.1f} % |" for r in same],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        old = Path(a.out).read_text() if Path(a.out).exists() else ""
        Path(a.out).write_text(old + ("\n" if old else "") + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

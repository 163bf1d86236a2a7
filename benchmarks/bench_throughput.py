"""Throughput of ``accentuate run --manifest`` on this machine: processes x threads, and batch size.

Two questions, on the same manifest (the bundled photos x a few classes):

1. **Processes or threads?** Pairs per hour for 1 process x 2 threads
   (``OMP_NUM_THREADS=2 accentuate run ...``) against 2 processes x 1 thread
   (``torchrun --nproc-per-node 2 -m accentuate run ...``, CPU, torchrun's store on 127.0.0.1).
2. **What does batching buy?** The cost per pair (the batches' own seconds over their pairs)
   at ``--batch`` 1, 4 and 16 in one process.

Each configuration runs as its own command, the way a user runs it, into a fresh output
folder; pairs per hour are counted on the whole command (start-up and model load included)
and on the optimization alone (the batches' seconds from ``run.json``). The report, with the
machine (``lscpu``), the load average before and after, and the exact command, goes to
``benchmarks/RESULTS-throughput.md`` (``--out ''``: print only).

    python benchmarks/bench_throughput.py                  # efficientnet_lite0, 16 pairs
    python benchmarks/bench_throughput.py --tiny --out ''  # the tiny test model: seconds
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Text after this line of an existing report is kept when the report is written again.
NOTES = "<!-- notes -->"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lscpu() -> str:
    try:
        return "\n".join(subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()[:10])
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or platform.machine()


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _manifest(folder: Path, photos: list[str], targets: list[str]) -> Path:
    import accentuate as acc

    lines = ["image,target"]
    for name in photos:
        for t in targets:
            lines.append(f"{acc.photo(name)},\"{t}\"")
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(cmd: list[str], threads: int, cwd: Path, pythonpath: str) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_throughput: {shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    out = Path(cmd[cmd.index("--out") + 1])
    return wall, json.loads((cwd / out / "run.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--photos", nargs="+", default=["chelsea", "coffee", "motorcycle", "astronaut"])
    p.add_argument("--targets", nargs="+", default=["tiger cat", "espresso", "moped", "goldfish"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--crops", type=int, default=2)
    p.add_argument("--canvas", default="224x224",
                   help="HxW (one shape for every photo, so a batch can hold up to 16 pairs) or the long side")
    p.add_argument("--batch", type=int, default=4, help="--batch of the processes x threads comparison")
    p.add_argument("--sizes", type=int, nargs="*", default=[1, 4, 16],
                   help="batch sizes for the cost per pair (none: only the processes x threads comparison)")
    p.add_argument("--reverse", action="store_true",
                   help="run 2 processes x 1 thread before 1 process x 2 threads (to see the order's effect on a "
                   "busy machine)")
    p.add_argument("--tiny", action="store_true", help="the tiny test model (tests/cli_models.py), 48 px: a quick check")
    p.add_argument("--out", default=str(HERE / "RESULTS-throughput.md"), help="report file ('' to print only)")
    args = p.parse_args(argv)
    pythonpath = ""
    if args.tiny:
        args.model, args.canvas, args.targets = "cli_models:tiny", "48x48", ["apple", "banana", "cherry", "date"]
        pythonpath = str(ROOT / "tests")

    load_before = _load()
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows: list[tuple[str, float, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        cwd = Path(tmp)
        manifest = _manifest(cwd, args.photos, args.targets)
        base = ["run", "--manifest", str(manifest), "--model", args.model, "--steps", str(args.steps), "--crops",
                str(args.crops), "--canvas", str(args.canvas), "--frames", "0", "-q"]
        acc_cmd = [sys.executable, "-m", "accentuate"]
        run_cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                   "127.0.0.1", "--master-port", "0", "-m", "accentuate"]
        configs = [
            ("1 process x 2 threads", 2, acc_cmd + base + ["--batch", str(args.batch), "--out", "p1t2"]),
            ("2 processes x 1 thread", 1, run_cmd + base + ["--batch", str(args.batch), "--out", "p2t1"]),
        ]
        if args.reverse:
            configs.reverse()
        configs += [(f"B = {b} (1 process x 2 threads)", 2, acc_cmd + base + ["--batch", str(b), "--out", f"b{b}"])
                    for b in args.sizes]
        for label, threads, cmd in configs:
            if "--master-port" in cmd:
                cmd[cmd.index("--master-port") + 1] = str(_free_port())
            wall, doc = _run(cmd, threads, cwd, pythonpath)
            rows.append((label, wall, doc))
            print(f"{label}: {wall:.1f} s", file=sys.stderr, flush=True)

    def figures(wall: float, doc: dict) -> tuple[int, float, float, float]:
        pairs = doc["counts"]["complete"]
        batches = doc["timings"]["batches"]
        busy = sum(b["seconds"] for b in batches)
        span = busy / max(1, len({b.get("rank", 0) for b in batches}))  # per process, run side by side
        return pairs, 3600 * pairs / wall, 3600 * pairs / max(span, 1e-9), busy / max(1, pairs)

    import torch

    lines = [
        "# Throughput of `accentuate run --manifest` (processes x threads, batch size)",
        "",
        f"Run {started} with `{shlex.join(['python', 'benchmarks/bench_throughput.py', *(argv or sys.argv[1:])])}`.",
        f"Model `{args.model}`, {len(args.photos)} photos x {len(args.targets)} classes = "
        f"{len(args.photos) * len(args.targets)} pairs, {args.steps} steps, {args.crops} crops, canvas {args.canvas}, "
        f"no animation; torch {torch.__version__}, Python {platform.python_version()}.",
        "",
        "**This machine was shared** with other jobs while it ran (load average "
        f"{load_before} before, {_load()} after, on {os.cpu_count()} logical CPUs): the figures are "
        "what this machine gave then, not what it gives idle; compare rows with each other, not with other machines.",
        "",
        "**No GPU was lent to this session**: there are no GPU figures (accentuations per second at B = 1, 16, 64 "
        "in float32 and bfloat16 are still to be measured on a GPU).",
        "",
        "```",
        _lscpu(),
        "```",
        "",
        "## 1 process x 2 threads against 2 processes x 1 thread",
        "",
        "| configuration | pairs | wall s (whole command) | pairs / hour (whole command) | "
        "pairs / hour (optimization only) | s per pair (summed over processes) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, wall, doc in rows[:2]:
        n, per_h, per_h_opt, cost = figures(wall, doc)
        lines.append(f"| {label}, --batch {args.batch} | {n} | {wall:.1f} | {per_h:.0f} | {per_h_opt:.0f} | {cost:.2f} |")
    lines += ["", "## Cost per pair as the batch grows (1 process x 2 threads)", "",
              "| --batch | batches | wall s | s per pair (optimization) | relative to B = 1 |", "|---:|---:|---:|---:|---:|"]
    size_rows = rows[2:]
    ref = figures(size_rows[0][1], size_rows[0][2])[3] if size_rows else 1.0
    for (_label, wall, doc), b in zip(size_rows, args.sizes):
        cost = figures(wall, doc)[3]
        lines.append(f"| {b} | {len(doc['timings']['batches'])} | {wall:.1f} | {cost:.2f} | {cost / ref:.2f} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        notes = ""
        if out.exists() and NOTES in out.read_text():  # the analysis written below the marker survives a re-run
            notes = out.read_text().split(NOTES, 1)[1]
        out.write_text(text + ("\n" + NOTES + notes if notes else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``torchrun -m accentuate run``: two CPU processes (gloo-free: only torchrun's store on 127.0.0.1).

Each test starts ``python -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1
--master-port <free port>`` as a subprocess with a timeout, on the tiny CLI model with a
few pairs, few steps, a small canvas and no animation.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from accentuate.runs.record import file_sha256

TESTS = Path(__file__).parent
OPTS = ["--model", "cli_models:tiny", "--crops", "2", "--canvas", "48", "--frames", "0", "--batch", "1", "-q"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), "--monitor-interval", "0.2", "-m", "accentuate", *args]


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for k in range(3):
        y, x = np.mgrid[0:48, 0:64]
        arr = np.stack([np.sin(x / 5 + k), np.cos(y / 7 + k), np.sin((x + y) / 9)], -1) * 100 + 128
        Image.fromarray(arr.astype(np.uint8)).save(tmp_path / f"p{k}.png")
    (tmp_path / "m.csv").write_text("image,target,lam\n" + "".join(
        f"p{k}.png,{t},{lam}\n" for k in range(3) for t, lam in (("apple", ""), ("banana", "0.5"))))
    return tmp_path


def _pairs(out: Path) -> dict[str, dict]:
    doc = json.loads((out / "run.json").read_text())
    keys = [p["key"] for p in doc["pairs"]]
    assert len(keys) == len(set(keys))  # each pair once
    return {p["key"]: p for p in doc["pairs"]}


def _device_arg(device: torch.device) -> str:
    """``--device`` for both ranks: on CUDA the one GPU (``cuda:0``) is shared by the two processes
    (``cuda`` would be ``cuda:LOCAL_RANK``, and a second GPU is not needed to test the job). No
    process group is made (only torchrun's store), so no nccl or gloo backend is involved."""
    return "cuda:0" if device.type == "cuda" else str(device)


def test_two_processes_make_the_same_pictures_as_one(work: Path, device: torch.device) -> None:
    args = ["run", "--manifest", "m.csv", "--steps", "3", *OPTS, "--device", _device_arg(device)]
    one = _run([sys.executable, "-m", "accentuate", *args, "--out", "one"], work)
    assert one.returncode == 0, one.stderr
    two = _run(_torchrun([*args, "--out", "two"]), work)
    assert two.returncode == 0, two.stderr
    doc = json.loads((work / "two" / "run.json").read_text())
    assert doc["status"] == "complete" and doc["counts"] == {"complete": 6, "total": 6, "resumed": 0}
    assert doc["distributed"]["world_size"] == 2 and [r["rank"] for r in doc["distributed"]["ranks"]] == [0, 1]
    assert sum(r["batches"] for r in doc["distributed"]["ranks"]) == 6
    assert sorted(b["index"] for b in doc["timings"]["batches"]) == list(range(6))  # each batch once
    assert not (work / "two" / "ranks").exists()  # merged into run.json, then removed
    assert {r["device"] for r in doc["distributed"]["ranks"]} == {_device_arg(device)}
    a, b = _pairs(work / "one"), _pairs(work / "two")
    assert set(a) == set(b) and len(a) == 6
    for key, p in b.items():
        assert p["status"] == "complete"
        for kind, name in p["files"].items():
            assert file_sha256(work / "two" / name) == p["sha256"][kind]
        if device.type == "cpu":
            assert p["sha256"] == a[key]["sha256"]  # the same PNG bytes
        else:  # CUDA's grid_sample backward adds with atomics: equal up to rounding, one 8-bit level
            one = np.asarray(Image.open(work / "one" / a[key]["files"]["image"]), dtype=np.int16)
            two = np.asarray(Image.open(work / "two" / p["files"]["image"]), dtype=np.int16)
            assert np.abs(one - two).max() <= 1, key


def _complete_in_records(out: Path) -> dict[int, int]:
    """rank -> pid, for the ranks whose record lists a complete pair."""
    found = {}
    for p in (out / "ranks").glob("rank-*.json") if (out / "ranks").is_dir() else []:
        try:
            doc = json.loads(p.read_text())
        except ValueError:
            continue
        if any(e["status"] == "complete" for e in doc["pairs"]):
            found[doc["rank"]] = doc["pid"]
    return found


def test_a_killed_rank_loses_only_its_batch_and_a_rerun_finishes(work: Path) -> None:
    args = ["run", "--manifest", "m.csv", "--steps", "80", *OPTS, "--out", "out"]
    out = work / "out"
    proc = subprocess.Popen(_torchrun(args), cwd=work, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not (found := _complete_in_records(out)):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        victim = found.get(1, found.get(0))
        os.kill(victim, signal.SIGKILL)  # one rank, mid-run: torchrun stops the other
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, err
    if victim == found.get(1):  # rank 0 was stopped by torchrun (SIGTERM) and saved what it had
        assert json.loads((out / "run.json").read_text())["status"] == "interrupted", err
    # What was finished before the kill: in run.json and the per-rank records, files intact.
    before: dict[str, dict] = {}
    docs = [json.loads((out / "run.json").read_text())]
    docs += [json.loads(p.read_text()) for p in (out / "ranks").glob("rank-*.json")]
    for doc in docs:
        for e in doc["pairs"]:
            if e["status"] == "complete" and all(file_sha256(out / n) == e["sha256"][k] for k, n in e["files"].items()):
                before[e["key"]] = e
    assert 1 <= len(before) < 6
    mtimes = {k: {n: (out / n).stat().st_mtime_ns for n in e["files"].values()} for k, e in before.items()}

    again = _run(_torchrun(args), work, timeout=150)
    assert again.returncode == 0, again.stderr
    final = _pairs(out)
    doc = json.loads((out / "run.json").read_text())
    assert doc["counts"]["complete"] == 6 and doc["counts"]["total"] == 6
    assert doc["counts"]["resumed"] == len(before)
    for key, e in final.items():
        assert e["status"] == "complete"
        for kind, name in e["files"].items():
            assert file_sha256(out / name) == e["sha256"][kind]
        if key in before:  # not recomputed: the same files, untouched
            assert e["resumed"] is True and e["sha256"] == before[key]["sha256"]
            assert {n: (out / n).stat().st_mtime_ns for n in e["files"].values()} == mtimes[key]
    assert sum(b["pairs"] for b in doc["timings"]["batches"]) == 6 - len(before)  # only the rest was run

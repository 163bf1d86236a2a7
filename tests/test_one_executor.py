"""``explain`` and ``concepts`` go through the one executor (:func:`accentuate.runs.execute`) like ``run``:
a process killed with SIGKILL part-way is finished by the same command, with the same pictures byte for
byte as a run that was never killed, and two processes under torchrun make the same pictures as one.

Each test starts ``python -m accentuate`` (or torchrun) as a subprocess on the tiny CLI model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TESTS = Path(__file__).parent
DATA = TESTS.parent / "src" / "accentuate" / "data"
QUICK = ["--model", "cli_models:tiny", "--crops", "2", "--canvas", "48", "--frames", "0", "--seed", "0", "-q"]


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


def _cmd(args: list[str], torchrun: bool = False) -> list[str]:
    if not torchrun:
        return [sys.executable, "-m", "accentuate", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), "--monitor-interval", "0.2", "-m", "accentuate", *args]


def _run(args: list[str], cwd: Path, torchrun: bool = False, timeout: float = 240) -> None:
    p = subprocess.run(_cmd(args, torchrun), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr


def _killed(args: list[str], cwd: Path, out: str, pairs: int, timeout: float = 240) -> None:
    """Start the command and SIGKILL it once its run.json lists ``pairs`` complete pair(s) (0: once it
    started optimizing); returns when it is dead (or it finished first)."""
    proc = subprocess.Popen(_cmd(args), cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            path = cwd / out / "run.json"
            if path.exists():
                doc = json.loads(path.read_text())  # written atomically: always whole
                if sum(p["status"] == "complete" for p in doc["pairs"]) >= pairs:
                    break
            time.sleep(0.05)
        else:
            if proc.poll() is None:
                raise AssertionError("the run did not get that far in time")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _pictures(folder: Path) -> dict[str, bytes]:
    """Every picture of an output folder (its report's thumbnails left out), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".png", ".npy")}


def _record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


@pytest.fixture
def work(tmp_path: Path) -> Path:
    y, x = np.mgrid[0:48, 0:64]
    arr = np.stack([np.sin(x / 5), np.cos(y / 7), np.sin((x + y) / 9)], -1) * 100 + 128
    Image.fromarray(arr.astype(np.uint8)).save(tmp_path / "wide.png")
    for sub, names in (("a", ["chelsea", "coffee"]), ("b", ["rocket", "astronaut"])):
        (tmp_path / "photos" / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(DATA / f"{n}.jpg", tmp_path / "photos" / sub / f"{n}.jpg")
    return tmp_path


EXPLAIN = ["explain", "wide.png", "--top", "3", "--steps", "150", *QUICK]
CONCEPTS = ["concepts", "photos", "--k", "3", "--top", "1", "--weak", "1", "--batch", "1", "--steps", "40", *QUICK]


def test_explain_killed_mid_run_finishes_with_the_same_pictures(work: Path) -> None:
    _run([*EXPLAIN, "--out", "whole"], work)
    _killed([*EXPLAIN, "--out", "again"], work, "again", pairs=0)
    _run([*EXPLAIN, "--out", "again"], work)
    whole, again = _pictures(work / "whole"), _pictures(work / "again")
    assert "explain_panel.png" in whole and len(whole) == 1 + 3 * 3 + 1  # panel, 3 x (png, rgba, figure), sheet
    assert again == whole
    doc = _record(work / "again")
    assert doc["status"] == "complete" and doc["outputs"]["explain_panel"] == "explain_panel.png"
    assert doc["result"]["file"] == "result.npz"  # the lossless copy the panel is drawn from
    # Run once more: every pair is resumed (its files, result.npz too, checked by SHA-256), nothing redone.
    _run([*EXPLAIN, "--out", "again"], work)
    assert _record(work / "again")["counts"] == {"complete": 3, "total": 3, "resumed": 3}
    assert _pictures(work / "again") == whole


def test_concepts_killed_after_a_pair_resumes_it_with_the_same_pictures(work: Path) -> None:
    _run([*CONCEPTS, "--out", "whole"], work)
    _killed([*CONCEPTS, "--out", "again"], work, "again", pairs=1)
    killed = _record(work / "again")
    assert killed["status"] == "running" and any(p["status"] == "complete" for p in killed["pairs"])
    _run([*CONCEPTS, "--out", "again"], work)
    doc = _record(work / "again")
    assert doc["status"] == "complete" and doc["counts"]["resumed"] >= 1 and doc["counts"]["total"] == 6
    assert len(doc["concepts"]) == 3 and all(c["accentuated"] for c in doc["concepts"])
    whole = _pictures(work / "whole")
    assert {"concepts.png", "concept-0.png", "concept-0.npy"} <= set(whole)
    assert _pictures(work / "again") == whole


@pytest.mark.parametrize("command", ["explain", "concepts"])
def test_two_processes_make_the_same_pictures_as_one(work: Path, command: str) -> None:
    args = EXPLAIN if command == "explain" else CONCEPTS
    args = [a if a not in ("150", "40") else "20" for a in args]  # fewer steps: the pictures are compared
    _run([*args, "--out", "one"], work)
    _run([*args, "--out", "two"], work, torchrun=True)
    doc = _record(work / "two")
    assert doc["status"] == "complete" and doc["distributed"]["world_size"] == 2
    assert not (work / "two" / "ranks").exists()  # merged into run.json, then removed
    assert _pictures(work / "two") == _pictures(work / "one")

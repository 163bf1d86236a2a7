"""Real signals: a run killed part-way keeps what it finished, on disk and intact, and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from accentuate.runs.record import file_sha256

TESTS = Path(__file__).parent
ARGS = ["run", "a.png", "b.png", "--target", "apple", "banana", "--model", "cli_models:tiny",
        "--steps", "300", "--crops", "2", "--canvas", "48", "--batch", "1", "--frames", "3",
        "--out", "out", "-q"]


def start(cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    # A shell that starts jobs in the background (CI runners, `make ... &`) leaves SIGINT
    # ignored, and an ignored SIGINT is inherited: give the child the default, as a terminal would.
    return subprocess.Popen([sys.executable, "-m", "accentuate", *ARGS], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_complete_pair(cwd: Path, proc: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        path = cwd / "out" / "run.json"
        if path.exists():
            doc = json.loads(path.read_text())  # written atomically: always whole
            if any(p["status"] == "complete" for p in doc["pairs"]):
                return doc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no pair finished in time")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for name, phase in (("a.png", 0.0), ("b.png", 1.0)):
        y, x = np.mgrid[0:48, 0:64]
        arr = np.stack([np.sin(x / 5 + phase), np.cos(y / 7), np.sin((x + y) / 9)], -1) * 100 + 128
        Image.fromarray(arr.astype(np.uint8)).save(tmp_path / name)
    return tmp_path


def check_finished_files(out: Path, doc: dict) -> list[dict]:
    done = [p for p in doc["pairs"] if p["status"] == "complete"]
    for p in done:
        for key, name in p["files"].items():
            if name and key in p.get("sha256", {}):
                assert file_sha256(out / name) == p["sha256"][key], (key, name)
    assert not list(out.glob(".*.tmp*"))  # no half-written files left looking complete
    return done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_killed_run_keeps_finished_pairs_and_resumes(work: Path, sig: int) -> None:
    proc = start(work)
    wait_for_complete_pair(work, proc)
    # 300 steps per pair leave the other three pairs many seconds of work: the signal lands mid-run.
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    out = work / "out"
    doc = json.loads((out / "run.json").read_text())
    finished = check_finished_files(out, doc)
    assert finished
    if sig in (signal.SIGINT, signal.SIGTERM):  # saved and marked; SIGTERM exits 128 + 15
        assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
        assert "interrupted" in err and "Traceback" not in err
        assert doc["status"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL
    # Rerun the same command: finished pairs are skipped (checked by content), the rest are done.
    again = start(work)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    final = json.loads((out / "run.json").read_text())
    assert final["counts"]["complete"] == 4 and final["counts"]["total"] == 4
    assert final["counts"]["resumed"] >= len(finished)
    check_finished_files(out, final)

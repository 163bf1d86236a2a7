"""Issue 16's small things: the end-of-run listing with --frames 0, explain naming the class
that overtook one, and the API reference building without warnings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from accentuate.analysis.explain import Explanation
from accentuate.cli import main
from accentuate.result import History, Result

FAST = ["--model", "cli_models:tiny", "--steps", "2", "--crops", "2", "--canvas", "48"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    y, x = np.mgrid[0:48, 0:64]
    img = np.stack([x * 3 % 256, y * 5 % 256, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "p.png")
    return tmp_path


@pytest.mark.parametrize("frames", [0, 2])
def test_end_of_run_listing_promises_a_gif_only_when_one_is_written(work: Path, capsys: pytest.CaptureFixture,
                                                                    frames: int) -> None:
    assert main(["run", "p.png", "--target", "apple", "--out", "o", "--frames", str(frames), *FAST]) == 0
    listing = next(line for line in capsys.readouterr().out.splitlines() if "per pair:" in line)
    doc = json.loads((work / "o" / "run.json").read_text())
    gifs = list((work / "o").glob("*.gif"))
    assert ("NAME.gif" in listing) == bool(gifs) == (frames > 0) == doc["outputs"]["gif"]
    assert ("gif" in doc["pairs"][0]["files"]) == (frames > 0)
    if frames == 0:
        assert doc["outputs"]["mp4"] is False and doc["outputs"]["mp4_note"] == "no animation (--frames 0)"


def _explanation(before: list[float], after: list[list[float]], classes: list[int]) -> Explanation:
    """One seed, K classes; ``after[j]`` are the logits on the accentuation of ``classes[j]``."""
    k = len(classes)
    b = torch.tensor(before).expand(1, k, -1).clone()
    a = torch.tensor(after)[None]
    z = torch.zeros(1, k)
    res = Result(images=torch.zeros(1, k, 3, 8, 8), masks=torch.zeros(1, k, 8, 8), seeds=None, targets=[],
                 labels=("tench", "goldfish", "shark", "tabby"), history=History(), before={"logits": b},
                 after={"logits": a}, steps_used=z.long(), lam_effective=z)
    return Explanation(result=res, classes=classes, names=[None] * k, reasons=["top-1"] * k,
                       probs=b[0, 0].softmax(-1), alpha=torch.zeros(1, k, 8, 8))


def test_explain_names_the_class_that_overtook_one() -> None:
    # tench was top-1 (rank 1); on its accentuation tabby rose above it: rank 1 -> 2, overtaken by tabby.
    # goldfish (rank 2) rose to 1: nothing overtook it.
    ex = _explanation([3.0, 2.0, 1.0, 0.0], [[3.0, 2.0, 1.0, 3.5], [1.0, 4.0, 1.0, 0.0]], [0, 1])
    assert ex.overtaken_by(0) == [3] and ex.rank_change(0) == "rank 1 -> 2 (overtaken by tabby)"
    assert ex.overtaken_by(1) == [] and ex.rank_change(1) == "rank 2 -> 1"
    # a class that was already above does not count as overtaking: shark was below, goldfish above
    ex = _explanation([2.0, 3.0, 1.0, 0.0], [[2.0, 3.0, 5.0, 4.0]], [0])
    assert ex.overtaken_by(0) == [2, 3]
    assert ex.rank_change(0) == "rank 2 -> 4 (overtaken by shark, tabby)"


def test_explain_command_prints_the_rank_change(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["explain", "p.png", "--top", "2", "--out", "ex", "--frames", "0", *FAST]) == 0
    out = capsys.readouterr().out
    doc = json.loads((work / "ex" / "run.json").read_text())
    lines = [line for line in out.splitlines() if "[top-" in line]
    assert len(lines) == 2 and all("rank " in line for line in lines)
    assert len(doc["explain"]["overtaken_by"]) == 2
    for line, over in zip(lines, doc["explain"]["overtaken_by"]):
        assert ("overtaken by" in line) == bool(over)
        assert all(o["name"] in line for o in over[:3])

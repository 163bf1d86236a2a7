"""The command line's direction target, ``LAYER:FILE.npy`` / ``LAYER:FILE.pt``: a vector in the
layer's channel space read from a file; bad files are one-line usage errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import accentuate as acc
from accentuate.cli import main

FAST = ["--model", "cli_models:tiny", "--steps", "4", "--crops", "2", "--canvas", "48", "--frames", "0"]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    y, x = np.mgrid[0:48, 0:64]
    img = np.stack([128 + 100 * np.sin(x / 6), 128 + 90 * np.cos(y / 5), (x * 3 + y * 2) % 255], -1)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(tmp_path / "p.png")
    np.save(tmp_path / "vec.npy", np.random.default_rng(0).standard_normal(16).astype(np.float32))
    return tmp_path


def test_direction_from_npy_rises_and_matches_the_api(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "p.png", "--target", "conv2:vec.npy", "--out", "o", *FAST]) == 0
    doc = json.loads((work / "o" / "run.json").read_text())
    t = doc["targets"][0]
    assert t["kind"] == "direction" and t["layer"] == "conv2" and t["channels"] == 16
    assert t["label"] == "conv2 along vec.npy" and t["objective"] == "Direction(conv2, 16-d, dot)"
    pair = doc["pairs"][0]
    assert pair["id"] == "p__conv2-vec" and (work / "o" / "p__conv2-vec.png").exists()
    assert pair["after"]["value"] > pair["before"]["value"]  # the direction rose
    # the same numbers as the API with acc.direction on the same vector
    model = acc.load_model("cli_models:tiny")
    seed = acc.prepare_seeds(acc.load_image("p.png"), 48)
    v = torch.from_numpy(np.load("vec.npy"))
    gen = doc["timings"]["batches"][0]["generator_seed"]  # the run's batch seed (derived from --seed)
    res = acc.accentuate(model, seed, acc.direction("conv2", v), steps=4, crops=2, canvas=48, generator=gen)
    assert pair["after"]["value"] == pytest.approx(float(res.after["value"][0, 0]), rel=1e-4)
    # Result.load reads the vector again from the file
    back = acc.Result.load(work / "o")
    assert isinstance(back.targets[0], acc.objectives.Direction)
    assert torch.allclose(back.targets[0].vector, v / v.norm())


def test_direction_from_pt(work: Path) -> None:
    torch.save(torch.ones(1, 16), work / "ones.pt")  # (1, C) is taken as a vector
    assert main(["run", "p.png", "--target", "conv2:ones.pt", "--out", "o", "--quiet", *FAST]) == 0
    assert json.loads((work / "o" / "run.json").read_text())["targets"][0]["label"] == "conv2 along ones.pt"


def _bad(work: Path, kind: str) -> str:
    if kind == "missing":
        return "conv2:nope.npy"
    if kind == "length":
        np.save(work / "short.npy", np.ones(10, dtype=np.float32))
        return "conv2:short.npy"
    if kind == "nan":
        v = np.ones(16, dtype=np.float32)
        v[3] = np.nan
        np.save(work / "nan.npy", v)
        return "conv2:nan.npy"
    if kind == "matrix":
        np.save(work / "m.npy", np.ones((4, 4), dtype=np.float32))
        return "conv2:m.npy"
    if kind == "zeros":
        np.save(work / "z.npy", np.zeros(16, dtype=np.float32))
        return "conv2:z.npy"
    if kind == "pickle":
        np.save(work / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return "conv2:obj.npy"
    if kind == "layer":
        return "nolayer:vec.npy"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("missing", "direction file 'nope.npy' not found; give the path of a .npy or .pt vector"),
    ("length", "direction has 10 entries but layer 'conv2' has 16 channels; the vector needs one entry per channel"),
    ("nan", "the vector in 'nan.npy' has 1 NaN or infinite entry; a direction must be finite"),
    ("matrix", "holds an array of shape (4, 4); a direction is one vector (C,)"),
    ("zeros", "is all zeros"),
    ("pickle", "cannot read 'obj.npy' as a vector"),
    ("layer", "layer 'nolayer' is not in the model"),
])
def test_bad_direction_files_exit_2_with_one_line(work: Path, capsys: pytest.CaptureFixture, kind: str,
                                                  message: str) -> None:
    target = _bad(work, kind)
    assert main(["run", "p.png", "--target", target, "--out", "o", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("accentuate: error: "), err
    assert message in err[0]
    assert not (work / "o").exists()


def test_two_vector_files_for_one_layer_are_two_targets(work: Path) -> None:
    np.save(work / "other.npy", np.random.default_rng(1).standard_normal(16).astype(np.float32))
    assert main(["run", "p.png", "--target", "conv2:vec.npy", "conv2:other.npy", "--out", "o", "--quiet",
                 *FAST]) == 0
    doc = json.loads((work / "o" / "run.json").read_text())
    assert [p["id"] for p in doc["pairs"]] == ["p__conv2-vec", "p__conv2-other"]
    assert doc["pairs"][0]["key"] != doc["pairs"][1]["key"]  # same repr, different vectors
    assert doc["pairs"][0]["after"]["value"] != doc["pairs"][1]["after"]["value"]
    # an edited vector file is a new target: the rerun redoes that pair only
    np.save(work / "other.npy", np.random.default_rng(2).standard_normal(16).astype(np.float32))
    assert main(["run", "p.png", "--target", "conv2:vec.npy", "conv2:other.npy", "--out", "o", "--quiet",
                 *FAST]) == 0
    again = json.loads((work / "o" / "run.json").read_text())
    assert [p["resumed"] for p in again["pairs"]] == [True, False]

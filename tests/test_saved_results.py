"""``Result.save`` writes what the command line writes (same names, same run.json) plus a
lossless ``result.npz``; ``Result.load`` reads it back exactly, and reads a command-line
output folder from its PNGs (within 1/255) and run.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, TINY_SPEC, TinyNet
from PIL import Image
from test_reliability import photo_array

import accentuate as acc
from accentuate.cli import main
from accentuate.runs.record import FORMAT, file_sha256
from accentuate.runs.saved import RecordedObjective, objective_from_record, objective_record

CLI_FAST = ["--model", "cli_models:tiny", "--steps", "3", "--crops", "2", "--canvas", "48", "--frames", "2"]


def _photo(folder: Path) -> Path:
    path = folder / "cat.png"
    Image.fromarray(photo_array(36, 48)).save(path)
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return _photo(tmp_path)


@pytest.fixture(scope="module")
def saved_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[acc.Result, Path]:
    """One saved result for the module (saving draws figures and GIFs: seconds)."""
    tiny = TinyNet().eval()
    tiny.accentuate_spec = TINY_SPEC
    folder = tmp_path_factory.mktemp("saved")
    targets = ["banana", acc.channel("conv2", 1), acc.logit(0) - 0.5 * acc.neuron("conv2", 2, 1, 1)]
    seeds = [str(_photo(folder)), torch.rand(3, 36, 48, generator=torch.Generator().manual_seed(1))]
    res = acc.accentuate(tiny, seeds, targets, snapshots=4, record_every=3, **FAST)
    res.failed[(1, 2)] = "non-finite loss (a test)"
    res.save(folder / "saved")
    return res, folder / "saved"


@pytest.fixture
def saved(saved_once: tuple[acc.Result, Path], tmp_path: Path) -> tuple[acc.Result, Path]:
    """A copy of the saved folder that a test may change."""
    res, out = saved_once
    shutil.copytree(out, tmp_path / "saved")
    return res, tmp_path / "saved"


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_save_names_files_as_the_cli_does_and_writes_run_json(saved) -> None:
    res, out = saved
    doc = json.loads((out / "run.json").read_text())
    assert doc["format"] == FORMAT and doc["subcommand"] == "Result.save" and doc["status"] == "complete"
    ids = [p["id"] for p in doc["pairs"]]
    assert ids[:2] == ["cat__banana", "cat__conv2-c1"] and ids[3] == "seed1__banana"  # {image}__{target}
    for p in doc["pairs"]:
        assert set(p["files"]) == {"image", "rgba", "figure", "gif", "lossless"}  # lossless: result.npz
        for kind, name in p["files"].items():
            assert file_sha256(out / name) == p["sha256"][kind]
    assert doc["pairs"][5]["status"] == "failed" and doc["pairs"][5]["failed"] == "non-finite loss (a test)"
    assert doc["pairs"][0]["distance"]["reg_layer"] is not None  # measured: the model was given
    assert doc["result"]["file"] == "result.npz" and file_sha256(out / "result.npz") == doc["result"]["sha256"]
    assert (out / "contact_sheet.png").exists()


def test_save_writes_the_same_record_fields_as_the_cli(saved, tmp_path: Path, photo: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, out = saved
    mine = json.loads((out / "run.json").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["run", photo.name, "--target", "apple", "--out", "cli", "--quiet", *CLI_FAST]) == 0
    cli = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert set(cli) <= set(mine) and set(mine) - set(cli) == {"result"}
    assert set(cli["pairs"][0]) == set(mine["pairs"][0])
    assert set(cli["settings"]) == set(mine["settings"]) and set(cli["targets"][0]) <= set(mine["targets"][0])


def test_load_round_trips_exactly_from_result_npz(saved) -> None:
    res, out = saved
    back = acc.Result.load(out)
    for name in ("images", "masks", "seeds", "steps_used", "lam_effective"):
        assert torch.equal(getattr(back, name), getattr(res, name)), name
    _same(back.before, res.before)
    _same(back.after, res.after)
    assert back.config == res.config and back.labels == res.labels
    assert [repr(t) for t in back.targets] == [repr(t) for t in res.targets]
    assert back.failed == res.failed and back.interrupted is False and back.steps_done == res.steps_done
    assert back.history.steps == res.history.steps and back.history.keys() == res.history.keys()
    assert back.history.to_records() == res.history.to_records()  # NaN-free: absent where not evaluated
    assert torch.equal(back.alpha(), res.alpha()) and back.top() == res.top()
    # the targets are real objectives again: they can be optimized
    assert isinstance(back.targets[2], acc.Objective) and back.targets[2].layers == res.targets[2].layers
    # one seed of the two, by name
    one = acc.Result.load(out / "run.json", seeds=["seed1"])
    assert torch.equal(one.images[0], res.images[1]) and one.failed == {(0, 2): "non-finite loss (a test)"}


def test_load_from_the_pngs_is_within_one_level_of_8_bits(saved) -> None:
    res, out = saved
    (out / "result.npz").unlink()
    back = acc.Result.load(out)
    assert back.images.shape == res.images.shape
    assert float((back.images - res.images).abs().max()) <= 1 / 255 / 2 + 1e-6  # rounded to 8 bits
    assert torch.allclose(back.masks, res.alpha(), atol=1 / 255 / 2 + 1e-6)  # the saved alpha
    assert torch.equal(back.after["value"], res.after["value"])
    assert torch.equal(back.steps_used, res.steps_used)
    assert back.config == res.config and len(back.history) == 0
    assert back.seeds is None  # the seed names of Result.save are not files


def test_load_reads_a_cli_output_folder(tmp_path: Path, photo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", photo.name, "--target", "apple", "conv2:1", "conv2:1@2,3", "--out", "runs/a", "--quiet",
                 *CLI_FAST]) == 0
    doc = json.loads((tmp_path / "runs/a/run.json").read_text())
    res = acc.Result.load(tmp_path / "runs/a")
    assert res.images.shape == (1, 3, 3, 36, 48)
    png = np.asarray(Image.open(tmp_path / "runs/a" / doc["pairs"][0]["files"]["image"]).convert("RGB"))
    assert torch.equal(res.images[0, 0], torch.from_numpy(png.copy()).permute(2, 0, 1).float() / 255)
    assert [repr(t) for t in res.targets] == [t["objective"] for t in doc["targets"]]
    assert {**res.config.to_dict(), **res.run} == {**doc["engine_config"],
                                                  "targets": [t["objective"] for t in doc["targets"]]}
    assert res.after["value"][0, 1].item() == pytest.approx(doc["pairs"][1]["after"]["value"])
    assert "rank" not in res.after  # mixed targets: ranks only for the class, in run.json
    expected = acc.prepare_seeds(acc.load_image(photo), 48)
    assert res.seeds is not None and torch.allclose(res.seeds, expected, atol=1e-6)  # read from cat.png
    Image.fromarray(photo_array(36, 48)[::-1].copy()).save(photo)  # the seed file changed since
    assert acc.Result.load(tmp_path / "runs/a").seeds is None


def test_load_errors_are_one_line(tmp_path: Path, saved) -> None:
    _, out = saved
    with pytest.raises(FileNotFoundError, match="no run.json in .*Result.load reads folders written by"):
        acc.Result.load(tmp_path / "nothing")
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    doc = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**doc, "format": "other/9"}))
    with pytest.raises(ValueError, match="has format 'other/9', not 'accentuate-run/1'"):
        acc.Result.load(bad)
    (bad / "run.json").write_text(json.dumps({**doc, "pairs": doc["pairs"][:4]}))
    with pytest.raises(ValueError, match="records 4 of 6 pairs .* rerun its command"):
        acc.Result.load(bad)
    canvases = [dict(doc["images"][0]), dict(doc["images"][1], canvas=[48, 36])]
    (bad / "run.json").write_text(json.dumps({**doc, "images": canvases}))
    with pytest.raises(ValueError, match=r"2 canvas sizes .* seeds=\[\.\.\.\]"):
        acc.Result.load(bad)
    with pytest.raises(ValueError, match="'dog' is not an image of this run"):
        acc.Result.load(out, seeds=["dog"])


def test_objective_records_rebuild_each_kind() -> None:
    d = acc.direction("conv2", torch.arange(1.0, 17.0))
    obj = 2 * acc.logit(3) - acc.channel("conv2", 1) + 0.25 * acc.neuron("conv2", 4, 1, 2) + d
    back = objective_from_record(json.loads(json.dumps(objective_record(obj))))
    assert repr(back) == repr(obj)
    acts = {"@output": torch.randn(2, 4), "conv2": torch.randn(2, 16, 5, 5)}
    lays = {"@output": acc.Layout("vector", 4), "conv2": acc.Layout("nchw", 16, (5, 5))}
    assert torch.allclose(back(acts, lays), obj(acts, lays))

    class Custom(acc.Objective):
        layers = frozenset({"conv2"})

        def __call__(self, acts, layouts):
            return acts["conv2"].mean(dim=(1, 2, 3))

        def __repr__(self) -> str:
            return "Custom()"

    kept = objective_from_record(objective_record(Custom()))
    assert isinstance(kept, RecordedObjective) and repr(kept) == "Custom()"
    with pytest.raises(TypeError, match="build the objective again"):
        kept(acts, lays)

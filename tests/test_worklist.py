"""Work lists: manifests (CSV, JSON Lines), their errors, fixed batches and their seeds, in one process.

The runs use the tiny CLI model (``--model cli_models:tiny``), a few steps and ``--frames 0``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from accentuate.cli import main
from accentuate.objectives import logit
from accentuate.runs.manifest import read_manifest
from accentuate.runs.record import file_sha256
from accentuate.runs.work import Batch, ImageInfo, TargetInfo, batch_seed, cut_batches

FAST = ["--model", "cli_models:tiny", "--steps", "3", "--crops", "2", "--canvas", "48", "--frames", "0", "-q"]


def _photo(path: Path, w: int = 64, h: int = 48, phase: float = 0.0, scale: float = 1.0) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 6 + phase), 128 + 90 * np.cos(y / 5 + phase), (x * 3 + y * 2) % 255], -1)
    Image.fromarray((img * scale).clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    _photo(tmp_path / "photos" / "a.png")
    _photo(tmp_path / "photos" / "b.png", phase=1.0)
    _photo(tmp_path / "photos" / "c.png", 40, 40, phase=2.0)
    return tmp_path


def _record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


# -- reading manifests -------------------------------------------------------------------

def test_csv_and_jsonl_manifests_read_the_same_rows(work: Path) -> None:
    sub = work / "lists"
    sub.mkdir()
    (sub / "m.csv").write_text('image,target,lam,steps,reg_layer,until\n../photos/a.png,apple,,,,\n'
                               '../photos/b.png,"tiger, cat",0.5,7,conv1,top1\n\n')
    (sub / "m.jsonl").write_text(json.dumps({"image": "../photos/a.png", "target": "apple"}) + "\n\n"
                                 + json.dumps({"image": "../photos/b.png", "target": "tiger, cat", "lam": 0.5,
                                               "steps": 7, "reg_layer": "conv1", "until": "top1"}) + "\n")
    csv_rows, jsonl_rows = read_manifest(sub / "m.csv"), read_manifest(sub / "m.jsonl")
    assert [(r.image, r.target, r.settings) for r in csv_rows] == [(r.image, r.target, r.settings) for r in jsonl_rows]
    assert csv_rows[0].image == sub / "../photos/a.png" and csv_rows[0].image.exists()  # relative to the manifest
    assert csv_rows[0].settings == ()
    assert dict(csv_rows[1].settings) == {"lam": 0.5, "steps": 7, "reg_layer": "conv1", "until": "top1"}
    assert csv_rows[1].where == "m.csv line 3" and jsonl_rows[1].where == "m.jsonl line 3"


@pytest.mark.parametrize("text, where, words", [
    ("", "m.csv is empty", "header line"),
    ("image,target\n", "m.csv has no rows", "one line per pair"),
    ("image,lam\nphotos/a.png,1\n", "m.csv line 1", "no 'target' column"),
    ("image,target,lamda\nphotos/a.png,apple,1\n", "m.csv line 1", "unknown column 'lamda'"),
    ("image,target\nphotos/a.png,apple\nphotos/nope.png,apple\n", "m.csv line 3", "image not found"),
    ("image,target\nphotos/a.png,apple\nphotos/b.png,durian\n", "m.csv line 3", "durian"),
    ("image,target\nphotos/a.png,\n", "m.csv line 2", "no target"),
    ("image,target,steps\nphotos/a.png,apple,many\n", "m.csv line 2", "steps 'many' is not an integer"),
    ("image,target,lam\nphotos/a.png,apple,-1\n", "m.csv line 2", "lam must be"),
    ("image,target,reg_layer\nphotos/a.png,apple,conv9\n", "m.csv line 2", "conv9"),
    ("image,target,until\nphotos/a.png,conv2:1,top1\n", "m.csv line 2", "needs class targets"),
], ids=["empty", "header-only", "missing-column", "unknown-column", "missing-image", "unknown-target",
        "empty-target", "bad-number", "bad-lam", "unknown-layer", "until-on-channel"])
def test_bad_manifest_is_one_line_naming_the_row_before_any_work(
        work: Path, capsys: pytest.CaptureFixture, text: str, where: str, words: str) -> None:
    (work / "m.csv").write_text(text)
    rc = main(["run", "--manifest", "m.csv", "--out", "out", *FAST])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accentuate: error: "), err
    assert where in lines[0] and words in lines[0], lines[0]
    assert not (work / "out").exists()  # nothing ran, nothing was written


def test_manifest_excludes_images_and_targets(work: Path, capsys: pytest.CaptureFixture) -> None:
    (work / "m.csv").write_text("image,target\nphotos/a.png,apple\n")
    assert main(["run", "photos/a.png", "--manifest", "m.csv", *FAST]) == 2
    assert "either --manifest FILE or IMAGEs" in capsys.readouterr().err
    assert main(["run", "photos/a.png", *FAST]) == 2
    assert "no target given; use --target T" in capsys.readouterr().err


# -- batches -----------------------------------------------------------------------------

def _images(canvases: list[tuple[int, int]]) -> list[ImageInfo]:
    return [ImageInfo(path=f"{k}.png", name=f"{k}.png", sha256=str(k), size=(1, 1), canvas=c)
            for k, c in enumerate(canvases)]


def _targets(n: int, settings: dict[int, dict] | None = None) -> list[TargetInfo]:
    return [TargetInfo(str(j), logit(j), (settings or {}).get(j, {})) for j in range(n)]


def test_batches_cover_each_pair_once_and_share_canvas_and_settings() -> None:
    images = _images([(36, 48), (48, 48), (36, 48), (36, 48), (48, 48)])
    targets = _targets(4, {3: {"lam": 0.5}})
    pairs = [(i, j) for i in range(5) for j in range(4) if (i + j) % 3]  # sparse
    for size in (1, 2, 3, 4, 16):
        batches = cut_batches(pairs, images, targets, size)
        got = [p for b in batches for p in b.pairs]
        assert sorted(got) == sorted(pairs) and len(got) == len(pairs)  # each once, nothing extra
        for b in batches:
            assert len(b.pairs) <= size
            assert len({images[i].canvas for i in b.seeds}) == 1
            assert len({json.dumps(targets[j].settings) for j in b.targets}) == 1
        assert [b.index for b in batches] == list(range(len(batches)))
        assert cut_batches(pairs, images, targets, size) == batches  # fixed: the list alone decides


def test_a_full_product_is_cut_into_blocks_of_b() -> None:
    images, targets = _images([(48, 48)] * 3), _targets(2)
    pairs = [(i, j) for i in range(3) for j in range(2)]
    assert cut_batches(pairs, images, targets, 4) == [Batch(0, (0, 1), (0, 1)), Batch(1, (2,), (0, 1))]
    # a sparse list: images that want the same targets go together, nothing outside the list is run
    sparse = [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert [b.pairs for b in cut_batches(sparse, images, targets, 4)] == [[(0, 0), (0, 1)], [(1, 0), (2, 0)]]
    # one image with many targets, many images with one: targets wanted by the same images go together
    wide = [(0, j) for j in range(4)] + [(1, 0), (2, 0)] + [(1, 1)]
    assert len(cut_batches(wide, images, _targets(4), 3)) == 3


def test_batch_seed_depends_on_the_run_seed_and_the_content_only() -> None:
    a = batch_seed(0, ["k1", "k2"])
    assert a == batch_seed(0, ["k1", "k2"]) and 0 <= a < 2**62
    assert len({a, batch_seed(1, ["k1", "k2"]), batch_seed(0, ["k1"]), batch_seed(0, ["k2", "k1"])}) == 4


# -- runs --------------------------------------------------------------------------------

def test_manifest_run_own_settings_skipped_image_and_nan_pair(work: Path, capsys: pytest.CaptureFixture) -> None:
    _photo(work / "photos" / "dark.png", scale=0.05)  # the model's logits are NaN for it
    (work / "photos" / "broken.png").write_bytes(b"not an image")
    (work / "m.csv").write_text("image,target,lam,steps\nphotos/a.png,apple,,\nphotos/a.png,banana,0.5,4\n"
                                "photos/broken.png,apple,,\nphotos/dark.png,apple,,\nphotos/b.png,apple,,\n"
                                "photos/b.png,apple,,\n")
    rc = main(["run", "--manifest", "m.csv", "--out", "out", "--batch", "2",
               *FAST[2:], "--model", "cli_models:nan_on_dark"])
    err = capsys.readouterr().err
    assert rc == 1, err  # a pair failed; the job went on
    doc = _record(work / "out")
    status = {(p["image"], p["target_label"]): p["status"] for p in doc["pairs"]}
    assert status == {("a.png", "apple (0)"): "complete", ("a.png", "banana (1) (lam 0.5, steps 4)"): "complete",
                      ("dark.png", "apple (0)"): "failed", ("b.png", "apple (0)"): "complete"}
    assert doc["counts"]["total"] == 4 and doc["counts"]["complete"] == 3 and doc["counts"]["failed"] == 1
    assert [s["path"] for s in doc["skipped_images"]] == ["photos/broken.png"]  # relative to the manifest
    assert "skipped" in err and "broken.png" in err and "repeats an earlier row" in err
    assert doc["manifest"] == {"path": "m.csv", "rows": 6, "pairs": 4}
    assert doc["targets"][1]["settings"] == {"lam": 0.5, "steps": 4}
    banana = next(p for p in doc["pairs"] if p["target_label"].startswith("banana"))
    assert banana["steps_done"] == 4  # the row's steps; the others ran the run's 3
    assert {p["steps_done"] for p in doc["pairs"] if p is not banana and p["status"] == "complete"} == {3}
    for p in doc["pairs"]:
        for kind, name in p["files"].items():
            assert file_sha256(work / "out" / name) == p["sha256"][kind]
    # batches: one generator seed each, from the content; rerunning redoes only the failed pair's batch
    seeds = {b["index"]: b["generator_seed"] for b in doc["timings"]["batches"]}
    assert len(set(seeds.values())) == len(seeds)
    rc = main(["run", "--manifest", "m.csv", "--out", "out", "--batch", "2", *FAST[2:], "--model",
               "cli_models:nan_on_dark"])
    again = _record(work / "out")
    assert rc == 1 and again["counts"]["resumed"] == 3
    redone = [b for b in again["timings"]["batches"]]
    assert len(redone) == 1 and redone[0]["generator_seed"] == seeds[redone[0]["index"]]


def test_devices_autocast_and_channels_last_reach_the_settings(work: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["run", "photos/a.png", "--target", "apple", "--out", "out", "--autocast", "bfloat16",
               "--no-channels-last", "--device", "cpu", *FAST])
    assert rc == 0, capsys.readouterr().err
    doc = _record(work / "out")
    assert doc["settings"]["autocast"] == "bfloat16" and doc["settings"]["channels_last"] is False
    assert doc["device"] == "cpu" and "cuda_peak_memory_bytes" not in doc
    if not torch.cuda.is_available():
        assert main(["run", "photos/a.png", "--target", "apple", "--device", "cuda:1", *FAST]) == 2
        assert "CUDA is not available here" in capsys.readouterr().err
    assert main(["run", "photos/a.png", "--target", "apple", "--device", "tpu", *FAST]) == 2
    assert "is not a torch device" in capsys.readouterr().err


# -- explain ROOT --misclassified ----------------------------------------------------------

def test_explain_misclassified_finds_exactly_the_wrong_ones(work: Path, capsys: pytest.CaptureFixture) -> None:
    import accentuate as acc
    from accentuate.analysis.misclassified import classify
    from accentuate.images import load_image, prepare_seeds

    model = acc.load_model("cli_models:tiny")
    labels = model.accentuate_spec.labels
    made = []
    for k in range(6):
        path = _photo(work / f"x{k}.png", phase=0.7 * k, scale=0.6 + 0.08 * k)
        made.append(path)
    seeds = [prepare_seeds(load_image(p), 48)[0] for p in made]
    pred = classify(model, model.accentuate_spec, seeds).argmax(1).tolist()
    wrong = next(c for c in range(4) if c != pred[0])
    wrong_class = labels[wrong]
    root = work / "val"
    for k, (path, c) in enumerate(zip(made, pred)):
        # folders named by class name, or by index where the name is ambiguous ("crane" is two classes)
        name = labels[c] if labels.count(labels[c]) == 1 else str(c)
        folder = root / (wrong_class if k == 0 else name)  # x0 is filed under a wrong class on purpose
        folder.mkdir(parents=True, exist_ok=True)
        path.rename(folder / path.name)
    rc = main(["explain", "val", "--misclassified", "--out", "out", *FAST])
    assert rc == 0, capsys.readouterr().err
    doc = _record(work / "out")
    mis = doc["misclassified"]
    assert mis["images"] == 6 and mis["wrong"] == 1
    assert [(m["image"], m["true"], m["predicted"]) for m in mis["mistakes"]] == [
        (f"{wrong_class}/x0.png", wrong_class, labels[pred[0]])]
    assert doc["counts"]["complete"] == 2 and doc["counts"]["total"] == 2  # predicted and true class
    assert {p["target_label"].split(" (")[0] for p in doc["pairs"]} == {wrong_class, labels[pred[0]]}
    (conf,) = mis["confusions"]
    assert conf["count"] == 1 and conf["true"] == wrong_class and (work / "out" / conf["panel"]).is_file()


def test_explain_misclassified_bad_tree(work: Path, capsys: pytest.CaptureFixture) -> None:
    (work / "val" / "durian").mkdir(parents=True)
    _photo(work / "val" / "durian" / "d.png")
    assert main(["explain", "val", "--misclassified", *FAST]) == 2
    err = capsys.readouterr().err
    assert "folder" in err and "durian" in err and "rename the folder" in err
    assert main(["explain", "photos/a.png", "--misclassified", *FAST]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_explain_misclassified_on_the_bundled_photos(work: Path, capsys: pytest.CaptureFixture) -> None:
    """The embedded model over a labelled tree of the bundled photos, the cat filed under espresso on purpose."""
    import shutil

    import accentuate as acc

    for folder, name in (("espresso", "coffee"), ("espresso", "chelsea"), ("moped", "motorcycle")):
        (work / "val" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(acc.photo(name), work / "val" / folder / f"{name}.jpg")
    rc = main(["explain", "val", "--misclassified", "--out", "out", "--steps", "2", "--crops", "2", "--canvas", "224",
               "--frames", "0", "-q"])
    assert rc == 0, capsys.readouterr().err
    mis = _record(work / "out")["misclassified"]
    assert [(m["image"], m["true"]) for m in mis["mistakes"]] == [("espresso/chelsea.jpg", "espresso")]
    assert mis["mistakes"][0]["predicted"] in ("tiger cat", "Egyptian cat", "tabby")
    assert [c["count"] for c in mis["confusions"]] == [1]


# -- the work list is one recorded value ----------------------------------------------------

def test_a_manifest_folder_records_its_pairs_and_reads_back_as_asked(work: Path) -> None:
    """run.json records the manifest's pairs (not just a count); the report counts them (no pair the
    manifest never asked for is "not run"), and Result.load reads it one batch at a time."""
    import accentuate as acc
    from accentuate.report.build import _run_context
    from accentuate.runs.work import recorded_work

    (work / "m.csv").write_text("image,target\nphotos/a.png,apple\nphotos/b.png,banana\nphotos/a.png,banana\n")
    assert main(["run", "--manifest", "m.csv", "--out", "out", "--batch", "1", *FAST]) == 0
    doc = _record(work / "out")
    rec = recorded_work(doc)
    assert rec.kind == "manifest" and rec.pairs == ((0, 0), (1, 1), (0, 1))  # 3 of the 2 x 2 grid, in row order
    assert [p["row"] for p in doc["work"]["pairs"]] == ["m.csv line 2", "m.csv line 3", "m.csv line 4"]
    assert {p["key"] for p in doc["work"]["pairs"]} == {p["key"] for p in doc["pairs"]}
    assert doc["counts"]["total"] == 3 and doc["counts"]["complete"] == 3
    ctx = _run_context(work / "out", doc)
    assert ctx["counts"]["total"] == 3 and ctx["missing"] == [] and "not run" not in ctx["counts"]
    with pytest.raises(ValueError, match=r"one batch at a time: Result.load\(folder, batch=k\) for k in 0..2"):
        acc.Result.load(work / "out")
    for p in doc["pairs"]:
        res = acc.Result.load(work / "out", batch=p["batch"])
        assert res.images.shape[:2] == (1, 1) and repr(res.targets[0]) == p["objective"]
        stored = np.asarray(Image.open(work / "out" / p["files"]["image"]).convert("RGB"), dtype=np.float32) / 255
        assert torch.allclose(res.images[0, 0].permute(1, 2, 0), torch.from_numpy(stored))
        gen = next(b["generator_seed"] for b in doc["timings"]["batches"] if b["index"] == p["batch"])
        assert res.config.seed == gen  # the batch's own generator seed
    with pytest.raises(ValueError, match="has no batch 7"):
        acc.Result.load(work / "out", batch=7)


def test_a_product_list_keeps_every_pair_when_stems_repeat() -> None:
    """Pairs whose file stems would collide keep distinct stems and keys (each pair is recorded)."""
    from accentuate.runs.work import WorkList

    images = [ImageInfo(path=f"{d}/ref.png", name="ref.png", sha256=d, size=(1, 1), canvas=(48, 48)) for d in "ab"]
    work = WorkList(images, [TargetInfo("0", logit(0)), TargetInfo("0", logit(0))], "k", batch_size=4)
    assert len({p.key for p in work}) == len({p.stem for p in work}) == 4
    with pytest.raises(ValueError, match="listed twice"):
        WorkList(images, [TargetInfo("0", logit(0))], "k", 4, pairs=[(0, 0), (0, 0)])

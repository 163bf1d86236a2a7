"""The analyses: pathway similarity, lambda sweep, latent features, cascading randomization."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import FAST, TINY_SPEC, TinyNet, save_png
from torch import nn

import accentuate as acc
from accentuate.analysis import (
    augmented_views,
    cascade_order,
    cascading_randomization,
    lambda_sweep,
    latent_features,
    pathway_similarity,
    randomize,
    sensitive_region,
)
from accentuate.analysis.activations import units
from accentuate.analysis.stats import pearson, spearman
from accentuate.analysis.writing import markdown_table
from accentuate.cli import main

QUICK = dict(steps=6, crops=2, canvas=48, lr=0.1)


def tiny_model() -> nn.Module:
    """Factory for the CLI tests (``--model test_analysis:tiny_model``)."""
    model = TinyNet()
    model.accentuate_spec = TINY_SPEC
    return model.eval()


def _variants(img: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [img.roll(5 * k, dims=-1).flip(-1) if k % 2 else img.roll(5 * k, dims=-2) for k in range(n)]


# -- shared measures --------------------------------------------------------------------------
def test_pearson_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 50, generator=g), torch.randn(4, 50, generator=g)
    ours = pearson(a, b).numpy()
    ref = np.corrcoef(a.numpy(), b.numpy())[:3, 3:]
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert math.isnan(float(pearson(torch.ones(1, 5), a[:1, :5])[0, 0]))  # a constant row has no r


def test_spearman_is_rank_based_and_handles_ties():
    x = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0])
    assert spearman(x, x**3 + 7) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    ref = float(np.corrcoef([0.5, 0.5, 2, 3, 4], [4, 3, 2, 1, 0])[0, 1])  # ties get average ranks
    assert spearman(x, torch.tensor([4.0, 3, 2, 1, 0])) == pytest.approx(ref, abs=1e-6)


def test_units_in_forward_order(tiny):
    assert units(tiny, TINY_SPEC) == ["conv1", "conv2", "conv3", "fc"]
    assert cascade_order(tiny) == ["fc", "conv3", "conv2", "conv1"]


def test_markdown_table_formats_numbers():
    text = markdown_table([{"a": 1.23456, "b": None, "c": 2e-5}], digits=2)
    assert text.splitlines()[2] == "| 1.23 |  | 2e-05 |"


# -- sensitive region -------------------------------------------------------------------------
def test_region_interpolated_on_log_lambda():
    lams = [0.01, 0.1, 1, 10, 100]
    r = sensitive_region(lams, [10, 9.5, 5, 0.5, 0.2])
    assert r.found
    # 0.9 is crossed between 0.1 (0.95) and 1 (0.5): 1/9 of the decade above 0.1.
    assert math.log10(r.low) == pytest.approx(-1 + 0.05 / 0.45)
    assert math.log10(r.high) == pytest.approx(0.4 / 0.45)
    assert lams[0] <= r.low < r.high <= lams[-1]


def test_region_edge_cases_return_none_with_reason():
    lams = [0.01, 0.1, 1, 10]
    never = sensitive_region(lams, [0.0, -0.1, -0.2, -0.3])
    assert not never.found and "never rose" in never.reason
    upward = sensitive_region(lams, [10, 9, 8, 7])
    assert not upward.found and "sweep larger" in upward.reason
    # With the lam = 0 reference far above the sweep, the drop began before the first value.
    downward = sensitive_region(lams, [5, 3, 1, 0.1], reference=10)
    assert not downward.found and "sweep smaller" in downward.reason
    # Noise: a late bump above 0.9 moves the start to the last lambda with g >= 0.9.
    bump = sensitive_region([1, 2, 4, 8, 16, 32], [10, 5, 9.5, 4, 0.5, 0.1])
    assert bump.found and 4 < bump.low < 8 and 8 < bump.high < 16


@pytest.mark.parametrize("lams, gains", [([1, 1], [1, 0]), ([0, 1], [1, 0]), ([1], [1])])
def test_region_rejects_bad_lambdas(lams, gains):
    with pytest.raises(ValueError, match="lambda"):
        sensitive_region(lams, gains)


# -- lambda sweep -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep():
    return lambda_sweep(tiny_model(), _seed(), 2, num=6, lam_range=(1e-2, 1e3), steps=12, crops=3,
                        canvas=48, lr=0.1)


def _seed() -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 48), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(6 * x), 0.5 + 0.4 * torch.cos(5 * y), x * y]).clamp(0, 1)


def test_sweep_larger_lambda_never_moves_further_from_seed(sweep):
    d = sweep.pixel_distance
    # Falls with lambda, down to a floor where it jitters by rounding-level amounts (as the
    # regularizer's distance below).
    assert torch.all(d[1:] <= d[:-1] + 0.02 * d.max()), d
    assert d[0] > 2 * d[-1]  # and the sweep spans a real change
    assert sweep.free is not None and sweep.free["pixel_rmse"] >= float(d[0]) - 1e-4
    # The regularizer's own distance (last step, augmented crops) also falls, down to a floor
    # where it jitters by a few percent.
    reg = sweep.reg_distance
    assert torch.all(reg[1:] <= reg[:-1] + 0.05 * reg.max()) and reg[-1] < 0.5 * reg[0]


def test_sweep_region_inside_range_and_consistent(sweep):
    r = sweep.region
    assert r.found, r.reason
    assert float(sweep.lams[0]) <= r.low < r.high <= float(sweep.lams[-1])
    g = sweep.gain_norm
    assert float(g.max()) <= 1 + 1e-6
    inside = [(float(l), float(v)) for l, v in zip(sweep.lams, g) if r.low <= l <= r.high]
    assert all(r.lower - 1e-6 <= v <= r.upper + 1e-6 for _, v in inside)


def test_sweep_balance_is_shared_so_effective_lambda_scales(sweep):
    ratio = sweep.lam_effective / sweep.lams.float()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)


def test_sweep_batches_equal_single_runs(sweep):
    lams = sweep.lams[2:4]
    single = lambda_sweep(tiny_model(), _seed(), 2, lams, reference=False, batch=1, steps=12, crops=3,
                          canvas=48, lr=0.1)
    # Equal up to rounding (batch size changes the model's summation order; Adam's
    # normalized steps amplify it where a gradient is near zero): a few pixels in 1e4
    # differ by up to 1e-3.
    diff = (single.images - sweep.images[2:4]).abs()
    assert diff.max() < 1e-3 and diff.mean() < 1e-5
    assert torch.allclose(single.value_after, sweep.value_after[2:4], atol=1e-4)


def test_sweep_record_table_and_figures(sweep, tmp_path):
    rows = sweep.rows()
    assert len(rows) == 7 and rows[0]["lam"] == 0.0 and "rank" in rows[1]
    assert sweep.images.shape == (6, 3, 48, 48) and sweep.seed.shape == (3, 48, 48)
    assert "Sensitive region" in sweep.to_markdown()
    written = sweep.save(tmp_path)
    assert {p.name for p in written} == {"sweep.md", "sweep.json", "sweep_images.png", "sweep.png"}
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["region"]["low"] == pytest.approx(sweep.region.low)
    assert all(p.stat().st_size < 300_000 for p in written)


def test_sweep_rejects_lam_and_several_seeds(tiny, seed_img):
    with pytest.raises(TypeError, match="lam"):
        lambda_sweep(tiny, seed_img, 2, lam=1.0)
    with pytest.raises(ValueError, match="one seed"):
        lambda_sweep(tiny, [seed_img, seed_img], 2, **QUICK)
    with pytest.raises(ValueError, match="increasing"):
        lambda_sweep(tiny, seed_img, 2, [1.0, 0.1], **QUICK)


# -- pathway ----------------------------------------------------------------------------------
def test_pathway_averages_pairs_exactly(tiny, seed_img, device):
    a, b = seed_img, seed_img.flip(-1).roll(9, dims=-2)
    pw = pathway_similarity(tiny.to(device), 2, [a, b], accentuations=[a], feature_vis=0, extra={"other": [b * 0.5]})
    assert pw.kinds == ["accentuation", "other", "natural"]
    # The "accentuation" is a itself: its r with (a, b) is (1 + r_ab) / 2, r_ab being natural-vs-natural.
    for i in range(len(pw.layers)):
        r_ab = float(pw.unpooled["natural"][i])
        assert float(pw.unpooled["accentuation"][i]) == pytest.approx((1 + r_ab) / 2, abs=1e-5)
        assert float(pw.pooled["accentuation"][i]) == pytest.approx((1 + float(pw.pooled["natural"][i])) / 2,
                                                                    abs=1e-5)
    assert pw.pairs == {"accentuation": 2, "natural": 1, "other": 2}
    assert pw.layers[-1] == acc.OUTPUT and pw.layers[:4] == ["conv1", "conv2", "conv3", "fc"]


def test_pathway_full_run_on_tiny_model(tiny, seed_img, tmp_path):
    naturals = _variants(seed_img, 4)
    pw = pathway_similarity(tiny, "cherry", naturals, [seed_img.flip(-2)], feature_vis=2, **QUICK)
    assert pw.kinds == ["accentuation", "seed", "feature_vis", "natural"]
    assert len(pw.images["feature_vis"]) == 2 and pw.images["feature_vis"][0].shape == (3, 48, 48)
    for k in pw.kinds:
        for d in (pw.pooled, pw.unpooled):
            v = d[k]
            assert v.shape == (5,) and torch.all((v >= -1 - 1e-5) & (v <= 1 + 1e-5))
    assert pw.pairs["natural"] == 6 and pw.pairs["feature_vis"] == 8
    # Seeded with a natural image, the accentuation stays closer to the naturals than a noise-seeded
    # feature visualization does, at the first layer.
    assert pw.pooled["accentuation"][0] > pw.pooled["feature_vis"][0]
    s = pw.summary()
    assert set(s["accentuation_above"]) == {"seed", "feature_vis", "natural"}
    assert {p.name for p in pw.save(tmp_path)} == {"pathway.md", "pathway.json", "pathway.png",
                                                   "pathway_images.png"}
    assert "accentuation (4 pairs)" in (tmp_path / "pathway.md").read_text()


def test_pathway_needs_seeds(tiny, seed_img):
    with pytest.raises(ValueError, match="seeds"):
        pathway_similarity(tiny, 1, [seed_img, seed_img])


def test_pathway_with_a_reference_image_target(tiny, seed_img):
    """A model without classes: the target is "look like the reference", the naturals are its views."""
    reference = seed_img.flip(-1).roll(13, dims=-1) * 0.8
    target = acc.like(reference, tiny)
    views = augmented_views([reference], 4, side=48, generator=1)
    pw = pathway_similarity(tiny, target, views, [seed_img], feature_vis=0, **dict(QUICK, steps=16, lam=0.01))
    assert pw.kinds == ["accentuation", "seed", "natural"] and pw.target.startswith("Like(")
    # At the layer the target reads, the accentuation moved toward the reference's views.
    i = pw.layers.index(target.layer)
    assert float(pw.pooled["accentuation"][i]) > float(pw.pooled["seed"][i])


def test_augmented_views_are_distinct_and_reproducible(seed_img):
    v = augmented_views([seed_img], 5, side=32, generator=3)
    assert len(v) == 5 and all(t.shape == (3, 32, 32) for t in v)
    assert all(not torch.equal(v[i], v[j]) for i in range(5) for j in range(i + 1, 5))
    w = augmented_views([seed_img], 5, side=32, generator=3)
    assert all(torch.equal(x, y) for x, y in zip(v, w))


# -- latent features --------------------------------------------------------------------------
def test_latent_sorted_by_gain_collective_masks_and_batching(tiny, seed_img, tmp_path, device):
    tiny = tiny.to(device)
    seeds = [seed_img, seed_img.flip(-1), seed_img.flip(-2)]
    for i, s in enumerate(seeds):
        save_png(tmp_path / f"img{i}.png", (s * 255).round().byte().permute(1, 2, 0).numpy())
    target = acc.channel("conv2", 3)
    opts = {k: v for k, v in FAST.items() if k not in ("canvas", "seed")}
    lat = latent_features(tiny, tmp_path, target, canvas=48, batch=2, **opts)
    assert lat.names == ["img0", "img1", "img2"]
    g = lat.gain[lat.order]
    assert torch.all(g[1:] <= g[:-1])
    assert torch.allclose(lat.gain, lat.value_after - lat.value_before)
    # Collective: one maximum over the set, so at most the strongest image reaches 1.
    assert float(lat.alpha.max()) == pytest.approx(1.0)
    assert float(lat.alpha.flatten(1).amax(1).min()) <= 1.0
    own = acc.to_alpha(lat.masks)
    assert not torch.allclose(own, lat.alpha)
    # Batch b used seed b: each seed's result equals its single run with that seed.
    files = sorted(tmp_path.glob("img*.png"))
    for i, gen in ((0, 0), (2, 1)):
        single = acc.accentuate(tiny, acc.load_image(files[i]), target,
                                **{**FAST, "seed": gen, "canvas": (48, 48)})
        assert torch.allclose(single.images[0, 0], lat.images[i], atol=2e-4)
    grid = lat.grid(side=40, columns=2)
    assert grid.size[0] > 2 * 40 and grid.size[1] > 2 * 3 * 40
    assert {p.name for p in lat.save(tmp_path / "out")} == {"latent.md", "latent.json", "latent.png"}


def test_latent_errors(tiny, tmp_path):
    with pytest.raises(acc.ImageError, match="no images"):
        latent_features(tiny, tmp_path, acc.channel("conv2", 3), canvas=48)
    with pytest.raises(ValueError, match="canvas"):
        latent_features(tiny, [torch.rand(3, 40, 40)], 1, canvas=16)


# -- sanity check -----------------------------------------------------------------------------
def test_randomize_copies_reproducibly_and_keeps_bn_stats():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.rand(2, 3, 8, 8))
    with torch.no_grad():  # trained-like BatchNorm: its affine parameters are not constant
        net[1].weight.copy_(torch.tensor([0.8, 1.1, 0.9, 1.3]))
        net[1].bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))
        net[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = randomize(net, ["0", "1"], weights_seed=5)
    b = randomize(net, ["1", "0"], weights_seed=5)  # per-module seeds: the order does not matter
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # original untouched
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert not torch.equal(a.state_dict()[k], before[k])
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
    assert torch.equal(a.state_dict()["4.weight"], before["4.weight"])
    assert torch.equal(a[1].running_mean, before["1.running_mean"])  # kept
    w, w0 = a[0].weight.detach(), before["0.weight"]
    assert abs(float(w.std() / w0.std()) - 1) < 0.5  # the scale is kept
    fresh = nn.Sequential(nn.BatchNorm1d(3))  # a constant tensor has no scale to draw from: kept
    assert torch.equal(randomize(fresh, ["0"], weights_seed=1)[0].weight, torch.ones(3))
    reset = randomize(net, ["1"], bn_stats="reset")
    assert torch.equal(reset[1].running_mean, torch.zeros(4))
    with pytest.raises(ValueError, match="bn_stats"):
        randomize(net, ["1"], bn_stats="drop")


def test_cascading_randomization_changes_the_result(tiny, seed_img, tmp_path):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    s = cascading_randomization(tiny, seed_img, 2, steps=10, crops=3, canvas=48, lr=0.1)
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())
    assert s.cascade == ["fc", "conv3", "conv2", "conv1"] and s.images.shape == (5, 3, 48, 48)
    for k in ("image_ssim", "change_ssim", "mask_spearman"):
        assert s.metrics[k][0] == pytest.approx(1.0, abs=1e-5)  # depth 0 is the original itself
        assert float(s.metrics[k][-1]) < 0.95  # fully randomized: a different explanation
    assert all(not torch.allclose(s.images[d], s.images[0], atol=1e-3) for d in range(1, 5))
    assert s.repeat is not None and s.repeat_image is not None
    rows = s.rows()
    assert rows[0]["randomized down to"] == "none" and rows[-1]["depth"] == "-"
    names = {p.name for p in s.save(tmp_path)}
    assert names == {"sanity.md", "sanity.json", "sanity_images.png", "sanity.png"}


def test_cascade_every_k_keeps_the_randomization_cumulative(tiny, seed_img):
    s = cascading_randomization(tiny, seed_img, 2, every=2, repeat=False, **QUICK)
    assert s.cascade == ["fc", "conv2", "conv1"]  # indices 0, 2 and always the last
    full = cascading_randomization(tiny, seed_img, 2, repeat=False, **QUICK)
    assert torch.allclose(s.images[-1], full.images[-1])  # same model at the bottom
    with pytest.raises(ValueError, match="every"):
        cascading_randomization(tiny, seed_img, 2, every=0, **QUICK)


# -- command line -----------------------------------------------------------------------------
def _write_seed(tmp_path, img: torch.Tensor, name: str = "seed.png") -> str:
    path = tmp_path / name
    save_png(path, (img * 255).round().byte().permute(1, 2, 0).numpy())
    return str(path)


CLI_MODEL = ["--model", "test_analysis:tiny_model", "--steps", "4", "--crops", "2", "--canvas", "48", "-q"]


def test_cli_sweep_writes_table_and_figures(tmp_path, seed_img, capsys):
    seed = _write_seed(tmp_path, seed_img)
    code = main(["sweep", seed, "--target", "cherry", "--num", "3", "--out", str(tmp_path / "o"), *CLI_MODEL])
    assert code == 0
    assert "| lam |" in capsys.readouterr().out
    assert (tmp_path / "o" / "sweep.png").exists() and (tmp_path / "o" / "sweep_images.png").exists()


def test_cli_latent_and_sanity(tmp_path, seed_img, capsys):
    seed = _write_seed(tmp_path, seed_img)
    _write_seed(tmp_path, seed_img.flip(-1), "other.png")
    out = str(tmp_path / "l")
    assert main(["latent", str(tmp_path), "--target", "conv2:3", "--out", out, *CLI_MODEL]) == 0
    assert (tmp_path / "l" / "latent.png").exists()
    assert main(["sanity", seed, "--target", "1", "--every", "2", "--no-repeat", "--out", str(tmp_path / "s"),
                 *CLI_MODEL]) == 0
    assert "randomized down to" in capsys.readouterr().out


def test_cli_pathway(tmp_path, seed_img, capsys):
    seed = _write_seed(tmp_path, seed_img)
    nat = _write_seed(tmp_path, seed_img.flip(-2), "nat.png")
    assert main(["pathway", "cherry", "--class-images", nat, "--views", "3", "--seeds", seed,
                 "--feature-vis", "1", "--out", str(tmp_path / "p"), *CLI_MODEL]) == 0
    assert "natural (3 pairs)" in capsys.readouterr().out


def test_cli_pathway_intervals_without_out_keeps_every_file_in_one_folder(tmp_path, seed_img, capsys, monkeypatch):
    """Without --out the command picks one new folder; the intervals' table goes beside the rest."""
    monkeypatch.chdir(tmp_path)
    seed = _write_seed(tmp_path, seed_img)
    nat = _write_seed(tmp_path, seed_img.flip(-2), "nat.png")
    assert main(["pathway", "cherry", "--class-images", nat, "--views", "3", "--seeds", seed, "--feature-vis", "0",
                 "--intervals", "20", "-q", *CLI_MODEL]) == 0
    folders = list((tmp_path / "accentuate-runs").iterdir())
    assert len(folders) == 1, folders
    assert {"pathway.md", "pathway.json", "pathway_intervals.md", "command.json"} <= {p.name for p in folders[0].iterdir()}


def test_cli_pathway_like_a_reference_image(tmp_path, seed_img, capsys):
    seed = _write_seed(tmp_path, seed_img)
    ref = _write_seed(tmp_path, seed_img.flip(-1), "ref.png")
    assert main(["pathway", "--like", ref, "--views", "3", "--seeds", seed, "--feature-vis", "0",
                 "--out", str(tmp_path / "p"), *CLI_MODEL]) == 0
    out = capsys.readouterr().out
    assert "natural (3 pairs)" in out and "Like(" in (tmp_path / "p" / "pathway.json").read_text()


@pytest.mark.parametrize("argv, message", [
    (["sweep", "{seed}", "--target", "1", "--lam", "1"], "--lam cannot be used"),
    (["sweep", "{seed}", "--target", "1", "--lam-range", "10", "1"], "--lam-range"),
    (["sanity", "{seed}", "--target", "1", "--every", "0"], "--every"),
    (["latent", "{seed}", "--target", "conv2:3", "--canvas", "48x64"], "square canvas"),
    (["pathway", "1", "--class-images", "missing.png", "--seeds", "{seed}"], "missing.png"),
    (["pathway", "1", "--like", "{seed}", "--seeds", "{seed}"], "not both"),
    (["pathway", "1", "--seeds", "{seed}"], "--class-images is required"),
    (["pathway", "--like", "missing.png", "--seeds", "{seed}"], "missing.png"),
])
def test_cli_usage_errors_exit_2(tmp_path, seed_img, capsys, argv, message):
    seed = _write_seed(tmp_path, seed_img)
    argv = [a.replace("{seed}", seed) for a in argv]
    assert main([*argv, "--model", "test_analysis:tiny_model"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["pathway", "sweep", "latent", "sanity"])
def test_cli_help_has_examples(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"accentuate {command} " in out


# -- the real model: the measure itself, without optimization ---------------------------------
@pytest.mark.slow
def test_pathway_measure_on_the_embedded_model(lite0):
    """Views of the espresso photo correlate among themselves more than the cat does with them."""
    views = augmented_views(acc.photo("coffee"), 4, generator=0)
    cat = acc.load_image(acc.photo("chelsea"))
    pw = pathway_similarity(lite0, "espresso", views, accentuations=[cat], feature_vis=0)
    assert len(pw.layers) == 19
    nat, other = pw.pooled["natural"], pw.pooled["accentuation"]
    assert torch.all(nat > other)
    assert float(nat[-1]) > 0.5 > float(other[-1])  # at the logits: same class vs a cat

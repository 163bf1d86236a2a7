"""The pathway measured by attribution (the paper's circuits), the prototype baseline and the floor."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from torch import nn

import accentuate as acc
from accentuate.analysis import pathway_similarity, pathway_study
from accentuate.analysis.attribution import channel_attributions
from accentuate.analysis.pathway import no_residual_layers
from accentuate.analysis.pathway_measures import (
    correlation_matrix,
    prototype_correlations,
    row_correlation,
    row_ranks,
    statistics_of,
)
from accentuate.analysis.stats import spearman
from accentuate.images import model_view
from accentuate.objectives import logit
from accentuate.spec import ModelSpec

QUICK = dict(steps=3, crops=2, canvas=48, lr=0.1)


class TwoConv(nn.Module):
    """conv -> in-place ReLU -> conv -> spatial mean -> linear: a circuit small enough to do by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.r1 = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c2(self.r1(self.c1(x))).mean(dim=(2, 3)))


def _photos(seed_img: torch.Tensor, n: int, shift: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(shift)
    return [(seed_img.roll(7 * k + shift, dims=-1) * (0.6 + 0.4 * torch.rand(3, 1, 1, generator=g))).clamp(0, 1)
            for k in range(n)]


# -- the attribution vectors ------------------------------------------------------------------
def test_attribution_vectors_equal_a_hand_computation():
    net = TwoConv().eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    attr = channel_attributions(net, x, logit(1), ["c1", "c2"], ModelSpec(input_size=(8, 8), normalize=None))
    # by hand: each piece as a leaf, the target's gradient with respect to it
    a1 = net.c1(x).detach().requires_grad_(True)
    (g1,) = torch.autograd.grad(net.fc(net.c2(torch.relu(a1)).mean(dim=(2, 3)))[:, 1].sum(), a1)
    a2 = net.c2(torch.relu(net.c1(x))).detach().requires_grad_(True)
    (g2,) = torch.autograd.grad(net.fc(a2.mean(dim=(2, 3)))[:, 1].sum(), a2)
    for name, a, g in (("c1", a1, g1), ("c2", a2, g2)):
        assert attr[name]["signed"].shape == (3, a.shape[1])
        assert torch.allclose(attr[name]["signed"], (a * g).mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(attr[name]["absolute"], (a.abs() * g.abs()).mean(dim=(2, 3)), atol=1e-6)
    # the last conv feeds a linear head through a mean: its signed attributions add up to the logit
    # minus the bias, divided by the number of positions (64)
    logits = net(x)[:, 1]
    assert torch.allclose(attr["c2"]["signed"].sum(dim=1) * 64, logits - net.fc.bias[1], atol=1e-5)
    # the model is left as found; the in-place ReLU did not change what was attributed (c1 has negatives)
    assert not net.training and all(p.requires_grad for p in net.parameters())
    assert (attr["c1"]["signed"] != 0).any()


def test_attribution_over_patch_tokens_leaves_the_class_token_out():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(1)
            self.embed = nn.Conv2d(3, 6, 4, stride=4)
            self.cls = nn.Parameter(torch.randn(1, 1, 6))
            self.block = nn.Linear(6, 6)
            self.head = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = self.block(torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1))
            return self.head(t.mean(dim=1))

    net = Tokens().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    attr = channel_attributions(net, x, logit(0), ["block"], ModelSpec(input_size=(8, 8), normalize=None))
    a = net.block(torch.cat([net.cls.expand(2, -1, -1), net.embed(x).flatten(2).transpose(1, 2)], dim=1))
    a = a.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net.head(a.mean(dim=1))[:, 0].sum(), a)
    assert torch.allclose(attr["block"]["signed"], (a * g)[:, 1:].mean(dim=1), atol=1e-6)  # the 4 patch tokens


# -- the statistics ---------------------------------------------------------------------------
def test_ranks_and_spearman_match_the_one_dimensional_helpers():
    x = torch.tensor([[0.0, 2.0, 0.0, 1.0, 5.0, 0.0], [3.0, 1.0, 2.0, 2.0, 0.0, 4.0]])
    assert row_ranks(x)[0].tolist() == [1.0, 4.0, 1.0, 3.0, 5.0, 1.0]  # three ties at rank (0+1+2)/3
    r = correlation_matrix(x, x.flip(0), "spearman")
    assert r[0, 0] == pytest.approx(spearman(x[0], x[1]), abs=1e-6)
    assert correlation_matrix(x, x, "pearson")[0, 1] == pytest.approx(float(row_correlation(x[0], x[1])), abs=1e-6)
    assert math.isnan(float(correlation_matrix(torch.ones(1, 6), x)[0, 0]))  # a constant vector has no r
    with pytest.raises(ValueError, match="correlation must be one of"):
        correlation_matrix(x, x, "kendall")
    assert statistics_of("attribution")[0] == "absolute"
    with pytest.raises(ValueError, match="measure must be one of"):
        statistics_of("gradients")


def test_prototype_baseline_leaves_the_image_itself_out():
    g = torch.Generator().manual_seed(0)
    nat = torch.randn(4, 10, generator=g, dtype=torch.float64)
    other = torch.randn(2, 10, generator=g, dtype=torch.float64)

    def proto(cols, rows=((0, 1),), correlation="pearson"):
        return prototype_correlations({"other": other}, nat, {"other": torch.tensor(rows)}, torch.tensor(cols),
                                      correlation)

    loo = proto([[0, 1, 2, 3]])["natural"]
    by_hand = sum(float(row_correlation(nat[j], (nat.sum(0) - nat[j]) / 3)) for j in range(4)) / 4
    with_itself = sum(float(row_correlation(nat[j], nat.mean(0))) for j in range(4)) / 4
    assert float(loo) == pytest.approx(by_hand, abs=1e-9)
    assert with_itself > by_hand + 0.05  # what including itself would have added
    # a photo drawn twice is left out of its own prototype with its copy
    r01 = float(row_correlation(nat[0], nat[1]))
    assert float(proto([[0, 0, 1]])["natural"]) == pytest.approx(r01, abs=1e-9)  # 0 against 1, 1 against 0
    assert math.isnan(float(proto([[2, 2, 2]])["natural"]))  # no other photo drawn
    # another kind is compared with the full prototype of the drawn photos; Spearman ranks the mean vector
    full = proto([[0, 3]], rows=((1, 1),), correlation="spearman")["other"]
    ranks = row_ranks(torch.stack([other[1], (nat[0] + nat[3]) / 2]))
    assert float(full) == pytest.approx(float(row_correlation(ranks[0], ranks[1])), abs=1e-9)
    # replicates are independent rows
    two = proto([[0, 1, 2, 3], [0, 0, 1, 1]])["natural"]
    assert float(two[0]) == pytest.approx(by_hand, abs=1e-9) and float(two[1]) == pytest.approx(r01, abs=1e-9)


# -- pathway_similarity -----------------------------------------------------------------------
def test_pathway_attribution_on_a_tiny_model(tiny, seed_img, tmp_path):
    naturals = _photos(seed_img, 4)
    others = _photos(seed_img.flip(-2), 3, 5)
    pw = pathway_similarity(tiny, "cherry", naturals, accentuations=[seed_img, seed_img.flip(-1)], feature_vis=0,
                            other_classes=others, measure="attribution")
    assert pw.measure == "attribution" and pw.kinds == ["accentuation", "other_class", "natural"]
    assert pw.statistics == ["absolute", "signed", "absolute_spearman", "signed_spearman"]
    # the logits are the target itself: left out, with the reason
    assert pw.layers == ["conv1", "conv2", "conv3", "fc"]
    assert "target's own layer" in pw.config["left_out"]["logits"]
    # each pair's r is the correlation of the two images' attribution vectors
    views = model_view(naturals, (32, 32))
    attr = channel_attributions(tiny, views, acc.logit(2), ["conv2"], tiny.accentuate_spec)["conv2"]
    assert torch.allclose(pw.vectors["signed"]["natural"][1], attr["signed"], atol=1e-5)
    r = pw.pairwise["signed_spearman"]["natural"][1]
    assert r[0, 2] == pytest.approx(spearman(attr["signed"][0], attr["signed"][2]), abs=1e-5)
    assert pw.pairs == {"accentuation": 8, "other_class": 12, "natural": 6}
    # the prototype estimates are the bootstrap's estimates; intervals hold them
    proto = pw.prototype("signed")
    ci = pw.intervals(replicates=100, statistic="signed", baseline="prototype")
    for k in pw.kinds:
        assert torch.allclose(ci[k].estimate.float(), proto[k], atol=1e-5, equal_nan=True)
        assert torch.all(ci[k].lower <= ci[k].estimate + 1e-9)
    assert {p.name for p in pw.save(tmp_path)} == {"pathway.md", "pathway.json", "pathway.png", "pathway_images.png"}
    doc = json.loads((tmp_path / "pathway.json").read_text())
    assert doc["measure"] == "attribution" and "accentuation_prototype" in doc["rows"][0]
    assert "accentuation signed" in (tmp_path / "pathway.md").read_text()
    with pytest.raises(ValueError, match="no statistic 'unpooled'"):
        pw.unpooled
    with pytest.raises(ValueError, match="baseline must be one of"):
        pw.intervals(replicates=10, baseline="mean")


def test_the_floor_takes_photos_of_other_classes_only(tiny, seed_img):
    naturals = _photos(seed_img, 3)
    with pytest.raises(ValueError, match=r"other_classes\[1\] is one of the class images"):
        pathway_similarity(tiny, 1, naturals, accentuations=[seed_img], feature_vis=0,
                           other_classes=[seed_img.flip(-1), naturals[2]])


def test_no_residual_layers_are_marked():
    class Block(nn.Linear):
        def __init__(self, residual: bool) -> None:
            super().__init__(2, 2)
            self.residual = residual

    net = nn.Sequential(Block(False), Block(True), nn.Linear(2, 2))
    assert no_residual_layers(net, ["0", "1", "2"]) == {"0": "no residual connection (a stage's first block)"}


# -- the study --------------------------------------------------------------------------------
def test_study_of_both_measures_from_one_set_of_engine_runs(tiny, seed_img, tmp_path):
    classes = {"cherry": ("cherry", _photos(seed_img, 3, 1)), "date": (3, _photos(seed_img.flip(-2), 4, 2)),
               "apple": (0, _photos(seed_img.roll(5, dims=-2), 2, 3))}
    seeds = [seed_img.flip(-1), seed_img.roll(11, dims=-2)]
    act = pathway_study(tiny, classes, seeds, feature_vis=1, lam0=False, work=tmp_path / "work", **QUICK)
    att = pathway_study(tiny, classes, seeds, feature_vis=1, lam0=False, work=tmp_path / "work",
                        measure="attribution", **QUICK)
    assert all(r["read_back"] for r in att.config["runs"].values())  # no second optimization
    assert att.measure == "attribution" and acc.OUTPUT not in att.layers and acc.OUTPUT in act.layers
    # the floor of a class: the natural photos of the other classes, in class order, none of its own
    assert act.floor == {"cherry": ["date", "apple"], "date": ["cherry", "apple"], "apple": ["cherry", "date"]}
    floor = act.pathways["date"].images["other_class"]
    expected = [*classes["cherry"][1], *classes["apple"][1]]
    assert len(floor) == 5 and all(torch.equal(a, b) for a, b in zip(floor, expected))
    assert not any(torch.equal(a, b) for a in floor for b in classes["date"][1])
    all_ci = att.all_intervals(replicates=60)
    assert set(all_ci) == {(s, b) for s in att.statistics for b in ("pairs", "prototype")}
    for (stat, base), ci in all_ci.items():  # the floor's estimate is the class pathway's own
        for c in att.classes:
            own = (att.pathways[c].means[stat] if base == "pairs" else att.pathways[c].prototype(stat))["other_class"]
            assert torch.allclose(ci[c]["other_class"].estimate.float(), own, atol=1e-5), (stat, base, c)
    rows = att.verdict_rows(all_ci)
    assert len(rows) == len(all_ci) * len(att.comparisons)
    assert {r["difference"] for r in rows} >= {"natural - accentuation", "accentuation - other_class"}
    written = {p.name for p in att.save(tmp_path / "out", all_ci, stem="pw")}
    assert written == {"pw.md", "pw.csv", "pw.json", "pw.png", "pw_classes.png", "pw_images.png"}
    header = (tmp_path / "out" / "pw.csv").read_text().splitlines()[0]
    assert header.startswith("statistic,baseline,scope,layer")
    assert "### Verdict" in (tmp_path / "out" / "pw.md").read_text()


# -- the command line -------------------------------------------------------------------------
def test_cli_pathway_measure_attribution(tmp_path, seed_img, capsys):
    from accentuate.cli import main

    paths = []
    for i, img in enumerate([seed_img, *_photos(seed_img.flip(-2), 3, 4)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
        paths.append(str(path))
    argv = ["pathway", "cherry", "--class-images", *paths[1:], "--seeds", paths[0], "--feature-vis", "0",
            "--steps", "2", "--crops", "2", "--canvas", "48", "--model", "test_analysis:tiny_model", "--quiet",
            "--measure", "attribution", "--intervals", "50", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "accentuation signed" in out and "Absolute attribution r, mean [95% interval]" in out
    assert json.loads((tmp_path / "out" / "pathway.json").read_text())["measure"] == "attribution"
    assert main([*argv[:-4], "--measure", "gradient"]) == 2
    assert "--measure" in capsys.readouterr().err


# -- the real model ---------------------------------------------------------------------------
@pytest.mark.slow
def test_attribution_on_the_embedded_model(lite0):
    """At the head (1280 channels, pooled into a linear classifier) the signed attributions add up
    to the logit minus its bias over the 7 x 7 positions; the stages' first blocks are marked."""
    views = model_view([acc.load_image(acc.photo("coffee"))], (224, 224))
    index = lite0.accentuate_spec.labels.index("espresso")
    attr = channel_attributions(lite0, views, acc.logit(index), ["head", "blocks.14"])
    runner = acc.hooks.ModelRunner(lite0, lite0.accentuate_spec)
    value = runner(views)[acc.OUTPUT][0, index]
    total = float(attr["head"]["signed"].sum()) * 49
    assert total == pytest.approx(float(value - lite0.classifier.bias[index].detach()), rel=1e-4)
    marks = no_residual_layers(lite0, list(lite0.accentuate_spec.pathway_layers))
    assert sorted(marks, key=lambda l: int(l.split(".")[1])) == [f"blocks.{i}" for i in (0, 1, 3, 5, 8, 11, 15)]

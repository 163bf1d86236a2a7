import pytest
import torch
from conftest import COLOR_OPTS, ColorNet, color_seed

import accentuate as acc
from accentuate.analysis.leastchange import least_change
from accentuate.metrics import ssim


def test_least_change_reaches_top1_with_no_more_change_than_fixed_lambda():
    seed = color_seed()
    opts = dict(COLOR_OPTS, steps=100, lr=0.1)
    fixed = acc.accentuate(ColorNet(), seed, "blue", lam=0.01, **opts)
    assert int(fixed.after["rank"][0, 0]) == 1
    lc = least_change(ColorNet(), seed, "blue", lam=0.01, rounds=4, **opts)
    assert bool(lc.reached[0, 0]) and int(lc.rank[0, 0]) == 1
    s_fixed = float(ssim(fixed.images[0, 0], fixed.seeds[0]))
    assert float(lc.ssim[0, 0]) >= s_fixed
    assert int(lc.steps[0, 0]) < 100
    # The search moved lambda up after the first success.
    assert lc.rounds[0]["reached"][0, 0] and float(lc.rounds[1]["lam"][0, 0]) > 0.01
    assert float(lc.lam[0, 0]) >= 0.01
    row = lc.summary()[0]
    assert row["reached"] and row["rank"] == 1 and row["steps"] == int(lc.steps[0, 0])


def test_per_pair_lambda_is_used_per_pair():
    seed = color_seed()
    opts = dict(COLOR_OPTS, steps=20, lr=0.1, balance=False)
    res = acc.accentuate(ColorNet(), seed, ["blue", "green"], lam=torch.tensor([[0.0, 50.0]]), **opts)
    assert res.lam_effective.tolist() == [[0.0, 50.0]]
    moved = (res.images[0] - res.seeds[0]).abs().mean(dim=(1, 2, 3))
    assert moved[1] < moved[0]


def test_bad_search_settings():
    with pytest.raises(ValueError, match="lam_range"):
        least_change(ColorNet(), color_seed(), "blue", lam_range=(1.0, 0.1), **COLOR_OPTS)
    with pytest.raises(ValueError, match="rounds"):
        least_change(ColorNet(), color_seed(), "blue", rounds=0, **COLOR_OPTS)

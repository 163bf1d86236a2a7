"""No frozen pixels: pure black and pure white regions of a seed still change."""

import pytest
import torch
from conftest import ColorNet

import accentuate as acc
import accentuate.params as params


def black_and_white(size: int = 48) -> torch.Tensor:
    seed = torch.zeros(3, size, size)
    seed[:, :, size // 2 :] = 1.0
    return seed


def run(param: str) -> torch.Tensor:
    target = acc.channel("conv", 2) - acc.channel("conv", 0)  # more blue, less red
    res = acc.accentuate(ColorNet(), black_and_white(), target, input_size=32, normalize=None, labels=None,
                         reg_layer="none", param=param, steps=30, lr=0.1, crops=4, canvas=48, seed=0)
    return res.images[0, 0]


@pytest.mark.parametrize("param, least", [("pixel", 0.1), ("fourier", 0.1), ("phase", 0.01)])
def test_black_and_white_regions_change(param, least):
    # (phase keeps the seed's magnitude spectrum, so it can only move this two-tone seed a little)
    img = run(param)
    black, white = img[:, :, :24], img[:, :, 24:]
    assert black[2].mean() > least  # blue rose in the black half
    assert white[0].mean() < 1 - least  # red fell in the white half


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_a_saturating_mapping_would_freeze_them(param, monkeypatch):
    # The same run with the margin removed (a plain sigmoid) barely moves: the test can fail.
    monkeypatch.setattr(params, "MARGIN", 1e-6)
    monkeypatch.setattr(params.to_unit, "__defaults__", (1e-6,))
    monkeypatch.setattr(params.from_unit, "__defaults__", (1e-6,))
    img = run(param)
    assert img[2, :, :24].mean() < 0.02 and img[0, :, 24:].mean() > 0.98

"""Notebook display: results, analyses and least change show themselves as labelled grids."""

from __future__ import annotations

import base64
import io
import re
import sys
from typing import Any

import pytest
import torch
from browser import Page
from conftest import TinyNet
from PIL import Image

import accentuate as acc
from accentuate.analysis import cascading_randomization, lambda_sweep, latent_features, pathway_similarity
from accentuate.analysis.explain import explain
from accentuate.report.notebook import grid_of
from accentuate.spec import ModelSpec

QUICK = dict(steps=3, crops=2, canvas=32, seed=0)
MARKUP = "<b onmouseover=alert(1)>banana</b>"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    m = TinyNet()
    m.accentuate_spec = ModelSpec(name="tiny", input_size=(32, 32), normalize=None,
                                  labels=("apple", MARKUP, "cherry", "date"), reg_layer="conv2")
    return m.eval()


@pytest.fixture(scope="module")
def seeds() -> torch.Tensor:
    return torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def result(model: torch.nn.Module, seeds: torch.Tensor) -> acc.Result:
    return acc.accentuate(model, seeds[:2], [0, 1, acc.channel("conv2", 3)], **QUICK)


def _images(html: str) -> list[Image.Image]:
    out = []
    for data in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html):
        out.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return out


def test_result_html_is_a_labelled_grid_of_every_image(result: acc.Result) -> None:
    html = result._repr_html_()
    assert html is not None
    imgs = _images(html)
    # 2 seeds, each with 3 accentuations and 3 with opacity, plus the seed itself.
    assert len(imgs) == 2 * (1 + 3 + 3)
    assert all(min(im.size) > 0 for im in imgs)
    assert "apple (0)" in html and "conv2:3" in html and "seed 1, opacity" in html
    # Class names are text: the markup is escaped.
    assert MARKUP not in html and "&lt;b onmouseover=alert(1)&gt;banana&lt;/b&gt;" in html
    rank = int(result.after["rank"][1, 0]) if "rank" in result.after else None
    if rank is not None:
        assert f"rank {int(result.before['rank'][1, 0])} -&gt; {rank}" in html


def test_result_png_is_one_picture_of_the_grid(result: acc.Result) -> None:
    img = Image.open(io.BytesIO(result._repr_png_()))
    assert img.format == "PNG"
    # 4 columns (seed + 3 targets) of images of at least 96 pixels, 4 rows.
    assert img.size[0] > 4 * 96 and img.size[1] > 4 * 96


def test_without_jinja2_html_falls_back_to_the_png(result: acc.Result, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jinja2", None)
    assert result._repr_html_() is None
    assert result._repr_png_().startswith(b"\x89PNG")


def test_large_results_show_a_bounded_grid(model: torch.nn.Module) -> None:
    seeds = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res = acc.accentuate(model, seeds, [0], steps=1, crops=1, canvas=32, seed=0, opacity=False)
    g = grid_of(res)
    assert len(g.rows) == 8 and "first 8 of 10 seeds" in g.note


def test_analyses_least_change_and_explain_display(model: torch.nn.Module, seeds: torch.Tensor) -> None:
    objs: list[Any] = [
        lambda_sweep(model, seeds[0], 0, num=3, lam_range=(1e-2, 1e2), **QUICK),
        latent_features(model, list(seeds), acc.channel("conv2", 3), **QUICK),
        cascading_randomization(model, seeds[0], 0, every=2, **QUICK),
        explain(model, seeds[0], top=2, **QUICK),
        acc.least_change(model, seeds[:1], [1], rounds=2, **QUICK),
        pathway_similarity(model, 2, list(seeds[:2]), seeds[2:], feature_vis=0, **QUICK),
    ]
    for obj in objs:
        name = type(obj).__name__
        html = obj._repr_html_()
        assert html is not None and _images(html), name
        assert Image.open(io.BytesIO(obj._repr_png_())).size[0] > 96, name
        if name in ("Sweep", "Sanity", "Pathway"):
            assert "<svg" in html and "<polyline" in html, name
        assert MARKUP not in html, name
    sweep_html = objs[0]._repr_html_()
    assert "sensitive region" in sweep_html and sweep_html.count("<tr") >= 3


def test_grid_of_names_what_it_takes() -> None:
    with pytest.raises(TypeError, match="no notebook display for int; expected a Result"):
        grid_of(3)


def test_notebook_html_renders_in_a_browser(browser: Any, result: acc.Result) -> None:
    page = Page(browser, html=result._repr_html_())
    assert page.js("document.images.length") == 14
    assert page.broken_images() == []
    assert page.dialogs == [] and page.console == []
    assert MARKUP in page.page.inner_text("body")
    page.close()

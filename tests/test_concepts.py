"""Concepts across a photo set: the factorizations, planted concepts, the accentuation of each
concept, the command line end to end, its record and report, and its one-line errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import accentuate as acc
from accentuate.analysis.concepts import default_concept_layer, find_concepts
from accentuate.analysis.factorize import explained_shares, nmf, nnls, semi_nmf
from accentuate.cli import main
from accentuate.spec import ModelSpec

DATA = Path(acc.__file__).parent / "data"


# -- the factorizations ----------------------------------------------------------------------------
def _low_rank(n: int = 240, m: int = 30, k: int = 4, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, k, generator=g) @ torch.rand(k, m, generator=g) + noise * torch.rand(n, m, generator=g)


@pytest.mark.parametrize("k", [3, 6])
def test_nmf_fits_as_well_as_scikit_learn(k: int) -> None:
    sklearn = pytest.importorskip("sklearn.decomposition")
    a = _low_rank()
    ours = nmf(a, k, iterations=1000, tol=1e-7)  # scikit-learn's budget and stopping rule
    ref = sklearn.NMF(n_components=k, init="nndsvda", solver="cd", max_iter=1000, tol=1e-7, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: it uses the whole budget
        u = ref.fit_transform(a.double().numpy())
    theirs = float(np.linalg.norm(a.double().numpy() - u @ ref.components_) / np.linalg.norm(a.double().numpy()))
    assert abs(ours.relative_error - theirs) <= 0.03 * theirs, (ours.relative_error, theirs)
    assert float(ours.u.min()) >= 0 and float(ours.w.min()) >= 0
    assert torch.allclose(ours.w.norm(dim=1), torch.ones(k, dtype=torch.float64))
    # A random start from a seed is reproducible, and lands as close to scikit-learn.
    r1, r2 = (nmf(a, k, iterations=1000, tol=1e-7, init="random", generator=3) for _ in range(2))
    assert torch.equal(r1.w, r2.w)
    assert abs(r1.relative_error - theirs) <= 0.03 * theirs


def _planted(signed: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows mixing 3 planted unit concept vectors of 24 channels with sparse non-negative weights."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 24, generator=g) if signed else torch.rand(3, 24, generator=g) * (torch.rand(3, 24, generator=g) > 0.5)
    w = w / w.norm(dim=1, keepdim=True)
    u = torch.rand(600, 3, generator=g) * (torch.rand(600, 3, generator=g) > 0.6)
    return u @ w + 0.01 * torch.rand(600, 24, generator=g), w


@pytest.mark.parametrize("signed", [False, True])
def test_a_planted_concept_is_recovered(signed: bool) -> None:
    a, planted = _planted(signed)
    fit = (semi_nmf if signed else nmf)(a, 3)
    cos = fit.w.float() @ planted.T
    assert float(cos.max(dim=0).values.min()) > 0.95, cos  # every planted vector has a match
    shares, fraction = explained_shares(a, fit.u, fit.w)
    assert fraction > 0.99 and abs(float(shares.sum()) - 1) < 1e-9 and float(shares.min()) > 0.1
    # W fixed (and the fit's L1 penalty), the coefficients of the same rows come back.
    u = nnls(a, fit.w, l1=fit.l1)
    assert float((u - fit.u).abs().max()) < 1e-2 * float(fit.u.abs().max())


def test_semi_nmf_without_its_penalty_can_find_a_mixture() -> None:
    """Why semi-NMF has its L1 penalty: without it, a mixture of the planted concepts fits as well."""
    a, planted = _planted(True)
    plain = semi_nmf(a, 3, sparsity=0.0, restarts=1)
    sparse = semi_nmf(a, 3)
    assert plain.relative_error <= sparse.relative_error  # the mixture fits at least as well...
    assert float((plain.w.float() @ planted.T).max(dim=0).values.min()) < 0.9  # ...and is not the planted one


def test_a_duplicated_or_opposite_concept_is_restarted() -> None:
    """Two signed concept vectors almost opposite can cancel each other with huge coefficients (as
    semi-NMF did on centred DINOv2 tokens); the later one restarts on the worst-fit row."""
    from accentuate.analysis.factorize import _revive

    a, planted = _planted(True)
    w = planted.double().clone()
    w[2] = -w[1] + 1e-3 * w[0]
    u = torch.rand(a.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert _revive(a.double(), u, w, signed=True)
    unit = w / w.norm(dim=1, keepdim=True)
    assert float((unit[1] @ unit[2]).abs()) < 0.98 and float(u[:, 2].gt(0).sum()) == 1
    assert not _revive(a.double(), u, w, signed=True)  # nothing left to restart


def test_nmf_refuses_negative_data_and_bad_k() -> None:
    with pytest.raises(ValueError, match="semi-NMF"):
        nmf(torch.randn(20, 5), 2)
    with pytest.raises(ValueError, match="k <= 5"):
        semi_nmf(torch.randn(20, 5), 6)
    with pytest.raises(ValueError, match="positive integer"):
        nmf(torch.rand(20, 5), 0)


# -- on a model: a per-pixel colour code -----------------------------------------------------------
#: Three planted colours, away from 0 and 1 (so that pixels can move either way without clipping).
COLOURS = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.45, 0.45], [0.35, 0.1, 0.55]])


class Palette(nn.Module):
    """``feat`` is ReLU of a 1x1 convolution that copies R, G and B (and three zero channels): every
    position of the layer is its pixel's colour, so the concepts of photos made of the planted
    colours are those colours."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Sequential(nn.Conv2d(3, 6, 1, bias=False), nn.ReLU())
        self.fc = nn.Linear(6, 2)
        with torch.no_grad():
            w = torch.zeros(6, 3)
            w[:3] = torch.eye(3)
            self.feat[0].weight.copy_(w[:, :, None, None])
            self.fc.weight.copy_(torch.randn(2, 6, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.feat(x).mean(dim=(2, 3)))


def palette() -> nn.Module:
    model = Palette()
    model.accentuate_spec = ModelSpec(  # type: ignore[assignment]
        name="palette", input_size=(16, 16), normalize=None, labels=("a", "b"), reg_layer="feat",
        defaults={"steps": 10, "canvas": 32, "crops": 2, "lam": 0.0, "param": "pixel", "lr": 0.05})
    return model.eval()


def palette_photos(n: int = 9) -> torch.Tensor:
    """``(n, 3, 32, 32)``: each photo's halves are two of the planted colours, with a little noise."""
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        a, b = i % 3, (i // 3) % 3
        b = b if b != a else (a + 1) % 3
        img = torch.empty(3, 32, 32)
        img[:, :, :16], img[:, :, 16:] = COLOURS[a][:, None, None], COLOURS[b][:, None, None]
        out.append((img + 0.03 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1))
    return torch.stack(out)


def test_planted_colours_are_the_concepts_and_each_accentuation_raises_its_own_most(tmp_path: Path) -> None:
    """Why the accentuation must raise its own concept most here: the layer is the pixel's colour, so
    the gradient of a concept's objective moves each pixel along that concept's colour (no other
    layer mixes them); with ``target="direction"`` a step along concept vector ``w_i`` changes the
    least-squares coefficients by exactly ``e_i`` (``(W W^T)^-1 W w_i``), and the default target,
    the coefficient itself, climbs it by its own gradient."""
    model = palette()
    con = acc.concepts(model, palette_photos(), k=3, layer="feat", top=1, weak=1)
    assert con.method == "nmf" and con.layout.grid == (16, 16)
    planted = COLOURS / COLOURS.norm(dim=1, keepdim=True)
    cos = con.vectors[:, :3] @ planted.T
    assert float(cos.max(dim=0).values.min()) > 0.95, cos
    assert float(con.vectors[:, 3:].abs().max()) < 1e-6  # the empty channels are in no concept
    assert len(con.accentuations) == 6 and {a.kind for a in con.accentuations} == {"top", "weak"}
    for a in con.accentuations:
        assert a.own_gain > 0 and a.own_gain > a.max_other_gain, (a.concept, a.gain)
    # What it saves, and how it shows itself in a notebook.
    written = {p.name for p in con.save(tmp_path)}
    assert {"concepts.json", "concepts.md", "concepts.png", "concept-0.png", "concept-2.npy"} <= written
    saved = json.loads((tmp_path / "concepts.json").read_text())
    assert [c["index"] for c in saved["concepts"]] == [0, 1, 2] and saved["factorization"]["method"] == "nmf"
    assert "concept 0" in con._repr_html_() and con._repr_png_()[:4] == b"\x89PNG"
    # The heat map is the concept's coefficient per position: the half of the photo in its colour.
    i = con.accentuations[0].concept
    j = con.top_images(i, 1)[0]
    left, right = con.heat[j, i, :, :8].mean(), con.heat[j, i, :, 8:].mean()
    assert max(left, right) > 3 * min(left, right) + 1e-6


def test_measured_coefficients_match_the_factorization_and_the_default_layer() -> None:
    model = palette()
    views = torch.nn.functional.interpolate(palette_photos(), size=(16, 16), mode="bilinear", antialias=True)
    assert default_concept_layer(model) == "feat"
    con = find_concepts(model, views, 3)
    again = con.measure(model, views).mean(dim=(2, 3))
    assert torch.allclose(again, con.coefficients, atol=1e-3 * float(con.coefficients.max()))
    assert abs(float(con.explained.sum()) - 1) < 1e-5 and list(con.explained) == sorted(con.explained, reverse=True)
    top = con.top_patches(0, 4)
    assert len({p["image"] for p in top}) == len(top)  # at most one patch per photo
    for p in top:
        left, t, r, b = p["box"]
        assert 0 <= left < r <= 16 and 0 <= t < b <= 16
    with pytest.raises(ValueError, match="larger than the 256 patches"):
        find_concepts(model, views[:1], 300)


# -- the command line ------------------------------------------------------------------------------
def _photo_tree(root: Path) -> Path:
    """Four bundled photos in two subfolders of ``root``, one with markup in its name."""
    for sub, names in (("a", ["chelsea", "coffee"]), ("b", ["rocket", "astronaut"])):
        (root / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(DATA / f"{n}.jpg", root / sub / f"{n}.jpg")
    (root / "b" / "astronaut.jpg").rename(root / "b" / "<em>astro.jpg")
    return root


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    return _photo_tree(tmp_path / "photos")


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


FAST = ["--model", "cli_models:tiny", "--steps", "2", "--crops", "2", "--seed", "0"]


@pytest.fixture(scope="module")
def concept_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``accentuate concepts`` run over the photo tree: 2 concepts, each on 1 top + 1 weak photo."""
    tmp = tmp_path_factory.mktemp("concepts")
    out = tmp / "out"
    code = main(["concepts", str(_photo_tree(tmp / "photos")), "--k", "2", "--top", "1", "--weak", "1", "--layer",
                 "conv2", "--out", str(out), "-q", *FAST])
    assert code == 0
    return out


def test_cli_writes_the_concepts_list_the_atlas_and_the_report(concept_run: Path) -> None:
    out = concept_run
    doc = json.loads((out / "run.json").read_text())
    assert doc["subcommand"] == "concepts" and doc["status"] == "complete"
    f = doc["factorization"]
    assert f["layer"] == "conv2" and f["photos"] == 4 and f["k"] == 2 and f["patches"] == 4 * 16 * 16
    assert f["names"] == ["a/chelsea", "a/coffee", "b/<em>astro", "b/rocket"]  # subfolders, sorted
    concepts = doc["concepts"]
    assert [c["index"] for c in concepts] == [0, 1]
    assert abs(sum(c["explained"] for c in concepts) - 1) < 1e-4
    for c in concepts:
        assert len(c["top_images"]) == 4 and c["top_images"][0]["coefficient"] >= c["top_images"][-1]["coefficient"]
        assert [a["kind"] for a in c["accentuated"]] == ["top", "weak"]
        for a in c["accentuated"]:
            assert a["before"] == a["before_all"][c["index"]] and a["after"] == a["after_all"][c["index"]]
            assert a["pair"] in {p["id"] for p in doc["pairs"]}
        assert (out / c["atlas"]).stat().st_size > 1000 and (out / c["vector"]).exists()
    assert len(doc["pairs"]) == 4 and doc["counts"]["complete"] == 4
    assert doc["outputs"]["concepts_overview"] == "concepts.png" and (out / "concepts.png").exists()
    html = (out / "report.html").read_text()
    assert 'id="concepts"' in html and "Concept atlas: 2 concepts at conv2" in html
    assert "<em>astro" not in html and "&lt;em&gt;astro" in html
    # A concept's vector is a target of an ordinary run.
    from cli_models import tiny

    from accentuate.objectives import parse_target

    target = parse_target(f"conv2:{out / 'concept-0.npy'}", tiny())
    assert repr(target).startswith("Direction(conv2, 16-d")


def test_the_concept_atlas_page_loads_offline_without_errors(browser: Any, concept_run: Path) -> None:
    from browser import Page

    page = Page(browser, concept_run / "report.html")
    try:
        assert page.js("document.querySelectorAll('#concepts article.concept').length") == 2
        page.page.wait_for_function("[...document.querySelectorAll('#concepts img')].every(i => i.naturalWidth > 0)",
                                    timeout=15000)
        assert page.console == []  # no script, style or image blocked by the page's CSP
        base = concept_run.resolve().as_uri() + "/"
        assert page.requests and all(u.startswith(base) for u in page.requests)
    finally:
        page.close()


def test_cli_factorization_only(photo_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "only"
    code, stdout, err = _run(["concepts", str(photo_tree / "a"), "--k", "3", "--top", "0", "--weak", "0",
                              "--out", str(out), *FAST], capsys)
    assert code == 0, err
    doc = json.loads((out / "run.json").read_text())
    assert doc["pairs"] == [] and [c["accentuated"] for c in doc["concepts"]] == [[], [], []]
    assert doc["factorization"]["layer"] == "conv3"  # the tiny model's last spatial layer
    assert "| concept | explained |" in stdout


@pytest.mark.parametrize("extra, message", [
    (["--k", "0"], "--k must be at least 1"),
    (["--k", "9999"], "is larger than the"),
    (["--layer", "conv9"], "layer 'conv9' is not in the model (closest: conv3, conv2, conv1)"),
    (["--layer", "fc"], "has no spatial positions"),
    (["--method", "nmf", "--layer", "conv3"], "has negative activations"),
    (["--canvas", "48x64"], "square canvas"),
])
def test_cli_bad_input_is_one_line(photo_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                   extra: list[str], message: str) -> None:
    code, _, err = _run(["concepts", str(photo_tree / "a"), "--out", str(tmp_path / "bad"), "-q", *FAST, *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_help_has_examples(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0 and "concepts" in capsys.readouterr().out
    assert main(["concepts", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "accentuate concepts photos/ --k 8" in text


def test_cli_folder_without_images_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, _, err = _run(["concepts", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "has no images" in err, err


# -- the real model ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_lite0_concepts_on_the_bundled_photos(lite0: nn.Module) -> None:
    con = acc.concepts(lite0, DATA, k=3, top=1, weak=1, steps=20, crops=4, canvas=256)
    assert con.layer == "head" and con.method == "nmf" and con.layout.grid == (7, 7)
    assert con.fraction > 0.25  # 0.295 measured (k = 3 over the 6 bundled photos)
    for a in con.accentuations:
        assert a.own_gain > a.max_other_gain, (a.concept, a.kind, a.gain)

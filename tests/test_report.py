"""report.html: written by every command, rebuilt by ``accentuate report``, tested in headless Chromium.

Real output folders come from the command line with the tiny model (``cli_models``);
the browser tests open them from ``file://`` with Playwright for Python driving the
system's Chromium (Debian's ``chromium``; they skip when it is not installed).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from browser import Page
from PIL import Image

from accentuate.cli import main
from accentuate.report import REPORT, build_report, write_report
from accentuate.report.build import file_url, script_json

XSS_IMAGE = "<img src=x onerror=alert(1)>.png"
XSS_LABEL = "<script>alert(2)</script>"
FAST = ["--steps", "4", "--crops", "2", "--canvas", "48", "--frames", "3", "-q"]


def _photo(path: Path, w: int, h: int, phase: float) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 6 + phase), 128 + 90 * np.cos(y / 5), (x * 3 + y * 2) % 255], -1)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Output folders of ``run`` (2 images x 2 targets, one image and one class name with markup),
    ``explain`` and ``sweep``, made once for the module."""
    import os

    root = tmp_path_factory.mktemp("report")
    _photo(root / "wide.png", 64, 48, 0.0)
    _photo(root / XSS_IMAGE, 40, 40, 1.0)
    old = os.getcwd()
    os.chdir(root)
    try:
        assert main(["run", "wide.png", XSS_IMAGE, "--target", "1", "conv2:3", "--model", "cli_models:xss",
                     "--out", "run", *FAST]) == 0
        assert main(["explain", "wide.png", "--top", "2", "--model", "cli_models:tiny", "--out", "explain",
                     *FAST]) == 0
        assert main(["sweep", "wide.png", "-t", "apple", "--model", "cli_models:tiny", "--steps", "4",
                     "--crops", "2", "--canvas", "48", "--num", "4", "--out", "sweep", "-q"]) == 0
    finally:
        os.chdir(old)
    return {"run": root / "run", "explain": root / "explain", "sweep": root / "sweep", "root": root}


# -- without a browser ----------------------------------------------------------------------------
def test_every_command_writes_a_report_with_a_strict_csp(folders: dict[str, Path]) -> None:
    for kind in ("run", "explain", "sweep"):
        html = (folders[kind] / REPORT).read_text("utf-8")
        csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
        assert csp, kind
        policy = csp.group(1).replace("&#39;", "'")
        assert "default-src 'none'" in policy and "img-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", policy)
        _check_urls(folders[kind], html)
    assert (folders["sweep"] / "command.json").exists()


def _urls(html: str) -> list[str]:
    """Every URL of a report: its src/href attributes and those its script sets (the report data)."""
    urls = [u.replace("&amp;", "&").replace("&#39;", "'") for u in re.findall(r'(?:src|href)="([^"]*)"', html)]
    if 'id="report-data"' in html:
        data = json.loads(html.split('<script type="application/json" id="report-data">', 1)[1].split("</script>")[0])
        urls += [p[k] for p in data["pairs"] for k in ("seed", "acc", "rgba", "gif", "fig") if p.get(k)]
    return urls


def _check_urls(folder: Path, html: str) -> list[str]:
    """Nothing outside the folder is named: every URL is a relative path to a file inside it."""
    urls = _urls(html)
    for url in urls:
        assert not re.match(r"^[a-z]+:", url, re.I) and not url.startswith(("/", "..")), url
        assert "#" not in url and "?" not in url, url  # they would end the path
        assert (folder / unquote(url)).is_file(), url
    return urls


def test_file_names_that_need_encoding_become_working_urls(folders: dict[str, Path], tmp_path: Path) -> None:
    """A record whose files have names with a space, '#', '%' and '?' (a hand-made or renamed run.json:
    the command's own names are slugs): the report's URLs still name exactly those files."""
    copy = tmp_path / "run"
    shutil.copytree(folders["run"], copy)
    doc = json.loads((copy / "run.json").read_text())
    files = doc["pairs"][0]["files"]
    for kind, name in list(files.items()):
        new = f"odd #1 %41 ?x {kind}.png"
        (copy / name).rename(copy / new)
        files[kind] = new
    (copy / "run.json").write_text(json.dumps(doc))
    assert main(["report", str(copy), "-q"]) == 0
    urls = _check_urls(copy, (copy / REPORT).read_text("utf-8"))
    odd = [u for u in urls if unquote(u).startswith("odd #1 %41 ?x")]
    assert len(odd) >= 2 and all(u != unquote(u) for u in odd)  # encoded, and decoded to the file


def test_markup_from_files_and_labels_is_escaped(folders: dict[str, Path]) -> None:
    html = (folders["run"] / REPORT).read_text("utf-8")
    assert XSS_IMAGE not in html and XSS_LABEL not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    # The embedded data cannot close its <script> block.
    data = html.split('<script type="application/json" id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and json.loads(data)["pairs"][0]["tgt"].startswith(("<script>", "conv2"))
    assert script_json({"x": "</script><!--"}) == '{"x": "\\u003c/script\\u003e\\u003c!--"}'
    assert file_url("javascript:alert(1)") == "javascript%3Aalert%281%29"


def test_run_json_pairs_carry_their_history(folders: dict[str, Path]) -> None:
    doc = json.loads((folders["run"] / "run.json").read_text())
    for p in doc["pairs"]:
        h = p["history"]
        assert h["step"] == list(range(1, 5)) and not h["thinned"]
        assert len(h["objective"]) == 4 and all(isinstance(v, float) for v in h["objective"])
        assert len(h["distance"]) == 4


def test_history_is_thinned_to_the_limit() -> None:
    import torch

    from accentuate.result import History
    from accentuate.runs.history import pair_history

    h = History()
    for s in range(1, 1001):
        h.append(s, {"objective": torch.full((1, 2), float(s)), "distance": torch.zeros(1, 2)}, None)
    out = pair_history(h, 0, 1, limit=50)
    assert len(out["step"]) == 50 and out["step"][0] == 1 and out["step"][-1] == 1000 and out["thinned"]
    assert out["objective"] == [float(s) for s in out["step"]]


def test_report_command_rebuilds_and_shows_what_is_missing(folders: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    copy = tmp_path / "run"
    shutil.copytree(folders["run"], copy)
    doc = json.loads((copy / "run.json").read_text())
    doc["pairs"][0].update(status="failed", failed="NaN in the gradient at step 3")
    dropped = doc["pairs"].pop()
    (copy / "run.json").write_text(json.dumps(doc))
    (copy / REPORT).unlink()
    assert main(["report", str(copy)]) == 0
    assert str(copy / REPORT) in capsys.readouterr().out
    html = (copy / REPORT).read_text("utf-8")
    assert "NaN in the gradient at step 3" in html and 'class="badge st-failed"' in html
    assert "not run" in html and dropped["image"].replace("<", "&lt;").replace(">", "&gt;") in html
    assert "complete 2, failed 1, not run 1, total 4, resumed 0" in html  # counted from the pairs


def test_report_command_errors_are_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such folder" in err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no run.json" in err
    monkeypatch.setitem(sys.modules, "jinja2", None)  # as if it were not installed
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "accentuate[report]"' in err


def test_a_run_without_jinja2_skips_the_report_with_one_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    _photo(tmp_path / "a.png", 40, 40, 0.0)
    monkeypatch.setitem(sys.modules, "jinja2", None)
    assert main(["run", "a.png", "--target", "apple", "--model", "cli_models:tiny", "--out", "o", *FAST]) == 0
    err = [l for l in capsys.readouterr().err.splitlines() if "Jinja2" in l]
    assert len(err) == 1 and 'pip install "accentuate[report]"' in err[0]
    assert (tmp_path / "o" / "run.json").exists() and not (tmp_path / "o" / REPORT).exists()


def test_build_report_names_the_problem_for_an_empty_folder(tmp_path: Path) -> None:
    from accentuate.report import ReportError

    with pytest.raises(ReportError, match="no run.json and no analysis record"):
        build_report(tmp_path)


# -- in the browser -------------------------------------------------------------------------------
@pytest.fixture
def run_page(browser: Any, folders: dict[str, Path]) -> Iterator[Page]:
    page = Page(browser, folders["run"] / REPORT)
    yield page
    page.close()


def _folder_requests(page: Page, folder: Path) -> None:
    base = folder.resolve().as_uri() + "/"
    assert page.requests, "the page made no request at all"
    for url in page.requests:
        assert url.startswith(base), f"request outside the report's folder: {url}"


def test_run_page_loads_every_image_offline_without_errors(run_page: Page, folders: dict[str, Path]) -> None:
    n = run_page.js("document.querySelectorAll('.card').length")
    assert n == 4
    assert run_page.js("document.querySelectorAll('.card img').length") == 12  # seed, accentuation, rgba
    run_page.page.wait_for_function("[...document.images].filter(i => i.naturalWidth > 0).length >= 12",
                                    timeout=15000)  # lazy images may finish after the load event
    assert run_page.broken_images() == []
    assert run_page.console == []
    _folder_requests(run_page, folders["run"])
    assert run_page.js("document.querySelector('img.seed').getAttribute('loading')") == "lazy"


def test_slider_and_mask_change_what_is_shown(run_page: Page) -> None:
    card = run_page.page.locator("#card-0 .stack")
    full = card.screenshot()
    assert run_page.js("getComputedStyle(document.querySelector('#card-0 .over')).opacity") == "1"
    run_page.page.fill("#blend", "0")
    run_page.page.dispatch_event("#blend", "input")
    assert run_page.js("getComputedStyle(document.querySelector('#card-0 .over')).opacity") == "0"
    seed = card.screenshot()
    assert seed != full
    run_page.page.fill("#blend", "100")
    run_page.page.dispatch_event("#blend", "input")
    run_page.page.check("#mask")
    assert run_page.js("getComputedStyle(document.querySelector('#card-0 .rgba')).opacity") == "1"
    assert run_page.js("getComputedStyle(document.querySelector('#card-0 .acc')).opacity") == "0"
    masked = card.screenshot()
    assert masked not in (full, seed)
    assert run_page.broken_images() == []


def _order(page: Page) -> list[int]:
    return page.js("[...document.querySelectorAll('#grid .card')].map(c => Number(c.dataset.k))")


def test_sorting_by_gain_reorders_the_cards(run_page: Page) -> None:
    gains = run_page.js("JSON.parse(document.getElementById('report-data').textContent).pairs.map(p => p.gain)")
    assert len(set(gains)) == 4
    start = _order(run_page)
    assert start == [0, 1, 2, 3]
    run_page.page.select_option("#sort", "gain")
    desc = _order(run_page)
    assert desc == sorted(range(4), key=lambda k: -gains[k])
    run_page.page.select_option("#sort", "gain-asc")
    asc = _order(run_page)
    assert asc == desc[::-1]
    assert start != desc and start != asc  # both orders moved the cards
    shown = run_page.js("[...document.querySelectorAll('#grid .card .gain')].map(e => parseFloat(e.textContent))")
    assert shown == sorted(shown)


def test_filters_hide_cards(run_page: Page) -> None:
    run_page.page.fill("#f-image", "wide")
    assert run_page.js("[...document.querySelectorAll('.card')].filter(c => !c.hidden).length") == 2
    assert run_page.page.inner_text("#shown") == "2 of 4 shown"
    run_page.page.fill("#f-image", "")
    run_page.page.fill("#f-target", "conv2")
    visible = run_page.js("[...document.querySelectorAll('.card')].filter(c => !c.hidden)"
                          ".map(c => c.querySelector('.tgt-name').textContent)")
    assert visible == ["conv2:3", "conv2:3"]


def test_detail_view_opens_with_animation_history_and_files(run_page: Page, folders: dict[str, Path]) -> None:
    assert run_page.page.is_hidden("#detail")
    run_page.page.click("#card-0 button.open")
    assert run_page.page.is_visible("#detail")
    assert run_page.page.inner_text("#d-title").startswith("wide.png")
    run_page.page.wait_for_function("document.getElementById('d-gif').naturalWidth > 0")
    assert run_page.js("document.querySelectorAll('#d-history svg polyline').length") >= 2
    files = run_page.js("[...document.querySelectorAll('#d-files a')].map(a => a.getAttribute('href'))")
    pair0 = json.loads((folders["run"] / "run.json").read_text("utf-8"))["pairs"][0]
    assert pair0["image"] == "wide.png" and {"image", "gif"} <= set(pair0["files"])
    assert {pair0["files"]["image"], pair0["files"]["gif"]} <= {unquote(f) for f in files}
    assert run_page.broken_images() == []
    assert "#pair=" in run_page.page.url
    run_page.page.keyboard.press("ArrowRight")
    assert "conv2:3" in run_page.page.inner_text("#d-title")
    run_page.page.keyboard.press("Escape")
    assert run_page.page.is_hidden("#detail")
    assert run_page.console == []


def test_markup_in_names_shows_as_text_and_never_runs(run_page: Page, browser: Any,
                                                      folders: dict[str, Path]) -> None:
    text = run_page.page.inner_text("#grid")
    assert XSS_IMAGE in text and XSS_LABEL in text
    assert run_page.js("document.querySelectorAll('img[src=x], #grid script').length") == 0
    assert run_page.js("document.scripts.length") == 2  # the data block and the page's own script
    run_page.page.click("#card-2 button.open")
    assert XSS_IMAGE in run_page.page.inner_text("#d-title")
    run_page.page.wait_for_timeout(100)
    assert run_page.dialogs == [] and run_page.console == []
    # Opened through a link to the pair, with the markup in the page address too.
    page = Page(browser, folders["run"] / REPORT)
    page.page.goto(page.url + "#pair=" + "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    page.page.wait_for_timeout(100)
    assert page.dialogs == [] and page.console == []
    page.close()


def test_explain_page_shows_the_panel_and_the_classes(browser: Any, folders: dict[str, Path]) -> None:
    page = Page(browser, folders["explain"] / REPORT)
    # a lazy image may finish after the load event: wait for it (bounded; a broken one times out)
    page.page.wait_for_function("document.querySelector('#explain img.figure').naturalWidth > 0", timeout=15000)
    assert page.js("document.querySelectorAll('#explain tbody tr').length") == 2
    assert "top-1" in page.page.inner_text("#explain")
    assert page.broken_images() == [] and page.console == []
    _folder_requests(page, folders["explain"])
    page.close()


def test_sweep_page_shows_the_curve_region_and_numbers(browser: Any, folders: dict[str, Path]) -> None:
    page = Page(browser, folders["sweep"] / REPORT)
    sweep = json.loads((folders["sweep"] / "sweep.json").read_text())
    assert page.js("document.querySelectorAll('#analysis-sweep svg.plot').length") == 2
    assert page.js("document.querySelectorAll('#analysis-sweep svg.plot polyline').length") >= 3
    assert page.js("document.querySelectorAll('#analysis-sweep table.numbers tbody tr').length") == len(sweep["rows"])
    if sweep["region"]["low"] is not None:
        assert page.js("document.querySelectorAll('#analysis-sweep rect.band').length") >= 2
    assert sweep["target"] in page.page.inner_text("#analysis-sweep h2")
    assert "accentuate sweep wide.png" in page.page.inner_text("header")
    assert page.broken_images() == [] and page.console == []
    _folder_requests(page, folders["sweep"])
    page.close()


def test_rewriting_the_report_reuses_thumbnails(folders: dict[str, Path]) -> None:
    """A rebuilt report writes no thumbnail again (each file keeps its inode: atomic writes replace it)."""
    def files() -> dict[str, int]:
        return {p.name: p.stat().st_ino for p in (folders["run"] / "report-files").iterdir()}

    before = files()
    write_report(folders["run"])
    assert files() == before


@pytest.fixture(scope="module")
def analysis_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders written by ``save()`` of a pathway, latent and sanity result on the tiny model."""
    import torch
    from cli_models import tiny

    import accentuate as acc
    from accentuate.analysis import cascading_randomization, latent_features, pathway_similarity

    model = tiny()
    quick = dict(steps=3, crops=2, canvas=32, seed=0)
    seeds = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    root = tmp_path_factory.mktemp("analyses")
    results = {
        "pathway": pathway_similarity(model, 2, list(seeds[:2]), seeds[2:], feature_vis=0, **quick),
        "latent": latent_features(model, list(seeds), acc.channel("conv2", 3), **quick),
        "sanity": cascading_randomization(model, seeds[0], 0, every=2, **quick),
    }
    out = {}
    for kind, res in results.items():
        res.save(root / kind)
        write_report(root / kind)
        out[kind] = root / kind
    return out


@pytest.mark.parametrize("kind", ["pathway", "latent", "sanity"])
def test_analysis_pages_show_plots_images_and_numbers(kind: str, browser: Any,
                                                      analysis_folders: dict[str, Path]) -> None:
    folder = analysis_folders[kind]
    rows = json.loads((folder / f"{kind}.json").read_text())["rows"]
    page = Page(browser, folder / REPORT)
    section = f"#analysis-{kind}"
    assert page.js(f"document.querySelectorAll('{section} svg.plot polyline').length") >= 1
    assert page.js(f"document.querySelectorAll('{section} table.numbers tbody tr').length") == len(rows)
    page.page.wait_for_function(f"document.querySelector('{section} img.figure').naturalWidth > 0", timeout=15000)
    assert page.broken_images() == [] and page.console == []
    _folder_requests(page, folder)
    page.close()


def test_the_details_have_their_own_slider_in_step_with_the_grid(run_page: Page) -> None:
    run_page.page.click("#card-0 button.open")
    run_page.page.fill("#d-blend", "30")
    run_page.page.dispatch_event("#d-blend", "input")
    assert run_page.js("getComputedStyle(document.querySelector('#d-stack .over')).opacity") == "0.3"
    assert run_page.js("document.getElementById('blend').value") == "30"
    run_page.page.check("#d-mask")
    assert run_page.js("document.getElementById('mask').checked") is True
    assert run_page.js("getComputedStyle(document.querySelector('#d-rgba')).opacity") == "1"
    assert run_page.broken_images() == [] and run_page.console == []

"""The documentation site (``make docs``): MkDocs and mkdocstrings build the guides and the API
reference as one site, strictly (any warning fails), and its two adapters do what they say.

The tools are the ``docs`` extra; without them these tests are skipped and say so (``make docs``,
which CI runs, installs them).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDS_DOCS = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason='the docs extra is not installed (pip install -e ".[docs]", or make docs)')


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@NEEDS_DOCS
def test_doctests_in_docstrings_become_code_blocks() -> None:
    roles = _load("griffe_roles")
    text = 'Usage:\n\n    >>> res["after"]["rank"]\n    3\n\nAfter.\n\n```python\n>>> kept\n```\n'
    assert roles.fence_doctests(text) == (
        'Usage:\n\n    ```pycon\n    >>> res["after"]["rank"]\n    3\n    ```\n\nAfter.\n\n```python\n>>> kept\n```\n')


@NEEDS_DOCS
def test_sphinx_roles_become_links_to_what_they_name() -> None:
    import griffe

    roles = _load("griffe_roles")
    pkg = griffe.load("accentuate", search_paths=[str(ROOT / "src")])
    fn = pkg["outputs.figures.pair_figure"]
    assert roles.convert(fn, "see :func:`contact_sheet` and :class:`~accentuate.result.Result`") == (
        "see [`contact_sheet`][accentuate.outputs.figures.contact_sheet] and [`Result`][accentuate.result.Result]")
    # a name nothing documents stays code, without a link
    assert roles.convert(fn, ":class:`torch.Tensor`, :func:`_lut`") == "`torch.Tensor`, `_lut`"


@NEEDS_DOCS
def test_the_site_takes_in_the_files_the_pages_link_to_outside_docs() -> None:
    hooks = _load("hooks")
    outside = hooks.outside_files()
    assert "benchmarks/CALIBRATION.md" in outside and "examples/tour.ipynb" in outside and "README.md" in outside
    assert not [p for p in outside if p.startswith("docs/") or p.startswith("..")]
    assert hooks._site_path("docs/figures/hero.png") == "figures/hero.png"
    assert hooks._site_path("README.md") == "readme.md"


@NEEDS_DOCS
def test_the_site_builds_strictly_with_the_guides_and_the_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    for anchor in ("accentuate.result.Result.load", "accentuate.engine.accentuate", "accentuate.objectives.target.parse_target"):
        assert f'id="{anchor}"' in reference, anchor
    guide = (site / "python" / "index.html").read_text(encoding="utf-8")
    assert 'href="../reference/"' in guide  # the guides link into the reference: one site
    assert (site / "benchmarks" / "CALIBRATION" / "index.html").exists()
    assert (site / "examples" / "tour.ipynb").exists() and (site / "figures" / "hero.png").exists()

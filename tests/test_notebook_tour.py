"""examples/tour.ipynb runs in a real Jupyter kernel (issue 22): nbclient executes it in an
ipykernel of this interpreter, importing the package under test, and its outputs are what our
display methods return.

The kernel is this interpreter (``sys.executable``), named by a kernelspec written to a temporary
``JUPYTER_PATH``; the runtime, config and IPython folders are temporary too, so the user's Jupyter
and IPython set-up is neither read nor written.

The notebook is committed with its outputs (pictures included), made by ``make tour``
(``examples/run_tour.py``), which keeps in its metadata the hash of the code cells' sources that made
them: a cell edited since fails the fast test below until ``make tour`` is run again.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import accentuate as acc

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tour.ipynb"
TAGS = ["load", "accentuate", "result-display", "numbers", "save-load", "concepts"]
KERNEL = "accentuate-tests"


def _cells(nb: Any) -> dict[str, Any]:
    """The code cells by their tag."""
    return {tag: cell for cell in nb.cells if cell.cell_type == "code" for tag in cell.metadata.get("tags", [])}


def _result(cell: Any) -> dict[str, Any]:
    """The data of a cell's ``execute_result`` (its last line's value, every format)."""
    results = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert len(results) == 1, f"expected one value shown, got outputs {[o.output_type for o in cell.outputs]}"
    return dict(results[0].data)


def _run_tour() -> Any:
    """examples/run_tour.py as a module (what ``make tour`` runs)."""
    spec = importlib.util.spec_from_file_location("run_tour", ROOT / "examples" / "run_tour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_outputs_were_made_by_the_cells_as_they_are() -> None:
    """The committed outputs come from the committed sources: the hash kept by ``make tour`` matches."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat (the test extra) is not installed")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    kept = nb.metadata.get("accentuate", {}).get("sources_sha256")
    assert kept == _run_tour().sources_sha256(nb), (
        "examples/tour.ipynb: a cell's source changed since its outputs were made; run `make tour`")


def test_the_sources_hash_sees_a_changed_cell_and_ignores_markdown() -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat (the test extra) is not installed")
    run_tour = _run_tour()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    before = run_tour.sources_sha256(nb)
    nb.cells[0].source += "\nMore text."  # markdown
    assert run_tour.sources_sha256(nb) == before
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.source = code.source.replace("acc.load_model()", "acc.load_model('efficientnet_lite0')")
    assert run_tour.sources_sha256(nb) != before


def test_the_notebook_is_valid_and_committed_with_its_outputs() -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat (the test extra) is not installed")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run it in order: make tour"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    for tag in ("result-display", "concepts"):  # the pictures are in it
        assert "image/png" in _result(_cells(nb)[tag]), tag
    assert list(_cells(nb)) == TAGS  # each tagged cell once, in this order
    assert code[-1].metadata["tags"] == ["concepts"]
    # explanatory text before each code cell
    assert nb.cells[0].cell_type == "markdown"
    assert all(a.cell_type == "markdown" for a, b in zip(nb.cells, nb.cells[1:]) if b.cell_type == "code")
    assert sum(len(c.source) for c in nb.cells) < 20_000  # the tour stays short
    assert NOTEBOOK.stat().st_size < 2_000_000
    assert 'acc.PRESETS["preview"]' in _cells(nb)["accentuate"].source


def _kernel_env(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernelspec for this interpreter in a temporary Jupyter path, and temporary Jupyter folders."""
    spec_dir = root / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    src = str(Path(acc.__file__).resolve().parents[1])
    path = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "accentuate (tests)", "language": "python",
            "env": {"PYTHONPATH": path, "MPLBACKEND": "Agg"}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(root / "jupyter"))
    for var, name in [("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                      ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")]:
        (root / name).mkdir()
        monkeypatch.setenv(var, str(root / name))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The notebook after a real kernel ran it, and the folder it ran in."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat (the test extra) is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient (the test extra) is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel (the test extra) is not installed")
    root = tmp_path_factory.mktemp("tour")
    work = root / "run"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        _kernel_env(root, mp)
        client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(work)}})
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as e:
            failed = [c for c in nb.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
            where = failed[0].metadata.get("tags", ["untagged"]) if failed else "?"
            trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(getattr(e, "traceback", "").splitlines()[-12:]))
            pytest.fail(f"examples/tour.ipynb: the cell tagged {where} failed: {e.ename}: {e.evalue}\n{trace}",
                        pytrace=False)
    return nb, work


@pytest.mark.slow
def test_every_cell_ran_without_error(executed: tuple[Any, Path]) -> None:
    nb, _ = executed
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    errors = [(c.metadata.get("tags"), o.get("ename")) for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # the kernel imported the package under test, and the run stopped at top-1 (the preview preset)
    assert "efficientnet_lite0" in "".join(o.get("text", "") for o in _cells(nb)["load"].outputs)
    lines = "".join(o.get("text", "") for o in _cells(nb)["numbers"].outputs).splitlines()
    assert len(lines) == 2 and all("-> 1 in" in line for line in lines), lines


@pytest.mark.slow
def test_the_result_shows_itself_as_our_display_methods_render_it(executed: tuple[Any, Path]) -> None:
    """The display cell carries image/png and text/html, and they are exactly what ``_repr_png_`` and
    ``_repr_html_`` return for the result, read back here from what the notebook saved."""
    nb, work = executed
    data = _result(_cells(nb)["result-display"])
    assert {"text/html", "image/png", "text/plain"} <= set(data)
    saved = acc.Result.load(work / "tour-out")
    assert data["text/html"] == saved._repr_html_()
    assert base64.b64decode(data["image/png"]) == saved._repr_png_()
    assert data["text/html"].count("data:image/jpeg;base64,") == 1 + 2 + 2  # the seed, 2 targets, 2 with opacity
    assert "goldfish (1)" in data["text/html"]


@pytest.mark.slow
def test_the_loaded_result_equals_the_saved_one(executed: tuple[Any, Path]) -> None:
    nb, work = executed
    assert _result(_cells(nb)["save-load"])["text/plain"] == "True"
    doc = json.loads((work / "tour-out" / "run.json").read_text())
    assert doc["status"] == "complete" and [p["id"] for p in doc["pairs"]] == ["chelsea__goldfish", "chelsea__espresso"]


@pytest.mark.slow
def test_the_concept_atlas_shows_itself_and_each_concept_rose_most(executed: tuple[Any, Path]) -> None:
    nb, _ = executed
    cell = _cells(nb)["concepts"]
    data = _result(cell)
    assert {"text/html", "image/png"} <= set(data)
    assert all(f"concept {i}" in data["text/html"] for i in range(3))
    lines = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream").splitlines()
    assert len(lines) == 3
    for line in lines:  # "concept 0 on astronaut: its coefficient +4.10, the others' at most +0.30"
        own = float(line.split("its coefficient ")[1].split(",")[0])
        other = float(line.split("at most ")[1])
        assert own > 0 and own > other, line

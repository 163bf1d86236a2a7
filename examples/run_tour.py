"""Run examples/tour.ipynb again and keep its outputs in it: ``python examples/run_tour.py`` (``make tour``).

The notebook is committed with its outputs (pictures included), so that it reads on a code host.
This executes every cell in a Jupyter kernel of this interpreter (nbclient and ipykernel, the
``test`` extra), in a temporary working folder (what the tour saves does not land in the checkout),
and writes the notebook back with its new outputs (progress bars as Jupyter shows them once they are
done: see :func:`coalesce_streams`) and, in its metadata, the hash of the code cells'
sources that made them (``metadata["accentuate"]["sources_sha256"]``). ``tests/test_notebook_tour.py``
fails when a cell's source no longer matches that hash: edit a cell, then run this.

The kernel is named by a kernelspec in a temporary ``JUPYTER_PATH`` and the Jupyter and IPython
folders are temporary too, so the user's own set-up is neither read nor written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NOTEBOOK = Path(__file__).resolve().with_name("tour.ipynb")
KERNEL = "accentuate-tour"
#: Where the notebook keeps what made its outputs.
META = "accentuate"


def sources_sha256(nb: Any) -> str:
    """The SHA-256 of the code cells' sources, in order (markdown cells do not change outputs)."""
    sources = [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
               for c in nb["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources, ensure_ascii=False).encode("utf-8")).hexdigest()


@contextmanager
def kernel_env(src: Path | None = None) -> Iterator[str]:
    """A kernelspec for this interpreter (importing the package at ``src``, default the checkout's) and
    temporary Jupyter folders, as environment variables for the duration; yields the kernel's name."""
    src = src or Path(__file__).resolve().parents[1] / "src"
    names = ["JUPYTER_PATH", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR",
             "JUPYTER_PLATFORM_DIRS"]
    saved = {k: os.environ.get(k) for k in names}
    with tempfile.TemporaryDirectory(prefix="tour-jupyter-") as tmp:
        root = Path(tmp)
        spec_dir = root / "jupyter" / "kernels" / KERNEL
        spec_dir.mkdir(parents=True)
        path = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "accentuate (tour)", "language": "python",
                # tqdm.auto's note that ipywidgets is absent (the text bar is used instead) is not part of the tour
                "env": {"PYTHONPATH": path, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore:IProgress not found"}}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        os.environ["JUPYTER_PATH"] = str(root / "jupyter")
        for var, name in [("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"),
                          ("JUPYTER_DATA_DIR", "data"), ("IPYTHONDIR", "ipython")]:
            (root / name).mkdir()
            os.environ[var] = str(root / name)
        os.environ["JUPYTER_PLATFORM_DIRS"] = "1"
        try:
            yield KERNEL
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def as_displayed(text: str) -> str:
    """Stream text as a terminal or Jupyter shows it: each carriage return goes back to the start of
    the line and what follows writes over it (a progress bar's updates leave its last state)."""
    lines = []
    for raw in text.split("\n"):
        shown = ""
        for segment in raw.split("\r"):
            shown = segment + shown[len(segment):]
        lines.append(shown.rstrip())
    return "\n".join(lines)


def coalesce_streams(nb: Any) -> Any:
    """Join each cell's consecutive stream outputs of one name and keep them as they are displayed
    (:func:`as_displayed`); a stream left blank (a progress bar cleared at its end) is dropped."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        joined: list[Any] = []
        for out in cell.outputs:
            if (out.output_type == "stream" and joined and joined[-1].output_type == "stream"
                    and joined[-1].name == out.name):
                joined[-1].text += out.text
            else:
                joined.append(out)
        for out in joined:
            if out.output_type == "stream":
                out.text = as_displayed(out.text).strip("\n") + "\n"
        cell.outputs = [o for o in joined if o.output_type != "stream" or o.text.strip()]
    return nb


def execute(nb: Any, workdir: Path, kernel: str, timeout: int = 900) -> Any:
    """Run every cell of ``nb`` (in place) with its working folder ``workdir``; return ``nb``.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed (its output holds the traceback).
    """
    import nbclient

    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=timeout, record_timing=False,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=NOTEBOOK)
    args = parser.parse_args(argv)
    import nbformat

    nb = nbformat.read(args.notebook, as_version=4)
    start = time.perf_counter()
    with kernel_env() as kernel, tempfile.TemporaryDirectory(prefix="tour-run-") as work:
        execute(nb, Path(work), kernel)
    coalesce_streams(nb)
    nb.metadata.pop("widgets", None)
    nb.metadata[META] = {"sources_sha256": sources_sha256(nb), "made_by": "make tour (examples/run_tour.py)"}
    nbformat.validate(nb)
    nbformat.write(nb, args.notebook)
    size = args.notebook.stat().st_size
    print(f"{args.notebook}: {sum(c.cell_type == 'code' for c in nb.cells)} code cells run in "
          f"{time.perf_counter() - start:.0f} s; {size / 1e3:.0f} kB with outputs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

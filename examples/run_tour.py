"""Run examples/tour.ipynb again and keep its outputs in it: ``python examples/run_tour.py`` (``make tour``).

The notebook is committed with its outputs (pictures included), so that it reads on a code host.
This executes every cell in a Jupyter kernel of this interpreter (nbclient and ipykernel, the
``test`` extra), in a temporary working folder (what the tour saves does not land in the checkout),
and writes the notebook back with its new outputs and, in its metadata, the hash of the code cells'
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
                "env": {"PYTHONPATH": path, "MPLBACKEND": "Agg"}}
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

"""What an analysis writes: markdown tables, matplotlib figures, and its files.

:func:`save_analysis` writes ``KIND.md``, ``KIND.json``, the analysis's pictures and its line plot,
each file atomically; :func:`markdown_table` is every table's format.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..outputs.io import atomic_write, output_folder

__all__ = ["markdown_table", "require_matplotlib", "save_analysis", "save_figure"]


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                   digits: int = 3) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (floats rounded to ``digits``)."""
    if not rows:
        return ""
    cols = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            if math.isnan(v):
                return "nan"
            return f"{v:.{digits}g}" if (abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3)) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def require_matplotlib() -> Any:
    """Import matplotlib's object-oriented ``Figure`` (no pyplot, no backend switch)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plots need matplotlib; install it with `pip install accentuate[plot]`"
        ) from None
    return Figure


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    output_folder(path.parent)
    atomic_write(path, buf.getvalue())
    return path


def save_analysis(directory: str | os.PathLike, kind: str, markdown: str, doc: dict[str, Any],
                  pictures: dict[str, Callable[[], Any]], plot: Callable[[], Any] | None = None) -> list[Path]:
    """Write an analysis's files into ``directory``: ``KIND.md`` (``markdown``), ``KIND.json``
    (``doc``), each picture (``{file name: function making the PIL image}``) and, when ``plot`` is
    given, ``KIND.png`` (its matplotlib figure); each file atomically. Returns the paths written."""
    import json

    out = output_folder(directory)
    atomic_write(out / f"{kind}.md", (markdown.rstrip("\n") + "\n").encode())
    atomic_write(out / f"{kind}.json", json.dumps(doc, indent=2, default=str).encode())
    written = [out / f"{kind}.md", out / f"{kind}.json"]
    from ..outputs.figures import save_image

    written += [save_image(make(), out / name) for name, make in pictures.items()]
    if plot is not None:
        written.append(save_figure(plot(), out / f"{kind}.png"))
    return written

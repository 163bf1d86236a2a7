"""Inline display in Jupyter, JupyterLab and VS Code: results as labelled grids.

:func:`html` and :func:`png` turn a :class:`~accentuate.Result`, a
:class:`~accentuate.LeastChange`, an :class:`~accentuate.analysis.explain.Explanation`
or an analysis's result (:class:`~accentuate.analysis.Sweep`, ``Pathway``, ``Latent``,
``Sanity``) into a grid of its images with their labels and numbers (HTML with the
images as data URIs, tables and SVG plots; or one PNG). Each of those classes gives its
own grid (``_grid()``); :mod:`accentuate.outputs.grid` renders it. The classes do the same from
``_repr_html_`` / ``_repr_png_`` (:class:`accentuate.display.Display`).

HTML needs Jinja2 (``pip install "accentuate[report]"``); without it ``_repr_html_``
returns ``None`` and the notebook shows the PNG, which needs only Pillow.
"""

from __future__ import annotations

from typing import Any

from ..outputs import grid as _grid
from ..outputs.grid import Cell, Grid

__all__ = ["Cell", "Grid", "grid_of", "html", "png"]


def grid_of(obj: Any) -> Grid:
    """The :class:`Grid` of a result (see the module's docstring for the types).

    Raises:
        TypeError: ``obj`` is none of them.
    """
    make = getattr(obj, "_grid", None)
    if make is None:
        raise TypeError(f"no notebook display for {type(obj).__name__}; expected a Result, LeastChange, Explanation, "
                        "Sweep, Pathway, Latent or Sanity")
    return make()


def html(obj: Any) -> str | None:
    """HTML for ``obj`` (images inline as data URIs), or ``None`` without Jinja2."""
    return _grid.html(grid_of(obj))


def png(obj: Any) -> bytes:
    """One PNG of ``obj``'s grid with its labels (Pillow only)."""
    return _grid.png(grid_of(obj))

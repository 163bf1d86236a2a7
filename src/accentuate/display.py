"""Inline display of results in notebooks (Jupyter, JupyterLab, VS Code).

:class:`Display` gives a value type ``_repr_html_`` and ``_repr_png_``: the type says what
it looks like through its own ``_grid()`` (a :class:`accentuate.outputs.grid.Grid` of its images,
captions and numbers), and :mod:`accentuate.outputs.grid`, which knows no result class, renders
that grid. A result on the last line of a cell then shows itself; no widget extension is
needed. :func:`progress_visible` says whether a progress bar can be seen (what ``progress=None``
decides by).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .outputs.grid import Grid

__all__ = ["Display", "progress_visible"]


class Display:
    """Mixin: the object shows itself as a labelled grid of its images and numbers.

    A class that mixes it in defines ``_grid() -> Grid``.
    """

    __slots__ = ()

    def _grid(self) -> Grid:
        """What the object looks like (each value type gives its own)."""
        raise NotImplementedError(f"{type(self).__name__} has no notebook display: it defines no _grid()")

    def _repr_html_(self) -> str | None:
        """HTML for notebooks (``None`` without Jinja2: the notebook then shows the PNG)."""
        from .outputs.grid import html

        return html(self._grid())

    def _repr_png_(self) -> bytes:
        """One PNG of the grid (needs only Pillow)."""
        from .outputs.grid import png

        return png(self._grid())


def progress_visible() -> bool:
    """Whether a progress bar can be seen: inside a Jupyter kernel (``tqdm.auto`` draws its
    widget there), or when stderr is a terminal. Not under pytest, in a pipe or a log file.

    What ``progress=None`` (the default of :func:`accentuate` and the analyses) decides by.
    """
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    shell = sys.modules.get("IPython")
    if shell is not None:
        try:
            ip = shell.get_ipython()  # type: ignore[attr-defined]
            if ip is not None and "IPKernelApp" in getattr(ip, "config", {}):
                return True
        except Exception:  # noqa: BLE001 (no usable IPython: decide by the terminal)
            pass
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())

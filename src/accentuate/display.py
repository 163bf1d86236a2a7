"""Inline display of results in notebooks (Jupyter, JupyterLab, VS Code).

:class:`Display` gives a result class ``_repr_html_`` and ``_repr_png_``; the work
is in :mod:`accentuate.report.notebook`, imported only when a notebook asks.
"""

from __future__ import annotations

__all__ = ["Display"]


class Display:
    """Mixin: the object shows itself as a labelled grid of its images and numbers."""

    __slots__ = ()

    def _repr_html_(self) -> str | None:
        """HTML for notebooks (``None`` without Jinja2: the notebook then shows the PNG)."""
        from .report.notebook import html

        return html(self)

    def _repr_png_(self) -> bytes:
        """One PNG of the grid (needs only Pillow)."""
        from .report.notebook import png

        return png(self)

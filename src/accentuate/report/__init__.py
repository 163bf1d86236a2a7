"""Looking at results: ``report.html`` for an output folder, and notebook display.

- :func:`write_report` writes ``report.html`` (and its thumbnails in ``report-files/``)
  for an output folder of ``accentuate run``, ``demo``, ``explain`` or an analysis;
  the command line does it at the end of each command, and ``accentuate report DIR``
  rebuilds it. The page works offline from ``file://`` and loads nothing from
  anywhere else. It needs Jinja2 (``pip install "accentuate[report]"``).
- :mod:`accentuate.report.notebook` renders results inline in Jupyter
  (``_repr_html_`` / ``_repr_png_`` of :class:`~accentuate.Result`, the analyses'
  results and :class:`~accentuate.LeastChange`).
"""

from __future__ import annotations

from .build import (
    REPORT,
    ReportError,
    ReportUnavailable,
    build_report,
    maybe_write_report,
    write_command_record,
    write_report,
)

__all__ = ["REPORT", "ReportError", "ReportUnavailable", "build_report", "maybe_write_report",
           "write_command_record", "write_report"]

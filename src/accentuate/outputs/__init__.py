"""What draws pictures, and the file writes every output shares.

- :mod:`accentuate.outputs.io`: atomic writes and output folders;
- :mod:`accentuate.outputs.figures`: PIL-only figures (pair figure, contact sheet,
  panel, opacity heat map);
- :mod:`accentuate.outputs.animation`: GIF (and optional MP4) of an optimization;
- :mod:`accentuate.outputs.grid`: a result as a grid of labelled pictures, as HTML (with its
  templates, beside it) or PNG: what a value shows in a notebook;
- :mod:`accentuate.outputs.svg` and :mod:`accentuate.outputs.plots`: the line plots of the
  analyses, as inline SVG.

The run record (``run.json``) and the work list are :mod:`accentuate.runs`. The names below are
imported from their modules on first use, so that importing :mod:`accentuate.outputs.io` (as
:mod:`accentuate.result` does) does not import the figures.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "frames": "animation", "gif_bytes": "animation", "mp4_available": "animation", "mp4_bytes": "animation",
    "snapshot_interval": "animation",
    "composite": "figures", "contact_sheet": "figures", "heatmap": "figures", "panel": "figures",
    "pair_figure": "figures", "png_bytes": "figures",
    "atomic_write": "io", "output_folder": "io",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))

"""What a run writes: figures, contact sheets, animations and the run record.

- :mod:`accentuate.outputs.io`: atomic writes and output folders;
- :mod:`accentuate.outputs.figures`: PIL-only figures (pair figure, contact sheet,
  panel, opacity heat map);
- :mod:`accentuate.outputs.animation`: GIF (and optional MP4) of an optimization;
- :mod:`accentuate.outputs.worklist`: the work list (images, targets, pairs with their
  keys, file stems and batches);
- :mod:`accentuate.outputs.record`: per-pair files and ``run.json`` (see
  ``docs/run-json.md``), with content hashes for resuming;
- :mod:`accentuate.outputs.saved`: :meth:`Result.save <accentuate.result.Result.save>`
  and :meth:`Result.load <accentuate.result.Result.load>` in the same format.

The names below are imported from their modules on first use, so that importing
:mod:`accentuate.outputs.io` (as :mod:`accentuate.result` does) does not import the
record and its figures.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "frames": "animation", "gif_bytes": "animation", "mp4_available": "animation", "mp4_bytes": "animation",
    "snapshot_interval": "animation",
    "composite": "figures", "contact_sheet": "figures", "heatmap": "figures", "panel": "figures",
    "pair_figure": "figures", "png_bytes": "figures",
    "FORMAT": "record", "RunWriter": "record", "seed_distances": "record", "settings_hash": "record",
    "Batch": "worklist", "ImageInfo": "worklist", "Pair": "worklist", "TargetInfo": "worklist", "WorkList": "worklist",
    "describe_target": "worklist", "pair_stems": "worklist", "recorded_work": "worklist",
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

"""What a run writes: figures, contact sheets, animations and the run record.

- :mod:`accentuate.outputs.figures`: PIL-only figures (pair figure, contact sheet,
  panel, opacity heat map);
- :mod:`accentuate.outputs.animation`: GIF (and optional MP4) of an optimization;
- :mod:`accentuate.outputs.record`: per-pair files and ``run.json`` (see
  ``docs/run-json.md``), with content hashes for resuming.
"""

from __future__ import annotations

from .animation import frames, gif_bytes, mp4_available, mp4_bytes, snapshot_interval
from .figures import composite, contact_sheet, heatmap, pair_figure, panel, png_bytes
from .record import FORMAT, RunWriter, describe_target, seed_distances, settings_hash

__all__ = [
    "FORMAT", "RunWriter", "composite", "contact_sheet", "describe_target", "frames", "gif_bytes",
    "heatmap", "mp4_available", "mp4_bytes", "panel", "pair_figure", "png_bytes", "seed_distances",
    "settings_hash", "snapshot_interval",
]

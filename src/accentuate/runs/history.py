"""One pair's optimization history, compact enough for ``run.json`` and the report.

:func:`pair_history` takes the per-step :class:`~accentuate.result.History` of a
batched run and returns, for one seed x target pair, the series the report plots
(the objective and the distance to the seed by step, and the evaluations of the
un-augmented image), thinned evenly to at most ``limit`` records and rounded to 4
significant digits.
"""

from __future__ import annotations

import math
from typing import Any

from ..result import History

__all__ = ["HISTORY_KEYS", "HISTORY_LIMIT", "pair_history"]

#: The series kept per pair, in this order (those the run recorded).
HISTORY_KEYS = ("objective", "distance", "value", "rank", "prob")
#: At most this many records per pair (evenly spaced, the last step always kept).
HISTORY_LIMIT = 200


def _round(v: float) -> float | None:
    return float(f"{v:.4g}") if math.isfinite(v) else None


def pair_history(history: History, a: int, b: int, limit: int = HISTORY_LIMIT) -> dict[str, Any]:
    """The history of pair ``(a, b)`` (batch indices) as lists.

    Returns:
        ``{"step": [...], "objective": [...], "distance": [...], ...}`` with one entry
        per kept record (``None`` where a value was not recorded or not finite), and
        ``"thinned": True`` when records were left out to stay within ``limit``.
        Empty lists when the run recorded nothing.

    Example:
        >>> import torch
        >>> h = History()
        >>> for s in range(1, 4):
        ...     h.append(s, {"objective": torch.full((1, 1), float(s))}, None)
        >>> pair_history(h, 0, 0)
        {'step': [1, 2, 3], 'objective': [1.0, 2.0, 3.0], 'thinned': False}
    """
    n = len(history)
    keep = list(range(n))
    if n > limit:
        keep = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    out: dict[str, Any] = {"step": [int(history.steps[i]) for i in keep]}
    have = history.keys()
    for k in HISTORY_KEYS:
        if k in have:
            col = getattr(history, k)[:, a, b].tolist()
            out[k] = [_round(float(col[i])) for i in keep]
    out["thinned"] = len(keep) < n
    return out

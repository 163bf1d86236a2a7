"""The lossless copy of a one-batch run, ``result.npz``, beside its 8-bit pictures.

A run's PNGs are 8-bit; a run written with ``lossless=True`` (what
:meth:`Result.save <accentuate.result.Result.save>` and ``accentuate explain`` write) also keeps
every tensor of its one batch in ``result.npz`` (NumPy, no pickles; float32 images, masks, seeds,
before/after with the logits, history, and the class names), so that
:meth:`Result.load <accentuate.result.Result.load>` gives the result back exactly.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from ..result import History, Result

__all__ = ["SIDECAR", "labels_of", "npz_bytes", "read_npz"]

#: The lossless copy's file name, next to ``run.json``.
SIDECAR = "result.npz"


def npz_bytes(res: Result) -> bytes:
    """Every tensor of ``res`` (float32, lossless for what the engine computes) and its class names,
    as the bytes of a compressed ``.npz``."""
    out: dict[str, np.ndarray] = {
        "images": res.images.detach().float().cpu().numpy(),
        "masks": res.masks.detach().float().cpu().numpy(),
        "steps_used": res.steps_used.cpu().numpy(),
        "lam_effective": res.lam_effective.detach().float().cpu().numpy(),
        "history.steps": np.asarray(res.history.steps, dtype=np.int64),
    }
    if res.seeds is not None:
        out["seeds"] = res.seeds.detach().float().cpu().numpy()
    if res.labels is not None:
        out["labels"] = np.asarray(list(res.labels), dtype=np.str_)
    for which in ("before", "after"):
        for k, v in getattr(res, which).items():
            out[f"{which}.{k}"] = v.detach().cpu().numpy()
    for k in res.history.keys():
        out[f"history.{k}"] = getattr(res.history, k).numpy()
        out[f"history.{k}.recorded"] = np.asarray(res.history.recorded(k), dtype=bool)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)  # type: ignore[arg-type]
    return buf.getvalue()


def labels_of(data: bytes) -> tuple[str, ...] | None:
    """The class names kept in a ``result.npz`` (``None`` when the result had none)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return tuple(str(x) for x in z["labels"]) if "labels" in z.files else None


def read_npz(data: bytes, rows: list[int], cols: list[int], targets: list[Any], config: Any, run: dict[str, Any],
             failed: dict[tuple[int, int], str], interrupted: bool, steps_done: int,
             labels: tuple[str, ...] | None = None) -> Result:
    """The :class:`Result` of the seeds ``rows`` x the targets ``cols`` kept in ``data`` (indices into
    the batch it holds); ``failed`` is keyed by positions in ``rows`` x ``cols``; ``labels`` are used
    when the file keeps none (a copy written before it kept them)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arr = {k: z[k].copy() for k in z.files}
    kept = tuple(str(x) for x in arr.pop("labels")) if "labels" in arr else labels
    t = {k: torch.from_numpy(v) for k, v in arr.items()}
    r, c = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)

    def pick(x: torch.Tensor, axis: int = 0) -> torch.Tensor:
        """Rows ``rows`` along ``axis`` and targets ``cols`` along the next one."""
        return x.index_select(axis, r).index_select(axis + 1, c)

    history_cols = {k[len("history."):]: pick(v, 1) for k, v in t.items()
                    if k.startswith("history.") and k != "history.steps" and not k.endswith(".recorded")}
    recorded = {k: t[f"history.{k}.recorded"].tolist() for k in history_cols}
    history = History.from_columns(t["history.steps"].tolist(), history_cols, recorded)
    return Result(
        images=pick(t["images"]), masks=pick(t["masks"]),
        seeds=t["seeds"].index_select(0, r) if "seeds" in t else None, targets=targets, labels=kept, history=history,
        before={k[len("before."):]: pick(v) for k, v in t.items() if k.startswith("before.")},
        after={k[len("after."):]: pick(v) for k, v in t.items() if k.startswith("after.")},
        steps_used=pick(t["steps_used"]), lam_effective=pick(t["lam_effective"]), failed=failed,
        config=config, run=run, interrupted=interrupted, steps_done=steps_done,
    )

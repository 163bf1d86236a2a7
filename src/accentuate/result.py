"""The value an accentuation returns: images, masks, history and numbers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .display import Display
from .errors import OutputError
from .objectives import Objective

__all__ = ["History", "Result", "atomic_write"]


class History:
    """Per-step records. Each attribute is a tensor ``(records, N, M)``.

    - ``step``: the step number after which the record was taken (1-based);
    - ``objective``: the target's value, mean over the step's augmented crops;
    - ``distance``: the regularization distance to the seed (before weighting);
    - ``weight``: the effective lambda (``lam * balance``; 0 until balance is measured);
    - ``value``: the target's value on the un-augmented image after the step;
    - ``rank``: the target class's rank there (1 = top-1), when targets are classes.

    ``value``, ``rank`` and ``prob`` come from an evaluation of the un-augmented
    images, which ``accentuate(record_every=k)`` makes every k steps: they are NaN in
    the records without one (and absent from those records in :meth:`to_records`).
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[torch.Tensor | None]] = {}  # aligned with steps; None: not recorded
        self.steps: list[int] = []

    def append(self, step: int, rec: dict[str, torch.Tensor], ev: dict[str, torch.Tensor] | None) -> None:
        merged = dict(rec)
        if ev is not None:
            merged["value"] = ev["value"]
            if "rank" in ev:
                merged["rank"] = ev["rank"].float()
                merged["prob"] = ev["prob"]
        i = len(self.steps)
        self.steps.append(step)
        for k, v in merged.items():
            self._rows.setdefault(k, [None] * i).append(v.detach())
        for col in self._rows.values():
            if len(col) == i:
                col.append(None)

    def __getattr__(self, name: str) -> torch.Tensor:
        rows = self.__dict__.get("_rows", {})
        if name in rows:
            col = rows[name]
            like = next(c for c in col if c is not None)
            return torch.stack([c if c is not None else torch.full_like(like, float("nan")) for c in col]).cpu()
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self.steps)

    def keys(self) -> list[str]:
        return list(self._rows)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per record, tensors as nested lists ``[seed][target]`` (only what was recorded)."""
        lists: dict[str, list[Any]] = {}
        for k, col in self._rows.items():  # one stack and one device copy per key
            have = iter(torch.stack([c for c in col if c is not None]).cpu().tolist())
            lists[k] = [None if c is None else next(have) for c in col]
        out = []
        for i, step in enumerate(self.steps):
            row: dict[str, Any] = {"step": step}
            row.update({k: v[i] for k, v in lists.items() if v[i] is not None})
            out.append(row)
        return out


def output_folder(directory: str | os.PathLike) -> Path:
    """``directory``, created with its parents.

    Raises:
        OutputError: it cannot be created (a file is in the way, no permission, ...).
    """
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"cannot write to folder {str(out)!r} ({e.strerror or type(e).__name__}); choose another folder"
        ) from None
    return out


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never half-written).

    Raises:
        OutputError: the file cannot be written (the temporary file is removed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {str(path)!r} ({e.strerror or type(e).__name__}); "
                          "check the folder and the free space") from None


@dataclass
class Result(Display):
    """What :func:`accentuate.accentuate` returns.

    Attributes:
        images: ``(N, M, 3, H, W)`` accentuations in [0, 1] (N seeds, M targets).
        masks: ``(N, M, H, W)`` raw accumulated ``|d target / d image|`` (channel mean);
            see :meth:`alpha` and :func:`accentuate.opacity.to_alpha`.
        seeds: ``(N, 3, H, W)`` the seeds as fitted to the canvas, or ``None``.
        targets: the M resolved objectives.
        history: per-step :class:`History`.
        before, after: ``value`` ``(N, M)`` and for class targets ``rank``, ``prob`` and
            ``logits`` ``(N, M, classes)``, on the un-augmented seed and result.
        steps_used: ``(N, M)`` steps each accentuation took (less than ``steps`` when it
            stopped early in least-change mode or failed).
        lam_effective: ``(N, M)`` the regularization weight after balancing.
        failed: ``{(seed, target): message}`` for accentuations stopped by a numerical fault.
        snapshots: ``{step: uint8 tensor (N, M, 3, H, W)}``.
        config: every setting of the run.
        interrupted: the run was stopped by Ctrl-C; ``steps_done`` steps were taken.
    """

    images: torch.Tensor
    masks: torch.Tensor
    seeds: torch.Tensor | None
    targets: list[Objective]
    labels: tuple[str, ...] | None
    history: History
    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]
    steps_used: torch.Tensor
    lam_effective: torch.Tensor
    failed: dict[tuple[int, int], str] = field(default_factory=dict)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    steps_done: int = 0

    @property
    def has_opacity(self) -> bool:
        """Whether the run accumulated opacity masks (``accentuate(..., opacity=True)``)."""
        return self.config.get("opacity", True) is not False

    def alpha(self, collective: bool = False, percentile: float = 99.0, sigma: float = 2.0) -> torch.Tensor:
        """Alpha channels ``(N, M, H, W)`` in [0, 1] from the raw masks.

        Raises:
            ValueError: the run kept no masks (``opacity=False``).
        """
        from .opacity import to_alpha

        if not self.has_opacity:
            raise ValueError("this result has no opacity masks (it ran with opacity=False); rerun with opacity=True")

        return to_alpha(self.masks, percentile=percentile, sigma=sigma, collective=collective)

    def rgba(self, collective: bool = False) -> torch.Tensor:
        """The accentuations with their opacity as alpha, ``(N, M, 4, H, W)``."""
        return torch.cat([self.images, self.alpha(collective)[:, :, None]], dim=2)

    def top(self, which: str = "after", k: int = 5) -> list[list[list[tuple[int, str | None, float]]]]:
        """Top-``k`` classes ``[(index, name, probability)]`` per seed and target."""
        logits = getattr(self, which).get("logits")
        if logits is None:
            return []
        probs = logits.softmax(-1)
        v, i = probs.topk(min(k, probs.shape[-1]), dim=-1)
        names = self.labels
        return [[[(int(c), names[int(c)] if names else None, float(p)) for p, c in zip(v[a, b], i[a, b])]
                 for b in range(v.shape[1])] for a in range(v.shape[0])]

    def summary(self) -> list[dict[str, Any]]:
        """Per accentuation: target, value and rank before and after, steps, lambda."""
        rows = []
        n, m = self.images.shape[:2]
        for i in range(n):
            for j in range(m):
                row: dict[str, Any] = {
                    "seed": i, "target": repr(self.targets[j]),
                    "value_before": float(self.before["value"][i, j]) if "value" in self.before else None,
                    "value_after": float(self.after["value"][i, j]),
                    "steps": int(self.steps_used[i, j]),
                    "lam_effective": float(self.lam_effective[i, j]),
                }
                for key in ("rank", "prob"):
                    if key in self.after:
                        row[f"{key}_before"] = (self.before[key][i, j]).item() if key in self.before else None
                        row[f"{key}_after"] = self.after[key][i, j].item()
                if (i, j) in self.failed:
                    row["failed"] = self.failed[(i, j)]
                rows.append(row)
        return rows

    def save(self, directory: str | os.PathLike, prefix: str = "") -> list[Path]:
        """Write each accentuation as PNG, its RGBA (alpha = opacity), and ``result.json``.

        Files: ``{prefix}s{i}_t{j}.png``, ``{prefix}s{i}_t{j}_rgba.png`` (not when the
        run kept no opacity) and ``{prefix}result.json`` (the config and :meth:`summary`).
        Writes are atomic.
        Returns the paths written.
        """
        import io

        from .images import tensor_to_pil

        out = output_folder(directory)
        written = []
        rgba = self.rgba() if self.has_opacity else None
        n, m = self.images.shape[:2]
        for i in range(n):
            for j in range(m):
                files = [(f"{prefix}s{i}_t{j}.png", self.images[i, j])]
                if rgba is not None:
                    files.append((f"{prefix}s{i}_t{j}_rgba.png", rgba[i, j]))
                for name, t in files:
                    buf = io.BytesIO()
                    tensor_to_pil(t).save(buf, format="PNG")
                    atomic_write(out / name, buf.getvalue())
                    written.append(out / name)
        doc = {"config": self.config, "pairs": self.summary(), "interrupted": self.interrupted,
               "steps_done": self.steps_done}
        atomic_write(out / f"{prefix}result.json", json.dumps(doc, indent=2, default=str).encode())
        written.append(out / f"{prefix}result.json")
        return written

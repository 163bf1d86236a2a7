"""Least change: the smallest departure from the seed at which the model sees the target.

``accentuate(..., until="top1")`` already stops each accentuation as soon as its target
class is the model's top-1 on the un-augmented image. :func:`least_change` adds the
search over the regularization weight: a larger lambda keeps the image closer to its
seed, so for each pair it bisects lambda (on a log scale, all pairs in one batched run
per round) for the largest value at which the target is still reached within the step
budget. Among the runs that reached the target, it keeps the one closest to the seed
(highest SSIM). The result answers "what would have to change for the model to see X".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..display import Display
from ..engine import accentuate
from ..images import SeedLike
from ..metrics import ssim
from ..objectives import Objective
from ..result import Result
from ..settings import Settings, Until
from .setup import analysis_settings, analysis_spec, run_seed

if TYPE_CHECKING:
    from ..outputs.grid import Grid

__all__ = ["LeastChange", "least_change"]


@dataclass
class LeastChange(Display):
    """What :func:`least_change` returns.

    Attributes:
        images: ``(N, M, 3, H, W)`` the closest-to-seed images that reached the target
            (for pairs that never reached it: the image of the last round).
        reached: ``(N, M)`` bool.
        lam: ``(N, M)`` the lambda of the kept image (before balancing).
        steps: ``(N, M)`` the steps that run took.
        ssim: ``(N, M)`` SSIM of the kept image to its seed.
        rank: ``(N, M)`` the target's rank on the kept image.
        rounds: per round, ``{"lam": (N, M), "reached": (N, M), "ssim": (N, M), "steps": (N, M)}``.
        result: the :class:`Result` of the last round (config, seeds, targets).
    """

    images: torch.Tensor
    reached: torch.Tensor
    lam: torch.Tensor
    steps: torch.Tensor
    ssim: torch.Tensor
    rank: torch.Tensor
    rounds: list[dict[str, torch.Tensor]]
    result: Result

    def summary(self) -> list[dict[str, Any]]:
        """One row per pair: target, reached, lambda, steps, SSIM, rank."""
        n, m = self.reached.shape
        return [
            {"seed": i, "target": repr(self.result.targets[j]), "reached": bool(self.reached[i, j]),
             "lam": float(self.lam[i, j]), "steps": int(self.steps[i, j]),
             "ssim": float(self.ssim[i, j]), "rank": int(self.rank[i, j])}
            for i in range(n) for j in range(m)
        ]

    def _grid(self) -> Grid:
        """What this looks like in a notebook (see :mod:`accentuate.outputs.grid`): its images with their numbers."""
        from ..outputs.grid import MAX_COLS, MAX_ROWS, Cell, Grid, clip_count, num, picture

        n, m = self.reached.shape
        rn, note_r = clip_count(n, MAX_ROWS, "seeds")
        cm, note_c = clip_count(m, MAX_COLS, "targets")
        seeds = self.result.seeds
        rows = []
        for i in range(rn):
            cells = [Cell(picture(seeds[i]) if seeds is not None else None, ["seed"])]
            for j in range(cm):
                cells.append(Cell(picture(self.images[i, j]), [
                    ("reached" if bool(self.reached[i, j]) else "NOT reached") + f", rank {int(self.rank[i, j])}",
                    f"lam {num(float(self.lam[i, j]))}, {int(self.steps[i, j])} steps", f"SSIM {num(float(self.ssim[i, j]))}"]))
            rows.append((f"seed {i}", cells))
        labels = [t.describe()["label"] for t in self.result.targets[:cm]]
        return Grid(f"Least change: {n} seed(s) x {m} target(s), {len(self.rounds)} round(s)", ["seed"] + labels, rows,
                    "; ".join(x for x in (note_r, note_c) if x),
                    ["seed", "target", "reached", "lam", "steps", "ssim", "rank"], self.summary())


def least_change(
    model: nn.Module,
    seeds: SeedLike | Sequence[SeedLike],
    targets: int | str | Objective | Sequence[int | str | Objective],
    *,
    until: str | int | float | Until = "top1",
    lam: float | None = None,
    lam_range: tuple[float, float] = (1e-2, 1e2),
    rounds: int = 4,
    settings: Settings | None = None,
    **kwargs: Any,
) -> LeastChange:
    """Find, per pair, the least change to the seed that makes the model see the target.

    Round 1 runs every pair at ``lam`` (the model's default when ``None``) in least-change
    mode (``until``). Each later round moves each pair's lambda geometrically: up (halfway
    in log-lambda to the smallest lambda known to fail, or to ``lam_range[1]``) after a
    success, down (halfway to the largest known success, or to ``lam_range[0]``) after a
    failure. All pairs of a round share one batched run with per-pair lambdas.

    Args:
        model, seeds, targets: as for :func:`accentuate.accentuate` (class targets only).
        until: when a pair counts as seeing its target (``"top1"``, a rank, a probability).
        lam: the starting lambda (default: the model's default).
        lam_range: the lowest and highest lambda the search may try.
        rounds: number of batched runs (1 = least-change stopping at ``lam`` only).
        settings: the :class:`~accentuate.settings.Settings` every round runs from (default:
            the model's), resolved once; settings among ``kwargs`` override it.
        **kwargs: passed to :func:`accentuate.accentuate` (``steps``, ``seed``, ``progress``, ...); the
            seed (default 0, as everywhere) is the same in every round, so that rounds compare.

    Returns:
        A :class:`LeastChange`.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1; got {rounds}")
    lo_lim, hi_lim = lam_range
    if not (0 < lo_lim < hi_lim):
        raise ValueError(f"lam_range must satisfy 0 < low < high; got {lam_range}")
    kwargs["seed"] = run_seed(kwargs.pop("seed", 0), kwargs, "least_change")  # one seed for every round
    kwargs.setdefault("opacity", False)  # only images are kept: one backward per step
    spec = analysis_spec(model, kwargs)
    settings = analysis_settings(model, spec, settings, kwargs)
    current: torch.Tensor | None = None
    best: dict[str, torch.Tensor] = {}
    history: list[dict[str, torch.Tensor]] = []
    res: Result | None = None
    good: torch.Tensor | None = None  # largest lambda known to reach the target (or nan)
    bad: torch.Tensor | None = None  # smallest lambda known to fail (or nan)
    for _ in range(rounds):
        res = accentuate(model, seeds, targets, settings, until=until,
                         lam=current if current is not None else (settings.lam if lam is None else lam), **kwargs)
        n, m = res.images.shape[:2]
        if current is None:
            current = torch.full((n, m), float(res.config.lam))  # type: ignore[arg-type]
            good = torch.full((n, m), math.nan)
            bad = torch.full((n, m), math.nan)
            best = {"images": res.images.clone(), "reached": torch.zeros(n, m, dtype=torch.bool),
                    "lam": current.clone(), "steps": res.steps_used.clone(),
                    "ssim": torch.full((n, m), -math.inf), "rank": res.after["rank"].clone()}
        rule = Until.parse(until)
        reached = rule.reached(res.after["rank"], res.after["prob"])  # type: ignore[union-attr]
        s = ssim(res.images, res.seeds[:, None].expand_as(res.images))  # type: ignore[index]
        history.append({"lam": current.clone(), "reached": reached.clone(), "ssim": s.clone(),
                        "steps": res.steps_used.clone()})
        better = reached & (~best["reached"] | (s > best["ssim"]))
        best["images"][better] = res.images[better]
        best["lam"][better] = current[better]
        best["steps"][better] = res.steps_used[better]
        best["ssim"][better] = s[better]
        best["rank"][better] = res.after["rank"][better]
        best["reached"] |= reached
        # Bisection on log-lambda.
        good = torch.where(reached, torch.fmax(good, current), good)  # type: ignore[arg-type]
        bad = torch.where(~reached, torch.fmin(bad, current), bad)  # type: ignore[arg-type]
        up = torch.where(torch.isnan(bad), torch.full_like(current, hi_lim), bad)
        down = torch.where(torch.isnan(good), torch.full_like(current, lo_lim), good)
        nxt = torch.where(reached, (current.log() + up.log()) / 2, (current.log() + down.log()) / 2).exp()
        current = nxt.clamp(lo_lim, hi_lim)
    assert res is not None
    unreached = ~best["reached"]
    best["images"][unreached] = res.images[unreached]
    best["ssim"][unreached] = history[-1]["ssim"][unreached]
    best["lam"][unreached] = history[-1]["lam"][unreached]
    best["steps"][unreached] = res.steps_used[unreached]
    best["rank"][unreached] = res.after["rank"][unreached]
    return LeastChange(images=best["images"], reached=best["reached"], lam=best["lam"], steps=best["steps"],
                       ssim=best["ssim"], rank=best["rank"], rounds=history, result=res)

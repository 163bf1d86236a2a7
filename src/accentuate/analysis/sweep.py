"""Lambda sweep: how the regularization weight trades the target's rise for closeness to the seed.

:func:`lambda_sweep` accentuates one seed toward one target at log-spaced values of
``lam`` (one accentuation per value, batched, all with the same random crops, so
only ``lam`` differs) and records the target's final value, rank and probability and the
distance of the result to its seed. :func:`sensitive_region` then finds the range
of ``lam`` in which the result goes from "the target rises freely" to "nothing
changes".

Definition of the sensitive region. Let ``gain(lam) = value_after - value_before``
and normalize it by the reference ``G = max(max over the sweep of gain, gain at
lam = 0)`` (the ``lam = 0`` run is made when ``reference=True``): ``g = gain / G``.
Then, on ``log10(lam)``:

- the region starts where ``g`` last falls through ``upper`` (0.9): between the
  largest swept ``lam`` with ``g >= upper`` and the next one, linearly interpolated;
- it ends where ``g`` first falls through ``lower`` (0.1) above that point: between
  the smallest larger swept ``lam`` with ``g <= lower`` and the one before it,
  linearly interpolated.

Both ends therefore lie inside the swept range. When they do not exist the region
is ``None`` with the reason: the target never rose (``G <= 0``); ``g`` is below
``upper`` already at the smallest ``lam`` (only possible with the ``lam = 0``
reference: the drop begins before the sweep; sweep smaller values); or ``g`` never
falls to ``lower`` (the drop ends after the sweep; sweep larger values).

With ``balance=True`` (the default) the weight actually applied is
``lam * balance``, and the balance is the same for every run of the sweep (it is
measured at step 1, after the same step 0); :attr:`Sweep.lam_effective` records it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..display import Display
from ..engine import accentuate
from ..images import SeedLike, load_image_set
from ..metrics import pixel_rmse, ssim
from ..objectives import Objective, as_objective
from ..outputs.figures import labelled_grid, to_pil
from ..settings import Settings
from .setup import analysis_settings, analysis_spec, run_seed
from .writing import markdown_table, require_matplotlib, save_analysis, save_figure

if TYPE_CHECKING:
    from ..outputs.grid import Grid

__all__ = ["SensitiveRegion", "Sweep", "lambda_sweep", "sensitive_region"]


@dataclass(frozen=True)
class SensitiveRegion:
    """The range of ``lam`` where the normalized gain falls from ``upper`` to ``lower``.

    Attributes:
        low, high: the region's ends (``None`` when it was not found).
        reason: how it was found, or why not.
        upper, lower: the levels of the normalized gain that define it.
    """

    low: float | None
    high: float | None
    reason: str
    upper: float = 0.9
    lower: float = 0.1

    @property
    def found(self) -> bool:
        """Whether both ends lie inside the sweep."""
        return self.low is not None and self.high is not None

    def __str__(self) -> str:
        if self.found:
            return f"[{self.low:.3g}, {self.high:.3g}]"
        return f"not found: {self.reason}"


def _crossing(x0: float, x1: float, y0: float, y1: float, level: float) -> float:
    """Where the line through (x0, y0), (x1, y1) reaches ``level`` (y0 != y1)."""
    return x0 + (y0 - level) / (y0 - y1) * (x1 - x0)


def sensitive_region(
    lams: Sequence[float] | torch.Tensor,
    gains: Sequence[float] | torch.Tensor,
    reference: float | None = None,
    upper: float = 0.9,
    lower: float = 0.1,
) -> SensitiveRegion:
    """Locate the sensitive region of a sweep (see the module's docstring for the definition).

    Args:
        lams: the swept values, strictly increasing and positive.
        gains: the target's gain at each, ``value_after - value_before``.
        reference: the gain without regularization (``lam = 0``), if measured.
        upper, lower: normalized-gain levels of the region's start and end
            (``0 < lower < upper <= 1``).

    Returns:
        A :class:`SensitiveRegion`; ``low``/``high`` are ``None`` (with the reason)
        when the gain never rose, drops before the first value, or does not drop
        to ``lower`` by the last one.

    Example:
        >>> r = sensitive_region([0.01, 0.1, 1, 10, 100], [10, 9.5, 5, 0.5, 0.2])
        >>> round(r.low, 3), round(r.high, 3)
        (0.129, 7.743)
    """
    x = [float(v) for v in lams]
    g = [float(v) for v in gains]
    if len(x) != len(g) or len(x) < 2:
        raise ValueError(f"need at least 2 lambdas and one gain per lambda; got {len(x)} and {len(g)}")
    if any(v <= 0 or not math.isfinite(v) for v in x) or any(b <= a for a, b in zip(x, x[1:])):
        raise ValueError("lambdas must be positive, finite and strictly increasing")
    if not 0 < lower < upper <= 1:
        raise ValueError(f"levels must satisfy 0 < lower < upper <= 1; got lower={lower}, upper={upper}")
    finite = [v for v in g if math.isfinite(v)]
    ref = max(finite + ([reference] if reference is not None and math.isfinite(reference) else []),
              default=float("nan"))
    if not math.isfinite(ref) or ref <= 0:
        return SensitiveRegion(None, None, f"the target never rose (largest gain {ref:.3g})", upper, lower)
    n = [v / ref if math.isfinite(v) else float("nan") for v in g]
    logx = [math.log10(v) for v in x]
    top = [i for i, v in enumerate(n) if v >= upper]
    if not top:
        return SensitiveRegion(
            None, None,
            f"the gain is below {upper:g} of its unregularized value already at lam={x[0]:g} "
            "(the drop begins before the sweep); sweep smaller lambdas", upper, lower,
        )
    i = top[-1]
    ends = [j for j in range(i + 1, len(n)) if n[j] <= lower]
    if not ends:
        return SensitiveRegion(
            None, None,
            f"the gain is still above {lower:g} of its maximum at lam={x[-1]:g} "
            "(the drop ends after the sweep); sweep larger lambdas", upper, lower,
        )
    j = ends[0]
    low = 10 ** _crossing(logx[i], logx[i + 1], n[i], n[i + 1], upper)
    high = 10 ** _crossing(logx[j - 1], logx[j], n[j - 1], n[j], lower)
    return SensitiveRegion(
        low, high,
        f"normalized gain falls through {upper:g} between lam={x[i]:g} and {x[i + 1]:g} "
        f"and through {lower:g} between lam={x[j - 1]:g} and {x[j]:g}", upper, lower,
    )


@dataclass
class Sweep(Display):
    """The record of a lambda sweep (one seed, one target).

    Attributes:
        target: the target, as text.
        lams: ``(L,)`` the swept ``lam`` values (increasing).
        lam_effective: ``(L,)`` the weight applied after balancing.
        value_before: the target's value on the seed.
        value_after, gain, gain_norm: ``(L,)`` final value, its rise, and the rise over
            the reference ``G`` (see :func:`sensitive_region`).
        rank, prob: ``(L,)`` the target class's final rank (1 = top-1) and probability,
            or ``None`` for non-class targets.
        pixel_distance: ``(L,)`` pixel RMSE of the result to the seed (0..1 scale).
        ssim_seed: ``(L,)`` SSIM of the result to the seed.
        reg_distance: ``(L,)`` the regularizer's distance at the last step.
        images: ``(L, 3, H, W)``; masks: ``(L, H, W)`` raw opacity.
        seed: ``(3, H, W)`` the seed on the canvas.
        free: the ``lam = 0`` run (same keys as a row of :meth:`rows`, plus ``image``), or ``None``.
        region: the :class:`SensitiveRegion`.
        config: the settings of the runs.
    """

    target: str
    lams: torch.Tensor
    lam_effective: torch.Tensor
    value_before: float
    value_after: torch.Tensor
    gain: torch.Tensor
    gain_norm: torch.Tensor
    rank: torch.Tensor | None
    prob: torch.Tensor | None
    pixel_distance: torch.Tensor
    ssim_seed: torch.Tensor
    reg_distance: torch.Tensor
    images: torch.Tensor
    masks: torch.Tensor
    seed: torch.Tensor
    free: dict[str, Any] | None
    region: SensitiveRegion
    config: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per swept ``lam`` (the ``lam = 0`` run first, when made)."""
        out = []
        if self.free is not None:
            out.append({k: v for k, v in self.free.items() if k != "image"})
        for i in range(len(self.lams)):
            row: dict[str, Any] = {
                "lam": float(self.lams[i]), "lam_effective": float(self.lam_effective[i]),
                "value_after": float(self.value_after[i]), "gain": float(self.gain[i]),
                "gain_norm": float(self.gain_norm[i]),
            }
            if self.rank is not None and self.prob is not None:
                row["rank"] = int(self.rank[i])
                row["prob"] = float(self.prob[i])
            row["pixel_rmse"] = float(self.pixel_distance[i])
            row["ssim_seed"] = float(self.ssim_seed[i])
            row["reg_distance"] = float(self.reg_distance[i])
            out.append(row)
        return out

    def to_markdown(self, digits: int = 3) -> str:
        """The sweep's table, and the sensitive region below it."""
        return markdown_table(self.rows(), digits=digits) + f"\n\nSensitive region (lam): {self.region}\n"

    def plot(self, path: str | os.PathLike | None = None, title: str | None = None) -> Any:
        """Two curves over ``lam`` (log scale) with the sensitive region shaded.

        Top: the target's normalized gain (with its rank at each point for class
        targets). Bottom: the distance of the result to its seed (pixel RMSE and
        ``1 - SSIM``). The
        ``lam = 0`` run is drawn as a dashed horizontal line. Needs matplotlib.

        Returns:
            The matplotlib ``Figure`` (also saved as PNG when ``path`` is given).
        """
        Figure = require_matplotlib()
        fig = Figure(figsize=(7.5, 6.2))
        ax1, ax2 = fig.subplots(2, 1, sharex=True)
        lams = self.lams.numpy()
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            if self.region.found:
                ax.axvspan(self.region.low, self.region.high, color="#ff7f0e", alpha=0.18,
                           label=f"sensitive region [{self.region.low:.2g}, {self.region.high:.2g}]")
        ax1.plot(lams, self.gain_norm.numpy(), "o-", color="#d62728", lw=2, label="target gain (normalized)")
        ax1.axhline(self.region.upper, color="black", lw=0.8, ls=":")
        ax1.axhline(self.region.lower, color="black", lw=0.8, ls=":")
        for level in (self.region.upper, self.region.lower):
            ax1.text(1.01, level, f"{level:g}", transform=ax1.get_yaxis_transform(), fontsize=8, va="center")
        if self.free is not None:
            free = "lam = 0 (no regularizer)"
            ax1.axhline(self.free["gain_norm"], color="#d62728", ls="--", lw=1, label=free)
            ax2.axhline(self.free["pixel_rmse"], color="#1f77b4", ls="--", lw=1, label=free)
        if self.rank is not None:
            for x, y, r in zip(lams, self.gain_norm.numpy(), self.rank.tolist()):
                ax1.annotate(f"#{int(r)}", (x, y), textcoords="offset points", xytext=(0, 7),
                             ha="center", fontsize=7, color="#444444")
        ax1.set_ylabel("gain / max gain")
        ax1.set_ylim(min(-0.05, float(self.gain_norm.min()) - 0.05), 1.18)
        ax1.legend(fontsize=8, loc="lower left")
        rank_note = " (labels: rank of the class)" if self.rank is not None else ""
        ax1.set_title(f"target{rank_note}", fontsize=10)
        ax2.plot(lams, self.pixel_distance.numpy(), "s-", color="#1f77b4", lw=2, label="pixel RMSE to seed")
        ax2.plot(lams, 1 - self.ssim_seed.numpy(), "v-", color="#9467bd", lw=2, label="1 - SSIM to seed")
        if self.free is not None:
            ax2.axhline(1 - self.free["ssim_seed"], color="#9467bd", ls="--", lw=1)
        ax2.set_ylabel("distance to seed")
        ax2.set_xlabel("lam (regularization weight, log scale)")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8, loc="lower left")
        fig.suptitle(title or f"Lambda sweep: {self.target}", fontsize=12)
        fig.tight_layout()
        if path is not None:
            save_figure(fig, path)
        return fig

    def image_grid(self, side: int = 150, columns: int = 7) -> Any:
        """A PIL raster of the seed, the ``lam = 0`` run and each swept result, labelled."""
        items: list[tuple[torch.Tensor, str]] = [(self.seed, "seed")]
        if self.free is not None:
            items.append((self.free["image"], self._label(self.free, "lam = 0")))
        for row, img in zip(self.rows()[1 if self.free is not None else 0:], self.images):
            tag = f"lam = {row['lam']:.2g}"
            low, high = self.region.low, self.region.high
            if low is not None and high is not None and low <= row["lam"] <= high:
                tag += " *"
            items.append((img, self._label(row, tag)))
        cells, labels = [], []
        for start in range(0, len(items), columns):
            chunk = items[start : start + columns]
            cells.append([to_pil(t, side) for t, _ in chunk])
            labels.append([label for _, label in chunk])
        # One label row per image row: draw each row as its own grid and stack them.
        from PIL import Image

        parts = [labelled_grid([c], col_labels=l, font_size=12) for c, l in zip(cells, labels)]
        title = f"Lambda sweep: {self.target}   (* = inside the sensitive region {self.region})"
        head = labelled_grid([[Image.new("RGB", (1, 1), "white")]], title=title)
        width = max(p.size[0] for p in parts + [head])
        out = Image.new("RGB", (width, sum(p.size[1] for p in parts) + head.size[1]), "white")
        y = 0
        for p in [head] + parts:
            out.paste(p, (0, y))
            y += p.size[1]
        return out

    @staticmethod
    def _label(row: dict[str, Any], tag: str) -> str:
        line = f"gain {row['gain']:+.2f}"
        if "rank" in row:
            line += f", #{row['rank']}"
        return f"{tag}\n{line}\nRMSE {row['pixel_rmse']:.3f}"

    def save(self, directory: str | os.PathLike, plot: bool = True) -> list[Path]:
        """Write ``sweep.md``, ``sweep.json``, ``sweep_images.png`` and (with matplotlib) ``sweep.png``."""
        doc = {"target": self.target, "value_before": self.value_before, "config": self.config,
               "region": {"low": self.region.low, "high": self.region.high, "reason": self.region.reason,
                          "upper": self.region.upper, "lower": self.region.lower},
               "rows": self.rows()}
        return save_analysis(directory, "sweep", self.to_markdown(), doc, {"sweep_images.png": self.image_grid},
                             self.plot if plot else None)

    def _grid(self) -> Grid:
        """What this looks like in a notebook (see :mod:`accentuate.outputs.grid`): its images with their numbers."""
        from ..outputs.grid import MAX_COLS, Cell, Grid, clip_count, num, picture
        from ..outputs.plots import sweep_plots

        rows = self.rows()
        doc = {"target": self.target, "rows": rows, "region": {"low": self.region.low, "high": self.region.high,
                                                             "reason": self.region.reason, "upper": self.region.upper,
                                                             "lower": self.region.lower}}
        plots = sweep_plots(doc)
        cells = [Cell(picture(self.seed), ["seed"])]
        cols = ["seed"]
        if self.free is not None:
            cells.append(Cell(picture(self.free["image"]), [f"gain {num(self.free['gain'])}"]))
            cols.append("lam = 0")
        for i in range(len(self.lams)):
            lam = float(self.lams[i])
            inside = self.region.found and self.region.low <= lam <= self.region.high  # type: ignore[operator]
            cols.append(f"lam {num(lam)}" + (" *" if inside else ""))
            lines = [f"gain {num(float(self.gain[i]))}", f"RMSE {num(float(self.pixel_distance[i]))}"]
            if self.rank is not None:
                lines.insert(1, f"rank {int(self.rank[i])}")
            cells.append(Cell(picture(self.images[i]), lines))
        cm, note = clip_count(len(cells), MAX_COLS + 3, "images")
        return Grid(f"Lambda sweep: {self.target}; sensitive region {self.region} (* inside)", cols[:cm], [("", cells[:cm])],
                    note, list(rows[-1].keys()) if rows else [], rows, plots)


def default_lams(num: int = 11, low: float = 1e-3, high: float = 1e2) -> torch.Tensor:
    """``num`` log-spaced values from ``low`` to ``high`` (float64)."""
    if num < 2 or not 0 < low < high:
        raise ValueError(f"need num >= 2 and 0 < low < high; got num={num}, low={low}, high={high}")
    return torch.logspace(math.log10(low), math.log10(high), num, dtype=torch.float64)


def _records(res: Any) -> list[dict[str, Any]]:
    """One record per accentuation of a sweep's batch (its image, mask, value, lam and distance)."""
    dist = res.history.distance if len(res.history) and "distance" in res.history.keys() else None
    recs = []
    for i in range(res.images.shape[0]):
        rec: dict[str, Any] = {
            "image": res.images[i, 0], "mask": res.masks[i, 0],
            "value": float(res.after["value"][i, 0]), "lam_effective": float(res.lam_effective[i, 0]),
            "reg_distance": float(dist[-1, i, 0]) if dist is not None else float("nan"),
        }
        if "rank" in res.after:
            rec["rank"] = int(res.after["rank"][i, 0])
            rec["prob"] = float(res.after["prob"][i, 0])
        recs.append(rec)
    return recs


def _swept_values(lams: Sequence[float] | torch.Tensor | None, num: int, lam_range: tuple[float, float],
                  batch: int) -> torch.Tensor:
    """The values of ``lam`` a sweep runs (``lams``, else ``num`` log-spaced in ``lam_range``), checked."""
    values = torch.as_tensor(lams, dtype=torch.float64) if lams is not None else default_lams(num, *lam_range)
    if values.dim() != 1 or values.numel() < 2:
        raise ValueError("lams must be a sequence of at least 2 values")
    if bool((values <= 0).any()) or bool((values[1:] <= values[:-1]).any()):
        raise ValueError("lams must be positive and strictly increasing (lam = 0 is the reference run)")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer; got {batch!r}")
    return values


def lambda_sweep(
    model: nn.Module,
    image: SeedLike,
    target: int | str | Objective,
    lams: Sequence[float] | torch.Tensor | None = None,
    *,
    num: int = 11,
    lam_range: tuple[float, float] = (1e-3, 1e2),
    reference: bool = True,
    upper: float = 0.9,
    lower: float = 0.1,
    batch: int = 4,
    seed: int | None = 0,
    progress: bool | Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
    **accentuate_kwargs: Any,
) -> Sweep:
    """Accentuate one seed toward one target at each ``lam``; find the sensitive region.

    Args:
        model: the model (not modified).
        image: the one seed image (path, PIL image or tensor ``(3, H, W)``).
        target: a class (index or name), a target string (``"blocks.5:20"``; see
            :func:`accentuate.parse_target`) or an :class:`~accentuate.objectives.Objective`.
        lams: the values to sweep (positive, increasing); default ``num`` log-spaced
            values over ``lam_range``.
        reference: also run ``lam = 0`` (no regularizer) as the reference gain.
        upper, lower: levels of the normalized gain that bound the sensitive region.
        batch: values of ``lam`` accentuated together in one call (each its own copy of
            the seed; a batch gives the same result as separate runs, and costs memory
            in proportion).
        seed: the int seed shared by every run (the same crops in each, so that
            only ``lam`` differs).
        progress: passed to each :func:`accentuate.accentuate` call (default: a bar where one
            can be seen).
        settings: the :class:`~accentuate.settings.Settings` every accentuation runs from
            (default: the model's), resolved once; settings among the keywords override it.
        **accentuate_kwargs: other settings (``steps``, ``crops``, ``canvas``,
            ``reg_layer``, ``balance``, ...); not ``lam`` or ``until``.

    Returns:
        A :class:`Sweep` (``.rows()``, ``.region``, ``.plot()``, ``.image_grid()``, ``.save()``).

    Shape:
        ``Sweep.images`` is ``(L, 3, H, W)`` for ``L`` values of ``lam``.

    Example:
        >>> import accentuate as acc                                             # doctest: +SKIP
        >>> from accentuate.analysis import lambda_sweep                         # doctest: +SKIP
        >>> model = acc.load_model("efficientnet_lite0")                         # doctest: +SKIP
        >>> sw = lambda_sweep(model, acc.photo("chelsea"), "goldfish")           # doctest: +SKIP
        >>> print(sw.region)                                                     # doctest: +SKIP
    """
    for bad in ("lam", "until", "seeds", "targets"):
        if bad in accentuate_kwargs:
            raise TypeError(f"lambda_sweep sets {bad!r} itself; do not pass it")
    seed = run_seed(seed, accentuate_kwargs, "lambda_sweep")
    seeds, _ = load_image_set([image] if not isinstance(image, (list, tuple)) else image, "seed")
    if len(seeds) != 1:
        raise ValueError(f"lambda_sweep takes one seed image; got {len(seeds)}")
    spec = analysis_spec(model, accentuate_kwargs)
    settings = analysis_settings(model, spec, settings, accentuate_kwargs)
    objective = as_objective(target, model, spec, runner=accentuate_kwargs.get("runner"))
    values = _swept_values(lams, num, lam_range, batch)
    # One accentuation per lam (the seed repeated), `batch` of them per call; every call draws
    # the same crops (same seed), and a batch equals its single runs.
    all_lams = [float(v) for v in values] + ([0.0] if reference else [])
    recs: list[dict[str, Any]] = []
    first: Any = None
    for start in range(0, len(all_lams), batch):
        chunk = all_lams[start : start + batch]
        res = accentuate(model, [seeds[0]] * len(chunk), objective, settings, lam=torch.tensor(chunk).view(-1, 1),
                         seed=seed, progress=progress, **accentuate_kwargs)
        first = first if first is not None else res
        recs += _records(res)
    swept, free_rec = recs[: len(values)], (recs[-1] if reference else None)
    before = float(first.before["value"][0, 0])
    seed_canvas = first.seeds[0]
    images = torch.stack([r["image"] for r in swept])
    after = torch.tensor([r["value"] for r in swept])
    gain = after - before
    free_gain = None if free_rec is None else free_rec["value"] - before
    region = sensitive_region(values, gain, free_gain, upper=upper, lower=lower)
    ref = max([float(gain.max())] + ([free_gain] if free_gain is not None else []))
    norm = gain / ref if ref > 0 else torch.full_like(gain, float("nan"))
    has_rank = "rank" in swept[0]
    rank = torch.tensor([r["rank"] for r in swept]) if has_rank else None
    prob = torch.tensor([r["prob"] for r in swept]) if has_rank else None
    free = None
    if free_rec is not None:
        img = free_rec["image"]
        free = {"lam": 0.0, "lam_effective": 0.0, "value_after": free_rec["value"],
                "gain": free_gain, "gain_norm": free_gain / ref if ref > 0 else float("nan")}
        if has_rank:
            free["rank"] = free_rec["rank"]
            free["prob"] = free_rec["prob"]
        free.update({"pixel_rmse": float(pixel_rmse(img, seed_canvas)),
                     "ssim_seed": float(ssim(img, seed_canvas)),
                     "reg_distance": free_rec["reg_distance"], "image": img})
    config = first.config.to_dict()
    config.pop("lam", None)
    config.update({"lams": values.tolist(), "reference": reference, "upper": upper, "lower": lower,
                   "batch": batch})
    return Sweep(
        target=repr(objective), lams=values,
        lam_effective=torch.tensor([r["lam_effective"] for r in swept]),
        value_before=before, value_after=after, gain=gain, gain_norm=norm, rank=rank, prob=prob,
        pixel_distance=pixel_rmse(images, seed_canvas[None]),
        ssim_seed=ssim(images, seed_canvas[None].expand_as(images)),
        reg_distance=torch.tensor([r["reg_distance"] for r in swept]),
        images=images, masks=torch.stack([r["mask"] for r in swept]), seed=seed_canvas,
        free=free, region=region, config=config,
    )

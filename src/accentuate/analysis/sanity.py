"""Sanity check: does the accentuation depend on what the model learned?

Cascading randomization (Adebayo et al., 2018, "Sanity checks for saliency maps")
applied to feature accentuation. The model's units are randomized one after the
other from the top (``classifier``, then ``head``, then ``blocks.15``, ... down to
``stem``), cumulatively, and the same accentuation (same seed, target, settings
and random crops) is made after each step. If the explanation reflects what the
model learned, it must change as the learned weights are destroyed.

Randomization. :func:`randomize` works on a deep copy (the user's model is never
touched). Each parameter tensor of a randomized module is replaced by Gaussian
noise with that tensor's own mean and standard deviation, drawn from a
``torch.Generator`` seeded from ``weights_seed`` and the module's name, so the
scale of every layer is kept and the result is reproducible. BatchNorm weight
and bias are parameters and are randomized this way; its running statistics are
buffers and are kept by default (``bn_stats="keep"``) or reset to mean 0 and
variance 1 (``bn_stats="reset"``). A constant tensor (standard deviation 0) stays
constant.

Similarity to the original accentuation, per depth:

- ``image_ssim``: SSIM of the accentuation to the original model's accentuation;
- ``change_ssim``: SSIM of the change maps (accentuation minus seed, in gray,
  each divided by its own 99th percentile of ``|change|`` and mapped to [0, 1]):
  whether the same things were changed in the same way;
- ``mask_spearman``: Spearman rank correlation of the raw opacity masks (the "where").

For reference, ``repeat`` holds the same numbers for the original model run again
with other random crops (``seed + 1``): the similarity that run-to-run noise
alone allows. A sane explanation falls well below it as the randomization deepens.
For a logit target, randomizing the classifier changes what the logit *means*, so
a drop at the first step is expected; the deeper steps test the features.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..digest import name_seed
from ..display import Display
from ..engine import accentuate
from ..hooks import ModelRunner, check_layers
from ..images import SeedLike, load_image_set
from ..metrics import gray, ssim
from ..objectives import Objective, as_objective
from ..outputs.figures import labelled_grid, stack_with_title, to_pil
from ..settings import Settings
from .activations import units
from .setup import analysis_settings, analysis_spec, run_seed
from .stats import spearman
from .writing import markdown_table, require_matplotlib, save_analysis, save_figure

if TYPE_CHECKING:
    from ..outputs.grid import Grid

__all__ = ["Sanity", "cascade_order", "cascading_randomization", "randomize"]

_METRICS = ("image_ssim", "change_ssim", "mask_spearman")


def cascade_order(model: nn.Module, **spec_overrides: Any) -> list[str]:
    """The model's units from the top down: the default order of the cascade.

    Units are the top-level children with parameters, with ``nn.Sequential`` /
    ``nn.ModuleList`` containers split into their members (for the embedded model:
    ``classifier, head, blocks.15, ..., blocks.0, stem``).
    """
    spec = analysis_spec(model, spec_overrides)
    return units(model, spec)[::-1]


@torch.no_grad()
def _randomize_module(module: nn.Module, seed: int, bn_stats: str) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        x = p.detach().float().cpu()
        mean = x.mean()
        std = x.std(unbiased=False) if x.numel() > 1 else torch.zeros(())
        new = torch.randn(x.shape, generator=g) * std + mean
        p.copy_(new.to(device=p.device, dtype=p.dtype))
    if bn_stats == "reset":
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.reset_running_stats()


def randomize(
    model: nn.Module, modules: Sequence[str], weights_seed: int = 0, bn_stats: str = "keep"
) -> nn.Module:
    """A deep copy of ``model`` with the parameters of ``modules`` re-drawn at random.

    Args:
        model: the model (not modified).
        modules: dotted names of the modules to randomize.
        weights_seed: seed of the draws (each module's generator is seeded from it
            and the module's name, so a module gets the same weights whichever
            others are randomized with it).
        bn_stats: ``"keep"`` BatchNorm running statistics, or ``"reset"`` them.

    Returns:
        The randomized copy, in the mode the model was in.
    """
    if bn_stats not in ("keep", "reset"):
        raise ValueError(f"bn_stats must be 'keep' or 'reset'; got {bn_stats!r}")
    check_layers(model, modules)
    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    for name in modules:
        _randomize_module(mods[name], name_seed(weights_seed, name), bn_stats)
    return out


def _change_map(image: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Gray change ``image - seed``, scaled by its 99th percentile of |change|, in [0, 1] as (3, H, W)."""
    d = gray(image - seed)
    scale = torch.quantile(d.abs().flatten()[:: max(1, d.numel() // 1_000_000)], 0.99).clamp(min=1e-8)
    return (0.5 + 0.5 * (d / scale).clamp(-1, 1))[None].expand(3, -1, -1)


def _similarity(image: torch.Tensor, mask: torch.Tensor, ref_image: torch.Tensor, ref_mask: torch.Tensor,
                seed: torch.Tensor) -> dict[str, float]:
    return {
        "image_ssim": float(ssim(image, ref_image)),
        "change_ssim": float(ssim(_change_map(image, seed), _change_map(ref_image, seed))),
        "mask_spearman": spearman(mask, ref_mask),
        "seed_ssim": float(ssim(image, seed)),
    }


@dataclass
class Sanity(Display):
    """Result of cascading randomization.

    Attributes:
        target: the target, as text.
        cascade: the module randomized last at each measured depth, top first; depth ``d``
            has every module of the cascade down to ``cascade[d - 1]`` randomized
            (``config["cascade"]`` lists all of them).
        images: ``(D + 1, 3, H, W)`` the accentuation at each depth (0 = original model).
        masks: ``(D + 1, H, W)`` raw opacity at each depth.
        seed: ``(3, H, W)`` the seed on the canvas.
        metrics: ``{name: (D + 1,)}``: ``image_ssim``, ``change_ssim``, ``mask_spearman``
            (similarity to depth 0), ``seed_ssim`` (SSIM to the seed), ``gain`` (the
            target's rise on the model of that depth) and ``rank`` (class targets).
        repeat: the same similarity numbers for the original model with other crops, or ``None``.
        repeat_image, repeat_mask: the repeated run's image and raw mask, or ``None``.
        config: settings.
    """

    target: str
    cascade: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    seed: torch.Tensor
    metrics: dict[str, torch.Tensor]
    repeat: dict[str, float] | None
    repeat_image: torch.Tensor | None = None
    repeat_mask: torch.Tensor | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def depth_labels(self) -> list[str]:
        """``"none"`` then the last module randomized at each depth."""
        return ["none"] + list(self.cascade)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per depth (and a final ``repeat`` row when measured)."""
        out = []
        for d, label in enumerate(self.depth_labels):
            row: dict[str, Any] = {"depth": d, "randomized down to": label}
            for k, v in self.metrics.items():
                row[k] = int(v[d]) if k == "rank" else float(v[d])
            out.append(row)
        if self.repeat is not None:
            out.append({"depth": "-", "randomized down to": "none, other crops (repeat)", **self.repeat})
        return out

    def to_markdown(self, digits: int = 3) -> str:
        """The table of :meth:`rows`."""
        return markdown_table(self.rows(), digits=digits)

    def plot(self, path: str | os.PathLike | None = None, title: str | None = None) -> Any:
        """Similarity to the original accentuation per randomization depth (line plot).

        The dashed lines are the same measures for a repeated run on the original
        model (other random crops): the level run-to-run noise allows. Needs matplotlib.
        """
        Figure = require_matplotlib()
        n = len(self.depth_labels)
        fig = Figure(figsize=(max(7.5, 0.38 * n + 2), 4.8))
        ax = fig.subplots()
        x = list(range(n))
        colours = {"image_ssim": "#1f77b4", "change_ssim": "#d62728", "mask_spearman": "#2ca02c"}
        names = {"image_ssim": "SSIM of the accentuation",
                 "change_ssim": "SSIM of the change (accentuation - seed)",
                 "mask_spearman": "Spearman of the opacity mask"}
        for k in _METRICS:
            ax.plot(x, self.metrics[k].numpy(), "o-", color=colours[k], lw=2, ms=4, label=names[k])
            if self.repeat is not None:
                ax.axhline(self.repeat[k], color=colours[k], ls="--", lw=1)
        if self.repeat is not None:
            ax.plot([], [], "k--", lw=1, label="same, original model rerun with other crops")
        ax.set_xticks(x)
        ax.set_xticklabels([l.replace("blocks.", "b") for l in self.depth_labels], rotation=60, ha="right",
                           fontsize=8)
        ax.set_xlabel("randomized from the top down to (cumulative)")
        ax.set_ylabel("similarity to the original accentuation")
        ax.set_ylim(min(-0.1, float(min(self.metrics[k].min() for k in _METRICS)) - 0.05), 1.05)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        ax.set_title(title or f"Cascading randomization: {self.target}", fontsize=11)
        fig.tight_layout()
        if path is not None:
            save_figure(fig, path)
        return fig

    def strip(self, side: int = 120, columns: int = 7, depths: Sequence[int] | None = None) -> Any:
        """A PIL grid per depth: the accentuation, its change from the seed, and its opacity.

        Change: gray is no change, lighter/darker is brighter/darker than the seed
        (each scaled by its own 99th percentile). Opacity: the raw mask through
        :func:`accentuate.opacity.to_alpha`, white where the target's gradient went.
        The seed and the rerun of the original model with other crops come first.
        """
        from ..opacity import to_alpha

        chosen = list(range(len(self.depth_labels))) if depths is None else list(depths)
        alpha = to_alpha(self.masks)
        rep_alpha = None if self.repeat_mask is None else to_alpha(self.repeat_mask)[None].expand(3, -1, -1)
        items: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, str]] = [
            (self.seed, None, None, "seed")]
        if self.repeat_image is not None:
            items.append((self.repeat_image, _change_map(self.repeat_image, self.seed), rep_alpha,
                          "original,\nother crops"))
        for d in chosen:
            label = "original" if d == 0 else f"down to\n{self.depth_labels[d]}"
            items.append((self.images[d], _change_map(self.images[d], self.seed),
                          alpha[d][None].expand(3, -1, -1),
                          f"{label}\nSSIM {float(self.metrics['image_ssim'][d]):.2f}"))
        parts = []
        rows = ["accentuation", "change from\nthe seed", "opacity"]
        for start in range(0, len(items), columns):
            chunk = items[start : start + columns]
            cells = [[None if t is None else to_pil(t, side) for t in (img, change, op)]
                     for img, change, op, _ in chunk]
            grid = [[cells[c][r] for c in range(len(chunk))] for r in range(3)]
            parts.append(labelled_grid(grid, col_labels=[label for *_, label in chunk], row_labels=rows,
                                       font_size=12))
        return stack_with_title(f"Cascading randomization: {self.target} (SSIM: accentuation vs the original's)",
                                parts)

    def save(self, directory: str | os.PathLike, plot: bool = True) -> list[Path]:
        """Write ``sanity.md``, ``sanity.json``, ``sanity_images.png`` and ``sanity.png`` (matplotlib)."""
        doc = {"target": self.target, "cascade": self.cascade, "config": self.config, "rows": self.rows()}
        return save_analysis(directory, "sanity", self.to_markdown(), doc, {"sanity_images.png": self.strip},
                             self.plot if plot else None)

    def _grid(self) -> Grid:
        """What this looks like in a notebook (see :mod:`accentuate.outputs.grid`): its images with their numbers."""
        from ..opacity import to_alpha
        from ..outputs.grid import MAX_COLS, Cell, Grid, num, picture
        from ..outputs.plots import sanity_columns, sanity_plots

        rows = self.rows()
        alpha = to_alpha(self.masks)
        cols, acc, op = ["seed"], [Cell(picture(self.seed))], [Cell(None)]
        for d, label in enumerate(self.depth_labels[:MAX_COLS]):
            cols.append("original" if d == 0 else f"down to {label}")
            acc.append(Cell(picture(self.images[d]), [f"SSIM {num(float(self.metrics['image_ssim'][d]))}"]))
            op.append(Cell(picture(alpha[d][None].expand(3, -1, -1))))
        return Grid(f"Cascading randomization: {self.target}", cols, [("accentuation", acc), ("opacity", op)], "",
                    sanity_columns(rows), rows, sanity_plots({"rows": rows}))


def cascading_randomization(
    model: nn.Module,
    image: SeedLike,
    target: int | str | Objective,
    *,
    cascade: Sequence[str] | None = None,
    weights_seed: int = 0,
    bn_stats: str = "keep",
    every: int = 1,
    repeat: bool = True,
    seed: int | None = 0,
    progress: bool | Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
    **accentuate_kwargs: Any,
) -> Sanity:
    """Accentuate the same target on the model randomized cumulatively from the top.

    Args:
        model: the model (not modified: randomization works on a copy).
        image: the one seed image.
        target: a class (index or name), a target string (``"blocks.5:20"``; see
            :func:`accentuate.parse_target`) or an :class:`~accentuate.objectives.Objective`.
        cascade: modules to randomize, top first (default :func:`cascade_order`).
        weights_seed: seed of the random weights.
        bn_stats: ``"keep"`` or ``"reset"`` BatchNorm running statistics (see :func:`randomize`).
        every: accentuate after every ``every``-th randomized module (and always after
            the first and the last); the randomization itself stays cumulative over
            every module of the cascade. ``every=2`` halves the cost.
        repeat: also rerun the original model with ``seed + 1`` (the noise level).
        seed: the int seed of the accentuation's crops; the same at every depth.
        progress: passed to each :func:`accentuate.accentuate` call (default: a bar where one
            can be seen).
        settings: the :class:`~accentuate.settings.Settings` every accentuation runs from
            (default: the model's), resolved once; settings among the keywords override it.
        **accentuate_kwargs: other settings (``steps``, ``crops``, ``canvas``, ``lam``, ...).

    Returns:
        A :class:`Sanity` with the images and similarity measures per depth.

    Shape:
        ``Sanity.images`` is ``(D + 1, 3, H, W)`` for a cascade of ``D`` modules.

    Example:
        >>> import accentuate as acc                                             # doctest: +SKIP
        >>> from accentuate.analysis import cascading_randomization              # doctest: +SKIP
        >>> model = acc.load_model("efficientnet_lite0")                         # doctest: +SKIP
        >>> s = cascading_randomization(model, acc.photo("coffee"), "espresso")  # doctest: +SKIP
        >>> print(s.to_markdown())                                               # doctest: +SKIP
    """
    for bad in ("seeds", "targets"):
        if bad in accentuate_kwargs:
            raise TypeError(f"cascading_randomization takes one seed and one target; do not pass {bad!r}")
    if bn_stats not in ("keep", "reset"):
        raise ValueError(f"bn_stats must be 'keep' or 'reset'; got {bn_stats!r}")
    seed = run_seed(seed, accentuate_kwargs, "cascading_randomization")
    seeds, _ = load_image_set([image] if not isinstance(image, (list, tuple)) else image, "seed")
    if len(seeds) != 1:
        raise ValueError(f"cascading_randomization takes one seed image; got {len(seeds)}")
    spec = analysis_spec(model, accentuate_kwargs)
    settings = analysis_settings(model, spec, settings, accentuate_kwargs)
    # The original model's runs reuse the caller's runner; a randomized copy is another model.
    runner = ModelRunner.reuse(accentuate_kwargs.pop("runner", None), model, spec)
    objective = as_objective(target, model, spec, runner=runner)
    order = list(cascade) if cascade is not None else units(model, spec, runner)[::-1]
    if not order:
        raise ValueError("nothing to randomize: the cascade is empty")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer; got {every!r}")
    report = {i for i in range(len(order)) if i == 0 or i == len(order) - 1 or i % every == 0}
    check_layers(model, order)

    def run(m: nn.Module, gen: int) -> Any:
        return accentuate(m, seeds[0], objective, settings, seed=gen, progress=progress,
                          runner=runner if m is model else None, **accentuate_kwargs)

    results = [run(model, seed)]
    work = copy.deepcopy(model)
    mods = dict(work.named_modules())
    stops: list[str] = []
    for i, name in enumerate(order):
        _randomize_module(mods[name], name_seed(weights_seed, name), bn_stats)
        if i in report:
            results.append(run(work, seed))
            stops.append(name)
    again = run(model, seed + 1) if repeat else None

    seed_canvas = results[0].seeds[0]
    ref_img, ref_mask = results[0].images[0, 0], results[0].masks[0, 0]
    sims = [_similarity(r.images[0, 0], r.masks[0, 0], ref_img, ref_mask, seed_canvas) for r in results]
    metrics = {k: torch.tensor([s[k] for s in sims]) for k in (*_METRICS, "seed_ssim")}
    metrics["gain"] = torch.tensor([float(r.after["value"][0, 0] - r.before["value"][0, 0]) for r in results])
    if all("rank" in r.after for r in results):
        metrics["rank"] = torch.tensor([int(r.after["rank"][0, 0]) for r in results])
    rep = None
    if again is not None:
        rep = _similarity(again.images[0, 0], again.masks[0, 0], ref_img, ref_mask, seed_canvas)
        rep["gain"] = float(again.after["value"][0, 0] - again.before["value"][0, 0])
        if "rank" in again.after:
            rep["rank"] = int(again.after["rank"][0, 0])
    config = results[0].config.to_dict()
    config.update({"cascade": order, "weights_seed": weights_seed, "bn_stats": bn_stats, "repeat": repeat,
                   "every": every})
    return Sanity(
        target=repr(objective), cascade=stops, images=torch.stack([r.images[0, 0] for r in results]),
        masks=torch.stack([r.masks[0, 0] for r in results]), seed=seed_canvas, metrics=metrics,
        repeat=rep, repeat_image=None if again is None else again.images[0, 0],
        repeat_mask=None if again is None else again.masks[0, 0], config=config,
    )

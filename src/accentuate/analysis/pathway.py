"""Pathway similarity: do accentuations travel through the model like natural images?

For one target class, :func:`pathway_similarity` shows sets of images to the model
and compares what each layer makes of them with what it makes of natural images of
the class, layer by layer:

- ``accentuation``: the seeds accentuated toward the target;
- ``lam0`` (on request): the same accentuations without the regularizer (``lam = 0``);
- ``seed``: the seeds themselves (where the accentuations started);
- ``feature_vis``: noise-seeded feature visualizations of the target (same
  optimization, no seed, no regularizer);
- ``other_class`` (on request): natural photos of *other* classes, the floor that
  shows what "unrelated" looks like;
- ``natural``: the natural images of the class among themselves (each pair once,
  never an image with itself).

Two measures describe an image at a layer (``measure=``; see
:mod:`accentuate.analysis.pathway_measures`):

- ``"activation"`` (the path similarity of Geirhos et al. 2023): the channels'
  spatial means, ``(C,)`` (*pooled*: are the same channels active, wherever they
  are?); also the whole ``(C, H, W)`` output (*unpooled*: at the same positions too,
  which penalizes any difference in layout);
- ``"attribution"`` (the paper's *circuits*): per channel, the spatial mean of
  ``|a| |dT/da|`` (*absolute*) or ``a dT/da`` (*signed*), what the channel gives the
  target ``T`` (:mod:`accentuate.analysis.attribution`). Only layers upstream of the
  target are compared: at the target's own layer (the logits, for a class) the
  attribution is the target itself.

Each is compared by Pearson r and by Spearman r (ranks), against two baselines: every
natural image in turn (*pairs*, the mean over pairs), or the class *prototype* (the
mean vector of the natural images; a natural image against the mean of the others).

Every image is shown to the model whole, resized to its input size, as the engine
evaluates an accentuation. Logits (the :data:`~accentuate.hooks.OUTPUT` layer)
have no space, so pooled and unpooled agree there.

The paper's claim is that accentuations correlate with natural images of the
class about as well as those correlate among themselves, and much better than
feature visualizations do; the ``seed`` line shows how much of that the
accentuation owes to its seed being a natural image in the first place, and the
``lam0`` line how much it owes to the regularizer.

Layers without a residual connection (a module whose ``residual`` attribute is
``False``: the first block of a CNN stage, a fresh projection of the previous stage)
are *marked* (:attr:`Pathway.marks`): there every kind of image, natural photos of
the class included, correlates weakly, so they say little about the pathway.

Every correlation of every pair, and every image's vector, is kept, so that
:meth:`Pathway.intervals` can give bootstrap intervals that resample the images
(seeds, feature visualizations, natural photos), not their pairs; over several
classes see :mod:`accentuate.analysis.pathway_pool`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..display import Display
from ..engine import accentuate
from ..hooks import OUTPUT, ModelRunner, check_layers
from ..images import ImageSet, load_image_set, model_view
from ..objectives import Objective, as_objective
from ..outputs.figures import labelled_grid, save_image, to_pil
from ..outputs.io import output_folder
from ..result import Result
from ..settings import Settings
from .activations import layer_activations, layouts_of, units
from .attribution import channel_attributions
from .pathway_measures import (
    check_baseline,
    check_measure,
    correlation_matrix,
    forms_of,
    prototype_correlations,
    split_statistic,
    statistics_of,
)
from .setup import analysis_settings, analysis_spec, run_seed
from .stats import Interval, bootstrap, pair_means
from .writing import markdown_table, require_matplotlib, save_figure

if TYPE_CHECKING:
    from ..outputs.grid import Grid

__all__ = ["KINDS", "SEED_KINDS", "Pathway", "augmented_views", "no_residual_layers", "pathway_similarity"]

#: The image kinds :func:`pathway_similarity` builds, in plotting order.
KINDS = ("accentuation", "lam0", "seed", "feature_vis", "other_class", "natural")

#: The kinds whose images are one per seed, in the seeds' order (resampled together).
SEED_KINDS = ("accentuation", "lam0", "seed")

#: Why a layer is marked (see :func:`no_residual_layers`).
NO_RESIDUAL = "no residual connection (a stage's first block)"

_STYLE = {  # colour, marker, line style
    "accentuation": ("#d62728", "o", "-"),
    "lam0": ("#ff7f0e", "v", "-."),
    "seed": ("#7f7f7f", "s", "--"),
    "feature_vis": ("#1f77b4", "^", "-"),
    "other_class": ("#8c564b", "P", (0, (1, 1))),
    "natural": ("#2ca02c", "D", ":"),
}
_LABEL = {
    "accentuation": "accentuation vs natural",
    "lam0": "accentuation at lam 0 vs natural",
    "seed": "seed vs natural",
    "feature_vis": "feature visualization vs natural",
    "other_class": "other classes' photos vs natural (floor)",
    "natural": "natural vs natural",
}
#: How each statistic is named in tables and figures.
STATISTIC_TITLE = {
    "pooled": "activation, pooled (channel means), Pearson r",
    "unpooled": "activation, unpooled (C x H x W), Pearson r",
    "pooled_spearman": "activation, pooled, Spearman r",
    "absolute": "attribution |a| |dT/da|, Pearson r",
    "signed": "attribution a dT/da, Pearson r",
    "absolute_spearman": "attribution |a| |dT/da|, Spearman r",
    "signed_spearman": "attribution a dT/da, Spearman r",
}


def no_residual_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, str]:
    """``{layer: reason}`` for the layers whose module says it has no residual connection.

    A module with a boolean ``residual`` attribute set to ``False`` (the embedded
    EfficientNet-Lite's first block of each stage, whose output is a fresh projection
    rather than the stage's running sum) is marked; other modules are not.

    Example:
        >>> import accentuate as acc
        >>> marks = no_residual_layers(acc.load_model("efficientnet_lite0"), ["blocks.1", "blocks.2"])  # doctest: +SKIP
        >>> marks                                                                    # doctest: +SKIP
        {'blocks.1': 'no residual connection (a stage's first block)'}
    """
    modules = dict(model.named_modules())
    return {l: NO_RESIDUAL for l in layers if getattr(modules.get(l), "residual", None) is False}


@dataclass
class Pathway(Display):
    """Per-layer correlations of each image kind with the natural images of a class.

    Attributes:
        target: the target, as text.
        layers: the layers compared, in depth order.
        kinds: the image kinds compared (see :data:`KINDS`; plus any ``extra``).
        means: ``{statistic: {kind: (L,)}}`` the mean r over the kind's pairs (the pairs
            baseline); the statistics are :func:`~accentuate.analysis.pathway_measures.statistics_of`
            the measure, the main one first.
        sds: the standard deviation over those pairs, same keys.
        pairs: ``{kind: number of (image, natural image) pairs averaged}``.
        images: ``{kind: [(3, H, W)]}`` the images compared (as given, before resizing).
        config: how the images were made.
        pairwise: ``{statistic: {kind: (L, n, n_natural)}}`` the correlation of each image of
            the kind with each natural image, per layer; for ``natural`` the
            ``(L, n_natural, n_natural)`` matrix of the naturals among themselves, NaN on its
            diagonal (an image is never paired with itself).
        measure: ``"activation"`` or ``"attribution"``.
        vectors: ``{form: {kind: [(n, C) per layer]}}`` each image's vector (the prototype
            baseline's input).
        marks: ``{layer: reason}`` the compared layers marked as saying little (see
            :func:`no_residual_layers`).
    """

    target: str
    layers: list[str]
    kinds: list[str]
    means: dict[str, dict[str, torch.Tensor]]
    sds: dict[str, dict[str, torch.Tensor]]
    pairs: dict[str, int]
    images: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    pairwise: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    measure: str = "activation"
    vectors: dict[str, dict[str, list[torch.Tensor]]] = field(default_factory=dict)
    marks: dict[str, str] = field(default_factory=dict)

    # -- the statistics -----------------------------------------------------------------------
    @property
    def statistics(self) -> list[str]:
        """The statistics compared, the main one first (``pooled``, or ``absolute`` for attributions)."""
        return list(self.means)

    def _stat(self, statistic: str | None) -> str:
        statistic = self.statistics[0] if statistic is None else statistic
        if statistic not in self.means:
            raise ValueError(f"this {self.measure} pathway has no statistic {statistic!r}; "
                             f"it has {', '.join(self.statistics)}")
        return statistic

    @property
    def pooled(self) -> dict[str, torch.Tensor]:
        """``{kind: (L,)}`` the main statistic's mean r (activation: pooled Pearson r)."""
        return self.means[self.statistics[0]]

    @property
    def unpooled(self) -> dict[str, torch.Tensor]:
        """``{kind: (L,)}`` the activation measure's unpooled mean r."""
        return self.means[self._stat("unpooled")]

    @property
    def pooled_sd(self) -> dict[str, torch.Tensor]:
        """The standard deviation over pairs of :attr:`pooled`."""
        return self.sds[self.statistics[0]]

    @property
    def unpooled_sd(self) -> dict[str, torch.Tensor]:
        """The standard deviation over pairs of :attr:`unpooled`."""
        return self.sds[self._stat("unpooled")]

    def prototype(self, statistic: str | None = None) -> dict[str, torch.Tensor]:
        """``{kind: (L,)}`` the mean r of each kind's images with the class prototype (the mean
        vector of the natural images); a natural image with the mean of the *other* ones."""
        statistic = self._stat(statistic)
        ident = {u: torch.arange(n)[None] for u, n in self.unit_sizes().items()}
        table = self.statistic_table(ident, statistic, "prototype")[0].float()
        return {k: table[i] for i, k in enumerate(self.kinds)}

    # -- resampling -----------------------------------------------------------------------------
    def unit(self, kind: str) -> str:
        """The resampling unit of a kind's images: ``"seed"`` for the kinds made from the seeds
        (:data:`SEED_KINDS`, one image per seed, resampled together when they have as many
        images), ``"natural"`` for the natural images, else the kind itself."""
        if kind in SEED_KINDS:
            counts = {len(self.images.get(k, [])) for k in SEED_KINDS if k in self.kinds}
            return "seed" if len(counts) == 1 else kind
        return kind

    def unit_sizes(self) -> dict[str, int]:
        """``{unit: number of images}`` over the compared kinds (see :meth:`unit`)."""
        first = self.statistics[0]
        return {self.unit(k): int(self.pairwise[first][k].shape[1]) for k in self.kinds}

    def pair_statistic(self, kind: str, draws: Mapping[str, torch.Tensor], statistic: str | None = None,
                       baseline: str = "pairs") -> torch.Tensor:
        """The mean r of ``kind`` with the natural images, per replicate of :func:`bootstrap`.

        Args:
            kind: one of :attr:`kinds`.
            draws: ``{unit: (R, n) indices}`` for the units of :meth:`unit_sizes`.
            statistic: one of :attr:`statistics` (default: the main one).
            baseline: ``"pairs"`` (every natural image in turn) or ``"prototype"`` (the mean
                vector of the drawn natural images; for ``natural``, of the others).

        Returns:
            ``(R, L)``.
        """
        statistic, baseline = self._stat(statistic), check_baseline(baseline)
        if baseline == "pairs":
            nat = draws["natural"]
            rows = nat if kind == "natural" else draws[self.unit(kind)]
            return pair_means(self.pairwise[statistic][kind], rows, nat)
        return self.statistic_table(draws, statistic, baseline, [kind])[:, 0]

    def statistic_table(self, draws: Mapping[str, torch.Tensor], statistic: str | None = None,
                        baseline: str = "pairs", kinds: Sequence[str] | None = None) -> torch.Tensor:
        """:meth:`pair_statistic` of several kinds (default: all) at once, ``(R, K, L)`` (one
        prototype per replicate and layer serves every kind)."""
        statistic, baseline = self._stat(statistic), check_baseline(baseline)
        kinds = list(self.kinds if kinds is None else kinds)
        if baseline == "pairs":
            return torch.stack([self.pair_statistic(k, draws, statistic) for k in kinds], dim=1)
        form, corr = split_statistic(statistic)
        if form not in self.vectors:
            raise ValueError(f"the {statistic} statistic has no prototype baseline (its vectors are not kept)")
        vec = self.vectors[form]
        others = [k for k in kinds if k != "natural"]
        rows = {k: draws[self.unit(k)] for k in others}
        per_layer = []
        for i in range(len(self.layers)):
            r = prototype_correlations({k: vec[k][i] for k in others}, vec["natural"][i], rows, draws["natural"], corr)
            per_layer.append(torch.stack([r[k] for k in kinds], dim=1))
        return torch.stack(per_layer, dim=2)

    def intervals(self, replicates: int = 2000, level: float = 0.95, generator: int = 0,
                  statistic: str | None = None, baseline: str = "pairs") -> dict[str, Interval]:
        """Bootstrap intervals of each kind's mean r, per layer, resampling images, not pairs.

        One joint bootstrap: each replicate redraws the seeds (the accentuations, ``lam0``
        accentuations and seeds of one seed go together), the feature visualizations, the
        other classes' photos and the natural images, each with replacement. Natural-vs-natural
        pairs are the drawn naturals' distinct pairs (a photo drawn twice is not paired with
        itself); the prototype is the mean of the drawn naturals.

        Args:
            statistic: one of :attr:`statistics` (default: the main one).
            baseline: ``"pairs"`` or ``"prototype"`` (see :meth:`pair_statistic`).

        Returns:
            ``{kind: Interval}`` with ``(L,)`` ends; ``estimate`` equals :attr:`means`
            (or :meth:`prototype`).
        """
        if not self.pairwise:
            raise ValueError("this Pathway keeps no pairwise correlations; recompute it with pathway_similarity")
        statistic, baseline = self._stat(statistic), check_baseline(baseline)

        def stat(draws: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.statistic_table(draws, statistic, baseline)

        ci = bootstrap(stat, self.unit_sizes(), replicates, level, generator)
        return {k: ci[i] for i, k in enumerate(self.kinds)}

    def layer_label(self, layer: str) -> str:
        """The layer as tables show it: ``logits`` for the output, ``(no skip)`` after a marked layer."""
        name = "logits" if layer == OUTPUT else layer
        return f"{name} (no skip)" if layer in self.marks else name

    def intervals_markdown(self, intervals: Mapping[str, Interval], digits: int = 2) -> str:
        """The :meth:`intervals` as a table: one row per layer, ``mean [lower, upper]`` per kind."""
        rows = []
        for i, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": self.layer_label(layer)}
            for k, ci in intervals.items():
                row[k] = (f"{float(ci.estimate[i]):.{digits}f} [{float(ci.lower[i]):.{digits}f}, "
                          f"{float(ci.upper[i]):.{digits}f}]")
            rows.append(row)
        return markdown_table(rows)

    # -- tables and figures ------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer: ``layer``, ``depth``, ``{kind}`` (the main statistic), ``{kind}_{statistic}``
        for each other statistic (``{kind}_unpooled``, ...), ``{kind}_prototype`` (the main
        statistic against the prototype) and ``note`` (why a layer is marked, else empty)."""
        main = self.statistics[0]
        proto = self.prototype(main) if self.vectors else {}
        out = []
        for i, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": "logits" if layer == OUTPUT else layer, "depth": i}
            for k in self.kinds:
                row[k] = float(self.means[main][k][i])
                for s in self.statistics[1:]:
                    row[f"{k}_{s}"] = float(self.means[s][k][i])
                if proto:
                    row[f"{k}_prototype"] = float(proto[k][i])
            row["note"] = self.marks.get(layer, "")
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        """Means over layers per kind, and at how many layers the accentuation beats the others.

        Returns:
            ``{"measure", "mean": {statistic: {kind: r}}, "mean_pooled": {kind: r}`` (the main
            statistic), ``"layers": L, "accentuation_above": {kind: number of layers where
            the accentuation's main r is higher}}`` (plus ``"mean_unpooled"`` for activations).
        """
        mean = {s: {k: float(torch.nanmean(v[k])) for k in self.kinds} for s, v in self.means.items()}
        above: dict[str, int] = {}
        if "accentuation" in self.kinds:
            a = self.pooled["accentuation"]
            above = {k: int((a > self.pooled[k]).sum()) for k in self.kinds if k != "accentuation"}
        out = {"measure": self.measure, "mean": mean, "mean_pooled": mean[self.statistics[0]],
               "layers": len(self.layers), "accentuation_above": above}
        if "unpooled" in mean:
            out["mean_unpooled"] = mean["unpooled"]
        return out

    def to_markdown(self, digits: int = 2) -> str:
        """The table: one row per layer, the main statistic of each kind, the second in the next column
        (activation: pooled, then unpooled; attribution: absolute, then signed).

        Headers give the number of (image, natural image) pairs averaged per kind.
        """
        main, second = self.statistics[0], self.statistics[1]
        head = {k: f"{k} ({self.pairs[k]} pairs)" for k in self.kinds}
        table = []
        for i, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": self.layer_label(layer)}
            for k in self.kinds:
                row[head[k]] = float(self.means[main][k][i])
                row[f"{k} {second}"] = float(self.means[second][k][i])
            table.append(row)
        return markdown_table(table, digits=digits)

    def plot(self, path: str | os.PathLike | None = None, title: str | None = None) -> Any:
        """Line plot: layer depth on x, mean r on y, one line per kind, ±1 sd shaded.

        Two panels: the main statistic and the second (activation: pooled and unpooled;
        attribution: absolute and signed). Needs matplotlib (``pip install accentuate[plot]``).

        Returns:
            The matplotlib ``Figure`` (also saved as PNG when ``path`` is given).
        """
        Figure = require_matplotlib()
        n = len(self.layers)
        fig = Figure(figsize=(min(14.0, max(8.0, 0.3 * n * 2 + 2)), 5.2))
        axes = fig.subplots(1, 2, sharey=True)
        ticks = [("logits" if l == OUTPUT else l.replace("blocks.", "b")) + ("*" if l in self.marks else "")
                 for l in self.layers]
        x = list(range(n))
        for ax, stat in zip(axes, self.statistics[:2]):
            for k in self.kinds:
                colour, marker, ls = _STYLE.get(k, (None, "x", "-"))
                y = self.means[stat][k].numpy()
                s = self.sds[stat][k].numpy()
                label = f"{_LABEL.get(k, k + ' vs natural')} ({self.pairs[k]} pairs)"
                ax.plot(x, y, color=colour, marker=marker, ls=ls, lw=1.8, ms=4, label=label)
                ax.fill_between(x, y - s, y + s, color=colour, alpha=0.12, lw=0)
            ax.set_title(STATISTIC_TITLE.get(stat, stat), fontsize=10)
            ax.set_xticks(x)
            ax.set_xticklabels(ticks, rotation=60, ha="right", fontsize=8)
            ax.set_xlabel("layer (input → output)" + ("; * no skip" if self.marks else ""))
            ax.axhline(0, color="black", lw=0.6)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("r with natural images of the class")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.suptitle(title or f"Pathway similarity ({self.measure}) for {self.target}", fontsize=12)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
        if path is not None:
            save_figure(fig, path)
        return fig

    def image_strip(self, per_kind: int = 4, side: int = 112) -> Any:
        """A PIL grid with up to ``per_kind`` of the compared images of each kind (one row per kind)."""
        cells, labels = [], []
        for k in self.kinds:
            imgs = self.images.get(k, [])
            if not imgs:
                continue
            cells.append([to_pil(t, side) for t in imgs[:per_kind]])
            labels.append(f"{k}\n({len(imgs)} images)")
        return labelled_grid(cells, row_labels=labels, title=f"Images compared for {self.target}")

    def _doc(self) -> dict[str, Any]:
        """What the record and the notebook view show: rows, pairs, the statistics and their sds."""
        return {"target": self.target, "measure": self.measure, "statistics": self.statistics[:2],
                "rows": self.rows(), "pairs": self.pairs, "marks": self.marks,
                "sd": {k: {s: self.sds[s][k].tolist() for s in self.statistics[:2]} for k in self.kinds}}

    def save(self, directory: str | os.PathLike, plot: bool = True) -> list[Path]:
        """Write ``pathway.md`` (the table), ``pathway.json``, ``pathway.png`` and ``pathway_images.png``."""
        import json

        from ..outputs.io import atomic_write

        out = output_folder(directory)
        written = []
        atomic_write(out / "pathway.md", (self.to_markdown() + "\n").encode())
        doc = {**self._doc(), "config": self.config, "summary": self.summary()}
        if self.pairwise:  # every pair's r, NaN (an image with itself) as null
            doc["pairwise"] = {m: {k: _nan_to_none(v.tolist()) for k, v in d.items()} for m, d in self.pairwise.items()}
        atomic_write(out / "pathway.json", json.dumps(doc, indent=2, default=str).encode())
        written += [out / "pathway.md", out / "pathway.json"]
        if plot:
            written.append(save_figure(self.plot(), out / "pathway.png"))
        written.append(save_image(self.image_strip(), out / "pathway_images.png"))
        return written

    def _grid(self) -> Grid:
        """What this looks like in a notebook (see :mod:`accentuate.outputs.grid`): its images with their numbers."""
        from ..outputs.grid import MAX_COLS, Cell, Grid, picture
        from ..outputs.plots import pathway_columns, pathway_plots

        doc = self._doc()
        table = self.rows()
        rows = []
        for k in self.kinds:
            imgs = self.images.get(k, [])[:MAX_COLS]
            if imgs:
                rows.append((f"{k} ({len(self.images[k])})", [Cell(picture(t)) for t in imgs]))
        return Grid(f"Pathway similarity: {self.target}", [], rows, "", pathway_columns(doc), table,
                    pathway_plots(doc))


def augmented_views(
    images: ImageSet,
    n: int,
    *,
    side: int = 224,
    area: tuple[float, float] = (0.3, 1.0),
    flip: bool = True,
    generator: int = 0,
) -> list[torch.Tensor]:
    """``n`` random square crops of each image (with random horizontal flips), for small class sets.

    When only a few photos of a class are at hand, views of them stand in for
    "natural images of the class". They are *not* independent photos: views of one
    photo share its object, background and lighting, so correlations among them are
    higher than among distinct photos of the class would be.

    Args:
        images: the photos (a folder, paths, PIL images or tensors).
        n: views per photo.
        side: output size of each view (pixels).
        area: range of the crop's area as a fraction of the photo's largest square.
        flip: mirror each view with probability 1/2.
        generator: int seed.

    Returns:
        ``n * len(images)`` tensors ``(3, side, side)`` in [0, 1].
    """
    from ..images import resize

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if not 0 < area[0] <= area[1] <= 1:
        raise ValueError(f"area must satisfy 0 < min <= max <= 1; got {area}")
    g = torch.Generator().manual_seed(int(generator))
    out = []
    for img in load_image_set(images, "images")[0]:
        h, w = img.shape[-2:]
        for _ in range(n):
            a = area[0] + (area[1] - area[0]) * float(torch.rand((), generator=g))
            s = max(8, round(min(h, w) * a**0.5))
            top = int(torch.randint(0, h - s + 1, (), generator=g))
            left = int(torch.randint(0, w - s + 1, (), generator=g))
            view = resize(img[:, top : top + s, left : left + s], (side, side))
            if flip and bool(torch.rand((), generator=g) < 0.5):
                view = view.flip(-1)
            out.append(view)
    return out


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return None if isinstance(x, float) and x != x else x


def _images_of(value: Result | ImageSet, what: str) -> list[torch.Tensor]:
    if isinstance(value, Result):
        return [t for t in value.images[:, 0]]
    return load_image_set(value, what)[0]


def pathway_similarity(
    model: nn.Module,
    target: int | str | Objective,
    class_images: ImageSet,
    seeds: ImageSet | None = None,
    *,
    accentuations: Result | ImageSet | None = None,
    lam0: bool | Result | ImageSet = False,
    feature_vis: Result | ImageSet | int | None = 1,
    other_classes: ImageSet | None = None,
    extra: Mapping[str, ImageSet] | None = None,
    measure: str = "activation",
    layers: Sequence[str] | None = None,
    seed: int | None = 0,
    batch: int = 16,
    progress: bool | Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
    **accentuate_kwargs: Any,
) -> Pathway:
    """Compare how accentuations, their seeds and feature visualizations travel through the model.

    Args:
        model: the model (not modified).
        target: the class (index, name, a target string such as ``"goldfish"``, or logit
            objective) whose pathway is studied, or any other objective with natural images that show it: for a model without
            classes, ``acc.like(photo, model)`` with views of ``photo``
            (:func:`augmented_views`) as ``class_images``.
        class_images: natural images of the target class (of the feature): a folder,
            paths, PIL images or tensors in [0, 1]; at least 2 for the natural-vs-natural
            line.
        seeds: the seed images to accentuate (any class but the target, for the
            comparison to mean anything). Needed unless ``accentuations`` is a
            :class:`~accentuate.result.Result` (its seeds are used).
        accentuations: accentuations made beforehand (a ``Result`` of one target, or
            images); by default they are made here from ``seeds``.
        lam0: also compare the seeds accentuated without the regularizer (the ``lam0``
            kind): ``True`` makes them here (the same settings and seed with
            ``lam=0``), or pass ready-made ones (a ``Result`` of one target, or images, one
            per seed); ``False`` (the default) leaves the kind out.
        feature_vis: how many noise-seeded feature visualizations of the target to make
            (same settings as the accentuations, ``reg_layer="none"``, on a canvas of
            the accentuations' size), or ready-made ones (a ``Result`` or images);
            ``0``/``None`` leaves the kind out.
        other_classes: natural photos of other classes (the ``other_class`` kind, the
            floor: what "unrelated" looks like); none of them may be one of ``class_images``.
        extra: more kinds to compare, ``{name: images}``.
        measure: ``"activation"`` (channel means of the layer's output, and the whole
            output) or ``"attribution"`` (per channel, the spatial mean of ``|a| |dT/da|``
            and of ``a dT/da``, the target's circuit; see
            :mod:`accentuate.analysis.attribution`). Each is compared by Pearson and
            Spearman r, in pairs and against the class prototype (:meth:`Pathway.prototype`).
        layers: layers to compare, in depth order; default the spec's
            ``pathway_layers``, else the model's top-level units and the logits. With
            ``"attribution"`` the target's own layers and the layers it does not depend on
            (every image's attribution zero) are left out (``config["left_out"]`` says why).
        seed: the int seed of the accentuations; feature visualization ``i`` uses
            ``seed + 1 + i``.
        batch: images per forward pass when reading activations.
        progress: passed to :func:`accentuate.accentuate` (default: a bar where one can be seen).
        settings: the :class:`~accentuate.settings.Settings` every accentuation runs from
            (default: the model's), resolved once; settings among the keywords override it.
        **accentuate_kwargs: settings of the accentuations (``steps``, ``crops``,
            ``canvas``, ``lam``, ...).

    Returns:
        A :class:`Pathway` (``.rows()``, ``.to_markdown()``, ``.plot()``, ``.save()``,
        ``.prototype()``, ``.intervals()``).

    Shape:
        Images of any size; each is resized whole to the model's input size.

    Example:
        >>> import accentuate as acc                                   # doctest: +SKIP
        >>> from accentuate.analysis import pathway_similarity         # doctest: +SKIP
        >>> model = acc.load_model("efficientnet_lite0")               # doctest: +SKIP
        >>> pw = pathway_similarity(model, "espresso", "espresso/", acc.photo("chelsea"))  # doctest: +SKIP
        >>> print(pw.to_markdown())                                    # doctest: +SKIP
    """
    # One piece: it reads top to bottom as the measurement (inputs checked, each kind made, every
    # layer compared, the record); the optimization and the comparison are already helpers.
    check_measure(measure)
    seed = run_seed(seed, accentuate_kwargs, "pathway_similarity")
    spec = analysis_spec(model, accentuate_kwargs)
    runner = accentuate_kwargs["runner"] = ModelRunner.reuse(accentuate_kwargs.get("runner"), model, spec)
    objective = as_objective(target, model, spec, runner=runner)
    naturals, _ = load_image_set(class_images, "class_images")
    others = load_image_set(other_classes, "other_classes")[0] if other_classes is not None else []
    shared = [i for i, t in enumerate(others) if any(t.shape == n.shape and torch.equal(t, n) for n in naturals)]
    if shared:
        raise ValueError(f"other_classes[{shared[0]}] is one of the class images; the floor takes photos of "
                         "other classes only")
    if isinstance(feature_vis, bool) or (isinstance(feature_vis, int) and feature_vis < 0):
        raise ValueError(f"feature_vis must be a count >= 0, a Result or images; got {feature_vis!r}")

    # The accentuations and their seeds (only their images are compared: no opacity,
    # which lets each step take one backward pass).
    accentuate_kwargs.setdefault("opacity", False)
    settings = analysis_settings(model, spec, settings, accentuate_kwargs)
    config: dict[str, Any] = {"target": repr(objective), "generator": seed,
                              "accentuate": settings.to_dict()}
    if accentuations is None or lam0 is True:
        if seeds is None and not isinstance(accentuations, Result):
            raise ValueError("give seeds to accentuate, or ready-made accentuations=")
    if accentuations is None:
        assert seeds is not None
        res = accentuate(model, seeds, objective, settings, seed=seed, progress=progress,
                         **accentuate_kwargs)
        acc_images = [t for t in res.images[:, 0]]
        seed_images = [t for t in res.seeds] if res.seeds is not None else []
        config["accentuation"] = res.config.to_dict()
    else:
        if isinstance(accentuations, Result) and accentuations.images.shape[1] != 1:
            raise ValueError(
                f"accentuations has {accentuations.images.shape[1]} targets; pass a Result of one target"
            )
        acc_images = _images_of(accentuations, "accentuations")
        if seeds is not None:
            seed_images = load_image_set(seeds, "seeds")[0]
        elif isinstance(accentuations, Result) and accentuations.seeds is not None:
            seed_images = [t for t in accentuations.seeds]
        else:
            seed_images = []
    kinds: dict[str, list[torch.Tensor]] = {"accentuation": acc_images}
    if seed_images:
        kinds["seed"] = seed_images
    if lam0 is True and seeds is None and isinstance(accentuations, Result):
        seeds = accentuations.seeds
    kinds.update(_optimized(model, objective, settings, seeds, lam0, feature_vis, tuple(acc_images[0].shape[-2:]),
                            seed, progress, accentuate_kwargs, config))
    if others:
        kinds["other_class"] = others
    for name, imgs in (extra or {}).items():
        if name in KINDS:
            raise ValueError(f"extra kind {name!r} clashes with a built-in kind; choose another name")
        kinds[name] = load_image_set(imgs, name)[0]
    kinds["natural"] = naturals

    layer_list = list(layers) if layers is not None else list(spec.pathway_layers)
    if not layer_list:
        layer_list = units(model, spec, runner) + [OUTPUT]
    check_layers(model, layer_list)

    # What every layer makes of every image (model input size, whole image). Built-in kinds,
    # then the extra ones, then the natural images (the reference) last.
    order = [k for k in KINDS[:-1] if k in kinds] + [k for k in kinds if k not in KINDS] + ["natural"]
    views = {k: model_view(kinds[k], spec.input_size) for k in order}
    lays = layouts_of(model, spec, layer_list, runner)
    left_out: dict[str, str] = {}
    raw: dict[str, dict[str, torch.Tensor]] = {}
    if measure == "activation":
        raw = {k: layer_activations(model, views[k], layer_list, spec, batch, runner) for k in order}
        vectors = {"pooled": {k: [lays[l].pool(raw[k][l]) for l in layer_list] for k in order}}
    else:
        attr = {k: channel_attributions(model, views[k], objective, layer_list, spec, batch, runner) for k in order}
        for l in layer_list:
            if l in objective.layers:
                left_out["logits" if l == OUTPUT else l] = "the target's own layer (its attribution is the target)"
            elif all(not attr[k][l]["absolute"].any() for k in order):
                left_out["logits" if l == OUTPUT else l] = "the target does not depend on it"
        layer_list = [l for l in layer_list if ("logits" if l == OUTPUT else l) not in left_out]
        if not layer_list:
            raise ValueError(f"no layer upstream of the target {objective!r} to compare; left out: "
                             + "; ".join(f"{l}: {why}" for l, why in left_out.items()))
        vectors = {f: {k: [attr[k][l][f] for l in layer_list] for k in order} for f in forms_of(measure)}

    n_nat = len(naturals)
    means, sds, pairs, pairwise = _correlations(vectors, raw, lays, layer_list, order, statistics_of(measure))
    if n_nat < 2:
        import warnings

        warnings.warn("only one natural image of the class: the natural-vs-natural line is empty; "
                      "give at least 2 class_images", stacklevel=2)
    config["measure"] = measure
    config["layers"] = ["logits" if l == OUTPUT else l for l in layer_list]
    if left_out:
        config["left_out"] = left_out
    config["counts"] = {k: len(kinds[k]) for k in order}
    return Pathway(
        target=repr(objective), layers=layer_list, kinds=order, means=means, sds=sds, pairs=pairs,
        images={k: kinds[k] for k in order}, config=config, pairwise=pairwise, measure=measure,
        vectors=vectors, marks=no_residual_layers(model, layer_list),
    )


def _optimized(
    model: nn.Module,
    objective: Objective,
    settings: Settings,
    seeds: Any,
    lam0: bool | Result | ImageSet,
    feature_vis: Result | ImageSet | int | None,
    canvas: tuple[int, ...],
    seed: int,
    progress: bool | Callable[[int, int], None] | None,
    accentuate_kwargs: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, list[torch.Tensor]]:
    """The ``lam0`` and ``feature_vis`` kinds of :func:`pathway_similarity`: made here (the
    accentuations' settings at ``lam = 0``; noise-seeded, without a regularizer, on the
    accentuations' ``canvas``) or as given. Records their settings in ``config``."""
    kinds: dict[str, list[torch.Tensor]] = {}
    if lam0 is True:  # the same run without the regularizer, from the same seeds
        r0 = accentuate(model, seeds, objective, settings.replace(lam=0.0), seed=seed, progress=progress,
                        **accentuate_kwargs)
        kinds["lam0"] = [t for t in r0.images[:, 0]]
        config["lam0"] = r0.config.to_dict()
    elif lam0 is not False:
        if isinstance(lam0, Result) and lam0.images.shape[1] != 1:
            raise ValueError(f"lam0 has {lam0.images.shape[1]} targets; pass a Result of one target")
        kinds["lam0"] = _images_of(lam0, "lam0")
    # Feature visualizations: the same optimization without a seed or a regularizer.
    if isinstance(feature_vis, int):
        if feature_vis > 0:
            fv_settings = settings.replace(reg_layer="none", canvas=canvas, until=None)
            fvs = []
            for i in range(feature_vis):
                r = accentuate(model, None, objective, fv_settings, seed=seed + 1 + i, progress=progress,
                               **accentuate_kwargs)
                fvs.append(r.images[0, 0])
            kinds["feature_vis"] = fvs
    elif feature_vis is not None:
        kinds["feature_vis"] = _images_of(feature_vis, "feature_vis")
    return kinds


def _correlations(
    vectors: Mapping[str, Mapping[str, Sequence[torch.Tensor]]],
    raw: Mapping[str, Mapping[str, torch.Tensor]],
    lays: Mapping[str, Any],
    layer_list: Sequence[str],
    order: Sequence[str],
    statistics: Sequence[str],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]], dict[str, int],
           dict[str, dict[str, torch.Tensor]]]:
    """Every kind's correlation with the natural images, at each layer, for each statistic.

    Args:
        vectors: ``{form: {kind: [(n, C) per layer]}}``.
        raw: ``{kind: {layer: (n, ...)}}`` the layers' whole outputs (for ``unpooled``; may be empty).

    Returns:
        ``(means, sds, pairs, pairwise)``: ``means[statistic][kind]`` and ``sds[...]`` ``(L,)``
        over the kind's pairs (NaN pairs left out), ``pairs[kind]`` how many, and
        ``pairwise[statistic][kind]`` ``(L, n, n_natural)`` every pair's r; for ``natural``
        the naturals among themselves with a NaN diagonal, so that each pair of distinct
        natural images counts once in the mean and no image is paired with itself.
    """
    pairwise: dict[str, dict[str, torch.Tensor]] = {}
    for s in statistics:
        form, corr = split_statistic(s)
        per: dict[str, list[torch.Tensor]] = {k: [] for k in order}
        for i, layer in enumerate(layer_list):
            nat = raw["natural"][layer] if form == "unpooled" else vectors[form]["natural"][i]
            for k in order:
                mine = raw[k][layer] if form == "unpooled" else vectors[form][k][i]
                r = correlation_matrix(mine, nat, corr)
                if k == "natural":  # never an image with itself
                    r.fill_diagonal_(math.nan)
                per[k].append(r)
        pairwise[s] = {k: torch.stack(v) for k, v in per.items()}
    means: dict[str, dict[str, torch.Tensor]] = {s: {} for s in statistics}
    sds: dict[str, dict[str, torch.Tensor]] = {s: {} for s in statistics}
    pairs: dict[str, int] = {}
    for s in statistics:
        for k, r in pairwise[s].items():
            flat = r.flatten(1)
            if k == "natural":  # each pair of distinct natural images once
                iu = torch.triu_indices(r.shape[1], r.shape[2], offset=1)
                flat = r[:, iu[0], iu[1]]
            mean, sd = [], []
            for vals in flat:
                vals = vals[~torch.isnan(vals)]
                mean.append(float(vals.mean()) if vals.numel() else math.nan)
                sd.append(float(vals.std(unbiased=False)) if vals.numel() else math.nan)
                pairs[k] = int(vals.numel())
            means[s][k], sds[s][k] = torch.tensor(mean), torch.tensor(sd)
    return means, sds, pairs, pairwise

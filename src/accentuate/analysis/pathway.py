"""Pathway similarity: do accentuations travel through the model like natural images?

For one target class, :func:`pathway_similarity` shows sets of images to the model
and compares their layer activations with those of natural images of the class,
layer by layer:

- ``accentuation``: the seeds accentuated toward the target;
- ``lam0`` (on request): the same accentuations without the regularizer (``lam = 0``);
- ``seed``: the seeds themselves (where the accentuations started);
- ``feature_vis``: noise-seeded feature visualizations of the target (same
  optimization, no seed, no regularizer);
- ``natural``: the natural images of the class among themselves (each pair once,
  never an image with itself).

Measure: at each layer, the Pearson correlation between the activations of an
image of the kind and of a natural image of the class, averaged over all such
pairs. Two versions are reported:

- *pooled* (the main number): each image is the vector of its channels' spatial
  means, ``(C,)``; this asks "are the same channels active?", regardless of where;
- *unpooled*: the whole activation tensor ``(C, H, W)`` flattened; this also asks
  "at the same positions?", which penalizes any difference in layout, so it is
  low for images of the same class whose objects sit in different places.

Every image is shown to the model whole, resized to its input size, as the engine
evaluates an accentuation. Logits (the :data:`~accentuate.hooks.OUTPUT` layer)
have no space, so both versions agree there.

The paper's claim is that accentuations correlate with natural images of the
class about as well as those correlate among themselves, and much better than
feature visualizations do; the ``seed`` line shows how much of that the
accentuation owes to its seed being a natural image in the first place, and the
``lam0`` line how much it owes to the regularizer.

Every correlation of every pair is kept (:attr:`Pathway.pairwise`), so that
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
from .setup import analysis_settings, analysis_spec, run_seed
from .stats import Interval, bootstrap, pair_means, pearson
from .writing import markdown_table, require_matplotlib, save_figure

if TYPE_CHECKING:
    from ..outputs.grid import Grid

__all__ = ["KINDS", "SEED_KINDS", "Pathway", "augmented_views", "pathway_similarity"]

#: The image kinds :func:`pathway_similarity` builds, in plotting order.
KINDS = ("accentuation", "lam0", "seed", "feature_vis", "natural")

#: The kinds whose images are one per seed, in the seeds' order (resampled together).
SEED_KINDS = ("accentuation", "lam0", "seed")

_STYLE = {  # colour, marker, line style
    "accentuation": ("#d62728", "o", "-"),
    "lam0": ("#ff7f0e", "v", "-."),
    "seed": ("#7f7f7f", "s", "--"),
    "feature_vis": ("#1f77b4", "^", "-"),
    "natural": ("#2ca02c", "D", ":"),
}
_LABEL = {
    "accentuation": "accentuation vs natural",
    "lam0": "accentuation at lam 0 vs natural",
    "seed": "seed vs natural",
    "feature_vis": "feature visualization vs natural",
    "natural": "natural vs natural",
}


@dataclass
class Pathway(Display):
    """Per-layer correlations of each image kind with the natural images of a class.

    Attributes:
        target: the target, as text.
        layers: the layers compared, in depth order.
        kinds: the image kinds compared (see :data:`KINDS`; plus any ``extra``).
        pooled, unpooled: ``{kind: (L,)}`` mean Pearson r over the kind's pairs.
        pooled_sd, unpooled_sd: ``{kind: (L,)}`` standard deviation over those pairs.
        pairs: ``{kind: number of (image, natural image) pairs averaged}``.
        images: ``{kind: (n, 3, H, W)}`` the images compared (as given, before resizing).
        config: how the images were made.
        pairwise: ``{"pooled" | "unpooled": {kind: (L, n, n_natural)}}`` the correlation of
            each image of the kind with each natural image, per layer; for ``natural`` the
            ``(L, n_natural, n_natural)`` matrix of the naturals among themselves, NaN on
            its diagonal (an image is never paired with itself).
    """

    target: str
    layers: list[str]
    kinds: list[str]
    pooled: dict[str, torch.Tensor]
    unpooled: dict[str, torch.Tensor]
    pooled_sd: dict[str, torch.Tensor]
    unpooled_sd: dict[str, torch.Tensor]
    pairs: dict[str, int]
    images: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    pairwise: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

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
        return {self.unit(k): int(self.pairwise["pooled"][k].shape[1]) for k in self.kinds}

    def pair_statistic(self, kind: str, draws: Mapping[str, torch.Tensor], measure: str = "pooled") -> torch.Tensor:
        """The mean r of ``kind`` with the natural images, per replicate of :func:`bootstrap`.

        Args:
            kind: one of :attr:`kinds`.
            draws: ``{unit: (R, n) indices}`` for the units of :meth:`unit_sizes`.
            measure: ``"pooled"`` or ``"unpooled"``.

        Returns:
            ``(R, L)``.
        """
        r = self.pairwise[measure][kind]
        nat = draws["natural"]
        rows = nat if kind == "natural" else draws[self.unit(kind)]
        return pair_means(r, rows, nat)

    def intervals(self, replicates: int = 2000, level: float = 0.95, generator: int = 0,
                  measure: str = "pooled") -> dict[str, Interval]:
        """Bootstrap intervals of each kind's mean r, per layer, resampling images, not pairs.

        One joint bootstrap: each replicate redraws the seeds (the accentuations, ``lam0``
        accentuations and seeds of one seed go together), the feature visualizations and
        the natural images, each with replacement. Natural-vs-natural pairs are the drawn
        naturals' distinct pairs (a photo drawn twice is not paired with itself).

        Returns:
            ``{kind: Interval}`` with ``(L,)`` ends; ``estimate`` equals :attr:`pooled`
            (or :attr:`unpooled`).
        """
        if not self.pairwise:
            raise ValueError("this Pathway keeps no pairwise correlations; recompute it with pathway_similarity")

        def stat(draws: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.stack([self.pair_statistic(k, draws, measure) for k in self.kinds], dim=1)

        ci = bootstrap(stat, self.unit_sizes(), replicates, level, generator)
        return {k: ci[i] for i, k in enumerate(self.kinds)}

    def intervals_markdown(self, intervals: Mapping[str, Interval], digits: int = 2) -> str:
        """The :meth:`intervals` as a table: one row per layer, ``mean [lower, upper]`` per kind."""
        rows = []
        for i, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": "logits" if layer == OUTPUT else layer}
            for k, ci in intervals.items():
                row[k] = (f"{float(ci.estimate[i]):.{digits}f} [{float(ci.lower[i]):.{digits}f}, "
                          f"{float(ci.upper[i]):.{digits}f}]")
            rows.append(row)
        return markdown_table(rows)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer: ``layer``, ``depth`` and ``{kind}`` (pooled), ``{kind}_unpooled``."""
        out = []
        for i, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": "logits" if layer == OUTPUT else layer, "depth": i}
            for k in self.kinds:
                row[k] = float(self.pooled[k][i])
                row[f"{k}_unpooled"] = float(self.unpooled[k][i])
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        """Means over layers per kind, and at how many layers the accentuation beats the others.

        Returns:
            ``{"mean_pooled": {kind: r}, "mean_unpooled": {...}, "layers": L,
            "accentuation_above": {kind: number of layers where the accentuation's
            pooled r is higher}}``.
        """
        mean_p = {k: float(torch.nanmean(self.pooled[k])) for k in self.kinds}
        mean_u = {k: float(torch.nanmean(self.unpooled[k])) for k in self.kinds}
        above: dict[str, int] = {}
        if "accentuation" in self.kinds:
            a = self.pooled["accentuation"]
            above = {k: int((a > self.pooled[k]).sum()) for k in self.kinds if k != "accentuation"}
        return {"mean_pooled": mean_p, "mean_unpooled": mean_u, "layers": len(self.layers),
                "accentuation_above": above}

    def to_markdown(self, digits: int = 2) -> str:
        """The table: one row per layer, pooled r of each kind, unpooled r in a second column.

        Headers give the number of (image, natural image) pairs averaged per kind.
        """
        head = {k: f"{k} ({self.pairs[k]} pairs)" for k in self.kinds}
        table = []
        for r in self.rows():
            row: dict[str, Any] = {"layer": r["layer"]}
            for k in self.kinds:
                row[head[k]] = r[k]
                row[f"{k} unpooled"] = r[f"{k}_unpooled"]
            table.append(row)
        return markdown_table(table, digits=digits)

    def plot(self, path: str | os.PathLike | None = None, title: str | None = None) -> Any:
        """Line plot: layer depth on x, mean Pearson r on y, one line per kind, ±1 sd shaded.

        Two panels: pooled (the main measure) and unpooled. Needs matplotlib
        (``pip install accentuate[plot]``).

        Returns:
            The matplotlib ``Figure`` (also saved as PNG when ``path`` is given).
        """
        Figure = require_matplotlib()
        n = len(self.layers)
        fig = Figure(figsize=(min(14.0, max(8.0, 0.3 * n * 2 + 2)), 5.2))
        axes = fig.subplots(1, 2, sharey=True)
        ticks = ["logits" if l == OUTPUT else l.replace("blocks.", "b") for l in self.layers]
        x = list(range(n))
        for ax, data, sd, name in ((axes[0], self.pooled, self.pooled_sd, "pooled (channel means)"),
                                   (axes[1], self.unpooled, self.unpooled_sd, "unpooled (C x H x W)")):
            for k in self.kinds:
                colour, marker, ls = _STYLE.get(k, (None, "x", "-"))
                y = data[k].numpy()
                s = sd[k].numpy()
                label = f"{_LABEL.get(k, k + ' vs natural')} ({self.pairs[k]} pairs)"
                ax.plot(x, y, color=colour, marker=marker, ls=ls, lw=1.8, ms=4, label=label)
                ax.fill_between(x, y - s, y + s, color=colour, alpha=0.12, lw=0)
            ax.set_title(name)
            ax.set_xticks(x)
            ax.set_xticklabels(ticks, rotation=60, ha="right", fontsize=8)
            ax.set_xlabel("layer (input → output)")
            ax.axhline(0, color="black", lw=0.6)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("Pearson r with natural images of the class")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.suptitle(title or f"Pathway similarity for {self.target}", fontsize=12)
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

    def save(self, directory: str | os.PathLike, plot: bool = True) -> list[Path]:
        """Write ``pathway.md`` (the table), ``pathway.json``, ``pathway.png`` and ``pathway_images.png``."""
        import json

        from ..outputs.io import atomic_write

        out = output_folder(directory)
        written = []
        atomic_write(out / "pathway.md", (self.to_markdown() + "\n").encode())
        doc = {"target": self.target, "config": self.config, "pairs": self.pairs,
               "summary": self.summary(), "rows": self.rows(),
               "sd": {k: {"pooled": self.pooled_sd[k].tolist(), "unpooled": self.unpooled_sd[k].tolist()}
                      for k in self.kinds}}
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

        doc = {"target": self.target, "rows": self.rows(), "pairs": self.pairs,
               "sd": {k: {"pooled": self.pooled_sd[k].tolist(), "unpooled": self.unpooled_sd[k].tolist()} for k in self.kinds}}
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
    extra: Mapping[str, ImageSet] | None = None,
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
        extra: more kinds to compare, ``{name: images}`` (for example other classes).
        layers: layers to compare, in depth order; default the spec's
            ``pathway_layers``, else the model's top-level units and the logits.
        seed: the int seed of the accentuations; feature visualization ``i`` uses
            ``seed + 1 + i``.
        batch: images per forward pass when reading activations.
        progress: passed to :func:`accentuate.accentuate` (default: a bar where one can be seen).
        settings: the :class:`~accentuate.settings.Settings` every accentuation runs from
            (default: the model's), resolved once; settings among the keywords override it.
        **accentuate_kwargs: settings of the accentuations (``steps``, ``crops``,
            ``canvas``, ``lam``, ...).

    Returns:
        A :class:`Pathway` (``.rows()``, ``.to_markdown()``, ``.plot()``, ``.save()``).

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
    seed = run_seed(seed, accentuate_kwargs, "pathway_similarity")
    spec = analysis_spec(model, accentuate_kwargs)
    runner = accentuate_kwargs["runner"] = ModelRunner.reuse(accentuate_kwargs.get("runner"), model, spec)
    objective = as_objective(target, model, spec, runner=runner)
    naturals, _ = load_image_set(class_images, "class_images")
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
    for name, imgs in (extra or {}).items():
        if name in KINDS:
            raise ValueError(f"extra kind {name!r} clashes with a built-in kind; choose another name")
        kinds[name] = load_image_set(imgs, name)[0]
    kinds["natural"] = naturals

    layer_list = list(layers) if layers is not None else list(spec.pathway_layers)
    if not layer_list:
        layer_list = units(model, spec, runner) + [OUTPUT]
    check_layers(model, layer_list)

    # Activations of every image at every layer (model input size, whole image).
    # Built-in kinds, then the extra ones, then the natural images (the reference) last.
    order = [k for k in KINDS[:-1] if k in kinds] + [k for k in kinds if k not in KINDS] + ["natural"]
    views = {k: model_view(kinds[k], spec.input_size) for k in order}
    acts = {k: layer_activations(model, views[k], layer_list, spec, batch, runner) for k in order}
    lays = layouts_of(model, spec, layer_list, runner)

    n_nat = len(naturals)
    means, sds, pairs, pairwise = _correlations(acts, lays, layer_list, order)
    if n_nat < 2:
        import warnings

        warnings.warn("only one natural image of the class: the natural-vs-natural line is empty; "
                      "give at least 2 class_images", stacklevel=2)
    config["layers"] = ["logits" if l == OUTPUT else l for l in layer_list]
    config["counts"] = {k: len(kinds[k]) for k in order}
    return Pathway(
        target=repr(objective), layers=layer_list, kinds=order,
        pooled=means["pooled"], unpooled=means["unpooled"], pooled_sd=sds["pooled"], unpooled_sd=sds["unpooled"],
        pairs=pairs, images={k: kinds[k] for k in order}, config=config, pairwise=pairwise,
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
    acts: Mapping[str, Mapping[str, torch.Tensor]],
    lays: Mapping[str, Any],
    layer_list: Sequence[str],
    order: Sequence[str],
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]], dict[str, int],
           dict[str, dict[str, torch.Tensor]]]:
    """Every kind's Pearson r with the natural images (``acts["natural"]``), at each layer.

    Returns:
        ``(means, sds, pairs, pairwise)``: ``means[measure][kind]`` and ``sds[...]`` ``(L,)``
        over the kind's pairs (NaN pairs left out), ``pairs[kind]`` how many, and
        ``pairwise[measure][kind]`` ``(L, n, n_natural)`` every pair's r; for ``natural``
        the naturals among themselves with a NaN diagonal, so that each pair of distinct
        natural images counts once in the mean and no image is paired with itself.
    """
    measures = ("pooled", "unpooled")
    per: dict[str, dict[str, list[torch.Tensor]]] = {m: {k: [] for k in order} for m in measures}
    for layer in layer_list:
        nat = acts["natural"][layer]
        fns = {"pooled": lays[layer].pool, "unpooled": lambda t: t}
        for k in order:
            for m in measures:
                corr = pearson(fns[m](acts[k][layer]), fns[m](nat))
                if k == "natural":  # never an image with itself
                    corr.fill_diagonal_(math.nan)
                per[m][k].append(corr)
    pairwise = {m: {k: torch.stack(v) for k, v in d.items()} for m, d in per.items()}
    means: dict[str, dict[str, torch.Tensor]] = {m: {} for m in measures}
    sds: dict[str, dict[str, torch.Tensor]] = {m: {} for m in measures}
    pairs: dict[str, int] = {}
    for m in measures:
        for k, r in pairwise[m].items():
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
            means[m][k], sds[m][k] = torch.tensor(mean), torch.tensor(sd)
    return means, sds, pairs, pairwise

"""The pathway claim over several classes of natural photos, with bootstrap intervals.

:func:`pathway_study` runs :func:`~accentuate.analysis.pathway.pathway_similarity` for
several target classes at once, from one set of seed photos of *other* classes:

- (a) ``accentuation``: every seed accentuated toward every class at the given settings
  (one batched engine run of seeds x classes);
- (b) ``lam0``: the same without the regularizer (``lam = 0``, same seed);
- (c) ``feature_vis``: noise-seeded feature visualizations of each class (same steps,
  crops and canvas, no seed, no regularizer; ``feature_vis`` runs of all the classes,
  seed ``seed + 1 + i``), as ``pathway_similarity`` makes them;
- (d) ``seed``: the seeds themselves;
- ``natural``: the natural photos of each class among themselves (distinct photos, each
  pair once).

Every image of (a)-(d) is compared with every natural photo of its class. The study's
intervals (:meth:`PathwayStudy.intervals`) come from one joint percentile bootstrap that
resamples the seed photos (shared by all classes and by (a), (b), (d)), the feature
visualizations and the natural photos of each class, never the pairs; the classes are
fixed (the intervals are conditional on the classes studied). It also gives intervals of
the differences the claim is about: (a) - (d), (a) - (b), (a) - (c) and natural - (a).

With ``work=FOLDER`` each engine run is saved (:meth:`Result.save
<accentuate.result.Result.save>`) under ``FOLDER/<run>/`` with a ``key.json`` of what made
it; a later call with the same model, settings, targets, seeds and seed reads it back
instead of optimizing again, so that the analysis can be redone (other layers, more
replicates) without the hour of optimization.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import accentuate
from ..hooks import OUTPUT
from ..images import ImageSet, load_image_set
from ..objectives import Objective, as_objective
from ..objectives.base import tensor_digest
from ..outputs.figures import labelled_grid, save_image, to_pil
from ..outputs.io import atomic_write, output_folder
from ..result import Result
from ..runs.cache import cached_run
from ..settings import Settings
from .pathway import _LABEL, _STYLE, KINDS, Pathway, pathway_similarity
from .setup import analysis_settings, analysis_spec, run_seed
from .stats import Interval, bootstrap
from .writing import markdown_table, require_matplotlib, save_figure

__all__ = ["COMPARISONS", "PathwayStudy", "pathway_study"]

#: The differences the claim is about, ``(minuend, subtrahend)``: the accentuation against
#: its seed, against no regularizer, against feature visualization; natural against it.
COMPARISONS = (("accentuation", "seed"), ("accentuation", "lam0"), ("accentuation", "feature_vis"),
               ("natural", "accentuation"))

#: The scope of the intervals averaged over the classes.
MEAN = "mean"


def _diff_name(a: str, b: str) -> str:
    return f"{a} - {b}"


@dataclass
class PathwayStudy:
    """Pathway similarity of several classes from one set of seeds (see :func:`pathway_study`).

    Attributes:
        classes: the class names, in order.
        pathways: ``{class: Pathway}``, each with every pair's r (:attr:`Pathway.pairwise`).
        runs: ``{run: Result}`` the engine runs: ``accentuation`` ``(N, C)``, ``lam0``
            ``(N, C)``, ``feature_vis_i`` ``(1, C)``.
        seed_names: a name per seed.
        natural_names: ``{class: [photo name]}`` the natural photos of each class.
        config: how it was made (settings, the seed as ``generator``, run times, which runs were read back).
    """

    classes: list[str]
    pathways: dict[str, Pathway]
    runs: dict[str, Result] = field(default_factory=dict)
    seed_names: list[str] = field(default_factory=list)
    natural_names: dict[str, list[str]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        """The layers compared, in depth order (the same for every class)."""
        return self.pathways[self.classes[0]].layers

    @property
    def kinds(self) -> list[str]:
        """The image kinds compared (in :data:`~accentuate.analysis.pathway.KINDS` order)."""
        return self.pathways[self.classes[0]].kinds

    @property
    def comparisons(self) -> list[tuple[str, str]]:
        """The :data:`COMPARISONS` whose two kinds were both compared."""
        return [(a, b) for a, b in COMPARISONS if a in self.kinds and b in self.kinds]

    def _shared_seeds(self) -> bool:
        """Whether every class compared the same seed images (then one seed draw serves all)."""
        first = self.pathways[self.classes[0]]
        if "seed" not in first.kinds or first.unit("seed") != "seed":
            return False
        ref = first.images["seed"]
        return all(len(p.images.get("seed", [])) == len(ref) and p.unit("seed") == "seed"
                   and all(torch.equal(x, y) for x, y in zip(p.images["seed"], ref))
                   for p in self.pathways.values())

    def _key(self, cls: str, unit: str, shared: bool) -> str:
        return unit if (unit == "seed" and shared) else f"{cls}/{unit}"

    def unit_sizes(self) -> dict[str, int]:
        """``{unit: items}`` resampled by :meth:`intervals`: ``seed`` (shared by the classes
        when they had the same seeds), and per class ``CLASS/natural``, ``CLASS/feature_vis``."""
        shared = self._shared_seeds()
        return {self._key(c, u, shared): n for c in self.classes for u, n in self.pathways[c].unit_sizes().items()}

    def intervals(self, replicates: int = 2000, level: float = 0.95, generator: int = 0,
                  measure: str = "pooled") -> dict[str, dict[str, Interval]]:
        """Bootstrap intervals, per layer, of each kind's mean r and of the :attr:`comparisons`.

        Args:
            replicates: bootstrap replicates (one joint draw of every unit per replicate).
            level: coverage of the intervals.
            generator: int seed of the draws.
            measure: ``"pooled"`` (channel means; the main number) or ``"unpooled"``.

        Returns:
            ``{scope: {name: Interval}}`` with scope a class or ``"mean"`` (the mean over the
            classes, each class weighing the same), name a kind or ``"a - b"``; each interval
            has ``(L,)`` ends. A replicate in which a class has no natural pair (all its drawn
            photos the same one) is left out of that scope's percentiles.
        """
        shared = self._shared_seeds()
        kinds, comps = self.kinds, self.comparisons
        idx = {k: i for i, k in enumerate(kinds)}

        def stat(draws: dict[str, torch.Tensor]) -> torch.Tensor:
            per_class = []
            for c in self.classes:
                pw = self.pathways[c]
                view = {u: draws[self._key(c, u, shared)] for u in pw.unit_sizes()}
                per_class.append(torch.stack([pw.pair_statistic(k, view, measure) for k in kinds], dim=1))
            values = torch.stack(per_class, dim=1)  # (R, C, K, L)
            values = torch.cat([values, values.mean(dim=1, keepdim=True)], dim=1)  # + the mean over classes
            diffs = [values[:, :, idx[a]] - values[:, :, idx[b]] for a, b in comps]
            return torch.cat([values, torch.stack(diffs, dim=2)], dim=2) if diffs else values

        ci = bootstrap(stat, self.unit_sizes(), replicates, level, generator)
        names = list(kinds) + [_diff_name(a, b) for a, b in comps]
        return {scope: {name: ci[s, q] for q, name in enumerate(names)}
                for s, scope in enumerate([*self.classes, MEAN])}

    def verdict(self, intervals: Mapping[str, Mapping[str, Interval]], scope: str = MEAN) -> dict[str, dict[str, Any]]:
        """For each comparison, at which layers its interval lies above 0, below 0, or holds 0.

        Returns:
            ``{"a - b": {"above": [layer], "below": [layer], "unclear": [layer],
            "mean": mean difference over layers}}``.
        """
        out: dict[str, dict[str, Any]] = {}
        names = [_layer_name(l) for l in self.layers]
        for a, b in self.comparisons:
            ci = intervals[scope][_diff_name(a, b)]
            above = [n for n, lo in zip(names, ci.lower.tolist()) if lo > 0]
            below = [n for n, hi in zip(names, ci.upper.tolist()) if hi < 0]
            unclear = [n for n in names if n not in above and n not in below]
            out[_diff_name(a, b)] = {"above": above, "below": below, "unclear": unclear,
                                     "mean": float(torch.nanmean(ci.estimate))}
        return out

    def rows(self, intervals: Mapping[str, Mapping[str, Interval]]) -> list[dict[str, Any]]:
        """Long rows (for CSV): ``scope, layer, depth, quantity, estimate, lower, upper, pairs``."""
        out = []
        for scope, by_name in intervals.items():
            for name, ci in by_name.items():
                for i, layer in enumerate(self.layers):
                    pairs = None
                    if name in self.kinds:
                        pairs = (sum(p.pairs[name] for p in self.pathways.values()) if scope == MEAN
                                 else self.pathways[scope].pairs[name])
                    out.append({"scope": scope, "layer": _layer_name(layer), "depth": i, "quantity": name,
                                "estimate": float(ci.estimate[i]), "lower": float(ci.lower[i]),
                                "upper": float(ci.upper[i]), "pairs": pairs})
        return out

    def to_csv(self, intervals: Mapping[str, Mapping[str, Interval]]) -> str:
        """:meth:`rows` as CSV text."""
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["scope", "layer", "depth", "quantity", "estimate", "lower", "upper",
                                            "pairs"], lineterminator="\n")
        w.writeheader()
        for r in self.rows(intervals):
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def to_markdown(self, intervals: Mapping[str, Mapping[str, Interval]], scope: str = MEAN,
                    differences: bool = False, digits: int = 2) -> str:
        """One row per layer: ``mean [lower, upper]`` of each kind (or of each comparison)."""
        names = ([_diff_name(a, b) for a, b in self.comparisons] if differences else list(self.kinds))
        by_name = intervals[scope]
        rows = []
        for i, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": _layer_name(layer)}
            for n in names:
                ci = by_name[n]
                row[n] = (f"{float(ci.estimate[i]):.{digits}f} [{float(ci.lower[i]):.{digits}f}, "
                          f"{float(ci.upper[i]):.{digits}f}]")
            rows.append(row)
        return markdown_table(rows)

    def plot(self, intervals: Mapping[str, Mapping[str, Interval]], path: str | os.PathLike | None = None,
             title: str | None = None) -> Any:
        """Per-layer lines with their interval bands: one panel per class and one for the mean.

        Needs matplotlib (``pip install accentuate[plot]``). Returns the ``Figure``.
        """
        Figure = require_matplotlib()
        scopes = [MEAN, *self.classes]
        cols = 3 if len(scopes) > 4 else len(scopes)
        nrows = math.ceil(len(scopes) / cols)
        fig = Figure(figsize=(4.6 * cols, 3.5 * nrows + 0.8))
        axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).flatten()
        ticks = [_layer_name(l).replace("blocks.", "b").replace("encoder.layer.", "L") for l in self.layers]
        x = list(range(len(self.layers)))
        for ax, scope in zip(axes, scopes):
            for k in self.kinds:
                colour, marker, ls = _STYLE.get(k, (None, "x", "-"))
                ci = intervals[scope][k]
                ax.plot(x, ci.estimate.numpy(), color=colour, marker=marker, ls=ls, lw=1.6, ms=3,
                        label=_LABEL.get(k, k))
                ax.fill_between(x, ci.lower.numpy(), ci.upper.numpy(), color=colour, alpha=0.15, lw=0)
            n_nat = len(self.natural_names.get(scope, [])) if scope != MEAN else None
            ax.set_title(f"mean over {len(self.classes)} classes" if scope == MEAN
                         else f"{scope} ({n_nat} photos)", fontsize=10)
            ax.set_xticks(x)
            ax.set_xticklabels(ticks, rotation=70, fontsize=6)
            ax.axhline(0, color="black", lw=0.5)
            ax.grid(alpha=0.3)
        for ax in axes[len(scopes):]:
            ax.set_visible(False)
        for r in range(nrows):
            axes[r * cols].set_ylabel("Pearson r with natural photos")
        level = next(iter(intervals[MEAN].values())).level
        fig.suptitle(title or f"Pathway similarity (pooled), {round(100 * level)}% bootstrap intervals", fontsize=11)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        if path is not None:
            save_figure(fig, path)
        return fig

    def contact_sheet(self, side: int = 96) -> Any:
        """A PIL grid: the seeds on top, then per class one natural photo, its accentuations
        (a), its ``lam0`` accentuations (b) and its feature visualizations (c)."""
        first = self.pathways[self.classes[0]]
        n_seed = len(first.images.get("accentuation", []))
        groups = [k for k in ("accentuation", "lam0", "feature_vis") if k in first.kinds]
        short = {"accentuation": "(a)", "lam0": "(b) lam 0", "feature_vis": "(c) FV"}
        heads = ["natural"]
        for k in groups:
            count = n_seed if k != "feature_vis" else len(first.images[k])
            heads += [f"{short[k]}\n{self.seed_names[i] if k != 'feature_vis' and i < len(self.seed_names) else i}"
                      for i in range(count)]
        seed_row: list[Any] = [None]
        for k in groups:
            count = n_seed if k != "feature_vis" else len(first.images[k])
            seed_row += ([to_pil(t, side) for t in first.images.get("seed", [])][:count] if k != "feature_vis"
                         else [None] * count)
        cells, labels = [seed_row], ["seeds (d)"]
        for c in self.classes:
            pw = self.pathways[c]
            row = [to_pil(pw.images["natural"][0], side)]
            for k in groups:
                row += [to_pil(t, side) for t in pw.images[k]]
            cells.append(row)
            labels.append(c)
        return labelled_grid(cells, col_labels=heads, row_labels=labels, font_size=11,
                             title="Seeds, and per class: a natural photo, (a) accentuations, (b) at lam 0, (c) "
                                   "feature visualizations")

    def save(self, directory: str | os.PathLike, intervals: Mapping[str, Mapping[str, Interval]],
             plot: bool = True, stem: str = "pathway_pool") -> list[Path]:
        """Write ``STEM.md`` (tables, mean over classes), ``STEM.csv`` (every scope),
        ``STEM.json``, ``STEM.png`` (the figure) and ``STEM_images.png`` (the contact sheet)."""
        out = output_folder(directory)
        md = ["Mean over classes, pooled r (estimate [95% interval]):", "",
              self.to_markdown(intervals), "", "Differences:", "",
              self.to_markdown(intervals, differences=True), ""]
        atomic_write(out / f"{stem}.md", "\n".join(md).encode())
        atomic_write(out / f"{stem}.csv", self.to_csv(intervals).encode())
        doc = {"classes": self.classes, "natural_photos": self.natural_names, "seeds": self.seed_names,
               "layers": [_layer_name(l) for l in self.layers], "kinds": self.kinds,
               "pairs": {c: p.pairs for c, p in self.pathways.items()}, "config": self.config,
               "verdict": self.verdict(intervals), "rows": self.rows(intervals)}
        atomic_write(out / f"{stem}.json", json.dumps(doc, indent=2, default=str).encode())
        written = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.json"]
        if plot:
            written.append(save_figure(self.plot(intervals), out / f"{stem}.png"))
        written.append(save_image(self.contact_sheet(), out / f"{stem}_images.png"))
        return written


def _layer_name(layer: str) -> str:
    return "logits" if layer == OUTPUT else layer


def _engine_runs(
    model: nn.Module,
    model_name: str,
    objectives: list[Objective],
    seed_list: list[torch.Tensor],
    seed_names: list[str],
    settings: Settings,
    *,
    lam0: bool,
    feature_vis: int,
    seed: int,
    work: str | os.PathLike | None,
    progress: bool | Callable[[int, int], None] | None,
    accentuate_kwargs: dict[str, Any],
) -> tuple[dict[str, Result], dict[str, dict[str, Any]]]:
    """The engine runs of :func:`pathway_study` (each every seed x every class), made or read back.

    Returns:
        ``({run: Result}, {run: {"seconds", "read_back"}})``.
    """
    folder = output_folder(work) if work is not None else None
    times: dict[str, dict[str, Any]] = {}

    def run(name: str, s: Settings, seeded: bool, g: int) -> Result:
        # The run's seed is keyed as "generator"; the settings without it (as keyed before the seed
        # setting defaulted to 0), so that runs kept in `work` are still found.
        key = {"run": name, "model": model_name, "settings": s.replace(seed=None).hash(), "generator": g,
               "targets": [o.identity() for o in objectives],
               "seeds": [tensor_digest(t) for t in seed_list] if seeded else None}
        res, read = cached_run(folder, name, key,
                                lambda: accentuate(model, seed_list if seeded else None, objectives, s, seed=g,
                                                   progress=progress, **accentuate_kwargs),
                                seed_names if seeded else None)
        times[name] = {"seconds": res.run.get("seconds"), "read_back": read}
        return res

    runs = {"accentuation": run("accentuation", settings, True, seed)}
    if lam0:
        runs["lam0"] = run("lam0", settings.replace(lam=0.0), True, seed)
    canvas = tuple(int(v) for v in runs["accentuation"].images.shape[-2:])
    fv_settings = settings.replace(reg_layer="none", canvas=canvas, until=None)
    for i in range(feature_vis):
        runs[f"feature_vis_{i}"] = run(f"feature_vis_{i}", fv_settings, False, seed + 1 + i)
    return runs, times


def pathway_study(
    model: nn.Module,
    classes: Mapping[str, tuple[int | str | Objective, ImageSet]],
    seeds: ImageSet,
    *,
    feature_vis: int = 4,
    lam0: bool = True,
    layers: Sequence[str] | None = None,
    seed: int | None = 0,
    work: str | os.PathLike | None = None,
    batch: int = 16,
    progress: bool | Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
    **accentuate_kwargs: Any,
) -> PathwayStudy:
    """Pathway similarity of several classes, from one set of seed photos of other classes.

    Args:
        model: the model (not modified).
        classes: ``{name: (target, natural photos)}``: the target (class index, name, target
            string or objective, e.g. ``acc.like(reference_photo, model)``) and its natural
            photos (a folder, paths or tensors; at least 2 distinct photos).
        seeds: the seed photos (of none of the classes), fitted to one canvas as
            :func:`accentuate.accentuate` fits seeds (the same aspect ratio, or
            ``canvas=(H, W)``).
        feature_vis: noise-seeded feature visualizations per class (0 leaves them out).
        lam0: also accentuate at ``lam = 0`` (condition (b)).
        layers: layers compared (default: the spec's pathway layers).
        seed: the int seed of the accentuations; feature visualization ``i`` uses
            ``seed + 1 + i`` (as :func:`pathway_similarity`).
        work: folder for the engine runs (saved, and read back by a later call; see the
            module's docstring); ``None`` keeps nothing.
        batch: images per forward pass when reading activations.
        progress: passed to :func:`accentuate.accentuate` (default: a bar where one can be seen).
        settings: the :class:`~accentuate.settings.Settings` (default: the model's), with
            the settings among the keywords applied; ``opacity`` defaults to off.
        **accentuate_kwargs: settings (``steps``, ``crops``, ``lam``, ...) and model-spec keys.

    Returns:
        A :class:`PathwayStudy`; ``.intervals()`` gives the bootstrap intervals.

    Shape:
        The seeds' canvas is the accentuations' and the feature visualizations' canvas;
        every image is resized whole to the model's input size to be compared.
    """
    if not classes:
        raise ValueError("give at least one class: {name: (target, natural photos)}")
    if isinstance(feature_vis, bool) or not isinstance(feature_vis, int) or feature_vis < 0:
        raise ValueError(f"feature_vis must be a count >= 0; got {feature_vis!r}")
    seed = run_seed(seed, accentuate_kwargs, "pathway_study")
    spec = analysis_spec(model, accentuate_kwargs)
    names = list(classes)
    objectives = [as_objective(classes[c][0], model, spec, runner=accentuate_kwargs.get("runner")) for c in names]
    accentuate_kwargs.setdefault("opacity", False)
    settings = analysis_settings(model, spec, settings, accentuate_kwargs)
    seed_list, seed_names = load_image_set(seeds, "seeds")
    naturals = {c: load_image_set(classes[c][1], f"natural photos of {c}") for c in names}
    runs, times = _engine_runs(model, spec.name, objectives, seed_list, seed_names, settings, lam0=lam0,
                               feature_vis=feature_vis, seed=seed, work=work, progress=progress,
                               accentuate_kwargs=accentuate_kwargs)
    canvas = tuple(int(v) for v in runs["accentuation"].images.shape[-2:])
    acc_res = runs["accentuation"]
    fitted = list(acc_res.seeds) if acc_res.seeds is not None else seed_list
    pathways = {}
    for j, c in enumerate(names):
        fvs = [runs[f"feature_vis_{i}"].images[0, j] for i in range(feature_vis)]
        pathways[c] = pathway_similarity(
            model, objectives[j], naturals[c][0], fitted, accentuations=list(acc_res.images[:, j]),
            lam0=list(runs["lam0"].images[:, j]) if lam0 else False, feature_vis=fvs or None,
            layers=layers, batch=batch, settings=settings, **accentuate_kwargs)
    config = {"settings": settings.to_dict(), "generator": seed, "feature_vis": feature_vis, "lam0": lam0,
              "runs": times, "canvas": list(canvas), "model": spec.name,
              "kinds": [k for k in KINDS if k in pathways[names[0]].kinds]}
    return PathwayStudy(classes=names, pathways=pathways, runs=runs, seed_names=seed_names,
                        natural_names={c: naturals[c][1] for c in names}, config=config)

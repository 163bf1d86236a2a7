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
- ``other_class`` (the floor): the natural photos of the *other* classes of the study;
- ``natural``: the natural photos of each class among themselves (distinct photos, each
  pair once).

Every image is compared with the natural photos of its class, by the measure asked for
(``measure="activation"`` or ``"attribution"``, see :mod:`accentuate.analysis.pathway`), in
pairs or against the class prototype (``baseline=``). The study's intervals
(:meth:`PathwayStudy.intervals`) come from one joint percentile bootstrap that resamples the
seed photos (shared by all classes and by (a), (b), (d)), the feature visualizations and
the natural photos of each class, never the pairs; the floor of a class is made of the
other classes' drawn photos (the same draw). The classes are fixed (the intervals are
conditional on the classes studied). It also gives intervals of the differences the claim
is about (:data:`COMPARISONS`): natural - (a) (the claim: below 0), (a) - (d), (a) - (b),
(a) - (c), and (a) and natural against the floor.

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
from ..hooks import OUTPUT, ModelRunner
from ..images import ImageSet, load_image_set
from ..objectives import Objective, as_objective
from ..objectives.base import tensor_digest
from ..outputs.figures import labelled_grid, save_image, to_pil
from ..outputs.io import atomic_write, output_folder
from ..result import Result
from ..runs.cache import cached_run
from ..settings import Settings
from .pathway import _LABEL, _STYLE, KINDS, STATISTIC_TITLE, Pathway, pathway_similarity
from .pathway_measures import BASELINES, check_measure
from .setup import analysis_settings, analysis_spec, run_seed
from .stats import Interval, bootstrap
from .writing import markdown_table, require_matplotlib, save_figure

__all__ = ["COMPARISONS", "PathwayStudy", "pathway_study"]

#: The differences the claim is about, ``(minuend, subtrahend)``: natural against the
#: accentuation (the claim says below 0); the accentuation against its seed, against no
#: regularizer, against feature visualization, against the floor (photos of other classes);
#: natural against the floor (does the measure tell the class apart at all?).
COMPARISONS = (("natural", "accentuation"), ("accentuation", "seed"), ("accentuation", "lam0"),
               ("accentuation", "feature_vis"), ("accentuation", "other_class"), ("natural", "other_class"))

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
            ``(N, C)``, ``feature_vis_i`` ``(1, C)``; with ``chunk``, their pieces
            ``accentuation_a-b`` (classes ``a`` to ``b``) or ``accentuation_a`` (class ``a``).
        seed_names: a name per seed.
        natural_names: ``{class: [photo name]}`` the natural photos of each class.
        config: how it was made (settings, the seed as ``generator``, run times, which runs were read back).
        floor: ``{class: [other class]}``: whose natural photos, in this order, are the
            class's ``other_class`` images (empty: no floor).
        floor_only: ``{class: photos}``: classes whose natural photos only join the floor
            (no accentuation toward them), with their photo counts.
    """

    classes: list[str]
    pathways: dict[str, Pathway]
    runs: dict[str, Result] = field(default_factory=dict)
    seed_names: list[str] = field(default_factory=list)
    natural_names: dict[str, list[str]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, list[str]] = field(default_factory=dict)
    floor_only: dict[str, int] = field(default_factory=dict)

    @property
    def measure(self) -> str:
        """``"activation"`` or ``"attribution"``."""
        return self.pathways[self.classes[0]].measure

    @property
    def statistics(self) -> list[str]:
        """The statistics compared, the main one first (see :attr:`Pathway.statistics`)."""
        return self.pathways[self.classes[0]].statistics

    @property
    def marks(self) -> dict[str, str]:
        """``{layer: reason}`` the compared layers marked as saying little (see :attr:`Pathway.marks`)."""
        return self.pathways[self.classes[0]].marks

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
        when they had the same seeds), and per class ``CLASS/natural``, ``CLASS/feature_vis``
        (the floor is drawn from the other classes' ``CLASS/natural``)."""
        shared = self._shared_seeds()
        sizes = {self._key(c, u, shared): n for c in self.classes for u, n in self.pathways[c].unit_sizes().items()
                 if not (u == "other_class" and c in self.floor)}
        return sizes | {f"{d}/natural": n for d, n in self.floor_only.items()}

    def _photos(self, c: str) -> int:
        """How many natural photos class ``c`` has (studied, or in the floor only)."""
        return self.floor_only[c] if c in self.floor_only else self.pathways[c].unit_sizes()["natural"]

    def _view(self, c: str, draws: Mapping[str, torch.Tensor], shared: bool) -> dict[str, torch.Tensor]:
        """Class ``c``'s units in ``draws``; its floor's draw is the other classes' drawn photos."""
        pw = self.pathways[c]
        view = {u: draws[self._key(c, u, shared)] for u in pw.unit_sizes() if u != "other_class" or c not in self.floor}
        if c in self.floor and "other_class" in pw.kinds:
            parts, offset = [], 0
            for d in self.floor[c]:
                parts.append(draws[self._key(d, "natural", shared)] + offset)
                offset += self._photos(d)
            view["other_class"] = torch.cat(parts, dim=1)
        return view

    def intervals(self, replicates: int = 2000, level: float = 0.95, generator: int = 0,
                  statistic: str | None = None, baseline: str = "pairs") -> dict[str, dict[str, Interval]]:
        """Bootstrap intervals, per layer, of each kind's mean r and of the :attr:`comparisons`.

        Args:
            replicates: bootstrap replicates (one joint draw of every unit per replicate).
            level: coverage of the intervals.
            generator: int seed of the draws.
            statistic: one of :attr:`statistics` (default: the main one: pooled Pearson r of
                activations, or of absolute attributions).
            baseline: ``"pairs"`` (every natural photo in turn) or ``"prototype"`` (the mean
                vector of the drawn natural photos of the class; a natural photo against the
                mean of the others).

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
                per_class.append(pw.statistic_table(self._view(c, draws, shared), statistic, baseline, kinds))
            values = torch.stack(per_class, dim=1)  # (R, C, K, L)
            values = torch.cat([values, values.mean(dim=1, keepdim=True)], dim=1)  # + the mean over classes
            diffs = [values[:, :, idx[a]] - values[:, :, idx[b]] for a, b in comps]
            return torch.cat([values, torch.stack(diffs, dim=2)], dim=2) if diffs else values

        ci = bootstrap(stat, self.unit_sizes(), replicates, level, generator)
        names = list(kinds) + [_diff_name(a, b) for a, b in comps]
        return {scope: {name: ci[s, q] for q, name in enumerate(names)}
                for s, scope in enumerate([*self.classes, MEAN])}

    def all_intervals(self, replicates: int = 2000, level: float = 0.95, generator: int = 0,
                      statistics: Sequence[str] | None = None
                      ) -> dict[tuple[str, str], dict[str, dict[str, Interval]]]:
        """:meth:`intervals` of every statistic (default: all but ``unpooled``) and baseline,
        ``{(statistic, baseline): {scope: {name: Interval}}}``; ``unpooled`` has no prototype."""
        stats = [s for s in self.statistics if s != "unpooled"] if statistics is None else list(statistics)
        return {(s, b): self.intervals(replicates, level, generator, statistic=s, baseline=b)
                for s in stats for b in BASELINES if not (s == "unpooled" and b == "prototype")}

    def verdict(self, intervals: Mapping[str, Mapping[str, Interval]], scope: str = MEAN) -> dict[str, dict[str, Any]]:
        """For each comparison, at which layers its interval lies above 0, below 0, or holds 0.

        Returns:
            ``{"a - b": {"above": [layer], "below": [layer], "unclear": [layer],
            "mean": mean difference over layers, "mean_unmarked": the same over the layers
            not marked (:attr:`marks`), "marked": [marked layer]}}``.
        """
        out: dict[str, dict[str, Any]] = {}
        names = [_layer_name(l) for l in self.layers]
        keep = torch.tensor([l not in self.marks for l in self.layers])
        for a, b in self.comparisons:
            ci = intervals[scope][_diff_name(a, b)]
            above = [n for n, lo in zip(names, ci.lower.tolist()) if lo > 0]
            below = [n for n, hi in zip(names, ci.upper.tolist()) if hi < 0]
            unclear = [n for n in names if n not in above and n not in below]
            out[_diff_name(a, b)] = {"above": above, "below": below, "unclear": unclear,
                                     "mean": float(torch.nanmean(ci.estimate)),
                                     "mean_unmarked": float(torch.nanmean(ci.estimate[keep])) if keep.any() else math.nan,
                                     "marked": [_layer_name(l) for l in self.layers if l in self.marks]}
        return out

    def verdict_rows(self, all_intervals: Mapping[tuple[str, str], Mapping[str, Mapping[str, Interval]]],
                     scope: str = MEAN) -> list[dict[str, Any]]:
        """One row per statistic, baseline and comparison: at how many layers (not marked / all)
        the difference's interval is above 0, below 0 or holds 0, and its mean over the
        unmarked layers."""
        rows = []
        for (stat, base), ci in all_intervals.items():
            for name, v in self.verdict(ci, scope).items():
                marked = set(v["marked"])

                def count(layers: list[str], marked: set[str] = marked) -> str:
                    return f"{sum(1 for l in layers if l not in marked)} / {len(layers)}"

                rows.append({"statistic": stat, "baseline": base, "difference": name, "above 0": count(v["above"]),
                             "below 0": count(v["below"]), "unclear": count(v["unclear"]),
                             "mean (unmarked layers)": round(v["mean_unmarked"], 3)})
        return rows

    def rows(self, intervals: Mapping[str, Mapping[str, Interval]], statistic: str | None = None,
             baseline: str | None = None) -> list[dict[str, Any]]:
        """Long rows (for CSV): ``scope, layer, depth, quantity, estimate, lower, upper, pairs``
        (after ``statistic, baseline`` when they are given)."""
        out = []
        head = {"statistic": statistic, "baseline": baseline} if statistic is not None else {}
        for scope, by_name in intervals.items():
            for name, ci in by_name.items():
                for i, layer in enumerate(self.layers):
                    pairs = None
                    if name in self.kinds:
                        pairs = (sum(p.pairs[name] for p in self.pathways.values()) if scope == MEAN
                                 else self.pathways[scope].pairs[name])
                    out.append({**head, "scope": scope, "layer": _layer_name(layer), "depth": i, "quantity": name,
                                "estimate": float(ci.estimate[i]), "lower": float(ci.lower[i]),
                                "upper": float(ci.upper[i]), "pairs": pairs})
        return out

    def to_csv(self, intervals: Mapping[Any, Mapping[str, Any]]) -> str:
        """:meth:`rows` as CSV text; of every statistic and baseline (first columns) when given
        :meth:`all_intervals`."""
        import csv
        import io

        many = _is_many(intervals)
        fields = ["scope", "layer", "depth", "quantity", "estimate", "lower", "upper", "pairs"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=(["statistic", "baseline"] if many else []) + fields, lineterminator="\n")
        w.writeheader()
        rows = ([r for (st, b), ci in intervals.items() for r in self.rows(ci, st, b)] if many
                else self.rows(intervals))
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def to_markdown(self, intervals: Mapping[str, Mapping[str, Interval]], scope: str = MEAN,
                    differences: bool = False, digits: int = 2) -> str:
        """One row per layer: ``mean [lower, upper]`` of each kind (or of each comparison)."""
        names = ([_diff_name(a, b) for a, b in self.comparisons] if differences else list(self.kinds))
        by_name = intervals[scope]
        rows = []
        label = self.pathways[self.classes[0]].layer_label
        for i, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": label(layer)}
            for n in names:
                ci = by_name[n]
                row[n] = (f"{float(ci.estimate[i]):.{digits}f} [{float(ci.lower[i]):.{digits}f}, "
                          f"{float(ci.upper[i]):.{digits}f}]")
            rows.append(row)
        return markdown_table(rows)

    def _ticks(self) -> list[str]:
        return [_layer_name(l).replace("blocks.", "b").replace("encoder.layer.", "L") + ("*" if l in self.marks else "")
                for l in self.layers]

    def _lines(self, ax: Any, by_name: Mapping[str, Interval], label: bool = True) -> None:
        x = list(range(len(self.layers)))
        for i, layer in enumerate(self.layers):  # the layers without a residual connection, shaded
            if layer in self.marks:
                ax.axvspan(i - 0.5, i + 0.5, color="0.9", lw=0, zorder=0)
        for k in self.kinds:
            colour, marker, ls = _STYLE.get(k, (None, "x", "-"))
            ci = by_name[k]
            ax.plot(x, ci.estimate.numpy(), color=colour, marker=marker, ls=ls, lw=1.6, ms=3,
                    label=_LABEL.get(k, k) if label else None)
            ax.fill_between(x, ci.lower.numpy(), ci.upper.numpy(), color=colour, alpha=0.15, lw=0)
        ax.set_xticks(x)
        ax.set_xticklabels(self._ticks(), rotation=70, fontsize=6)
        ax.axhline(0, color="black", lw=0.5)
        ax.grid(alpha=0.3)

    def overview_plot(self, all_intervals: Mapping[tuple[str, str], Mapping[str, Mapping[str, Interval]]],
                      path: str | os.PathLike | None = None, title: str | None = None) -> Any:
        """The mean over classes of every statistic (rows) against each baseline (columns), with
        interval bands. Needs matplotlib. Returns the ``Figure``."""
        Figure = require_matplotlib()
        stats = list(dict.fromkeys(s for s, _ in all_intervals))
        bases = list(dict.fromkeys(b for _, b in all_intervals))
        fig = Figure(figsize=(5.2 * len(bases), 2.9 * len(stats) + 1.0))
        axes = fig.subplots(len(stats), len(bases), sharey="row", squeeze=False)
        for i, st in enumerate(stats):
            for j, b in enumerate(bases):
                ax = axes[i, j]
                if (st, b) not in all_intervals:
                    ax.set_visible(False)
                    continue
                self._lines(ax, all_intervals[(st, b)][MEAN], label=(i, j) == (0, 0))
                ax.set_title(f"{STATISTIC_TITLE.get(st, st)}\nagainst {'each natural photo' if b == 'pairs' else 'the class prototype'}",
                             fontsize=9)
            axes[i, 0].set_ylabel("r with natural photos", fontsize=8)
        level = next(iter(next(iter(all_intervals.values()))[MEAN].values())).level
        marks = "; * shaded: no residual connection" if self.marks else ""
        fig.suptitle(title or f"Pathway similarity ({self.measure}), mean over {len(self.classes)} classes, "
                     f"{round(100 * level)}% bootstrap intervals{marks}", fontsize=11)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.05, 1, 0.98))
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
        if path is not None:
            save_figure(fig, path)
        return fig

    def plot(self, intervals: Mapping[str, Mapping[str, Interval]], path: str | os.PathLike | None = None,
             title: str | None = None, ylabel: str = "r with natural photos") -> Any:
        """Per-layer lines with their interval bands: one panel per class and one for the mean.

        Needs matplotlib (``pip install accentuate[plot]``). Returns the ``Figure``.
        """
        Figure = require_matplotlib()
        scopes = [MEAN, *self.classes]
        cols = 3 if len(scopes) > 4 else len(scopes)
        nrows = math.ceil(len(scopes) / cols)
        fig = Figure(figsize=(4.6 * cols, 3.5 * nrows + 0.8))
        axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).flatten()
        for ax, scope in zip(axes, scopes):
            self._lines(ax, intervals[scope])
            n_nat = len(self.natural_names.get(scope, [])) if scope != MEAN else None
            ax.set_title(f"mean over {len(self.classes)} classes" if scope == MEAN
                         else f"{scope} ({n_nat} photos)", fontsize=10)
        for ax in axes[len(scopes):]:
            ax.set_visible(False)
        for r in range(nrows):
            axes[r * cols].set_ylabel(ylabel)
        level = next(iter(intervals[MEAN].values())).level
        fig.suptitle(title or f"Pathway similarity ({STATISTIC_TITLE.get(self.statistics[0], self.statistics[0])}), "
                     f"{round(100 * level)}% bootstrap intervals", fontsize=11)
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
                             title="Seeds, and per class: a natural photo, " + ", ".join(
                                 {"accentuation": "(a) accentuations", "lam0": "(b) at lam 0",
                                  "feature_vis": "(c) feature visualizations"}[k] for k in groups))

    def to_report(self, all_intervals: Mapping[tuple[str, str], Mapping[str, Mapping[str, Interval]]]) -> str:
        """Markdown: per statistic and baseline, the kinds and the differences (mean over classes,
        estimate [interval]), then the verdict table (:meth:`verdict_rows`)."""
        level = next(iter(next(iter(all_intervals.values()))[MEAN].values())).level
        md = [f"Pathway similarity, measure {self.measure}, mean over {len(self.classes)} classes "
              f"(estimate [{round(100 * level)}% interval]).", ""]
        if self.marks:
            md += ["Layers marked (no skip): " + ", ".join(f"`{_layer_name(l)}`" for l in self.marks)
                   + " have no residual connection (a stage's first block).", ""]
        for (st, b), ci in all_intervals.items():
            against = "each natural photo of the class" if b == "pairs" else "the class prototype (leave one out for natural)"
            md += [f"### {STATISTIC_TITLE.get(st, st)}, against {against}", "", self.to_markdown(ci), "",
                   "Differences:", "", self.to_markdown(ci, differences=True), ""]
        md += ["### Verdict", "", "At how many layers each difference's interval lies above 0, below 0 or "
               "holds 0 (layers without the marked ones / all layers):", "",
               markdown_table(self.verdict_rows(all_intervals)), ""]
        return "\n".join(md)

    def save(self, directory: str | os.PathLike, intervals: Mapping[Any, Mapping[str, Any]],
             plot: bool = True, stem: str = "pathway_pool") -> list[Path]:
        """Write ``STEM.md`` (tables, mean over classes), ``STEM.csv`` (every scope),
        ``STEM.json``, ``STEM.png`` (the figure) and ``STEM_images.png`` (the contact sheet).

        ``intervals`` is one :meth:`intervals` result, or :meth:`all_intervals` (then every
        statistic and baseline is written, ``STEM.png`` is the :meth:`overview_plot` and
        ``STEM_classes.png`` the main statistic's per-class figure).
        """
        out = output_folder(directory)
        many = _is_many(intervals)
        main = next(iter(intervals.values())) if many else intervals
        if many:
            text = self.to_report(intervals)
        else:
            text = "\n".join(["Mean over classes, pooled r (estimate [95% interval]):", "",
                              self.to_markdown(main), "", "Differences:", "",
                              self.to_markdown(main, differences=True), ""])
        atomic_write(out / f"{stem}.md", text.encode())
        atomic_write(out / f"{stem}.csv", self.to_csv(intervals).encode())
        doc = {"classes": self.classes, "natural_photos": self.natural_names, "seeds": self.seed_names,
               "measure": self.measure, "layers": [_layer_name(l) for l in self.layers], "kinds": self.kinds,
               "marks": {_layer_name(l): why for l, why in self.marks.items()}, "floor": self.floor,
               "floor_only": self.floor_only,
               "pairs": {c: p.pairs for c, p in self.pathways.items()}, "config": self.config,
               "verdict": ({f"{st}/{b}": self.verdict(ci) for (st, b), ci in intervals.items()} if many
                           else self.verdict(main)),
               "rows": self.rows(main)}
        atomic_write(out / f"{stem}.json", json.dumps(doc, indent=2, default=str).encode())
        written = [out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.json"]
        if plot and many:
            written.append(save_figure(self.overview_plot(intervals), out / f"{stem}.png"))
            written.append(save_figure(self.plot(main), out / f"{stem}_classes.png"))
        elif plot:
            written.append(save_figure(self.plot(main), out / f"{stem}.png"))
        written.append(save_image(self.contact_sheet(), out / f"{stem}_images.png"))
        return written


def _is_many(intervals: Mapping[Any, Any]) -> bool:
    """Whether ``intervals`` is :meth:`PathwayStudy.all_intervals` (keys ``(statistic, baseline)``)."""
    return bool(intervals) and all(isinstance(k, tuple) for k in intervals)


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
    chunk: int | None,
    work: str | os.PathLike | None,
    progress: bool | Callable[[int, int], None] | None,
    accentuate_kwargs: dict[str, Any],
) -> tuple[dict[str, Result], dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """The engine runs of :func:`pathway_study`, made or read back.

    Each kind is every seed x every class, in one engine run, or with ``chunk`` classes per run
    (named ``KIND_a`` or ``KIND_a-b`` by the classes' indices), each saved as it finishes.

    Returns:
        ``({run: Result}, {kind: images (N, C, 3, H, W)}, {run: {"seconds", "read_back"}})``.
    """
    folder = output_folder(work) if work is not None else None
    times: dict[str, dict[str, Any]] = {}
    runs: dict[str, Result] = {}
    size = len(objectives) if chunk is None else chunk
    parts = [(a, min(a + size, len(objectives))) for a in range(0, len(objectives), size)]

    def run(name: str, s: Settings, seeded: bool, g: int, objs: list[Objective]) -> Result:
        # The run's seed is keyed as "generator"; the settings without it (as keyed before the seed
        # setting defaulted to 0), so that runs kept in `work` are still found.
        key = {"run": name, "model": model_name, "settings": s.replace(seed=None).hash(), "generator": g,
               "targets": [o.identity() for o in objs],
               "seeds": [tensor_digest(t) for t in seed_list] if seeded else None}
        res, read = cached_run(folder, name, key,
                                lambda: accentuate(model, seed_list if seeded else None, objs, s, seed=g,
                                                   progress=progress, **accentuate_kwargs),
                                seed_names if seeded else None)
        times[name] = {"seconds": res.run.get("seconds"), "read_back": read}
        return res

    def kind(name: str, s: Settings, seeded: bool, g: int) -> torch.Tensor:
        if chunk is None:  # one run of every class
            runs[name] = run(name, s, seeded, g, objectives)
            return runs[name].images
        pieces = []
        for a, b in parts:
            piece = f"{name}_{a}" if b - a == 1 else f"{name}_{a}-{b - 1}"
            runs[piece] = run(piece, s, seeded, g, objectives[a:b])
            pieces.append(runs[piece].images)
        return torch.cat(pieces, dim=1)

    images = {"accentuation": kind("accentuation", settings, True, seed)}
    if lam0:
        images["lam0"] = kind("lam0", settings.replace(lam=0.0), True, seed)
    canvas = tuple(int(v) for v in images["accentuation"].shape[-2:])
    fv_settings = settings.replace(reg_layer="none", canvas=canvas, until=None)
    for i in range(feature_vis):
        images[f"feature_vis_{i}"] = kind(f"feature_vis_{i}", fv_settings, False, seed + 1 + i)
    return runs, images, times


def pathway_study(
    model: nn.Module,
    classes: Mapping[str, tuple[int | str | Objective, ImageSet]],
    seeds: ImageSet,
    *,
    feature_vis: int = 4,
    lam0: bool = True,
    measure: str = "activation",
    floor: bool = True,
    layers: Sequence[str] | None = None,
    seed: int | None = 0,
    work: str | os.PathLike | None = None,
    chunk: int | None = None,
    floor_classes: Mapping[str, ImageSet] | None = None,
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
        measure: ``"activation"`` or ``"attribution"`` (see
            :func:`~accentuate.analysis.pathway.pathway_similarity`); the engine runs are the
            same for both (with ``work=``, a second study of the other measure reads them back).
        floor: compare the natural photos of the other classes with each class's (the
            ``other_class`` kind; needs two classes or more).
        layers: layers compared (default: the spec's pathway layers).
        seed: the int seed of the accentuations; feature visualization ``i`` uses
            ``seed + 1 + i`` (as :func:`pathway_similarity`).
        work: folder for the engine runs (saved, and read back by a later call; see the
            module's docstring); ``None`` keeps nothing.
        chunk: classes per engine run (default: all in one run of seeds x classes); with
            ``work=``, each run is saved as it finishes, so a stopped study loses at most one
            run (``chunk=1``: one class's seeds) and a later call goes on from there.
        floor_classes: ``{name: natural photos}`` of more classes, not accentuated toward,
            whose photos join every class's floor (after the other studied classes').
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
    check_measure(measure)
    seed = run_seed(seed, accentuate_kwargs, "pathway_study")
    spec = analysis_spec(model, accentuate_kwargs)
    accentuate_kwargs["runner"] = ModelRunner.reuse(accentuate_kwargs.get("runner"), model, spec)
    names = list(classes)
    objectives = [as_objective(classes[c][0], model, spec, runner=accentuate_kwargs.get("runner")) for c in names]
    accentuate_kwargs.setdefault("opacity", False)
    settings = analysis_settings(model, spec, settings, accentuate_kwargs)
    seed_list, seed_names = load_image_set(seeds, "seeds")
    naturals = {c: load_image_set(classes[c][1], f"natural photos of {c}") for c in names}
    extra_floor = dict(floor_classes or {})
    clash = [d for d in extra_floor if d in classes]
    if clash:
        raise ValueError(f"floor class {clash[0]!r} is also a studied class; give it in one of the two only")
    if extra_floor and not floor:
        raise ValueError("floor_classes given with floor=False; give floor=True or leave floor_classes out")
    naturals |= {d: load_image_set(extra_floor[d], f"natural photos of {d}") for d in extra_floor}
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a count of classes >= 1 (or None: all in one run); got {chunk!r}")
    runs, images, times = _engine_runs(model, spec.name, objectives, seed_list, seed_names, settings, lam0=lam0,
                                       feature_vis=feature_vis, seed=seed, chunk=chunk, work=work,
                                       progress=progress, accentuate_kwargs=accentuate_kwargs)
    canvas = tuple(int(v) for v in images["accentuation"].shape[-2:])
    first = next(r for r in runs.values() if r.seeds is not None)
    fitted = list(first.seeds) if first.seeds is not None else seed_list
    floors = ({c: [d for d in [*names, *extra_floor] if d != c] for c in names}
              if floor and len(names) + len(extra_floor) > 1 else {})
    pathways = {}
    for j, c in enumerate(names):
        fvs = [images[f"feature_vis_{i}"][0, j] for i in range(feature_vis)]
        others = [t for d in floors.get(c, []) for t in naturals[d][0]]
        pathways[c] = pathway_similarity(
            model, objectives[j], naturals[c][0], fitted, accentuations=list(images["accentuation"][:, j]),
            lam0=list(images["lam0"][:, j]) if lam0 else False, feature_vis=fvs or None,
            other_classes=others or None, measure=measure, layers=layers, batch=batch, settings=settings,
            **accentuate_kwargs)
    odd = [c for c in names if pathways[c].layers != pathways[names[0]].layers]
    if odd:
        raise ValueError(f"class {odd[0]!r} was compared at other layers than {names[0]!r} "
                         f"({pathways[odd[0]].config.get('left_out')}); give layers= that every target depends on")
    config = {"settings": settings.to_dict(), "generator": seed, "feature_vis": feature_vis, "lam0": lam0,
              "measure": measure, "runs": times, "canvas": list(canvas), "model": spec.name,
              "kinds": [k for k in KINDS if k in pathways[names[0]].kinds],
              "left_out": pathways[names[0]].config.get("left_out", {})}
    return PathwayStudy(classes=names, pathways=pathways, runs=runs, seed_names=seed_names,
                        natural_names={c: naturals[c][1] for c in names}, config=config, floor=floors,
                        floor_only={d: len(naturals[d][0]) for d in extra_floor} if floors else {})

"""The line plots of the analyses' pages, made from their records (``sweep.json``, ``pathway.json``,
``latent.json``, ``sanity.json``): one place for the report's pages and the results' notebook views
(a result gives its record; it does not know the report page)."""

from __future__ import annotations

from typing import Any

from .grid import fmt_num
from .svg import Plot, Series, line_plot

__all__ = ["latent_plots", "pathway_columns", "pathway_plots", "sanity_columns", "sanity_plots", "sweep_band",
           "sweep_plots"]


def sweep_band(region: dict[str, Any]) -> tuple[float, float, str] | None:
    """The sensitive region as a shaded band, or ``None`` when the sweep found none."""
    if region.get("low") is None or region.get("high") is None:
        return None
    return (region["low"], region["high"], f"sensitive region [{fmt_num(region['low'])}, {fmt_num(region['high'])}]")


def sweep_plots(doc: dict[str, Any]) -> list[Plot]:
    """The target's normalized gain (with the region and the lam = 0 reference) and the distance to the
    seed, over lam."""
    rows = doc.get("rows") or []
    region = doc.get("region") or {}
    swept = [r for r in rows if (r.get("lam") or 0) > 0]
    free = next((r for r in rows if r.get("lam") == 0), None)
    lams = [r["lam"] for r in swept]
    band = sweep_band(region)
    hl = [(region.get("upper", 0.9), "#555555", f"{region.get('upper', 0.9):g}"),
          (region.get("lower", 0.1), "#555555", f"{region.get('lower', 0.1):g}")]
    if free is not None:
        hl.append((free.get("gain_norm"), "#d62728", "lam = 0 (no regularizer)"))
    notes = [f"#{r['rank']}" for r in swept] if swept and "rank" in swept[0] else None
    gain = line_plot([Series("target gain / max gain", lams, [r.get("gain_norm") for r in swept], notes=notes)],
                     title="Target gain (normalized)" + (" with the class's rank" if notes else ""),
                     xlabel="lam (log scale)", ylabel="gain / max gain", xlog=True, band=band, hlines=hl)
    dist_hl = [(free.get("pixel_rmse"), "#1f77b4", "pixel RMSE at lam = 0")] if free is not None else []
    dist = line_plot([Series("pixel RMSE to the seed", lams, [r.get("pixel_rmse") for r in swept], colour="#1f77b4"),
                      Series("1 - SSIM to the seed", lams,
                             [None if r.get("ssim_seed") is None else 1 - r["ssim_seed"] for r in swept],
                             colour="#9467bd")],
                     title="Distance to the seed", xlabel="lam (log scale)", ylabel="distance", xlog=True,
                     band=band, hlines=dist_hl, ylim=(0, None))
    return [gain, dist]


_PATHWAY_TITLES = {"pooled": "Pooled (channel means)", "unpooled": "Unpooled (C x H x W)",
                   "absolute": "Attribution |a| |dT/da| per channel", "signed": "Attribution a dT/da per channel"}


def pathway_plots(doc: dict[str, Any]) -> list[Plot]:
    """Pearson r with natural images per layer, one line per kind (1 SD bands): the record's two
    statistics (``doc["statistics"]``; pooled and unpooled activations when it has none)."""
    rows = doc.get("rows") or []
    kinds = list((doc.get("pairs") or {}).keys())
    ticks = [str(r.get("layer", "")).replace("blocks.", "b") for r in rows]
    sd = doc.get("sd") or {}
    plots = []
    for i, which in enumerate(_pathway_statistics(doc)):
        def key(k: str, i: int = i, which: str = which) -> str:
            return k if i == 0 else f"{k}_{which}"

        series = [Series(f"{k} ({(doc.get('pairs') or {}).get(k, '?')} pairs)", list(range(len(rows))),
                         [r.get(key(k)) for r in rows], sd=(sd.get(k) or {}).get(which),
                         dashed=k != "accentuation") for k in kinds]
        plots.append(line_plot(series, title=_PATHWAY_TITLES.get(which, which), xlabel="layer (input to output)",
                               ylabel="Pearson r with natural images", xcategories=ticks,
                               hlines=[(0.0, "#000000", "")]))
    return plots


def _pathway_statistics(doc: dict[str, Any]) -> list[str]:
    """The two statistics a pathway record shows (its main one first)."""
    return list(doc.get("statistics") or ["pooled", "unpooled"])[:2]


def latent_plots(doc: dict[str, Any]) -> list[Plot]:
    """The feature's rise over the images, sorted."""
    rows = doc.get("rows") or []
    return [line_plot([Series("gain", list(range(1, len(rows) + 1)), [r.get("gain") for r in rows])],
                      title="The feature's rise, sorted", xlabel="image (by rank)", ylabel="gain")]


def sanity_plots(doc: dict[str, Any]) -> list[Plot]:
    """Similarity to the original accentuation as the model is randomized from the top down."""
    rows = doc.get("rows") or []
    depth_rows = [r for r in rows if isinstance(r.get("depth"), int)]
    repeat = next((r for r in rows if not isinstance(r.get("depth"), int)), None)
    names = {"image_ssim": "SSIM of the accentuation", "change_ssim": "SSIM of the change",
             "mask_spearman": "Spearman of the opacity mask"}
    colours = {"image_ssim": "#1f77b4", "change_ssim": "#d62728", "mask_spearman": "#2ca02c"}
    series = [Series(names[k], list(range(len(depth_rows))), [r.get(k) for r in depth_rows], colour=colours[k])
              for k in names if depth_rows and k in depth_rows[0]]
    hl = [(repeat.get(k), colours[k], f"{names[k]}, original model rerun") for k in names
          if repeat is not None and repeat.get(k) is not None]
    ticks = [str(r.get("randomized down to", "")).replace("blocks.", "b") for r in depth_rows]
    return [line_plot(series, title="Similarity to the original accentuation (dotted: rerun, other crops)",
                      xlabel="randomized from the top down to (cumulative)", ylabel="similarity",
                      xcategories=ticks, hlines=hl, ylim=(None, 1.05))]


def pathway_columns(doc: dict[str, Any]) -> list[str]:
    """The table columns of a pathway record: the layer, then each kind's two statistics (pooled
    and unpooled activations; absolute and signed attributions)."""
    second = _pathway_statistics(doc)[-1]
    return ["layer"] + [c for k in (doc.get("pairs") or {}) for c in (k, f"{k}_{second}")]


def sanity_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The table columns of a cascading-randomization record (those its rows have)."""
    return [c for c in ("depth", "randomized down to", "image_ssim", "change_ssim", "mask_spearman", "seed_ssim",
                        "gain", "rank") if any(c in r for r in rows)]

"""The numbers of a pathway comparison: which vectors, which correlation, against what.

A pathway comparison (:func:`~accentuate.analysis.pathway.pathway_similarity`) describes
each image, at each layer, by one vector per *form* and correlates vectors:

- measure ``"activation"`` (the path similarity of Geirhos et al. 2023): form ``pooled``,
  the channels' spatial means ``(C,)``; and ``unpooled``, the whole ``C x H x W`` output
  (compared in pairs only);
- measure ``"attribution"`` (the paper's circuits, see :mod:`accentuate.analysis.attribution`):
  forms ``absolute`` and ``signed``, each channel's spatial mean of ``|a| |dT/da|`` or
  ``a dT/da``.

A *statistic* is a form and a correlation: ``"pooled"`` is the Pearson r of pooled vectors,
``"pooled_spearman"`` their Spearman r (Pearson r of the ranks, ties at their average rank).

Two *baselines* say what an image is compared with:

- ``"pairs"``: every natural photo of the class, one by one (the mean over pairs); the
  natural photos among themselves, each pair of distinct photos once;
- ``"prototype"``: the class's prototype, the mean vector of its natural photos; a natural
  photo is compared with the mean of the *other* natural photos (leave one out: never with
  a prototype that holds itself).

The functions here are vectorized over bootstrap replicates (see
:func:`accentuate.analysis.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .stats import pearson, row_ranks

__all__ = ["BASELINES", "CORRELATIONS", "MEASURES", "correlation_matrix", "prototype_correlations", "row_correlation",
           "row_ranks", "split_statistic", "statistics_of"]

#: What describes an image at a layer.
MEASURES = ("activation", "attribution")
#: How two vectors are compared.
CORRELATIONS = ("pearson", "spearman")
#: What an image is compared with.
BASELINES = ("pairs", "prototype")

_FORMS = {"activation": ("pooled",), "attribution": ("absolute", "signed")}


def check_measure(measure: str) -> str:
    """``measure`` if it is one of :data:`MEASURES`, else a ``ValueError`` naming them."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}")
    return measure


def check_baseline(baseline: str) -> str:
    """``baseline`` if it is one of :data:`BASELINES`, else a ``ValueError`` naming them."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}; got {baseline!r}")
    return baseline


def forms_of(measure: str) -> tuple[str, ...]:
    """The vector forms of a measure: ``("pooled",)`` or ``("absolute", "signed")``."""
    return _FORMS[check_measure(measure)]


def statistics_of(measure: str) -> list[str]:
    """The statistics of a measure, the main one first.

    Example:
        >>> statistics_of("activation")
        ['pooled', 'unpooled', 'pooled_spearman']
        >>> statistics_of("attribution")
        ['absolute', 'signed', 'absolute_spearman', 'signed_spearman']
    """
    forms = forms_of(measure)
    extra = ["unpooled"] if measure == "activation" else []
    return [*forms, *extra, *(f"{f}_spearman" for f in forms)]


def split_statistic(statistic: str) -> tuple[str, str]:
    """``(form, correlation)`` of a statistic: ``"signed_spearman"`` -> ``("signed", "spearman")``."""
    form, _, corr = statistic.partition("_")
    return form, corr or "pearson"


def row_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson r along the last axis of ``x`` and ``y`` (broadcast); NaN where one is constant."""
    x = x.double() - x.double().mean(dim=-1, keepdim=True)
    y = y.double() - y.double().mean(dim=-1, keepdim=True)
    den = x.norm(dim=-1) * y.norm(dim=-1)
    r = (x * y).sum(dim=-1) / den
    return torch.where(den > 0, r, torch.full_like(r, math.nan))


def correlation_matrix(a: torch.Tensor, b: torch.Tensor, correlation: str = "pearson") -> torch.Tensor:
    """The correlation of every row of ``a`` ``(Na, ...)`` with every row of ``b`` ``(Nb, ...)`` (flattened),
    ``(Na, Nb)``, float32; NaN where a row is constant."""
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {', '.join(CORRELATIONS)}; got {correlation!r}")
    if correlation == "spearman":
        return pearson(row_ranks(a.reshape(a.shape[0], -1)), row_ranks(b.reshape(b.shape[0], -1)))
    return pearson(a, b)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row centred and scaled to norm 1 along the last axis (NaN rows where it is constant), so
    that Pearson r is a dot product."""
    x = x - x.mean(dim=-1, keepdim=True)
    n = x.norm(dim=-1, keepdim=True)
    return x / torch.where(n > 0, n, torch.full_like(n, math.nan))


def prototype_correlations(kinds: Mapping[str, torch.Tensor], naturals: torch.Tensor,
                           rows: Mapping[str, torch.Tensor], cols: torch.Tensor,
                           correlation: str = "pearson") -> dict[str, torch.Tensor]:
    """The mean correlation of drawn images with the prototype of the drawn natural photos.

    The prototype is the mean vector of the drawn natural photos. Each natural photo is
    compared with the mean of the *other* drawn photos (leave one out: a photo drawn twice is
    left out of its own prototype with all its copies; NaN when no other photo is drawn).

    Args:
        kinds: ``{kind: (n, C)}`` the images of the other kinds (not the natural photos).
        naturals: ``(m, C)`` the natural photos of the class.
        rows: ``{kind: (R, a)}`` drawn indices into ``kinds[kind]``.
        cols: ``(R, b)`` drawn indices into ``naturals``.
        correlation: ``"pearson"`` or ``"spearman"`` (the prototype's ranks: the mean vector is
            ranked, not the mean of ranks).

    Returns:
        ``{kind: (R,), "natural": (R,)}``, float64: each replicate's mean over its drawn images.
    """
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {', '.join(CORRELATIONS)}; got {correlation!r}")
    nat = naturals.double()
    r_count, b = cols.shape
    m = nat.shape[0]
    copies = torch.zeros(r_count, m, dtype=torch.float64).scatter_add_(1, cols, torch.ones_like(cols, dtype=torch.float64))
    others = b - copies  # (R, m): the drawn photos that are not photo j
    if correlation == "pearson":
        out, r = _pearson_prototype(kinds, nat, rows, copies)
    else:
        out, r = _spearman_prototype(kinds, nat, rows, copies, others)
    weight = torch.where((others > 0) & ~torch.isnan(r), copies, torch.zeros_like(copies))
    mean = (torch.nan_to_num(r) * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)
    out["natural"] = torch.where(weight.sum(dim=1) > 0, mean, torch.full_like(mean, math.nan))
    return out


def _pearson_prototype(kinds: Mapping[str, torch.Tensor], nat: torch.Tensor, rows: Mapping[str, torch.Tensor],
                       copies: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Pearson r with the prototype from dot products: centring is linear, and r does not depend on
    the prototype's scale, so the drawn sum ``S = copies @ V`` of the centred natural vectors ``V``
    stands for the prototype and every norm comes from the Gram matrix ``V V^T``.

    Returns:
        ``({kind: (R,)}, (R, m))``: each kind's mean r, and each natural photo's r with the
        prototype of the other drawn photos.
    """
    v = nat - nat.mean(dim=1, keepdim=True)
    gram = v @ v.T  # (m, m)
    s_v = copies @ gram  # (R, m): <S, v_j>
    s_norm = (s_v * copies).sum(dim=1).clamp(min=0).sqrt()  # (R,): |S|
    out = {}
    for k, vec in kinds.items():
        num = copies @ (v @ _unit_rows(vec.double()).T)  # (R, n): <S, x_i / |x_i|>
        r = num / torch.where(s_norm > 0, s_norm, torch.full_like(s_norm, math.nan))[:, None]
        out[k] = torch.nanmean(r.gather(1, rows[k]), dim=1)
    # photo j against S - c_j v_j (the others' sum): <v_j, S - c_j v_j> / (|v_j| |S - c_j v_j|)
    sq = gram.diagonal()[None]  # (1, m): |v_j|^2
    num = s_v - copies * sq
    den = (s_norm[:, None] ** 2 - 2 * copies * s_v + copies ** 2 * sq).clamp(min=0).sqrt() * sq.sqrt()
    r = num / torch.where(den > 1e-12 * (sq + 1), den, torch.full_like(den, math.nan))
    return out, r


def _spearman_prototype(kinds: Mapping[str, torch.Tensor], nat: torch.Tensor, rows: Mapping[str, torch.Tensor],
                        copies: torch.Tensor, others: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Spearman r with the prototype: the ranks of the mean vector (per replicate), against each
    image's ranks. Returns what :func:`_pearson_prototype` returns."""
    total = copies @ nat  # (R, C)
    proto = _unit_rows(row_ranks(total))  # the ranks of the sum are those of the mean
    out = {}
    for k, vec in kinds.items():
        r = proto @ _unit_rows(row_ranks(vec)).T  # (R, n)
        out[k] = torch.nanmean(r.gather(1, rows[k]), dim=1)
    loo = total[:, None, :] - copies[..., None] * nat[None]  # (R, m, C): the others' sum
    r = (_unit_rows(row_ranks(loo)) * _unit_rows(row_ranks(nat))[None]).sum(dim=-1)
    return out, torch.where(others > 0, r, torch.full_like(r, math.nan))

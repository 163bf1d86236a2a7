"""Statistics of the analyses: correlations and bootstrap intervals over resampling units.

:func:`pearson` and :func:`spearman` correlate activation vectors; :func:`bootstrap` gives
percentile intervals that resample photos and seeds (not their pairs), and :func:`pair_means` is
its statistic for a matrix of correlations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Interval", "bootstrap", "pair_means", "pearson", "row_ranks", "spearman"]


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every row of ``a`` with every row of ``b``.

    Args:
        a: ``(Na, ...)``; b: ``(Nb, ...)`` with the same trailing size (flattened).

    Returns:
        ``(Na, Nb)``; NaN where a row is constant.
    """
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cannot correlate vectors of {a.shape[1]} and {b.shape[1]} entries")
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    r = (a @ b.T) / (na[:, None] * nb[None, :])
    r[(na == 0)[:, None].expand_as(r) | (nb == 0)[None, :].expand_as(r)] = math.nan
    return r.float()


@dataclass(frozen=True)
class Interval:
    """A statistic with its percentile bootstrap interval (see :func:`bootstrap`).

    Attributes:
        estimate: the statistic on the data as given, ``(...)``.
        lower, upper: the interval's ends, same shape; NaN where every replicate was NaN.
        level: the interval's coverage (0.95: the 2.5 and 97.5 percentiles).
        replicates: how many resamplings were drawn.
    """

    estimate: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    level: float
    replicates: int

    def __getitem__(self, index: Any) -> Interval:
        """The interval of one entry (or slice) of the statistic."""
        return Interval(self.estimate[index], self.lower[index], self.upper[index], self.level, self.replicates)

    @property
    def width(self) -> torch.Tensor:
        """``upper - lower``."""
        return self.upper - self.lower


def bootstrap(
    statistic: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    sizes: Mapping[str, int],
    replicates: int = 2000,
    level: float = 0.95,
    generator: int = 0,
    chunk: int = 250,
) -> Interval:
    """Percentile bootstrap over resampling units (photos, seeds), not over their pairs.

    Each replicate draws, for every unit, ``sizes[unit]`` indices with replacement;
    ``statistic`` maps such draws to one value per replicate. Units are drawn
    independently of each other, with one fixed generator (the same ``generator`` gives
    the same interval).

    Args:
        statistic: ``{unit: (R, sizes[unit]) long indices} -> (R, ...)``, vectorized over
            the R replicates; called once with the identity (``R = 1``) for the estimate,
            then on chunks of replicates. NaN marks a replicate without a value (for
            example a pair mean when every drawn photo is the same one); it is left out of
            the percentiles of that entry.
        sizes: the number of items of each unit (each at least 1).
        replicates: how many resamplings.
        level: the coverage, in (0, 1).
        generator: the int seed of the draws.
        chunk: replicates per call of ``statistic`` (bounds its memory).

    Returns:
        An :class:`Interval` of the statistic's shape ``(...)``.

    Example:
        >>> x = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.6])
        >>> ci = bootstrap(lambda i: x[i["photo"]].mean(dim=1), {"photo": 5}, 500)
        >>> bool(ci.lower <= ci.estimate <= ci.upper)
        True
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if replicates < 2:
        raise ValueError(f"replicates must be at least 2; got {replicates}")
    bad = {u: s for u, s in sizes.items() if int(s) < 1}
    if bad:
        raise ValueError(f"every resampling unit needs at least one item; got {bad}")
    units_ = sorted(sizes)  # a fixed draw order, whatever order the mapping has
    estimate = statistic({u: torch.arange(int(sizes[u]))[None] for u in units_})[0]
    g = torch.Generator().manual_seed(int(generator))
    parts = []
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        draws = {u: torch.randint(0, int(sizes[u]), (r, int(sizes[u])), generator=g) for u in units_}
        parts.append(statistic(draws).double())
    values = torch.cat(parts)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    ends = torch.nanquantile(values, q, dim=0)
    return Interval(estimate.double(), ends[0], ends[1], float(level), int(replicates))


def pair_means(r: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Mean correlation over the drawn pairs, per replicate (for :func:`bootstrap`).

    Args:
        r: ``(L, A, B)`` the correlation of each of A images with each of B reference
            images at L layers; NaN entries (a constant vector, or an image with itself
            on the diagonal of a within-set matrix) are left out of the means.
        rows: ``(R, a)`` drawn row indices; cols: ``(R, b)`` drawn column indices. For
            pairs within one set (``r`` square with a NaN diagonal), pass the same draw
            as rows and cols: a photo drawn twice is then never paired with itself.

    Returns:
        ``(R, L)``: each replicate's mean over its ``a x b`` pairs (NaN where none has a value).
    """
    sub = r[:, rows[:, :, None], cols[:, None, :]]  # (L, R, a, b)
    return torch.nanmean(sub.double(), dim=(-2, -1)).T


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two tensors of the same size (ties by average rank)."""
    return float(pearson(row_ranks(a.flatten()[None]), row_ranks(b.flatten()[None]))[0, 0])


def row_ranks(x: torch.Tensor) -> torch.Tensor:
    """The rank of each entry along the last axis (0-based, ties at their average rank).

    Example:
        >>> row_ranks(torch.tensor([[3.0, 1.0, 3.0, 0.0]]))
        tensor([[2.5000, 1.0000, 2.5000, 0.0000]], dtype=torch.float64)
    """
    x = x.double()
    values, order = x.sort(dim=-1)
    n = x.shape[-1]
    pos = torch.arange(n, dtype=torch.float64, device=x.device).expand_as(values)
    new = torch.ones_like(values, dtype=torch.bool)
    new[..., 1:] = values[..., 1:] != values[..., :-1]
    if bool(new.all()):  # no ties: the ranks are the sorting order inverted
        return torch.empty_like(values).scatter_(-1, order, pos)
    group = new.long().cumsum(dim=-1) - 1  # the tie group of each sorted entry
    sums = torch.zeros_like(values).scatter_add_(-1, group, pos)
    counts = torch.zeros_like(values).scatter_add_(-1, group, torch.ones_like(values))
    mean = sums.gather(-1, group) / counts.gather(-1, group)
    return torch.empty_like(values).scatter_(-1, order, mean)

"""Matrix factorizations for concepts: NMF, semi-NMF and non-negative least squares, in torch.

``A ~ U W`` with ``A`` an ``(n, m)`` matrix (one row per image patch, one column per channel),
``U`` ``(n, k)`` non-negative coefficients and ``W`` ``(k, m)`` the concept vectors:

- :func:`nmf`: ``W >= 0`` too (for non-negative activations: ReLU layers), by HALS
  (hierarchical alternating least squares, Cichocki & Phan 2009; the same coordinate descent
  as scikit-learn's ``solver="cd"``), initialized by NNDSVDa (Boutsidis & Gallopoulos 2008;
  scikit-learn's default) or at random from a ``torch.Generator`` seed;
- :func:`semi_nmf`: ``W`` signed (for signed activations: transformer token layers; Ding, Li &
  Jordan 2010), ``U`` by the same HALS steps and ``W`` by exact least squares;
- :func:`nnls`: ``U`` for new rows with ``W`` fixed (an image's coefficients).

Each returns ``W`` with unit rows (``U`` scaled to match), so a coefficient is "how much of
the unit concept vector", comparable between concepts. Everything runs in float64 on the
device of ``A`` and is deterministic for a given input (and seed, with ``init="random"``).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.rand(60, 4, generator=g) @ torch.rand(4, 12, generator=g)
    >>> f = nmf(a, 4)
    >>> f.u.shape, f.w.shape, f.relative_error < 0.01
    (torch.Size([60, 4]), torch.Size([4, 12]), True)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

__all__ = ["Factorization", "explained_shares", "nmf", "nnls", "semi_nmf"]

#: Smallest entry HALS leaves in ``W`` (NMF): an exact zero row could never come back.
_FLOOR = 1e-12


@dataclass
class Factorization:
    """``A ~ U W``.

    Attributes:
        u: ``(n, k)`` non-negative coefficients.
        w: ``(k, m)`` concept vectors, unit rows.
        relative_error: ``||A - U W|| / ||A||`` (Frobenius) at the end.
        iterations: how many alternating steps ran.
        converged: the relative error changed by less than ``tol`` in the last step.
        l1: the L1 penalty's weight on ``U`` (absolute: :func:`nnls` with it gives this ``U``'s rows).
    """

    u: torch.Tensor
    w: torch.Tensor
    relative_error: float
    iterations: int
    converged: bool
    l1: float = 0.0


def _check(a: torch.Tensor, k: int, nonnegative: bool) -> torch.Tensor:
    if a.dim() != 2:
        raise ValueError(f"the matrix to factorize must be 2-d (rows x channels); got shape {tuple(a.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of concepts k must be a positive integer; got {k!r}")
    n, m = a.shape
    if k > min(n, m):
        raise ValueError(f"k = {k} concepts cannot be found in a {n} x {m} matrix; use k <= {min(n, m)}")
    if not torch.isfinite(a).all():
        raise ValueError("the matrix to factorize has non-finite entries (NaN or infinity)")
    a = a.double()
    if nonnegative and float(a.min()) < 0:
        raise ValueError(f"NMF needs non-negative data; its smallest entry is {float(a.min()):.3g} "
                         "(use the signed factorization, semi-NMF, for this layer)")
    return a


def _top_svd(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` leading singular triplets of ``A`` ``(n, m)``: ``(U (n, k), s (k,), V^T (k, m))``.

    From the eigenvectors of the smaller Gram matrix (``A^T A`` or ``A A^T``): exact, and
    cheaper than a full SVD of a tall matrix (``n m^2`` instead of a LAPACK SVD's larger constant).
    """
    if a.shape[0] >= a.shape[1]:
        # The Gram matrix in float32 (a start needs no more; in float64 it took 33 s of a 10878 x 1280
        # NMF's 44 on a busy 2-core machine), its eigenvectors in float64.
        f = a.float()
        vals, vecs = torch.linalg.eigh((f.T @ f).double())
        vals, v = vals.flip(0)[:k].clamp(min=0), vecs.flip(1)[:, :k]
        s = vals.sqrt()
        u = (a @ v) / s.clamp(min=1e-30)
        return u, s, v.T
    u, s, vt = _top_svd(a.T, k)
    return vt.T, s, u.T


def _nndsvda(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVD with the near-zero entries filled by the mean of ``|A|`` (scikit-learn's ``nndsvda``,
    which fills with the mean of ``A``: the same for non-negative data)."""
    uu, s, vh = _top_svd(a, k)
    u = torch.zeros(a.shape[0], k, dtype=a.dtype, device=a.device)
    w = torch.zeros(k, a.shape[1], dtype=a.dtype, device=a.device)
    # The leading pair can be taken positive (Perron-Frobenius for non-negative data).
    u[:, 0] = s[0].sqrt() * uu[:, 0].abs()
    w[0] = s[0].sqrt() * vh[0].abs()
    for j in range(1, k):
        x, y = uu[:, j], vh[j]
        xp, xn, yp, yn = x.clamp(min=0), (-x).clamp(min=0), y.clamp(min=0), (-y).clamp(min=0)
        mp = xp.norm() * yp.norm()
        mn = xn.norm() * yn.norm()
        # The sign pair with the larger mass; the smaller would be a worse rank-1 piece.
        if mp >= mn:
            xs, ys, mass = xp / xp.norm().clamp(min=1e-30), yp / yp.norm().clamp(min=1e-30), mp
        else:
            xs, ys, mass = xn / xn.norm().clamp(min=1e-30), yn / yn.norm().clamp(min=1e-30), mn
        lam = (s[j] * mass).sqrt()
        u[:, j], w[j] = lam * xs, lam * ys
    avg = a.abs().mean()
    u[u < 1e-12] = avg
    w[w < 1e-12] = avg
    return u, w


def _random_init(a: torch.Tensor, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform entries scaled so that ``U W`` has the mean of ``A`` (scikit-learn's ``random``)."""
    scale = (a.mean().clamp(min=1e-12) / k).sqrt().item()
    u = torch.rand(a.shape[0], k, generator=generator, dtype=torch.float64).to(a.device) * scale
    w = torch.rand(k, a.shape[1], generator=generator, dtype=torch.float64).to(a.device) * scale
    return u, w


def _hals_u(u: torch.Tensor, a_wt: torch.Tensor, wwt: torch.Tensor, l1: float = 0.0) -> None:
    """One HALS sweep over the columns of ``u`` (in place): ``min 1/2 ||A - U W||^2 + l1 sum(U)``, ``U >= 0``.

    ``a_wt = A W^T`` ``(n, k)``, ``wwt = W W^T`` ``(k, k)``; ``W`` may be signed.
    """
    for j in range(u.shape[1]):
        d = wwt[j, j]
        if d <= 0:
            continue
        u[:, j] = (u[:, j] + (a_wt[:, j] - u @ wwt[:, j] - l1) / d).clamp(min=0)


#: Matrices with fewer entries than this are factorized on one CPU thread: their operations are too
#: small to share, and on a busy machine every thread handoff of the pool costs milliseconds (a
#: 240 x 30 NMF took 4.7 s on 2 threads, 0.15 s on one, at a load average of 6 on 2 cores).
SMALL = 1 << 20


@contextlib.contextmanager
def _threads_for(a: torch.Tensor) -> Iterator[None]:
    """One intra-op thread while working on a small CPU matrix (see :data:`SMALL`), restored after."""
    before = torch.get_num_threads()
    few = a.device.type == "cpu" and a.numel() < SMALL and before > 1
    if few:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if few:
            torch.set_num_threads(before)


def _error(a_sq: float, a: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> float:
    """``||A - U W||^2`` from ``||A||^2`` without forming ``U W`` (``tr(U^T A W^T)``, ``tr(U^T U W W^T)``)."""
    cross = float(((u.T @ a) * w).sum())
    quad = float(((u.T @ u) * (w @ w.T)).sum())
    return max(a_sq - 2 * cross + quad, 0.0)


#: Two concept vectors closer than this (|cosine|) are one concept twice: the later one restarts.
DUPLICATE = 0.98


def _revive(a: torch.Tensor, u: torch.Tensor, w: torch.Tensor, signed: bool, duplicates: bool = True) -> int:
    """Restart, in place, the dead concepts (a column of ``U`` all zero, which HALS never leaves)
    and (``duplicates``) the duplicates (a vector within :data:`DUPLICATE` of an earlier one, or of its opposite:
    with signed ``W`` two such vectors can cancel each other with huge coefficients): each takes
    the worst-fit row of ``A`` (largest residual; its non-negative part for NMF) as its vector,
    with that row's coefficient. Returns whether any was restarted."""
    unit = w / w.norm(dim=1, keepdim=True).clamp(min=1e-30)
    cos = (unit @ unit.T).abs().triu(diagonal=1)
    dead = [j for j in range(u.shape[1])
            if float(u[:, j].max()) <= 0 or (duplicates and float(cos[:, j].max()) > DUPLICATE)]
    for j in dead:
        u[:, j] = 0
        r = a - u @ w
        row = int((r * r).sum(dim=1).argmax())
        v = r[row] if signed else r[row].clamp(min=0)
        size = float(v.norm())
        if size <= 0:
            continue
        w[j] = v / size
        u[row, j] = size
    return len(dead)


def _unit_rows(u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    norms = w.norm(dim=1).clamp(min=1e-30)
    return u * norms[None], w / norms[:, None]


def _factorize(a: torch.Tensor, k: int, signed: bool, iterations: int, tol: float, init: str,
               generator: torch.Generator | int | None, sparsity: float = 0.0,
               progress: Callable[[int, float], None] | None = None) -> Factorization:
    """The alternating loop of :func:`nmf` (``signed=False``) and :func:`semi_nmf` (``signed=True``)."""
    if init == "nndsvda":
        u, w = _nndsvda(a, k)
        if signed:  # semi-NMF starts from the data's signed least-squares W for this U
            w = torch.linalg.lstsq(u, a).solution
    elif init == "random":
        g = generator if isinstance(generator, torch.Generator) else \
            torch.Generator().manual_seed(0 if generator is None else int(generator))
        u, w = _random_init(a, k, g)
    else:
        raise ValueError(f"init must be 'nndsvda' or 'random'; got {init!r}")
    a_sq = float((a * a).sum())
    norm = max(a_sq, 1e-300) ** 0.5
    previous = _error(a_sq, a, u, w) ** 0.5 / norm
    done, converged, err = 0, False, previous
    eye = torch.eye(k, dtype=a.dtype, device=a.device)
    budget = k  # duplicate restarts left to NMF (see below)
    l1 = sparsity * norm / a.shape[0] ** 0.5  # in units of the rows' RMS norm (W's rows are unit)
    for step in range(1, iterations + 1):
        done = step
        _hals_u(u, a @ w.T, w @ w.T, l1)
        # NMF restarts duplicates a few times only (k in all): restarted on every step, two close
        # non-negative vectors kept an exact rank-k NMF from converging (error 0.10 instead of 4e-4
        # on the module's example); semi-NMF, whose opposite vectors cancel, always restarts them.
        restarted = _revive(a, u, w, signed, duplicates=signed or budget > 0)
        if restarted:
            budget -= restarted
            previous = math.inf  # the fit jumped: do not take this step for convergence
        utu, uta = u.T @ u, u.T @ a
        if signed:
            # Least squares for W (a tiny ridge keeps it defined when a concept's column of U is zero).
            w = torch.linalg.solve(utu + 1e-10 * utu.diagonal().mean().clamp(min=1e-30) * eye, uta)
        else:
            for j in range(k):
                d = utu[j, j]
                if d > 0:
                    w[j] = (w[j] + (uta[j] - utu[j] @ w) / d).clamp(min=_FLOOR)
        # ||A - U W||^2 from the products at hand (U did not change since U^T A and U^T U).
        err = max(a_sq - 2 * float((uta * w).sum()) + float((utu * (w @ w.T)).sum()), 0.0) ** 0.5 / norm
        u, w = _unit_rows(u, w)
        if progress is not None:
            progress(step, err)
        if abs(previous - err) < tol * max(previous, 1e-30):
            converged = True
            break
        previous = err
    # The last U was fit to the W before the last W step: refit it (W fixed), so that U is the
    # coefficients :func:`nnls` gives for W, as for any new row.
    u = _nnls(a, w, 200, 1e-7, l1, start=u)
    err = _error(a_sq, a, u, w) ** 0.5 / norm
    return Factorization(u=u, w=w, relative_error=err, iterations=done, converged=converged, l1=l1)


def nmf(a: torch.Tensor, k: int, *, iterations: int = 300, tol: float = 1e-5, init: str = "nndsvda",
        generator: torch.Generator | int | None = None, sparsity: float = 0.0,
        progress: Callable[[int, float], None] | None = None) -> Factorization:
    """Non-negative matrix factorization ``A ~ U W``, ``U, W >= 0``, by HALS.

    Args:
        a: ``(n, m)``, non-negative.
        k: the number of concepts (``1 <= k <= min(n, m)``).
        iterations: at most this many alternating steps.
        tol: stop once the relative error changes by less than ``tol`` (relative) in a step.
        init: ``"nndsvda"`` (deterministic) or ``"random"`` (from ``generator``).
        generator: a ``torch.Generator`` or an int seed, for ``init="random"``.
        sparsity: an L1 penalty on ``U``, ``sparsity * rms(row norm of A) * sum(U)`` added to
            ``1/2 ||A - U W||^2`` (0: none).
        progress: called as ``progress(step, relative_error)`` after each step.

    Returns:
        A :class:`Factorization` in float64, ``W`` with unit rows.

    Raises:
        ValueError: negative or non-finite entries, or ``k`` out of range.
    """
    a = _check(a, k, True)
    with _threads_for(a):
        return _factorize(a, k, False, iterations, tol, init, generator, sparsity, progress)


def semi_nmf(a: torch.Tensor, k: int, *, iterations: int = 300, tol: float = 1e-5, init: str = "nndsvda",
             generator: torch.Generator | int | None = None, sparsity: float = 0.05,
             restarts: int = 2, progress: Callable[[int, float], None] | None = None) -> Factorization:
    """Semi-NMF ``A ~ U W``: ``U >= 0``, ``W`` signed (for signed activations).

    Without a penalty its solutions are not unique: for any invertible ``R >= 0``, ``(U R)
    (R^-1 W)`` fits exactly as well (``W`` is free), and mixtures of the concepts are found as
    often as the concepts. The default L1 penalty on ``U`` (``sparsity``, see :func:`nmf`) picks the
    sparsest of them, which unmixes them: a mixture spreads each patch over several concepts.
    The first start is ``init`` (NNDSVDa: the non-negative ``U`` it makes of the SVD of ``A``,
    with ``W`` fit to it by least squares); each of the other ``restarts - 1`` is random (from
    ``generator``, then ``generator + 1``, ...), and the fit with the smallest error is kept:
    with the penalty, a start can end in a poor local minimum (two concepts sharing one planted
    vector) whose error is several times the good one's. Other arguments and result as :func:`nmf`.
    """
    a = _check(a, k, False)
    base = 0 if generator is None or isinstance(generator, torch.Generator) else int(generator)
    with _threads_for(a):
        fits = [_factorize(a, k, True, iterations, tol, init, generator, sparsity, progress)]
        for r in range(1, max(1, restarts)):
            g = generator if isinstance(generator, torch.Generator) else base + r - 1
            fits.append(_factorize(a, k, True, iterations, tol, "random", g, sparsity, progress))
    return min(fits, key=lambda f: f.relative_error)


def nnls(a: torch.Tensor, w: torch.Tensor, *, l1: float = 0.0, iterations: int = 200,
         tol: float = 1e-6) -> torch.Tensor:
    """Non-negative coefficients ``U`` of the rows of ``A`` on fixed concept vectors ``W``.

    ``min 1/2 ||A - U W||^2 + l1 sum(U)``, ``U >= 0``, by HALS from the clamped least-squares
    solution (``l1``: the :attr:`Factorization.l1` of the fit that gave ``W``, to measure new rows
    as the fit measured its own).

    Args:
        a: ``(n, m)``; w: ``(k, m)``, signed or not.

    Returns:
        ``(n, k)`` float64.
    """
    a, w = a.double(), w.to(a.device).double()
    with _threads_for(a):
        return _nnls(a, w, iterations, tol, l1)


def _nnls(a: torch.Tensor, w: torch.Tensor, iterations: int, tol: float, l1: float,
          start: torch.Tensor | None = None) -> torch.Tensor:
    wwt = w @ w.T
    a_wt = a @ w.T
    k = w.shape[0]
    eye = torch.eye(k, dtype=a.dtype, device=a.device)
    u = start.clone() if start is not None else \
        torch.linalg.solve(wwt + 1e-10 * wwt.diagonal().mean() * eye, a_wt.T).T.clamp(min=0)
    for _ in range(iterations):
        before = u.clone()
        _hals_u(u, a_wt, wwt, l1)
        if float((u - before).abs().max()) <= tol * max(float(u.abs().max()), 1e-30):
            break
    return u


def explained_shares(a: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Each concept's share of what the factorization explains, and the fraction it explains.

    Concept ``i``'s part is ``D_i = ||A - U W + u_i w_i||^2 - ||A - U W||^2``, how much the squared
    error grows when the concept is removed (its coefficients set to zero, the others kept): at a
    least-squares optimum of ``U`` it equals ``||u_i w_i||^2``, the concept's own energy, and it is
    never negative there (zero coefficients are a feasible ``U``). The shares are ``D_i / sum_j D_j``
    (negative parts of an unconverged fit count as 0) and add up to 1. The fraction is
    ``1 - ||A - U W||^2 / ||A||^2``: of the variance when ``A`` is centred (semi-NMF), of the sum of
    squares otherwise (NMF).

    Args:
        a: ``(n, m)``; u: ``(n, k)``; w: ``(k, m)``.

    Returns:
        ``(shares (k,), fraction)``.
    """
    a, u, w = a.double(), u.double(), w.double()
    r = a - u @ w  # (n, m): one residual, k rank-1 corrections
    parts = (u * u).sum(dim=0) * (w * w).sum(dim=1) + 2 * ((r @ w.T) * u).sum(dim=0)
    parts = parts.clamp(min=0)
    total = parts.sum()
    shares = parts / total if float(total) > 0 else torch.full_like(parts, float("nan"))
    a_sq = float((a * a).sum())
    fraction = 1 - float((r * r).sum()) / a_sq if a_sq > 0 else float("nan")
    return shares, fraction

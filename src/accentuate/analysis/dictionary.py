"""Fitting a sparse autoencoder (a dictionary of latents) to rows of activations, and measuring it.

:func:`fit_sae` fits a **TopK sparse autoencoder** (Gao et al. 2024, "Scaling and evaluating
sparse autoencoders") to rows ``x`` ``(n, d_in)`` (a layer's channel vector at every position of
a photo set: :func:`accentuate.train_sae` collects them, :mod:`accentuate.analysis.sae_training`):

    ``z = TopK_k(ReLU((x - b_dec) W_enc + b_enc))``,  ``x_hat = z W_dec + b_dec``,

minimizing ``||x - x_hat||^2`` with Adam. The parts:

- **Scale.** The rows are multiplied by one constant so that their mean squared norm is ``d_in``
  while training; the constant is folded into ``b_enc`` and ``b_dec`` of the SAE returned, so it
  reads the layer's own activations and its codes are in the layer's units.
- **Decoder.** Its rows (``W_dec`` ``(d_sae, d_in)``, the latents' directions) have unit norm:
  the part of each gradient along its row is removed before a step and the rows are normalized
  after it. The encoder starts as the decoder's transpose, ``b_dec`` at the mean row.
- **Dead-latent revival.** A latent that has not fired for ``dead_after`` rows is dead; every
  ``revive_every`` steps (until 80 % of the steps) the dead latents are re-initialized toward
  rows of the current batch that are poorly reconstructed (drawn in proportion to their squared
  error): its decoder row is that row's residual direction, its encoder column the same direction
  at the mean norm of the live latents' columns, its bias 0, its Adam moments reset.
- **Reproducible and resumable.** All randomness is torch's, from ``seed``; the batch of each
  step is a function of the step alone. The state (weights, Adam, step) is written to a file
  every ``save_every`` seconds and when the run is interrupted (Ctrl-C); the same call resumes
  from it, and a resumed run ends where an uninterrupted one would.

**Quality** (:func:`sae_quality`): the fraction of variance explained
``1 - sum ||x - x_hat||^2 / sum ||x - mean||^2``, the mean number of active latents per row, the
dead latents (active on no row), and each latent's frequency. **Stability**
(:func:`match_latents`): the latents of two SAEs matched one to one by the Hungarian method on the
cosine of their decoder rows (:func:`linear_assignment`, in numpy: scipy is not needed).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> atoms = F.normalize(torch.randn(8, 6, generator=g), dim=1)      # 8 directions in 6-d
    >>> which = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(2000)])
    >>> x = torch.zeros(2000, 8).scatter(1, which, 1.0) @ atoms          # each row: 2 of them
    >>> fit = fit_sae(x, latents=8, k=2, steps=200, batch=256)
    >>> fit.sae, match_latents(fit.sae, atoms)["above_0.9"] >= 0.75      # the directions, found again
    (SparseAutoencoder(d_in=6, d_sae=8, topk k=2), True)
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..sae import SparseAutoencoder

__all__ = ["Rows", "chunk_ranges", "default_lr", "fit_sae", "held_out_mask", "linear_assignment", "match_latents",
           "progress_bar", "sae_quality"]

#: Rows of the scale and the decoder bias' start.
_SAMPLE = 16384


# -- the assignment problem ------------------------------------------------------------------------
def linear_assignment(cost: np.ndarray | torch.Tensor, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The assignment of rows to columns with the least total cost (the most, with ``maximize``):
    every row of the smaller side gets its own column (or row).

    The shortest-augmenting-path form of the Hungarian method (Jonker and Volgenant; Kuhn-Munkres
    with potentials), ``O(n^2 m)``, with numpy inside each augmentation: about 5 s for a
    2048 x 2048 matrix on one core. The same optimum as ``scipy.optimize.linear_sum_assignment``
    (which tests compare it with).

    Returns:
        ``(rows, cols)``, sorted by row: row ``rows[i]`` goes with column ``cols[i]``.

    Example:
        >>> linear_assignment(np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
        (array([0, 1, 2]), array([1, 0, 2]))
    """
    c = np.asarray(cost.detach().cpu().double() if isinstance(cost, torch.Tensor) else cost, dtype=np.float64)
    if c.ndim != 2 or 0 in c.shape:
        raise ValueError(f"the cost must be a non-empty matrix; got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("the cost matrix has NaN or infinite entries")
    if maximize:
        c = -c
    flip = c.shape[0] > c.shape[1]
    if flip:
        c = c.T
    n, m = c.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: the row (1-based) holding column j; owner[0]: the new row
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            cur = c[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.nonzero(owner[1:])[0]
    rows = owner[1:][cols] - 1
    if flip:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def match_latents(a: SparseAutoencoder | torch.Tensor, b: SparseAutoencoder | torch.Tensor) -> dict[str, Any]:
    """Match the latents of two SAEs one to one by the cosine of their decoder rows (Hungarian
    method, :func:`linear_assignment`, the largest total cosine).

    Args:
        a, b: SAEs with a decoder, or their decoder matrices ``(d_sae, d_in)``.

    Returns:
        ``{"pairs": (n, 2) array of (latent of a, latent of b), "cosine": (n,) their cosines,
        "mean_cosine", "median_cosine", "above_0.7", "above_0.9"}`` (shares of ``a``'s latents).
    """
    wa, wb = (x.W_dec if isinstance(x, SparseAutoencoder) else torch.as_tensor(x) for x in (a, b))
    if wa is None or wb is None:
        raise ValueError("both SAEs need a decoder (W_dec) to be matched")
    if wa.shape[1] != wb.shape[1]:
        raise ValueError(f"the SAEs read different layers: d_in {wa.shape[1]} and {wb.shape[1]}")
    na = F.normalize(wa.detach().double().cpu(), dim=1)
    nb = F.normalize(wb.detach().double().cpu(), dim=1)
    cos = (na @ nb.T).numpy()
    rows, cols = linear_assignment(cos, maximize=True)
    matched = cos[rows, cols]
    return {"pairs": np.stack([rows, cols], axis=1), "cosine": matched, "mean_cosine": float(matched.mean()),
            "median_cosine": float(np.median(matched)), "above_0.7": float((matched > 0.7).mean()),
            "above_0.9": float((matched > 0.9).mean())}


# -- rows: a layer's activations at every position -------------------------------------------------
Rows = torch.Tensor | np.ndarray


def _take(rows: Rows, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` as float32 ``(len(idx), d)`` (sorted first: a file is read forward)."""
    if isinstance(rows, torch.Tensor):
        return rows[idx].float()
    i = np.sort(idx.numpy())
    return torch.from_numpy(np.asarray(rows[i], dtype=np.float32))


def chunk_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of ``size``."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def progress_bar(total: int, desc: str, progress: bool, unit: str = "it", initial: int = 0) -> Any:
    """A tqdm bar on stderr (disabled unless ``progress``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=False, file=sys.stderr,
                dynamic_ncols=True, disable=not progress)


def held_out_mask(n: int, held_out: float, seed: int) -> np.ndarray:
    """A boolean mask of the held-out photos: ``round(held_out * n)`` of them (at least 1 when
    ``held_out > 0`` and ``n >= 2``), drawn from ``seed``."""
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out must be in [0, 1); got {held_out!r}")
    m = 0 if held_out == 0 or n < 2 else min(n - 1, max(1, round(held_out * n)))
    mask = np.zeros(n, dtype=bool)
    mask[torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:m].numpy()] = True
    return mask


# -- fitting ---------------------------------------------------------------------------------------
class _TopK(nn.Module):
    """The trainable SAE, in the scaled units of training."""

    def __init__(self, d_in: int, latents: int, k: int, bias: torch.Tensor, g: torch.Generator) -> None:
        super().__init__()
        w = F.normalize(torch.randn(latents, d_in, generator=g), dim=1)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(latents))
        self.b_dec = nn.Parameter(bias.clone())
        self.k = k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_hat, values, indices)``: the reconstruction, and the ``k`` active codes and their latents."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        top = pre.topk(self.k, dim=-1)
        vals = torch.relu(top.values)
        x_hat = F.embedding_bag(top.indices, self.W_dec, per_sample_weights=vals, mode="sum") + self.b_dec
        return x_hat, vals, top.indices

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the part of each decoder row's gradient along the row (it would only change its norm)."""
        g, w = self.W_dec.grad, self.W_dec
        if g is not None:
            g.sub_((g * w).sum(dim=1, keepdim=True) * w)


def _sample(rows: Rows, n: int, seed: int) -> torch.Tensor:
    m = len(rows)
    idx = torch.randperm(m, generator=torch.Generator().manual_seed(int(seed) + 7))[:min(n, m)]
    return _take(rows, idx)


def default_lr(latents: int) -> float:
    """``2e-3 * sqrt(2048 / latents)``, at most 4e-3: Gao et al.'s ``1 / sqrt(latents)`` scaling, at a
    level 10 times theirs, for the few thousand steps of many passes over a small photo set (on the
    GCompris pool's EfficientNet rows, 30 passes: 80.5 % of the variance on held-out photos at
    2e-3, 75.6 % at their 5.7e-4 after 5 passes, where 2e-3 gave 74.2 %)."""
    return min(4e-3, 2e-3 * math.sqrt(2048 / latents))


@dataclass
class _Fit:
    sae: SparseAutoencoder
    history: list[dict[str, float]]
    steps: int
    resumed_from: int
    seconds: float
    revived: int
    lr: float


class _Trainer:
    """The state of one training: the SAE being trained, Adam, when each latent last fired, the step;
    it takes one step at a time, and is written to and read from a file."""

    def __init__(self, rows: Rows, settings: dict[str, Any]) -> None:
        self.settings = json.loads(json.dumps(settings))
        d, latents, seed = settings["d_in"], settings["latents"], settings["seed"]
        sample = _sample(rows, _SAMPLE, seed).double()
        self.scale = math.sqrt(d / max(float(sample.pow(2).sum(dim=1).mean()), 1e-30))
        self.net = _TopK(d, latents, settings["k"], (sample.mean(dim=0) * self.scale).float(),
                         torch.Generator().manual_seed(int(seed)))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=settings["lr"])
        self.fired_at = torch.zeros(latents, dtype=torch.long)  # the row count when each latent last fired
        self.history: list[dict[str, float]] = []
        self.step, self.revived = 0, 0

    def load(self, path: Path) -> None:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        old = saved.get("settings") or {}
        if old != self.settings:
            diff = sorted(k for k in self.settings if old.get(k) != self.settings[k])
            raise ValueError(f"{path} holds a training with other settings ({', '.join(diff)}); remove the "
                             "folder or choose another to start again")
        self.net.load_state_dict(saved["net"])
        self.opt.load_state_dict(saved["optimizer"])
        self.fired_at, self.history, self.step = saved["fired_at"], saved["history"], int(saved["step"])
        self.scale, self.revived = float(saved["scale"]), int(saved["revived"])

    def save(self, path: Path) -> None:
        from ..outputs.io import atomic_write

        buf = io.BytesIO()
        torch.save({"settings": self.settings, "net": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                    "fired_at": self.fired_at, "history": self.history, "step": self.step, "scale": self.scale,
                    "revived": self.revived}, buf)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buf.getvalue())

    def take_step(self, x: torch.Tensor) -> None:
        """One Adam step on the rows ``x`` (already scaled); then the bookkeeping of live latents, the
        revival, and (every 10 steps) the history. ``self.step`` counts the steps done."""
        s, net, total = self.settings, self.net, self.settings["steps"]
        step = self.step
        for group in self.opt.param_groups:  # linear decay over the last 20 % of the steps
            group["lr"] = s["lr"] * min(1.0, (total - step) / max(1.0, 0.2 * total))
        x_hat, vals, ind = net(x)
        err = (x - x_hat).pow(2).sum(dim=1)
        self.opt.zero_grad(set_to_none=True)
        err.mean().backward()
        net.project_decoder_grad()
        self.opt.step()
        net.normalize_decoder()
        seen = (step + 1) * x.shape[0]
        self.fired_at[ind[vals > 0].unique()] = seen
        dead = (seen - self.fired_at) > s["dead_after"]
        if (step + 1) % s["revive_every"] == 0 and step < 0.8 * total and bool(dead.any()):
            self.revived += _revive(net, self.opt, x, x_hat.detach(), err.detach(), dead, s["seed"], step)
            self.fired_at[dead] = seen
        if step % 10 == 0 or step == total - 1:
            spread = float((x - x.mean(dim=0)).pow(2).sum())
            fve = 1 - float(err.detach().sum()) / max(spread, 1e-30)
            self.history.append({"step": step, "fve": round(fve, 5), "dead": int(dead.sum())})
        self.step = step + 1

    def applied(self) -> int:
        """The steps Adam has taken (one more than :attr:`step` when an interrupt came inside a step)."""
        return max((int(st["step"]) for st in self.opt.state.values() if "step" in st), default=0)

    def sae(self) -> SparseAutoencoder:
        """The SAE in the rows' own units: the scale folded into the biases (see the module)."""
        net = self.net
        with torch.no_grad():
            return SparseAutoencoder(net.W_enc.detach().clone(), net.b_enc.detach() / self.scale,
                                     net.b_dec.detach() / self.scale, net.W_dec.detach().clone(), activation="topk",
                                     k=net.k)


def fit_sae(rows: Rows, latents: int, k: int, *, steps: int | None = None, epochs: float = 30.0, batch: int = 1024,
            lr: float | None = None, seed: int = 0, dead_after: int | None = None, revive_every: int | None = None,
            state: str | os.PathLike | None = None, save_every: float = 60.0, progress: bool = False,
            on_step: Callable[[int], None] | None = None, config: dict[str, Any] | None = None) -> _Fit:
    """Fit a TopK SAE to ``rows`` ``(n, d_in)`` (a tensor, or a numpy array or memory map); see the module.

    Args:
        latents, k: the number of latents (``d_sae``) and of active latents per row.
        steps: Adam steps; default: ``epochs`` passes over the rows.
        batch: rows per step (at most ``n``).
        lr: Adam's learning rate; default :func:`default_lr`; it decays linearly to 0 over the
            last 20 % of the steps.
        seed: the torch seed of the start, the batches and the revival.
        dead_after: rows without firing after which a latent is dead (default ``min(n, 262144)``).
        revive_every: steps between revivals (default: ``max(25, steps // 40)``).
        state: the file the training state is written to (every ``save_every`` seconds, at
            Ctrl-C) and resumed from.
        on_step: called with the step number after each step (tests stop a run with it).
        config: what the state must agree with to be resumed (besides these arguments).

    Returns:
        the :class:`~accentuate.sae.SparseAutoencoder` in the rows' own units, its history
        (per logged step: ``step``, ``fve`` of the batch, ``dead``), steps, where it resumed from.

    Raises:
        ValueError: ``k`` or ``latents`` out of range, too few rows, a state made with other settings.
    """
    n, d = int(rows.shape[0]), int(rows.shape[1])
    for name, v in (("latents", latents), ("k", k), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if k > latents:
        raise ValueError(f"k = {k} active latents is more than the {latents} latents; use k <= latents")
    if n < 2:
        raise ValueError(f"{n} row(s) of activations are too few to train an SAE on; use more photos")
    batch = min(batch, n)
    per_epoch = max(1, n // batch)
    total = int(steps) if steps is not None else max(1, math.ceil(epochs * per_epoch))
    if total < 1:
        raise ValueError(f"steps must be >= 1; got {steps!r}")
    lr = float(lr) if lr is not None else default_lr(latents)
    trainer = _Trainer(rows, {
        "latents": latents, "k": k, "steps": total, "batch": batch, "lr": lr, "seed": seed, "rows": n, "d_in": d,
        "dead_after": int(dead_after) if dead_after is not None else min(n, 262144),
        "revive_every": int(revive_every) if revive_every is not None else max(25, total // 40), **(config or {})})
    path = Path(state) if state is not None else None
    if path is not None and path.is_file():
        trainer.load(path)
    start = trainer.step
    t0 = last_save = time.perf_counter()
    bar = progress_bar(total, f"SAE {latents} latents, k {k} (seed {seed})", progress, "step", initial=start)
    order, order_epoch = torch.empty(0, dtype=torch.long), -1
    try:
        while trainer.step < total:
            epoch, i = divmod(trainer.step, per_epoch)
            if epoch != order_epoch:  # the batches of a step depend on the seed and the step alone
                order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch))
                order_epoch = epoch
            trainer.take_step(_take(rows, order[i * batch:(i + 1) * batch]) * trainer.scale)
            if trainer.history:
                h = trainer.history[-1]
                bar.set_postfix_str(f"fve {h['fve']:.3f}, dead {h['dead']}", refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(trainer.step - 1)
            if path is not None and time.perf_counter() - last_save > save_every:
                trainer.save(path)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        if path is not None:
            trainer.step = max(trainer.step, trainer.applied())  # a step Adam took counts as done
            trainer.save(path)
        raise
    finally:
        bar.close()
    if path is not None:
        trainer.save(path)
    return _Fit(sae=trainer.sae(), history=trainer.history, steps=total, resumed_from=start,
                seconds=time.perf_counter() - t0, revived=trainer.revived, lr=lr)


@torch.no_grad()
def _revive(net: _TopK, opt: torch.optim.Optimizer, x: torch.Tensor, x_hat: torch.Tensor, err: torch.Tensor,
            dead: torch.Tensor, seed: int, step: int) -> int:
    """Re-initialize the dead latents toward poorly reconstructed rows of the batch; returns how many."""
    units = torch.nonzero(dead)[:, 0]
    g = torch.Generator().manual_seed(int(seed) * 7919 + step)
    weights = err.double().clamp(min=0) + 1e-12
    pick = torch.multinomial(weights, len(units), replacement=len(units) > len(weights), generator=g)
    resid = F.normalize((x - x_hat)[pick], dim=1)
    alive = ~dead
    norm = float(net.W_enc[:, alive].norm(dim=0).mean()) if bool(alive.any()) else 1.0
    net.W_dec[units] = resid
    net.W_enc[:, units] = resid.T * norm
    net.b_enc[units] = 0
    for p, columns in ((net.W_dec, False), (net.W_enc, True), (net.b_enc, False)):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                if columns:
                    st[key][:, units] = 0
                else:
                    st[key][units] = 0
    return len(units)


# -- quality ---------------------------------------------------------------------------------------
@torch.no_grad()
def sae_quality(sae: SparseAutoencoder, rows: Rows, batch: int = 4096) -> dict[str, Any]:
    """How well ``sae`` reconstructs ``rows`` ``(n, d_in)``: ``fve`` (the fraction of variance explained,
    ``1 - sum ||x - x_hat||^2 / sum ||x - mean||^2``), ``fraction`` (of the sum of squares,
    ``1 - sum ||x - x_hat||^2 / sum ||x||^2``), ``l0`` (mean active latents per row), ``dead`` (latents
    active on no row), ``frequency`` ``(d_sae,)`` (the share of rows where each is active), ``rows``."""
    n = int(rows.shape[0])
    if n == 0:
        return {"rows": 0, "fve": math.nan, "fraction": math.nan, "l0": math.nan, "dead": None, "frequency": None}
    sse = total = 0.0
    s1 = torch.zeros(sae.d_in, dtype=torch.float64)
    active = torch.zeros(sae.d_sae, dtype=torch.float64)
    l0 = 0.0
    for a, b in chunk_ranges(n, batch):
        x = _take(rows, torch.arange(a, b))
        z = sae.encode(x)
        x_hat = sae.decode(z)
        sse += float((x - x_hat).double().pow(2).sum())
        total += float(x.double().pow(2).sum())
        s1 += x.double().sum(dim=0)
        on = z > 0
        active += on.double().sum(dim=0)
        l0 += float(on.sum())
    spread = total - float(s1.pow(2).sum()) / n
    freq = active / n
    return {"rows": n, "fve": 1 - sse / spread if spread > 0 else math.nan,
            "fraction": 1 - sse / total if total > 0 else math.nan, "l0": l0 / n,
            "dead": int((active == 0).sum()), "frequency": freq.float()}



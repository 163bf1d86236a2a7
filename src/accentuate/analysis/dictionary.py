"""Training a sparse autoencoder (a dictionary of latents) on a layer, over a photo set.

:func:`train_sae` reads every photo as the concepts analysis does (centre-cropped to the square
canvas, the whole canvas seen at the model's input; :mod:`accentuate.analysis.concepts`), takes
the layer's channel vector at every position (a conv map's pixels, a ViT's patch tokens, the
class and register tokens left out) as one row, and fits a **TopK sparse autoencoder** (Gao et al.
2024, "Scaling and evaluating sparse autoencoders") to the rows:

    ``z = TopK_k(ReLU((x - b_dec) W_enc + b_enc))``,  ``x_hat = z W_dec + b_dec``,

minimizing ``||x - x_hat||^2`` with Adam. The parts:

- **Streaming.** The photos are read and run through the model a chunk at a time; the rows go to
  a float16 file in the output folder (``train/rows-train.npy``, ``train/rows-held.npy``), which
  training reads back in random batches, so that thousands of photos fit (only one chunk of
  views is in memory). A fraction of the photos (``held_out``, drawn from ``seed``) is kept out of
  training; its rows measure the quality.
- **Scale.** The rows are multiplied by one constant so that their mean squared norm is ``d_in``
  while training; the constant is folded into ``b_enc`` and ``b_dec`` when the SAE is written, so
  the checkpoint reads the layer's own activations and its codes are in the layer's units.
- **Decoder.** Its rows (``W_dec`` ``(d_sae, d_in)``, the latents' directions) have unit norm:
  the part of each gradient along its row is removed before a step and the rows are normalized
  after it. The encoder starts as the decoder's transpose, ``b_dec`` at the mean row.
- **Dead-latent revival.** A latent that has not fired for ``dead_after`` rows is dead; every
  ``revive_every`` steps (until 80 % of the steps) the dead latents are re-initialized toward
  rows of the current batch that are poorly reconstructed (drawn in proportion to their squared
  error): its decoder row is that row's residual direction, its encoder column the same direction
  at the mean norm of the live latents' columns, its bias 0, its Adam moments reset.
- **Reproducible and resumable.** All randomness is torch's, from ``seed``; the batch of each
  step is a function of the step alone. The state (weights, Adam, step) is written to
  ``train/state-seed{S}.pt`` every ``save_every`` seconds and when the run is interrupted
  (Ctrl-C); the same call resumes from it, and a resumed run ends where an uninterrupted one would.

**Quality** (:func:`sae_quality`), on the held-out rows and on the training rows: the fraction of
variance explained ``1 - sum ||x - x_hat||^2 / sum ||x - mean||^2``, the mean number of active
latents per row, the dead latents (never active on the training rows), and each latent's
frequency. **Stability**: a second SAE from ``seed + 1``, its latents matched to the first's by
the Hungarian method on the cosine of their decoder rows (:func:`linear_assignment`, in numpy:
scipy is not needed); the mean matched cosine and the share of latents matched above 0.7 and 0.9.

The checkpoint (``sae_weights.safetensors`` and ``cfg.json`` in the output folder) is the one
:func:`accentuate.sae.load_sae` reads; ``quality.json`` beside it holds the numbers.

Example:
    >>> import accentuate as acc                                                       # doctest: +SKIP
    >>> run = acc.train_sae(model, "photos/", layer="blocks.10", latents=2048, k=32, out="runs/sae")  # doctest: +SKIP
    >>> run.quality["held_out"]["fve"], acc.load_sae("runs/sae")                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..images import SeedLike, resize
from ..layout import Layout
from ..sae import SparseAutoencoder, save_sae
from ..spec import ModelSpec, resolve_spec
from ._shared import ImageSet

__all__ = ["SAETraining", "collect_rows", "fit_sae", "linear_assignment", "match_latents", "sae_quality", "train_sae"]

#: Photos read and run through the model at a time.
CHUNK = 16
#: Rows of the scale and the decoder bias' start.
_SAMPLE = 16384
#: The largest activation the float16 row files take.
_FLOAT16_MAX = 65000.0


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
    wa, wb = (x.W_dec if isinstance(x, SparseAutoencoder) else x for x in (a, b))
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


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _bar(total: int, desc: str, progress: bool, unit: str = "it", initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=False, file=sys.stderr,
                dynamic_ncols=True, disable=not progress)


def _fingerprint(sources: Sequence[SeedLike], extra: dict[str, Any]) -> str:
    """What the rows are made of: the photos (a file's path, size and time; a tensor's bytes), the
    layer, model and canvas."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for s in sources:
        if isinstance(s, (str, os.PathLike)):
            st = Path(s).stat()
            h.update(f"{s}|{st.st_size}|{st.st_mtime_ns}".encode())
        elif isinstance(s, torch.Tensor):
            h.update(s.detach().cpu().float().contiguous().numpy().tobytes())
        else:
            h.update(np.asarray(s).tobytes())
    return h.hexdigest()[:16]


def _split(n: int, held_out: float, seed: int) -> np.ndarray:
    """A boolean mask of the held-out photos: ``round(held_out * n)`` of them (at least 1 when
    ``held_out > 0`` and ``n >= 2``), drawn from ``seed``."""
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out must be in [0, 1); got {held_out!r}")
    m = 0 if held_out == 0 or n < 2 else min(n - 1, max(1, round(held_out * n)))
    mask = np.zeros(n, dtype=bool)
    mask[torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:m].numpy()] = True
    return mask


def collect_rows(model: nn.Module, sources: Sequence[SeedLike], layer: str, layout: Layout, *, spec: ModelSpec,
                 canvas: int, held: np.ndarray, folder: Path | None = None, chunk: int = CHUNK,
                 progress: bool = False) -> tuple[Rows, Rows]:
    """The layer's channel vector at every position of every photo, ``(rows, d_in)``, for the
    training photos and the held-out ones (``held``, a mask over ``sources``).

    With ``folder``, the rows go to ``folder/rows-train.npy`` and ``rows-held.npy`` (float16 files,
    read back as memory maps) a chunk of photos at a time, and a collection that was stopped is
    continued (``folder/rows.json`` says how far it got and what it was made of); without, they
    are kept in memory (float32).
    """
    from .concepts import _positions, canvas_seed

    p = layout.grid[0] * layout.grid[1]
    d = layout.channels
    counts = {"train": int((~held).sum()) * p, "held": int(held.sum()) * p}
    meta = {"layer": layer, "model": spec.name, "canvas": canvas, "input_size": list(spec.input_size),
            "positions": p, "channels": d, "held": [int(i) for i in np.nonzero(held)[0]]}
    fp = _fingerprint(sources, meta)
    done = 0
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        info_path = folder / "rows.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        fresh = info.get("fingerprint") != fp or not all((folder / f"rows-{s}.npy").is_file() for s in counts)
        done = 0 if fresh else int(info.get("photos_done", 0))
        store = {s: np.lib.format.open_memmap(folder / f"rows-{s}.npy", mode="w+" if fresh else "r+",
                                              dtype=np.float16, shape=(counts[s], d)) for s in counts}
    else:
        store = {s: torch.empty(counts[s], d) for s in counts}
    # where each photo's rows go
    offset = {"train": 0, "held": 0}
    starts = []
    for h in held:
        s = "held" if h else "train"
        starts.append((s, offset[s]))
        offset[s] += p
    bar = _bar(len(sources), "activations", progress, "photo", initial=done)
    try:
        for a, b in _chunks(len(sources), chunk):
            if b <= done:
                continue
            views = torch.stack([resize(canvas_seed(src, canvas), spec.input_size) for src in sources[a:b]])
            acts = _positions(model, spec, views, layer, layout, batch=chunk)  # (n, P, C)
            big = float(acts.abs().max())
            if folder is not None and not big < _FLOAT16_MAX:
                raise ValueError(f"the activations of {layer!r} reach {big:.4g}, more than float16 holds; train "
                                 "on another layer, or without an output folder (rows kept in memory)")
            for r in range(b - a):
                s, at = starts[a + r]
                if isinstance(store[s], torch.Tensor):
                    store[s][at:at + p] = acts[r].float()
                else:
                    store[s][at:at + p] = acts[r].numpy().astype(np.float16)
            if folder is not None:
                for m in store.values():
                    m.flush()  # type: ignore[union-attr]
                _write_json(folder / "rows.json", {"fingerprint": fp, "photos_done": b, **meta,
                                                   "rows": counts})
            bar.update(b - a)
    finally:
        bar.close()
    if folder is not None:
        return tuple(np.load(folder / f"rows-{s}.npy", mmap_mode="r") for s in ("train", "held"))  # type: ignore[return-value]
    return store["train"], store["held"]


def _write_json(path: Path, obj: Any) -> None:
    from ..outputs.io import atomic_write

    atomic_write(path, (json.dumps(obj, indent=2, default=_plain) + "\n").encode())


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, (np.ndarray, torch.Tensor)):
        return v.tolist()
    return str(v)


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


def _order(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The order of the rows in ``epoch`` (a function of the seed and the epoch alone)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch))


@dataclass
class _Fit:
    sae: SparseAutoencoder
    history: list[dict[str, float]]
    steps: int
    resumed_from: int
    seconds: float
    revived: int
    lr: float


def fit_sae(rows: Rows, latents: int, k: int, *, steps: int | None = None, epochs: float = 30.0, batch: int = 1024,
            lr: float | None = None, seed: int = 0, dead_after: int | None = None, revive_every: int | None = None,
            state: str | os.PathLike | None = None, save_every: float = 60.0, progress: bool = False,
            on_step: Callable[[int], None] | None = None, config: dict[str, Any] | None = None) -> _Fit:
    """Fit a TopK SAE to ``rows`` ``(n, d_in)`` (a tensor, or a numpy array or memory map); see the module.

    Args:
        latents, k: the number of latents (``d_sae``) and of active latents per row.
        steps: Adam steps; default: ``epochs`` passes over the rows.
        batch: rows per step (at most ``n``).
        lr: Adam's learning rate; default ``2e-4 * sqrt(16384 / latents)`` (Gao et al.'s rule),
            at most 4e-3; it decays linearly to 0 over the last 20 % of the steps.
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
    lr = float(lr) if lr is not None else min(4e-3, 2e-4 * math.sqrt(16384 / latents))
    dead_after = int(dead_after) if dead_after is not None else min(n, 262144)
    revive_every = int(revive_every) if revive_every is not None else max(25, total // 40)
    settings = {"latents": latents, "k": k, "steps": total, "batch": batch, "lr": lr, "seed": seed, "rows": n,
                "d_in": d, "dead_after": dead_after, "revive_every": revive_every, **(config or {})}

    sample = _sample(rows, _SAMPLE, seed).double()
    scale = math.sqrt(d / max(float(sample.pow(2).sum(dim=1).mean()), 1e-30))
    g = torch.Generator().manual_seed(int(seed))
    net = _TopK(d, latents, k, (sample.mean(dim=0) * scale).float(), g)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    fired_at = torch.zeros(latents, dtype=torch.long)  # the row count when each latent last fired
    history: list[dict[str, float]] = []
    start, revived = 0, 0
    state_path = Path(state) if state is not None else None
    if state_path is not None and state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        if saved.get("settings") != json.loads(json.dumps(settings)):
            diff = sorted(k2 for k2 in settings if (saved.get("settings") or {}).get(k2) != json.loads(
                json.dumps(settings[k2])))
            raise ValueError(f"{state_path} holds a training with other settings ({', '.join(diff)}); remove the "
                             "folder or choose another to start again")
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["optimizer"])
        fired_at, history, start, scale, revived = (saved["fired_at"], saved["history"], int(saved["step"]),
                                                    float(saved["scale"]), int(saved.get("revived", 0)))

    def save(step: int) -> None:
        if state_path is None:
            return
        from ..outputs.io import atomic_write

        buf = io.BytesIO()
        torch.save({"settings": json.loads(json.dumps(settings)), "net": net.state_dict(),
                    "optimizer": opt.state_dict(), "fired_at": fired_at, "history": history, "step": step,
                    "scale": scale, "revived": revived}, buf)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(state_path, buf.getvalue())

    t0 = time.perf_counter()
    last_save = t0
    bar = _bar(total, f"SAE {latents} latents, k {k} (seed {seed})", progress, "step", initial=start)
    step = start
    order, order_epoch = torch.empty(0, dtype=torch.long), -1
    try:
        for step in range(start, total):
            epoch, i = divmod(step, per_epoch)
            if epoch != order_epoch:
                order, order_epoch = _order(n, epoch, seed), epoch
            idx = order[i * batch:(i + 1) * batch]
            x = _take(rows, idx) * scale
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (total - step) / max(1.0, 0.2 * total))
            x_hat, vals, ind = net(x)
            err = (x - x_hat).pow(2).sum(dim=1)
            loss = err.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            net.project_decoder_grad()
            opt.step()
            net.normalize_decoder()
            seen = (step + 1) * batch
            fired_at[ind[vals > 0].unique()] = seen
            dead = (seen - fired_at) > dead_after
            if (step + 1) % revive_every == 0 and step < 0.8 * total and bool(dead.any()):
                revived += _revive(net, opt, x, x_hat.detach(), err.detach(), dead, seed, step)
                fired_at[dead] = seen
            if step % 10 == 0 or step == total - 1:
                with torch.no_grad():
                    spread = (x - x.mean(dim=0)).pow(2).sum()
                    fve = 1 - float(err.sum() / spread.clamp(min=1e-30))
                history.append({"step": step, "fve": round(fve, 5), "dead": int(dead.sum())})
                bar.set_postfix_str(f"fve {fve:.3f}, dead {int(dead.sum())}", refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(step)
            if state_path is not None and time.perf_counter() - last_save > save_every:
                save(step + 1)
                last_save = time.perf_counter()
        step = total
    except KeyboardInterrupt:
        save(step + 1 if _stepped(opt, step, start) else step)
        raise
    finally:
        bar.close()
    save(total)
    with torch.no_grad():
        sae = SparseAutoencoder(net.W_enc.detach().clone(), net.b_enc.detach() / scale, net.b_dec.detach() / scale,
                                net.W_dec.detach().clone(), activation="topk", k=k)
    return _Fit(sae=sae, history=history, steps=total, resumed_from=start, seconds=time.perf_counter() - t0,
                revived=revived, lr=lr)


def _stepped(opt: torch.optim.Optimizer, step: int, start: int) -> bool:
    """Whether step ``step`` was applied (Adam's own step count says), when an interrupt came."""
    counts = [int(s["step"]) for s in opt.state.values() if "step" in s]
    return bool(counts) and max(counts) >= step + 1


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
                _zero(st[key], units, columns)
    return len(units)


def _zero(t: torch.Tensor, units: torch.Tensor, columns: bool) -> None:
    if columns:
        t[:, units] = 0
    else:
        t[units] = 0


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
    for a, b in _chunks(n, batch):
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


# -- the whole training ----------------------------------------------------------------------------
@dataclass
class SAETraining:
    """What :func:`train_sae` made.

    Attributes:
        sae: the SAE (seed ``seed``); other: the second one (``seed + 1``) when stability was measured.
        layer, layout, model: where it reads; photos, held_out: photo names used for training and kept out.
        quality: ``{"train": ..., "held_out": ...}`` of :func:`sae_quality` (frequencies left out).
        frequency: ``(d_sae,)`` each latent's share of the training rows where it is active.
        stability: :func:`match_latents` of the two seeds' SAEs (numbers only), or ``None``.
        history: the logged training steps; timings: seconds of each part; out: the folder, or ``None``.
        config: the training settings.
    """

    sae: SparseAutoencoder
    layer: str
    layout: Layout
    model: str
    photos: list[str]
    held_out: list[str]
    quality: dict[str, dict[str, Any]]
    frequency: torch.Tensor
    stability: dict[str, Any] | None
    history: list[dict[str, float]]
    timings: dict[str, float]
    config: dict[str, Any]
    out: Path | None = None
    other: SparseAutoencoder | None = None
    revived: int = 0
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """``quality.json``: the settings, the quality numbers, the stability and the timings."""
        stab = None if self.stability is None else {k: v for k, v in self.stability.items()
                                                    if k not in ("pairs", "cosine")}
        return {"format": "accentuate-sae/1", "layer": self.layer, "layout": str(self.layout), "model": self.model,
                "photos": len(self.photos), "held_out_photos": self.held_out, "config": self.config,
                "quality": self.quality, "stability": stab, "revived": self.revived,
                "resumed_from_step": self.resumed_from, "timings": {k: round(v, 2) for k, v in self.timings.items()},
                "frequency": [round(float(f), 6) for f in self.frequency]}

    def summary(self) -> str:
        """The numbers, as lines of text (what the command line prints)."""
        q, h = self.quality["train"], self.quality["held_out"]
        lines = [f"SAE at {self.layer} ({self.layout}) of {self.model}: {self.sae.d_sae} latents, k {self.sae.k}, "
                 f"{len(self.photos)} photos ({q['rows']} rows) for training, {len(self.held_out)} held out "
                 f"({h['rows']} rows)",
                 f"  variance explained: {_pct(h['fve'])} on the held-out photos, {_pct(q['fve'])} on the training "
                 f"photos; active latents per position {q['l0']:.1f}; dead latents {q['dead']} of {self.sae.d_sae}"]
        if self.stability is not None:
            s = self.stability
            lines.append(f"  stability (seed {self.config['seed']} vs {self.config['seed'] + 1}, Hungarian matching "
                         f"of decoder rows): mean cosine {s['mean_cosine']:.3f}, {_pct(s['above_0.9'])} of latents "
                         f"above 0.9, {_pct(s['above_0.7'])} above 0.7")
        t = self.timings
        lines.append("  time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items()))
        return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def train_sae(
    model: nn.Module,
    photos: ImageSet,
    layer: str | None = None,
    latents: int = 2048,
    k: int = 32,
    *,
    out: str | os.PathLike | None = None,
    steps: int | None = None,
    epochs: float = 30.0,
    batch: int = 1024,
    lr: float | None = None,
    seed: int = 0,
    held_out: float = 0.1,
    stability: bool = True,
    canvas: int | None = None,
    chunk: int = CHUNK,
    spec: ModelSpec | None = None,
    progress: bool = False,
) -> SAETraining:
    """Train a TopK SAE on every position of ``layer`` over a photo set (see the module).

    Args:
        model: the model (left as found).
        photos: a folder (its subfolders too), a list of paths/PIL images/tensors, or ``(N, 3, H, W)``.
        layer: default :func:`~accentuate.analysis.concepts.default_concept_layer`.
        latents, k: latents of the SAE and active latents per position.
        out: the folder of the checkpoint (``sae_weights.safetensors``, ``cfg.json``), ``quality.json``,
            ``seed-{S}/`` (the second seed's checkpoint) and ``train/`` (the rows and the training
            states, from which an interrupted call resumes); ``None``: nothing is written, and an
            interrupted call starts again.
        steps, epochs, batch, lr: of :func:`fit_sae` (``epochs``: passes over the training rows).
        seed: the torch seed (the held-out photos, the start, the batches).
        held_out: the share of the photos kept out of training to measure the quality.
        stability: also train from ``seed + 1`` and match the two SAEs' latents.
        canvas: the side of the square canvas (default: the model's).
        chunk: photos read and run through the model at a time.

    Returns:
        :class:`SAETraining`.

    Raises:
        ValueError: a layer without positions, bad numbers, too few photos.
    """
    from ..hooks import model_state
    from .concepts import concept_photos, default_concept_layer, layer_layout

    started = time.perf_counter()
    spec = spec or resolve_spec(model)
    layer = layer or default_concept_layer(model, spec)
    layout = layer_layout(model, spec, layer)
    side = int(canvas if canvas is not None else spec.setting("canvas"))
    sources, names = concept_photos(photos)
    if len(sources) < 2:
        raise ValueError(f"{len(sources)} photo(s): an SAE needs at least 2 (one is held out); give more photos")
    held = _split(len(sources), held_out, seed)
    folder = Path(out) if out is not None else None
    t0 = time.perf_counter()
    with model_state(model):
        train_rows, held_rows = collect_rows(model, sources, layer, layout, spec=spec, canvas=side, held=held,
                                             folder=None if folder is None else folder / "train", chunk=chunk,
                                             progress=progress)
    timings = {"activations_s": time.perf_counter() - t0}
    config = {"latents": latents, "k": k, "batch": batch, "lr": lr, "epochs": epochs, "steps": steps, "seed": seed,
              "held_out": held_out, "canvas": side}
    where = {"layer": layer, "model": spec.name}
    fits = []
    seeds = [seed, seed + 1] if stability else [seed]
    for s in seeds:
        t = time.perf_counter()
        fits.append(fit_sae(train_rows, latents, k, steps=steps, epochs=epochs, batch=batch, lr=lr, seed=s,
                            state=None if folder is None else folder / "train" / f"state-seed{s}.pt",
                            progress=progress, config=where))
        timings[f"training_seed{s}_s"] = time.perf_counter() - t
    fit = fits[0]
    config.update({"steps": fit.steps, "lr": fit.lr})
    t = time.perf_counter()
    q_train, q_held = sae_quality(fit.sae, train_rows), sae_quality(fit.sae, held_rows)
    timings["quality_s"] = time.perf_counter() - t
    stab = None
    if stability:
        t = time.perf_counter()
        stab = match_latents(fit.sae, fits[1].sae)
        timings["matching_s"] = time.perf_counter() - t
    freq = q_train.pop("frequency")
    q_held.pop("frequency")
    timings["total_s"] = time.perf_counter() - started
    result = SAETraining(sae=fit.sae, layer=layer, layout=layout, model=spec.name,
                         photos=[nm for nm, h in zip(names, held) if not h],
                         held_out=[nm for nm, h in zip(names, held) if h],
                         quality={"train": q_train, "held_out": q_held}, frequency=freq, stability=stab,
                         history=fit.history, timings=timings, config=config, out=folder,
                         other=fits[1].sae if stability else None, revived=fit.revived,
                         resumed_from=fit.resumed_from)
    if folder is not None:
        meta = {"layer": layer, "model": spec.name, "layout": str(layout), "normalize_activations": "none",
                "trained_with": "accentuate train_sae", "training": {**config, "photos": len(result.photos),
                                                                     "rows": q_train["rows"]}}
        save_sae(fit.sae, folder, **meta)
        if stability:
            save_sae(fits[1].sae, folder / f"seed-{seed + 1}", **{**meta, "training": {**meta["training"],
                                                                                        "seed": seed + 1}})
        _write_json(folder / "quality.json", result.record())
        from ..sae import load_sae

        result.sae = load_sae(folder)  # the checkpoint as written: it has a path and a digest
    return result


def check_train_options(latents: int, k: int) -> None:
    """``UsageError`` for numbers of latents the command line should refuse before any work."""
    if latents < 1:
        raise UsageError(f"--latents must be >= 1; got {latents}")
    if not 1 <= k <= latents:
        raise UsageError(f"--k must be in 1..--latents ({latents}); got {k}")

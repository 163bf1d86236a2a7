"""Training a sparse autoencoder on a layer, over a photo set: :func:`train_sae`.

Every photo is read as the concepts analysis reads it (centre-cropped to the square canvas, the
whole canvas seen at the model's input; :mod:`accentuate.analysis.concepts`), and the layer's
channel vector at every position (a conv map's pixels, a ViT's patch tokens, the class and
register tokens left out) is one row; a TopK SAE is fitted to the rows
(:func:`accentuate.analysis.dictionary.fit_sae`, which says how).

- **Streaming.** The photos are read and run through the model a chunk at a time; the rows go to
  float16 files in the output folder (``train/rows-train.npy``, ``train/rows-held.npy``), which
  training reads back in random batches, so that thousands of photos fit (only one chunk of
  views is in memory). A fraction of the photos (``held_out``, drawn from ``seed``) is kept out of
  training; its rows measure the quality.
- **Resumable.** A collection that was stopped continues where it stopped (``train/rows.json``
  says how far it got, and what it was made of); each seed's training state is
  ``train/state-seed{S}.pt``. The same call after Ctrl-C resumes both.
- **Quality**, printed by :meth:`SAETraining.summary` and written to ``quality.json``: the
  fraction of variance explained on the held-out photos (and on the training photos), the mean
  number of active latents, the dead latents, and the **stability** between ``seed`` and
  ``seed + 1`` (their latents matched by the Hungarian method on the cosine of their decoder rows).

The checkpoint (``sae_weights.safetensors`` and ``cfg.json`` in the output folder; the second
seed's in ``seed-{S+1}/``) is the one :func:`accentuate.sae.load_sae` reads.

Example:
    >>> import accentuate as acc                                                       # doctest: +SKIP
    >>> run = acc.train_sae(model, "photos/", layer="blocks.10", latents=2048, k=32, out="runs/sae")  # doctest: +SKIP
    >>> run.quality["held_out"]["fve"], acc.load_sae("runs/sae")                        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..hooks import ModelRunner
from ..images import ImageSet, SeedLike, photo_set, resize, square_side
from ..layout import Layout
from ..sae import SparseAutoencoder, load_sae, save_sae
from ..spec import ModelSpec, resolve_spec
from .dictionary import Rows, chunk_ranges, fit_sae, held_out_mask, match_latents, progress_bar, sae_quality

__all__ = ["CHUNK", "SAETraining", "collect_rows", "train_sae"]

#: Photos read and run through the model at a time.
CHUNK = 16
#: The largest activation the float16 row files take.
_FLOAT16_MAX = 65000.0


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

    runner = ModelRunner(model, spec)
    p = layout.grid[0] * layout.grid[1]
    d = layout.channels
    counts = {"train": int((~held).sum()) * p, "held": int(held.sum()) * p}
    meta = {"layer": layer, "model": spec.name, "canvas": canvas, "input_size": list(spec.input_size),
            "positions": p, "channels": d, "held": [int(i) for i in np.nonzero(held)[0]]}
    fp = _fingerprint(sources, meta)
    done = 0
    store: dict[str, Any]
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
    bar = progress_bar(len(sources), "activations", progress, "photo", initial=done)
    try:
        for a, b in chunk_ranges(len(sources), chunk):
            if b <= done:
                continue
            views = torch.stack([resize(canvas_seed(src, canvas), spec.input_size) for src in sources[a:b]])
            acts = _positions(runner, views, layer, layout, batch=chunk)  # (n, P, C)
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


def _measure(fits: list[Any], train_rows: Rows, held_rows: Rows,
             timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The quality of the first SAE on the training and held-out rows, and the two seeds' matching."""
    t = time.perf_counter()
    q_train, q_held = sae_quality(fits[0].sae, train_rows), sae_quality(fits[0].sae, held_rows)
    timings["quality_s"] = time.perf_counter() - t
    if len(fits) < 2:
        return q_train, q_held, None
    t = time.perf_counter()
    stab = match_latents(fits[0].sae, fits[1].sae)
    timings["matching_s"] = time.perf_counter() - t
    return q_train, q_held, stab


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
    from .concepts import default_concept_layer, layer_layout

    started = time.perf_counter()
    spec = spec or resolve_spec(model)
    runner = ModelRunner(model, spec)
    layer = layer or default_concept_layer(model, spec, runner)
    layout = layer_layout(runner, layer)
    side = square_side(spec, canvas, "train_sae")
    entries = photo_set(photos)
    sources, names = [e[0] for e in entries], [e[2] for e in entries]
    if len(sources) < 2:
        raise ValueError(f"{len(sources)} photo(s): an SAE needs at least 2 (one is held out); give more photos")
    held = held_out_mask(len(sources), held_out, seed)
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
    q_train, q_held, stab = _measure(fits, train_rows, held_rows, timings)
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
        result.sae = _write(result, folder, fits[1].sae if stability else None)
    return result


def _write(result: SAETraining, folder: Path, other: SparseAutoencoder | None) -> SparseAutoencoder:
    """The checkpoint (and the second seed's in ``seed-{S+1}/``) and ``quality.json`` in ``folder``;
    returns the checkpoint as read back (with its path and digest)."""
    config = result.config
    meta: dict[str, Any] = {"layer": result.layer, "model": result.model, "layout": str(result.layout),
            "normalize_activations": "none", "trained_with": "accentuate train_sae",
            "training": {**config, "photos": len(result.photos), "rows": result.quality["train"]["rows"]}}
    save_sae(result.sae, folder, **meta)
    if other is not None:
        seed = int(config["seed"]) + 1
        save_sae(other, folder / f"seed-{seed}", **{**meta, "training": {**meta["training"], "seed": seed}})
    _write_json(folder / "quality.json", result.record())
    return load_sae(folder)

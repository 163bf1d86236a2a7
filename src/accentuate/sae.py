"""Sparse autoencoders (SAEs) on a layer's activations: the module, and its checkpoint on disk.

A :class:`SparseAutoencoder` maps a layer's channel vector at one position ``x`` ``(d_in,)`` to a
sparse code ``z`` ``(d_sae,)`` and back:

    ``pre = (x - b_dec) @ W_enc + b_enc``   (``x @ W_enc + b_enc`` when ``apply_b_dec_to_input`` is off)
    ``z = act(pre)``;  ``x_hat = z @ W_dec + b_dec``

with ``act`` one of ``relu`` (``max(pre, 0)``), ``topk`` (the ``k`` largest entries of ``pre``,
each through ReLU, the others 0) or ``jumprelu`` (``pre`` where ``pre > threshold``, else 0).
Unit ``u`` of ``z`` is a *latent*; :func:`accentuate.objectives.latent` makes it a target.

**The checkpoint** is the layout of the SAELens family: a folder (or a weights file with its
``cfg.json`` beside it) holding

- the weights, in safetensors (``sae_weights.safetensors``, what :func:`save_sae` writes) or
  torch format (``*.pt``/``*.pth``: a dict of tensors, loaded with ``weights_only=True``):
  ``W_enc`` ``(d_in, d_sae)``, ``b_enc`` ``(d_sae,)``, ``b_dec`` ``(d_in,)``, optionally
  ``W_dec`` ``(d_sae, d_in)`` (without it, codes can be computed but not decoded) and, for
  JumpReLU, ``threshold`` ``(d_sae,)`` (or ``log_threshold``);
- ``cfg.json``: ``d_in``, ``d_sae`` and the activation: ``"activation"`` (``relu``, ``topk``,
  ``jumprelu``) with ``"k"`` for TopK; SAELens' ``"architecture"`` (``standard``, ``topk``,
  ``jumprelu``) and ``"activation_fn_str"``/``"activation_fn_kwargs": {"k": ...}`` are read too;
  optionally ``apply_b_dec_to_input`` (default true, as in SAELens) and ``normalize_activations``
  (only ``"none"`` is supported: fold any scaling into the weights first).

:func:`load_sae` reads one (every problem is a one-line :class:`~accentuate.errors.CheckpointError`
naming the file and what was expected); :func:`save_sae` writes one. A loaded SAE knows its
``path`` and ``digest`` (the SHA-256 of ``cfg.json`` and the weights file, 16 hex digits): an
objective records those, not the weights, and its identity changes with the file's contents.

Example:
    >>> import torch
    >>> sae = SparseAutoencoder(torch.eye(2, 3), torch.zeros(3), torch.zeros(2), activation="topk", k=1)
    >>> sae.encode(torch.tensor([[0.5, 2.0]]))
    tensor([[0., 2., 0.]])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError

__all__ = ["ACTIVATIONS", "CONFIG", "WEIGHTS", "SparseAutoencoder", "load_sae", "save_sae"]

#: The activations a checkpoint may name.
ACTIVATIONS = ("relu", "topk", "jumprelu")
#: The file names :func:`save_sae` writes (SAELens' names).
WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"
#: Weight files a folder is searched for, by ending.
_ENDINGS = (".safetensors", ".pt", ".pth")
#: Weight files larger than this are refused before reading.
_MAX_BYTES = 8 << 30


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder: ``forward(x)`` returns the codes ``(..., d_sae)`` of ``x`` ``(..., d_in)``.

    Its weights are buffers of an ``nn.Module`` (``W_enc``, ``b_enc``, ``b_dec``, ``W_dec``,
    ``threshold``) with ``requires_grad`` off, so that an accentuation through it does not fill
    their gradients; :func:`accentuate.train_sae` trains its own parameters and builds one of these.

    Args:
        W_enc: ``(d_in, d_sae)``; b_enc: ``(d_sae,)``; b_dec: ``(d_in,)``.
        W_dec: ``(d_sae, d_in)``, or ``None`` (encode only).
        activation: ``"relu"``, ``"topk"`` (with ``k``) or ``"jumprelu"`` (with ``threshold``).
        apply_b_dec_to_input: subtract ``b_dec`` before encoding (SAELens' default).
        path, digest: where it was read from and the SHA-256 of its files (set by :func:`load_sae`).
        config: the rest of its ``cfg.json`` (kept, for what wrote it: the layer, the model).

    Shape:
        ``encode``: ``(..., d_in) -> (..., d_sae)``; ``decode``: ``(..., d_sae) -> (..., d_in)``.
    """

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    b_dec: torch.Tensor
    W_dec: torch.Tensor | None
    threshold: torch.Tensor | None

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor,  # noqa: N803 (SAELens' names)
                 W_dec: torch.Tensor | None = None, *, activation: str = "relu", k: int | None = None,  # noqa: N803
                 threshold: torch.Tensor | None = None, apply_b_dec_to_input: bool = True,
                 path: str | None = None, digest: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        where = path or "the SAE"
        _check_weights(where, W_enc, b_enc, b_dec, W_dec, threshold)
        d_in, d_sae = W_enc.shape
        activation = _check_activation(where, activation, k, threshold, d_sae)
        for name, t in (("W_enc", W_enc), ("b_enc", b_enc), ("b_dec", b_dec), ("W_dec", W_dec),
                        ("threshold", threshold)):
            self.register_buffer(name, None if t is None else t.detach().float().clone())
        self.activation = activation
        self.k = int(k) if activation == "topk" and k is not None else None
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.path, self.digest = path, digest
        self.config = dict(config or {})

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - b_dec) @ W_enc + b_enc`` ``(..., d_sae)`` (without ``- b_dec`` when
        ``apply_b_dec_to_input`` is off), in ``x``'s dtype and on its device."""
        w, b = self.W_enc.to(x), self.b_enc.to(x)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec.to(x)
        return x @ w + b

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The codes from the pre-activations (see the module's description)."""
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            assert self.threshold is not None  # checked in __init__
            return torch.relu(pre) * (pre > self.threshold.to(pre))
        assert self.k is not None
        top = pre.topk(min(self.k, pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The codes ``(..., d_sae)`` of ``x`` ``(..., d_in)``."""
        return self.activate(self.pre_activation(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``z @ W_dec + b_dec`` ``(..., d_in)``.

        Raises:
            CheckpointError: the SAE has no decoder (``W_dec`` was not in its checkpoint).
        """
        if self.W_dec is None:
            raise CheckpointError(f"{self.path or 'the SAE'} has no W_dec, so its codes cannot be decoded; "
                                  "add W_dec (d_sae, d_in) to the checkpoint")
        return z @ self.W_dec.to(z) + self.b_dec.to(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The codes, as :meth:`encode`: an SAE is an ``encoder`` for :func:`accentuate.objectives.latent`."""
        return self.encode(x)

    def cfg(self) -> dict[str, Any]:
        """Its ``cfg.json``: ``d_in``, ``d_sae``, ``activation`` (and ``k``), ``apply_b_dec_to_input``,
        SAELens' ``architecture`` name, and the rest of the configuration it was built with."""
        out = {**self.config, "d_in": self.d_in, "d_sae": self.d_sae, "activation": self.activation,
               "architecture": {"relu": "standard"}.get(self.activation, self.activation),
               "apply_b_dec_to_input": self.apply_b_dec_to_input}
        if self.k is not None:
            out["k"] = self.k
        else:
            out.pop("k", None)
        return out

    def extra_repr(self) -> str:
        act = f"topk k={self.k}" if self.activation == "topk" else self.activation
        return f"d_in={self.d_in}, d_sae={self.d_sae}, {act}" + (f", path={self.path!r}" if self.path else "")


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _check_weights(where: str, W_enc: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor,  # noqa: N803
                   W_dec: torch.Tensor | None, threshold: torch.Tensor | None) -> None:
    """``CheckpointError`` unless the weights have the shapes of one SAE."""
    for name, t in (("W_enc", W_enc), ("b_enc", b_enc), ("b_dec", b_dec), ("W_dec", W_dec), ("threshold", threshold)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}: {name} is a {type(t).__name__}, not a tensor")
        if t is not None and not t.is_floating_point():
            raise CheckpointError(f"{where}: {name} has dtype {t.dtype}; SAE weights are floating point")
    if W_enc.dim() != 2:
        raise CheckpointError(f"{where}: W_enc has shape {_shape(W_enc)}; it must be (d_in, d_sae)")
    d_in, d_sae = W_enc.shape
    want = {"b_enc": (d_sae,), "b_dec": (d_in,), "W_dec": (d_sae, d_in), "threshold": (d_sae,)}
    for name, t in (("b_enc", b_enc), ("b_dec", b_dec), ("W_dec", W_dec), ("threshold", threshold)):
        if t is not None and tuple(t.shape) != want[name]:
            raise CheckpointError(f"{where}: {name} has shape {_shape(t)} but W_enc {_shape(W_enc)} (d_in={d_in}, "
                                  f"d_sae={d_sae}) needs {name} of shape {want[name]}")
    for name, t in (("W_enc", W_enc), ("b_enc", b_enc), ("b_dec", b_dec), ("W_dec", W_dec), ("threshold", threshold)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{where}: {name} has NaN or infinite entries")


def _check_activation(where: str, activation: str, k: int | None, threshold: torch.Tensor | None, d_sae: int) -> str:
    act = str(activation).lower()
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{where}: unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
    if act == "topk" and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae):
        raise CheckpointError(f"{where}: a topk SAE needs k, an integer in 1..d_sae={d_sae}; got {k!r}")
    if act == "jumprelu" and threshold is None:
        raise CheckpointError(f"{where}: a jumprelu SAE needs threshold (d_sae,) in its weights")
    return act


# -- the checkpoint on disk ------------------------------------------------------------------------
def _files(path: Path) -> tuple[Path, Path | None]:
    """``(weights, cfg.json or None)`` of a checkpoint folder or weights file."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _ENDINGS)
        if not found:
            raise CheckpointError(f"SAE checkpoint {str(path)!r} holds no weights file ({WEIGHTS}, *.safetensors, "
                                  "*.pt or *.pth)")
        preferred = [p for p in found if p.name == WEIGHTS]
        if not preferred and len(found) > 1:
            raise CheckpointError(f"SAE checkpoint {str(path)!r} holds {len(found)} weights files "
                                  f"({', '.join(p.name for p in found)}); give the path of one")
        weights, folder = (preferred or found)[0], path
    elif path.is_file():
        if path.suffix.lower() not in _ENDINGS:
            raise CheckpointError(f"SAE checkpoint {str(path)!r} is not a weights file (.safetensors, .pt, .pth) "
                                  "nor a folder holding one")
        weights, folder = path, path.parent
    else:
        raise CheckpointError(f"SAE checkpoint {str(path)!r} not found; give a folder with {CONFIG} and "
                              f"{WEIGHTS} (or a .pt file)")
    cfg = folder / CONFIG
    return weights, cfg if cfg.is_file() else None


def _read_tensors(weights: Path, data: bytes) -> dict[str, torch.Tensor]:
    if weights.suffix.lower() == ".safetensors":
        from safetensors.torch import load

        try:
            return dict(load(data))
        except Exception as e:  # noqa: BLE001 (any reading failure is one line)
            raise CheckpointError(f"cannot read {str(weights)!r} as safetensors ({_first_line(e)})") from None
    import io

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {str(weights)!r} with torch.load(weights_only=True) ({_first_line(e)}); "
                              "save a dict of tensors") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and "W_enc" not in obj and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{str(weights)!r} holds a {type(obj).__name__}; an SAE checkpoint is a dict of tensors "
                              "(W_enc, b_enc, b_dec, ...)")
    return {str(k): v for k, v in obj.items()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _config(cfg_path: Path | None, weights: Path) -> dict[str, Any]:
    if cfg_path is None:
        raise CheckpointError(f"no {CONFIG} beside {str(weights)!r}; write one with d_in, d_sae and the activation, "
                              'e.g. {"d_in": 384, "d_sae": 2048, "activation": "topk", "k": 32}')
    try:
        cfg = json.loads(cfg_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {str(cfg_path)!r} as JSON ({_first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{str(cfg_path)!r} holds a JSON {type(cfg).__name__}; it must be an object "
                              "with d_in, d_sae and the activation")
    return cfg


def _activation_of(cfg: Mapping[str, Any], where: str) -> tuple[str, int | None]:
    """The activation and ``k`` a ``cfg.json`` names (accentuate's keys, else SAELens')."""
    kwargs = cfg.get("activation_fn_kwargs") if isinstance(cfg.get("activation_fn_kwargs"), Mapping) else {}
    k = cfg.get("k", kwargs.get("k"))  # type: ignore[union-attr]
    act = cfg.get("activation")
    if act is None:
        arch = cfg.get("architecture")
        if arch is not None:
            act = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}.get(str(arch).lower())
            if act is None:
                raise CheckpointError(f"{where}: architecture {arch!r} is not supported; use one of standard (relu), "
                                      "topk, jumprelu")
        else:
            act = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    if act is None:
        raise CheckpointError(f"{where}: no activation; add \"activation\": one of {', '.join(ACTIVATIONS)} "
                              "(and \"k\" for topk)")
    return str(act).lower(), k


def load_sae(path: str | os.PathLike, layer: str | None = None, width: int | None = None) -> SparseAutoencoder:
    """Read an SAE checkpoint (see the module's description for the layout).

    Args:
        path: a folder with ``cfg.json`` and one weights file, or a weights file with ``cfg.json`` beside it.
        layer, width: the layer it is meant for and that layer's channels: when given, a ``d_in``
            that is not ``width`` is an error naming both.

    Raises:
        CheckpointError: a missing file or key, a shape that does not fit ``cfg.json`` or the
            layer, an unknown activation: one line naming the file.

    Example:
        >>> import tempfile, torch
        >>> folder = tempfile.mkdtemp()
        >>> sae = SparseAutoencoder(torch.eye(2, 3), torch.zeros(3), torch.zeros(2), torch.eye(3, 2))
        >>> _ = save_sae(sae, folder)
        >>> load_sae(folder).encode(torch.tensor([1.0, -1.0]))
        tensor([1., 0., 0.])
    """
    p = Path(path).expanduser()
    weights, cfg_path = _files(p)
    size = weights.stat().st_size
    if size > _MAX_BYTES:
        raise CheckpointError(f"{str(weights)!r} is {size:,} bytes; that is not one SAE's weights")
    cfg = _config(cfg_path, weights)
    data = weights.read_bytes()
    tensors = _read_tensors(weights, data)
    where = str(weights)
    if "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors["log_threshold"].float().exp()
    missing = [k for k in ("W_enc", "b_enc", "b_dec") if k not in tensors]
    if missing:
        raise CheckpointError(f"{where} has no {', '.join(missing)} (it holds {', '.join(sorted(tensors)) or 'nothing'}); "
                              "an SAE checkpoint holds W_enc (d_in, d_sae), b_enc (d_sae), b_dec (d_in) and optionally "
                              "W_dec (d_sae, d_in), threshold (d_sae)")
    _check_weights(where, tensors["W_enc"], tensors["b_enc"], tensors["b_dec"], tensors.get("W_dec"),
                   tensors.get("threshold"))
    d_in, d_sae = tensors["W_enc"].shape
    for key, have in (("d_in", d_in), ("d_sae", d_sae)):
        said = cfg.get(key)
        if said is None:
            raise CheckpointError(f"{cfg_path}: no {key}; the weights have {key}={have}")
        if said != have:
            raise CheckpointError(f"{cfg_path} says {key}={said} but {weights.name} has {key}={have} "
                                  f"(W_enc {_shape(tensors['W_enc'])})")
    norm = cfg.get("normalize_activations")
    if norm not in (None, "none", False):
        raise CheckpointError(f"{cfg_path}: normalize_activations={norm!r} is not supported; fold the scaling "
                              "into the weights (SAELens: fold_activation_norm_scaling_factor) and set it to \"none\"")
    act, k = _activation_of(cfg, str(cfg_path))
    if width is not None and d_in != width:
        raise CheckpointError(f"the SAE {where} reads {d_in}-wide activations (d_in={d_in}) but layer "
                              f"{layer!r} has {width} channels; use an SAE trained on that layer")
    digest = hashlib.sha256()
    assert cfg_path is not None
    digest.update(cfg_path.read_bytes())
    digest.update(data)
    return SparseAutoencoder(tensors["W_enc"], tensors["b_enc"], tensors["b_dec"], tensors.get("W_dec"),
                             activation=act, k=k if act == "topk" else None, threshold=tensors.get("threshold"),
                             apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                             path=str(p.resolve()), digest=digest.hexdigest()[:16], config=cfg)


def save_sae(sae: SparseAutoencoder, directory: str | os.PathLike, **config: Any) -> Path:
    """Write ``sae`` as a checkpoint folder: ``sae_weights.safetensors`` and ``cfg.json`` (with
    ``config`` added, e.g. the layer and model it was trained on); each file is written whole
    or not at all. Returns the folder; :func:`load_sae` reads it back."""
    from safetensors.torch import save

    from .outputs.io import atomic_write, output_folder

    out = output_folder(directory)
    tensors = {name: t.detach().float().cpu().contiguous() for name, t in
               (("W_enc", sae.W_enc), ("b_enc", sae.b_enc), ("b_dec", sae.b_dec), ("W_dec", sae.W_dec),
                ("threshold", sae.threshold)) if t is not None}
    atomic_write(out / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    cfg = {k: v for k, v in {**sae.cfg(), **config}.items() if _json_able(v)}
    atomic_write(out / CONFIG, (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode())
    return out


def _json_able(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return not (isinstance(v, float) and not math.isfinite(v))

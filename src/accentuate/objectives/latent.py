"""Sparse-autoencoder latents: one unit of a dictionary's code as a target.

:class:`SAELatent` (factory :func:`latent`) reads a layer's channel vector at every position (a conv
map's pixels, a ViT's patch tokens; the class and register tokens are left out unless
``token=`` asks for one), runs an ``encoder`` on them, and takes unit ``unit`` of the codes,
averaged (``reduce="mean"``) or at its largest position (``"max"``). The encoder is a
:class:`~accentuate.sae.SparseAutoencoder` (:func:`~accentuate.sae.load_sae` reads a checkpoint;
:func:`accentuate.train_sae` trains one) or any ``nn.Module`` or callable that maps
``(N, positions, channels)`` to ``(N, positions, K)`` codes (an ``overcomplete`` SAE, say).

**Where the code is zero.** A TopK or JumpReLU latent that is off at a position (or a ReLU latent
with a negative pre-activation) has no gradient there, so a photo where the latent is absent could
never be moved toward it. With a :class:`~accentuate.sae.SparseAutoencoder` and
``straight_through=True`` (the default), the objective's value is the code, but its gradient is
that of the latent's pre-activation ``(x - b_dec) @ W_enc[:, unit] + b_enc[unit]`` at every position
(a straight-through estimator; where the latent is on, the two gradients are the same).

**Records.** A latent of a loaded checkpoint records the checkpoint's path and content hash
(``digest``), not its weights; :meth:`SAELatent.from_fields` reads the checkpoint again and checks the
hash, and a checkpoint that is gone or was changed gives back a
:class:`~accentuate.objectives.Recorded` with a warning. The identity is the ``repr`` plus that
hash, so a retrained checkpoint under the same path is another target.

The target grammar reads ``sae:PATH:UNIT@LAYER`` (:func:`accentuate.parse_target`, in
:mod:`accentuate.objectives.target`).

Example:
    >>> import torch
    >>> from accentuate.sae import SparseAutoencoder
    >>> from accentuate.layout import Layout
    >>> sae = SparseAutoencoder(torch.eye(2, 3), torch.zeros(3), torch.zeros(2), activation="topk", k=1)
    >>> obj = latent("feat", sae, 1)
    >>> lay = Layout("nchw", 2, (1, 2))
    >>> obj({"feat": torch.tensor([[[[1.0, 0.0]], [[2.0, 3.0]]]])}, {"feat": lay})   # codes 2 and 3
    tensor([2.5000])
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..sae import SparseAutoencoder, load_sae
from .base import Acts, Layouts, Objective, Recorded
from .checks import check_token

__all__ = ["REDUCES", "SAELatent", "latent"]

REDUCES = ("mean", "max")

Encoder = nn.Module | Callable[[torch.Tensor], torch.Tensor]


def encoder_name(enc: Encoder) -> str:
    """A short name of an encoder for labels: a checkpoint's folder or file stem, else its class."""
    if isinstance(enc, SparseAutoencoder) and enc.path:
        p = Path(enc.path)
        return p.stem if p.suffix else p.name
    return type(enc).__name__ if isinstance(enc, nn.Module) else getattr(enc, "__qualname__", type(enc).__name__)


class SAELatent(Objective):
    """Unit ``unit`` of ``encoder``'s codes of ``layer``'s activations, averaged over the positions
    (``reduce="mean"``) or at the position where it is largest (``"max"``); see the module.

    Args:
        layer: the layer whose activations the encoder reads.
        encoder: a :class:`~accentuate.sae.SparseAutoencoder`, or an ``nn.Module``/callable mapping
            ``(B, P, C)`` to ``(B, P, K)``.
        unit: the latent, ``0 .. K - 1``.
        reduce: ``"mean"`` or ``"max"`` over the positions.
        token: read leading token ``token`` only (0: the class token) instead of the patch positions.
        straight_through: with a :class:`~accentuate.sae.SparseAutoencoder`, give the value the
            gradient of the latent's pre-activation (so that it can rise where it is off).
    """

    record_type = "sae_latent"

    def __init__(self, layer: str, encoder: Encoder, unit: int, reduce: str = "mean", *, token: int | None = None,
                 straight_through: bool = True) -> None:
        if reduce not in REDUCES:
            raise ValueError(f"reduce must be 'mean' or 'max'; got {reduce!r}")
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
            raise ValueError(f"unit must be an integer >= 0 (a latent of the encoder); got {unit!r}")
        if not callable(encoder):
            raise TypeError(f"encoder must be an nn.Module or a callable returning (N, positions, K) codes; got "
                            f"{type(encoder).__name__}")
        self.layer, self.encoder, self.unit, self.reduce = layer, encoder, int(unit), reduce
        self.token = None if token is None else int(token)
        self.straight_through = bool(straight_through)
        self.layers = frozenset({layer})
        if isinstance(encoder, SparseAutoencoder) and not self.unit < encoder.d_sae:
            raise ValueError(f"latent {unit} is out of range for {encoder_name(encoder)}, which has {encoder.d_sae} latents "
                             f"(0..{encoder.d_sae - 1})")

    @property
    def sae(self) -> SparseAutoencoder | None:
        """The encoder when it is a :class:`~accentuate.sae.SparseAutoencoder`."""
        return self.encoder if isinstance(self.encoder, SparseAutoencoder) else None

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.layer]
        if self.token is not None:
            check_token(self.layer, self.token, lay)
        width = self.sae.d_in if self.sae is not None else None
        if width is not None and width != lay.channels:
            raise CheckpointError(f"the SAE {self.sae.path or encoder_name(self.encoder)} reads {width}-wide activations "  # type: ignore[union-attr]
                                  f"(d_in={width}) but layer {self.layer!r} has {lay.channels} channels; use an SAE "
                                  "trained on that layer")

    def _codes(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(code, pre)`` of the unit at every position ``(B, P)``; ``pre`` only for an SAE read
        straight through."""
        sae = self.sae
        if sae is not None:
            if sae.activation == "topk":
                pre_all = sae.pre_activation(t)
                pre = pre_all[..., self.unit]
                kth = pre_all.topk(sae.k or 1, dim=-1).values[..., -1]  # type: ignore[arg-type]
                code = torch.relu(pre) * (pre >= kth)
            else:
                x = t - sae.b_dec.to(t) if sae.apply_b_dec_to_input else t
                pre = x @ sae.W_enc[:, self.unit].to(t) + sae.b_enc[self.unit].to(t)
                code = torch.relu(pre) if sae.activation == "relu" else \
                    torch.relu(pre) * (pre > sae.threshold[self.unit].to(t))  # type: ignore[index]
            return code, pre if self.straight_through else None
        codes = self.encoder(t)
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or tuple(codes.shape[:2]) != tuple(t.shape[:2]):
            got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"the encoder of {self!r} returned {got} for activations {tuple(t.shape)}; it must "
                             "return codes (N, positions, K)")
        if self.unit >= codes.shape[-1]:
            raise ValueError(f"latent {self.unit} is out of range for the encoder, which returns {codes.shape[-1]} "
                             f"latents (0..{codes.shape[-1] - 1})")
        return codes[..., self.unit], None

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        lay = layouts[self.layer]
        a = acts[self.layer]
        t = lay.positions(a) if self.token is None else lay.token(a, self.token)[:, None]  # (B, P, C)
        code, pre = self._codes(t)
        value = code if pre is None else pre + (code - pre).detach()  # the code, with pre's gradient
        if self.reduce == "mean":
            return value.mean(dim=1)
        # max: the position of the largest code; where the code is 0 everywhere, of the largest pre-activation
        key = code if pre is None else torch.where(code.amax(dim=1, keepdim=True) > 0, code, pre)
        return value.gather(1, key.detach().argmax(dim=1, keepdim=True))[:, 0]

    # -- records and identity ----------------------------------------------------------------------
    def _encoder_digest(self) -> str:
        sae = self.sae
        if sae is not None and sae.digest:
            return sae.digest
        h = hashlib.sha256()
        if isinstance(self.encoder, nn.Module):
            for name, t in self.encoder.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
        else:
            h.update(f"{type(self.encoder).__module__}.{encoder_name(self.encoder)}".encode())
        return h.hexdigest()[:16]

    def identity(self) -> str:
        """The ``repr`` and the encoder's content hash (a checkpoint's ``digest``; else a hash of a
        module's ``state_dict``, or a callable's qualified name)."""
        return f"{self!r}#{self._encoder_digest()}"

    def to_fields(self) -> dict[str, Any]:
        sae = self.sae
        source = None if sae is None or not sae.path else \
            {"path": sae.path, "digest": sae.digest, "d_in": sae.d_in, "d_sae": sae.d_sae}
        return {"layer": self.layer, "unit": self.unit, "reduce": self.reduce, "token": self.token,
                "straight_through": self.straight_through, "sae": source,
                "encoder": None if source else encoder_name(self.encoder), "digest": self._encoder_digest()}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Objective:
        """The latent again, its checkpoint read from the recorded path; a :class:`Recorded` with a
        warning when the encoder was not a checkpoint, or the checkpoint is gone or changed."""
        layer, unit = str(rec["layer"]), int(rec["unit"])
        text = str(rec.get("repr") or f"SAELatent({layer}, {unit})")
        source = rec.get("sae")
        if not isinstance(source, Mapping):
            warnings.warn(f"the target {text} was a latent of an encoder that is not a checkpoint; it is kept as its "
                          "name (build it again with acc.latent to optimize it)", stacklevel=3)
            return Recorded(text)
        try:
            sae = _reload(str(source["path"]))
        except CheckpointError as e:
            warnings.warn(f"the target {text} cannot be rebuilt ({e}); it is kept as its name", stacklevel=3)
            return Recorded(text)
        if source.get("digest") and sae.digest != source["digest"]:
            warnings.warn(f"the SAE checkpoint {source['path']} has changed since the target {text} was recorded "
                          f"(digest {sae.digest}, recorded {source['digest']}); the target is kept as its name",
                          stacklevel=3)
            return Recorded(text)
        token = rec.get("token")
        return cls(layer, sae, unit, str(rec.get("reduce", "mean")), token=None if token is None else int(token),
                   straight_through=bool(rec.get("straight_through", True)))

    def describe(self) -> dict[str, Any]:
        name = encoder_name(self.encoder)
        at = "" if self.token is None else f"@tok{self.token}"
        sae = self.sae
        return {"kind": "latent", "layer": self.layer, "unit": self.unit, "encoder": name, "reduce": self.reduce,
                "token": self.token, "checkpoint": sae.path if sae is not None else None,
                "label": f"{self.layer}{at}: latent {self.unit} of {name}" + ("" if self.reduce == "mean" else " (max)"),
                "slug_text": f"{self.layer}{at}-{name}-{self.unit}",
                "value_name": f"latent {self.reduce}" if self.token is None else "latent"}

    def __repr__(self) -> str:
        at = "" if self.token is None else f", token={self.token}"
        plain = "" if self.straight_through or self.sae is None else ", straight_through=False"
        return f"SAELatent({self.layer}, {encoder_name(self.encoder)}:{self.unit}, {self.reduce}{at}{plain})"


def _reload(path: str) -> SparseAutoencoder:
    """:func:`~accentuate.sae.load_sae` of a recorded checkpoint, read once while its files (their
    names, sizes and times) stay the same: a run's targets are often many latents of one SAE."""
    p = Path(path)
    files = sorted(p.iterdir()) if p.is_dir() else [p, p.parent / "cfg.json"]
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
    return _load_stamped(path, stamp)


@functools.lru_cache(maxsize=4)
def _load_stamped(path: str, stamp: tuple[tuple[str, int, int], ...]) -> SparseAutoencoder:
    return load_sae(path)


def latent(layer: str, encoder: Encoder | str, unit: int, reduce: str = "mean", *, token: int | None = None,
           straight_through: bool = True) -> SAELatent:
    """SAELatent ``unit`` of ``encoder`` at ``layer``, averaged over the positions (``reduce="mean"``)
    or at its largest (``"max"``); see :class:`SAELatent`.

    ``encoder`` may also be the path of an SAE checkpoint (read with
    :func:`~accentuate.sae.load_sae`).

    Example:
        >>> import accentuate as acc                                            # doctest: +SKIP
        >>> sae = acc.load_sae("runs/sae-head")                                # doctest: +SKIP
        >>> res = acc.accentuate(model, "photo.jpg", acc.latent("head", sae, 12))  # doctest: +SKIP
    """
    enc = load_sae(encoder) if isinstance(encoder, (str, Path)) else encoder
    return SAELatent(layer, enc, unit, reduce, token=token, straight_through=straight_through)

"""Attention heads: one head's output, read from the input of the attention output projection.

:class:`Head` and its factory :func:`head`; :func:`head_projection` finds the projection under a
block, :func:`heads_of` the number of heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..hooks import input_of
from ..layout import Layout
from .base import Acts, Layouts, Objective
from .checks import check_position, check_token, short_layer

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Head", "head", "head_projection", "heads_of"]

#: Names (last dotted parts) of attention output projections: transformers' ViT, DINOv2,
#: DeiT (``o_proj``), CLIP (``out_proj``), older transformers (``attention.output.dense``),
#: timm (``attn.proj``).
_PROJECTIONS = ("o_proj", "out_proj", "attention.output.dense", "attn.proj")


def _read(lay: Layout, t: torch.Tensor, token: int | None, y: int | None, x: int | None) -> torch.Tensor:
    """Channel vectors where an objective reads: one leading token, one grid position, or
    every patch position, ``(B, P, C)``."""
    if token is not None:
        return lay.token(t, token)[:, None]
    if y is not None and x is not None:
        return lay.at(t, y, x)[:, None]
    return lay.positions(t)


def _where_text(token: int | None, y: int | None, x: int | None) -> str:
    if token is not None:
        return f"@tok{token}"
    return "" if y is None or x is None else f"@{y},{x}"


class Head(Objective):
    """One attention head's output: its slice of the per-head context, which is what enters
    the attention output projection (``layers.N.attention.o_proj`` in transformers' ViT
    and DINOv2, ``...self_attn.out_proj`` in CLIP).

    The projection's input ``(B, tokens, heads * head_dim)`` is captured (a module *input*,
    see :func:`accentuate.hooks.input_of`) and read as ``(B, tokens, heads, head_dim)``,
    head-major as transformers lay it out. The value, per image:

    - ``unit=None``: the RMS over head ``h``'s ``head_dim`` units (its output's L2 norm divided
      by ``sqrt(head_dim)``: how strongly the head writes, whatever the direction), averaged
      over the patch tokens;
    - ``unit=u``: unit ``u`` of head ``h``, averaged over the patch tokens.

    ``token=i`` reads leading token ``i`` (0: the class token) instead, ``y, x`` one patch.

    Args:
        layer: the attention output projection module (its input is read).
        head: the head index, ``0 .. heads - 1``.
        unit: one unit of the head, ``0 .. head_dim - 1``, or ``None`` (the RMS).
        heads: the number of heads of that attention layer (see :func:`head`, which finds it).
    """

    record_type = "head"

    def __init__(self, layer: str, head: int, unit: int | None = None, *, heads: int,
                 y: int | None = None, x: int | None = None, token: int | None = None) -> None:
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"heads must be a positive integer; got {heads!r}")
        if (y is None) != (x is None):
            raise ValueError("give both y and x for a head at one patch, or neither")
        if token is not None and y is not None:
            raise ValueError("a head objective reads one leading token or one patch, not both")
        self.layer, self.head, self.unit, self.heads = layer, int(head), None if unit is None else int(unit), heads
        self.y, self.x, self.token = y, x, token
        self.key = input_of(layer)
        self.layers = frozenset({self.key})

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.key]
        width, heads = lay.channels, self.heads
        if width % heads:
            raise ValueError(
                f"the input of {self.layer!r} has {width} channels, which {heads} heads do not divide; "
                "pass heads= with the attention layer's number of heads"
            )
        if not 0 <= self.head < heads:
            raise ValueError(
                f"head {self.head} is out of range for {self.layer!r}, which has {heads} heads (0..{heads - 1})"
            )
        dim = width // heads
        if self.unit is not None and not 0 <= self.unit < dim:
            raise ValueError(
                f"unit {self.unit} is out of range for a head of {self.layer!r}, whose heads have "
                f"{dim} units (0..{dim - 1})"
            )
        if self.token is not None:
            check_token(self.layer, self.token, lay)
        elif self.y is not None and self.x is not None:
            check_position(self.layer, self.y, self.x, lay)

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        lay = layouts[self.key]
        t = _read(lay, acts[self.key], self.token, self.y, self.x)  # (B, P, heads * dim)
        t = t.reshape(t.shape[0], t.shape[1], self.heads, -1)[:, :, self.head]  # (B, P, dim)
        per = t[..., self.unit] if self.unit is not None else t.pow(2).mean(dim=-1).add(1e-12).sqrt()
        return per.mean(dim=1)

    def to_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "head": self.head, "unit": self.unit, "heads": self.heads,
                "y": self.y, "x": self.x, "token": self.token}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Head:
        def opt(k: str) -> int | None:
            return None if rec.get(k) is None else int(rec[k])

        return cls(rec["layer"], int(rec["head"]), opt("unit"), heads=int(rec["heads"]), y=opt("y"), x=opt("x"),
                   token=opt("token"))

    def describe(self) -> dict[str, Any]:
        unit = "" if self.unit is None else f":{self.unit}"
        where = _where_text(self.token, self.y, self.x)
        return {"kind": "head", "layer": self.layer, "head": self.head, "unit": self.unit, "heads": self.heads,
                "token": self.token, "y": self.y, "x": self.x,
                "label": f"{self.layer}:head={self.head}{unit}{where}",
                "slug_text": f"head{self.head}" + ("" if self.unit is None else f"u{self.unit}")
                + where.replace("@", "-").replace(",", "x") + "-" + _blockshort_layer(self.layer),
                "value_name": "head unit mean" if self.unit is not None else "head output RMS"}

    def __repr__(self) -> str:
        extra = "" if self.unit is None else f", unit={self.unit}"
        if self.token is not None:
            extra += f", token={self.token}"
        elif self.y is not None:
            extra += f", y={self.y}, x={self.x}"
        return f"Head({self.layer}, {self.head}{extra}, heads={self.heads})"


def _blockshort_layer(layer: str) -> str:
    """The short name (last two dotted parts) of the block of an attention output projection:
    the projection's own parts, and an ``attention``/``self_attn``/``attn`` above them, dropped."""
    parts = layer.split(".")
    for p in sorted(_PROJECTIONS, key=len, reverse=True):
        n = p.count(".") + 1
        if ".".join(parts[-n:]) == p:
            parts = parts[:-n]
            if parts and parts[-1] in ("attention", "self_attn", "attn"):
                parts = parts[:-1]
            break
    return short_layer(".".join(parts)) if parts else layer


def head_projection(model: nn.Module, name: str) -> str:
    """The attention output projection at or under module ``name``: ``name`` itself when it
    is a ``Linear``, else the one projection among its submodules (for a block or an
    attention module, e.g. ``layers.3`` -> ``layers.3.attention.o_proj``).

    Raises:
        LayerError: ``name`` is not in the model.
        ValueError: no projection, or several, under ``name`` (the message lists them).
    """
    from ..hooks import check_layers

    check_layers(model, [name])
    module = model.get_submodule(name)
    if isinstance(module, torch.nn.Linear):
        return name
    found = [f"{name}.{n}" if name else n for n, m in module.named_modules()
             if n and isinstance(m, torch.nn.Linear) and (n.rsplit(".", 1)[-1] in _PROJECTIONS
                                                          or any(n.endswith(p) for p in _PROJECTIONS))]
    if len(found) != 1:
        what = f"several ({', '.join(found[:4])})" if found else "none"
        raise ValueError(
            f"cannot find one attention output projection under {name!r} ({what} found); name the "
            "projection module itself, e.g. layers.3.attention.o_proj"
        )
    return found[0]


def heads_of(model: nn.Module, layer: str) -> int | None:
    """The number of attention heads of the attention layer around module ``layer``: the
    ``num_attention_heads`` / ``num_heads`` of the nearest enclosing module that has one, else
    the model config's (``config.num_attention_heads``, or its ``vision_config``'s). ``None`` if
    nothing says."""
    parts = layer.split(".") if layer else []
    for k in range(len(parts), -1, -1):
        try:
            m = model.get_submodule(".".join(parts[:k]))
        except AttributeError:
            continue
        for attr in ("num_attention_heads", "num_heads"):
            v = getattr(m, attr, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    config = getattr(model, "config", None)
    for cfg in (config, getattr(config, "vision_config", None)):
        v = getattr(cfg, "num_attention_heads", None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def head(layer: str, h: int, unit: int | None = None, *, heads: int | None = None, model: nn.Module | None = None,
         y: int | None = None, x: int | None = None, token: int | None = None) -> Head:
    """Attention head ``h``'s output (see :class:`Head`): the RMS of its units, or its unit ``unit``,
    averaged over the patch tokens (or at leading token ``token``, or at patch ``y, x``).

    Args:
        layer: the attention output projection (``layers.3.attention.o_proj``); with ``model``
            also a block or attention module containing exactly one (see :func:`head_projection`).
        heads: the number of heads; by default read from ``model`` (see :func:`heads_of`).

    Example:
        >>> head("layers.3.attention.o_proj", 2, heads=6)
        Head(layers.3.attention.o_proj, 2, heads=6)
    """
    if model is not None:
        layer = head_projection(model, layer)
        if heads is None:
            heads = heads_of(model, layer)
    if heads is None:
        raise ValueError(
            f"the number of heads of {layer!r} is unknown; pass heads=N, or model= (a model whose attention "
            "modules or config give num_attention_heads)"
        )
    return Head(layer, h, unit, heads=heads, y=y, x=x, token=token)

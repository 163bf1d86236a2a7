"""Objectives: small values that know the layers they read and compose with ``+ - *``.

An objective maps captured activations to one value per batch row (per crop).
Layers are ``named_modules()`` dotted paths; the model's output is the pseudo
layer :data:`accentuate.hooks.OUTPUT`. Where a layer's channels and positions are
is its :class:`~accentuate.layout.Layout` (conv ``nchw``, channels-last ``nhwc``,
``tokens`` with leading class/register tokens, ``vector``), given with the
activations: an objective never guesses it from the tensor.

Kinds: :class:`Logit`; :class:`Channel` (mean over positions, the patch tokens of a token
layer) and :class:`TokenChannel` (a leading token: the class token, a register);
:class:`Neuron` (one grid position, a patch of a ViT); :class:`Head` (an attention head's
output, read from the INPUT of the attention output projection, captured as
``NAME@input``); :class:`Direction`; :class:`Like` (a reference image's pooled feature, see
:func:`like`); :class:`Text` (a text prompt's embedding in CLIP's joint space, see
:func:`accentuate.clip.clip_text`). An MLP hidden unit is a channel or neuron of the MLP's
hidden layer (``...mlp.activation_fn`` in transformers' ViT, DINOv2 and CLIP).

An objective also describes itself (:meth:`Objective.describe`: kind, label, layer,
channel, position), which is what records and figures show; adding a kind of
objective means adding one class here.

Example:
    >>> obj = channel("blocks.5", 20) - 0.5 * logit(1)
    >>> obj
    Channel(blocks.5, 20) - 0.5 * Logit(1)
    >>> sorted(obj.layers)
    ['@output', 'blocks.5']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .hooks import OUTPUT, input_of
from .layout import Layout

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Channel",
    "Direction",
    "Head",
    "Like",
    "Logit",
    "Neuron",
    "Objective",
    "Recorded",
    "Text",
    "TokenChannel",
    "channel",
    "default_like_layer",
    "direction",
    "from_record",
    "head",
    "head_projection",
    "heads_of",
    "like",
    "logit",
    "neuron",
]

Acts = Mapping[str, torch.Tensor]
Layouts = Mapping[str, Layout]


class Objective:
    """Base class. Subclasses set ``layers`` and implement :meth:`__call__`."""

    layers: frozenset[str] = frozenset()

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        """Return the objective per batch row, shape ``(B,)``, from the captured
        activations and their layouts."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """How the objective is shown and recorded: ``kind``, ``label``, ``value_name`` and
        what it reads (``layer``, ``channel``, ``y``, ``x``, ``class_index``, ...)."""
        return {"kind": "objective", "label": repr(self), "value_name": "objective"}

    def identity(self) -> str:
        """What tells this objective apart from others in a run's pair keys: its ``repr``, and
        whatever the ``repr`` does not show (a direction's vector)."""
        return repr(self)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able definition that :func:`from_record` rebuilds (``{"type": ...}``). Objectives
        that do not define one are kept as their ``repr`` (``{"type": "recorded"}``)."""
        return {"type": "recorded", "repr": repr(self), "class_index": self.class_index}

    # -- resolution and validation -----------------------------------------------------
    def resolve(self, labels: Sequence[str] | None, num_outputs: int | None = None) -> Objective:
        """Return a copy with class names turned into indices (see :class:`Logit`)."""
        return self

    def validate(self, layouts: Layouts) -> None:
        """Raise ``ValueError`` if a channel, position or vector does not fit its layer."""

    @property
    def class_index(self) -> int | None:
        """The class this objective is the logit of, if it is a single logit."""
        return None

    # -- algebra ------------------------------------------------------------------------
    def terms(self) -> list[tuple[float, Objective]]:
        return [(1.0, self)]

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum(self.terms() + other.terms())

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum(self.terms() + [(-w, o) for w, o in other.terms()])

    def __neg__(self) -> Objective:
        return Sum([(-w, o) for w, o in self.terms()])

    def __mul__(self, k: float) -> Objective:
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            return NotImplemented
        return Sum([(w * float(k), o) for w, o in self.terms()])

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Objective:
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            return NotImplemented
        return self * (1.0 / k)


class Sum(Objective):
    """A weighted sum of objectives (what ``+``, ``-`` and ``*`` build)."""

    def __init__(self, terms: list[tuple[float, Objective]]) -> None:
        self._terms = terms
        self.layers = frozenset().union(*(o.layers for _, o in terms))

    def terms(self) -> list[tuple[float, Objective]]:
        return list(self._terms)

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        return sum(w * o(acts, layouts) for w, o in self._terms)  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        if len(self._terms) == 1 and self._terms[0][0] == 1.0:
            return self._terms[0][1].describe()
        return super().describe()

    def to_record(self) -> dict[str, Any]:
        return {"type": "sum", "terms": [[float(w), o.to_record()] for w, o in self._terms]}

    def identity(self) -> str:
        parts = [o.identity() for _, o in self._terms]
        return repr(self) if parts == [repr(o) for _, o in self._terms] else repr(self) + "|" + "|".join(parts)

    def resolve(self, labels: Sequence[str] | None, num_outputs: int | None = None) -> Objective:
        return Sum([(w, o.resolve(labels, num_outputs)) for w, o in self._terms])

    def validate(self, layouts: Layouts) -> None:
        for _, o in self._terms:
            o.validate(layouts)

    @property
    def class_index(self) -> int | None:
        if len(self._terms) == 1 and self._terms[0][0] > 0:
            return self._terms[0][1].class_index
        return None

    def __repr__(self) -> str:
        parts = []
        for i, (w, o) in enumerate(self._terms):
            sign = "-" if w < 0 else "+"
            mag = abs(w)
            body = repr(o) if mag == 1 else f"{mag:g} * {o!r}"
            if i == 0:
                parts.append(("-" if w < 0 else "") + body)
            else:
                parts.append(f" {sign} {body}")
        return "".join(parts)


def _check_channel(layer: str, c: int, layout: Layout) -> None:
    n = layout.channels
    if not 0 <= c < n:
        raise ValueError(
            f"channel {c} is out of range for layer {layer!r}, which has {n} channels (0..{n - 1})"
        )


def _check_token(layer: str, i: int, layout: Layout) -> None:
    """``ValueError`` unless leading token ``i`` (0: the class token) exists in the layer."""
    n = layout.prefix if layout.kind == "tokens" else 0
    if n == 0:
        raise ValueError(
            f"layer {layer!r} has no leading (class/register) tokens (its layout is {layout}); "
            "read its patch tokens instead (a channel mean or a neuron at y,x)"
        )
    if not 0 <= i < n:
        raise ValueError(
            f"token {i} is out of range for layer {layer!r}, which has {n} leading token(s) (0..{n - 1})"
        )


def _check_position(layer: str, y: int, x: int, layout: Layout) -> None:
    h, w = layout.grid
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(
            f"position (y={y}, x={x}) is outside layer {layer!r}, whose grid is {h} x {w} "
            f"(y 0..{h - 1}, x 0..{w - 1})"
        )


class Logit(Objective):
    """The model's output ``c`` (a class logit), by index or by class name."""

    def __init__(self, c: int | str) -> None:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise TypeError(f"a class must be an int index or a str name; got {type(c).__name__}")
        self.c = c
        self.name: str | None = c if isinstance(c, str) else None
        self.layers = frozenset({OUTPUT})

    @property
    def class_index(self) -> int | None:
        return self.c if isinstance(self.c, int) else None

    def resolve(self, labels: Sequence[str] | None, num_outputs: int | None = None) -> Objective:
        from .labels import find_class

        if isinstance(self.c, str):
            idx = find_class(self.c, labels)
            out = Logit(idx)
            out.name = labels[idx] if labels is not None else self.c
            return out
        n = num_outputs if num_outputs is not None else (len(labels) if labels else None)
        if self.c < 0 or (n is not None and self.c >= n):
            from .errors import ClassNameError

            raise ClassNameError(
                f"class index {self.c} is out of range; the model has {n} classes (0..{(n or 1) - 1})"
            )
        out = Logit(self.c)
        out.name = labels[self.c] if labels is not None and self.c < len(labels) else self.name
        return out

    def validate(self, layouts: Layouts) -> None:
        lay = layouts.get(OUTPUT)
        if lay is not None and isinstance(self.c, int):
            if lay.kind != "vector":
                raise ValueError(
                    f"the model's output has shape {lay.shape()}; a logit needs (B, classes). "
                    "Pass output= to pick the logits from a tuple or dict output"
                )
            if not 0 <= self.c < lay.channels:
                from .errors import ClassNameError

                raise ClassNameError(
                    f"class index {self.c} is out of range; the model has {lay.channels} outputs "
                    f"(0..{lay.channels - 1})"
                )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        return acts[OUTPUT][:, self.c]  # type: ignore[index]

    def to_record(self) -> dict[str, Any]:
        return {"type": "logit", "c": self.c, "name": self.name}

    def describe(self) -> dict[str, Any]:
        idx = self.class_index
        if idx is None:
            return {"kind": "class", "class_index": None, "class_name": self.c, "label": str(self.c),
                    "value_name": "logit"}
        label = f"{self.name} ({idx})" if self.name else f"class {idx}"
        return {"kind": "class", "class_index": idx, "class_name": self.name, "label": label,
                "slug_text": self.name or f"class-{idx}", "value_name": "logit"}

    def __repr__(self) -> str:
        if self.name is not None and isinstance(self.c, int):
            return f"Logit({self.c} {self.name!r})"
        return f"Logit({self.c!r})" if isinstance(self.c, str) else f"Logit({self.c})"


class Channel(Objective):
    """Mean activation of one channel over all spatial positions (or tokens)."""

    def __init__(self, layer: str, c: int) -> None:
        self.layer, self.c = layer, int(c)
        self.layers = frozenset({layer})

    def validate(self, layouts: Layouts) -> None:
        _check_channel(self.layer, self.c, layouts[self.layer])

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        return layouts[self.layer].channel(acts[self.layer], self.c).mean(dim=1)

    def to_record(self) -> dict[str, Any]:
        return {"type": "channel", "layer": self.layer, "c": self.c}

    def describe(self) -> dict[str, Any]:
        return {"kind": "channel", "layer": self.layer, "channel": self.c, "label": f"{self.layer}:{self.c}",
                "slug_text": f"{self.layer}-c{self.c}", "value_name": "channel mean"}

    def __repr__(self) -> str:
        return f"Channel({self.layer}, {self.c})"


class TokenChannel(Objective):
    """Channel ``c`` of one leading token of a token layer (token 0: the class token)."""

    def __init__(self, layer: str, c: int, token: int = 0) -> None:
        self.layer, self.c, self.token = layer, int(c), int(token)
        self.layers = frozenset({layer})

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.layer]
        _check_token(self.layer, self.token, lay)
        _check_channel(self.layer, self.c, lay)

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        return layouts[self.layer].token(acts[self.layer], self.token)[:, self.c]

    def describe(self) -> dict[str, Any]:
        return {"kind": "token_channel", "layer": self.layer, "channel": self.c, "token": self.token,
                "label": f"{self.layer}:{self.c}@tok{self.token}",
                "slug_text": f"{self.layer}-c{self.c}-tok{self.token}", "value_name": "activation"}

    def __repr__(self) -> str:
        return f"TokenChannel({self.layer}, {self.c}, token={self.token})"


class Neuron(Objective):
    """One channel at one spatial position (default: the centre)."""

    def __init__(self, layer: str, c: int, y: int | None = None, x: int | None = None) -> None:
        self.layer, self.c, self.y, self.x = layer, int(c), y, x
        self.layers = frozenset({layer})

    def _pos(self, layout: Layout) -> tuple[int, int]:
        h, w = layout.grid
        return (h // 2 if self.y is None else self.y, w // 2 if self.x is None else self.x)

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.layer]
        _check_channel(self.layer, self.c, lay)
        _check_position(self.layer, *self._pos(lay), lay)

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        lay = layouts[self.layer]
        y, x = self._pos(lay)
        return lay.at(acts[self.layer], y, x)[:, self.c]

    def to_record(self) -> dict[str, Any]:
        return {"type": "neuron", "layer": self.layer, "c": self.c, "y": self.y, "x": self.x}

    def describe(self) -> dict[str, Any]:
        pos = "centre" if self.y is None and self.x is None else f"y={self.y}, x={self.x}"
        return {"kind": "neuron", "layer": self.layer, "channel": self.c, "y": self.y, "x": self.x,
                "label": f"{self.layer}:{self.c} at {pos}",
                "slug_text": f"{self.layer}-c{self.c}" + ("" if self.y is None else f"-y{self.y}x{self.x}"),
                "value_name": "activation"}

    def __repr__(self) -> str:
        pos = "" if self.y is None and self.x is None else f", y={self.y}, x={self.x}"
        return f"Neuron({self.layer}, {self.c}{pos})"


class Direction(Objective):
    """A direction in a layer's channel space, averaged over positions (the patch tokens of
    a token layer), or read at one leading token (``token=0``: the class token).

    ``kind="dot"``: dot product with the unit vector. ``kind="cosine"``: cosine
    similarity (scale-free, in [-1, 1]).
    """

    def __init__(self, layer: str, vector: torch.Tensor | Sequence[float], kind: str = "dot",
                 token: int | None = None) -> None:
        if kind not in ("dot", "cosine"):
            raise ValueError(f"direction kind must be 'dot' or 'cosine'; got {kind!r}")
        v = torch.as_tensor(vector, dtype=torch.float32).flatten()
        if not torch.isfinite(v).all() or float(v.norm()) == 0:
            raise ValueError("a direction vector must be finite and non-zero")
        self.layer, self.kind = layer, kind
        self.token = None if token is None else int(token)
        self.vector = v / v.norm()
        self.layers = frozenset({layer})
        #: Where the vector came from (a file the command line read), for labels and records.
        self.source: str | None = None

    def validate(self, layouts: Layouts) -> None:
        if self.token is not None:
            _check_token(self.layer, self.token, layouts[self.layer])
        n = layouts[self.layer].channels
        if self.vector.numel() != n:
            raise ValueError(
                f"direction has {self.vector.numel()} entries but layer {self.layer!r} has {n} channels"
            )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        lay = layouts[self.layer]
        t = lay.positions(acts[self.layer]) if self.token is None else \
            lay.token(acts[self.layer], self.token)[:, None]  # (B, P, C)
        dots = t @ self.vector.to(t)
        if self.kind == "cosine":
            dots = dots / t.norm(dim=-1).clamp(min=1e-8)
        return dots.mean(dim=1)

    def describe(self) -> dict[str, Any]:
        from pathlib import Path

        src = self.source
        at = "" if self.token is None else f"@tok{self.token}"
        return {"kind": "direction", "layer": self.layer, "channels": int(self.vector.numel()),
                "measure": self.kind, "source": src, "token": self.token,
                "label": f"{self.layer}{at} along {src or f'a {self.vector.numel()}-d direction'}"
                         + ("" if self.kind == "dot" else " (cosine)"),
                "slug_text": f"{self.layer}{at}-{Path(src).stem if src else 'direction'}",
                "value_name": "direction (dot product)" if self.kind == "dot" else "direction (cosine)"}

    def to_record(self) -> dict[str, Any]:
        return {"type": "direction", "layer": self.layer, "kind": self.kind, "vector": self.vector.tolist(),
                "source": self.source, "token": self.token}

    def identity(self) -> str:
        import hashlib

        digest = hashlib.sha256(self.vector.detach().cpu().float().numpy().tobytes()).hexdigest()[:16]
        return f"{self!r}#{digest}"

    def __repr__(self) -> str:
        at = "" if self.token is None else f", token={self.token}"
        return f"Direction({self.layer}, {self.vector.numel()}-d, {self.kind}{at})"


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
            _check_token(self.layer, self.token, lay)
        elif self.y is not None and self.x is not None:
            _check_position(self.layer, self.y, self.x, lay)

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        lay = layouts[self.key]
        t = _read(lay, acts[self.key], self.token, self.y, self.x)  # (B, P, heads * dim)
        t = t.reshape(t.shape[0], t.shape[1], self.heads, -1)[:, :, self.head]  # (B, P, dim)
        per = t[..., self.unit] if self.unit is not None else t.pow(2).mean(dim=-1).add(1e-12).sqrt()
        return per.mean(dim=1)

    def describe(self) -> dict[str, Any]:
        unit = "" if self.unit is None else f":{self.unit}"
        where = _where_text(self.token, self.y, self.x)
        return {"kind": "head", "layer": self.layer, "head": self.head, "unit": self.unit, "heads": self.heads,
                "token": self.token, "y": self.y, "x": self.x,
                "label": f"{self.layer}:head={self.head}{unit}{where}",
                "slug_text": f"head{self.head}" + ("" if self.unit is None else f"u{self.unit}")
                + where.replace("@", "-").replace(",", "x") + "-" + _tail(self.layer, projection=True),
                "value_name": "head unit mean" if self.unit is not None else "head output RMS"}

    def __repr__(self) -> str:
        extra = "" if self.unit is None else f", unit={self.unit}"
        if self.token is not None:
            extra += f", token={self.token}"
        elif self.y is not None:
            extra += f", y={self.y}, x={self.x}"
        return f"Head({self.layer}, {self.head}{extra}, heads={self.heads})"


def _tail(layer: str, projection: bool = False) -> str:
    """The last two dotted parts of a layer name, for short file names (``layers.1`` of
    ``vision_model.encoder.layers.1``); with ``projection``, of its block (the attention output
    projection's own parts dropped)."""
    parts = layer.split(".")
    if projection:
        for p in sorted(_PROJECTIONS, key=len, reverse=True):
            n = p.count(".") + 1
            if ".".join(parts[-n:]) == p:
                parts = parts[:-n]
                if parts and parts[-1] in ("attention", "self_attn", "attn"):
                    parts = parts[:-1]
                break
    return ".".join(parts[-2:]) or layer


def _pooled(lay: Layout, t: torch.Tensor, pool: str) -> torch.Tensor:
    """A layer's feature vector ``(B, C)``: the class token (``"cls"``, leading token 0), or the
    mean of the patch positions (``"mean"``); a vector layer is its own feature."""
    if lay.kind == "vector":
        return t
    return lay.token(t, 0) if pool == "cls" else lay.pool(t)


class Like(Objective):
    """Look more like a reference image to the model: the accentuation's pooled feature at
    ``layer`` against the reference image's (see :func:`like`, which measures it).

    ``measure="cosine"``: cosine similarity of the two features (in [-1, 1]).
    ``measure="dot"``: dot product with the reference's unit direction.
    ``pool``: ``"cls"`` (the class token) or ``"mean"`` (the mean over patch positions).
    """

    def __init__(self, layer: str, reference: torch.Tensor, pool: str = "cls", measure: str = "cosine",
                 name: str = "reference") -> None:
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean'; got {pool!r}")
        if measure not in ("cosine", "dot"):
            raise ValueError(f"measure must be 'cosine' or 'dot'; got {measure!r}")
        v = torch.as_tensor(reference, dtype=torch.float32).detach().flatten()
        if not torch.isfinite(v).all() or float(v.norm()) == 0:
            raise ValueError("the reference feature must be finite and non-zero")
        self.layer, self.pool, self.measure, self.name = layer, pool, measure, str(name)
        self.reference = v
        self.layers = frozenset({layer})

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.layer]
        if self.pool == "cls" and lay.kind != "vector":
            _check_token(self.layer, 0, lay)
        if self.reference.numel() != lay.channels:
            raise ValueError(
                f"the reference feature has {self.reference.numel()} entries but layer {self.layer!r} has "
                f"{lay.channels} channels; measure the reference at the same layer"
            )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        f = _pooled(layouts[self.layer], acts[self.layer], self.pool)
        ref = self.reference.to(f)
        if self.measure == "cosine":
            return torch.nn.functional.cosine_similarity(f, ref[None], dim=1, eps=1e-8)
        return f @ (ref / ref.norm())

    def describe(self) -> dict[str, Any]:
        return {"kind": "like", "layer": self.layer, "reference": self.name, "pool": self.pool,
                "measure": self.measure, "label": f"like {self.name} at {self.layer} ({self.pool}, {self.measure})",
                "slug_text": f"like-{self.name.rsplit('.', 1)[0]}-{_tail(self.layer)}",
                "value_name": f"{self.measure} to reference"}

    def __repr__(self) -> str:
        return f"Like({self.name!r}, {self.layer}, {self.pool}, {self.measure})"


class Text(Objective):
    """Toward (or away from) a text prompt in a joint image-text embedding (CLIP): the cosine
    similarity of the model's output (the image embedding) to the prompt's embedding.

    ``away=True`` makes the value the negative cosine, so that it rises as the image moves
    away from the prompt. Build it with :func:`accentuate.clip.clip_text`, which embeds the
    prompt once.
    """

    def __init__(self, prompt: str, embedding: torch.Tensor, away: bool = False) -> None:
        e = torch.as_tensor(embedding, dtype=torch.float32).detach().flatten()
        if not torch.isfinite(e).all() or float(e.norm()) == 0:
            raise ValueError("the text embedding must be finite and non-zero")
        self.prompt, self.away = str(prompt), bool(away)
        self.embedding = e / e.norm()
        self.layers = frozenset({OUTPUT})

    def validate(self, layouts: Layouts) -> None:
        lay = layouts.get(OUTPUT)
        if lay is not None and (lay.kind != "vector" or lay.channels != self.embedding.numel()):
            raise ValueError(
                f"the model's output has layout {lay}, but the text embedding has {self.embedding.numel()} "
                "entries; use the image branch of the same CLIP model (accentuate.clip.load_clip)"
            )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        img = acts[OUTPUT]
        cos = torch.nn.functional.cosine_similarity(img, self.embedding.to(img)[None], dim=1, eps=1e-8)
        return -cos if self.away else cos

    def describe(self) -> dict[str, Any]:
        label = f"text {self.prompt!r}" + (" (away)" if self.away else "")
        return {"kind": "text", "prompt": self.prompt, "away": self.away, "label": label,
                "slug_text": ("away-" if self.away else "text-") + self.prompt,
                "value_name": "negative cosine to text" if self.away else "cosine to text"}

    def __repr__(self) -> str:
        return f"Text({self.prompt!r}{', away' if self.away else ''})"


class Recorded(Objective):
    """A target read back from a record that does not define it (an objective of your own).

    It keeps the objective's ``repr`` and class index for display and records; it cannot be
    optimized again (calling it raises ``TypeError``).
    """

    def __init__(self, text: str, class_index: int | None = None) -> None:
        self.text = text
        self._class_index = class_index
        self.layers = frozenset()

    @property
    def class_index(self) -> int | None:
        return self._class_index

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        raise TypeError(f"the target {self.text} was read from a record that does not define it; "
                        "build the objective again to optimize it")

    def to_record(self) -> dict[str, Any]:
        return {"type": "recorded", "repr": self.text, "class_index": self._class_index}

    def __repr__(self) -> str:
        return self.text


def from_record(rec: Mapping[str, Any]) -> Objective:
    """The objective a :meth:`Objective.to_record` definition describes.

    Raises:
        ValueError: an unknown ``type``.
    """
    kind = rec.get("type")
    if kind == "logit":
        out = Logit(rec["c"])
        out.name = rec.get("name")
        return out
    if kind == "neuron":
        return Neuron(rec["layer"], int(rec["c"]), rec.get("y"), rec.get("x"))
    if kind == "channel":
        return Channel(rec["layer"], int(rec["c"]))
    if kind == "direction":
        d = Direction(rec["layer"], rec["vector"], rec.get("kind", "dot"))
        d.source = rec.get("source")
        return d
    if kind == "sum":
        return Sum([(float(w), from_record(r)) for w, r in rec["terms"]])
    if kind == "recorded":
        return Recorded(str(rec.get("repr")), rec.get("class_index"))
    raise ValueError(f"unknown objective type {kind!r} in the record")


def logit(c: int | str) -> Logit:
    """The logit of class ``c`` (an index, or a name when the model has labels)."""
    return Logit(c)


def channel(layer: str, c: int, token: int | None = None) -> Channel | TokenChannel:
    """The spatial mean of channel ``c`` of ``layer`` (over the patch tokens of a token layer),
    or with ``token=i`` channel ``c`` of leading token ``i`` (0: the class token)."""
    return Channel(layer, c) if token is None else TokenChannel(layer, c, token)


def neuron(layer: str, c: int, y: int | None = None, x: int | None = None) -> Neuron:
    """Channel ``c`` of ``layer`` at position ``(y, x)`` (default: the centre)."""
    return Neuron(layer, c, y, x)


def direction(layer: str, vector: torch.Tensor | Sequence[float], kind: str = "dot",
              token: int | None = None) -> Direction:
    """A direction ``vector`` in the channel space of ``layer`` (``kind``: dot or cosine),
    averaged over the positions (patch tokens), or at leading token ``token`` (0: class token)."""
    return Direction(layer, vector, kind, token)


#: Names (last dotted parts) of attention output projections: transformers' ViT, DINOv2,
#: DeiT (``o_proj``), CLIP (``out_proj``), older transformers (``attention.output.dense``),
#: timm (``attn.proj``).
_PROJECTIONS = ("o_proj", "out_proj", "attention.output.dense", "attn.proj")


def head_projection(model: nn.Module, name: str) -> str:
    """The attention output projection at or under module ``name``: ``name`` itself when it
    is a ``Linear``, else the one projection among its submodules (for a block or an
    attention module, e.g. ``layers.3`` -> ``layers.3.attention.o_proj``).

    Raises:
        LayerError: ``name`` is not in the model.
        ValueError: no projection, or several, under ``name`` (the message lists them).
    """
    from .hooks import check_layers

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


def default_like_layer(model: nn.Module, spec: Any = None) -> str:
    """The layer :func:`like` reads when none is named: the last layer (in the order outputs
    complete) with more than one position, i.e. the last token or feature-map layer (for
    transformers' ViT and DINOv2 the final ``layernorm``).

    Raises:
        ValueError: the model has no such layer (name one, or :data:`~accentuate.hooks.OUTPUT`).
    """
    from .hooks import ModelRunner
    from .spec import resolve_spec

    runner = ModelRunner(model, spec if spec is not None else resolve_spec(model))
    spatial = [r.name for r in runner.trace() if r.layout is not None and r.layout.spatial]
    if not spatial:
        raise ValueError("the model has no token or feature-map layer; name the layer for like() "
                         "(or '@output', the model's output)")
    return spatial[-1]


def like(layer: str | None, image: Any, model: nn.Module, pool: str | None = None, measure: str = "cosine",
         *, name: str | None = None, **spec_overrides: Any) -> Like:
    """Make an image look more like ``image`` to ``model`` at ``layer`` (see :class:`Like`).

    The reference image is fitted to the model's input size the way an accentuation's whole
    view is (resized, aspect ratio not kept), preprocessed as the model's spec says, and run
    once without autograd; its feature at ``layer`` is the class token (``pool="cls"``) or the
    mean of the patch positions (``pool="mean"``).

    Args:
        layer: a layer name, :data:`~accentuate.hooks.OUTPUT` (``"@output"``: the model's output,
            e.g. CLIP's image embedding) or ``None`` (:func:`default_like_layer`).
        image: a path, PIL image or ``(3, H, W)`` tensor in [0, 1].
        model: the model that will be accentuated.
        pool: ``"cls"``, ``"mean"``, or ``None``: ``"cls"`` when the layer has a leading token,
            else ``"mean"``.
        measure: ``"cosine"`` or ``"dot"``.
        name: the reference's name in labels (default: the file name, else ``"reference"``).
        spec_overrides: for a model without a spec, as for :func:`accentuate.spec.resolve_spec`.
    """
    import os
    from pathlib import Path

    from .hooks import ModelRunner
    from .images import prepare_seeds, resize
    from .spec import resolve_spec

    spec = resolve_spec(model, **spec_overrides)
    if layer is None:
        layer = default_like_layer(model, spec)
    if pool is not None and pool not in ("cls", "mean"):
        raise ValueError(f"pool must be 'cls' or 'mean'; got {pool!r}")
    if name is None:
        name = Path(image).name if isinstance(image, (str, os.PathLike)) else "reference"
    runner = ModelRunner(model, spec)
    x = resize(prepare_seeds(image, max(spec.input_size)), spec.input_size)
    acts = runner.activations(x, [layer], stop_at=None if layer == OUTPUT else [layer])
    lay = runner.layouts([layer], {layer: tuple(acts[layer].shape)})[layer]
    if pool is None:
        pool = "cls" if lay.kind == "tokens" and lay.prefix > 0 else "mean"
    if pool == "cls" and lay.kind != "vector":
        _check_token(layer, 0, lay)
    return Like(layer, _pooled(lay, acts[layer], pool)[0], pool, measure, name)


def as_objective(target: object) -> Objective:
    """Turn a target (class index, class name or objective) into an objective."""
    if isinstance(target, Objective):
        return target
    if isinstance(target, (int, str)) and not isinstance(target, bool):
        return Logit(target)
    raise TypeError(
        f"a target must be a class index, a class name or an Objective; got {type(target).__name__}"
    )

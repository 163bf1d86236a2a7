"""Objectives: small values that know the layers they read and compose with ``+ - *``.

An objective maps captured activations to one value per batch row (per crop).
Layers are ``named_modules()`` dotted paths; the model's output is the pseudo
layer :data:`accentuate.hooks.OUTPUT`. Layer outputs may be conv-shaped
``(B, C, H, W)``, token-shaped ``(B, N, D)`` (the channel axis is the last one) or
vectors ``(B, C)``.

Example:
    >>> obj = channel("blocks.5", 20) - 0.5 * logit(1)
    >>> obj
    Channel(blocks.5, 20) - 0.5 * Logit(1)
    >>> sorted(obj.layers)
    ['@output', 'blocks.5']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .hooks import OUTPUT

__all__ = [
    "Channel",
    "Direction",
    "Logit",
    "Neuron",
    "Objective",
    "channel",
    "direction",
    "logit",
    "neuron",
]

Acts = Mapping[str, torch.Tensor]


class Objective:
    """Base class. Subclasses set ``layers`` and implement :meth:`__call__`."""

    layers: frozenset[str] = frozenset()

    def __call__(self, acts: Acts) -> torch.Tensor:
        """Return the objective per batch row, shape ``(B,)``."""
        raise NotImplementedError

    # -- resolution and validation -----------------------------------------------------
    def resolve(self, labels: Sequence[str] | None, num_outputs: int | None = None) -> Objective:
        """Return a copy with class names turned into indices (see :class:`Logit`)."""
        return self

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
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

    def __call__(self, acts: Acts) -> torch.Tensor:
        return sum(w * o(acts) for w, o in self._terms)  # type: ignore[return-value]

    def resolve(self, labels: Sequence[str] | None, num_outputs: int | None = None) -> Objective:
        return Sum([(w, o.resolve(labels, num_outputs)) for w, o in self._terms])

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        for _, o in self._terms:
            o.validate(shapes)

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


def _channel_axis(t: torch.Tensor) -> int:
    return 1 if t.dim() == 4 else t.dim() - 1


def _num_channels(shape: tuple[int, ...]) -> int:
    return shape[1] if len(shape) == 4 else shape[-1]


def _check_channel(layer: str, c: int, shape: tuple[int, ...]) -> None:
    n = _num_channels(shape)
    if not 0 <= c < n:
        raise ValueError(
            f"channel {c} is out of range for layer {layer!r}, which has {n} channels (0..{n - 1})"
        )


def _token_grid(n: int) -> tuple[int, int, int]:
    """(offset, side, side) of a square token grid, skipping a leading class token."""
    for offset in (0, 1):
        side = math.isqrt(n - offset)
        if side * side == n - offset and side > 0:
            return offset, side, side
    raise ValueError(
        f"cannot place a neuron in a token layer of {n} tokens (not a square grid, "
        "with or without one class token)"
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

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get(OUTPUT)
        if shape is not None and isinstance(self.c, int):
            if len(shape) != 2:
                raise ValueError(
                    f"the model's output has shape {shape}; a logit needs (B, classes). "
                    "Pass output= to pick the logits from a tuple or dict output"
                )
            if not 0 <= self.c < shape[1]:
                from .errors import ClassNameError

                raise ClassNameError(
                    f"class index {self.c} is out of range; the model has {shape[1]} outputs "
                    f"(0..{shape[1] - 1})"
                )

    def __call__(self, acts: Acts) -> torch.Tensor:
        return acts[OUTPUT][:, self.c]

    def __repr__(self) -> str:
        if self.name is not None and isinstance(self.c, int):
            return f"Logit({self.c} {self.name!r})"
        return f"Logit({self.c!r})" if isinstance(self.c, str) else f"Logit({self.c})"


class Channel(Objective):
    """Mean activation of one channel over all spatial positions (or tokens)."""

    def __init__(self, layer: str, c: int) -> None:
        self.layer, self.c = layer, int(c)
        self.layers = frozenset({layer})

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        _check_channel(self.layer, self.c, shapes[self.layer])

    def __call__(self, acts: Acts) -> torch.Tensor:
        t = acts[self.layer]
        if t.dim() == 4:
            return t[:, self.c].mean(dim=(1, 2))
        if t.dim() == 3:
            return t[:, :, self.c].mean(dim=1)
        return t.reshape(t.shape[0], -1)[:, self.c]

    def __repr__(self) -> str:
        return f"Channel({self.layer}, {self.c})"


class Neuron(Objective):
    """One channel at one spatial position (default: the centre)."""

    def __init__(self, layer: str, c: int, y: int | None = None, x: int | None = None) -> None:
        self.layer, self.c, self.y, self.x = layer, int(c), y, x
        self.layers = frozenset({layer})

    def _grid(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if len(shape) == 4:
            return 0, shape[2], shape[3]
        if len(shape) == 3:
            return _token_grid(shape[1])
        return 0, 1, 1

    def _pos(self, shape: tuple[int, ...]) -> tuple[int, int]:
        _, h, w = self._grid(shape)
        return (h // 2 if self.y is None else self.y, w // 2 if self.x is None else self.x)

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes[self.layer]
        _check_channel(self.layer, self.c, shape)
        _, h, w = self._grid(shape)
        y, x = self._pos(shape)
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"position (y={y}, x={x}) is outside layer {self.layer!r}, whose grid is {h} x {w}"
            )

    def __call__(self, acts: Acts) -> torch.Tensor:
        t = acts[self.layer]
        y, x = self._pos(tuple(t.shape))
        if t.dim() == 4:
            return t[:, self.c, y, x]
        if t.dim() == 3:
            offset, _, w = _token_grid(t.shape[1])
            return t[:, offset + y * w + x, self.c]
        return t.reshape(t.shape[0], -1)[:, self.c]

    def __repr__(self) -> str:
        pos = "" if self.y is None and self.x is None else f", y={self.y}, x={self.x}"
        return f"Neuron({self.layer}, {self.c}{pos})"


class Direction(Objective):
    """A direction in a layer's channel space, averaged over positions.

    ``kind="dot"``: dot product with the unit vector. ``kind="cosine"``: cosine
    similarity (scale-free, in [-1, 1]).
    """

    def __init__(self, layer: str, vector: torch.Tensor | Sequence[float], kind: str = "dot") -> None:
        if kind not in ("dot", "cosine"):
            raise ValueError(f"direction kind must be 'dot' or 'cosine'; got {kind!r}")
        v = torch.as_tensor(vector, dtype=torch.float32).flatten()
        if not torch.isfinite(v).all() or float(v.norm()) == 0:
            raise ValueError("a direction vector must be finite and non-zero")
        self.layer, self.kind = layer, kind
        self.vector = v / v.norm()
        self.layers = frozenset({layer})

    def validate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        n = _num_channels(shapes[self.layer])
        if self.vector.numel() != n:
            raise ValueError(
                f"direction has {self.vector.numel()} entries but layer {self.layer!r} has {n} channels"
            )

    def __call__(self, acts: Acts) -> torch.Tensor:
        t = acts[self.layer]
        ax = _channel_axis(t)
        shape = [1] * t.dim()
        shape[ax] = -1
        v = self.vector.to(t).view(shape)
        dots = (t * v).sum(dim=ax)
        if self.kind == "cosine":
            dots = dots / t.norm(dim=ax).clamp(min=1e-8)
        return dots.reshape(t.shape[0], -1).mean(dim=1)

    def __repr__(self) -> str:
        return f"Direction({self.layer}, {self.vector.numel()}-d, {self.kind})"


def logit(c: int | str) -> Logit:
    """The logit of class ``c`` (an index, or a name when the model has labels)."""
    return Logit(c)


def channel(layer: str, c: int) -> Channel:
    """The spatial mean of channel ``c`` of ``layer``."""
    return Channel(layer, c)


def neuron(layer: str, c: int, y: int | None = None, x: int | None = None) -> Neuron:
    """Channel ``c`` of ``layer`` at position ``(y, x)`` (default: the centre)."""
    return Neuron(layer, c, y, x)


def direction(layer: str, vector: torch.Tensor | Sequence[float], kind: str = "dot") -> Direction:
    """A direction ``vector`` in the channel space of ``layer`` (``kind``: dot or cosine)."""
    return Direction(layer, vector, kind)


def as_objective(target: object) -> Objective:
    """Turn a target (class index, class name or objective) into an objective."""
    if isinstance(target, Objective):
        return target
    if isinstance(target, (int, str)) and not isinstance(target, bool):
        return Logit(target)
    raise TypeError(
        f"a target must be a class index, a class name or an Objective; got {type(target).__name__}"
    )

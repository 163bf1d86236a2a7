"""Objectives: small values that know the layers they read and compose with ``+ - *``.

An objective maps captured activations to one value per batch row (per crop).
Layers are ``named_modules()`` dotted paths; the model's output is the pseudo
layer :data:`accentuate.hooks.OUTPUT`. Where a layer's channels and positions are
is its :class:`~accentuate.layout.Layout` (conv ``nchw``, channels-last ``nhwc``,
``tokens`` with leading class/register tokens, ``vector``), given with the
activations: an objective never guesses it from the tensor.

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
from typing import Any

import torch

from .hooks import OUTPUT
from .layout import Layout

__all__ = [
    "Channel",
    "Direction",
    "Logit",
    "Neuron",
    "Objective",
    "Recorded",
    "channel",
    "direction",
    "from_record",
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
        h, w = lay.grid
        y, x = self._pos(lay)
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"position (y={y}, x={x}) is outside layer {self.layer!r}, whose grid is {h} x {w} "
                f"(y 0..{h - 1}, x 0..{w - 1})"
            )

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
        #: Where the vector came from (a file the command line read), for labels and records.
        self.source: str | None = None

    def validate(self, layouts: Layouts) -> None:
        n = layouts[self.layer].channels
        if self.vector.numel() != n:
            raise ValueError(
                f"direction has {self.vector.numel()} entries but layer {self.layer!r} has {n} channels"
            )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        t = layouts[self.layer].positions(acts[self.layer])  # (B, P, C)
        dots = t @ self.vector.to(t)
        if self.kind == "cosine":
            dots = dots / t.norm(dim=-1).clamp(min=1e-8)
        return dots.mean(dim=1)

    def describe(self) -> dict[str, Any]:
        from pathlib import Path

        src = self.source
        return {"kind": "direction", "layer": self.layer, "channels": int(self.vector.numel()),
                "measure": self.kind, "source": src,
                "label": f"{self.layer} along {src or f'a {self.vector.numel()}-d direction'}"
                         + ("" if self.kind == "dot" else " (cosine)"),
                "slug_text": f"{self.layer}-{Path(src).stem if src else 'direction'}",
                "value_name": "direction (dot product)" if self.kind == "dot" else "direction (cosine)"}

    def to_record(self) -> dict[str, Any]:
        return {"type": "direction", "layer": self.layer, "kind": self.kind, "vector": self.vector.tolist(),
                "source": self.source}

    def identity(self) -> str:
        import hashlib

        digest = hashlib.sha256(self.vector.detach().cpu().float().numpy().tobytes()).hexdigest()[:16]
        return f"{self!r}#{digest}"

    def __repr__(self) -> str:
        return f"Direction({self.layer}, {self.vector.numel()}-d, {self.kind})"


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

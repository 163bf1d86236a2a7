"""The basic kinds: a class logit, a channel, a leading token's channel, a neuron, a direction.

Each kind is one class here with its factory (:func:`logit`, :func:`channel`, :func:`neuron`,
:func:`direction`); a kind registers itself for records by its ``record_type`` (see
:mod:`accentuate.objectives.base`). The checks that name a wrong channel, token or position
live here too; the other kinds use them.

Example:
    >>> obj = neuron("blocks.5", 20, y=3, x=4)
    >>> obj.to_record()
    {'type': 'neuron', 'repr': 'Neuron(blocks.5, 20, y=3, x=4)', 'layer': 'blocks.5', 'c': 20, 'y': 3, 'x': 4}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..hooks import OUTPUT
from ..layout import Layout
from .base import (
    Acts,
    Layouts,
    Objective,
    constant_like,
    recorded_unit,
    tensor_digest,
    tensor_from_record,
    tensor_record,
)
from .checks import check_channel, check_position, check_token

__all__ = ["Channel", "Direction", "Logit", "Neuron", "TokenChannel", "channel", "direction", "logit", "neuron"]


class Logit(Objective):
    """The model's output ``c`` (a class logit), by index or by class name."""

    record_type = "logit"

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
        from ..labels import find_class

        if isinstance(self.c, str):
            idx = find_class(self.c, labels)
            out = Logit(idx)
            out.name = labels[idx] if labels is not None else self.c
            return out
        n = num_outputs if num_outputs is not None else (len(labels) if labels else None)
        if self.c < 0 or (n is not None and self.c >= n):
            from ..errors import ClassNameError

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
                from ..errors import ClassNameError

                raise ClassNameError(
                    f"class index {self.c} is out of range; the model has {lay.channels} outputs "
                    f"(0..{lay.channels - 1})"
                )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        return acts[OUTPUT][:, self.c]  # type: ignore[index]

    def to_fields(self) -> dict[str, Any]:
        return {"c": self.c, "name": self.name}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Logit:
        out = cls(rec["c"])
        out.name = rec.get("name")
        return out

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

    record_type = "channel"

    def __init__(self, layer: str, c: int) -> None:
        self.layer, self.c = layer, int(c)
        self.layers = frozenset({layer})

    def validate(self, layouts: Layouts) -> None:
        check_channel(self.layer, self.c, layouts[self.layer])

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        return layouts[self.layer].channel(acts[self.layer], self.c).mean(dim=1)

    def to_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "c": self.c}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Channel:
        return cls(rec["layer"], int(rec["c"]))

    def describe(self) -> dict[str, Any]:
        return {"kind": "channel", "layer": self.layer, "channel": self.c, "label": f"{self.layer}:{self.c}",
                "slug_text": f"{self.layer}-c{self.c}", "value_name": "channel mean"}

    def __repr__(self) -> str:
        return f"Channel({self.layer}, {self.c})"


class TokenChannel(Objective):
    """Channel ``c`` of one leading token of a token layer (token 0: the class token)."""

    record_type = "token_channel"

    def __init__(self, layer: str, c: int, token: int = 0) -> None:
        self.layer, self.c, self.token = layer, int(c), int(token)
        self.layers = frozenset({layer})

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.layer]
        check_token(self.layer, self.token, lay)
        check_channel(self.layer, self.c, lay)

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        return layouts[self.layer].token(acts[self.layer], self.token)[:, self.c]

    def to_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "c": self.c, "token": self.token}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> TokenChannel:
        return cls(rec["layer"], int(rec["c"]), int(rec["token"]))

    def describe(self) -> dict[str, Any]:
        return {"kind": "token_channel", "layer": self.layer, "channel": self.c, "token": self.token,
                "label": f"{self.layer}:{self.c}@tok{self.token}",
                "slug_text": f"{self.layer}-c{self.c}-tok{self.token}", "value_name": "activation"}

    def __repr__(self) -> str:
        return f"TokenChannel({self.layer}, {self.c}, token={self.token})"


class Neuron(Objective):
    """One channel at one spatial position (default: the centre)."""

    record_type = "neuron"

    def __init__(self, layer: str, c: int, y: int | None = None, x: int | None = None) -> None:
        self.layer, self.c, self.y, self.x = layer, int(c), y, x
        self.layers = frozenset({layer})

    def _pos(self, layout: Layout) -> tuple[int, int]:
        h, w = layout.grid
        return (h // 2 if self.y is None else self.y, w // 2 if self.x is None else self.x)

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.layer]
        check_channel(self.layer, self.c, lay)
        check_position(self.layer, *self._pos(lay), lay)

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        lay = layouts[self.layer]
        y, x = self._pos(lay)
        return lay.at(acts[self.layer], y, x)[:, self.c]

    def to_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "c": self.c, "y": self.y, "x": self.x}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Neuron:
        y, x = rec.get("y"), rec.get("x")
        return cls(rec["layer"], int(rec["c"]), None if y is None else int(y), None if x is None else int(x))

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

    Its record holds the unit vector (:func:`~accentuate.objectives.base.tensor_record`) and
    ``source``; its identity adds a hash of the vector to the ``repr``.
    """

    record_type = "direction"

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
            check_token(self.layer, self.token, layouts[self.layer])
        n = layouts[self.layer].channels
        if self.vector.numel() != n:
            raise ValueError(
                f"direction has {self.vector.numel()} entries but layer {self.layer!r} has {n} channels"
            )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        lay = layouts[self.layer]
        t = lay.positions(acts[self.layer]) if self.token is None else \
            lay.token(acts[self.layer], self.token)[:, None]  # (B, P, C)
        dots = t @ constant_like(self.vector, t)
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

    def to_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "kind": self.kind, "token": self.token, "source": self.source,
                "vector": tensor_record(self.vector)}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Direction:
        v = tensor_from_record(rec["vector"])
        token = rec.get("token")
        out = cls(rec["layer"], v, rec.get("kind", "dot"), None if token is None else int(token))
        out.vector = recorded_unit(v, out.vector)
        out.source = rec.get("source")
        return out

    def identity(self) -> str:
        return f"{self!r}#{tensor_digest(self.vector)}"

    def __repr__(self) -> str:
        at = "" if self.token is None else f", token={self.token}"
        return f"Direction({self.layer}, {self.vector.numel()}-d, {self.kind}{at})"


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

"""The algebra of objectives, and how an objective is recorded and rebuilt.

:class:`Objective` is the base of every kind; ``+``, ``-`` and ``*`` build a :class:`Sum`.

Records. A kind that sets the class attribute ``record_type`` (a short name such as
``"channel"``) is registered by that line alone (:meth:`Objective.__init_subclass__`), and
defines :meth:`~Objective.to_fields` (its defining values, JSON-able) and the classmethod
:meth:`~Objective.from_fields` (the objective those values describe). Its record is then
``{"type": record_type, "repr": repr(obj), **fields}``; :func:`from_record` looks the type up
in the registry (:func:`kinds`). A record of a type that is not registered (a kind of your own
that is not imported, or one from a newer version) comes back as :class:`Recorded`, with its
``repr``, and a warning; so does an objective whose class does not register itself.

Tensors in records (a direction's vector, a reference image's feature, a text embedding) are
stored losslessly by :func:`tensor_record`: ``{"dtype": "float32", "shape": [...], "base64": ...}``,
the base64 of the tensor's float32 values in little-endian byte order.

Identity. :meth:`Objective.identity` is what tells two objectives apart in a run's pair keys:
the ``repr`` for kinds whose ``repr`` shows everything they measure, and for kinds that hold a
tensor also a hash of it (:func:`tensor_digest`), so that another vector or another reference
image is another target.

Example:
    >>> from accentuate.objectives import channel, logit
    >>> obj = channel("blocks.5", 20) - 0.5 * logit(1)
    >>> rec = obj.to_record()
    >>> rec["type"], [w for w, _ in rec["terms"]]
    ('sum', [1.0, -0.5])
    >>> back = from_record(rec)
    >>> back, back.identity() == obj.identity()
    (Channel(blocks.5, 20) - 0.5 * Logit(1), True)
"""

from __future__ import annotations

import base64
import hashlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.weak import WeakIdKeyDictionary

from ..layout import Layout

__all__ = ["Acts", "Layouts", "Objective", "Recorded", "Sum", "constant_like", "from_record", "kinds",
           "recorded_unit", "tensor_digest", "tensor_from_record", "tensor_record"]

Acts = Mapping[str, torch.Tensor]
Layouts = Mapping[str, Layout]

#: The registered kinds: ``record_type`` -> class (filled by :meth:`Objective.__init_subclass__`).
_KINDS: dict[str, type[Objective]] = {}


def kinds() -> dict[str, type[Objective]]:
    """The registered objective kinds, ``{record_type: class}`` (a copy).

    Example:
        >>> sorted(kinds())[:5]
        ['channel', 'direction', 'function', 'head', 'like']
    """
    return dict(_KINDS)


class Objective:
    """Base class. Subclasses set ``layers`` and implement :meth:`__call__`.

    A subclass that sets ``record_type`` registers itself as a kind that records can rebuild;
    it must then define :meth:`to_fields` and :meth:`from_fields` itself.
    """

    layers: frozenset[str] = frozenset()
    #: The kind's name in records (``{"type": record_type, ...}``); ``None``: not rebuildable.
    record_type: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("record_type")
        if name is None:
            return
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__}.record_type must be a non-empty str; got {name!r}")
        missing = [m for m in ("to_fields", "from_fields") if m not in cls.__dict__]
        if missing:
            raise TypeError(f"{cls.__qualname__} sets record_type {name!r} but does not define "
                            f"{' and '.join(missing)}; a recorded kind says how it is written and rebuilt")
        prev = _KINDS.get(name)
        if prev is not None and (prev.__module__, prev.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"objective record_type {name!r} is already taken by {prev.__module__}."
                            f"{prev.__qualname__}; give {cls.__qualname__} another record_type")
        _KINDS[name] = cls

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        """Return the objective per batch row, shape ``(B,)``, from the captured
        activations and their layouts."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """How the objective is shown and recorded: ``kind``, ``label``, ``value_name`` and
        what it reads (``layer``, ``channel``, ``y``, ``x``, ``class_index``, ...)."""
        return {"kind": "objective", "label": repr(self), "value_name": "objective"}

    def identity(self) -> str:
        """What tells this objective apart from others in a run's pair keys: its ``repr``; kinds
        whose ``repr`` does not show all they measure (a direction's vector) add to it."""
        return repr(self)

    # -- records ------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """A JSON-able definition that :func:`from_record` rebuilds: ``{"type", "repr", **fields}``.

        An objective whose class is not a registered kind (no ``record_type`` of its own) is
        kept as its ``repr`` (``{"type": "recorded"}``).
        """
        cls = type(self)
        name = cls.__dict__.get("record_type")
        if name is None or _KINDS.get(name) is not cls:
            return {"type": "recorded", "repr": repr(self), "class_index": self.class_index}
        return {"type": name, "repr": repr(self), **self.to_fields()}

    def to_fields(self) -> dict[str, Any]:
        """The values that define this objective, JSON-able (tensors as :func:`tensor_record`)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define to_fields")

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Objective:
        """The objective that :meth:`to_fields` values (in ``rec``) describe."""
        raise NotImplementedError(f"{cls.__qualname__} does not define from_fields")

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
        """The weighted terms of this objective (itself, with weight 1)."""
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

    record_type = "sum"

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

    def to_fields(self) -> dict[str, Any]:
        return {"terms": [[float(w), o.to_record()] for w, o in self._terms]}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Sum:
        return cls([(float(w), from_record(r)) for w, r in rec["terms"]])

    def identity(self) -> str:
        """The ``repr`` when each term's identity is its ``repr``; else the weights and the terms'
        identities (a term's label, such as a reference image's name, is not part of it)."""
        parts = [o.identity() for _, o in self._terms]
        if parts == [repr(o) for _, o in self._terms]:
            return repr(self)
        return "Sum(" + " | ".join(f"{float(w)!r} * {p}" for (w, _), p in zip(self._terms, parts)) + ")"

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


class Recorded(Objective):
    """A target read back from a record that does not define it (an objective of your own).

    It keeps the objective's ``repr`` and class index for display and records; it cannot be
    optimized again (calling it raises ``TypeError``).
    """

    record_type = "recorded"

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

    def to_fields(self) -> dict[str, Any]:
        return {"class_index": self._class_index}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Recorded:
        idx = rec.get("class_index")
        return cls(str(rec.get("repr")), None if idx is None else int(idx))

    def __repr__(self) -> str:
        return self.text


def from_record(rec: Mapping[str, Any]) -> Objective:
    """The objective a :meth:`Objective.to_record` definition describes.

    A record whose ``type`` is not a registered kind (:func:`kinds`) comes back as
    :class:`Recorded` with its ``repr``, and a warning.

    Raises:
        ValueError: ``rec`` is not a record, or a registered kind's record lacks a value it needs.
    """
    if not isinstance(rec, Mapping):
        raise ValueError(f"an objective record is a JSON object with a 'type'; got {type(rec).__name__}")
    name = rec.get("type")
    cls = _KINDS.get(name) if isinstance(name, str) else None
    if cls is None:
        text = str(rec.get("repr") or f"<objective of type {name!r}>")
        warnings.warn(f"unknown objective type {name!r} in the record; it is kept as {text} (it cannot be "
                      "optimized again: import the module that defines that kind before reading the record)",
                      stacklevel=2)
        idx = rec.get("class_index")
        return Recorded(text, idx if isinstance(idx, int) and not isinstance(idx, bool) else None)
    try:
        return cls.from_fields(rec)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        what = f"no {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"the {name!r} objective record is not valid ({what}); it was edited or damaged: "
                         "write it again with Objective.to_record") from None


# -- constant tensors on the activations' device --------------------------------------------------
#: Copies of objectives' constant tensors, per source tensor: ``{(device, dtype, version): copy}``.
_COPIES: WeakIdKeyDictionary = WeakIdKeyDictionary()


def constant_like(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` on the device and in the dtype of ``like``, copied once, not at every call.

    For the constants an objective holds (a direction's vector, a reference image's feature, a
    text embedding), kept on the CPU where they were made: ``t.to(like)`` at every step would copy
    from host memory each time, and such a copy makes the host wait for the device. The copy is
    kept while ``t`` lives and is unchanged (an in-place change of ``t`` makes a new one).

    Example:
        >>> v = torch.tensor([1.0, 2.0])
        >>> a = constant_like(v, torch.zeros(3, dtype=torch.float64))
        >>> a.dtype, a is constant_like(v, torch.zeros(1, dtype=torch.float64))
        (torch.float64, True)
    """
    if t.device == like.device and t.dtype == like.dtype:
        return t
    per = _COPIES.get(t)
    if per is None:
        per = _COPIES[t] = {}
    key = (like.device, like.dtype, t._version)
    out = per.get(key)
    if out is None:
        per.clear()  # an older version, or another device: keep one copy per source
        out = per[key] = t.detach().to(like)
    return out


# -- tensors in records ------------------------------------------------------------------------
def _float32_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().float().contiguous().numpy().astype("<f4", copy=False).tobytes()


def tensor_record(t: torch.Tensor) -> dict[str, Any]:
    """``t`` as JSON, losslessly: ``{"dtype": "float32", "shape": [...], "base64": ...}``, the base64
    of its float32 values in little-endian order (see :func:`tensor_from_record`).

    Example:
        >>> tensor_record(torch.tensor([1.0, -2.0]))
        {'dtype': 'float32', 'shape': [2], 'base64': 'AACAPwAAAMA='}
    """
    return {"dtype": "float32", "shape": list(t.shape), "base64": base64.b64encode(_float32_bytes(t)).decode("ascii")}


def tensor_from_record(value: Any) -> torch.Tensor:
    """The float32 tensor a :func:`tensor_record` value describes; a plain list of numbers (as
    records written before base64 hold a direction's vector) is read too.

    Raises:
        ValueError: not such a value, or its data does not fit its shape.

    Example:
        >>> tensor_from_record(tensor_record(torch.tensor([0.1, 0.2]))).tolist() == torch.tensor([0.1, 0.2]).tolist()
        True
    """
    if isinstance(value, Mapping):
        if value.get("dtype") != "float32" or not isinstance(value.get("base64"), str):
            raise ValueError(f"a tensor is recorded as {{'dtype': 'float32', 'shape', 'base64'}}; got keys "
                             f"{sorted(value)}")
        data = np.frombuffer(base64.b64decode(value["base64"], validate=True), dtype="<f4")
        shape = [int(s) for s in value.get("shape", [data.size])]
        if int(np.prod(shape)) != data.size:
            raise ValueError(f"the recorded tensor has {data.size} values, not the {shape} its shape says")
        return torch.from_numpy(data.astype(np.float32).reshape(shape))
    if isinstance(value, (list, tuple)):
        return torch.as_tensor(value, dtype=torch.float32)
    raise ValueError(f"a recorded tensor is a tensor_record dict or a list of numbers; got {type(value).__name__}")


def recorded_unit(recorded: torch.Tensor, built: torch.Tensor) -> torch.Tensor:
    """The unit vector an objective keeps after :meth:`~Objective.from_fields`: the ``recorded`` one
    bit for bit when it is a unit vector (normalizing it again may round its last bits and so change
    the objective's identity), else ``built`` (what the constructor normalized)."""
    return recorded.flatten() if abs(float(recorded.double().norm()) - 1.0) < 1e-6 else built


def tensor_digest(t: torch.Tensor) -> str:
    """The first 16 hex digits of the SHA-256 of ``t``'s float32 values (little-endian): what an
    objective's :meth:`~Objective.identity` adds for a tensor it holds."""
    return hashlib.sha256(_float32_bytes(t)).hexdigest()[:16]

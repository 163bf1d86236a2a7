"""A function of your own as an objective: :func:`objective` (what Lucent's ``wrap_objective`` does).

For the quick experiment written in a notebook: a function of the captured activations that
returns one value per batch row becomes an :class:`Objective` that knows its layers, composes with
``+ - *`` and runs in :func:`accentuate.accentuate` like any other target.

    >>> import torch
    >>> @objective(layers=["blocks.5"])
    ... def stripes(acts):
    ...     return acts["blocks.5"][:, 20].mean(dim=(1, 2))
    >>> stripes
    Function(stripes, blocks.5)
    >>> float(stripes({"blocks.5": torch.ones(2, 32, 4, 4)}, {})[0])
    1.0

The function takes the activations (``{layer: tensor}``, batch first, as the model produced them)
and, if it has a second parameter, their :class:`~accentuate.layout.Layout` per layer (where the
channels and positions are: ``layouts[layer].channel(t, c)``, ``.pool(t)``); it returns a tensor of
shape ``(B,)``, one value per batch row (per crop).

Records. The objective records itself by the function's module and qualified name and a hash of
its code (its source, else its bytecode; values it closes over are not part of it). Reading a record
back (:meth:`Result.load <accentuate.result.Result.load>`, ``run.json``) imports the module and takes
the function from it, so only a function defined at the top level of an importable module comes
back as a working objective; one defined in a notebook, a script run as ``__main__`` or inside
another function comes back as a :class:`~accentuate.objectives.base.Recorded` (its ``repr``, not
optimizable), with a warning saying so, and recording it warns the same way once.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import marshal
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .base import Acts, Layouts, Objective, Recorded

__all__ = ["Function", "code_hash", "objective"]

#: Modules a record cannot import a function from.
_NOT_IMPORTABLE = ("__main__", "__mp_main__", "builtins")


def code_hash(fn: Callable[..., Any]) -> str:
    """The first 16 hex digits of the SHA-256 of ``fn``'s source (dedented), else of its bytecode
    and constants: what tells an edited function from the one a record names."""
    try:
        data = textwrap.dedent(inspect.getsource(fn)).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            code = getattr(type(fn).__call__, "__code__", None)
        data = marshal.dumps((code.co_code, code.co_consts, code.co_names)) if code is not None else repr(fn).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _positional_count(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` can take (2 or more: it is given the layouts too)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class Function(Objective):
    """An objective computed by a function of yours (see :func:`objective`).

    Args:
        fn: ``fn(acts)`` or ``fn(acts, layouts)`` returning ``(B,)``.
        layers: the layers it reads (``named_modules()`` paths, or :data:`~accentuate.hooks.OUTPUT`).
        name: its label (default: the function's name).
    """

    record_type = "function"

    def __init__(self, fn: Callable[..., torch.Tensor], layers: str | Sequence[str], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"objective() takes a function of the activations; got {type(fn).__name__}")
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError("objective() needs layers=[...]: the names of the layers the function reads "
                             "(`accentuate layers MODEL` lists them)")
        self.fn = fn
        self.layers = frozenset(names)
        self._order = tuple(dict.fromkeys(names))
        self.module = getattr(fn, "__module__", None)
        self.qualname = getattr(fn, "__qualname__", type(fn).__qualname__)
        self.name = str(name) if name is not None else getattr(fn, "__name__", self.qualname)
        self.code = code_hash(fn)
        self._with_layouts = _positional_count(fn) >= 2
        self._warned = False

    @property
    def importable(self) -> bool:
        """Whether a record of it can be read back as this objective: the function lives at the
        top level of an importable module (not a notebook, ``__main__``, or another function)."""
        if not self.module or self.module in _NOT_IMPORTABLE or "<" in self.qualname:
            return False
        try:
            return _lookup(self.module, self.qualname) is not None
        except Exception:  # noqa: BLE001 (a module that fails to import: not importable)
            return False

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        mine = {k: acts[k] for k in self._order}
        value = self.fn(mine, layouts) if self._with_layouts else self.fn(mine)
        rows = next(iter(mine.values())).shape[0]
        if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.shape[0] != rows:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"objective {self.name!r} returned {got}; it must return one value per batch row, a "
                             f"tensor of shape ({rows},): reduce over every dimension but the first")
        return value

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "function", "label": self.name, "value_name": self.name,
                             "function": f"{self.module}.{self.qualname}"}
        if len(self._order) == 1:
            d["layer"] = self._order[0]
        return d

    def identity(self) -> str:
        """The ``repr`` and the hash of the code: an edited function is another target."""
        return f"{self!r}#{self.code}"

    def to_fields(self) -> dict[str, Any]:
        if not self.importable and not self._warned:
            self._warned = True
            warnings.warn(f"objective {self.name!r} ({self.module}.{self.qualname}) is recorded by name, but a record "
                          "cannot bring it back: it is not defined at the top level of an importable module (a "
                          "notebook, __main__ or a nested function). Result.load will give it back as its repr; "
                          "move it into a module to reload it", stacklevel=3)
        return {"module": self.module, "qualname": self.qualname, "name": self.name, "code_sha256": self.code,
                "layers": list(self._order)}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Objective:
        module, qualname = rec.get("module"), str(rec["qualname"])
        layers = [str(x) for x in rec["layers"]]
        found: Any = None
        if module and module not in _NOT_IMPORTABLE and "<" not in qualname:
            try:
                found = _lookup(str(module), qualname)
            except Exception:  # noqa: BLE001 (the module is gone or broken: said below)
                found = None
        if found is None:
            warnings.warn(f"the objective function {module}.{qualname} cannot be imported (it was defined in a "
                          "notebook, __main__ or a nested function, or its module is gone); it is kept as its repr "
                          "and cannot be optimized again", stacklevel=3)
            return Recorded(str(rec.get("repr") or f"Function({qualname})"))
        fn = found.fn if isinstance(found, Function) else found
        obj = cls(fn, layers, name=rec.get("name"))
        if rec.get("code_sha256") and obj.code != rec["code_sha256"]:
            warnings.warn(f"the objective function {module}.{qualname} has changed since the record was written "
                          "(another code hash); the record is read with the function as it is now", stacklevel=3)
        return obj

    def __repr__(self) -> str:
        return f"Function({self.name}, {', '.join(self._order)})"


def _lookup(module: str, qualname: str) -> Any:
    """The object ``module.qualname`` (``None`` when a part is missing)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def objective(fn: Callable[..., torch.Tensor] | None = None, *, layers: str | Sequence[str],
              name: str | None = None) -> Any:
    """A function of the activations as an :class:`Objective`; or, without ``fn``, a decorator.

    ``acc.objective(fn, layers=["blocks.5"])`` and ``@acc.objective(layers=["blocks.5"])`` over
    ``def fn(acts): ...`` give the same :class:`Function`. ``fn(acts)`` (or ``fn(acts, layouts)``)
    returns one value per batch row, shape ``(B,)``; the result runs and composes like the built-in
    kinds (``stripes - 0.5 * acc.logit(1)``). See the module docstring for how it is recorded, and why
    only a function of an importable module comes back from a record.

    Args:
        fn: the function.
        layers: the layers it reads (the union of every objective's layers is what gets hooked).
        name: its label in figures and records (default: the function's name).

    Raises:
        TypeError: ``fn`` is not callable. ValueError: no layers.

    Example:
        >>> obj = objective(lambda acts: acts["conv"].mean(dim=(1, 2, 3)), layers="conv", name="brightness")
        >>> obj, sorted(obj.layers)
        (Function(brightness, conv), ['conv'])
    """
    if fn is None:
        return lambda f: Function(f, layers, name)
    return Function(fn, layers, name)

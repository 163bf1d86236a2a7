"""One settings value: every option of an accentuation, resolved once and validated once.

:class:`Settings` is a frozen dataclass. :meth:`Settings.resolve` builds it from a
model, its :class:`~accentuate.spec.ModelSpec` and the caller's overrides, filling
every default (the spec's calibrated values, else the reference recipe's; the
regularization layer by the spec or the stated rule of
:meth:`accentuate.hooks.ModelRunner.default_reg_layer`). Construction validates it,
with the same one-line errors everywhere (API, command line, analyses).

It round-trips through :meth:`Settings.to_dict` / :meth:`Settings.from_dict` (what
``run.json`` and ``Result.config`` record), and :meth:`Settings.hash` is the stable
key that resume compares.

Example:
    >>> s = Settings(reg_layer="blocks.4", lam=0.2, steps=40)
    >>> s.steps, str(s.regularizer), s.until_rule
    (40, 'blocks.4', None)
    >>> Settings.from_dict(s.to_dict()) == s
    True
    >>> Settings(steps=0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be a positive integer; got 0
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from .digest import canonical_sha256
from .hooks import ModelRunner, autocast_dtype
from .regularize import Regularizer, regularizer
from .spec import REFERENCE_DEFAULTS

if TYPE_CHECKING:
    from torch import nn

    from .spec import ModelSpec

__all__ = ["FIELDS", "PRESETS", "SPEC_DEFAULTS", "SPEC_KEYS", "Settings", "Until"]

#: Keywords of :func:`accentuate.accentuate` that describe the model (they go to its
#: :class:`~accentuate.spec.ModelSpec`, see :func:`accentuate.spec.resolve_spec`), not the run.
SPEC_KEYS = ("input_size", "normalize", "labels", "output", "layouts")

#: The settings a model's spec may give calibrated defaults for (``ModelSpec.defaults``).
SPEC_DEFAULTS = ("lam", "steps", "lr", "param", "canvas", "crops", "crop_range")

#: Named groups of settings. ``preview``: a quick first look (a 256-pixel canvas, 8 crops a step,
#: and, for class targets, stopping as soon as the target is the model's top-1, checked every 2
#: steps: ``until="top1 for classes"``, dropped for a run whose targets are not all classes, see
#: :meth:`Settings.for_targets`); ``accentuate run --preview`` and
#: ``accentuate(..., **PRESETS["preview"])`` use it, with the same rule. Its measured effect on the
#: calibration pairs is in the README and ``benchmarks/CALIBRATION.md``.
PRESETS: dict[str, dict[str, Any]] = {
    "preview": {"canvas": 256, "crops": 8, "until": "top1 for classes", "check_every": 2},
}

#: What ends an ``until`` that applies only when every target is a class (see :class:`Until`).
FOR_CLASSES = " for classes"


@dataclass(frozen=True)
class Until:
    """Least-change stopping: an accentuation stops once its target is seen.

    Exactly one criterion: ``rank`` (e.g. 1 for top-1) or ``prob`` (softmax
    probability of the target class). Checked every ``every`` steps on the
    un-augmented image. ``classes_only``: the rule applies when every target of the run is a
    class and is dropped otherwise (written ``"top1 for classes"``; what the ``preview`` preset
    uses); without it a target that is not a class is an error.

    Example:
        >>> Until.parse("top1"), str(Until.parse("top1 for classes")), str(Until.parse(0.5))
        (Until(rank=1, prob=None, every=5, classes_only=False), 'top1 for classes', 'p>=0.5')
        >>> Until.parse("top0")
        Traceback (most recent call last):
        ...
        ValueError: until must be 'topK' with K >= 1, a rank >= 1 or a probability in (0, 1); got 'top0'
    """

    rank: int | None = None
    prob: float | None = None
    every: int = 5
    classes_only: bool = False

    @staticmethod
    def parse(value: str | int | float | Until | None, every: int = 5) -> Until | None:
        """``"top1"``/``"top5"`` or an int rank, or a float probability in (0, 1); a string may end
        in ``" for classes"`` (see ``classes_only``)."""
        if value is None or isinstance(value, Until):
            return value
        classes_only = False
        if isinstance(value, str):
            v = value.strip().lower()
            if v.endswith(FOR_CLASSES):
                classes_only, v = True, v[:-len(FOR_CLASSES)].strip()
            if v.startswith("top") and v[3:].isdigit():
                v = v[3:]
                if int(v) < 1:
                    raise ValueError(f"until must be 'topK' with K >= 1, a rank >= 1 or a probability in (0, 1); "
                                     f"got {value!r}")
            if v.startswith("p>="):
                v = v[3:]
            try:
                num = float(v)
            except ValueError:
                raise ValueError(
                    f"until must be 'topK', a rank or a probability; got {value!r}"
                ) from None
            value = int(num) if num >= 1 and num.is_integer() else num
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return Until(rank=value, every=every, classes_only=classes_only)
        if isinstance(value, float) and 0 < value < 1:
            return Until(prob=value, every=every, classes_only=classes_only)
        raise ValueError(f"until must be 'topK' with K >= 1, a rank >= 1 or a probability in (0, 1); got {value!r}")

    def reached(self, rank: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        if self.rank is not None:
            return rank <= self.rank
        return prob >= float(self.prob)  # type: ignore[arg-type]

    def __str__(self) -> str:
        rule = f"top{self.rank}" if self.rank is not None else f"p>={self.prob}"
        return rule + (FOR_CLASSES if self.classes_only else "")


def _lam_value(lam: Any) -> float | tuple[Any, ...]:
    """A float, or nested tuples of floats (one per accentuation, broadcastable to (N, M))."""
    if isinstance(lam, bool):
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
    if isinstance(lam, (int, float)):
        return float(lam)
    try:
        t = torch.as_tensor(lam, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"lam must be a number or one number per accentuation; got {lam!r}") from None
    if t.dim() == 0:
        return float(t)

    def nest(x: Any) -> Any:
        return tuple(nest(v) for v in x) if isinstance(x, list) else float(x)

    return nest(t.tolist())  # type: ignore[no-any-return]


def _pair(value: Any, name: str, text: str) -> tuple[float, float]:
    try:
        a, b = value
        return (float(a), float(b))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {text}; got {value!r}") from None


def _positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


@dataclass(frozen=True)
class Settings:
    """Every option of an accentuation (defaults: the reference recipe; see :meth:`resolve`).

    Attributes:
        reg_layer: what the distance to the seed is measured on: a
            :class:`~accentuate.regularize.Regularizer`, or a layer name, ``"pixel"`` or
            ``"none"`` (turned into one); ``None`` until :meth:`resolve` picks the model's.
        lam: regularization weight (before balancing): a number, or one per accentuation
            (nested sequences broadcastable to ``(N, M)``).
        balance: scale ``lam`` by the step-1 gradient ratio (see :mod:`accentuate.regularize`).
        steps, lr: optimization steps and Adam's learning rate.
        param: a registered image parameterization (``"fourier"``, ``"phase"``, ``"pixel"``,
            see :func:`accentuate.params.register_param`).
        optimizer: ``"adam"`` or a callable ``(params, lr=...) -> Optimizer`` (recorded by repr).
        crops, crop_range, noise: paired augmentation per step (see :mod:`accentuate.augment`).
        transforms: jitter, scale and rotation of each crop on top of them, e.g.
            ``("jitter:8", "scale:0.9,1.1", "rotate:10")`` (see :mod:`accentuate.transforms`; default
            none: the crops alone).
        canvas: the long side (the seed's aspect ratio kept) or ``(H, W)``.
        seed: the random seed of the crops, noise, transforms and a noise seed's start (default 0, as
            ``--seed``; ``None``: drawn, then recorded, by :func:`accentuate.accentuate`).
        until: least-change stopping (``"top1"``, ``"top5"``, ``"p>=0.5"``; see :class:`Until`).
        check_every: steps between ``until`` checks.
        opacity: accumulate the opacity masks.
        record_every: evaluate the history every this many steps.
        channels_last, autocast: how the model is fed (see :class:`~accentuate.hooks.ModelRunner`).
        per_pass: accentuations per model pass (``None``: the engine's rule).
    """

    reg_layer: Regularizer | str | None = None
    lam: float | tuple[Any, ...] = REFERENCE_DEFAULTS["lam"]
    balance: bool = True
    steps: int = REFERENCE_DEFAULTS["steps"]
    lr: float = REFERENCE_DEFAULTS["lr"]
    param: str = REFERENCE_DEFAULTS["param"]
    optimizer: str | Callable[..., torch.optim.Optimizer] = "adam"
    crops: int = REFERENCE_DEFAULTS["crops"]
    crop_range: tuple[float, float] = REFERENCE_DEFAULTS["crop_range"]
    noise: tuple[float, float] = (0.02, 0.02)
    transforms: tuple[str, ...] = ()
    canvas: int | tuple[int, int] = REFERENCE_DEFAULTS["canvas"]
    seed: int | None = 0
    until: str | None = None
    check_every: int = 5
    opacity: bool = True
    record_every: int = 1
    channels_last: bool = True
    autocast: str | None = None
    per_pass: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize the values in place, once
        if self.reg_layer is not None:
            set_(self, "reg_layer", regularizer(self.reg_layer))
        set_(self, "lam", _lam_value(self.lam))
        lam_t = torch.as_tensor(self.lam, dtype=torch.float64, device="cpu")
        if not bool(torch.isfinite(lam_t).all()) or bool((lam_t < 0).any()):
            raise ValueError(f"lam must be a finite number >= 0; got {self.lam!r}")
        _positive_int(self.steps, "steps")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise ValueError(f"lr must be a positive number; got {self.lr!r}")
        set_(self, "lr", float(self.lr))
        from .params import PARAMS

        if self.param not in PARAMS:
            raise ValueError(f"unknown parameterization {self.param!r}; choose one of {', '.join(PARAMS)}")
        if not (self.optimizer == "adam" or callable(self.optimizer)):
            raise ValueError(f"optimizer must be 'adam' or a callable (params, lr=...); got {self.optimizer!r}")
        _positive_int(self.crops, "crops")
        lo, hi = _pair(self.crop_range, "crop_range", "(min, max)")
        if not (0 < lo <= hi <= 1):
            raise ValueError(f"crop_range must satisfy 0 < min <= max <= 1; got ({lo:g}, {hi:g})")
        set_(self, "crop_range", (lo, hi))
        noise = _pair(self.noise, "noise", "(gaussian sd, uniform width), two numbers >= 0")
        if not all(math.isfinite(v) and v >= 0 for v in noise):
            raise ValueError(f"noise must be (gaussian sd, uniform width), two numbers >= 0; got {self.noise!r}")
        set_(self, "noise", noise)
        from .transforms import parse_transforms

        set_(self, "transforms", parse_transforms(self.transforms))
        canvas = self.canvas
        if isinstance(canvas, (list, tuple)):
            if len(canvas) != 2 or not all(isinstance(v, int) and v > 0 for v in canvas):
                raise ValueError(f"canvas must be a positive int or (H, W); got {canvas!r}")
            set_(self, "canvas", (int(canvas[0]), int(canvas[1])))
        elif not isinstance(canvas, int) or isinstance(canvas, bool) or canvas < 1:
            raise ValueError(f"canvas must be a positive int or (H, W); got {canvas!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise TypeError(f"seed must be an int, None (draw one) or, in accentuate(), a torch.Generator; "
                            f"got {self.seed!r}")
        _positive_int(self.check_every, "check_every")
        if self.until is not None:
            set_(self, "until", str(Until.parse(self.until, self.check_every)))
        _positive_int(self.record_every, "record_every")
        _positive_int(self.per_pass, "per_pass", allow_none=True)
        dtype = autocast_dtype(self.autocast)
        set_(self, "autocast", None if dtype is None else str(dtype).replace("torch.", ""))
        for name in ("balance", "opacity", "channels_last"):
            set_(self, name, bool(getattr(self, name)))

    # -- derived values -------------------------------------------------------------------------
    @property
    def resolved(self) -> bool:
        """Whether every setting is known (the regularization layer is picked)."""
        return self.reg_layer is not None

    @property
    def regularizer(self) -> Regularizer:
        """The :class:`~accentuate.regularize.Regularizer` (``reg_layer`` as a value).

        Raises:
            ValueError: not resolved yet (see :meth:`resolve`).
        """
        if self.reg_layer is None:
            raise ValueError("these settings name no regularization layer yet; use Settings.resolve(model, base="
                             "settings) or give reg_layer=")
        return self.reg_layer  # type: ignore[return-value]

    @property
    def until_rule(self) -> Until | None:
        """``until`` as an :class:`Until` (``None`` when off)."""
        return Until.parse(self.until, self.check_every)

    def canvas_size(self) -> tuple[int, int]:
        """``canvas`` as ``(H, W)`` (a square of the long side when it is one number)."""
        c = self.canvas
        return (c, c) if isinstance(c, int) else (int(c[0]), int(c[1]))

    def check_model(self, spec: ModelSpec) -> None:
        """Raise ``ValueError`` for settings that do not fit the model (a canvas smaller than its input)."""
        size = spec.input_size
        if isinstance(self.canvas, int):
            if self.canvas < min(size):
                raise ValueError(
                    f"canvas {self.canvas} is smaller than the model input {size[0]} x {size[1]}; "
                    f"use canvas >= {max(size)}"
                )
        elif max(self.canvas) < min(size):
            raise ValueError(f"canvas {tuple(self.canvas)} is smaller than the model input {size}; enlarge it")

    def check_targets(self, objectives: Sequence[Any]) -> None:
        """Raise ``ValueError`` when ``until`` is set and a target is not a class: stopping at
        top-1 (or a probability) can only judge class logits (``class_index`` not ``None``).
        An ``until`` that applies only to classes (``"top1 for classes"``) is never an error."""
        rule = self.until_rule
        if rule is not None and not rule.classes_only and \
                any(getattr(o, "class_index", None) is None for o in objectives):
            raise ValueError(f"until {self.until!r} needs class targets (logits); it cannot judge channels, "
                             "neurons or directions")

    def for_targets(self, objectives: Sequence[Any]) -> Settings:
        """The settings a run of ``objectives`` uses: an ``until`` for classes only (``"top1 for
        classes"``, the ``preview`` preset's) becomes plain ``"top1"`` when every target is a class
        and is dropped otherwise; any other ``until`` is checked (:meth:`check_targets`). With no
        objectives (not known yet) the settings come back unchanged. The library and the command
        line apply this one rule.

        Example:
            >>> from accentuate.objectives import channel, logit
            >>> s = Settings(until="top1 for classes")
            >>> s.for_targets([logit(3)]).until, s.for_targets([logit(3), channel("blocks.5", 2)]).until
            ('top1', None)
        """
        self.check_targets(objectives)
        rule = self.until_rule
        if rule is None or not rule.classes_only or not objectives:
            return self
        if all(getattr(o, "class_index", None) is not None for o in objectives):
            return self.replace(until=str(dataclasses.replace(rule, classes_only=False)))
        return self.replace(until=None)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (validated like a new value)."""
        unknown = [k for k in changes if k not in FIELDS]
        if unknown:
            raise _unknown(unknown[0], FIELDS)
        return dataclasses.replace(self, **changes)

    # -- records --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; :meth:`from_dict` reads them back (a callable optimizer as its repr).
        ``transforms`` is left out when there are none (so the records and hashes of settings
        without transforms are those written before the field existed)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "transforms" and not v:
                continue
            if f.name == "reg_layer":
                v = None if v is None else str(v)
            elif f.name == "optimizer" and not isinstance(v, str):
                v = repr(v)
            elif isinstance(v, tuple):
                v = json.loads(json.dumps(v))  # nested tuples to lists
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Settings:
        """The settings recorded by :meth:`to_dict` (unknown keys are an error)."""
        unknown = [k for k in d if k not in FIELDS]
        if unknown:
            raise _unknown(unknown[0], FIELDS)
        kw = dict(d)
        for k in ("crop_range", "noise", "transforms"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if isinstance(kw.get("canvas"), list):
            kw["canvas"] = tuple(kw["canvas"])
        return cls(**kw)

    def hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_dict` (stable across processes)."""
        return canonical_sha256(self.to_dict())

    # -- resolution -----------------------------------------------------------------------------
    @classmethod
    def resolve(cls, model: nn.Module, spec: ModelSpec | None = None, base: Settings | None = None, *,
                seeded: bool = True, runner: ModelRunner | None = None, **overrides: Any) -> Settings:
        """Every setting for ``model``: ``overrides``, else ``base``'s, else the spec's calibrated
        defaults (:data:`SPEC_DEFAULTS`), else the reference recipe's.

        ``spec``: the model's :class:`~accentuate.spec.ModelSpec`; default the one the model
        carries (the ``runner``'s, else :func:`accentuate.spec.resolve_spec`), so
        ``Settings.resolve(model, steps=40)`` is enough for a loaded model.

        The regularization layer, when neither given nor in ``base``, is the spec's, else the
        rule's (one pass of the model); ``"none"`` without seeds (``seeded=False``). The
        regularization layer is checked to exist and run, and the canvas to fit the model.
        ``runner``: the :class:`~accentuate.hooks.ModelRunner` the caller runs ``model`` with
        (what it has traced is reused), else one is made here.

        Raises:
            ValueError: an invalid value (one line); TypeError: an unknown setting.
            LayerError: a regularization layer not in the model or never run.
        """
        unknown = [k for k in overrides if k not in FIELDS]
        if unknown:
            raise _unknown(unknown[0], FIELDS)
        if spec is None:
            from .spec import resolve_spec

            spec = runner.spec if runner is not None else resolve_spec(model)
        given = {k: v for k, v in overrides.items() if v is not None or k in ("seed", "until", "autocast",
                                                                             "per_pass")}
        if base is not None:
            merged = {**{f: getattr(base, f) for f in FIELDS}, **given}
        else:
            merged = {k: spec.setting(k) for k in SPEC_DEFAULTS}
            merged = {k: v for k, v in merged.items() if v is not None}
            merged.update(given)
        runner = ModelRunner.reuse(runner, model, spec)
        if not seeded:
            merged["reg_layer"] = "none"
        elif merged.get("reg_layer") is None:
            merged["reg_layer"] = runner.default_reg_layer() or "pixel"
        settings = cls(**merged)
        settings.check_model(spec)
        reg = settings.regularizer
        if reg.kind == "layer":
            runner.layouts([str(reg.name)])  # exists and runs (LayerError otherwise)
        return settings


#: The names of the settings (the fields of :class:`Settings`).
FIELDS = tuple(f.name for f in fields(Settings))


def _unknown(key: str, known: Sequence[str]) -> TypeError:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return TypeError(f"unknown setting {key!r}{hint}; the settings are: {', '.join(known)}")

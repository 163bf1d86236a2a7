"""Model specs: what accentuate needs to know about a model besides its weights.

A :class:`ModelSpec` holds the input size, the normalization the model was trained
with, class labels, how to find the logits in the forward's return value, and
suggested defaults (regularization layer, lambda, ...). Models built by
:func:`accentuate.load_model` carry one as ``model.accentuate_spec``; for any other
module, :func:`resolve_spec` builds one from keyword arguments, then from what the
model declares about itself (:func:`declared`: a Hugging Face ``config``, a timm
``pretrained_cfg``), and fills what is still missing with stated defaults and a
warning; the spec lists those fields in ``assumed``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .errors import ModelError, SpecError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelSpec",
    "REFERENCE_DEFAULTS",
    "declared",
    "declared_labels",
    "extract_logits",
    "forward_error",
    "resolve_spec",
    "spec_of",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The reference recipe's settings (faccent's defaults), used for models without their own.
#: The one place these numbers live: :class:`accentuate.Settings` takes its field defaults
#: from here, and a spec's calibrated ``defaults`` override them per model.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "lam": 1.0,
    "steps": 100,
    "lr": 0.05,
    "param": "fourier",
    "canvas": 512,
    "crops": 16,
    "crop_range": (0.05, 0.99),
}

Normalize = tuple[Sequence[float], Sequence[float]] | Callable[[torch.Tensor], torch.Tensor] | None

class _Unset:
    """The default of a :func:`resolve_spec` keyword that was not given (``None`` is a value there:
    ``normalize=None`` means the model takes [0, 1] input). Shown as ``UNSET`` by ``help()``."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "_UNSET"


#: "Not given" (see :class:`_Unset`).
_UNSET: Any = _Unset()


@dataclass(frozen=True)
class ModelSpec:
    """What accentuate knows about a model.

    Attributes:
        name: a short name for records and figures.
        input_size: ``(h, w)`` of the model's input.
        normalize: ``(mean, std)`` applied to [0, 1] RGB, a callable, or ``None`` (feed [0, 1]).
        labels: class names in output order, or ``None``.
        output: how to find the logits in the forward's return: ``None`` (a tensor, or the
            first tensor of a tuple, ``"logits"`` of a dict or ``ModelOutput``), a dict key,
            a tuple index, or a callable.
        reg_layer: suggested regularization layer for class targets.
        defaults: calibrated settings (``lam``, ``steps``, ``lr``, ``param``, ``canvas``, ``crops``,
            ``crop_range``: :data:`accentuate.settings.SPEC_DEFAULTS`).
        pathway_layers: layers in depth order for pathway analyses.
        layouts: per-layer layout overrides, ``{name: Layout or "nchw" | "nhwc" |
            "tokens:PREFIX:HxW"}``, for layers whose shape does not say it (see
            :mod:`accentuate.layout`); other layers' layouts are inferred.
        patch_size: the patch side of a vision transformer (fixes its token grid).
        assumed: the fields filled with a stated default because neither the caller nor
            the model said (``"input_size"``, ``"normalize"``); a forward pass that fails
            on an assumed input size says to pass ``input_size=`` (:func:`forward_error`).
    """

    name: str = "custom"
    input_size: tuple[int, int] = (224, 224)
    normalize: Normalize = (IMAGENET_MEAN, IMAGENET_STD)
    labels: tuple[str, ...] | None = None
    output: str | int | Callable[[Any], torch.Tensor] | None = None
    reg_layer: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    pathway_layers: tuple[str, ...] = ()
    layouts: Mapping[str, Any] = field(default_factory=dict)
    patch_size: int | None = None
    assumed: tuple[str, ...] = ()

    def setting(self, key: str) -> Any:
        """A default setting: the spec's calibrated one, else the reference recipe's."""
        return self.defaults.get(key, REFERENCE_DEFAULTS.get(key))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a batch in [0, 1] the way the model expects."""
        if self.normalize is None:
            return x
        if callable(self.normalize):
            return self.normalize(x)
        mean, std = self.normalize
        m, s = _norm_constants(mean, std, x.device, x.dtype)
        return (x - m) / s

    def logits(self, out: Any) -> torch.Tensor:
        """Find the logits in a forward's return value (see ``output``)."""
        return extract_logits(out, self.output)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Preprocess ``x`` in [0, 1], run the model, return its logits."""
        return self.logits(model(self.preprocess(x)))


#: ``(mean, std)`` as ``(1, C, 1, 1)`` tensors, per device and dtype (see :func:`_norm_constants`).
_NORM_CACHE: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def _norm_constants(mean: Any, std: Any, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as ``(1, C, 1, 1)`` tensors on ``device``, made once per device and dtype:
    a copy from host memory at every model pass would make the host wait for the device each time.
    Values that are not plain numbers (tensors) are converted at each call, as before."""
    key: tuple[Any, ...] | None = None
    if not isinstance(mean, torch.Tensor) and not isinstance(std, torch.Tensor):
        try:
            key = (tuple(float(v) for v in mean), tuple(float(v) for v in std), device, dtype)
        except (TypeError, ValueError):
            key = None
    if key is not None and key in _NORM_CACHE:
        return _NORM_CACHE[key]
    out = (torch.as_tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1),
           torch.as_tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1))
    if key is not None and len(_NORM_CACHE) < 64:
        _NORM_CACHE[key] = out
    return out


def extract_logits(out: Any, output: str | int | Callable[[Any], torch.Tensor] | None) -> torch.Tensor:
    """The logits tensor inside a model's return value."""
    if callable(output):
        return output(out)
    if output is not None:
        try:
            value = out[output] if not hasattr(out, str(output)) else getattr(out, str(output))
        except (KeyError, IndexError, TypeError):
            raise ModelError(
                f"the model's output has no entry {output!r}; set output= to a key, index or callable"
            ) from None
        return extract_logits(value, None)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)  # Hugging Face ModelOutput
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        keys = ", ".join(map(repr, out))
        raise ModelError(f"the model returned a dict with keys {keys}; pass output=KEY to pick the logits")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(
        f"cannot find logits in the model's output of type {type(out).__name__}; pass output="
    )


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


#: Hugging Face's placeholder class names (``LABEL_0``, ``LABEL_1``, ...): not real labels.
_GENERIC_LABEL = re.compile(r"LABEL_\d+")


def field_of(obj: Any, key: str) -> Any:
    """``obj[key]`` of a mapping, or ``obj.key`` (configs and processors keep values in either form);
    ``None`` when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _declared_size(value: Any) -> tuple[int, int] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value, value) if value > 0 else None
    if isinstance(value, (tuple, list)) and len(value) in (2, 3) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        return (int(value[-2]), int(value[-1]))
    return None


def _declared_triple(value: Any) -> tuple[float, float, float] | None:
    if isinstance(value, (tuple, list)) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return (float(value[0]), float(value[1]), float(value[2]))
    return None


def declared_labels(id2label: Any) -> tuple[str, ...] | None:
    """Class names in index order from a Hugging Face ``config.id2label`` (``{index: name}``).

    The one rule for reading it (for :func:`declared` and for ``hf:`` models): ``None`` when
    there is nothing usable, i.e. no mapping, transformers' placeholders ``LABEL_0``,
    ``LABEL_1``, ..., or indices that are not exactly ``0 .. n-1``. Gaps or stray keys mean the
    names cannot be put in output order, so class names are not used (with a warning saying
    why); the model itself still works, and class indices can be given. Refusing the model
    for a label table it does not need would be worse than losing the names.

    Example:
        >>> declared_labels({0: "cat", 1: "dog"}), declared_labels({0: "LABEL_0", 1: "LABEL_1"})
        (('cat', 'dog'), None)
    """
    if not isinstance(id2label, Mapping) or not id2label:
        return None
    try:
        by_index = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        warnings.warn(f"config.id2label has keys that are not class indices ({list(id2label)[:5]}); class names "
                      "are not used (give classes by index)", stacklevel=3)
        return None
    if sorted(by_index) != list(range(len(by_index))):
        warnings.warn(f"config.id2label has indices {sorted(by_index)[:5]}...; expected 0 .. {len(by_index) - 1}: "
                      "class names are not used (give classes by index, or fix the config's id2label)", stacklevel=3)
        return None
    labels = tuple(by_index[i] for i in range(len(by_index)))
    if all(_GENERIC_LABEL.fullmatch(name) for name in labels):
        return None
    return labels


def declared(model: nn.Module) -> dict[str, Any]:
    """What ``model`` declares about its input and classes.

    Read, when present:

    - a Hugging Face ``model.config``: ``image_size`` (an int, or ``[h, w]``),
      ``id2label`` (class names in index order; not the placeholders ``LABEL_0``,
      ``LABEL_1``, ...), ``num_channels``;
    - a timm ``model.pretrained_cfg`` (or ``default_cfg``): ``input_size``
      ``(C, H, W)``, ``mean`` and ``std``, ``label_names``.

    The Hugging Face config comes first; timm's fills what it leaves open. A processor's
    mean and std are not part of the model and are not read.

    Returns:
        Any of ``input_size`` ``(h, w)``, ``normalize`` ``(mean, std)``, ``labels``
        (a tuple of names) and ``num_channels``; keys that nothing declares are absent.

    Example:
        >>> net = nn.Conv2d(3, 4, 3)
        >>> net.pretrained_cfg = {"input_size": (3, 96, 128), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
        >>> declared(net)["input_size"], declared(net)["normalize"][1]
        ((96, 128), (0.25, 0.25, 0.25))
    """
    out: dict[str, Any] = {}
    cfg = getattr(model, "config", None)
    if cfg is not None:
        size = _declared_size(field_of(cfg, "image_size"))
        if size is not None:
            out["input_size"] = size
        labels = declared_labels(field_of(cfg, "id2label"))
        if labels is not None:
            out["labels"] = labels
        channels = field_of(cfg, "num_channels")
        if isinstance(channels, int) and not isinstance(channels, bool) and channels > 0:
            out["num_channels"] = channels
    tcfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(tcfg, Mapping):
        size = _declared_size(tcfg.get("input_size"))
        if size is not None:
            out.setdefault("input_size", size)
            shape = tcfg.get("input_size")
            if isinstance(shape, (tuple, list)) and len(shape) == 3:
                out.setdefault("num_channels", int(shape[0]))
        mean, std = _declared_triple(tcfg.get("mean")), _declared_triple(tcfg.get("std"))
        if mean is not None and std is not None and all(v > 0 for v in std):
            out.setdefault("normalize", (mean, std))
        names = tcfg.get("label_names")
        if isinstance(names, (tuple, list)) and names and all(isinstance(n, str) for n in names):
            out.setdefault("labels", tuple(names))
    return out


def spec_of(model: nn.Module) -> ModelSpec:
    """The spec of ``model`` as it stands, without warnings: its own
    (``model.accentuate_spec``), else one built from what it :func:`declared`, with
    stated defaults (224 x 224, ImageNet mean/std) for the rest, listed in ``assumed``.

    Example:
        >>> spec_of(nn.Conv2d(3, 4, 3)).assumed
        ('input_size', 'normalize')
    """
    own: ModelSpec | None = getattr(model, "accentuate_spec", None)
    if own is not None:
        return own
    found = declared(model)
    fields = {k: found[k] for k in ("input_size", "normalize", "labels") if k in found}
    assumed = tuple(k for k in ("input_size", "normalize") if k not in found)
    return ModelSpec(name=type(model).__name__, assumed=assumed, **fields)


def forward_error(error: BaseException, spec: ModelSpec | None = None) -> ModelError:
    """The one-line :class:`ModelError` for ``error``, raised inside the model's forward pass.

    When the spec's input size was assumed (neither given nor declared by the model), the
    likeliest cause, the message says so and to pass ``input_size=``. Raise the result
    ``from error``, so ``--debug`` and ``__cause__`` keep the model's own traceback.

    Example:
        >>> forward_error(RuntimeError("shape mismatch"), spec_of(nn.Identity()))  # doctest: +ELLIPSIS
        ModelError('the model raised RuntimeError in its forward pass: shape mismatch (the input size 224 x 224 was assumed...
    """
    text = str(error).strip().splitlines()
    msg = f"the model raised {type(error).__name__} in its forward pass: {text[0] if text else ''}".rstrip(": ")
    if spec is not None and "input_size" in spec.assumed:
        h, w = spec.input_size
        msg += (f" (the input size {h} x {w} was assumed, the model declares none; "
                "pass input_size= with the size the model takes, or set model.accentuate_spec)")
    return ModelError(msg)


def resolve_spec(
    model: nn.Module,
    input_size: int | Sequence[int] | None = None,
    normalize: Normalize = _UNSET,
    labels: Sequence[str] | None = _UNSET,
    output: str | int | Callable[[Any], torch.Tensor] | None = None,
    name: str | None = None,
    layouts: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """The spec of ``model``: its own (``model.accentuate_spec``) with overrides applied.

    A keyword left ``UNSET`` (or ``None`` for ``input_size``, ``output``, ``name``, ``layouts``)
    keeps the model's own value. For a model without a spec, what the keyword arguments leave
    open is read from what the model declares (:func:`declared`: a Hugging Face ``config``'s ``image_size`` and
    ``id2label``, a timm ``pretrained_cfg``'s ``input_size``, ``mean`` and ``std``). A
    size still missing defaults to 224 x 224 and a normalization to ImageNet mean/std,
    each with a warning saying so (pass ``normalize=None`` for a model that takes [0, 1]
    input); the spec lists them in ``assumed``. ``labels`` may be omitted: class names
    then cannot be used, class indices can.

    Raises:
        SpecError: the model declares a number of input channels other than 3 and
            ``normalize`` is not a callable that could map RGB to it.
    ``layouts`` adds per-layer layout overrides (see :class:`ModelSpec`).
    """
    base: ModelSpec | None = getattr(model, "accentuate_spec", None)
    if base is None:
        base = spec_of(model)
        channels = declared(model).get("num_channels", 3)
        if channels != 3 and not callable(normalize):
            raise SpecError(
                f"the model declares {channels} input channels but accentuate feeds RGB (3 channels); "
                f"pass normalize= a callable mapping (N, 3, H, W) in [0, 1] to its (N, {channels}, H, W) input"
            )
        if input_size is None and "input_size" in base.assumed:
            warnings.warn(
                "no input_size given for this model; assuming 224 x 224 (pass input_size=)",
                stacklevel=3,
            )
        if normalize is _UNSET and "normalize" in base.assumed:
            warnings.warn(
                "no normalize given for this model; assuming ImageNet mean/std "
                "(pass normalize=(mean, std), a callable, or None for [0, 1] input)",
                stacklevel=3,
            )
    changes: dict[str, Any] = {}
    if input_size is not None:
        changes["input_size"] = _as_size(input_size)
    if normalize is not _UNSET:
        changes["normalize"] = normalize
    if labels is not _UNSET:
        changes["labels"] = tuple(labels) if labels is not None else None
    if output is not None:
        changes["output"] = output
    if name is not None and name != base.name:
        changes["name"] = name
    if layouts:
        changes["layouts"] = {**base.layouts, **layouts}
    given = {k for k in ("input_size", "normalize") if k in changes}
    if given & set(base.assumed):
        changes["assumed"] = tuple(k for k in base.assumed if k not in given)
    return replace(base, **changes) if changes else base


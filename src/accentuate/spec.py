"""Model specs: what accentuate needs to know about a model besides its weights.

A :class:`ModelSpec` holds the input size, the normalization the model was trained
with, class labels, how to find the logits in the forward's return value, and
suggested defaults (regularization layer, lambda, ...). Models built by
:func:`accentuate.load_model` carry one as ``model.accentuate_spec``; for any other
module, :func:`resolve_spec` builds one from keyword arguments and fills what is
missing with stated defaults and a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from .errors import ModelError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelSpec",
    "REFERENCE_DEFAULTS",
    "default_reg_layer",
    "extract_logits",
    "resolve_spec",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The reference recipe's settings (faccent's defaults), used for models without their own.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "lam": 1.0,
    "steps": 100,
    "lr": 0.05,
    "param": "fourier",
    "canvas": 512,
}

Normalize = tuple[Sequence[float], Sequence[float]] | Callable[[torch.Tensor], torch.Tensor] | None

_UNSET: Any = object()


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
        defaults: calibrated settings (``lam``, ``steps``, ``lr``, ``param``, ``canvas``).
        pathway_layers: layers in depth order for pathway analyses.
        layouts: per-layer layout overrides, ``{name: Layout or "nchw" | "nhwc" |
            "tokens:PREFIX:HxW"}``, for layers whose shape does not say it (see
            :mod:`accentuate.layout`); other layers' layouts are inferred.
        patch_size: the patch side of a vision transformer (fixes its token grid).
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
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s

    def logits(self, out: Any) -> torch.Tensor:
        """Find the logits in a forward's return value (see ``output``)."""
        return extract_logits(out, self.output)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Preprocess ``x`` in [0, 1], run the model, return its logits."""
        return self.logits(model(self.preprocess(x)))


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

    For a model without a spec, a missing ``input_size`` defaults to 224 x 224 and a
    missing ``normalize`` to ImageNet mean/std, each with a warning saying so
    (pass ``normalize=None`` for a model that takes [0, 1] input). ``labels`` may be
    omitted: class names then cannot be used, class indices can. ``layouts`` adds
    per-layer layout overrides (see :class:`ModelSpec`).
    """
    base: ModelSpec | None = getattr(model, "accentuate_spec", None)
    if base is None:
        base = ModelSpec(name=name or type(model).__name__)
        if input_size is None:
            warnings.warn(
                "no input_size given for this model; assuming 224 x 224 (pass input_size=)",
                stacklevel=3,
            )
        if normalize is _UNSET:
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
    if name is not None:
        changes["name"] = name
    if layouts:
        changes["layouts"] = {**base.layouts, **layouts}
    return replace(base, **changes) if changes else base


def default_reg_layer(model: nn.Module, spec: ModelSpec) -> str | None:
    """The regularization layer used when neither the call nor the spec names one.

    Rule: run the model once on a zero input and walk the modules in the order their
    outputs complete. Among modules with spatial output (a layout with more than one
    position: conv maps, channels-last stages, token grids), take the outermost one
    that completes once a third of the model's weighted layers (modules with their own
    parameters) have run. Returns ``None`` if the model has no spatial layer. (See
    :meth:`accentuate.hooks.ModelRunner.default_reg_layer`.)
    """
    from .hooks import ModelRunner

    return ModelRunner(model, spec).default_reg_layer()

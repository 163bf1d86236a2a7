"""How an analysis resolves, once, the model's spec and the settings every one of its runs uses.

An analysis takes the keywords of :func:`accentuate.accentuate`: :func:`analysis_spec` reads the
model-spec keys among them (``input_size``, ``normalize``, ...), :func:`analysis_settings` the
settings (``lam``, ``steps``, ...); what stays are :data:`RUN_KEYS` (``generator``, ``progress``,
``runner``, ...), passed on to each engine call.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..hooks import ModelRunner
from ..settings import SPEC_KEYS, Settings
from ..spec import ModelSpec, resolve_spec

__all__ = ["RUN_KEYS", "analysis_settings", "analysis_spec"]


def analysis_spec(model: nn.Module, kwargs: dict[str, Any]) -> ModelSpec:
    """The model's spec with the spec overrides found among an analysis's accentuate kwargs (the
    spec of the ``runner`` among them when there are none)."""
    over = {k: kwargs[k] for k in SPEC_KEYS if k in kwargs}
    runner = kwargs.get("runner")
    if runner is not None and not over:
        return ModelRunner.reuse(runner, model, runner.spec).spec
    return resolve_spec(model, **over)


#: Keywords of :func:`accentuate.accentuate` that are not settings (``runner``: the caller's
#: :class:`~accentuate.hooks.ModelRunner`, reused by every pass of the analysis).
RUN_KEYS = ("generator", "snapshots", "progress", "runner")


def analysis_settings(model: nn.Module, spec: ModelSpec, settings: Settings | None,
                      kwargs: dict[str, Any], seeded: bool = True) -> Settings:
    """The settings of an analysis, resolved once: ``settings`` (or the model's defaults) with the
    settings found among ``kwargs`` applied (they are taken out of ``kwargs``; what stays are the
    model-spec keys and :data:`RUN_KEYS`, for :func:`accentuate.accentuate`). Every
    accentuation of the analysis then runs from this one value.

    Raises:
        TypeError: an unknown keyword (with the closest setting names).
    """
    own = {k: kwargs.pop(k) for k in list(kwargs) if k not in RUN_KEYS and k not in SPEC_KEYS}
    return Settings.resolve(model, spec, settings, seeded=seeded, runner=kwargs.get("runner"), **own)

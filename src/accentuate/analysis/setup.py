"""How an analysis resolves, once, the model's spec and the settings every one of its runs uses.

An analysis takes the keywords of :func:`accentuate.accentuate`: :func:`analysis_spec` reads the
model-spec keys among them (``input_size``, ``normalize``, ...), :func:`analysis_settings` the
settings (``lam``, ``steps``, ...); what stays are :data:`RUN_KEYS` (``snapshots``, ``progress``,
``runner``), passed on to each engine call. :func:`run_seed` reads an analysis's ``seed`` (and its
old name ``generator=``, deprecated).
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..hooks import ModelRunner
from ..settings import SPEC_KEYS, Settings
from ..spec import ModelSpec, resolve_spec

__all__ = ["RUN_KEYS", "analysis_settings", "analysis_spec", "run_seed"]


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
RUN_KEYS = ("snapshots", "progress", "runner")


def run_seed(seed: int | None, kwargs: dict[str, Any], where: str) -> int:
    """The int seed an analysis runs from: ``seed``, or ``generator`` among its keywords (its old
    name, taken out of ``kwargs`` with a ``DeprecationWarning`` at the analysis's caller);
    ``None`` draws one. The analysis records it and derives the seed of each of its runs from it.

    Raises:
        TypeError: both given, or not an int.
    """
    if "generator" in kwargs:
        old = kwargs.pop("generator")
        if "seed" in kwargs:
            raise TypeError(f"{where}() got both seed= and generator=; give seed= only (generator= is its old name)")
        warnings.warn(f"{where}(generator=...) is deprecated; it is seed=..., as in accentuate() and the "
                      "command line's --seed", DeprecationWarning, stacklevel=3)
        seed = old
    if seed is None:
        import torch

        return int(torch.randint(0, 2**31 - 1, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{where}() needs an int seed (each of its runs uses a seed derived from it); "
                        f"got {type(seed).__name__}")
    return seed


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

"""What a model computes on a set of images: named layers' outputs, their layouts, and the model's units.

The analyses read activations here (without autograd, a chunk of images at a time, through the
one :class:`~accentuate.hooks.ModelRunner`) and list a model's computational units in forward order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..hooks import ModelRunner
from ..layout import Layout
from ..spec import ModelSpec, resolve_spec

__all__ = ["layer_activations", "layouts_of", "units"]


def layer_activations(
    model: nn.Module,
    images: torch.Tensor,
    layer_names: Sequence[str],
    spec: ModelSpec | None = None,
    batch: int = 16,
    runner: ModelRunner | None = None,
) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for ``images``, ``batch`` at a time, without autograd.

    Args:
        model: any model (left as found).
        images: ``(N, 3, h, w)`` in [0, 1] at the model's input size.
        layer_names: dotted layer names; :data:`accentuate.hooks.OUTPUT` is the logits.
        spec: the model's spec (default: :func:`accentuate.spec.resolve_spec`).

    Returns:
        ``{layer: (N, ...)}`` on the CPU, float32 (see :meth:`ModelRunner.activations`).
    """
    spec = spec or (runner.spec if runner is not None else resolve_spec(model))
    return ModelRunner.reuse(runner, model, spec).activations(images, list(layer_names), batch=batch)


def layouts_of(model: nn.Module, spec: ModelSpec, layer_names: Sequence[str],
               runner: ModelRunner | None = None) -> dict[str, Layout]:
    """The layout of each named layer (:data:`accentuate.hooks.OUTPUT` included)."""
    return ModelRunner.reuse(runner, model, spec).layouts(layer_names)


def units(model: nn.Module, spec: ModelSpec, runner: ModelRunner | None = None) -> list[str]:
    """The model's computational units in forward order (for pathways and randomization).

    Rule: the top-level children that hold parameters; a child that is a plain
    ``nn.Sequential`` or ``nn.ModuleList`` (not a subclass, which is a layer of its
    own, like a conv-BN-activation unit) of several parametrized modules is replaced
    by those modules (so ``blocks`` becomes ``blocks.0``, ``blocks.1``, ...).
    Units are ordered by when they first run on an input of the model's size;
    units that never run are dropped.
    """
    names: list[str] = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if type(child) in (nn.Sequential, nn.ModuleList):
            inner = [f"{name}.{n}" for n, c in child.named_children() if any(True for _ in c.parameters())]
            if len(inner) > 1:
                names += inner
                continue
        names.append(name)
    order = {row.name: i for i, row in enumerate(ModelRunner.reuse(runner, model, spec).trace())}
    ran = [n for n in names if n in order]
    # A module's hook fires when it completes; sort by the completion of its first run.
    return sorted(ran, key=lambda n: order[n])

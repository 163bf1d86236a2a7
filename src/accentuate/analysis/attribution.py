"""Per-channel attribution: what each channel of a layer gives the target, for one image.

The circuit of an image (the authors' ``circuit_explorer`` tools of the paper's time score
units this way, ``actgrad_filter_score``) is, per layer and channel, the spatial mean of
activation times the gradient of the target with respect to that activation:

- ``signed``: ``mean over positions of a * dT/da``, the first-order share of the target
  ``T`` that passes through the channel (positive: the channel pushes the target up);
- ``absolute``: ``mean over positions of |a| * |dT/da|``, how much the channel matters to
  the target either way (the ``circuit_explorer`` default).

Positions are a layout's spatial positions (:meth:`accentuate.layout.Layout.positions`): for
a token layer (a vision transformer's blocks) the patch tokens; the leading tokens (the
class token, register tokens) are left out, as :meth:`~accentuate.layout.Layout.pool`
leaves them out of the activation measure, so that both measures describe the same
positions. A vector layer (logits, pooled features) has one position.

The gradient is taken for each image on its own (``T`` summed over a batch: in eval mode
the images of a batch do not interact), with respect to the layer's own output
(:func:`accentuate.hooks.capture` with ``attach=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..hooks import ModelRunner
from ..objectives import Objective
from ..spec import ModelSpec, resolve_spec

__all__ = ["FORMS", "channel_attributions"]

#: The two forms of a channel's attribution.
FORMS = ("absolute", "signed")


def channel_attributions(
    model: nn.Module,
    images: torch.Tensor,
    objective: Objective,
    layers: Sequence[str],
    spec: ModelSpec | None = None,
    batch: int = 16,
    runner: ModelRunner | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Each image's per-channel attribution to ``objective`` at each layer.

    Args:
        model: any model (left as found: mode, ``requires_grad``).
        images: ``(N, 3, h, w)`` in [0, 1] at the model's input size.
        objective: the target ``T`` (resolved: a class index, not a name).
        layers: dotted layer names (:data:`accentuate.hooks.OUTPUT` is the logits).
        spec: the model's spec (default: :func:`accentuate.spec.resolve_spec`).
        batch: images per forward and backward pass.
        runner: a :class:`~accentuate.hooks.ModelRunner` of ``model`` to reuse.

    Returns:
        ``{layer: {"signed": (N, C), "absolute": (N, C)}}`` on the CPU, float32. A layer the
        target does not depend on (downstream of it, or on another branch) gets zeros.

    Example:
        >>> from accentuate.spec import ModelSpec
        >>> from accentuate.objectives import logit
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.Flatten(), nn.Linear(2 * 4 * 4, 1))
        >>> _ = torch.manual_seed(0)
        >>> attr = channel_attributions(net, torch.rand(3, 3, 4, 4), logit(0), ["0"],
        ...                             ModelSpec(input_size=(4, 4), normalize=None))
        >>> tuple(attr["0"]["signed"].shape)
        (3, 2)
        >>> bool((attr["0"]["absolute"] >= attr["0"]["signed"].abs() - 1e-6).all())
        True
    """
    spec = spec or resolve_spec(model)
    run = ModelRunner.reuse(runner, model, spec)
    names = list(dict.fromkeys(layers))
    wanted = list(dict.fromkeys([*names, *objective.layers]))
    layouts = run.layouts(wanted)
    out: dict[str, dict[str, list[torch.Tensor]]] = {n: {"signed": [], "absolute": []} for n in names}
    with run.state(), torch.enable_grad():
        for start in range(0, images.shape[0], batch):
            # The input carries the graph (the parameters are frozen); only the layers' gradients are taken.
            x = images[start : start + batch].to(run.device, torch.float32).clone().requires_grad_(True)
            acts = run(x, wanted, attach=True)
            value = objective(acts, layouts)
            grads = torch.autograd.grad(value.sum(), [acts[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                a = acts[n].detach()
                g = torch.zeros_like(a) if g is None else g.detach()
                lay = layouts[n]
                out[n]["signed"].append(lay.positions(a * g).mean(dim=1).float().cpu())
                out[n]["absolute"].append(lay.positions(a.abs() * g.abs()).mean(dim=1).float().cpu())
    return {n: {f: torch.cat(v) for f, v in d.items()} for n, d in out.items()}

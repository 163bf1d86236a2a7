"""Reference images: make an image look more like another one to the model.

:class:`Like` holds the reference's pooled feature at a layer; :func:`like` measures it by one
forward pass of the model; :func:`default_like_layer` is the layer read when none is named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..hooks import OUTPUT, ModelRunner
from ..layout import Layout
from .base import Acts, Layouts, Objective, constant_like, tensor_digest, tensor_from_record, tensor_record
from .checks import check_token, short_layer

if TYPE_CHECKING:
    from torch import nn

    from ..spec import ModelSpec

__all__ = ["Like", "default_like_layer", "like"]


def _pooled(lay: Layout, t: torch.Tensor, pool: str) -> torch.Tensor:
    """A layer's feature vector ``(B, C)``: the class token (``"cls"``, leading token 0), or the
    mean of the patch positions (``"mean"``); a vector layer is its own feature."""
    if lay.kind == "vector":
        return t
    return lay.token(t, 0) if pool == "cls" else lay.pool(t)


class Like(Objective):
    """Look more like a reference image to the model: the accentuation's pooled feature at
    ``layer`` against the reference image's (see :func:`like`, which measures it).

    ``measure="cosine"``: cosine similarity of the two features (in [-1, 1]).
    ``measure="dot"``: dot product with the reference's unit direction.
    ``pool``: ``"cls"`` (the class token) or ``"mean"`` (the mean over patch positions).

    ``name`` (the reference's file name) is its label only: :meth:`identity` is the layer, pool,
    measure and a hash of the reference feature, so two photos named alike are two targets and a
    replaced photo is a new one. The record holds the feature itself (``reference``, see
    :func:`~accentuate.objectives.base.tensor_record`).
    """

    record_type = "like"

    def __init__(self, layer: str, reference: torch.Tensor, pool: str = "cls", measure: str = "cosine",
                 name: str = "reference") -> None:
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean'; got {pool!r}")
        if measure not in ("cosine", "dot"):
            raise ValueError(f"measure must be 'cosine' or 'dot'; got {measure!r}")
        v = torch.as_tensor(reference, dtype=torch.float32).detach().flatten()
        if not torch.isfinite(v).all() or float(v.norm()) == 0:
            raise ValueError("the reference feature must be finite and non-zero")
        self.layer, self.pool, self.measure, self.name = layer, pool, measure, str(name)
        self.reference = v
        self.layers = frozenset({layer})

    def validate(self, layouts: Layouts) -> None:
        lay = layouts[self.layer]
        if self.pool == "cls" and lay.kind != "vector":
            check_token(self.layer, 0, lay)
        if self.reference.numel() != lay.channels:
            raise ValueError(
                f"the reference feature has {self.reference.numel()} entries but layer {self.layer!r} has "
                f"{lay.channels} channels; measure the reference at the same layer"
            )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        f = _pooled(layouts[self.layer], acts[self.layer], self.pool)
        ref = constant_like(self.reference, f)
        if self.measure == "cosine":
            return torch.nn.functional.cosine_similarity(f, ref[None], dim=1, eps=1e-8)
        return f @ (ref / ref.norm())

    def describe(self) -> dict[str, Any]:
        return {"kind": "like", "layer": self.layer, "reference": self.name, "pool": self.pool,
                "measure": self.measure, "label": f"like {self.name} at {self.layer} ({self.pool}, {self.measure})",
                "slug_text": f"like-{self.name.rsplit('.', 1)[0]}-{short_layer(self.layer)}",
                "value_name": f"{self.measure} to reference"}

    def to_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "pool": self.pool, "measure": self.measure, "name": self.name,
                "reference": tensor_record(self.reference)}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Like:
        return cls(rec["layer"], tensor_from_record(rec["reference"]), rec.get("pool", "cls"),
                   rec.get("measure", "cosine"), rec.get("name", "reference"))

    def identity(self) -> str:
        """What this objective measures: layer, pool, measure and the reference feature's hash (not
        the reference's name)."""
        return f"Like({self.layer}, {self.pool}, {self.measure})#{tensor_digest(self.reference)}"

    def __repr__(self) -> str:
        return f"Like({self.name!r}, {self.layer}, {self.pool}, {self.measure})"


def default_like_layer(model: nn.Module, spec: ModelSpec | None = None, *,
                       runner: ModelRunner | None = None) -> str:
    """The layer :func:`like` reads when none is named: the last layer (in the order outputs
    complete) with more than one position, i.e. the last token or feature-map layer (for
    transformers' ViT and DINOv2 the final ``layernorm``).

    Raises:
        ValueError: the model has no such layer (name one, or :data:`~accentuate.hooks.OUTPUT`).
    """
    from ..spec import resolve_spec

    if spec is None:
        spec = runner.spec if runner is not None else resolve_spec(model)
    runner = ModelRunner.reuse(runner, model, spec)
    spatial = [r.name for r in runner.trace() if r.layout is not None and r.layout.spatial]
    if not spatial:
        raise ValueError("the model has no token or feature-map layer; name the layer for like() "
                         "(or '@output', the model's output)")
    return spatial[-1]


def like(image: Any, model: nn.Module, layer: str | None = None, pool: str | None = None, measure: str = "cosine",
         *, name: str | None = None, runner: ModelRunner | None = None, **spec_overrides: Any) -> Like:
    """Make an image look more like ``image`` to ``model`` at ``layer`` (see :class:`Like`).

    Like every objective builder it takes what it measures first, then the model
    (``parse_target(text, model)``, ``clip_text(prompt, model)``, ``head(layer, h, model=model)``).
    The order of before, ``like(layer, image, model)``, still works, with a ``DeprecationWarning``.

    The reference image is fitted to the model's input size the way an accentuation's whole
    view is (resized, aspect ratio not kept), preprocessed as the model's spec says, and run
    once without autograd; its feature at ``layer`` is the class token (``pool="cls"``) or the
    mean of the patch positions (``pool="mean"``).

    Args:
        image: a path, PIL image or ``(3, H, W)`` tensor in [0, 1].
        model: the model that will be accentuated.
        layer: a layer name, :data:`~accentuate.hooks.OUTPUT` (``"@output"``: the model's output,
            e.g. CLIP's image embedding) or ``None`` (default: :func:`default_like_layer`).
        pool: ``"cls"``, ``"mean"``, or ``None``: ``"cls"`` when the layer has a leading token,
            else ``"mean"``.
        measure: ``"cosine"`` or ``"dot"``.
        name: the reference's name in labels (default: the file name, else ``"reference"``).
        runner: the :class:`~accentuate.hooks.ModelRunner` the caller runs ``model`` with (what
            it has traced is reused), else one is made here.
        spec_overrides: for a model without a spec, as for :func:`accentuate.spec.resolve_spec`.
    """
    import os
    import warnings
    from pathlib import Path

    from torch import nn

    from ..images import prepare_seeds, resize
    from ..spec import resolve_spec

    if isinstance(layer, nn.Module) and not isinstance(model, nn.Module):  # like(layer, image, model)
        warnings.warn("like(layer, image, model) is deprecated; write like(image, model, layer=...) (an objective "
                      "builder takes what it measures, then the model)", DeprecationWarning, stacklevel=2)
        image, model, layer = model, layer, image
    if not isinstance(model, nn.Module):
        raise TypeError(f"like(image, model, layer=None): model must be a torch.nn.Module; got {type(model).__name__}")

    spec = runner.spec if runner is not None and not spec_overrides else resolve_spec(model, **spec_overrides)
    runner = ModelRunner.reuse(runner, model, spec)
    if layer is None:
        layer = default_like_layer(model, spec, runner=runner)
    if pool is not None and pool not in ("cls", "mean"):
        raise ValueError(f"pool must be 'cls' or 'mean'; got {pool!r}")
    if name is None:
        name = Path(image).name if isinstance(image, (str, os.PathLike)) else "reference"
    x = resize(prepare_seeds(image, max(spec.input_size)), spec.input_size)
    acts = runner.activations(x, [layer], stop_at=None if layer == OUTPUT else [layer])
    lay = runner.layouts([layer], {layer: tuple(acts[layer].shape)})[layer]
    if pool is None:
        pool = "cls" if lay.kind == "tokens" and lay.prefix > 0 else "mean"
    if pool == "cls" and lay.kind != "vector":
        check_token(layer, 0, lay)
    return Like(layer, _pooled(lay, acts[layer], pool)[0], pool, measure, name)

"""What drives each logit: accentuate the model's top (and bottom) classes on one image.

:func:`explain` picks classes for one image (the model's top-K predictions, an
optional true label, optionally the K least likely classes), accentuates all of
them in one batched run, and normalizes their opacity masks together, so the
relevance of regions compares across the panel (the paper's collective
normalization). Accentuating the wrongly predicted class and the true class of a
misclassified image is the paper's explanation of a misclassification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..display import Display
from ..engine import accentuate, model_state
from ..errors import ClassNameError
from ..images import SeedLike, prepare_seeds, resize
from ..labels import find_class
from ..result import Result
from ..spec import ModelSpec, resolve_spec

__all__ = ["Explanation", "choose_classes", "explain"]


@dataclass
class Explanation(Display):
    """What :func:`explain` returns.

    Attributes:
        result: the accentuation of 1 seed x K classes (``result.images`` is
            ``(1, K, 3, H, W)``).
        classes: the K class indices, in panel order.
        names: their names (``None`` when the model has no labels).
        reasons: why each was chosen: ``"top-1"`` .. ``"top-K"``, ``"label, rank R"``,
            ``"bottom-1"`` (the least likely) ..., joined with ", " when several apply.
        probs: ``(C,)`` the model's class probabilities on the seed.
        alpha: ``(1, K, H, W)`` opacity normalized over the whole panel.
    """

    result: Result
    classes: list[int]
    names: list[str | None]
    reasons: list[str]
    probs: torch.Tensor
    alpha: torch.Tensor


@torch.no_grad()
def _probabilities(model: nn.Module, seed: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    with model_state(model):
        logits = spec.forward(model, resize(seed, spec.input_size).to(device))
    if logits.dim() != 2:
        raise ValueError(f"the model's output has shape {tuple(logits.shape)}; explain needs (1, classes)")
    return logits[0].float().softmax(-1).cpu()


def choose_classes(
    probs: torch.Tensor,
    top: int = 3,
    bottom: int = 0,
    label: int | str | None = None,
    labels: tuple[str, ...] | None = None,
) -> tuple[list[int], list[str]]:
    """The classes to explain, and why each was chosen.

    Order: the top ``top`` predictions (most likely first), then ``label`` if it is
    not among them, then the ``bottom`` least likely classes (least likely first).

    Args:
        probs: ``(C,)`` class probabilities on the seed.
        top, bottom: how many of the most and least likely classes.
        label: the true class (index or name), e.g. to explain a misclassification.
        labels: class names, to resolve ``label`` by name.

    Raises:
        ValueError: ``top`` or ``bottom`` negative, or nothing to explain.
        ClassNameError: an unknown ``label``.
    """
    c = probs.numel()
    if top < 0 or bottom < 0:
        raise ValueError(f"top and bottom must be >= 0; got top={top}, bottom={bottom}")
    if top + bottom > c:
        raise ValueError(f"top + bottom = {top + bottom} exceeds the model's {c} classes")
    order = probs.argsort(descending=True).tolist()
    classes = order[:top]
    reasons = [f"top-{k + 1}" for k in range(len(classes))]
    if label is not None:
        if isinstance(label, str) and not label.strip().isdigit():
            idx = find_class(label, labels)
        else:
            idx = int(label)
            if not 0 <= idx < c:
                raise ClassNameError(f"label index {idx} is out of range (0..{c - 1})")
        if idx in classes:
            reasons[classes.index(idx)] += ", label"
        else:
            rank = order.index(idx) + 1
            classes.append(idx)
            reasons.append(f"label, rank {rank}")
    for k, idx in enumerate(reversed(order[len(order) - bottom:] if bottom else [])):
        if idx in classes:
            reasons[classes.index(idx)] += f", bottom-{k + 1}"
        else:
            classes.append(idx)
            reasons.append(f"bottom-{k + 1}")
    if not classes:
        raise ValueError("nothing to explain: give top >= 1, bottom >= 1 or a label")
    return classes, reasons


def explain(
    model: nn.Module,
    image: SeedLike,
    top: int = 3,
    bottom: int = 0,
    label: int | str | None = None,
    **accentuate_kwargs: Any,
) -> Explanation:
    """Accentuate the model's top-``top`` classes (and optionally a true ``label`` and
    the ``bottom`` least likely ones) on ``image`` in one batched run.

    Args:
        model: a classifier (with a spec, or pass ``input_size=`` etc. through).
        image: one seed: a path, PIL image or ``(3, H, W)`` tensor in [0, 1].
        top: how many of the most likely classes.
        bottom: how many of the least likely classes.
        label: the image's true class (index or name); added when not in the top.
        **accentuate_kwargs: passed to :func:`accentuate.accentuate` (``steps``,
            ``lam``, ``canvas``, ``generator``, ``snapshots``, ``progress`` ...).

    Returns:
        An :class:`Explanation`; ``alpha`` is normalized over all K masks together.

    Example:
        >>> import accentuate as acc                                   # doctest: +SKIP
        >>> from accentuate.analysis.explain import explain            # doctest: +SKIP
        >>> ex = explain(acc.load_model(), acc.photo("chelsea"), top=3)  # doctest: +SKIP
        >>> ex.names, ex.result.after["rank"]                           # doctest: +SKIP
    """
    spec_kw = {k: accentuate_kwargs[k] for k in ("input_size", "normalize", "labels", "output")
               if k in accentuate_kwargs}
    spec = resolve_spec(model, **spec_kw)
    canvas = accentuate_kwargs.get("canvas") or spec.setting("canvas")
    seed = prepare_seeds(image, canvas)
    if seed.shape[0] != 1:
        raise ValueError(f"explain takes one image; got {seed.shape[0]}")
    probs = _probabilities(model, seed, spec)
    classes, reasons = choose_classes(probs, top, bottom, label, spec.labels)
    kw = dict(accentuate_kwargs)
    kw["canvas"] = canvas  # the seed is already fitted to it; the engine refits nothing
    res = accentuate(model, seed, classes, **kw)
    names = [spec.labels[c] if spec.labels is not None and c < len(spec.labels) else None for c in classes]
    return Explanation(result=res, classes=classes, names=names, reasons=reasons, probs=probs,
                       alpha=res.alpha(collective=True))

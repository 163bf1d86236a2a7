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
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..display import Display
from ..engine import accentuate
from ..errors import ClassNameError, TargetError
from ..hooks import OUTPUT, ModelRunner
from ..images import SeedLike, prepare_seeds, resize
from ..labels import find_class
from ..objectives import as_objective
from ..result import Result
from ..settings import Settings
from ..spec import ModelSpec
from .setup import analysis_settings, analysis_spec, run_seed

if TYPE_CHECKING:
    from ..outputs.grid import Grid

__all__ = ["Explanation", "choose_classes", "class_probabilities", "explain"]


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

    def overtaken_by(self, j: int) -> list[int]:
        """Classes that were not above class ``classes[j]`` on the seed and are above it on its
        accentuation (why its rank fell, e.g. 1 -> 2), most likely first; ``[]`` if none."""
        before, after = self.result.before.get("logits"), self.result.after.get("logits")
        if before is None or after is None:
            return []
        c = self.classes[j]
        b, a = before[0, j].float(), after[0, j].float()
        above = (b <= b[c]) & (a > a[c])
        above[c] = False
        idx = above.nonzero().flatten()
        return idx[a[idx].argsort(descending=True)].tolist()

    def rank_change(self, j: int) -> str:
        """``"rank 1 -> 2 (overtaken by tabby)"``: class ``classes[j]``'s rank on the seed and on its
        accentuation, naming the classes that overtook it (at most three)."""
        before, after = self.result.before.get("logits"), self.result.after.get("logits")
        if before is None or after is None:
            return ""
        c = self.classes[j]
        rb = int(1 + (before[0, j] > before[0, j, c]).sum())
        ra = int(1 + (after[0, j] > after[0, j, c]).sum())
        text = f"rank {rb} -> {ra}"
        over = self.overtaken_by(j)
        if over:
            labels = self.result.labels
            names = [labels[k] if labels is not None and k < len(labels) else str(k) for k in over[:3]]
            more = f" and {len(over) - 3} more" if len(over) > 3 else ""
            text += f" (overtaken by {', '.join(names)}{more})"
        return text

    def _grid(self) -> Grid:
        """What this looks like in a notebook (see :mod:`accentuate.outputs.grid`): its images with their numbers."""
        from ..outputs.grid import Cell, Grid, num, overlay, picture

        res = self.result
        cells = [Cell(picture(res.seeds[0]) if res.seeds is not None else None, ["seed"])]
        cols = ["seed"]
        table = []
        for k, c in enumerate(self.classes):
            name = self.names[k] or str(c)
            cols.append(f"{name} [{self.reasons[k]}]")
            pb, pa = float(self.probs[c]), float(res.after["prob"][0, k])
            cells.append(Cell(overlay(res.images[0, k], self.alpha[0, k]),
                              [f"p {num(pb)} -> {num(pa)}", f"rank {int(res.before['rank'][0, k])} -> {int(res.after['rank'][0, k])}"]))
            table.append({"class": c, "name": name, "why": self.reasons[k], "prob_before": pb, "prob_after": pa,
                          "rank_before": int(res.before["rank"][0, k]), "rank_after": int(res.after["rank"][0, k])})
        return Grid("Explanation: what drives each class (opacity normalized over the panel)", cols,
                    [("", cells)], "", ["class", "name", "why", "prob_before", "prob_after", "rank_before", "rank_after"],
                    table)


def class_probabilities(model: nn.Module, seed: torch.Tensor, spec: ModelSpec,
                        runner: ModelRunner | None = None) -> torch.Tensor:
    """``(C,)`` the model's class probabilities on ``seed`` ``(1, 3, H, W)`` or ``(3, H, W)`` (the whole
    canvas resized to the model's input, as the engine evaluates it)."""
    logits = ModelRunner.reuse(runner, model, spec).activations(resize(seed, spec.input_size), [OUTPUT])[OUTPUT]
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
    settings: Settings | None = None,
    **accentuate_kwargs: Any,
) -> Explanation:
    """Accentuate the model's top-``top`` classes (and optionally a true ``label`` and
    the ``bottom`` least likely ones) on ``image`` in one batched run.

    Args:
        model: a classifier (with a spec, or pass ``input_size=`` etc. through).
        image: one seed: a path, PIL image or ``(3, H, W)`` tensor in [0, 1].
        top: how many of the most likely classes.
        bottom: how many of the least likely classes.
        label: the image's true class (index, name, or a target string naming a class, read as
            :func:`accentuate.parse_target` reads it); added when not in the top.
        settings: the :class:`~accentuate.settings.Settings` to run with (default: the
            model's); settings among ``accentuate_kwargs`` override it.
        **accentuate_kwargs: passed to :func:`accentuate.accentuate` (``steps``,
            ``lam``, ``canvas``, ``seed``, ``snapshots``, ``progress``, ``runner`` ...).

    Returns:
        An :class:`Explanation`; ``alpha`` is normalized over all K masks together.

    Example:
        >>> import accentuate as acc                                   # doctest: +SKIP
        >>> from accentuate.analysis.explain import explain            # doctest: +SKIP
        >>> ex = explain(acc.load_model(), acc.photo("chelsea"), top=3)  # doctest: +SKIP
        >>> ex.names, ex.result.after["rank"]                           # doctest: +SKIP
    """
    kw = dict(accentuate_kwargs)
    if "generator" in kw:
        kw["seed"] = run_seed(None, kw, "explain")
    spec = analysis_spec(model, kw)
    settings = analysis_settings(model, spec, settings, kw)
    seed = prepare_seeds(image, settings.canvas)
    if seed.shape[0] != 1:
        raise ValueError(f"explain takes one image; got {seed.shape[0]}")
    if label is not None:  # read as a target is (acc.parse_target): a class name or index
        true = as_objective(label, model, spec, runner=kw.get("runner"))
        if true.class_index is None:
            raise TargetError(f"label {label!r} is not a class; explain's label is the image's true class "
                              "(a class name or index)")
        label = true.class_index
    probs = class_probabilities(model, seed, spec, kw.get("runner"))
    classes, reasons = choose_classes(probs, top, bottom, label, spec.labels)
    res = accentuate(model, seed, classes, settings, **kw)
    names = [spec.labels[c] if spec.labels is not None and c < len(spec.labels) else None for c in classes]
    return Explanation(result=res, classes=classes, names=names, reasons=reasons, probs=probs,
                       alpha=res.alpha(collective=True))

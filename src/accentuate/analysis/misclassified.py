"""A model's mistakes over a labelled folder tree, and the most frequent confusions.

A labelled tree is ``ROOT/<class name>/<image files>`` (a validation set laid out the
usual way). :func:`labelled_tree` reads it, :func:`classify` runs the model once on
each seed (the whole canvas resized to the model's input, as accentuation sees it),
and :func:`confusions` counts which true class is taken for which predicted one.
``accentuate explain ROOT --misclassified`` then accentuates, on each image the model
gets wrong, its predicted class and its true class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ClassNameError, ImageError
from ..hooks import OUTPUT, ModelRunner
from ..images import IMAGE_SUFFIXES, resize
from ..labels import find_class
from ..spec import ModelSpec

__all__ = ["Confusion", "Labelled", "classify", "confusions", "labelled_tree"]


@dataclass(frozen=True)
class Labelled:
    """An image of a labelled tree and its true class (from its folder's name)."""

    path: Path
    folder: str
    label: int


@dataclass(frozen=True)
class Confusion:
    """``count`` images of class ``true`` that the model took for ``predicted`` (indices of
    the run's images in ``images``)."""

    true: int
    predicted: int
    count: int
    images: tuple[int, ...]


def labelled_tree(root: str | Path, labels: Sequence[str] | None) -> list[Labelled]:
    """The images of ``ROOT/<class name>/*``, each with its class index, sorted by folder and name.

    A folder's name is a class name of the model (case-insensitive; ``_`` may stand for a space)
    or a class index.

    Raises:
        ImageError: ``root`` is not a folder, or holds no class folder with images.
        ClassNameError: a folder's name is not one of the model's classes (with the closest names).
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{str(root)!r} is not a folder; give the root of a labelled tree ROOT/<class name>/*.jpg")
    if labels is None:
        raise ClassNameError("the model has no class names, so folder names cannot be read as classes; "
                             "use a model with labels")
    out: list[Labelled] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        name = folder.name
        try:
            idx = int(name) if name.isdigit() and int(name) < len(labels) else find_class(name, labels)
        except ClassNameError as first:
            try:
                idx = find_class(name.replace("_", " "), labels)
            except ClassNameError:
                raise ClassNameError(f"folder {str(folder)!r}: {first}; rename the folder to a class name "
                                     "(`accentuate classes QUERY` searches them)") from None
        out += [Labelled(f, name, idx) for f in files]
    if not out:
        raise ImageError(f"{str(root)!r} has no class folders with images; lay it out as ROOT/<class name>/*.jpg")
    return out


@torch.no_grad()
def classify(model: nn.Module, spec: ModelSpec, seeds: Sequence[torch.Tensor], chunk: int = 32,
             runner: ModelRunner | None = None) -> torch.Tensor:
    """Class probabilities ``(N, C)`` of each seed ``(3, H, W)`` (its whole canvas at the model's input;
    ``runner``: the caller's, else one made here)."""
    runner = ModelRunner.reuse(runner, model, spec)
    out = []
    for k in range(0, len(seeds), chunk):
        x = torch.stack([resize(s[None], spec.input_size)[0] for s in seeds[k:k + chunk]])
        logits = runner.activations(x.to(runner.device), [OUTPUT])[OUTPUT]
        if logits.dim() != 2:
            raise ValueError(f"the model's output has shape {tuple(logits.shape)}; --misclassified needs "
                             "(N, classes)")
        out.append(logits.float().softmax(-1).cpu())
    return torch.cat(out)


def confusions(true: Sequence[int], predicted: Sequence[int]) -> list[Confusion]:
    """Each (true, predicted) pair with ``true != predicted``, most frequent first (ties: by class)."""
    where: dict[tuple[int, int], list[int]] = {}
    for k, (t, p) in enumerate(zip(true, predicted)):
        if t != p:
            where.setdefault((t, p), []).append(k)
    counts = Counter({k: len(v) for k, v in where.items()})
    order = sorted(counts, key=lambda k: (-counts[k], k))
    return [Confusion(t, p, counts[(t, p)], tuple(where[(t, p)])) for t, p in order]

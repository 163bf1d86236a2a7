"""Class names: the shipped ImageNet-1k labels and name lookup."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from .errors import ClassNameError

__all__ = ["find_class", "imagenet_labels", "imagenet_synonyms", "search_classes", "synonyms_for"]


@lru_cache(maxsize=1)
def _imagenet_rows() -> tuple[tuple[str, tuple[str, ...]], ...]:
    text = resources.files("accentuate").joinpath("data/imagenet_classes.tsv").read_text("utf-8")
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        _, synset, names = line.split("\t")
        rows.append((synset, tuple(n.strip() for n in names.split(","))))
    return tuple(rows)


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard order (index 0 is 'tench')."""
    return tuple(names[0] for _, names in _imagenet_rows())


def imagenet_synonyms() -> tuple[tuple[str, ...], ...]:
    """All WordNet names of each ImageNet class (the first is the short name)."""
    return tuple(names for _, names in _imagenet_rows())


def synonyms_for(labels: Sequence[str]) -> Sequence[Sequence[str]]:
    """The names each class answers to: WordNet synonyms for the ImageNet labels, else the label."""
    if tuple(labels) == imagenet_labels():
        return imagenet_synonyms()
    return [(name,) for name in labels]


def find_class(name: str, labels: Sequence[str] | None) -> int:
    """Index of the class called ``name`` (case-insensitive).

    Exact matches of the short name win; otherwise any synonym may match. A name
    shared by several classes, or no class, raises :class:`ClassNameError` listing
    the candidates or the closest names.
    """
    if labels is None:
        raise ClassNameError(
            f"class name {name!r} given but the model has no labels; "
            "pass labels= with the model or use a class index"
        )
    key = name.strip().lower()
    if key.isdigit():
        idx = int(key)
        if idx >= len(labels):
            raise ClassNameError(f"class index {idx} is out of range (0..{len(labels) - 1})")
        return idx
    short = [i for i, n in enumerate(labels) if n.lower() == key]
    if len(short) == 1:
        return short[0]
    syn = synonyms_for(labels)
    hits = short or [i for i, names in enumerate(syn) if key in (n.lower() for n in names)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        options = ", ".join(f"{i} ({'; '.join(syn[i][:3])})" for i in hits)
        raise ClassNameError(f"class name {name!r} is ambiguous: {options}; give the index instead")
    lower = {n.lower(): i for i, names in enumerate(syn) for n in names}
    close = difflib.get_close_matches(key, list(lower), n=5, cutoff=0.6)
    hint = ", ".join(f"{c!r} ({lower[c]})" for c in close) if close else "none similar"
    raise ClassNameError(
        f"unknown class name {name!r}; closest: {hint}; search with `accentuate classes QUERY`"
    )


def search_classes(query: str, labels: Sequence[str]) -> list[tuple[int, str]]:
    """Classes whose names contain ``query`` (case-insensitive), as ``(index, names)``."""
    key = query.strip().lower()
    syn = synonyms_for(labels)
    return [
        (i, ", ".join(names)) for i, names in enumerate(syn) if any(key in n.lower() for n in names)
    ]

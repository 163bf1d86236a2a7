"""The work list: which pairs (seed image x target) a command does, and everything fixed by it.

A command's work is one value, :class:`WorkList`, built once: the images (rows), the
targets (columns, each with its own settings when a manifest row gave some) and the
pairs in a fixed order, every image x every target or the rows of a manifest. Each
:class:`Pair` carries its key (its identity: what changes its result), its file-name
stem and its batch. The engine calls, torchrun's claims, the writer of ``run.json``,
``Result.save``/``Result.load`` and the report all read it; none rebuilds it.

:func:`cut_batches` cuts the pairs into batches of at most ``B`` pairs that share a
canvas and settings, from the list alone: the batches, and with :func:`batch_seed` each
batch's generator seed (from the run seed and the keys of the batch's pairs), do not
depend on how many processes run them or on which pairs an earlier run already
finished.

``run.json`` records the work list as ``work`` (:meth:`WorkList.record`), and
:func:`recorded_work` reads it back (a record written before ``work`` existed counts as
every image x every target).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..digest import canonical_sha256

if TYPE_CHECKING:
    from ..objectives import Objective
    from ..settings import Settings

__all__ = ["Batch", "ImageInfo", "Pair", "TargetInfo", "WorkList", "batch_seed", "cut_batches", "describe_target",
           "pair_stems", "product", "recorded_work", "slug"]


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``.``, ``-``)."""
    s = re.sub(r"[^A-Za-z0-9.\-]+", "-", str(text)).strip("-.")
    return (s[:limit].rstrip("-.") or "x")


def describe_target(obj: Objective, text: str | None = None) -> dict[str, Any]:
    """How a target is shown and recorded: the objective's own :meth:`~Objective.describe`
    (``kind``, ``label``, ``value_name``, what it reads) with ``arg`` (what was typed),
    ``objective`` (its repr) and ``slug`` (for file names)."""
    d = dict(obj.describe())
    slug_text = d.pop("slug_text", None) or d["label"]
    return {"arg": text, "objective": repr(obj), **d, "slug": slug(slug_text)}


@dataclass
class ImageInfo:
    """A seed image of the run, or (``noise=True``) a row of noise-seeded feature visualizations:
    the engine starts it from random noise (drawn from its batch's generator), so such a row is
    optimized alone in its batch."""

    path: str
    name: str
    sha256: str
    size: tuple[int, int]  # (width, height) of the file as read
    canvas: tuple[int, int]  # (H, W) it was fitted to
    tensor: torch.Tensor | None = field(default=None, repr=False)  # (3, H, W) on the canvas
    noise: bool = False

    @classmethod
    def noise_row(cls, name: str, canvas: tuple[int, int]) -> ImageInfo:
        """A noise-seeded row named ``name`` (its identity: two rows of one name are one row)."""
        h, w = canvas
        return cls(path="", name=name, sha256=f"noise:{name}", size=(w, h), canvas=(h, w), noise=True)

    def record(self) -> dict[str, Any]:
        d = {"path": self.path, "name": self.name, "sha256": self.sha256,
             "size": list(self.size), "canvas": list(self.canvas)}
        return {**d, "noise": True} if self.noise else d


@dataclass
class TargetInfo:
    """A target of the run: what the user typed and the resolved objective.

    ``settings`` holds the settings this target's pairs run with instead of the run's
    (a manifest's ``lam``, ``steps``, ``reg_layer``, ``until`` columns; JSON values as
    :meth:`Settings.to_dict` gives them). The same objective with other settings is
    another target (another column of the contact sheet).
    """

    text: str
    objective: Objective
    settings: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """How ``run.json`` lists the target: :func:`describe_target`, its own settings, and its
        ``definition`` (:meth:`~accentuate.objectives.Objective.to_record`, which rebuilds it)."""
        d = describe_target(self.objective, self.text)
        d["definition"] = self.objective.to_record()
        if self.settings:
            d["settings"] = dict(self.settings)
            d["label"] = self.label()
        return d

    def label(self) -> str:
        """The heading of this target: its label, and its own settings when it has any."""
        base = str(describe_target(self.objective)["label"])
        if not self.settings:
            return base
        return f"{base} ({', '.join(f'{k} {v}' for k, v in sorted(self.settings.items()))})"


@dataclass(frozen=True)
class Batch:
    """Pairs optimized together: every image of ``seeds`` x every target of ``targets``.

    ``index`` is the batch's place in the run's fixed order.
    """

    index: int
    seeds: tuple[int, ...]
    targets: tuple[int, ...]

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(i, j) for i in self.seeds for j in self.targets]


@dataclass(frozen=True)
class Pair:
    """One accentuation of the work list: image ``image`` toward target ``target``.

    ``key`` is its identity (the run's settings key, the image's content and occurrence,
    the target's identity and own settings): a pair recorded under the same key by an
    earlier run is the same work. ``stem`` names its files, ``batch`` is the index of the
    batch it runs in, ``row`` where a manifest asked for it (``None`` otherwise).
    """

    image: int
    target: int
    key: str
    stem: str
    batch: int
    row: str | None = None

    @property
    def ij(self) -> tuple[int, int]:
        return (self.image, self.target)


def product(images: int, targets: int) -> list[tuple[int, int]]:
    """Every image x every target, image by image."""
    return [(i, j) for i in range(images) for j in range(targets)]


def pair_stems(image_names: Sequence[str], objectives: Sequence[Objective]) -> dict[tuple[int, int], str]:
    """The file-name stem of each pair ``(i, j)``: ``{image}__{target}``.

    ``image`` is the slug of the file name without its ending (``cat.jpg`` -> ``cat``; a
    name given twice gets ``-2``, ``-3``, ...) and ``target`` the target's slug
    (``goldfish``, ``blocks.5-c20``); a stem that would repeat gets ``-2``, ``-3``, ...

    Example:
        >>> from accentuate.objectives import channel, logit
        >>> pair_stems(["cat.jpg", "cat.png"], [logit(1).resolve(["tench", "goldfish"]), channel("blocks.5", 20)])
        {(0, 0): 'cat__goldfish', (0, 1): 'cat__blocks.5-c20', (1, 0): 'cat-2__goldfish', (1, 1): 'cat-2__blocks.5-c20'}
    """
    stems: dict[tuple[int, int], str] = {}
    used: set[str] = set()
    img_slugs: list[str] = []
    seen: dict[str, int] = {}
    for name in image_names:
        s = slug(Path(name).stem)
        seen[s] = seen.get(s, 0) + 1
        img_slugs.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    target_slugs = [describe_target(obj)["slug"] for obj in objectives]
    for i, s in enumerate(img_slugs):
        for j, t in enumerate(target_slugs):
            stem = f"{s}__{t}"
            base, k = stem, 2
            while stem in used:
                stem, k = f"{base}-{k}", k + 1
            used.add(stem)
            stems[(i, j)] = stem
    return stems


def _rectangles(seeds: list[int], targets: list[int], size: int) -> list[tuple[list[int], list[int]]]:
    """Cut a full product ``seeds x targets`` into blocks of at most ``size`` pairs, in order."""
    t_per = max(1, min(len(targets), size))
    s_per = max(1, size // t_per)
    return [(seeds[a:a + s_per], targets[b:b + t_per])
            for a in range(0, len(seeds), s_per) for b in range(0, len(targets), t_per)]


def _blocks(pairs: list[tuple[int, int]], by_image: bool) -> list[tuple[list[int], list[int]]]:
    """Split pairs into full products: images that want the same targets (or targets wanted by
    the same images), in the order they first appear."""
    groups: dict[int, list[int]] = {}
    for i, j in pairs:
        a, b = (i, j) if by_image else (j, i)
        groups.setdefault(a, []).append(b)
    blocks: dict[tuple[int, ...], list[int]] = {}
    for a, bs in groups.items():
        blocks.setdefault(tuple(sorted(set(bs))), []).append(a)
    out = []
    for others, firsts in blocks.items():
        out.append((firsts, list(others)) if by_image else (list(others), firsts))
    return out


def cut_batches(
    pairs: Sequence[tuple[int, int]],
    images: Sequence[ImageInfo],
    targets: Sequence[TargetInfo],
    size: int,
) -> list[Batch]:
    """Cut the run's pairs into batches of at most ``size`` pairs, each a block of seeds x
    targets that share a canvas and settings (every pair of a batch is one of ``pairs``).

    The order is fixed by ``pairs`` alone: groups of (canvas, target settings) in the order
    they first appear (a noise-seeded row is a group of its own: the engine draws one noise
    image per call); in each, the pairs split into full products (images that want the
    same targets, or targets wanted by the same images, whichever gives fewer batches),
    cut into blocks. The same list and ``size`` always give the same batches.
    """
    if size < 1:
        raise ValueError(f"batch size must be >= 1; got {size}")
    groups: dict[tuple[tuple[int, int], str, int], list[tuple[int, int]]] = {}
    for i, j in pairs:
        key = (images[i].canvas, json.dumps(targets[j].settings, sort_keys=True, default=str),
               i if images[i].noise else -1)
        groups.setdefault(key, []).append((i, j))
    out: list[Batch] = []
    for group in groups.values():
        best: list[tuple[list[int], list[int]]] | None = None
        for by_image in (True, False):
            cut = [r for ss, tt in _blocks(group, by_image) for r in _rectangles(ss, tt, size)]
            if best is None or len(cut) < len(best):
                best = cut
        for ss, tt in best or []:
            out.append(Batch(len(out), tuple(ss), tuple(tt)))
    return out


def batch_seed(run_seed: int, keys: Sequence[str]) -> int:
    """The generator seed of a batch: from the run's seed and its pairs' keys (their content),
    so it does not depend on which process runs the batch, or when."""
    text = f"{int(run_seed)}|" + "|".join(keys)
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) % (2**62)


class WorkList:
    """What a command does: its images and targets (rows and columns) and the pairs, in order.

    Args:
        images, targets: the rows and columns.
        settings_key: the hash of everything of the run that changes a pair's result (settings,
            animation frames, model, library version); part of every pair's key.
        batch_size: at most this many pairs are optimized together.
        pairs: ``(image, target)`` index pairs in order (each once); ``None``: every image x
            every target.
        kind: where the list came from: ``"product"``, ``"manifest"``, ``"misclassified"``, ...
        rows: per pair of ``pairs``, the manifest row that asked for it (``m.csv line 3``).

    Raises:
        ValueError: a pair is listed twice, or indexes no image or target.
    """

    def __init__(
        self,
        images: Sequence[ImageInfo],
        targets: Sequence[TargetInfo],
        settings_key: str,
        batch_size: int,
        pairs: Sequence[tuple[int, int]] | None = None,
        kind: str = "product",
        rows: Sequence[str] | None = None,
    ) -> None:
        self.images, self.targets = list(images), list(targets)
        self.settings_key, self.batch_size, self.kind = settings_key, int(batch_size), kind
        order = list(pairs) if pairs is not None else product(len(self.images), len(self.targets))
        if len(set(order)) != len(order):
            raise ValueError("a pair is listed twice in the work list; list each (image, target) once")
        bad = [(i, j) for i, j in order if not (0 <= i < len(self.images) and 0 <= j < len(self.targets))]
        if bad:
            raise ValueError(f"pair {bad[0]} indexes no image or target ({len(self.images)} image(s), "
                             f"{len(self.targets)} target(s))")
        if rows is not None and len(rows) != len(order):
            raise ValueError(f"{len(rows)} manifest rows for {len(order)} pairs; give one row per pair")
        # Occurrence number of each image's content among the images before it (same file twice).
        seen: dict[str, int] = {}
        nth = []
        for im in self.images:
            nth.append(seen.get(im.sha256, 0))
            seen[im.sha256] = nth[-1] + 1
        # ... and of each target's identity (the same target given twice is two columns, two keys).
        tseen: dict[str, int] = {}
        self._tnth = []
        for t in self.targets:
            ident = t.objective.identity() + json.dumps(t.settings, sort_keys=True, default=str)
            self._tnth.append(tseen.get(ident, 0))
            tseen[ident] = self._tnth[-1] + 1
        stems = pair_stems([im.name for im in self.images], [t.objective for t in self.targets])
        self.batches = cut_batches(order, self.images, self.targets, self.batch_size)
        batch_of = {p: b.index for b in self.batches for p in b.pairs}
        self.pairs = [Pair(i, j, self._key(i, nth[i], j), stems[(i, j)], batch_of[(i, j)],
                           rows[k] if rows is not None else None) for k, (i, j) in enumerate(order)]
        self._at = {p.ij: p for p in self.pairs}

    def _key(self, i: int, nth: int, j: int) -> str:
        """Identity of pair ``(i, j)``: settings, image content (and its occurrence: the same
        file given twice is two images) and target (identity, own settings and occurrence), so
        no two pairs of a list share a key."""
        t = self.targets[j]
        text = f"{self.settings_key}|{self.images[i].sha256}#{nth}|{t.objective.identity()}"
        if t.settings:  # the target's own settings (a manifest row's lam, steps, ...)
            text += "|" + json.dumps(t.settings, sort_keys=True, default=str)
        if self._tnth[j]:  # a repeat of an earlier target
            text += f"#{self._tnth[j]}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    def __contains__(self, ij: object) -> bool:
        return ij in self._at

    def pair(self, i: int, j: int) -> Pair:
        """The pair of image ``i`` and target ``j`` (``KeyError`` when the list does not ask for it)."""
        return self._at[(i, j)]

    @property
    def is_product(self) -> bool:
        """Whether the list is every image x every target."""
        return len(self.pairs) == len(self.images) * len(self.targets)

    def batch_settings(self, settings: Settings, batch: Batch) -> Settings:
        """The settings of one batch: its targets' own settings (a manifest row's) over the run's,
        with the batch's generator seed (from the run seed and the batch's pairs' keys, see
        :func:`batch_seed`)."""
        own = self.targets[batch.targets[0]].settings
        base = settings.replace(**own) if own else settings
        return base.replace(seed=batch_seed(settings.seed or 0, [self.pair(i, j).key for i, j in batch.pairs]))

    def digest(self) -> str:
        """A hash of the whole list (keys, batches): processes of one job check they agree on it."""
        return canonical_sha256({"key": self.settings_key, "batch": self.batch_size,
                                 "batches": [[b.seeds, b.targets] for b in self.batches],
                                 "pairs": [p.key for p in self.pairs]})

    def record(self) -> dict[str, Any]:
        """What ``run.json`` keeps as ``work``: the kind and every pair in order, with its key,
        file stem, batch (and manifest row)."""
        pairs = []
        for p in self.pairs:
            d: dict[str, Any] = {"image": p.image, "target": p.target, "key": p.key, "id": p.stem,
                                 "batch": p.batch}
            if p.row is not None:
                d["row"] = p.row
            pairs.append(d)
        return {"kind": self.kind, "pairs": pairs}


@dataclass(frozen=True)
class RecordedWork:
    """The work list as ``run.json`` recorded it (:func:`recorded_work`)."""

    kind: str
    images: int
    targets: int
    pairs: tuple[tuple[int, int], ...]
    batches: tuple[int | None, ...]  # per pair; None when the record does not say

    @property
    def is_product(self) -> bool:
        return len(self.pairs) == self.images * self.targets

    def batch_pairs(self, index: int) -> list[tuple[int, int]]:
        """The pairs of batch ``index``."""
        return [p for p, b in zip(self.pairs, self.batches) if b == index]


def recorded_work(doc: Mapping[str, Any]) -> RecordedWork:
    """The work list of a ``run.json`` (``doc``): its ``work`` entry, or for a record written
    before it existed, every image x every target."""
    n, m = len(doc.get("images") or []), len(doc.get("targets") or [])
    work = doc.get("work")
    if not isinstance(work, Mapping):
        batch = {(int(e["seed"]), int(e["target"])): e.get("batch") for e in doc.get("pairs") or []
                 if isinstance(e, Mapping) and "seed" in e and "target" in e}
        pairs = product(n, m)
        return RecordedWork("product", n, m, tuple(pairs), tuple(batch.get(p) for p in pairs))
    listed = [(int(p["image"]), int(p["target"]), p.get("batch")) for p in work.get("pairs") or []]
    return RecordedWork(str(work.get("kind", "product")), n, m, tuple((i, j) for i, j, _ in listed),
                        tuple(b for _, _, b in listed))

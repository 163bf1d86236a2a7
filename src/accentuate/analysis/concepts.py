"""Concepts across a photo set: factorize a layer's activations, then accentuate each concept.

CRAFT-style concept discovery (Fel et al. 2023) with feature accentuation as the
visualization. Every photo is centre-cropped to a square canvas (so that any of them can
share a batch, as in :func:`~accentuate.analysis.latent_features`) and seen by the model as
the engine evaluates it: the whole canvas resized to the model's input. Each spatial
position of the layer (a conv map's pixel, or a transformer's patch token: the class and
register tokens are left out) is one row of the matrix ``A`` ``(patches x channels)``, and

    ``A ~ U W``,  ``U >= 0`` ``(patches x k)``, ``W`` ``(k x channels)``, unit rows:

- ``method="nmf"`` (``W >= 0``) for non-negative layers (after a ReLU or ReLU6);
- ``method="semi-nmf"`` (``W`` signed) for signed layers (transformer token layers), on the
  activations as they are: with their mean removed, semi-NMF needs pairs of opposite concepts to
  go both ways from the mean and degenerates (on DINOv2's patch tokens, two nearly parallel
  concepts with coefficients of 10^5 cancelling each other); uncentred, one concept is close to
  the mean token, present in every patch;
- ``method="auto"`` picks NMF when every activation is >= 0, else semi-NMF.

From ``U``: a concept's **heat map** on a photo is its column of ``U`` on the layer's grid; a
photo's **coefficient** for a concept is the mean of that map (for a new image, ``U`` is solved
with ``W`` fixed, :func:`~accentuate.analysis.factorize.nnls`); its **top photos** have the
largest coefficients, its **top patches** the largest entries (at most one per photo), each
mapped back to a box of the canvas; its **explained** share is how much the squared error of
the factorization grows without it, over the sum of that for every concept
(:func:`~accentuate.analysis.factorize.explained_shares`; the shares add up to 1). Concepts
are numbered by explained share, largest first.

The **accentuation** of concept ``i`` raises its coefficient: the target is
:class:`~accentuate.objectives.Direction` at the layer (the mean over positions of the
activation dotted with a unit vector) along row ``i`` of ``(W W^T)^-1 W`` (``target=
"coefficient"``, the default): that dot product is the concept's least-squares coefficient,
so the objective is the coefficient itself, up to a positive scale, and it does not reward
the shared part of correlated concepts (``target="direction"`` takes ``W_i`` itself). Each
concept is accentuated on its top photos and on photos where it is weak (drawn, reproducibly,
among the quarter of the photos where its coefficient is lowest), and every concept's
coefficient is measured on the seed and on the accentuation (``before``/``after``, ``(k,)``).

Example:
    >>> import accentuate as acc                                            # doctest: +SKIP
    >>> model = acc.load_model()                                            # doctest: +SKIP
    >>> con = acc.concepts(model, "photos/", k=8)                           # doctest: +SKIP
    >>> con.rows()[0]["explained"], con.atlas(0).save("concept-0.png")      # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..display import Display, progress_visible
from ..hooks import OUTPUT, ModelRunner, readable_layouts
from ..images import ImageSet, SeedLike, load_image, photo_set, resize, square_crop, square_side
from ..layout import Layout
from ..objectives import Direction, Objective
from ..outputs import figures
from ..sae import SparseAutoencoder
from ..settings import Settings
from ..spec import ModelSpec, resolve_spec
from .factorize import explained_shares, nmf, nnls, semi_nmf
from .setup import analysis_settings, analysis_spec, run_seed
from .writing import markdown_table

if TYPE_CHECKING:
    from PIL import Image

    from ..outputs.grid import Grid

__all__ = ["ConceptAccentuation", "Concepts", "Made", "concept_layer", "concepts", "default_concept_layer",
           "find_concepts"]

METHODS = ("auto", "nmf", "semi-nmf", "sae")
TARGETS = ("coefficient", "direction")
#: Side of a top patch's box, at least: this fraction of the canvas (a ViT's 14-px patch alone
#: is too small to see what it shows), and at least two cells of the layer's grid.
PATCH_FRACTION = 0.25
#: Opacity of a photo where a concept is absent, in its heat-map picture.
HEAT_FLOOR = 0.15


# -- choosing the layer and reading the photos ---------------------------------------------------
def default_concept_layer(model: nn.Module, spec: ModelSpec | None = None, runner: ModelRunner | None = None) -> str:
    """The layer concepts are looked for in by default: the last of the spec's pathway layers
    with more than one spatial position (``head`` of EfficientNet-Lite0, 1280 x 7 x 7 after
    ReLU6; ``layernorm`` of DINOv2, the final normalized patch tokens), else the last such layer
    the forward pass runs."""
    spec = spec or resolve_spec(model)
    runner = ModelRunner.reuse(runner, model, spec)
    rows = {r.name: r for r in runner.trace()}
    named = [n for n in spec.pathway_layers if n != OUTPUT and n in rows]
    order = named or [r.name for r in runner.trace()]
    for name in reversed(order):
        lay = rows[name].layout
        if lay is not None and lay.spatial:
            return name
    raise ValueError("the model has no layer with spatial positions to find concepts in; pass layer=")


def concept_layer(model: nn.Module, spec: ModelSpec, runner: ModelRunner | None, layer: str | None, k: int,
                  photos: int, *, method: str = "auto",
                  sae: SparseAutoencoder | None = None) -> tuple[str, Layout]:
    """The layer of a concepts request (default :func:`default_concept_layer`; for ``method="sae"``
    with a checkpoint, the layer its ``cfg.json`` names first) and its layout, checked before any
    photo is read: it exists, runs and has spatial positions, and ``k`` concepts fit ``photos``
    photos of it (:func:`check_k`; an SAE's latents instead must read the layer's width).

    Raises:
        LayerError: a layer that is not in the model (with the closest names) or never runs.
        ValueError: a layer without spatial positions, or a ``k`` that does not fit.
        CheckpointError: an SAE whose width is not the layer's.
    """
    runner = ModelRunner.reuse(runner, model, spec)
    if method == "sae" and layer is None and sae is not None:
        layer = sae.config.get("layer") or sae.config.get("hook_name")
    layer = layer or default_concept_layer(model, spec, runner)
    layout = layer_layout(runner, layer)
    if method != "sae":
        check_k(k, photos, layout, layer)
    elif sae is not None and sae.d_in != layout.channels:
        from ..errors import CheckpointError

        raise CheckpointError(f"the SAE {sae.path or ''} reads {sae.d_in}-wide activations (d_in={sae.d_in}) but layer "
                              f"{layer!r} has {layout.channels} channels; use an SAE trained on that layer")
    return layer, layout


def read_views(entries: Sequence[tuple[SeedLike, bool, str]], side: int, input_size: tuple[int, int],
               progress: bool = False) -> tuple[torch.Tensor, list[int], list[dict[str, str]]]:
    """The model's view of each photo of a set (:func:`accentuate.images.photo_set`): centre-cropped
    to the square canvas ``side``, then resized to ``input_size`` (the engine's view of that canvas);
    read one at a time, only the small views kept. A photo found in a folder that cannot be read is
    skipped with a warning (one odd file must not stop a run over a folder).

    Returns:
        ``(views (N, 3, h, w), the indices of ``entries`` read, the skipped ones as {path, error})``.

    Raises:
        ImageError: a photo given by itself cannot be read, or none can.
    """
    import warnings

    from ..errors import ImageError

    views, kept, skipped = [], [], []
    first: ImageError | None = None
    for k, (src, in_folder, _) in enumerate(_bar(entries, progress, "photos")):
        try:
            views.append(resize(canvas_seed(src, side), input_size))
        except ImageError as e:
            if not in_folder:
                raise
            first = first or e
            warnings.warn(f"skipped {str(src)!r}: {e}", stacklevel=2)
            skipped.append({"path": str(src), "error": str(e)})
            continue
        kept.append(k)
    if not views:
        raise first or ImageError("no photos given")
    return torch.stack(views), kept, skipped


def canvas_seed(source: SeedLike, side: int) -> torch.Tensor:
    """One photo centre-cropped to the square canvas ``(3, side, side)`` in [0, 1]."""
    from ..images import as_tensors

    t = load_image(source) if isinstance(source, (str, os.PathLike)) else as_tensors(source, 0)[0]
    return square_crop(t.float(), side)


# -- the result ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Made:
    """An accentuation of a concept as it was made: the concept, the photo's index, ``"top"`` or
    ``"weak"``, the seed and the accentuated image ``(3, S, S)``, the engine's objective before and
    after, and the pair's file stem in an output folder (command line)."""

    concept: int
    image: int
    kind: str
    seed: torch.Tensor
    accentuated: torch.Tensor
    value_before: float | None = None
    value_after: float | None = None
    pair: str | None = None


@dataclass
class ConceptAccentuation:
    """One concept accentuated on one photo.

    Attributes:
        concept: the concept's index; image: the photo's index in :attr:`Concepts.names`.
        kind: ``"top"`` (one of its top photos) or ``"weak"`` (a photo where it is weak).
        before, after: ``(k,)`` every concept's coefficient on the seed and on the accentuation.
        seed, image: ``(3, S, S)`` the seed on the canvas and the accentuation.
        heat_after: ``(h, w)`` the concept's heat map on the accentuation (layer grid).
        value_before, value_after: the engine's objective (the Direction's value) before and after.
        pair: the file stem of the pair in an output folder (command line), else ``None``.
        unit, all_before, all_after: for an SAE's latents (``method="sae"``), the latent and every
            latent's mean code ``(d_sae,)`` on the seed and on the accentuation: the other latents
            whose rise :attr:`max_other_gain` takes are then all the SAE's, not only those shown.
    """

    concept: int
    image: int
    kind: str
    before: torch.Tensor
    after: torch.Tensor
    seed: torch.Tensor | None = None
    accentuated: torch.Tensor | None = None
    heat_after: torch.Tensor | None = None
    value_before: float | None = None
    value_after: float | None = None
    pair: str | None = None
    unit: int | None = None
    all_before: torch.Tensor | None = None
    all_after: torch.Tensor | None = None

    @property
    def gain(self) -> torch.Tensor:
        """``(k,)`` every concept's coefficient rise."""
        return self.after - self.before

    @property
    def own_gain(self) -> float:
        return float(self.gain[self.concept])

    @property
    def max_other_gain(self) -> float:
        """The largest rise among the other concepts (``nan`` with one concept); for an SAE's
        latent, among all the other latents of the SAE."""
        if self.all_before is not None and self.all_after is not None and self.unit is not None:
            g, own = (self.all_after - self.all_before).clone(), self.unit
        else:
            g, own = self.gain.clone(), self.concept
        g[own] = -math.inf
        return float(g.max()) if g.numel() > 1 else math.nan

    @property
    def max_other(self) -> int | None:
        """Which other concept (an SAE's latent: which other latent) rose most."""
        if self.all_before is not None and self.all_after is not None and self.unit is not None:
            g, own = (self.all_after - self.all_before).clone(), self.unit
        else:
            g, own = self.gain.clone(), self.concept
        if g.numel() < 2:
            return None
        g[own] = -math.inf
        return int(g.argmax())


@dataclass
class Concepts(Display):
    """The concepts of a layer across a photo set (see the module's description).

    Attributes:
        layer: the layer; layout: its :class:`~accentuate.layout.Layout`.
        method: ``"nmf"`` or ``"semi-nmf"``; target: ``"coefficient"`` or ``"direction"``.
        names: ``N`` photo names; sources: what each photo was read from (path or tensor).
        views: ``(N, 3, h, w)`` each photo's canvas as the model sees it (its input size).
        vectors: ``(k, C)`` the concept vectors ``W`` (unit rows).
        heat: ``(N, k, gh, gw)`` each concept's coefficient at each position of each photo (``U``).
        coefficients: ``(N, k)`` the mean of ``heat`` over the positions.
        explained: ``(k,)`` each concept's share of what the factorization explains (sums to 1).
        fraction: ``1 - ||A - U W||^2 / ||A||^2`` of the whole factorization (of the sum of squares).
        variance_fraction: ``1 - ||A - U W||^2 / ||A - mean(A)||^2`` (of the variance around the mean
            patch: what the concepts explain beyond the average patch).
        relative_error, iterations, converged: of the factorization; l1: its L1 penalty on ``U``
            (semi-NMF), with which new images are measured too.
        canvas: the side of the square canvas the photos were cropped to.
        accentuations: one :class:`ConceptAccentuation` per accentuated (concept, photo), or empty.
        timings: seconds of each part (``activations_s``, ``factorization_s``, ...).
        config: settings of the accentuations, and the factorization's parameters.
    """

    layer: str
    layout: Layout
    method: str
    target: str
    names: list[str]
    sources: list[SeedLike]
    views: torch.Tensor
    vectors: torch.Tensor
    heat: torch.Tensor
    coefficients: torch.Tensor
    explained: torch.Tensor
    fraction: float
    variance_fraction: float
    relative_error: float
    iterations: int
    converged: bool
    canvas: int
    l1: float = 0.0
    accentuations: list[ConceptAccentuation] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.vectors.shape[0])

    #: What a concept's value is called in captions, and the concepts in titles.
    _value_name = "coefficient"
    _plural = "concepts"

    @property
    def view_size(self) -> tuple[int, int]:
        """``(h, w)`` of :attr:`views` (the model's input)."""
        return (int(self.views.shape[-2]), int(self.views.shape[-1]))

    # -- targets and measurement -----------------------------------------------------------------
    def target_vectors(self) -> torch.Tensor:
        """``(k, C)`` the vectors whose dot product the accentuation of each concept raises:
        the rows of ``(W W^T)^-1 W`` (``target="coefficient"``: the least-squares coefficient of
        each concept), or ``W`` itself (``target="direction"``)."""
        w = self.vectors.double()
        if self.target == "direction":
            return w.float()
        gram = w @ w.T
        return torch.linalg.solve(gram + 1e-10 * gram.diagonal().mean() * torch.eye(self.k, dtype=w.dtype, device=w.device), w).float()

    def label(self, i: int) -> str:
        """How figures and tables name concept ``i``."""
        return f"concept {i}"

    def objective(self, i: int) -> Objective:
        """The accentuation target of concept ``i``: a :class:`~accentuate.objectives.Direction`
        at :attr:`layer` (mean over positions; patch tokens of a token layer)."""
        if not 0 <= i < self.k:
            raise ValueError(f"concept {i} does not exist; there are {self.k} (0..{self.k - 1})")
        obj = Direction(self.layer, self.target_vectors()[i])
        obj.source = f"concept {i}"
        return obj

    def measure(self, model: nn.Module, images: torch.Tensor, spec: ModelSpec | None = None,
                batch: int = 16, runner: ModelRunner | None = None) -> torch.Tensor:
        """Every concept's coefficient at every position of new images, ``W`` fixed.

        Args:
            images: ``(M, 3, H, W)`` in [0, 1] (a canvas; resized to the model's input as the
                engine evaluates it).

        Returns:
            ``(M, k, gh, gw)``; its mean over the last two axes is each image's coefficient.
        """
        spec = spec or (runner.spec if runner is not None else resolve_spec(model))
        views = resize(images.float(), spec.input_size)
        acts = _positions(ModelRunner.reuse(runner, model, spec), views, self.layer, self.layout, batch)  # (M, P, C)
        m, p, c = acts.shape
        u = nnls(acts.reshape(m * p, c).double(), self.vectors, l1=self.l1)
        return u.reshape(m, *self.layout.grid, self.k).permute(0, 3, 1, 2).float()

    def add_accentuations(self, model: nn.Module, made: Sequence[Made], batch: int = 16,
                          runner: ModelRunner | None = None) -> None:
        """Measure every concept's coefficient on the seed and on the accentuation of each of ``made``
        (two batched passes), and keep them as :attr:`accentuations` (concept by concept, top photos
        first): what :func:`concepts` and ``accentuate concepts`` (on the written pictures) both do."""
        t = time.perf_counter()
        if made:
            seeds = torch.stack([m.seed for m in made])
            accents = torch.stack([m.accentuated for m in made])
            before = self.measure(model, seeds, batch=batch, runner=runner)
            after = self.measure(model, accents, batch=batch, runner=runner)
            for r, m in enumerate(made):
                self.accentuations.append(ConceptAccentuation(
                    concept=m.concept, image=m.image, kind=m.kind, before=before[r].mean(dim=(1, 2)),
                    after=after[r].mean(dim=(1, 2)), seed=m.seed, accentuated=m.accentuated,
                    heat_after=after[r, m.concept], value_before=m.value_before, value_after=m.value_after,
                    pair=m.pair))
        self.accentuations.sort(key=lambda a: (a.concept, a.kind != "top", a.image))
        self.timings["measure_s"] = self.timings.get("measure_s", 0.0) + time.perf_counter() - t

    # -- choosing photos and patches -------------------------------------------------------------
    def top_images(self, i: int, n: int = 6) -> list[int]:
        """The ``n`` photos with the largest coefficient for concept ``i``, largest first."""
        order = torch.argsort(self.coefficients[:, i], descending=True, stable=True)
        return order[:n].tolist()

    def weak_images(self, i: int, n: int = 2, exclude: Sequence[int] = (), seed: int = 0) -> list[int]:
        """``n`` photos where concept ``i`` is weak: drawn (from ``seed`` and ``i``) among the quarter
        of the photos with its lowest coefficients (at least ``n``), leaving out ``exclude``.

        Drawing, not taking the lowest, keeps the concepts from all picking the same few photos
        (many photos hold a concept not at all, and ties would go to the first names)."""
        order = [j for j in torch.argsort(self.coefficients[:, i], stable=True).tolist() if j not in set(exclude)]
        pool = order[:max(n, math.ceil(len(self.names) / 4))]
        g = torch.Generator().manual_seed(int(seed) * 1009 + i)
        pick = torch.randperm(len(pool), generator=g)[:n].tolist()
        return sorted((pool[j] for j in pick), key=lambda j: float(self.coefficients[j, i]))

    def top_patches(self, i: int, n: int = 8) -> list[dict[str, Any]]:
        """The ``n`` positions with the largest coefficient of concept ``i``, at most one per photo.

        Returns:
            ``{image, y, x, coefficient, box}`` each, ``box`` ``[left, top, right, bottom]`` in
            pixels of the model's view of the canvas (``views``).
        """
        h = self.heat[:, i].reshape(len(self.names), -1)
        best, where = h.max(dim=1)
        out = []
        for j in torch.argsort(best, descending=True, stable=True)[:n].tolist():
            y, x = divmod(int(where[j]), self.layout.grid[1])
            out.append({"image": j, "y": y, "x": x, "coefficient": float(best[j]), "box": self.patch_box(y, x)})
        return out

    def patch_box(self, y: int, x: int) -> list[int]:
        """The box ``[left, top, right, bottom]`` (pixels of :attr:`views`) shown for grid cell ``(y, x)``:
        centred on the cell, two cells or :data:`PATCH_FRACTION` of the view wide, whichever is larger,
        moved inside the view."""
        vh, vw = self.views.shape[-2:]
        gh, gw = self.layout.grid
        sy, sx = max(2 * vh / gh, PATCH_FRACTION * vh), max(2 * vw / gw, PATCH_FRACTION * vw)
        cy, cx = (y + 0.5) * vh / gh, (x + 0.5) * vw / gw
        top = int(round(min(max(cy - sy / 2, 0), vh - sy)))
        left = int(round(min(max(cx - sx / 2, 0), vw - sx)))
        return [left, top, left + int(round(sx)), top + int(round(sy))]

    def pairs(self, top: int = 2, weak: int = 2, seed: int = 0) -> list[tuple[int, int, str]]:
        """The accentuations to make: ``(photo, concept, "top" | "weak")``, concept by concept."""
        out: list[tuple[int, int, str]] = []
        for i in range(self.k):
            best = self.top_images(i, top)
            out += [(j, i, "top") for j in best]
            out += [(j, i, "weak") for j in self.weak_images(i, weak, exclude=best, seed=seed)]
        return out

    # -- tables and records ----------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One dict per concept: index, explained share, mean coefficient, photos where it is
        present, top photos, and its accentuations' mean own and largest other rise."""
        out = []
        for i in range(self.k):
            acc = [a for a in self.accentuations if a.concept == i]
            row: dict[str, Any] = {
                "concept": i, "explained": float(self.explained[i]),
                "mean_coefficient": float(self.coefficients[:, i].mean()),
                "present_in": int((self.coefficients[:, i] > 1e-6).sum()),
                "top_images": ", ".join(self.names[j] for j in self.top_images(i, 3)),
            }
            if acc:
                row["own_rise"] = sum(a.own_gain for a in acc) / len(acc)
                row["largest_other_rise"] = sum(a.max_other_gain for a in acc) / len(acc)
            out.append(row)
        return out

    def to_markdown(self, digits: int = 3) -> str:
        """The table of :meth:`rows`."""
        return markdown_table(self.rows(), digits=digits)

    def record(self, top: int = 6, patches: int = 8) -> list[dict[str, Any]]:
        """The ``concepts`` list of ``run.json``: per concept ``index``, ``explained``,
        ``mean_coefficient``, ``top_images`` and ``top_patches`` (photo names), and ``accentuated``
        (per accentuated photo its ``before`` and ``after`` coefficient, and every concept's)."""
        out = []
        for i in range(self.k):
            acc = [a for a in self.accentuations if a.concept == i]
            out.append({
                "index": i, "explained": _round(self.explained[i]),
                "mean_coefficient": _round(self.coefficients[:, i].mean()),
                "present_in": int((self.coefficients[:, i] > 1e-6).sum()),
                "top_images": [{"image": self.names[j], "coefficient": _round(self.coefficients[j, i])}
                               for j in self.top_images(i, top)],
                "top_patches": [{**p, "image": self.names[p["image"]], "coefficient": _round(p["coefficient"])}
                                for p in self.top_patches(i, patches)],
                "accentuated": [{"image": self.names[a.image], "kind": a.kind, "pair": a.pair,
                                 "before": _round(a.before[i]), "after": _round(a.after[i]),
                                 "largest_other_rise": _round(a.max_other_gain),
                                 "before_all": [_round(v) for v in a.before], "after_all": [_round(v) for v in a.after],
                                 "value_before": _round(a.value_before), "value_after": _round(a.value_after)}
                                for a in acc],
            })
        return out

    def summary(self) -> dict[str, Any]:
        """What ``run.json`` keeps as ``factorization``: the layer, method, sizes and fit."""
        n, p = len(self.names), self.layout.grid[0] * self.layout.grid[1]
        return {"layer": self.layer, "layout": str(self.layout), "method": self.method, "target": self.target,
                "k": self.k, "photos": n, "patches": n * p, "channels": int(self.vectors.shape[1]),
                "canvas": [self.canvas, self.canvas], "explained_fraction": _round(self.fraction),
                "relative_error": _round(self.relative_error), "iterations": self.iterations,
                "converged": self.converged, "explained_variance": _round(self.variance_fraction),
                "timings": {k: round(v, 3) for k, v in self.timings.items()}, "names": list(self.names)}

    # -- pictures --------------------------------------------------------------------------------
    def heat_scale(self, i: int) -> float:
        """The 99th percentile of concept ``i``'s coefficients over every position of the set: its
        heat maps are divided by it (and clipped at 1), so that they compare between photos; a
        percentile, not the maximum, so that one outlying patch does not wash out every map."""
        return max(float(torch.quantile(self.heat[:, i].flatten().float(), 0.99)), 1e-12)

    def heat_picture(self, view: torch.Tensor, heat: torch.Tensor, i: int, side: int = 150) -> Image.Image:
        """``view`` ``(3, h, w)`` shown through the concept's heat map ``(gh, gw)`` (upsampled) over white,
        with :data:`HEAT_FLOOR` of the photo kept everywhere so that the rest stays recognizable."""
        a = resize((heat.float() / self.heat_scale(i)).clamp(0, 1)[None, None].expand(1, 3, -1, -1),
                   (int(view.shape[-2]), int(view.shape[-1])))[0, 0]
        return figures.to_pil(figures.over_white(view.float(), HEAT_FLOOR + (1 - HEAT_FLOOR) * a), side)

    def atlas(self, i: int, top: int = 6, patches: int = 8, side: int = 150) -> Image.Image:
        """Concept ``i`` as one picture: its top patches, its heat maps on its top photos, and its
        accentuations (seed, accentuation, heat map on the accentuation) with the coefficients."""
        blocks = []
        pts = self.top_patches(i, patches)
        crops = [figures.to_pil(self.views[p["image"], :, p["box"][1]:p["box"][3], p["box"][0]:p["box"][2]],
                                side * 2 // 3) for p in pts]
        blocks.append(figures.labelled_grid([crops], col_labels=[f"{_short(self.names[p['image']], 16)}\n"
                                                                 f"{p['coefficient']:.3g}" for p in pts],
                                            row_labels=["top patches"], font_size=11))
        tops = self.top_images(i, top)
        pics = [self.heat_picture(self.views[j], self.heat[j, i], i, side) for j in tops]
        blocks.append(figures.labelled_grid([pics], col_labels=[f"{_short(self.names[j])}\n"
                                                                f"{self._value_name} {float(self.coefficients[j, i]):.3g}"
                                                                for j in tops],
                                            row_labels=["heat map\non its top\nphotos"], font_size=11))
        acc = [a for a in self.accentuations if a.concept == i]
        if acc:
            blocks.append(self._accentuation_block(i, acc, side))
        title = self._title(i)
        return figures.stack_with_title(title, blocks)

    def _title(self, i: int) -> str:
        return (f"concept {i} at {self.layer}: {100 * float(self.explained[i]):.1f} % of the explained part, "
                f"present in {int((self.coefficients[:, i] > 1e-6).sum())} of {len(self.names)} photos")

    def _accentuation_block(self, i: int, acc: Sequence[ConceptAccentuation], side: int) -> Image.Image:
        cols, labels = [], []
        for a in acc:
            seed = a.seed if a.seed is not None else self.views[a.image]
            img = a.accentuated if a.accentuated is not None else seed
            heat = a.heat_after if a.heat_after is not None else self.heat[a.image, i]
            cols.append([figures.to_pil(seed, side), figures.to_pil(img, side),
                         self.heat_picture(resize(img.float(), self.view_size), heat, i, side)])
            labels.append(f"{a.kind}: {_short(self.names[a.image], 18)}\n{self._value_name} {float(a.before[i]):.3g} -> "
                          f"{float(a.after[i]):.3g}\nothers: largest rise {a.max_other_gain:+.3g}")
        cells = [[c[r] for c in cols] for r in range(3)]
        return figures.labelled_grid(cells, col_labels=labels, row_labels=["seed", "accentuation",
                                                                           "its heat map"], font_size=11)

    def overview(self, patches: int = 6, side: int = 84) -> Image.Image:
        """Every concept on one row: its share and its top patches (the atlas at a glance)."""
        rows, labels = [], []
        for i in range(self.k):
            rows.append([figures.to_pil(self.views[p["image"], :, p["box"][1]:p["box"][3], p["box"][0]:p["box"][2]],
                                        side) for p in self.top_patches(i, patches)])
            labels.append(f"{self.label(i)}\n{100 * float(self.explained[i]):.1f} %")
        return figures.labelled_grid(rows, row_labels=labels, font_size=12,
                                     title=f"{self.k} {self._plural} at {self.layer} ({self.method}, "
                                           f"{len(self.names)} photos): top patches, at most one per photo")

    def save(self, directory: str | os.PathLike) -> list[Path]:
        """Write ``concepts.json`` (:meth:`summary` and :meth:`record`), ``concepts.md``,
        ``concepts.png`` (:meth:`overview`), ``concept-I.png`` (:meth:`atlas`) and ``concept-I.npy``
        (the target vector of concept ``I``: ``accentuate run PHOTO --target LAYER:concept-I.npy``)."""
        import json

        from ..outputs.io import atomic_write, output_folder

        out = output_folder(directory)
        written = self.write_pictures(out) + self.write_vectors(out)
        doc = {"format": "accentuate-concepts/1", "factorization": self.summary(), "config": self.config,
               "concepts": self.record()}
        atomic_write(out / "concepts.json", (json.dumps(doc, indent=2, default=str) + "\n").encode())
        atomic_write(out / "concepts.md", (self.to_markdown() + "\n").encode())
        return [out / "concepts.json", out / "concepts.md", *written]

    def write_pictures(self, out: Path, progress: bool = False) -> list[Path]:
        """``concepts.png`` and one ``concept-I.png`` per concept in ``out``; returns their paths."""
        paths = [figures.save_image(self.overview(), out / "concepts.png", max_bytes=600_000)]
        for i in _bar(range(self.k), progress, "atlas"):
            paths.append(figures.save_image(self.atlas(i), out / f"concept-{i}.png", max_bytes=900_000))
        return paths

    def write_vectors(self, out: Path) -> list[Path]:
        """``concept-I.npy`` in ``out``: the target vector of each concept (float32, ``(C,)``), which
        ``accentuate run PHOTO --target LAYER:concept-I.npy`` reads as a direction."""
        import io

        import numpy as np

        from ..outputs.io import atomic_write

        paths = []
        for i, v in enumerate(self.target_vectors()):
            buf = io.BytesIO()
            np.save(buf, v.detach().cpu().numpy().astype("float32"))
            atomic_write(out / f"concept-{i}.npy", buf.getvalue())
            paths.append(out / f"concept-{i}.npy")
        return paths

    def _grid(self) -> Grid:
        """The notebook view: per concept its top photos through its heat map, and the table."""
        from ..outputs.grid import Cell, Grid, num

        top = 6
        rows = []
        for i in range(self.k):
            cells = [Cell(self.heat_picture(self.views[j], self.heat[j, i], i), [_short(self.names[j], 18),
                                                                              num(float(self.coefficients[j, i]))])
                     for j in self.top_images(i, top)]
            rows.append((f"{self.label(i)} ({100 * float(self.explained[i]):.1f} %)", cells))
        cols = [f"top {r + 1}" for r in range(min(top, len(self.names)))]
        table = self.rows()
        return Grid(f"{self.k} {self._plural} at {self.layer} over {len(self.names)} photos ({self.method})", cols, rows,
                    "", list(table[0].keys()) if table else [], table)


@dataclass
class LatentConcepts(Concepts):
    """The latents of a sparse autoencoder shown as concepts (``method="sae"``): the same atlas,
    tables and records as :class:`Concepts`, where concept ``i`` is latent ``units[i]`` of ``sae``.

    A latent's **heat map** is its code at each position, a photo's **coefficient** (its "code"
    in captions) the mean of that map, its **share** (:attr:`explained`) its part of the codes'
    energy over the set, ``sum z_u^2 / sum_v sum z_v^2`` (with unit decoder rows, the part of the
    reconstruction's sum of squares it carries, cross terms aside; the shown latents' shares do
    not add up to 1). The accentuation's target is :func:`accentuate.objectives.latent` (the mean
    code), and each accentuation measures every latent of the SAE before and after, so that its
    "largest other rise" is over all of them (:attr:`ConceptAccentuation.max_other_gain`).

    Attributes:
        sae: the :class:`~accentuate.sae.SparseAutoencoder`; units: the latents shown, ``(k,)``.
        shares: ``(d_sae,)`` every latent's share of the energy; frequency: ``(d_sae,)`` the share of
            positions where it is active; photos_active: ``(d_sae,)`` photos where it is active.
        quality: :func:`~accentuate.analysis.dictionary.sae_quality` on the set (frequencies aside).
        training: the :class:`~accentuate.analysis.dictionary.SAETraining` record when the SAE
            was trained here, else ``None``.
    """

    sae: SparseAutoencoder | None = None
    units: list[int] = field(default_factory=list)
    shares: torch.Tensor | None = None
    frequency: torch.Tensor | None = None
    photos_active: torch.Tensor | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] | None = None

    _value_name = "code"
    _plural = "latents"

    def _sae(self) -> SparseAutoencoder:
        if self.sae is None:
            raise ValueError("these latents have no SAE")
        return self.sae

    def label(self, i: int) -> str:
        return f"latent {self.units[i]}"

    def objective(self, i: int) -> Objective:
        """Latent ``units[i]`` of the SAE, mean code over the positions (:func:`~accentuate.objectives.latent`)."""
        from ..objectives import latent

        if not 0 <= i < self.k:
            raise ValueError(f"concept {i} does not exist; there are {self.k} (0..{self.k - 1})")
        return latent(self.layer, self._sae(), self.units[i])

    def target_vectors(self) -> torch.Tensor:
        """``(k, C)`` the shown latents' decoder rows (their directions in the layer, unit norm): what
        ``concept-I.npy`` holds. ``--target LAYER:concept-I.npy`` raises that direction, not the latent;
        the latent itself is ``--target sae:CHECKPOINT:UNIT@LAYER`` (:meth:`target_text`)."""
        sae = self._sae()
        w = sae.W_dec if sae.W_dec is not None else sae.W_enc.T
        return torch.nn.functional.normalize(w[self.units].float(), dim=1)

    def _codes(self, model: nn.Module, images: torch.Tensor, spec: ModelSpec | None, batch: int,
               runner: ModelRunner | None = None) -> torch.Tensor:
        spec = spec or (runner.spec if runner is not None else resolve_spec(model))
        views = resize(images.float(), spec.input_size)
        acts = _positions(ModelRunner.reuse(runner, model, spec), views, self.layer, self.layout, batch)  # (M, P, C)
        with torch.no_grad():
            return self._sae().encode(acts.float())  # (M, P, d_sae)

    def measure(self, model: nn.Module, images: torch.Tensor, spec: ModelSpec | None = None,
                batch: int = 16, runner: ModelRunner | None = None) -> torch.Tensor:
        """The shown latents' codes at every position of new images, ``(M, k, gh, gw)``."""
        z = self._codes(model, images, spec, batch, runner)[..., self.units]
        return z.reshape(z.shape[0], *self.layout.grid, self.k).permute(0, 3, 1, 2).float()

    def add_accentuations(self, model: nn.Module, made: Sequence[Made], batch: int = 16,
                          runner: ModelRunner | None = None) -> None:
        """As :meth:`Concepts.add_accentuations`, with every latent's mean code before and after
        (``all_before``, ``all_after``), so that the largest other rise is over all the SAE's latents."""
        t = time.perf_counter()
        if made:
            zb = self._codes(model, torch.stack([m.seed for m in made]), None, batch, runner)
            za = self._codes(model, torch.stack([m.accentuated for m in made]), None, batch, runner)
            grid = self.layout.grid
            for r, m in enumerate(made):
                b, a = zb[r][:, self.units], za[r][:, self.units]
                self.accentuations.append(ConceptAccentuation(
                    concept=m.concept, image=m.image, kind=m.kind, before=b.mean(dim=0), after=a.mean(dim=0),
                    seed=m.seed, accentuated=m.accentuated, heat_after=a[:, m.concept].reshape(grid),
                    value_before=m.value_before, value_after=m.value_after, pair=m.pair, unit=self.units[m.concept],
                    all_before=zb[r].mean(dim=0), all_after=za[r].mean(dim=0)))
        self.accentuations.sort(key=lambda a: (a.concept, a.kind != "top", a.image))
        self.timings["measure_s"] = self.timings.get("measure_s", 0.0) + time.perf_counter() - t

    def target_text(self, i: int) -> str | None:
        """The command line's target for the latent shown as concept ``i`` (``None`` without a checkpoint)."""
        sae = self._sae()
        return f"sae:{sae.path}:{self.units[i]}@{self.layer}" if sae.path else None

    def rows(self) -> list[dict[str, Any]]:
        """As :meth:`Concepts.rows`, with the latent, its share of positions and photos where it is active."""
        out = []
        for i, row in enumerate(super().rows()):
            u = self.units[i]
            extra = {"latent": u, "share": row.pop("explained"),
                     "positions_active": float(self.frequency[u]) if self.frequency is not None else math.nan}
            row.pop("present_in", None)
            extra["photos_active"] = int(self.photos_active[u]) if self.photos_active is not None else None
            out.append({"concept": row.pop("concept"), **extra, **row})
        return out

    def record(self, top: int = 6, patches: int = 8) -> list[dict[str, Any]]:
        """As :meth:`Concepts.record`, each with its ``unit``, its ``target`` text and, per
        accentuation, which other latent rose most."""
        out = super().record(top, patches)
        for i, entry in enumerate(out):
            entry["unit"] = self.units[i]
            entry["target"] = self.target_text(i)
            entry["positions_active"] = _round(self.frequency[self.units[i]]) if self.frequency is not None else None
            entry["photos_active"] = int(self.photos_active[self.units[i]]) if self.photos_active is not None else None
            acc = [a for a in self.accentuations if a.concept == i]
            for e, a in zip(entry["accentuated"], acc):
                e["largest_other_latent"] = a.max_other
        return out

    def summary(self) -> dict[str, Any]:
        sae = self._sae()
        out = super().summary()
        out.update({"units": list(self.units), "d_sae": sae.d_sae, "activation": sae.activation, "k_active": sae.k,
                    "checkpoint": sae.path, "digest": sae.digest, "quality": self.quality,
                    "training": self.training})
        return out

    def _title(self, i: int) -> str:
        u = self.units[i]
        active = int(self.photos_active[u]) if self.photos_active is not None else 0
        pos = f" ({100 * float(self.frequency[u]):.1f} % of positions)" if self.frequency is not None else ""
        return (f"latent {u} at {self.layer}: {100 * float(self.explained[i]):.2f} % of the code energy, "
                f"active in {active} of {len(self.names)} photos{pos}")


def select_latents(shares: torch.Tensor, photos_active: torch.Tensor, latents: int | Sequence[int],
                   min_photos: int = 3, frequency: torch.Tensor | None = None, max_active: float = 1.0) -> list[int]:
    """The latents to show: a list of units as given (checked), or the ``latents`` with the largest
    share of the code energy (strength x frequency) among those active in at least ``min_photos``
    photos and at most a share ``max_active`` of the positions (``frequency``, each latent's share),
    largest first; when fewer qualify, the others follow by share.

    Dense latents (on at a large share of all positions: in a TopK SAE, often a direction shared by
    most tokens, such as the mean token) take much of the energy and say little about any photo:
    :func:`find_latents` leaves out those on at more than 20 % of the positions unless told.

    Raises:
        ValueError: a unit out of range, a repeated unit, or a count < 1.
    """
    d = int(shares.numel())
    if isinstance(latents, int) and not isinstance(latents, bool):
        if latents < 1:
            raise ValueError(f"latents must be >= 1 (how many to show) or a list of units; got {latents}")
        ok = photos_active >= min_photos
        if frequency is not None:
            ok &= frequency <= max_active
        score = torch.where(ok, shares.double(), shares.double() - 2.0)  # the qualifying ones first
        return torch.argsort(score, descending=True, stable=True)[:min(latents, d)].tolist()
    units = [int(u) for u in latents]  # type: ignore[union-attr]  # a sequence here
    bad = [u for u in units if not 0 <= u < d]
    if bad:
        raise ValueError(f"latent {bad[0]} is out of range; the SAE has {d} latents (0..{d - 1})")
    if len(set(units)) != len(units) or not units:
        raise ValueError(f"give each latent once (and at least one); got {units}")
    return units


def _train_on(acts: torch.Tensor, layer: str, layout: Layout, model_name: str, train: dict[str, Any] | None,
              sae_out: str | os.PathLike | None, progress: bool) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """An SAE fitted to ``acts`` ``(N, P, C)`` (a tenth of the photos held out for its quality), written
    to ``sae_out`` when given; and what its training was."""
    from ..sae import load_sae, save_sae
    from .dictionary import fit_sae, held_out_mask, sae_quality

    opts = {"latents": 2048, "k": 32, **(train or {})}
    held = torch.from_numpy(held_out_mask(acts.shape[0], 0.1, int(opts.get("seed", 0))))
    fit = fit_sae(acts[~held].reshape(-1, layout.channels), progress=progress,
                  config={"layer": layer, "model": model_name}, **opts)
    q_held = sae_quality(fit.sae, acts[held].reshape(-1, layout.channels))
    q_held.pop("frequency")
    training = {"steps": fit.steps, "lr": fit.lr, "revived": fit.revived, "seconds": fit.seconds,
                "held_out_photos": int(held.sum()), "held_out": q_held, **opts}
    if sae_out is None:
        return fit.sae, training
    save_sae(fit.sae, sae_out, layer=layer, model=model_name, layout=str(layout), normalize_activations="none",
             trained_with="accentuate concepts --method sae", training=training)
    return load_sae(sae_out), training


@torch.no_grad()
def _latent_stats(sae: SparseAutoencoder, acts: torch.Tensor,
                  batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per latent over ``acts`` ``(N, P, C)``: the sum of its squared codes, the positions and the photos
    where it is active."""
    energy = torch.zeros(sae.d_sae, dtype=torch.float64)
    on_positions = torch.zeros(sae.d_sae, dtype=torch.float64)
    photos_active = torch.zeros(sae.d_sae, dtype=torch.long)
    for a in range(0, acts.shape[0], batch):
        z = sae.encode(acts[a:a + batch].float())  # (b, P, d_sae)
        energy += z.double().pow(2).sum(dim=(0, 1))
        on = z > 0
        on_positions += on.double().sum(dim=(0, 1))
        photos_active += on.any(dim=1).long().sum(dim=0)
    return energy, on_positions, photos_active


def find_latents(
    model: nn.Module,
    views: torch.Tensor,
    sae: SparseAutoencoder | str | os.PathLike | None,
    latents: int | Sequence[int] = 8,
    layer: str | None = None,
    *,
    names: Sequence[str] | None = None,
    sources: Sequence[SeedLike] | None = None,
    canvas: int | None = None,
    batch: int = 16,
    spec: ModelSpec | None = None,
    train: dict[str, Any] | None = None,
    sae_out: str | os.PathLike | None = None,
    min_photos: int = 3,
    max_active: float = 0.2,
    progress: bool = False,
    runner: ModelRunner | None = None,
) -> LatentConcepts:
    """An SAE's latents over every position of ``views``, as concepts (see :class:`LatentConcepts`).

    Args:
        views: ``(N, 3, h, w)`` in [0, 1] at the model's input size.
        sae: a :class:`~accentuate.sae.SparseAutoencoder`, a checkpoint's path, or ``None``: train
            one on these views (:func:`~accentuate.analysis.dictionary.fit_sae` with ``train``'s
            settings, default 2048 latents, k 32; a tenth of the photos held out for its quality),
            written to ``sae_out`` when given (so that the targets record a checkpoint).
        latents: how many to show (picked by :func:`select_latents`), or a list of units.
        layer: default: the layer the checkpoint names in its ``cfg.json``, else
            :func:`default_concept_layer`.
        min_photos, max_active: a latent picked by count is active in at least this many photos, and at
            most at this share of the positions (when enough are; :func:`select_latents`).
        runner: the model's :class:`~accentuate.hooks.ModelRunner` to reuse (what it traced).
    """
    from ..sae import load_sae
    from .dictionary import sae_quality

    spec = spec or (runner.spec if runner is not None else resolve_spec(model))
    runner = ModelRunner.reuse(runner, model, spec)
    if isinstance(sae, (str, os.PathLike)):
        sae = load_sae(sae)
    n = views.shape[0]
    layer, layout = concept_layer(model, spec, runner, layer, 1, n, sae=sae, method="sae")
    t0 = time.perf_counter()
    acts = _positions(runner, views, layer, layout, batch, progress)  # (N, P, C)
    t1 = time.perf_counter()
    training = None
    if sae is None:
        sae, training = _train_on(acts, layer, layout, spec.name, train, sae_out, progress)
    t2 = time.perf_counter()
    p = acts.shape[1]
    energy, on_positions, photos_active = _latent_stats(sae, acts, batch)
    shares = (energy / energy.sum().clamp(min=1e-30)).float()
    frequency = (on_positions / (n * p)).float()
    units = select_latents(shares, photos_active, latents, min(min_photos, n), frequency, max_active)
    k = len(units)
    with torch.no_grad():
        heat = torch.cat([sae.encode(acts[a:a + batch].float())[..., units] for a in range(0, n, batch)])
    heat = heat.permute(0, 2, 1).reshape(n, k, *layout.grid).float()
    quality: dict[str, Any] = sae_quality(sae, acts.reshape(-1, layout.channels)) if sae.W_dec is not None else \
        {"fve": math.nan, "fraction": math.nan, "l0": float(on_positions.sum()) / (n * p), "dead": None}
    quality.pop("frequency", None)
    t3 = time.perf_counter()
    fraction = float(quality["fraction"])
    names = list(names) if names is not None else [f"images[{i}]" for i in range(n)]
    timings = {"activations_s": t1 - t0, "encoding_s": t3 - t2}
    if training is not None:
        timings["training_s"] = t2 - t1
    return LatentConcepts(
        layer=layer, layout=layout, method="sae", target="latent", names=names,
        sources=list(sources) if sources is not None else list(views), views=views,
        vectors=torch.nn.functional.normalize((sae.W_dec if sae.W_dec is not None else sae.W_enc.T)[units].float(),
                                              dim=1),
        heat=heat, coefficients=heat.mean(dim=(2, 3)), explained=shares[units],
        fraction=fraction, variance_fraction=float(quality["fve"]),
        relative_error=math.sqrt(max(0.0, 1 - fraction)) if math.isfinite(fraction) else math.nan,
        iterations=int(training["steps"]) if training else 0, converged=True,
        canvas=int(canvas if canvas is not None else views.shape[-1]), timings=timings,
        config={"batch": batch, "min_photos": min_photos, "max_active": max_active}, sae=sae, units=units,
        shares=shares,
        frequency=frequency, photos_active=photos_active, quality=quality, training=training)


def _short(name: str, n: int = 20) -> str:
    """A photo's name for a caption: its last part (no folder), at most ``n`` characters."""
    base = name.rsplit("/", 1)[-1]
    return base if len(base) <= n else base[: n - 2] + ".."


def _round(v: Any, digits: int = 6) -> float | None:
    x = float(v) if v is not None else math.nan
    return round(x, digits) if math.isfinite(x) else None


def _bar(items: Any, progress: bool, desc: str, total: int | None = None) -> Any:
    if not progress:
        return items
    import sys

    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)


def _steps_bar(progress: bool, desc: str, total: int) -> Callable[[int, float], None] | None:
    """A tqdm bar over factorization steps as a ``progress(step, error)`` callback (``step < 0``
    closes it; a restart starts it again), or ``None``."""
    if not progress:
        return None
    import sys

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(step: int, err: float) -> None:
        if step < 0:
            bar.close()
            return
        if step < bar.n:
            bar.reset(total=total)
        bar.update(step - bar.n)
        bar.set_postfix_str(f"error {err:.4f}", refresh=False)

    return update


# -- finding the concepts ------------------------------------------------------------------------
def _positions(runner: ModelRunner, views: torch.Tensor, layer: str, layout: Layout,
               batch: int, progress: bool = False) -> torch.Tensor:
    """``(N, P, C)`` the layer's channel vector at every spatial position of each view."""
    parts = []
    for start in _bar(range(0, views.shape[0], batch), progress, "activations",
                      total=-(-views.shape[0] // batch)):
        acts = runner.activations(views[start:start + batch], [layer], batch=batch, stop_at=[layer])[layer]
        parts.append(layout.positions(acts).contiguous())
    return torch.cat(parts)


def check_k(k: int, photos: int, layout: Layout, layer: str) -> None:
    """``ValueError`` unless ``1 <= k <= min(patches, channels)``, with the numbers in the message."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer (the number of concepts); got {k!r}")
    patches = photos * layout.grid[0] * layout.grid[1]
    if k > patches:
        raise ValueError(f"k = {k} is larger than the {patches} patches of {photos} photo(s) at {layer} "
                         f"({layout.grid[0]} x {layout.grid[1]} each); use k <= {patches} or more photos")
    if k > layout.channels:
        raise ValueError(f"k = {k} is larger than the {layout.channels} channels of {layer}; use k <= "
                         f"{layout.channels}")


def layer_layout(runner: ModelRunner, layer: str) -> Layout:
    """The layout of ``layer``, checked to run and to have spatial positions (a wrong name is a
    :class:`~accentuate.errors.LayerError` naming the closest ones)."""
    lay = readable_layouts(runner, [layer])[layer]
    if not lay.spatial:
        raise ValueError(f"layer {layer!r} has no spatial positions (its layout is {lay}); concepts need "
                         "a conv map or patch tokens: pick another layer (`accentuate layers` lists them)")
    return lay


def find_concepts(
    model: nn.Module,
    views: torch.Tensor,
    k: int,
    layer: str | None = None,
    *,
    names: Sequence[str] | None = None,
    sources: Sequence[SeedLike] | None = None,
    canvas: int | None = None,
    method: str = "auto",
    target: str = "coefficient",
    iterations: int = 300,
    batch: int = 16,
    spec: ModelSpec | None = None,
    progress: bool = False,
    sae: SparseAutoencoder | str | os.PathLike | None = None,
    latents: int | Sequence[int] | None = None,
    train: dict[str, Any] | None = None,
    sae_out: str | os.PathLike | None = None,
    max_active: float = 0.2,
    runner: ModelRunner | None = None,
) -> Concepts:
    """Factorize ``layer``'s activations over every position of ``views`` into ``k`` concepts
    (``method="sae"``: show ``k`` latents of a sparse autoencoder instead, :func:`find_latents`).

    Args:
        model: the model (left as found).
        views: ``(N, 3, h, w)`` in [0, 1] at the model's input size (each photo's canvas resized).
        k: the number of concepts.
        layer: default :func:`default_concept_layer`.
        names, sources: per photo its name and what it was read from (for records and reloading).
        canvas: the side of the square canvas the views were made from (recorded).
        method: ``"auto"``, ``"nmf"``, ``"semi-nmf"`` or ``"sae"``; target: ``"coefficient"`` or ``"direction"``.
        iterations: at most this many alternating steps of the factorization.
        sae, latents, train, sae_out, max_active: for ``method="sae"`` (:func:`find_latents`): the SAE
            (``None``: train one with ``train``'s settings, written to ``sae_out``), how many latents
            to show (default ``k``) or which, and the largest share of positions a latent picked by
            count may be active at.
        runner: the model's :class:`~accentuate.hooks.ModelRunner` to reuse (what it traced).

    Returns:
        :class:`Concepts` (:class:`LatentConcepts` for ``"sae"``) without accentuations.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "sae":
        return find_latents(model, views, sae, k if latents is None else latents, layer, names=names,
                            sources=sources, canvas=canvas, batch=batch, spec=spec, train=train, sae_out=sae_out,
                            max_active=max_active, progress=progress, runner=runner)
    if sae is not None or latents is not None:
        raise ValueError(f"sae= and latents= are for method='sae'; method is {method!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    spec = spec or (runner.spec if runner is not None else resolve_spec(model))
    runner = ModelRunner.reuse(runner, model, spec)
    n = views.shape[0]
    layer, layout = concept_layer(model, spec, runner, layer, k, n)
    t0 = time.perf_counter()
    acts = _positions(runner, views, layer, layout, batch, progress)  # (N, P, C)
    t1 = time.perf_counter()
    a = acts.reshape(-1, acts.shape[-1]).double()
    negative = float(a.min()) < 0
    if method == "auto":
        method = "semi-nmf" if negative else "nmf"
    if method == "nmf" and negative:
        raise ValueError(f"layer {layer!r} has negative activations (down to {float(a.min()):.3g}), so NMF "
                         "cannot factorize it; use method='semi-nmf' (--method semi-nmf)")
    bar = _steps_bar(progress, f"{method} ({a.shape[0]} x {a.shape[1]}, k {k})", iterations)
    try:
        fit = (semi_nmf if method == "semi-nmf" else nmf)(a, k, iterations=iterations, progress=bar)
    finally:
        if bar is not None:
            bar(-1, math.nan)
    shares, fraction = explained_shares(a, fit.u, fit.w)
    spread = float((a - a.mean(dim=0)).pow(2).sum())
    variance = 1 - (1 - fraction) * float(a.pow(2).sum()) / spread if spread > 0 else math.nan
    order = torch.argsort(shares, descending=True, stable=True)
    u, w, shares = fit.u[:, order], fit.w[order], shares[order]
    t2 = time.perf_counter()
    p = acts.shape[1]
    heat = u.reshape(n, p, k).permute(0, 2, 1).reshape(n, k, *layout.grid).float()
    names = list(names) if names is not None else [f"images[{i}]" for i in range(n)]
    return Concepts(
        layer=layer, layout=layout, method=method, target=target, names=names,
        sources=list(sources) if sources is not None else list(views), views=views, vectors=w.float(),
        heat=heat, coefficients=heat.mean(dim=(2, 3)), explained=shares.float(),
        fraction=fraction, variance_fraction=variance, relative_error=fit.relative_error, iterations=fit.iterations, converged=fit.converged,
        canvas=int(canvas if canvas is not None else views.shape[-1]), l1=fit.l1,
        timings={"activations_s": t1 - t0, "factorization_s": t2 - t1},
        config={"iterations": iterations, "batch": batch},
    )


def concepts(
    model: nn.Module,
    images: ImageSet,
    k: int = 8,
    layer: str | None = None,
    *,
    method: str = "auto",
    target: str = "coefficient",
    top: int = 2,
    weak: int = 2,
    canvas: int | None = None,
    iterations: int = 300,
    batch: int = 16,
    seed: int | None = 0,
    progress: bool | None = None,
    settings: Settings | None = None,
    sae: SparseAutoencoder | str | os.PathLike | None = None,
    latents: int | Sequence[int] | None = None,
    train: dict[str, Any] | None = None,
    sae_out: str | os.PathLike | None = None,
    **accentuate_kwargs: Any,
) -> Concepts:
    """The concepts of ``layer`` across a photo set, each accentuated on photos.

    Args:
        model: the model (not modified).
        images: a folder (its subfolders too), a list of paths/PIL images/tensors, or a tensor
            ``(N, 3, H, W)`` in [0, 1].
        k: the number of concepts.
        layer: default :func:`default_concept_layer` (``head`` for EfficientNet-Lite0).
        method: ``"auto"`` (NMF for a non-negative layer, else semi-NMF), ``"nmf"``, ``"semi-nmf"``, or
            ``"sae"``: the latents of a sparse autoencoder (:class:`LatentConcepts`), ``sae`` (a
            checkpoint or module; ``None``: one is trained on these photos with ``train``'s settings
            and written to ``sae_out`` when given), showing ``latents`` of them (a count, picked by
            share and frequency, default ``k``; or a list of units).
        target: ``"coefficient"`` (raise the concept's least-squares coefficient) or ``"direction"``
            (raise the dot product with the concept vector).
        top, weak: accentuate each concept on its ``top`` best photos and on ``weak`` photos where it
            is weak (``0, 0``: no accentuation, only the factorization).
        canvas: the square canvas' side (default: the model's calibrated canvas).
        iterations: at most this many steps of the factorization.
        batch: photos per forward pass when reading activations.
        seed: the int seed of the accentuations (concept ``i`` uses ``seed + i``) and of the
            draw of weak photos (as :func:`accentuate.accentuate`'s, default 0).
        progress: progress bars (default: where one can be seen, see
            :func:`accentuate.display.progress_visible`).
        settings: the :class:`~accentuate.settings.Settings` the accentuations run from (default: the
            model's), resolved once; settings among the keywords override it.

    Returns:
        :class:`Concepts` with its accentuations.

    Shape:
        ``Concepts.heat`` is ``(N, k, gh, gw)``; each accentuation's ``before``/``after`` ``(k,)``.
    """
    seed = run_seed(seed, accentuate_kwargs, "concepts")
    if progress is None:
        progress = progress_visible()
    spec = analysis_spec(model, accentuate_kwargs)
    runner = ModelRunner.reuse(accentuate_kwargs.get("runner"), model, spec)
    accentuate_kwargs["runner"] = runner
    settings = analysis_settings(model, spec, settings, accentuate_kwargs)
    side = square_side(spec, canvas, "concepts")
    for name, v in (("top", top), ("weak", weak)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0; got {v!r}")
    entries = photo_set(images)
    if method == "sae" and isinstance(sae, (str, os.PathLike)):
        from ..sae import load_sae

        sae = load_sae(sae)
    layer, _ = concept_layer(model, spec, runner, layer, k, len(entries), method=method,
                             sae=sae if isinstance(sae, SparseAutoencoder) else None)
    t0 = time.perf_counter()
    views, kept, _ = read_views(entries, side, spec.input_size, progress)
    read_s = time.perf_counter() - t0
    con = find_concepts(model, views, k, layer, names=[entries[i][2] for i in kept],
                        sources=[entries[i][0] for i in kept], canvas=side, method=method, target=target,
                        iterations=iterations, batch=batch, spec=spec, progress=progress, runner=runner, sae=sae,
                        latents=latents, train=train, sae_out=sae_out)
    con.timings = {"read_s": read_s, **con.timings}
    t1 = time.perf_counter()
    _accentuate_all(con, model, settings, top, weak, seed, batch, progress, accentuate_kwargs)
    con.timings["accentuation_s"] = time.perf_counter() - t1
    con.config.update({"top": top, "weak": weak, "generator": seed})
    return con


def _accentuate_all(con: Concepts, model: nn.Module, settings: Settings, top: int, weak: int,
                    seed: int, batch: int, progress: bool, kwargs: dict[str, Any]) -> None:
    """Accentuate each concept on its chosen photos (one batched engine call per concept, seed
    ``seed + i``; the concepts' bar shows the progress) and add them to ``con``
    (:meth:`Concepts.add_accentuations`)."""
    from ..engine import accentuate

    side = con.canvas
    made: list[Made] = []
    for i in _bar(range(con.k), progress and bool(top + weak), "concepts"):
        chosen = [(j, kind) for j, c, kind in con.pairs(top, weak, seed=seed) if c == i]
        if not chosen:
            continue
        seeds = torch.stack([canvas_seed(con.sources[j], side) for j, _ in chosen])
        res = accentuate(model, seeds, con.objective(i), settings, canvas=(side, side), seed=seed + i,
                         progress=False, **kwargs)
        made += [Made(i, j, kind, seeds[r], res.images[r, 0], float(res.before["value"][r, 0]),
                      float(res.after["value"][r, 0])) for r, (j, kind) in enumerate(chosen)]
        con.config.setdefault("accentuation", res.config.to_dict())
    con.add_accentuations(model, made, batch=batch, runner=kwargs["runner"])

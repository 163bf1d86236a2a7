"""Latent features across many images: one neuron, channel or direction, many seeds.

:func:`latent_features` accentuates one feature in every image of a set (a folder,
or a list), in batches, and returns the results sorted by how much the feature
rose. The opacity masks are normalized *collectively* (one percentile and one
maximum over the whole set, :func:`accentuate.opacity.to_alpha` with
``collective=True``), so a faint mask means the feature's gradient was weak in
that image compared with the others, not only within it.

Seeds of different sizes are centre-cropped to a square canvas so that they can
share a batch; every seed is accentuated independently (a batch equals its single
runs, see :class:`accentuate.Accentuator`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..display import Display
from ..engine import accentuate
from ..images import ImageSet, load_image_set, square_crop, square_side
from ..objectives import Objective, as_objective
from ..opacity import to_alpha
from ..outputs.figures import labelled_grid, over_white, stack_with_title, to_pil
from ..settings import Settings
from .setup import analysis_settings, analysis_spec, run_seed
from .writing import markdown_table, save_analysis

if TYPE_CHECKING:
    from ..outputs.grid import Grid

__all__ = ["Latent", "latent_features"]


@dataclass
class Latent(Display):
    """One feature accentuated in a set of seeds.

    Attributes:
        target: the feature, as text.
        names: ``N`` names of the seeds (file stems, or ``seeds[i]``).
        seeds: ``(N, 3, S, S)`` the seeds on the square canvas.
        images: ``(N, 3, S, S)`` the accentuations.
        masks: ``(N, S, S)`` raw opacity (accumulated ``|d feature / d image|``).
        alpha: ``(N, S, S)`` opacity normalized collectively over the set, in [0, 1].
        value_before, value_after, gain: ``(N,)`` the feature on the seed, on the
            accentuation, and the difference.
        order: ``(N,)`` seed indices sorted by gain, largest first.
        config: the settings of the runs.
    """

    target: str
    names: list[str]
    seeds: torch.Tensor
    images: torch.Tensor
    masks: torch.Tensor
    alpha: torch.Tensor
    value_before: torch.Tensor
    value_after: torch.Tensor
    gain: torch.Tensor
    order: torch.Tensor
    config: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per seed, in ``order``: rank, name, values, gain, and mean collective opacity."""
        return [{"rank": r + 1, "seed": self.names[i], "value_before": float(self.value_before[i]),
                 "value_after": float(self.value_after[i]), "gain": float(self.gain[i]),
                 "mean_opacity": float(self.alpha[i].mean())}
                for r, i in enumerate(self.order.tolist())]

    def to_markdown(self, digits: int = 3) -> str:
        """The table of :meth:`rows`."""
        return markdown_table(self.rows(), digits=digits)

    def grid(self, side: int = 150, columns: int = 6, opacity: bool = True) -> Any:
        """A PIL grid, sorted by gain: per seed, the seed, the accentuation and (with
        ``opacity``) the accentuation shown through its collectively normalized mask over white.
        """
        idx = self.order.tolist()
        blocks = []
        row_names = ["seed", "accentuation"] + (["with opacity\n(collective)"] if opacity else [])
        for start in range(0, len(idx), columns):
            chunk = idx[start : start + columns]
            cols = [[to_pil(self.seeds[i], side) for i in chunk],
                    [to_pil(self.images[i], side) for i in chunk]]
            if opacity:
                cols.append([to_pil(over_white(self.images[i], self.alpha[i]), side) for i in chunk])
            labels = [f"#{start + k + 1} {self.names[i][:18]}\n{float(self.value_before[i]):.2f} -> "
                      f"{float(self.value_after[i]):.2f}" for k, i in enumerate(chunk)]
            blocks.append(labelled_grid(cols, col_labels=labels, row_labels=row_names, font_size=12))
        return stack_with_title(f"{self.target} in {len(idx)} images, sorted by rise (value before -> after)",
                                blocks)

    def save(self, directory: str | os.PathLike, columns: int = 6) -> list[Path]:
        """Write ``latent.md``, ``latent.json`` and ``latent.png`` (the grid, ``columns`` images wide)."""
        doc = {"target": self.target, "config": self.config, "rows": self.rows()}
        return save_analysis(directory, "latent", self.to_markdown(), doc,
                             {"latent.png": lambda: self.grid(columns=columns)})

    def _grid(self) -> Grid:
        """What this looks like in a notebook (see :mod:`accentuate.outputs.grid`): its images with their numbers."""
        from ..outputs.grid import MAX_COLS, Cell, Grid, clip_count, num, overlay, picture

        order = self.order.tolist()
        cm, note = clip_count(len(order), MAX_COLS * 2, "images")
        cols, acc, over, seeds = [], [], [], []
        for r, i in enumerate(order[:cm]):
            cols.append(f"#{r + 1} {self.names[i]}")
            seeds.append(Cell(picture(self.seeds[i])))
            acc.append(Cell(picture(self.images[i]), [f"{num(float(self.value_before[i]))} -> {num(float(self.value_after[i]))}"]))
            over.append(Cell(overlay(self.images[i], self.alpha[i])))
        return Grid(f"Latent feature {self.target} in {len(order)} image(s), sorted by its rise", cols,
                    [("seed", seeds), ("accentuation", acc), ("with opacity (collective)", over)], note,
                    ["rank", "seed", "value_before", "value_after", "gain", "mean_opacity"], self.rows())


def latent_features(
    model: nn.Module,
    seeds: ImageSet,
    target: int | str | Objective,
    *,
    canvas: int | None = None,
    batch: int = 8,
    seed: int | None = 0,
    progress: bool | Callable[[int, int], None] | None = None,
    settings: Settings | None = None,
    **accentuate_kwargs: Any,
) -> Latent:
    """Accentuate one feature in every seed of a set, batched; sort by how much it rose.

    Args:
        model: the model (not modified).
        seeds: a folder of images, a list of paths/PIL images/tensors, or a tensor
            ``(N, 3, H, W)`` in [0, 1].
        target: a neuron, channel or direction (``acc.neuron(...)``, ``acc.channel(...)``,
            ``acc.direction(...)``), a class, or a target string (``"blocks.10:7"``, ``"goldfish"``;
            see :func:`accentuate.parse_target`).
        canvas: side of the square canvas every seed is centre-cropped and resized to
            (default: the model's calibrated canvas).
        batch: seeds per :func:`accentuate.accentuate` call.
        seed: the int seed (as :func:`accentuate.accentuate`'s); batch ``b`` uses ``seed + b``
            (results do not depend on which other seeds share the batch, only on the batch's crops).
        progress: passed to each call (default: a bar where one can be seen).
        settings: the :class:`~accentuate.settings.Settings` every accentuation runs from
            (default: the model's), resolved once; settings among the keywords override it.
        **accentuate_kwargs: other settings (``steps``, ``crops``, ``lam``, ...).

    Returns:
        A :class:`Latent` with ``order`` sorted by gain and collectively normalized ``alpha``.

    Shape:
        ``Latent.images`` is ``(N, 3, S, S)`` with ``S = canvas``.

    Example:
        >>> import accentuate as acc                                         # doctest: +SKIP
        >>> from accentuate.analysis import latent_features                  # doctest: +SKIP
        >>> model = acc.load_model("efficientnet_lite0")                     # doctest: +SKIP
        >>> lat = latent_features(model, "photos/", acc.channel("blocks.10", 7))  # doctest: +SKIP
        >>> lat.grid().save("latent.png")                                    # doctest: +SKIP
    """
    if "targets" in accentuate_kwargs or "seeds" in accentuate_kwargs:
        raise TypeError("latent_features takes one target and one set of seeds")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer; got {batch!r}")
    seed = run_seed(seed, accentuate_kwargs, "latent_features")
    spec = analysis_spec(model, accentuate_kwargs)
    settings = analysis_settings(model, spec, settings, accentuate_kwargs)
    objective = as_objective(target, model, spec, runner=accentuate_kwargs.get("runner"))
    images, names = load_image_set(seeds, "seeds")
    side = square_side(spec, canvas, "latent features")
    square = torch.stack([square_crop(t, side) for t in images])
    outs = []
    for b, start in enumerate(range(0, square.shape[0], batch)):
        outs.append(accentuate(model, square[start : start + batch], objective, settings, canvas=(side, side),
                               seed=seed + b, progress=progress, **accentuate_kwargs))
    res_images = torch.cat([r.images[:, 0] for r in outs])
    masks = torch.cat([r.masks[:, 0] for r in outs])
    before = torch.cat([r.before["value"][:, 0] for r in outs])
    after = torch.cat([r.after["value"][:, 0] for r in outs])
    gain = after - before
    order = torch.argsort(gain, descending=True, stable=True)
    config = outs[0].config.to_dict()
    config.update({"seeds": names, "batch": batch, "batches": len(outs), "canvas": [side, side]})
    failed: dict[str, str] = {}
    for r, first in zip(outs, range(0, len(names), batch)):
        for (i, _), msg in r.failed.items():
            failed[names[first + i]] = msg
    if failed:
        config["failed"] = failed
    return Latent(
        target=repr(objective), names=names, seeds=square, images=res_images, masks=masks,
        alpha=to_alpha(masks, collective=True), value_before=before, value_after=after, gain=gain,
        order=order, config=config,
    )

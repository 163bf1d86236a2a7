"""Pieces shared by the analyses: image sets, layer activations, correlations, figures.

Nothing here is public API; the analyses re-export what users need.
"""

from __future__ import annotations

import io
import json
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..digest import canonical_sha256
from ..errors import ImageError
from ..hooks import ModelRunner
from ..images import SeedLike, image_files, load_image, resize
from ..layout import Layout
from ..outputs.io import atomic_write, output_folder
from ..settings import SPEC_KEYS, Settings
from ..spec import ModelSpec, resolve_spec

if TYPE_CHECKING:
    from ..result import Result

#: A set of images: a folder, one path, a tensor ``(3, H, W)``/``(N, 3, H, W)``, or a list.
ImageSet = str | os.PathLike | torch.Tensor | Sequence[SeedLike]


# -- images ---------------------------------------------------------------------------------
def load_image_set(images: ImageSet, what: str = "images") -> tuple[list[torch.Tensor], list[str]]:
    """Load an image set as a list of ``(3, H, W)`` tensors in [0, 1], with a name for each.

    Args:
        images: a folder (its image files, sorted), one image path, a tensor
            ``(3, H, W)`` or ``(N, 3, H, W)`` in [0, 1], or a list of paths, PIL images
            and tensors.
        what: how error messages call the set.

    Returns:
        ``(tensors, names)``; names are file stems, or ``"{what}[i]"``.
    """
    from ..images import as_tensors  # the same reading rules as seeds

    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.is_dir():
            files = image_files(path)
            return [load_image(f) for f in files], [f.stem for f in files]
        if not path.exists():
            raise ImageError(f"{what}: no such file or folder {str(path)!r}")
        return [load_image(path)], [path.stem]
    if isinstance(images, torch.Tensor):
        items: list[Any] = [images]
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise ImageError(f"{what}: no images given")
    tensors: list[torch.Tensor] = []
    names: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            files = image_files(item)
            tensors += [load_image(f) for f in files]
            names += [f.stem for f in files]
            continue
        got = as_tensors(item, i)
        tensors += got
        if isinstance(item, (str, os.PathLike)):
            names.append(Path(item).stem)
        else:
            names += [f"{what}[{len(names) + k}]" for k in range(len(got))]
    return tensors, names


def square_side(spec: ModelSpec, canvas: Any, what: str, flag: str = "canvas") -> int:
    """The side of the square canvas of a command that crops every photo square (``what``: its
    name in the message): ``canvas`` as an int or a square ``(H, W)``, else the model's canvas.

    Raises:
        UsageError: a canvas that is not square, or smaller than the model input.
    """
    from ..errors import UsageError

    if canvas is None:
        side = int(spec.setting("canvas"))
    elif isinstance(canvas, int):
        side = canvas
    elif len(canvas) == 2 and canvas[0] == canvas[1]:
        side = int(canvas[0])
    else:
        raise UsageError(f"{what} uses a square canvas: give {flag} as one number (the side); got "
                         f"{canvas[0]}x{canvas[1]}")
    if side < max(spec.input_size):
        raise UsageError(f"{flag} {side} is smaller than the model input {spec.input_size}; use >= "
                         f"{max(spec.input_size)}")
    return side


def square_crop(img: torch.Tensor, side: int) -> torch.Tensor:
    """The centred square of ``img`` ``(3, H, W)``, resized to ``side x side`` (antialiased)."""
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize(img[..., top : top + s, left : left + s], (side, side))


def model_view(images: Sequence[torch.Tensor] | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each image resized to the model's input ``size`` (the whole image, as the engine evaluates it).

    Returns:
        ``(N, 3, h, w)``.
    """
    return torch.stack([resize(t.float(), size) for t in images])


# -- activations ----------------------------------------------------------------------------
def layer_activations(
    model: nn.Module,
    images: torch.Tensor,
    layer_names: Sequence[str],
    spec: ModelSpec | None = None,
    batch: int = 16,
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
    return ModelRunner(model, spec or resolve_spec(model)).activations(images, list(layer_names), batch=batch)


def layouts_of(model: nn.Module, spec: ModelSpec, layer_names: Sequence[str]) -> dict[str, Layout]:
    """The layout of each named layer (:data:`accentuate.hooks.OUTPUT` included)."""
    return ModelRunner(model, spec).layouts(layer_names)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every row of ``a`` with every row of ``b``.

    Args:
        a: ``(Na, ...)``; b: ``(Nb, ...)`` with the same trailing size (flattened).

    Returns:
        ``(Na, Nb)``; NaN where a row is constant.
    """
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"cannot correlate vectors of {a.shape[1]} and {b.shape[1]} entries")
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    r = (a @ b.T) / (na[:, None] * nb[None, :])
    r[(na == 0)[:, None].expand_as(r) | (nb == 0)[None, :].expand_as(r)] = math.nan
    return r.float()


@dataclass(frozen=True)
class Interval:
    """A statistic with its percentile bootstrap interval (see :func:`bootstrap`).

    Attributes:
        estimate: the statistic on the data as given, ``(...)``.
        lower, upper: the interval's ends, same shape; NaN where every replicate was NaN.
        level: the interval's coverage (0.95: the 2.5 and 97.5 percentiles).
        replicates: how many resamplings were drawn.
    """

    estimate: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    level: float
    replicates: int

    def __getitem__(self, index: Any) -> Interval:
        """The interval of one entry (or slice) of the statistic."""
        return Interval(self.estimate[index], self.lower[index], self.upper[index], self.level, self.replicates)

    @property
    def width(self) -> torch.Tensor:
        """``upper - lower``."""
        return self.upper - self.lower


def bootstrap(
    statistic: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    sizes: Mapping[str, int],
    replicates: int = 2000,
    level: float = 0.95,
    generator: int = 0,
    chunk: int = 250,
) -> Interval:
    """Percentile bootstrap over resampling units (photos, seeds), not over their pairs.

    Each replicate draws, for every unit, ``sizes[unit]`` indices with replacement;
    ``statistic`` maps such draws to one value per replicate. Units are drawn
    independently of each other, with one fixed generator (the same ``generator`` gives
    the same interval).

    Args:
        statistic: ``{unit: (R, sizes[unit]) long indices} -> (R, ...)``, vectorized over
            the R replicates; called once with the identity (``R = 1``) for the estimate,
            then on chunks of replicates. NaN marks a replicate without a value (for
            example a pair mean when every drawn photo is the same one); it is left out of
            the percentiles of that entry.
        sizes: the number of items of each unit (each at least 1).
        replicates: how many resamplings.
        level: the coverage, in (0, 1).
        generator: the int seed of the draws.
        chunk: replicates per call of ``statistic`` (bounds its memory).

    Returns:
        An :class:`Interval` of the statistic's shape ``(...)``.

    Example:
        >>> x = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.6])
        >>> ci = bootstrap(lambda i: x[i["photo"]].mean(dim=1), {"photo": 5}, 500)
        >>> bool(ci.lower <= ci.estimate <= ci.upper)
        True
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if replicates < 2:
        raise ValueError(f"replicates must be at least 2; got {replicates}")
    bad = {u: s for u, s in sizes.items() if int(s) < 1}
    if bad:
        raise ValueError(f"every resampling unit needs at least one item; got {bad}")
    units_ = sorted(sizes)  # a fixed draw order, whatever order the mapping has
    estimate = statistic({u: torch.arange(int(sizes[u]))[None] for u in units_})[0]
    g = torch.Generator().manual_seed(int(generator))
    parts = []
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        draws = {u: torch.randint(0, int(sizes[u]), (r, int(sizes[u])), generator=g) for u in units_}
        parts.append(statistic(draws).double())
    values = torch.cat(parts)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    ends = torch.nanquantile(values, q, dim=0)
    return Interval(estimate.double(), ends[0], ends[1], float(level), int(replicates))


def pair_means(r: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Mean correlation over the drawn pairs, per replicate (for :func:`bootstrap`).

    Args:
        r: ``(L, A, B)`` the correlation of each of A images with each of B reference
            images at L layers; NaN entries (a constant vector, or an image with itself
            on the diagonal of a within-set matrix) are left out of the means.
        rows: ``(R, a)`` drawn row indices; cols: ``(R, b)`` drawn column indices. For
            pairs within one set (``r`` square with a NaN diagonal), pass the same draw
            as rows and cols: a photo drawn twice is then never paired with itself.

    Returns:
        ``(R, L)``: each replicate's mean over its ``a x b`` pairs (NaN where none has a value).
    """
    sub = r[:, rows[:, :, None], cols[:, None, :]]  # (L, R, a, b)
    return torch.nanmean(sub.double(), dim=(-2, -1)).T


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two tensors of the same size (ties by average rank)."""
    return float(pearson(_ranks(a.flatten())[None], _ranks(b.flatten())[None])[0, 0])


def _ranks(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    order = torch.argsort(x)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(x.numel(), dtype=torch.float64, device=x.device)
    # Average the ranks of ties (masks have many exact zeros).
    values, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    if values.numel() < x.numel():
        sums = torch.zeros_like(values).index_add_(0, inverse, ranks)
        ranks = (sums / counts)[inverse]
    return ranks


# -- model structure ------------------------------------------------------------------------
def units(model: nn.Module, spec: ModelSpec) -> list[str]:
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
    order = {row.name: i for i, row in enumerate(ModelRunner(model, spec).trace())}
    ran = [n for n in names if n in order]
    # A module's hook fires when it completes; sort by the completion of its first run.
    return sorted(ran, key=lambda n: order[n])


def name_seed(base: int, name: str) -> int:
    """A reproducible 63-bit seed from an int and a name."""
    return (int(base) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


# -- tables ---------------------------------------------------------------------------------
def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                   digits: int = 3) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (floats rounded to ``digits``)."""
    if not rows:
        return ""
    cols = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            if math.isnan(v):
                return "nan"
            return f"{v:.{digits}g}" if (abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3)) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


# -- figures --------------------------------------------------------------------------------
def require_matplotlib() -> Any:
    """Import matplotlib's object-oriented ``Figure`` (no pyplot, no backend switch)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plots need matplotlib; install it with `pip install accentuate[plot]`"
        ) from None
    return Figure


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    output_folder(path.parent)
    atomic_write(path, buf.getvalue())
    return path


def save_analysis(directory: str | os.PathLike, kind: str, markdown: str, doc: dict[str, Any],
                  pictures: dict[str, Callable[[], Any]], plot: Callable[[], Any] | None = None) -> list[Path]:
    """Write an analysis's files into ``directory``: ``KIND.md`` (``markdown``), ``KIND.json``
    (``doc``), each picture (``{file name: function making the PIL image}``) and, when ``plot`` is
    given, ``KIND.png`` (its matplotlib figure); each file atomically. Returns the paths written."""
    import json

    out = output_folder(directory)
    atomic_write(out / f"{kind}.md", (markdown.rstrip("\n") + "\n").encode())
    atomic_write(out / f"{kind}.json", json.dumps(doc, indent=2, default=str).encode())
    written = [out / f"{kind}.md", out / f"{kind}.json"]
    from ..outputs.figures import save_image

    written += [save_image(make(), out / name) for name, make in pictures.items()]
    if plot is not None:
        written.append(save_figure(plot(), out / f"{kind}.png"))
    return written


def spec_of(model: nn.Module, kwargs: dict[str, Any]) -> ModelSpec:
    """The model's spec with the spec overrides found among an analysis's accentuate kwargs (the
    spec of the ``runner`` among them when there are none)."""
    over = {k: kwargs[k] for k in SPEC_KEYS if k in kwargs}
    runner = kwargs.get("runner")
    if runner is not None and not over:
        return ModelRunner.reuse(runner, model, runner.spec).spec
    return resolve_spec(model, **over)


#: Keywords of :func:`accentuate.accentuate` that are not settings (``runner``: the caller's
#: :class:`~accentuate.hooks.ModelRunner`, reused by every pass of the analysis).
RUN_KEYS = ("generator", "snapshots", "progress", "runner")


def analysis_settings(model: nn.Module, spec: ModelSpec, settings: Settings | None,
                      kwargs: dict[str, Any], seeded: bool = True) -> Settings:
    """The settings of an analysis, resolved once: ``settings`` (or the model's defaults) with the
    settings found among ``kwargs`` applied (they are taken out of ``kwargs``; what stays are the
    model-spec keys and :data:`RUN_KEYS`, for :func:`accentuate.accentuate`). Every
    accentuation of the analysis then runs from this one value.

    Raises:
        TypeError: an unknown keyword (with the closest setting names).
    """
    own = {k: kwargs.pop(k) for k in list(kwargs) if k not in RUN_KEYS and k not in SPEC_KEYS}
    return Settings.resolve(model, spec, settings, seeded=seeded, runner=kwargs.get("runner"), **own)


# -- engine runs kept in a work folder -------------------------------------------------------
def cached_run(work: Path | None, name: str, key: dict[str, Any], make: Callable[[], Result],
               names: Sequence[str] | None) -> tuple[Result, bool]:
    """``make()``, or the result saved under ``work/name`` with the same ``key`` (an analysis's engine
    runs, read back by a later call instead of optimized again).

    Returns:
        ``(result, read_back)``.

    Raises:
        ValueError: ``work/name`` holds a run made otherwise (it is never overwritten).
    """
    if work is None:
        return make(), False
    folder = work / name
    key_file = folder / "key.json"
    digest = canonical_sha256(key)
    if key_file.exists():
        saved = json.loads(key_file.read_text())
        if saved.get("digest") != digest:
            raise ValueError(f"{folder} holds a {name} run made with other settings, targets or seeds; "
                             "remove it or give another work folder")
        from ..result import Result

        return Result.load(folder), True
    res = make()
    if res.interrupted:
        raise KeyboardInterrupt(f"the {name} run was interrupted; nothing was saved for it")
    res.save(folder, names=list(names) if names is not None else None)
    atomic_write(key_file, json.dumps({"digest": digest, "key": key}, indent=2, default=str).encode())
    return res, False

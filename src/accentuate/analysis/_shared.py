"""Pieces shared by the analyses: image sets, layer activations, correlations, figures.

Nothing here is public API; the analyses re-export what users need.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from ..engine import model_state
from ..errors import ImageError
from ..hooks import OUTPUT, capture, layers as list_layers
from ..images import SeedLike, image_files, load_image, resize
from ..outputs.io import atomic_write, output_folder
from ..spec import ModelSpec, resolve_spec

#: A set of images: a folder, one path, a tensor ``(3, H, W)``/``(N, 3, H, W)``, or a list.
ImageSet = Union[str, os.PathLike, torch.Tensor, Sequence[SeedLike]]


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
    from ..images import _as_tensors  # the same reading rules as seeds

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
        got = _as_tensors(item, i)
        tensors += got
        if isinstance(item, (str, os.PathLike)):
            names.append(Path(item).stem)
        else:
            names += [f"{what}[{len(names) + k}]" for k in range(len(got))]
    return tensors, names


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
def pooled(t: torch.Tensor) -> torch.Tensor:
    """Spatial mean: ``(N, C, H, W)`` to ``(N, C)``, tokens ``(N, T, D)`` to ``(N, D)``, else flat."""
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t.mean(dim=1)
    return t.reshape(t.shape[0], -1)


@torch.no_grad()
def layer_activations(
    model: nn.Module,
    images: torch.Tensor,
    layer_names: Sequence[str],
    spec: ModelSpec | None = None,
    batch_size: int = 16,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for ``images``, in batches, without autograd.

    Args:
        model: any model (left as found).
        images: ``(N, 3, h, w)`` in [0, 1] at the model's input size.
        layer_names: dotted layer names; :data:`accentuate.hooks.OUTPUT` is the logits.
        spec: the model's spec (default: :func:`accentuate.spec.resolve_spec`).
        batch_size: images per forward pass.
        reduce: applied to each captured batch before it is kept (to save memory).

    Returns:
        ``{layer: (N, ...)}`` on the CPU, float32.
    """
    spec = spec or resolve_spec(model)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    names = [n for n in layer_names if n != OUTPUT]
    out: dict[str, list[torch.Tensor]] = {n: [] for n in layer_names}
    keep = reduce or (lambda t: t)
    with model_state(model):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device, torch.float32)
            with capture(model, names) as cap:
                logits = spec.logits(model(spec.preprocess(x)))
                for n in names:
                    out[n].append(keep(cap[n].float()).cpu())
            if OUTPUT in out:
                out[OUTPUT].append(keep(logits.float()).cpu())
    return {n: torch.cat(v) for n, v in out.items()}


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


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two tensors of the same size (ties by average rank)."""
    return float(pearson(_ranks(a.flatten())[None], _ranks(b.flatten())[None])[0, 0])


def _ranks(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    order = torch.argsort(x)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(x.numel(), dtype=torch.float64)
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
    order = {n: i for i, (n, _) in enumerate(list_layers(model, spec.input_size))}
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


def font(size: int = 14) -> Any:
    """A TrueType font of ``size`` pixels if Pillow has one, else its bitmap default."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def to_pil(t: torch.Tensor, side: int | None = None) -> Any:
    """``(3, H, W)`` in [0, 1] to a PIL image, its long side scaled to ``side``."""
    from ..images import tensor_to_pil

    img = tensor_to_pil(t)
    if side is not None:
        s = side / max(img.size)
        img = img.resize((max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s))), 3)
    return img


def over_white(image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Composite ``(3, H, W)`` with alpha ``(H, W)`` onto white."""
    return image * alpha[None] + (1 - alpha[None])


def labelled_grid(
    cells: Sequence[Sequence[Any]],
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    pad: int = 6,
    font_size: int = 13,
) -> Any:
    """Lay PIL images out in a grid with labels above the columns and left of the rows.

    Args:
        cells: ``cells[r][c]`` a PIL image (or ``None`` for an empty cell).
        col_labels: one label per column (may contain newlines).
        row_labels: one label per row.
        title: a line above everything.

    Returns:
        The grid as a PIL RGB image on white.
    """
    from PIL import Image, ImageDraw

    f = font(font_size)
    ft = font(font_size + 3)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str, fnt: Any) -> tuple[int, int]:
        box = probe.multiline_textbbox((0, 0), text, font=fnt, spacing=2)
        return box[2] - box[0], box[3] - box[1]

    nrows = len(cells)
    ncols = max(len(r) for r in cells)
    col_w = [max((cells[r][c].size[0] for r in range(nrows) if c < len(cells[r]) and cells[r][c] is not None),
                 default=0) for c in range(ncols)]
    row_h = [max((im.size[1] for im in cells[r] if im is not None), default=0) for r in range(nrows)]
    left = max((text_size(t, f)[0] for t in row_labels), default=0) + pad if row_labels else 0
    top_label = max((text_size(t, f)[1] for t in col_labels), default=0) + pad if col_labels else 0
    title_h = text_size(title, ft)[1] + 2 * pad if title else 0
    width = max(pad + left + sum(col_w) + pad * ncols, (text_size(title, ft)[0] + 2 * pad) if title else 0)
    height = pad + title_h + top_label + sum(row_h) + pad * nrows
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((pad, pad), title, fill="black", font=ft)
    y0 = pad + title_h
    if col_labels:
        x = pad + left
        for c, label in enumerate(col_labels):
            tw, _ = text_size(label, f)
            draw.multiline_text((x + max(0, (col_w[c] - tw) // 2), y0), label, fill="black", font=f,
                                spacing=2, align="center")
            x += col_w[c] + pad
        y0 += top_label
    y = y0
    for r in range(nrows):
        if row_labels:
            _, th = text_size(row_labels[r], f)
            draw.multiline_text((pad, y + max(0, (row_h[r] - th) // 2)), row_labels[r], fill="black", font=f,
                                spacing=2)
        x = pad + left
        for c in range(ncols):
            im = cells[r][c] if c < len(cells[r]) else None
            if im is not None:
                grid.paste(im.convert("RGB"), (x, y))
            x += col_w[c] + pad
        y += row_h[r] + pad
    return grid


def save_image(img: Any, path: str | os.PathLike, max_bytes: int = 300_000) -> Path:
    """Save a PIL image as PNG of at most about ``max_bytes``.

    Too large as it is, the image is reduced to an adaptive palette of 256, then 128
    colours (dithered); still too large, it is also scaled down in steps of 15 % (at
    most 8 times).
    """
    from PIL import Image

    def encode(im: Any) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def palette(im: Any, colors: int) -> Any:
        return im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                                          dither=Image.Dither.FLOYDSTEINBERG)

    data = encode(img)
    for colors in (256, 128):
        if len(data) > max_bytes:
            data = encode(palette(img, colors))
    scaled = img
    for _ in range(8):
        if len(data) <= max_bytes:
            break
        scaled = scaled.resize((max(1, round(scaled.size[0] * 0.85)), max(1, round(scaled.size[1] * 0.85))),
                               Image.Resampling.LANCZOS)
        data = encode(palette(scaled, 128))
    path = Path(path)
    output_folder(path.parent)
    atomic_write(path, data)
    return path


_SPEC_KEYS = ("input_size", "normalize", "labels", "output")


def spec_of(model: nn.Module, kwargs: dict[str, Any]) -> ModelSpec:
    """The model's spec with the spec overrides found among an analysis's accentuate kwargs."""
    return resolve_spec(model, **{k: kwargs[k] for k in _SPEC_KEYS if k in kwargs})


def stack_with_title(title: str, blocks: Sequence[Any]) -> Any:
    """PIL images stacked top to bottom under a title line, on white."""
    from PIL import Image

    head = labelled_grid([[Image.new("RGB", (1, 1), "white")]], title=title)
    parts = [head, *blocks]
    out = Image.new("RGB", (max(b.size[0] for b in parts), sum(b.size[1] for b in parts)), "white")
    y = 0
    for b in parts:
        out.paste(b, (0, y))
        y += b.size[1]
    return out

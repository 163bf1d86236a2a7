"""Figures drawn with PIL alone (no matplotlib): pair figures, contact sheets, panels.

All functions take tensors in [0, 1] (``(3, H, W)`` images, ``(H, W)`` alphas) or
PIL images, and return PIL images; :func:`png_bytes` encodes one for an atomic write.

- :func:`pair_figure`: seed | accentuation | accentuation with its opacity |
  opacity heat map, with a title and caption lines;
- :func:`contact_sheet`: rows are seeds, columns are targets;
- :func:`panel`: one seed followed by several accentuations (``accentuate explain``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_write, output_folder

__all__ = [
    "BACKGROUND",
    "colorbar",
    "composite",
    "contact_sheet",
    "fit",
    "font",
    "heatmap",
    "labelled_grid",
    "over_white",
    "panel",
    "save_image",
    "stack_with_title",
    "pair_figure",
    "png_bytes",
    "to_pil",
]

#: Colour shown where the opacity is 0 in "accentuation with opacity" views.
BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_MUTED = (95, 95, 95)
_PAPER = (255, 255, 255)
_GAP = 12

# A few stops of the 'inferno' colormap (perceptually uniform, dark = 0, light = 1).
_INFERNO = [
    (0.00, (0, 0, 4)), (0.13, (31, 12, 72)), (0.25, (85, 15, 109)), (0.38, (136, 34, 106)),
    (0.50, (186, 54, 85)), (0.63, (227, 89, 51)), (0.75, (249, 140, 10)), (0.88, (249, 201, 50)),
    (1.00, (252, 255, 164)),
]


@lru_cache(maxsize=1)
def _lut() -> np.ndarray:
    xs = np.array([s for s, _ in _INFERNO])
    cs = np.array([c for _, c in _INFERNO], dtype=np.float64)
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, xs, cs[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


@lru_cache(maxsize=16)
def font(size: int = 16) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled scalable font at ``size`` pixels (the bitmap default on old Pillow)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def to_pil(x: torch.Tensor | Image.Image, side: int | None = None) -> Image.Image:
    """``(3, H, W)`` in [0, 1] (or uint8) to a PIL RGB image (PIL images pass through), its
    long side scaled to ``side`` when given."""
    if isinstance(x, Image.Image):
        img = x.convert("RGB")
    else:
        t = x.detach().cpu()
        if t.dtype != torch.uint8:
            t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
        img = Image.fromarray(t.permute(1, 2, 0).numpy(), "RGB")
    if side is not None:
        s = side / max(img.size)
        img = img.resize((max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s))),
                         Image.Resampling.BICUBIC)
    return img


def heatmap(alpha: torch.Tensor) -> Image.Image:
    """An ``(H, W)`` map in [0, 1] in the inferno colormap (dark = 0, pale yellow = 1)."""
    a = (alpha.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(_lut()[a], "RGB")


def composite(
    image: torch.Tensor, alpha: torch.Tensor, background: Sequence[int] = BACKGROUND
) -> Image.Image:
    """The accentuation shown through its opacity: ``alpha * image + (1 - alpha) * background``."""
    bg = torch.tensor(background, dtype=torch.float32).view(3, 1, 1) / 255
    a = alpha.detach().cpu().float().clamp(0, 1)[None]
    return to_pil(a * image.detach().cpu().float() + (1 - a) * bg)


def png_bytes(img: Image.Image) -> bytes:
    """The PNG encoding of ``img``."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    """``img`` scaled (Lanczos) to fit inside ``box`` = ``(width, height)``, aspect kept."""
    w, h = img.size
    s = min(box[0] / w, box[1] / h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


def _text_width(draw: ImageDraw.ImageDraw, text: str, f) -> float:
    return draw.textlength(text, font=f)


def _ellipsize(draw: ImageDraw.ImageDraw, text: str, f, width: float) -> str:
    if _text_width(draw, text, f) <= width:
        return text
    while text and _text_width(draw, text + "...", f) > width:
        text = text[:-1]
    return text + "..."


def _wrap(draw: ImageDraw.ImageDraw, text: str, f, width: float, max_lines: int = 2) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if _text_width(draw, trial, f) <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = w
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return [_ellipsize(draw, line, f, width) for line in lines]


def _line_height(f) -> int:
    box = f.getbbox("Ag")
    return int(box[3] - box[1]) + 6


def colorbar(width: int, height: int = 12, size: int = 13) -> Image.Image:
    """A horizontal inferno colour bar labelled ``0`` ... ``opacity`` ... ``1``."""
    f = font(size)
    lh = _line_height(f)
    img = Image.new("RGB", (width, height + lh + 2), _PAPER)
    ramp = _lut()[np.linspace(0, 255, max(2, width)).round().astype(int)][None].repeat(height, axis=0)
    img.paste(Image.fromarray(ramp, "RGB"), (0, 0))
    d = ImageDraw.Draw(img)
    d.text((0, height + 2), "0", fill=_MUTED, font=f)
    d.text((width, height + 2), "1", fill=_MUTED, font=f, anchor="ra")
    d.text((width // 2, height + 2), "opacity", fill=_MUTED, font=f, anchor="ma")
    return img


def pair_figure(
    seed: torch.Tensor | None,
    image: torch.Tensor,
    alpha: torch.Tensor,
    title: str,
    lines: Sequence[str] = (),
    panel_side: int = 320,
) -> Image.Image:
    """Seed | accentuation | accentuation with opacity | opacity heat map.

    Args:
        seed: ``(3, H, W)`` the seed on the canvas, or ``None`` (noise-seeded).
        image: ``(3, H, W)`` the accentuation.
        alpha: ``(H, W)`` its opacity in [0, 1].
        title: the first line (e.g. the target and the seed's name).
        lines: caption lines under the panels (values and ranks before and after).
        panel_side: long side of each panel in pixels.

    Returns:
        An RGB image about ``4 * panel_side`` wide.
    """
    views = [
        ("seed", to_pil(seed) if seed is not None else None),
        ("accentuation", to_pil(image)),
        ("accentuation x opacity", composite(image, alpha)),
        ("opacity: where the target's gradient went", heatmap(alpha)),
    ]
    h, w = image.shape[-2:]
    s = panel_side / max(h, w)
    pw, ph = max(1, round(w * s)), max(1, round(h * s))
    ft, fh, fc = font(20), font(15), font(16)
    lt, lh, lc = _line_height(ft), _line_height(fh), _line_height(fc)
    bar = colorbar(pw)
    width = 4 * pw + 5 * _GAP
    height = _GAP + lt + _GAP // 2 + lh + ph + 4 + bar.size[1] + _GAP // 2 + lc * len(lines) + _GAP
    fig = Image.new("RGB", (width, height), _PAPER)
    d = ImageDraw.Draw(fig)
    d.text((_GAP, _GAP), _ellipsize(d, title, ft, width - 2 * _GAP), fill=_INK, font=ft)
    y0 = _GAP + lt + _GAP // 2
    for k, (name, view) in enumerate(views):
        x = _GAP + k * (pw + _GAP)
        d.text((x, y0), _ellipsize(d, name, fh, pw), fill=_MUTED, font=fh)
        if view is None:
            d.rectangle((x, y0 + lh, x + pw - 1, y0 + lh + ph - 1), outline=(200, 200, 200))
            d.text((x + pw // 2, y0 + lh + ph // 2), "(noise start)", fill=_MUTED, font=fh, anchor="mm")
        else:
            fig.paste(view.resize((pw, ph), Image.Resampling.LANCZOS), (x, y0 + lh))
        if k == 2:  # the white background of the composite needs a frame
            d.rectangle((x - 1, y0 + lh - 1, x + pw, y0 + lh + ph), outline=(200, 200, 200))
    fig.paste(bar, (_GAP + 3 * (pw + _GAP), y0 + lh + ph + 4))
    y = y0 + lh + ph + 4 + bar.size[1] + _GAP // 2
    for line in lines:
        d.text((_GAP, y), _ellipsize(d, line, fc, width - 2 * _GAP), fill=_INK, font=fc)
        y += lc
    return fig


def contact_sheet(
    seeds: Sequence[tuple[str, Image.Image | None]],
    targets: Sequence[str],
    cells: dict[tuple[int, int], tuple[Image.Image, str]],
    cell: int = 224,
    title: str = "",
) -> Image.Image:
    """A grid: one row per seed (its image first), one column per target.

    Args:
        seeds: ``(name, seed image or None)`` per row.
        targets: column headings.
        cells: ``{(row, column): (image, caption)}``; missing cells are drawn as an
            empty frame marked "not run".
        cell: the width (and largest height) each image is fitted into, in pixels.
        title: a line above the grid.
    """
    fh, fc, ft = font(15), font(14), font(18)
    lh, lc, lt = _line_height(fh), _line_height(fc), _line_height(ft)
    ncol = len(targets) + 1
    rows: list[list[tuple[Image.Image | None, str]]] = []
    heights: list[int] = []
    for r, (name, seed) in enumerate(seeds):
        items: list[tuple[Image.Image | None, str]] = [(fit(seed, (cell, cell)) if seed else None, name)]
        for c in range(len(targets)):
            img, cap = cells.get((r, c), (None, "not run"))
            items.append((fit(img, (cell, cell)) if img is not None else None, cap))
        known = [im.size[1] for im, _ in items if im is not None]
        heights.append(max(known) if known else cell // 2)
        rows.append(items)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    head_lines = [_wrap(probe, name, fh, cell, max_lines=2) for name in ["seed", *targets]]
    head = max(len(h) for h in head_lines) * lh + 4
    width = _GAP + ncol * (cell + _GAP)
    title_lines = _wrap(probe, title, ft, width - 2 * _GAP, max_lines=3) if title else []
    top = _GAP + (len(title_lines) * lt + _GAP // 2 if title else 0)
    height = top + head + sum(h + lc + _GAP for h in heights) + _GAP // 2
    sheet = Image.new("RGB", (width, height), _PAPER)
    d = ImageDraw.Draw(sheet)
    for k, line in enumerate(title_lines):
        d.text((_GAP, _GAP + k * lt), line, fill=_INK, font=ft)
    for c, lines in enumerate(head_lines):
        x = _GAP + c * (cell + _GAP)
        for k, line in enumerate(lines):
            yy = top + head - 4 - (len(lines) - k) * lh
            d.text((x + cell // 2, yy), line, fill=_INK if c else _MUTED, font=fh, anchor="ma")
    y = top + head
    for items, rh in zip(rows, heights):
        for c, (img, caption) in enumerate(items):
            x = _GAP + c * (cell + _GAP)
            if img is None:
                d.rectangle((x, y, x + cell - 1, y + rh - 1), outline=(210, 210, 210))
                d.text((x + cell // 2, y + rh // 2), "(no seed)" if c == 0 else caption, fill=_MUTED,
                       font=fc, anchor="mm")
                if c:
                    continue
            else:
                sheet.paste(img, (x + (cell - img.size[0]) // 2, y + (rh - img.size[1]) // 2))
            if caption:
                d.text((x + cell // 2, y + rh + 3), _ellipsize(d, caption, fc, cell),
                       fill=_INK if c == 0 else _MUTED, font=fc, anchor="ma")
        y += rh + lc + _GAP
    return sheet


def panel(
    seed: tuple[Image.Image, str],
    items: Sequence[tuple[Image.Image, str, str]],
    title: str = "",
    cell: int = 256,
    per_row: int = 5,
) -> Image.Image:
    """One seed then several accentuations, each with a heading and a caption.

    Args:
        seed: ``(image, caption)`` for the first cell.
        items: ``(image, heading, caption)`` per accentuation.
        title: a line above.
        cell: the width (and largest height) of each image.
        per_row: cells per row before wrapping (the seed counts as one).
    """
    fh, fc, ft = font(16), font(14), font(18)
    lh, lc, lt = _line_height(fh), _line_height(fc), _line_height(ft)
    cells = [(fit(seed[0], (cell, cell)), "seed", seed[1])]
    cells += [(fit(img, (cell, cell)), heading, caption) for img, heading, caption in items]
    ncol = min(per_row, len(cells))
    nrow = -(-len(cells) // ncol)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    heads = [_wrap(probe, h, fh, cell, max_lines=2) for _, h, _ in cells]
    caps = [_wrap(probe, c, fc, cell, max_lines=2) for _, _, c in cells]
    head_h = max(len(h) for h in heads) * lh
    cap_h = max(len(c) for c in caps) * lc
    img_h = max(im.size[1] for im, _, _ in cells)
    row_h = head_h + img_h + 4 + cap_h + _GAP
    top = _GAP + (lt + _GAP // 2 if title else 0)
    width = _GAP + ncol * (cell + _GAP)
    probe_w = int(_text_width(probe, title, ft)) + 2 * _GAP if title else 0
    fig = Image.new("RGB", (max(width, min(probe_w, 2 * width)), top + nrow * row_h + _GAP // 2), _PAPER)
    d = ImageDraw.Draw(fig)
    if title:
        d.text((_GAP, _GAP), _ellipsize(d, title, ft, fig.size[0] - 2 * _GAP), fill=_INK, font=ft)
    for k, (img, _, _) in enumerate(cells):
        r, c = divmod(k, ncol)
        x, y = _GAP + c * (cell + _GAP), top + r * row_h
        for i, line in enumerate(heads[k]):
            d.text((x + cell // 2, y + head_h - (len(heads[k]) - i) * lh), line,
                   fill=_INK if k else _MUTED, font=fh, anchor="ma")
        ox, oy = x + (cell - img.size[0]) // 2, y + head_h + (img_h - img.size[1]) // 2
        fig.paste(img, (ox, oy))
        if k:  # a frame: the composites fade into the white paper
            d.rectangle((ox - 1, oy - 1, ox + img.size[0], oy + img.size[1]), outline=(200, 200, 200))
        for i, line in enumerate(caps[k]):
            d.text((x + cell // 2, y + head_h + img_h + 4 + i * lc), line, fill=_MUTED, font=fc, anchor="ma")
    return fig


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
    f = font(font_size)
    ft = font(font_size + 3)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str, fnt: Any) -> tuple[int, int]:
        box = probe.multiline_textbbox((0, 0), text, font=fnt, spacing=2)
        return int(box[2] - box[0]), int(box[3] - box[1])

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


def stack_with_title(title: str, blocks: Sequence[Any]) -> Any:
    """PIL images stacked top to bottom under a title line, on white."""
    head = labelled_grid([[Image.new("RGB", (1, 1), "white")]], title=title)
    parts = [head, *blocks]
    out = Image.new("RGB", (max(b.size[0] for b in parts), sum(b.size[1] for b in parts)), "white")
    y = 0
    for b in parts:
        out.paste(b, (0, y))
        y += b.size[1]
    return out

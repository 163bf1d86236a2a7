"""A result as a grid of labelled pictures, and its rendering as HTML or PNG.

A value type says what it looks like (:class:`Grid`: rows of :class:`Cell` images with
their lines, a title, a table of its numbers, plots) through its own ``_grid()``; this
module renders any :class:`Grid` and knows no result class. It imports nothing of the
package above :mod:`accentuate.errors` and the drawing helpers of
:mod:`accentuate.outputs.figures`, so every value type may use it.

The HTML is rendered by Jinja2 (``pip install "accentuate[report]"``) from the templates
beside this module (``templates/notebook.html.j2`` and the macros it shares with the report
page), with the images inline as data URIs; :func:`environment` is also the report page's
Jinja2 environment, with the page's own folder of templates added. The PNG needs only Pillow.
"""

from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import torch
from PIL import Image, ImageDraw

from ..errors import AccentuateError
from .figures import composite, fit, font, labelled_grid, to_pil

if TYPE_CHECKING:
    from .svg import Plot

__all__ = [
    "INSTALL_HINT", "MAX_COLS", "MAX_ROWS", "MIN_SIDE", "SIDE", "Cell", "Grid", "ReportUnavailable", "clip_count",
    "environment", "file_url", "fmt_num", "html", "num", "overlay", "picture", "png",
]

#: Long side of each image in a notebook grid, in pixels.
SIDE = 160
#: Images smaller than this (long side) are enlarged to it.
MIN_SIDE = 96
#: At most this many rows and columns of images are shown (the rest is counted in a note).
MAX_ROWS, MAX_COLS = 8, 10

INSTALL_HINT = 'pip install "accentuate[report]"'
#: The Jinja2 templates of the notebook grid, and the macros the report page shares.
TEMPLATES = Path(__file__).resolve().parent / "templates"


class ReportUnavailable(AccentuateError, ImportError):
    """Jinja2, which renders the report, is not installed."""


@dataclass
class Cell:
    """One image of a grid and the lines under it."""

    image: Image.Image | None
    lines: list[str] = field(default_factory=list)


@dataclass
class Grid:
    """What a result looks like: rows of labelled cells, plus tables and plots."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    note: str = ""
    table_columns: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)


# -- helpers for the value types' grids ---------------------------------------------------------
def fmt_num(v: Any, digits: int = 3) -> str:
    """A number for a table cell: ``3.14``, ``0.00123``, ``1.2e+05``; ``""`` for ``None``.

    Example:
        >>> fmt_num(3.14159), fmt_num(None), fmt_num(12), fmt_num(float("nan"))
        ('3.14', '', '12', 'nan')
    """
    if v is None or isinstance(v, bool):
        return "" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def num(v: Any) -> str:
    """:func:`fmt_num` of a number or a one-element tensor."""
    return fmt_num(float(v) if isinstance(v, torch.Tensor) else v)


def clip_count(n: int, limit: int, what: str) -> tuple[int, str]:
    """``(shown, note)``: at most ``limit`` of ``n`` things, and the note saying so when cut.

    Example:
        >>> clip_count(3, 8, "seeds"), clip_count(12, 8, "seeds")
        ((3, ''), (8, 'showing the first 8 of 12 seeds'))
    """
    return (n, "") if n <= limit else (limit, f"showing the first {limit} of {n} {what}")


def _small(img: Image.Image, side: int = SIDE) -> Image.Image:
    """``img`` with its long side at most ``side``; a tiny image is enlarged (pixels kept
    sharp) to :data:`MIN_SIDE` so it can be seen."""
    if max(img.size) < MIN_SIDE:
        k = -(-MIN_SIDE // max(img.size))
        return img.resize((img.size[0] * k, img.size[1] * k), Image.Resampling.NEAREST)
    return img if max(img.size) <= side else fit(img, (side, side))


def picture(t: torch.Tensor, side: int = SIDE) -> Image.Image:
    """A ``(3, H, W)`` image in [0, 1] as a grid picture (long side at most ``side``)."""
    return _small(to_pil(t), side)


def overlay(image: torch.Tensor, alpha: torch.Tensor, side: int = SIDE) -> Image.Image:
    """``image`` shown through its opacity ``alpha`` over white, as a grid picture."""
    return _small(composite(image, alpha), side)


# -- rendering ----------------------------------------------------------------------------------
def file_url(name: str) -> str:
    """A relative URL for a file name in the folder (every character that could end or
    change the URL, such as ``:``, ``#``, ``?`` or a quote, percent-encoded).

    Example:
        >>> file_url("javascript:alert(1)"), file_url("a b/c#d.png")
        ('javascript%3Aalert%281%29', 'a%20b/c%23d.png')
    """
    return quote(str(name).replace(os.sep, "/"), safe="/")


def environment(*folders: str | os.PathLike) -> Any:
    """The Jinja2 environment of the notebook grid's templates, and of ``folders`` first (the report
    page adds its own); autoescaped, with the filters ``num``, ``url`` and ``pct``.

    Raises:
        ReportUnavailable: Jinja2 is not installed.
    """
    try:
        import jinja2
    except ImportError:
        raise ReportUnavailable(f"report.html needs Jinja2, which is not installed; {INSTALL_HINT}") from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*map(str, folders), str(TEMPLATES)]),
        autoescape=jinja2.select_autoescape(["html", "j2", "svg"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["url"] = file_url
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * float(v):.1f} %"
    return env


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def html(g: Grid) -> str | None:
    """HTML for the grid ``g`` (images inline as data URIs), or ``None`` without Jinja2."""
    try:
        env = environment()
    except ReportUnavailable:
        return None
    rows = [(label, [{"src": _data_uri(c.image) if c.image is not None else None, "lines": c.lines} for c in cells])
            for label, cells in g.rows]
    return env.get_template("notebook.html.j2").render(g=g, rows=rows, labelled=any(r for r, _ in g.rows))


def _captioned(cell: Cell, width: int) -> Image.Image:
    f = font(12)
    img = cell.image
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max([width] + [int(probe.textlength(line, font=f)) + 4 for line in cell.lines])
    h = (img.size[1] if img is not None else 0) + 4 + 15 * len(cell.lines)
    out = Image.new("RGB", (width, max(h, 1)), "white")
    if img is not None:
        out.paste(img, ((width - img.size[0]) // 2, 0))
    draw = ImageDraw.Draw(out)
    y = (img.size[1] if img is not None else 0) + 3
    for line in cell.lines:
        draw.text((2, y), line, fill=(30, 30, 30), font=f)
        y += 15
    return out


def png(g: Grid) -> bytes:
    """One PNG of the grid ``g`` with its labels (Pillow only)."""
    width = max((c.image.size[0] for _, cells in g.rows for c in cells if c.image is not None), default=SIDE)
    cells = [[_captioned(c, width) for c in row] for _, row in g.rows]
    grid = labelled_grid(cells, col_labels=[c[:28] for c in g.columns] or None,
                         row_labels=[r for r, _ in g.rows] if any(r for r, _ in g.rows) else None,
                         title=g.title + (f" ({g.note})" if g.note else ""), font_size=12)
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=True)
    return buf.getvalue()

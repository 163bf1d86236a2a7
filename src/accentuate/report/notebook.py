"""Inline display in Jupyter, JupyterLab and VS Code: results as labelled grids.

:func:`html` and :func:`png` turn a :class:`~accentuate.Result`, a
:class:`~accentuate.LeastChange`, an :class:`~accentuate.analysis.explain.Explanation`
or an analysis's result (:class:`~accentuate.analysis.Sweep`, ``Pathway``, ``Latent``,
``Sanity``) into a grid of its images with their labels and numbers (HTML with the
images as data URIs, tables and SVG plots; or one PNG). The classes call them from
``_repr_html_`` / ``_repr_png_`` (:class:`accentuate.display.Display`), so a result on
the last line of a cell shows itself; no widget extension is needed.

HTML needs Jinja2 (``pip install "accentuate[report]"``); without it ``_repr_html_``
returns ``None`` and the notebook shows the PNG, which needs only Pillow.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, ImageDraw

from .svg import Plot

__all__ = ["Cell", "Grid", "grid_of", "html", "png"]

#: Long side of each image in a notebook grid, in pixels.
SIDE = 160
#: Images smaller than this (long side) are enlarged to it.
MIN_SIDE = 96
#: At most this many rows and columns of images are shown (the rest is counted in a note).
MAX_ROWS, MAX_COLS = 8, 10


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


def _small(img: Image.Image, side: int = SIDE) -> Image.Image:
    """``img`` with its long side at most ``side``; a tiny image is enlarged (pixels kept
    sharp) to :data:`MIN_SIDE` so it can be seen."""
    from ..outputs.figures import fit

    if max(img.size) < MIN_SIDE:
        k = -(-MIN_SIDE // max(img.size))
        return img.resize((img.size[0] * k, img.size[1] * k), Image.Resampling.NEAREST)
    return img if max(img.size) <= side else fit(img, (side, side))


def _pil(t: torch.Tensor, side: int = SIDE) -> Image.Image:
    from ..outputs.figures import to_pil

    return _small(to_pil(t), side)


def _over(image: torch.Tensor, alpha: torch.Tensor, side: int = SIDE) -> Image.Image:
    from ..outputs.figures import composite

    return _small(composite(image, alpha), side)


def _f(v: Any) -> str:
    from .build import fmt_num

    return fmt_num(float(v) if isinstance(v, torch.Tensor) else v)


def _clip(n: int, limit: int, what: str) -> tuple[int, str]:
    return (n, "") if n <= limit else (limit, f"showing the first {limit} of {n} {what}")


# -- what each result looks like ----------------------------------------------------------------
def _result(res: Any) -> Grid:
    from ..outputs.record import describe_target

    n, m = res.images.shape[:2]
    rn, note_r = _clip(n, MAX_ROWS, "seeds")
    cm, note_c = _clip(m, MAX_COLS, "targets")
    labels = [describe_target(t)["label"] for t in res.targets[:cm]]
    alpha = res.alpha() if res.has_opacity else None
    rows = []
    for i in range(rn):
        cells = [Cell(_pil(res.seeds[i]) if res.seeds is not None else None, ["seed"])]
        over = [Cell(None)]
        for j in range(cm):
            lines = [f"value {_f(res.before['value'][i, j]) if 'value' in res.before else '?'} -> "
                     f"{_f(res.after['value'][i, j])}"]
            if "rank" in res.after:
                lines.append(f"rank {_f(int(res.before['rank'][i, j])) if 'rank' in res.before else '?'} -> "
                             f"{int(res.after['rank'][i, j])}")
                lines.append(f"p {_f(float(res.after['prob'][i, j]))}")
            if (i, j) in res.failed:
                lines.append("FAILED")
            cells.append(Cell(_pil(res.images[i, j]), lines))
            if alpha is not None:
                over.append(Cell(_over(res.images[i, j], alpha[i, j]), ["with opacity"]))
        rows.append((f"seed {i}", cells))
        if alpha is not None:
            rows.append((f"seed {i}, opacity", over))
    note = "; ".join(x for x in (note_r, note_c) if x)
    title = f"Result: {n} seed(s) x {m} target(s), {res.steps_done} steps" + (" (interrupted)" if res.interrupted else "")
    return Grid(title, ["seed"] + labels, rows, note, ["seed", "target", "value_before", "value_after", "rank_before",
                                                     "rank_after", "prob_after", "steps", "lam_effective"],
                res.summary())


def _least_change(lc: Any) -> Grid:
    from ..outputs.record import describe_target

    n, m = lc.reached.shape
    rn, note_r = _clip(n, MAX_ROWS, "seeds")
    cm, note_c = _clip(m, MAX_COLS, "targets")
    seeds = lc.result.seeds
    rows = []
    for i in range(rn):
        cells = [Cell(_pil(seeds[i]) if seeds is not None else None, ["seed"])]
        for j in range(cm):
            cells.append(Cell(_pil(lc.images[i, j]), [
                ("reached" if bool(lc.reached[i, j]) else "NOT reached") + f", rank {int(lc.rank[i, j])}",
                f"lam {_f(float(lc.lam[i, j]))}, {int(lc.steps[i, j])} steps", f"SSIM {_f(float(lc.ssim[i, j]))}"]))
        rows.append((f"seed {i}", cells))
    labels = [describe_target(t)["label"] for t in lc.result.targets[:cm]]
    return Grid(f"Least change: {n} seed(s) x {m} target(s), {len(lc.rounds)} round(s)", ["seed"] + labels, rows,
                "; ".join(x for x in (note_r, note_c) if x),
                ["seed", "target", "reached", "lam", "steps", "ssim", "rank"], lc.summary())


def _explanation(ex: Any) -> Grid:
    res = ex.result
    cells = [Cell(_pil(res.seeds[0]) if res.seeds is not None else None, ["seed"])]
    cols = ["seed"]
    table = []
    for k, c in enumerate(ex.classes):
        name = ex.names[k] or str(c)
        cols.append(f"{name} [{ex.reasons[k]}]")
        pb, pa = float(ex.probs[c]), float(res.after["prob"][0, k])
        cells.append(Cell(_over(res.images[0, k], ex.alpha[0, k]),
                          [f"p {_f(pb)} -> {_f(pa)}", f"rank {int(res.before['rank'][0, k])} -> {int(res.after['rank'][0, k])}"]))
        table.append({"class": c, "name": name, "why": ex.reasons[k], "prob_before": pb, "prob_after": pa,
                      "rank_before": int(res.before["rank"][0, k]), "rank_after": int(res.after["rank"][0, k])})
    return Grid("Explanation: what drives each class (opacity normalized over the panel)", cols,
                [("", cells)], "", ["class", "name", "why", "prob_before", "prob_after", "rank_before", "rank_after"],
                table)


def _sweep(sw: Any) -> Grid:
    from pathlib import Path

    from .build import sweep_context as sweep_page

    rows = sw.rows()
    doc = {"target": sw.target, "rows": rows, "region": {"low": sw.region.low, "high": sw.region.high,
                                                         "reason": sw.region.reason, "upper": sw.region.upper,
                                                         "lower": sw.region.lower}}
    plots = sweep_page(Path("."), doc)["plots"]
    cells = [Cell(_pil(sw.seed), ["seed"])]
    cols = ["seed"]
    if sw.free is not None:
        cells.append(Cell(_pil(sw.free["image"]), [f"gain {_f(sw.free['gain'])}"]))
        cols.append("lam = 0")
    for i in range(len(sw.lams)):
        lam = float(sw.lams[i])
        inside = sw.region.found and sw.region.low <= lam <= sw.region.high  # type: ignore[operator]
        cols.append(f"lam {_f(lam)}" + (" *" if inside else ""))
        lines = [f"gain {_f(float(sw.gain[i]))}", f"RMSE {_f(float(sw.pixel_distance[i]))}"]
        if sw.rank is not None:
            lines.insert(1, f"rank {int(sw.rank[i])}")
        cells.append(Cell(_pil(sw.images[i]), lines))
    cm, note = _clip(len(cells), MAX_COLS + 3, "images")
    return Grid(f"Lambda sweep: {sw.target}; sensitive region {sw.region} (* inside)", cols[:cm], [("", cells[:cm])],
                note, list(rows[-1].keys()) if rows else [], rows, plots)


def _pathway(pw: Any) -> Grid:
    from pathlib import Path

    from .build import pathway_context as pathway_page

    doc = {"target": pw.target, "rows": pw.rows(), "pairs": pw.pairs,
           "sd": {k: {"pooled": pw.pooled_sd[k].tolist(), "unpooled": pw.unpooled_sd[k].tolist()} for k in pw.kinds}}
    page = pathway_page(Path("."), doc)
    rows = []
    for k in pw.kinds:
        imgs = pw.images.get(k, [])[:MAX_COLS]
        if imgs:
            rows.append((f"{k} ({len(pw.images[k])})", [Cell(_pil(t)) for t in imgs]))
    return Grid(f"Pathway similarity: {pw.target}", [], rows, "", page["columns"], page["rows"], page["plots"])


def _latent(lt: Any) -> Grid:
    order = lt.order.tolist()
    cm, note = _clip(len(order), MAX_COLS * 2, "images")
    cols, acc, over, seeds = [], [], [], []
    for r, i in enumerate(order[:cm]):
        cols.append(f"#{r + 1} {lt.names[i]}")
        seeds.append(Cell(_pil(lt.seeds[i])))
        acc.append(Cell(_pil(lt.images[i]), [f"{_f(float(lt.value_before[i]))} -> {_f(float(lt.value_after[i]))}"]))
        over.append(Cell(_over(lt.images[i], lt.alpha[i])))
    return Grid(f"Latent feature {lt.target} in {len(order)} image(s), sorted by its rise", cols,
                [("seed", seeds), ("accentuation", acc), ("with opacity (collective)", over)], note,
                ["rank", "seed", "value_before", "value_after", "gain", "mean_opacity"], lt.rows())


def _sanity(sn: Any) -> Grid:
    from pathlib import Path

    from ..opacity import to_alpha
    from .build import sanity_context as sanity_page

    page = sanity_page(Path("."), {"target": sn.target, "rows": sn.rows()})
    alpha = to_alpha(sn.masks)
    cols, acc, op = ["seed"], [Cell(_pil(sn.seed))], [Cell(None)]
    for d, label in enumerate(sn.depth_labels[:MAX_COLS]):
        cols.append("original" if d == 0 else f"down to {label}")
        acc.append(Cell(_pil(sn.images[d]), [f"SSIM {_f(float(sn.metrics['image_ssim'][d]))}"]))
        op.append(Cell(_pil(alpha[d][None].expand(3, -1, -1))))
    return Grid(f"Cascading randomization: {sn.target}", cols, [("accentuation", acc), ("opacity", op)], "",
                page["columns"], page["rows"], page["plots"])


def grid_of(obj: Any) -> Grid:
    """The :class:`Grid` of a result (see the module's docstring for the types).

    Raises:
        TypeError: ``obj`` is none of them.
    """
    from ..analysis import Latent, LeastChange, Pathway, Sanity, Sweep
    from ..analysis.explain import Explanation
    from ..result import Result

    for cls, fn in ((Result, _result), (LeastChange, _least_change), (Explanation, _explanation),
                    (Sweep, _sweep), (Pathway, _pathway), (Latent, _latent), (Sanity, _sanity)):
        if isinstance(obj, cls):
            return fn(obj)
    raise TypeError(f"no notebook display for {type(obj).__name__}; expected a Result, LeastChange, Explanation, "
                    "Sweep, Pathway, Latent or Sanity")


# -- rendering ----------------------------------------------------------------------------------
def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def html(obj: Any) -> str | None:
    """HTML for ``obj`` (images inline as data URIs), or ``None`` without Jinja2."""
    from .build import ReportUnavailable, environment

    try:
        env = environment()
    except ReportUnavailable:
        return None
    g = grid_of(obj)
    rows = [(label, [{"src": _data_uri(c.image) if c.image is not None else None, "lines": c.lines} for c in cells])
            for label, cells in g.rows]
    return env.get_template("notebook.html.j2").render(g=g, rows=rows, labelled=any(r for r, _ in g.rows))


def _captioned(cell: Cell, width: int) -> Image.Image:
    from ..outputs.figures import font

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


def png(obj: Any) -> bytes:
    """One PNG of ``obj``'s grid with its labels (Pillow only)."""
    from ..outputs.figures import labelled_grid

    g = grid_of(obj)
    width = max((c.image.size[0] for _, cells in g.rows for c in cells if c.image is not None), default=SIDE)
    cells = [[_captioned(c, width) for c in row] for _, row in g.rows]
    grid = labelled_grid(cells, col_labels=[c[:28] for c in g.columns] or None,
                         row_labels=[r for r, _ in g.rows] if any(r for r, _ in g.rows) else None,
                         title=g.title + (f" ({g.note})" if g.note else ""), font_size=12)
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=True)
    return buf.getvalue()

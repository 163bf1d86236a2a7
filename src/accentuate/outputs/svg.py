"""Line plots as plain data for an inline-SVG template (no matplotlib, no strings of markup).

:func:`line_plot` maps series of numbers to pixel coordinates and picks axis ticks;
the template macro ``plot`` in ``templates/_plot.html.j2`` draws the result as
``<svg>`` elements (every label goes through Jinja's autoescaping). Coordinates
are rounded to 0.1 px to keep pages small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PALETTE", "Plot", "Series", "line_plot", "nice_ticks"]

#: Colours of successive series (colour-blind friendly, Tableau-like).
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Series:
    """One line: ``y`` values at ``x`` (``None``/NaN leave a gap), optional ±``sd`` band."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    colour: str | None = None
    dashed: bool = False
    sd: Sequence[float | None] | None = None
    notes: Sequence[str] | None = None  # a small label above each point


@dataclass
class Plot:
    """What the SVG template draws (pixel coordinates, top-left origin)."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    title: str
    xlabel: str
    ylabel: str
    xticks: list[tuple[float, str]] = field(default_factory=list)
    yticks: list[tuple[float, str]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    bands: list[dict[str, Any]] = field(default_factory=list)
    hlines: list[dict[str, Any]] = field(default_factory=list)
    xtick_rotate: bool = False


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``.

    Example:
        >>> nice_ticks(0, 1)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    out, v = [], start
    while v <= hi + step * 1e-6:
        out.append(round(v, 10) + 0.0)
        v += step
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:.3g}"


def line_plot(
    series: Sequence[Series],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    xlog: bool = False,
    xcategories: Sequence[str] | None = None,
    band: tuple[float, float, str] | None = None,
    hlines: Sequence[tuple[float, str, str]] = (),
    ylim: tuple[float | None, float | None] = (None, None),
    width: int = 560,
    height: int = 300,
) -> Plot:
    """Lay ``series`` out on one pair of axes.

    Args:
        series: the lines.
        xlog: a log-scaled x axis (every x must be positive).
        xcategories: names of x = 0, 1, ... (tick labels, rotated when long).
        band: ``(x0, x1, label)`` a shaded vertical region.
        hlines: ``(y, colour, label)`` horizontal reference lines.
        ylim: fixed y limits (``None``: from the data).

    Returns:
        A :class:`Plot` for the template's ``plot`` macro.
    """
    # One piece: the axes, ticks, band, lines and legend are laid out in painting order from the
    # same scales and plot box; split, each part would take the same dozen values.
    rotate = bool(xcategories) and max((len(c) for c in xcategories or ()), default=0) * len(xcategories or ()) > 60
    bottom = 80 if rotate else 46
    p = Plot(width=width, height=height, left=58, top=30 if title else 12, right=26, bottom=bottom,
             title=title, xlabel=xlabel, ylabel=ylabel, xtick_rotate=rotate)
    fx = (lambda v: math.log10(v)) if xlog else (lambda v: float(v))
    xs = [fx(x) for s in series for x in s.x if _finite(x) and (x > 0 or not xlog)]
    if band is not None:
        xs += [fx(band[0]), fx(band[1])]
    ys: list[float] = []
    for s in series:
        for i, y in enumerate(s.y):
            if _finite(y):
                d = s.sd[i] if s.sd is not None and _finite(s.sd[i]) else 0.0
                ys += [y - d, y + d]  # type: ignore[operator]
    ys += [h[0] for h in hlines if _finite(h[0])]
    if not xs:
        xs = [0.0, 1.0]
    if not ys:
        ys = [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    y0 = ylim[0] if ylim[0] is not None else min(ys)
    y1 = ylim[1] if ylim[1] is not None else max(ys)
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = (y0 - pad if ylim[0] is None else y0), (y1 + pad if ylim[1] is None else y1)
    pw, ph = width - p.left - p.right, height - p.top - p.bottom

    def px(v: float) -> float:
        return round(p.left + (fx(v) - x0) / (x1 - x0) * pw, 1)

    def py(v: float) -> float:
        return round(p.top + (y1 - v) / (y1 - y0) * ph, 1)

    if xcategories:
        p.xticks = [(px(i), str(c)) for i, c in enumerate(xcategories)]
    elif xlog:
        p.xticks = [(px(10.0 ** e), _fmt(10.0 ** e)) for e in range(math.floor(x0), math.ceil(x1) + 1)
                    if x0 - 1e-9 <= e <= x1 + 1e-9]
    else:
        p.xticks = [(px(v), _fmt(v)) for v in nice_ticks(x0, x1) if x0 - 1e-9 <= v <= x1 + 1e-9]
    p.yticks = [(py(v), _fmt(v)) for v in nice_ticks(y0, y1) if y0 - 1e-9 <= v <= y1 + 1e-9]
    if band is not None:
        a, b = sorted((px(band[0]), px(band[1])))
        p.bands.append({"x": a, "w": round(b - a, 1), "y": p.top, "h": ph, "label": band[2]})
    for y, colour, label in hlines:
        if _finite(y) and y0 <= y <= y1:
            p.hlines.append({"y": py(y), "x0": p.left, "x1": p.left + pw, "colour": colour, "label": label})
    for k, s in enumerate(series):
        colour = s.colour or PALETTE[k % len(PALETTE)]
        segments: list[list[tuple[float, float]]] = [[]]
        points, band_pts = [], []
        for i, (x, y) in enumerate(zip(s.x, s.y)):
            if not (_finite(x) and _finite(y)) or (xlog and x <= 0):
                if segments[-1]:
                    segments.append([])
                continue
            pt = (px(x), py(y))  # type: ignore[arg-type]
            segments[-1].append(pt)
            note = s.notes[i] if s.notes is not None and i < len(s.notes) else ""
            points.append({"x": pt[0], "y": pt[1], "note": note, "value": _fmt(float(y))})  # type: ignore[arg-type]
            if s.sd is not None and _finite(s.sd[i]):
                band_pts.append((pt[0], py(y + s.sd[i]), py(y - s.sd[i])))  # type: ignore[operator]
        paths = [" ".join(f"{a},{b}" for a, b in seg) for seg in segments if len(seg) > 1]
        sd_poly = ""
        if len(band_pts) > 1:
            upper = [f"{x},{u}" for x, u, _ in band_pts]
            lower = [f"{x},{lo}" for x, _, lo in reversed(band_pts)]
            sd_poly = " ".join(upper + lower)
        p.lines.append({"label": s.label, "colour": colour, "dashed": s.dashed, "paths": paths,
                        "points": points if len(points) <= 60 else [], "sd": sd_poly})
    return p

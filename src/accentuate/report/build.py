"""Build ``report.html`` for an output folder of accentuate.

The folder is read as it is on disk: ``run.json`` (``accentuate run``, ``demo`` and
``explain``), the analyses' records (``sweep.json``, ``pathway.json``, ``latent.json``,
``sanity.json``) and ``command.json`` (the command line of an analysis). The page is
rendered by Jinja2 with autoescaping from the templates of this package; its CSS and
JavaScript are inlined and allowed by their SHA-256 in a Content-Security-Policy
that forbids every other script, style, connection and load from outside the
page's own location (``'self'``; for ``file://`` pages Chromium counts every local
file as ``'self'``; the page itself only ever names files inside its folder).
Images are linked, not embedded: thumbnails and the seeds on their canvas are
written to ``report-files/`` (see :mod:`accentuate.report.thumbs`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import AccentuateError
from ..outputs.grid import INSTALL_HINT, ReportUnavailable, environment, file_url, fmt_num  # noqa: F401
from ..outputs.io import atomic_write, script_json  # noqa: F401 (script_json also from here)
from ..outputs.plots import (
    latent_plots,
    pathway_columns,
    pathway_plots,
    sanity_columns,
    sanity_plots,
    sweep_band,
    sweep_plots,
)
from ..runs.work import recorded_work
from .thumbs import image_copy

__all__ = [
    "ANALYSES",
    "REPORT",
    "ReportError",
    "ReportUnavailable",
    "build_report",
    "maybe_write_report",
    "script_json",
    "write_command_record",
    "write_report",
]

#: The page's file name in an output folder.
REPORT = "report.html"
#: The analyses' records, in the order their sections appear.
ANALYSES = ("sweep", "pathway", "latent", "sanity", "study")
#: History records per pair embedded in the page (the full history stays in run.json).
PAGE_HISTORY = 40

class ReportError(AccentuateError, ValueError):
    """The folder holds nothing a report can be made of."""


# -- helpers ------------------------------------------------------------------------------------

#: The page's own templates (the macros it shares with the notebook grid are beside the grid).
REPORT_TEMPLATES = Path(__file__).resolve().parent / "templates"


def _asset(name: str) -> str:
    return resources.files("accentuate.report").joinpath("templates", name).read_text("utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _clean(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read {str(path)!r} ({e}); rerun the command that wrote it") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{str(path)!r} is not an accentuate record (not a JSON object)")
    return doc


def _num(d: dict[str, Any] | None, k: str) -> float | None:
    v = (d or {}).get(k)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# -- the run (run.json) -------------------------------------------------------------------------
def _round3(v: Any) -> Any:
    return float(f"{v:.3g}") if isinstance(v, float) and math.isfinite(v) else v


def _thin(h: dict[str, Any], limit: int = PAGE_HISTORY) -> dict[str, Any]:
    """The history the page plots: at most ``limit`` records, 3 significant digits, and the
    steps as ``[first, stride]`` when evenly spaced (else the list)."""
    steps = h.get("step") or []
    n = len(steps)
    keep = list(range(n)) if n <= limit else sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    kept = [steps[i] for i in keep]
    stride = kept[1] - kept[0] if len(kept) > 1 else 1
    even = all(b - a == stride for a, b in zip(kept, kept[1:]))
    out: dict[str, Any] = {"s": [kept[0], stride, len(kept)] if even and kept else kept, "even": even}
    for src, dst in (("objective", "o"), ("distance", "d"), ("rank", "r")):
        if src in h:
            out[dst] = [_round3(h[src][i]) for i in keep]
    return out


def _seed_views(folder: Path, doc: dict[str, Any], given: Mapping[str, Any] | None = None
                ) -> list[dict[str, Any] | None]:
    """Per seed image: a thumbnail and the seed on its canvas, copied into the report's folder; the
    seed is ``given[sha256]`` when the command that ran has it (not decoded again), else read from
    its recorded path."""
    from ..errors import ImageError
    from ..images import load_image, prepare_seeds, tensor_to_pil

    out: list[dict[str, Any] | None] = []
    cwd = Path(doc.get("cwd") or ".")
    for img in doc.get("images", []):
        path = Path(img.get("path", ""))
        if not path.is_absolute():
            path = cwd / path
        key = img.get("sha256") or str(path)
        canvas = img.get("canvas") or [512, 512]
        try:
            seed = (given or {}).get(img.get("sha256") or "")
            if seed is None:
                with warnings.catch_warnings():  # the run already said what reading the file needed
                    warnings.simplefilter("ignore")
                    seed = prepare_seeds(load_image(path), tuple(canvas))[0]
            full_name, _ = image_copy(folder, tensor_to_pil(seed), key, "seed", side=None)
            thumb, tsize = image_copy(folder, folder / full_name, key, "s")
            out.append({"full": file_url(full_name), "thumb": file_url(thumb), "w": tsize[0], "h": tsize[1]})
        except (ImageError, OSError, ValueError):
            out.append(None)
    return out


def _pair_views(folder: Path, p: dict[str, Any]) -> dict[str, Any]:
    files, sums = p.get("files") or {}, p.get("sha256") or {}
    views: dict[str, Any] = {}
    for kind, alpha in (("image", False), ("rgba", True)):
        name = files.get(kind)
        if not name or not (folder / name).exists():
            continue
        try:
            thumb, size = image_copy(folder, folder / name, sums.get(kind) or name, kind[0], alpha=alpha)
        except OSError:
            continue
        views[kind] = {"full": file_url(name), "thumb": file_url(thumb), "w": size[0], "h": size[1]}
    return views


def _run_context(folder: Path, doc: dict[str, Any], seeds_given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    # One piece: one pass over the recorded pairs fills the cards (HTML) and the script's data
    # side by side, so that a card and its data row cannot disagree.
    images = doc.get("images") or []
    targets = doc.get("targets") or []
    seeds = _seed_views(folder, doc, seeds_given)
    judged = _judges_context(doc.get("judges"))
    cards: list[dict[str, Any]] = []
    data: list[dict[str, Any]] = []
    seen = set()
    for p in doc.get("pairs") or []:
        i, j = int(p.get("seed", 0)), int(p.get("target", 0))
        seen.add((i, j))
        b, a = p.get("before") or {}, p.get("after") or {}
        vb, va = _num(b, "value"), _num(a, "value")
        gain = va - vb if va is not None and vb is not None else None
        dist = p.get("distance") or {}
        views = _pair_views(folder, p)
        tinfo = targets[j] if j < len(targets) else {}
        # [kind, name, first 12 hex digits of the SHA-256, present]; the page makes the link.
        files = [[k, n, (p.get("sha256") or {}).get(k, "")[:12], 1 if (folder / n).exists() else 0]
                 for k, n in (p.get("files") or {}).items()]
        card = {
            "k": len(cards), "id": str(p.get("id", "")), "i": i, "j": j,
            "image": str(p.get("image", "")), "target": str(p.get("target_label", "")),
            "status": str(p.get("status", "")), "failed": p.get("failed"),
            "value_name": tinfo.get("value_name", "value"),
            "before": {"value": vb, "rank": b.get("rank"), "prob": _num(b, "prob")},
            "after": {"value": va, "rank": a.get("rank"), "prob": _num(a, "prob")},
            "gain": gain, "ssim": _num(dist, "ssim"), "rmse": _num(dist, "pixel_rmse"),
            "seed": seeds[i] if i < len(seeds) else None, "views": views, "resumed": bool(p.get("resumed")),
            "judges": judged["by_pair"].get((i, j), []) if judged else [],
        }
        card["judges_text"], card["judges_top5"] = _judges_text(card["judges"])
        cards.append(card)
        data.append(_clean({
            "id": card["id"], "i": i, "j": j, "img": card["image"], "tgt": card["target"],
            "st": card["status"], "fail": card["failed"], "gain": gain, "vn": card["value_name"],
            "b": [vb, b.get("rank"), _num(b, "prob")], "a": [va, a.get("rank"), _num(a, "prob")],
            "ssim": card["ssim"], "rmse": card["rmse"], "reg": _num(dist, "reg_layer"),
            "regname": dist.get("reg_layer_name"),
            "steps": p.get("steps_used"), "done": p.get("steps_done"), "lam": p.get("lam_effective"),
            "batch": p.get("batch"), "resumed": card["resumed"], "obj": p.get("objective"),
            "t5b": [[t.get("name") or str(t.get("index")), _round3(t.get("prob"))] for t in b.get("top5") or []],
            "t5a": [[t.get("name") or str(t.get("index")), _round3(t.get("prob"))] for t in a.get("top5") or []],
            "h": _thin(p.get("history") or {}), "files": files,
            "seed": card["seed"]["full"] if card["seed"] else None,
            "acc": views.get("image", {}).get("full"), "rgba": views.get("rgba", {}).get("full"),
            "gif": file_url((p.get("files") or {})["gif"]) if (p.get("files") or {}).get("gif") else None,
            "fig": file_url((p.get("files") or {})["figure"]) if (p.get("files") or {}).get("figure") else None,
            # per judge [name, rank before, rank after, prob before, prob after, feature change]; the count
            # of judges with the target in their top 5 and with a class at all
            "jd": [[r["judge"], r["rb"], r["ra"], r["pb"], r["pa"], r["fc"]] for r in card["judges"]],
            "j5": card["judges_top5"],
        }))
    work = recorded_work(doc)  # the pairs the command asked for (a manifest's rows, not images x targets)
    missing = [{"image": images[i].get("name", "") if i < len(images) else str(i),
                "target": targets[j].get("label", "") if j < len(targets) else str(j)}
               for i, j in work.pairs if (i, j) not in seen]
    timings = doc.get("timings") or {}
    explain = None
    if doc.get("explain"):
        ex = doc["explain"]
        rows = []
        for k, c in enumerate(ex.get("classes") or []):
            hit: dict[str, Any] | None = next((cd for cd in cards if cd["j"] == k), None)
            rows.append({"class": c, "name": (ex.get("names") or [None] * (k + 1))[k],
                         "reason": (ex.get("reasons") or [""] * (k + 1))[k],
                         "before": hit["before"] if hit else {}, "after": hit["after"] if hit else {}})
        panel = (doc.get("outputs") or {}).get("explain_panel")
        explain = {"rows": rows, "panel": panel if panel and (folder / panel).exists() else None,
                   "opacity": ex.get("opacity")}
    concepts = _concepts_context(folder, doc) if doc.get("concepts") else None
    sheet = (doc.get("outputs") or {}).get("contact_sheet")
    statuses = [c["status"] for c in cards]
    counts = {st: statuses.count(st) for st in ("complete", "partial", "failed") if st in statuses}
    counts.update({st: statuses.count(st) for st in sorted(set(statuses)) if st not in counts})
    if missing:
        counts["not run"] = len(missing)
    counts["total"] = len(work.pairs)
    counts["resumed"] = sum(1 for c in cards if c["resumed"])
    return {
        "counts": counts,
        "doc": doc, "cards": cards, "data": data, "missing": missing,
        "skipped": doc.get("skipped_images") or [], "images": images, "targets": targets,
        "failed": [c for c in cards if c["status"] == "failed"],
        "partial": [c for c in cards if c["status"] == "partial"],
        "batches": timings.get("batches") or [], "timings": timings, "explain": explain, "concepts": concepts,
        "contact_sheet": sheet if sheet and (folder / sheet).exists() else None,
        "columns": min(max(1, len(targets)), 6), "judged": judged,
    }


def _judges_context(section: Any) -> dict[str, Any] | None:
    """``run.json``'s ``judges`` (:mod:`accentuate.runs.judged`) for the page: the judges, their
    summary, and per pair ``(seed, target)`` its rows."""
    if not isinstance(section, dict) or not section.get("judges"):
        return None
    by_pair: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in section.get("pairs") or []:
        if not isinstance(r, dict):
            continue
        by_pair.setdefault((int(r.get("seed", 0)), int(r.get("target", 0))), []).append({
            "judge": str(r.get("judge", "")), "rb": r.get("rank_before"), "ra": r.get("rank_after"),
            "pb": _num(r, "prob_before"), "pa": _num(r, "prob_after"), "fc": _num(r, "feature_change"),
            "note": r.get("note")})
    return {"judges": [j for j in section["judges"] if isinstance(j, dict)],
            "summary": [s for s in section.get("summary") or [] if isinstance(s, dict)],
            "notes": list(section.get("notes") or []), "by_pair": by_pair}


def _judges_text(rows: list[dict[str, Any]]) -> tuple[str, list[int] | None]:
    """A card's judges cell (the target's rank after on each judge, and how many have it in their
    top 5), and ``[in top 5, judges with the class]`` (``None`` when no judge has it)."""
    if not rows:
        return "", None
    ranked = [r for r in rows if isinstance(r.get("ra"), int)]
    if not ranked:
        return "change " + ", ".join(fmt_num(r["fc"]) for r in rows), None
    top5 = sum(1 for r in ranked if r["ra"] <= 5)
    ranks = ", ".join(str(r["ra"]) for r in ranked)
    return f"{top5} of {len(ranked)} top-5 (rank{'s' if len(ranked) > 1 else ''} {ranks})", [top5, len(ranked)]


def _concepts_context(folder: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The concept atlas of ``accentuate concepts``: the factorization, the overview picture and per
    concept its numbers, a thumbnail of its atlas picture (linked to the picture) and its accentuations."""
    rows = []
    for c in doc.get("concepts") or []:
        if not isinstance(c, dict):
            continue
        atlas = c.get("atlas")
        thumb = None
        if atlas and (folder / atlas).exists():
            try:
                name, size = image_copy(folder, folder / atlas, f"{atlas}|{(folder / atlas).stat().st_mtime_ns}",
                                        "atlas", side=960)
                thumb = {"src": file_url(name), "w": size[0], "h": size[1], "full": atlas}
            except OSError:
                thumb = None
        rows.append({"index": c.get("index"), "unit": c.get("unit"), "explained": _num(c, "explained"),
                     "mean": _num(c, "mean_coefficient"), "present_in": c.get("present_in"),
                     "top": [str(t.get("image", "")) for t in c.get("top_images") or [] if isinstance(t, dict)],
                     "accentuated": [a for a in c.get("accentuated") or [] if isinstance(a, dict)],
                     "atlas": thumb})
    overview = (doc.get("outputs") or {}).get("concepts_overview")
    return {"rows": rows, "info": doc.get("factorization") or {},
            "overview": overview if overview and (folder / overview).exists() else None}


# -- the analyses -------------------------------------------------------------------------------
def _image_if(folder: Path, name: str) -> str | None:
    return name if (folder / name).exists() else None


def sweep_context(folder: Path, doc: dict[str, Any]) -> dict[str, Any]:
    rows = doc.get("rows") or []
    region = doc.get("region") or {}
    band = sweep_band(region)
    cols = [c for c in ("lam", "lam_effective", "value_after", "gain", "gain_norm", "rank", "prob", "pixel_rmse",
                        "ssim_seed", "reg_distance") if any(c in r for r in rows)]
    inside = [band is not None and r.get("lam", 0) > 0 and band[0] <= r["lam"] <= band[1] for r in rows]
    return {"kind": "sweep", "title": f"Lambda sweep: {doc.get('target', '')}", "doc": doc, "plots": sweep_plots(doc),
            "columns": cols, "rows": rows, "highlight": inside, "region": region,
            "image": _image_if(folder, "sweep_images.png"), "figure": _image_if(folder, "sweep.png")}


def pathway_context(folder: Path, doc: dict[str, Any]) -> dict[str, Any]:
    rows = doc.get("rows") or []
    cols = pathway_columns(doc)
    return {"kind": "pathway", "title": f"Pathway similarity: {doc.get('target', '')}", "doc": doc,
            "plots": pathway_plots(doc), "columns": cols, "rows": rows, "highlight": [False] * len(rows),
            "summary": doc.get("summary") or {},
            "image": _image_if(folder, "pathway_images.png"), "figure": _image_if(folder, "pathway.png")}


def latent_context(folder: Path, doc: dict[str, Any]) -> dict[str, Any]:
    rows = doc.get("rows") or []
    return {"kind": "latent", "title": f"Latent feature: {doc.get('target', '')}", "doc": doc,
            "plots": latent_plots(doc),
            "columns": ["rank", "seed", "value_before", "value_after", "gain", "mean_opacity"], "rows": rows,
            "highlight": [False] * len(rows), "image": _image_if(folder, "latent.png"), "figure": None}


def sanity_context(folder: Path, doc: dict[str, Any]) -> dict[str, Any]:
    rows = doc.get("rows") or []
    repeat = next((r for r in rows if not isinstance(r.get("depth"), int)), None)
    cols = sanity_columns(rows)
    return {"kind": "sanity", "title": f"Cascading randomization: {doc.get('target', '')}", "doc": doc,
            "plots": sanity_plots(doc), "columns": cols, "rows": rows, "highlight": [r is repeat for r in rows],
            "image": _image_if(folder, "sanity_images.png"), "figure": _image_if(folder, "sanity.png")}


def study_context(folder: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """A human study's analysis (``accentuate study analyze``): accuracy per condition and kind."""
    rows = doc.get("rows") or []
    cols = doc.get("columns") or (list(rows[0]) if rows else [])
    people = len(doc.get("participants") or [])
    return {"kind": "study", "title": f"Human study: {doc.get('target', '')} ({people} participant(s))", "doc": doc,
            "plots": [], "columns": cols, "rows": rows, "highlight": [r.get("kind") == "all" for r in rows],
            "image": _image_if(folder, "study.png"), "figure": _image_if(folder, "study.png")}


_ANALYSIS_BUILDERS = {"sweep": sweep_context, "pathway": pathway_context, "latent": latent_context,
                      "sanity": sanity_context, "study": study_context}


# -- the page -----------------------------------------------------------------------------------
def _context(folder: Path, seeds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    run_path = folder / "run.json"
    run = _run_context(folder, _read_json(run_path), seeds) if run_path.exists() else None
    analyses = [_ANALYSIS_BUILDERS[k](folder, _read_json(folder / f"{k}.json"))
                for k in ANALYSES if (folder / f"{k}.json").exists()]
    command = _read_json(folder / "command.json") if (folder / "command.json").exists() else None
    if run is None and not analyses:
        raise ReportError(
            f"{str(folder)!r} holds no run.json and no analysis record ({', '.join(k + '.json' for k in ANALYSES)}); "
            "give an output folder of accentuate run, explain, demo or an analysis")
    head = run["doc"] if run is not None else (command or {})
    if run is not None:
        title = f"{head.get('subcommand', 'run')}: {len(run['images'])} image(s) x {len(run['targets'])} target(s)"
    else:
        title = " / ".join(a["title"] for a in analyses)
    return {"folder": folder.name or str(folder), "run": run, "analyses": analyses, "head": head,
            "command": command, "title": title,
            "built": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def build_report(folder: str | os.PathLike, seeds: Mapping[str, Any] | None = None) -> str:
    """The HTML of the report for ``folder`` (thumbnails written to ``folder/report-files``).

    Args:
        folder: an output folder of ``accentuate run``, ``demo``, ``explain`` or an analysis.
        seeds: the seed images on their canvas ``(3, H, W)`` by the SHA-256 ``run.json`` records
            (the command that just ran has them; others are read from their files).

    Raises:
        ReportUnavailable: Jinja2 is not installed.
        ReportError: the folder holds no record.
    """
    env = environment(REPORT_TEMPLATES)
    folder = Path(folder)
    ctx = _context(folder, seeds)
    css, js = _asset("report.css"), _asset("report.js")
    csp = ("default-src 'none'; "
           f"script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; "
           "img-src 'self'; base-uri 'none'; form-action 'none'")
    data = {"pairs": ctx["run"]["data"] if ctx["run"] else [], "history_limit": PAGE_HISTORY}
    from markupsafe import Markup

    return env.get_template("report.html.j2").render(
        **ctx, csp=csp, css=Markup(css), js=Markup(js), data_json=Markup(script_json(data)))


def write_report(folder: str | os.PathLike, seeds: Mapping[str, Any] | None = None) -> Path:
    """Write ``folder/report.html`` (atomically); returns its path. Raises as :func:`build_report`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"no such folder {str(folder)!r}; give an output folder of accentuate")
    html = build_report(folder, seeds)
    atomic_write(folder / REPORT, html.encode("utf-8"))
    return folder / REPORT


def maybe_write_report(folder: str | os.PathLike, seeds: Mapping[str, Any] | None = None) -> Path | None:
    """Write the report at the end of a command (``seeds``: see :func:`build_report`); never fails
    the command.

    Without Jinja2 the report is skipped with a one-line warning that says how to
    install it; any other problem becomes a one-line warning too.
    """
    try:
        return write_report(folder, seeds)
    except ReportUnavailable as e:
        warnings.warn(f"{e}", stacklevel=2)
    except Exception as e:  # noqa: BLE001 (the run's own files are written; the page is extra)
        warnings.warn(f"report.html not written ({type(e).__name__}: {e}); "
                      f"rebuild it with `accentuate report {folder}`", stacklevel=2)
    return None


def write_command_record(folder: str | os.PathLike, argv: Sequence[str], subcommand: str, seconds: float,
                         device: dict[str, Any] | None = None) -> Path:
    """Write ``command.json`` beside an analysis's record: the command line, versions, device
    and time, which the analyses' own records do not hold (the report shows them at the top)."""
    import shlex

    from ..runs.record import versions

    doc = {"format": "accentuate-command/1", "command": "accentuate " + shlex.join(list(argv)),
           "argv": list(argv), "subcommand": subcommand, "cwd": os.getcwd(), **(device or {}),
           "versions": versions(), "platform": platform.platform(),
           "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
           "timings": {"total_s": round(seconds, 3)}}
    path = Path(folder) / "command.json"
    atomic_write(path, (json.dumps(doc, indent=2, default=str) + "\n").encode())
    return path

"""The run record (``run.json``) and the files of each accentuated pair.

:class:`RunWriter` owns an output folder. For each accentuated pair (one seed
image x one target) it writes, atomically (temporary name, then rename):

- ``{stem}.png``: the accentuation;
- ``{stem}_rgba.png``: the same with the opacity as alpha;
- ``{stem}_figure.png``: seed | accentuation | with opacity | opacity heat map;
- ``{stem}.gif`` (and ``{stem}.mp4`` when a writer is installed): the optimization.

and records in ``run.json`` the pair's numbers, its file names and each file's
SHA-256, with the hash of the settings. :meth:`RunWriter.verified` tells whether a
pair recorded by an earlier run with the same settings is complete and its files
intact, so a rerun can skip it. ``run.json`` is rewritten (atomically) after each
batch, so a killed process keeps everything finished so far. The fields are
documented in ``docs/run-json.md``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..metrics import pixel_rmse, ssim
from ..objectives import Objective
from ..result import Result
from . import animation, figures
from .history import pair_history
from .io import atomic_write

__all__ = [
    "FORMAT",
    "ImageInfo",
    "RunWriter",
    "TargetInfo",
    "describe_target",
    "file_sha256",
    "pair_stems",
    "seed_distances",
    "settings_hash",
    "slug",
    "target_identity",
]

#: Identifies the layout of ``run.json``; bumped when a field changes meaning.
FORMAT = "accentuate-run/1"


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``.``, ``-``)."""
    s = re.sub(r"[^A-Za-z0-9.\-]+", "-", str(text)).strip("-.")
    return (s[:limit].rstrip("-.") or "x")


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes, or ``None`` if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``settings`` (sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def describe_target(obj: Objective, text: str | None = None) -> dict[str, Any]:
    """How a target is shown and recorded: the objective's own :meth:`~Objective.describe`
    (``kind``, ``label``, ``value_name``, what it reads) with ``arg`` (what was typed),
    ``objective`` (its repr) and ``slug`` (for file names)."""
    d = dict(obj.describe())
    slug_text = d.pop("slug_text", None) or d["label"]
    return {"arg": text, "objective": repr(obj), **d, "slug": slug(slug_text)}


def target_identity(obj: Objective) -> str:
    """What identifies a target in a pair's key (:meth:`Objective.identity`: its ``repr``, and for a
    direction also a hash of its vector, so two vector files for one layer are two targets, and an
    edited file is a new one)."""
    return obj.identity()


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
    for i, s in enumerate(img_slugs):
        for j, obj in enumerate(objectives):
            stem = f"{s}__{describe_target(obj)['slug']}"
            base, k = stem, 2
            while stem in used:
                stem, k = f"{base}-{k}", k + 1
            used.add(stem)
            stems[(i, j)] = stem
    return stems


@dataclass
class ImageInfo:
    """A seed image of the run."""

    path: str
    name: str
    sha256: str
    size: tuple[int, int]  # (width, height) of the file as read
    canvas: tuple[int, int]  # (H, W) it was fitted to
    tensor: torch.Tensor | None = field(default=None, repr=False)  # (3, H, W) on the canvas

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "sha256": self.sha256,
                "size": list(self.size), "canvas": list(self.canvas)}


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
        d = describe_target(self.objective, self.text)
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


def seed_distances(res: Result) -> dict[str, torch.Tensor]:
    """Distances of each accentuation of ``res`` to its seed: ``pixel_rmse``, ``ssim`` and
    ``reg_layer`` (the regularizer's distance on the whole images as the model sees them,
    measured by the engine: ``res.after["reg_distance"]``; NaN without one), each ``(N, M)``."""
    n, m = res.images.shape[:2]
    seeds = res.seeds if res.seeds is not None else torch.zeros_like(res.images[:, 0])
    return {
        "pixel_rmse": pixel_rmse(res.images, seeds[:, None]),
        "ssim": ssim(res.images, seeds[:, None].expand_as(res.images)),
        "reg_layer": res.after.get("reg_distance", torch.full((n, m), float("nan"))),
    }


def _lam_text(lam: Any, shape: Sequence[int], a: int, b: int) -> str:
    """Pair ``(a, b)``'s lambda: the number, or its entry of a per-accentuation lambda."""
    if isinstance(lam, float):
        return f"{lam:g}"
    return f"{float(torch.as_tensor(lam, dtype=torch.float64).expand(*shape)[a, b]):g}"


def _num(x: Any) -> float | None:
    """A finite float, or ``None`` (JSON has no NaN or infinity)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _top(entries: list[tuple[int, str | None, float]]) -> list[dict[str, Any]]:
    return [{"index": c, "name": name, "prob": _num(round(p, 6))} for c, name, p in entries]  # JSON: no NaN


def _numbers(d: dict[str, torch.Tensor], a: int, b: int, cls: int | None, top: list) -> dict[str, Any]:
    """Value, rank, probability and top-5 of pair ``(a, b)`` from ``Result.before``/``after``.

    The engine gives ranks only when every target of a batch is a class; for a class
    target in a mixed batch they are computed here from the logits, the same way.
    """
    out: dict[str, Any] = {"value": _num(d["value"][a, b].item()) if "value" in d else None,
                           "rank": None, "prob": None, "top5": _top(top[a][b]) if top else []}
    logits = d.get("logits")
    if cls is not None and logits is not None and cls < logits.shape[-1]:
        row = logits[a, b].float()
        out["rank"] = int(1 + (row > row[cls]).sum().item())
        out["prob"] = _num(row.softmax(-1)[cls].item())
    return out


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}"


class RunWriter:
    """Writes the files of a run and keeps ``run.json`` up to date.

    Args:
        out: the output folder (exists).
        header: the run's description: ``command``, ``model``, ``settings``, ``versions``, ...
            (everything but ``pairs``, ``status`` and timings).
        settings_key: the hash of everything that changes a pair's result.
        images, targets: the run's seeds and targets (rows and columns of the sheet).
    """

    def __init__(
        self,
        out: Path,
        header: dict[str, Any],
        settings_key: str,
        images: Sequence[ImageInfo],
        targets: Sequence[TargetInfo],
        video: bool = True,
        pairs: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.out = Path(out)
        self.images, self.targets = list(images), list(targets)
        # The pairs of the run (a manifest lists some of images x targets); None: all of them.
        self.total = len(self.images) * len(self.targets) if pairs is None else len(set(pairs))
        # Occurrence number of each image's content among the images before it (same file twice).
        seen: dict[str, int] = {}
        self._nth = []
        for im in self.images:
            self._nth.append(seen.get(im.sha256, 0))
            seen[im.sha256] = self._nth[-1] + 1
        self.key = settings_key
        self.path = self.out / "run.json"
        self.previous = self._load_previous()
        self.entries: dict[str, dict[str, Any]] = {}
        self.mp4_reason = animation.mp4_available() if video else "disabled (--no-video)"
        now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        self.doc: dict[str, Any] = {
            "format": FORMAT,
            **header,
            "settings_hash": settings_key,
            "status": "running",
            "created": now,
            "updated": now,
            "images": [im.record() for im in self.images],
            "targets": [t.record() for t in self.targets],
            "outputs": {"contact_sheet": None, "gif": True, "mp4": self.mp4_reason is None,
                        "mp4_note": self.mp4_reason},
            "timings": {"batches": []},
            "counts": {},
            "pairs": [],
        }
        self._stems = pair_stems([im.name for im in self.images], [t.objective for t in self.targets])

    # -- identity and resume ---------------------------------------------------------
    def pair_key(self, i: int, j: int) -> str:
        """Identity of pair ``(i, j)``: settings, image content and target.

        The same file given twice counts its occurrences, so both copies are kept.
        """
        text = f"{self.key}|{self.images[i].sha256}#{self._nth[i]}|{target_identity(self.targets[j].objective)}"
        if self.targets[j].settings:  # the target's own settings (a manifest row's lam, steps, ...)
            text += "|" + json.dumps(self.targets[j].settings, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def _load_previous(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            pairs = doc.get("pairs", [])
            return {p["key"]: p for p in pairs if isinstance(p, dict) and "key" in p}
        except (OSError, ValueError, TypeError, KeyError) as e:
            warnings.warn(f"ignoring unreadable {self.path} ({e}); every pair will be redone", stacklevel=2)
            return {}

    def verified(self, i: int, j: int) -> bool:
        """True when an earlier run recorded pair ``(i, j)`` as complete with these
        settings, and every file it lists is present with its recorded SHA-256.

        A verified pair is kept in this run's record.
        """
        key = self.pair_key(i, j)
        e = self.previous.get(key)
        if not e or e.get("status") != "complete" or e.get("settings_hash") != self.key:
            return False
        files, sums = e.get("files") or {}, e.get("sha256") or {}
        if not files or set(files) != set(sums):
            return False
        for kind, name in files.items():
            if file_sha256(self.out / name) != sums[kind]:
                return False
        entry = dict(e, seed=i, target=j, resumed=True)
        self.entries[key] = entry
        return True

    # -- writing ---------------------------------------------------------------------
    def _write(self, name: str, data: bytes, files: dict[str, str], sums: dict[str, str], kind: str) -> None:
        atomic_write(self.out / name, data)
        files[kind] = name
        sums[kind] = hashlib.sha256(data).hexdigest()

    def write_batch(
        self,
        res: Result,
        seed_idx: Sequence[int],
        target_idx: Sequence[int],
        seconds: float,
        alpha: torch.Tensor | None = None,
        skip: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
    ) -> list[dict[str, Any]]:
        """Write the files of every pair of ``res`` and record them; return the entries.

        Args:
            res: a result whose seeds are ``seed_idx`` and targets ``target_idx``
                (indices into the run's images and targets).
            seconds: wall time of the batch.
            alpha: ``(N, M, H, W)`` opacity to use (default: ``res.alpha()``, each
                pair normalized on its own).
            skip: run indices ``(i, j)`` not to write (already complete).
        """
        n, m = res.images.shape[:2]
        self.doc["outputs"]["opacity"] = ("per pair" if alpha is None else "collective") if res.has_opacity else None
        if alpha is None:  # a result without opacity (opacity=False): no RGBA file, blank opacity panels
            alpha = res.alpha() if res.has_opacity else torch.zeros_like(res.images[:, :, 0])
        rgba = torch.cat([res.images, alpha[:, :, None]], dim=2)
        reg_layer = str(res.config.regularizer)
        dist = seed_distances(res)
        top_b, top_a = res.top("before", 5), res.top("after", 5)
        steps = res.config.steps
        hist_dist = res.history.distance if "distance" in res.history.keys() else None
        batch_no = len(self.doc["timings"]["batches"])
        snaps = dict(res.snapshots)
        if snaps and res.steps_done not in snaps:  # stopped early (--until, Ctrl-C): end on the result
            snaps[res.steps_done] = (res.images.clamp(0, 1) * 255).round().to(torch.uint8)
        written = []
        for a, i in enumerate(seed_idx):
            for b, j in enumerate(target_idx):
                if (i, j) in skip:
                    continue
                stem = self._stems[(i, j)]
                tinfo = self.targets[j].record()
                failed = res.failed.get((a, b))
                status = "failed" if failed else "partial" if res.interrupted else "complete"

                cls = self.targets[j].objective.class_index
                before = _numbers(res.before, a, b, cls, top_b)
                after = _numbers(res.after, a, b, cls, top_a)
                distances = {
                    "pixel_rmse": _num(dist["pixel_rmse"][a, b].item()),
                    "ssim": _num(dist["ssim"][a, b].item()),
                    "reg_layer": _num(dist["reg_layer"][a, b].item()),
                    "reg_layer_name": reg_layer,
                    "reg_layer_crops_last_step": (
                        _num(hist_dist[-1, a, b].item()) if hist_dist is not None and len(hist_dist) else None
                    ),
                }
                files: dict[str, str] = {}
                sums: dict[str, str] = {}
                self._write(f"{stem}.png", figures.png_bytes(figures.to_pil(res.images[a, b])), files, sums,
                            "image")
                rgba_img = Image.fromarray(
                    (rgba[a, b].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy(), "RGBA")
                if res.has_opacity:
                    self._write(f"{stem}_rgba.png", figures.png_bytes(rgba_img), files, sums, "rgba")
                title = f"{self.images[i].name}  accentuated toward  {tinfo['label']}"
                if status != "complete":
                    title += f"   [{status.upper()}]"
                lines = self._caption(tinfo, before, after, distances, res, a, b, steps)
                fig = figures.pair_figure(res.seeds[a] if res.seeds is not None else None, res.images[a, b],
                                          alpha[a, b], title, lines)
                self._write(f"{stem}_figure.png", figures.png_bytes(fig), files, sums, "figure")
                if snaps:
                    frames = animation.frames(snaps, a, b, steps, label=tinfo["label"])
                    self._write(f"{stem}.gif", animation.gif_bytes(frames), files, sums, "gif")
                    if self.mp4_reason is None:
                        try:
                            self._write(f"{stem}.mp4", animation.mp4_bytes(frames), files, sums, "mp4")
                        except Exception as e:  # noqa: BLE001 (an optional writer must not end the run)
                            self.mp4_reason = f"MP4 writer failed: {type(e).__name__}: {e}"
                            self.doc["outputs"].update(mp4=False, mp4_note=self.mp4_reason)
                entry = {
                    "key": self.pair_key(i, j),
                    "id": stem,
                    "seed": i,
                    "target": j,
                    "image": self.images[i].name,
                    "target_label": tinfo["label"],
                    "objective": tinfo["objective"],
                    "status": status,
                    "failed": failed,
                    "before": before,
                    "after": after,
                    "distance": distances,
                    "steps_used": int(res.steps_used[a, b]),
                    "steps_done": int(res.steps_done),
                    "lam_effective": _num(res.lam_effective[a, b].item()),
                    "batch": batch_no,
                    "history": pair_history(res.history, a, b),
                    "files": files,
                    "sha256": sums,
                    "settings_hash": self.key,
                    "resumed": False,
                }
                self.entries[entry["key"]] = entry
                written.append(entry)
        self.doc["timings"]["batches"].append({
            "seeds": list(seed_idx), "targets": list(target_idx), "canvas": list(res.images.shape[-2:]),
            "pairs": len(written), "steps_done": int(res.steps_done), "seconds": round(seconds, 3),
            "interrupted": bool(res.interrupted),
        })
        self.doc.setdefault("engine_config", {**res.config.to_dict(),
                                              **{k: v for k, v in res.run.items() if k != "targets"}})
        return written

    def _caption(self, t: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
                 dist: dict[str, Any], res: Result, a: int, b: int, steps: int) -> list[str]:
        vn = t["value_name"]
        line1 = f"{vn} {_fmt(before['value'])} -> {_fmt(after['value'])}"
        if after["rank"] is not None:
            line1 += f"     rank {before['rank']} -> {after['rank']}"
            line1 += f"     probability {_fmt(before['prob'])} -> {_fmt(after['prob'])}"  # None: not finite
        lines = [line1]
        if before["top5"] and after["top5"]:
            tb, ta = before["top5"][0], after["top5"][0]
            lines.append(f"model's top class: before {tb['name'] or tb['index']} ({_fmt(tb['prob'], 2)}),"
                         f"  after {ta['name'] or ta['index']} ({_fmt(ta['prob'], 2)})")
        reg = dist["reg_layer_name"]
        parts = [f"pixel RMSE {_fmt(dist['pixel_rmse'])}", f"SSIM {_fmt(dist['ssim'])}"]
        if dist["reg_layer"] is not None and reg not in ("none", "pixel"):
            parts.append(f"{reg} distance {_fmt(dist['reg_layer'])}")
        lines.append("distance to the seed: " + ",  ".join(parts))
        cfg = res.config
        lines.append(
            f"{res.run.get('model')}, reg layer {reg}, lambda {_lam_text(cfg.lam, res.images.shape[:2], a, b)} (balanced "
            f"{float(res.lam_effective[a, b]):.3g}), {int(res.steps_used[a, b])}/{steps} steps, "
            f"{cfg.param}, {cfg.crops} crops, seed {cfg.seed}"
        )
        if res.failed.get((a, b)):
            lines.append(f"FAILED: {res.failed[(a, b)]}")
        return lines

    def contact_sheet(self, title: str = "") -> Path | None:
        """Draw ``contact_sheet.png`` from every recorded pair (rows seeds, columns targets)."""
        if not self.entries:
            return None
        cells: dict[tuple[int, int], tuple[Image.Image, str]] = {}
        for e in self.entries.values():
            try:
                with Image.open(self.out / e["files"]["image"]) as im:
                    img = im.convert("RGB")
                    img.load()
            except (OSError, KeyError):
                continue
            if e["after"].get("rank") is not None:
                cap = f"rank {e['before']['rank']} -> {e['after']['rank']}, p {_fmt(e['after']['prob'], 2)}"
            else:
                cap = f"value {_fmt(e['before']['value'])} -> {_fmt(e['after']['value'])}"
            if e["status"] != "complete":
                cap = f"[{e['status']}] {cap}"
            cells[(e["seed"], e["target"])] = (img, cap)
        seeds = [(im.name, figures.to_pil(im.tensor) if im.tensor is not None else None)
                 for im in self.images]
        labels = [t.label() for t in self.targets]
        sheet = figures.contact_sheet(seeds, labels, cells, title=title)
        atomic_write(self.out / "contact_sheet.png", figures.png_bytes(sheet))
        self.doc["outputs"]["contact_sheet"] = "contact_sheet.png"
        return self.out / "contact_sheet.png"

    def save(self, status: str | None = None, **extra: Any) -> Path:
        """Rewrite ``run.json`` atomically with every pair recorded so far."""
        if status is not None:
            self.doc["status"] = status
        self.doc.update(extra)
        self.doc["updated"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        pairs = sorted(self.entries.values(), key=lambda e: (e["seed"], e["target"]))
        self.doc["pairs"] = pairs
        counts: dict[str, int] = {}
        for e in pairs:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        counts["total"] = self.total
        counts["resumed"] = sum(1 for e in pairs if e.get("resumed"))
        self.doc["counts"] = counts
        atomic_write(self.path, (json.dumps(self.doc, indent=2, default=str) + "\n").encode())
        return self.path


def versions() -> dict[str, str]:
    """Versions of accentuate, torch, numpy, Pillow and Python."""
    import numpy
    import PIL

    from .._version import __version__

    return {"accentuate": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}

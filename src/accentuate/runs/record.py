"""The run record (``run.json``) and the files of each accentuated pair.

:class:`RunWriter` owns an output folder. For each accentuated pair (one seed
image x one target) it writes, atomically (temporary name, then rename):

- ``{stem}.png``: the accentuation;
- ``{stem}_rgba.png``: the same with the opacity as alpha;
- ``{stem}_figure.png``: seed | accentuation | with opacity | opacity heat map;
- ``{stem}.gif`` (and ``{stem}.mp4`` when a writer is installed): the optimization;
- with ``lossless=True`` (a run of one batch), ``result.npz``: every tensor of the batch
  (:mod:`accentuate.runs.lossless`), listed among each pair's files.

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
import shlex
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .._version import __version__
from ..digest import canonical_sha256, file_sha256, files_intact
from ..metrics import class_rank, pixel_rmse, ssim
from ..outputs import animation, figures
from ..outputs.io import atomic_write
from ..result import Result
from ..settings import Settings
from ..spec import ModelSpec
from .history import pair_history
from .lossless import SIDECAR, labels_of, npz_bytes
from .work import Batch, ImageInfo, Pair, TargetInfo, WorkList, describe_target, pair_stems, slug

__all__ = [
    "FORMAT",
    "ImageInfo",
    "RunWriter",
    "TargetInfo",
    "describe_target",
    "device_record",
    "file_sha256",
    "pair_numbers",
    "pair_stems",
    "run_header",
    "seed_distances",
    "settings_hash",
    "settings_key",
    "slug",
    "versions",
]

#: Identifies the layout of ``run.json``; bumped when a field changes meaning.
FORMAT = "accentuate-run/1"


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``settings`` (sorted keys; :func:`accentuate.digest.canonical_sha256`)."""
    return canonical_sha256(settings)


def settings_key(settings: Settings, frames: int, model_name: str, model_arg: str | None = None) -> str:
    """The hash of what changes a pair's result: the settings, the animation frames, the model (the
    name its spec gives, and the ``--model`` argument it was loaded from, ``None`` from Python) and
    the library's version. Every pair's key starts from it; a run's pairs are resumed only under
    the same key."""
    return settings_hash({"settings": settings.hash(), "frames": frames, "model": model_arg,
                          "model_name": model_name, "accentuate": __version__})


def run_header(*, subcommand: str, argv: Sequence[str] | None, model_arg: str | None, spec: ModelSpec,
               device: torch.device | str, settings: Settings, frames: int,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The part of ``run.json`` that describes the run itself (``docs/run-json.md``): the command
    (``None`` from Python), the model, the device, every setting, the versions, and ``extra``
    sections (``manifest``, ``misclassified``, ...)."""
    return {
        "command": "accentuate " + shlex.join(argv) if argv else None,
        "argv": list(argv or []),
        "subcommand": subcommand,
        "cwd": os.getcwd(),
        "model": {"arg": model_arg, "name": spec.name, "input_size": list(spec.input_size),
                  "classes": len(spec.labels) if spec.labels is not None else None},
        **device_record(device),
        "settings": {**settings.to_dict(), "animation_frames": frames},
        "versions": versions(),
        **(extra or {}),
    }


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


def pair_numbers(d: Mapping[str, torch.Tensor], a: int, b: int, cls: int | None, top: list) -> dict[str, Any]:
    """Value, rank, probability and top-5 of pair ``(a, b)`` from ``Result.before``/``after``.

    The engine gives ranks only when every target of a batch is a class; for a class
    target in a mixed batch they are computed here from the logits, the same way
    (:func:`accentuate.metrics.class_rank`).
    """
    out: dict[str, Any] = {"value": _num(d["value"][a, b].item()) if "value" in d else None,
                           "rank": None, "prob": None, "top5": _top(top[a][b]) if top else []}
    logits = d.get("logits")
    if cls is not None and logits is not None and cls < logits.shape[-1]:
        rank, prob = class_rank(logits[a, b].float(), torch.tensor(cls))
        out["rank"], out["prob"] = int(rank), _num(prob.item())
    return out


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def _distances(dist: Mapping[str, torch.Tensor], hist_dist: torch.Tensor | None, a: int, b: int,
               reg_layer: str) -> dict[str, Any]:
    """Pair ``(a, b)``'s distances to its seed as ``run.json`` records them (``distance``)."""
    return {
        "pixel_rmse": _num(dist["pixel_rmse"][a, b].item()),
        "ssim": _num(dist["ssim"][a, b].item()),
        "reg_layer": _num(dist["reg_layer"][a, b].item()),
        "reg_layer_name": reg_layer,
        "reg_layer_crops_last_step": (
            _num(hist_dist[-1, a, b].item()) if hist_dist is not None and len(hist_dist) else None
        ),
    }


class RunWriter:
    """Writes the files of a run and keeps ``run.json`` up to date.

    The command line, ``Result.save`` and torchrun's ranks change a run's record only
    through these methods: what a pair's entry holds, how pairs are counted and resumed,
    and where the timings go are decided here.

    Args:
        out: the output folder (exists).
        header: the run's description: ``command``, ``model``, ``settings``, ``versions``, ...
            (everything but ``pairs``, ``status`` and timings).
        work: the run's work list (images, targets, pairs with their keys, stems and batches).
        video: write MP4 files when a writer is installed.
        lossless: also keep every tensor of the run in ``result.npz`` (a work list of one batch).

    Raises:
        ValueError: ``lossless`` with a work list of several batches.
    """

    def __init__(self, out: Path, header: dict[str, Any], work: WorkList, video: bool = True,
                 lossless: bool = False) -> None:
        if lossless and len(work.batches) != 1:
            raise ValueError(f"a lossless copy keeps one batch; this work list has {len(work.batches)}")
        self.out = Path(out)
        self.work = work
        self.lossless = lossless
        self.images, self.targets = work.images, work.targets
        self.key = work.settings_key
        self.path = self.out / "run.json"
        self._previous_judges: dict[str, Any] | None = None
        self._judged = False
        self._previous = self._load_previous()
        self._entries: dict[str, dict[str, Any]] = {}
        self.mp4_reason = animation.mp4_available() if video else "disabled (--no-video)"
        now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        self.doc: dict[str, Any] = {
            "format": FORMAT,
            **header,
            "batch": work.batch_size,  # the batches (and so the pictures) depend on it
            "settings_hash": self.key,
            "status": "running",
            "created": now,
            "updated": now,
            "images": [im.record() for im in self.images],
            "targets": [t.record() for t in self.targets],
            "work": work.record(),
            "outputs": {"contact_sheet": None, "gif": True, "mp4": self.mp4_reason is None,
                        "mp4_note": self.mp4_reason},
            "timings": {"batches": []},
            "counts": {},
            "pairs": [],
        }

    # -- identity and resume ---------------------------------------------------------
    def pair_key(self, i: int, j: int) -> str:
        """Identity of pair ``(i, j)`` (:attr:`accentuate.runs.work.Pair.key`)."""
        return self.work.pair(i, j).key

    def _load_previous(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            self._previous_judges = doc.get("judges") if isinstance(doc, dict) else None
            pairs = doc.get("pairs", [])
            return {p["key"]: p for p in pairs if isinstance(p, dict) and "key" in p}
        except (OSError, ValueError, TypeError, KeyError) as e:
            warnings.warn(f"ignoring unreadable {self.path} ({e}); every pair will be redone", stacklevel=2)
            return {}

    def forget_previous(self) -> None:
        """Redo every pair: what ``run.json`` held before is not offered for resuming."""
        self._previous = {}
        self._previous_judges = None

    def offer_previous(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Offer finished pairs that some other record lists (a stopped torchrun job's per-rank
        records) to :meth:`verified`, as if ``run.json`` listed them; returns how many were new."""
        n = 0
        for e in entries:
            if isinstance(e, Mapping) and "key" in e and e.get("status") == "complete":
                old = self._previous.get(e["key"])
                if old is None or old.get("status") != "complete":
                    self._previous[e["key"]] = dict(e)
                    n += 1
        return n

    def verified(self, pair: Pair) -> bool:
        """True when an earlier run recorded ``pair`` as complete with these settings, and every
        file it lists is present with its recorded SHA-256.

        A verified pair is kept in this run's record (marked ``resumed``).
        """
        e = self._previous.get(pair.key)
        if not e or e.get("status") != "complete" or e.get("settings_hash") != self.key:
            return False
        if not files_intact(self.out, e):
            return False
        self._entries[pair.key] = dict(e, seed=pair.image, target=pair.target, resumed=True)
        return True

    def resume(self) -> set[tuple[int, int]]:
        """The pairs of the work list an earlier run finished (:meth:`verified`), kept in the record."""
        return {p.ij for p in self.work if self.verified(p)}

    # -- what the record holds -------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every pair recorded so far, in the work list's order (seed, then target)."""
        return sorted(self._entries.values(), key=lambda e: (e["seed"], e["target"]))

    def own_entries(self) -> list[dict[str, Any]]:
        """The pairs this run wrote itself (not kept from an earlier one)."""
        return [e for e in self._entries.values() if not e.get("resumed")]

    def missing(self) -> list[Pair]:
        """The pairs of the work list not recorded (yet)."""
        return [p for p in self.work if p.key not in self._entries]

    def batches(self) -> list[dict[str, Any]]:
        """The timings of the batches recorded so far."""
        return self.doc["timings"]["batches"]

    def add_sections(self, **sections: Any) -> None:
        """Top-level entries of ``run.json`` (``explain``, ``misclassified``, ``distributed``, ...)."""
        self.doc.update(sections)

    def set_judges(self, section: dict[str, Any]) -> None:
        """``run.json``'s ``judges`` section (:mod:`accentuate.runs.judged`), replacing what an
        earlier run in the folder recorded."""
        self.doc["judges"] = section
        self._judged = True

    def section(self, name: str) -> Any:
        """A top-level entry of ``run.json`` (``None`` when absent)."""
        return self.doc.get(name)

    def add_output(self, kind: str, name: str) -> None:
        """A file of the whole run (``explain_panel``, ...) under ``outputs``."""
        self.doc["outputs"][kind] = name

    def timing(self, **seconds: float | None) -> None:
        """Run-wide timings (``model_load_s``, ``total_s``), rounded to milliseconds."""
        for k, v in seconds.items():
            self.doc["timings"][k] = None if v is None else round(float(v), 3)

    def no_animation(self, note: str = "no animation (--frames 0)") -> None:
        """Record that no GIF or MP4 is written."""
        self.doc["outputs"].update(gif=False, mp4=False, mp4_note=note)

    @property
    def writes_mp4(self) -> bool:
        return bool(self.doc["outputs"].get("mp4"))

    # -- merging other processes' records (torchrun) ----------------------------------
    def drop_foreign(self, rank: int) -> None:
        """Forget the pairs other ranks wrote (to take them again, checked, from their records)."""
        for key in [k for k, e in self._entries.items() if e.get("rank", rank) != rank and not e.get("resumed")]:
            del self._entries[key]

    def merge(self, entries: Iterable[Mapping[str, Any]], batches: Iterable[Mapping[str, Any]], verify: bool) -> None:
        """Add another process's pairs (each pair once: a complete entry wins; with ``verify``,
        only complete pairs whose files are intact) and its batches' timings."""
        for e in entries:
            if not isinstance(e, Mapping) or "key" not in e or "seed" not in e:
                continue
            mine = self._entries.get(e["key"])
            if mine is not None and (mine.get("status") == "complete" or e.get("status") != "complete"):
                continue  # already recorded (each pair once)
            if verify and e.get("status") == "complete" and not files_intact(self.out, e):
                continue
            self._entries[e["key"]] = dict(e)
        known = {b.get("index") for b in self.batches()}
        for b in batches:
            if b.get("index") not in known:
                self.batches().append(dict(b))
                known.add(b.get("index"))
        self.batches().sort(key=lambda b: b.get("index", -1))

    def keep_batches(self, rank: int) -> None:
        """Keep only the timings of the batches ``rank`` ran (before merging the others')."""
        self.doc["timings"]["batches"] = [b for b in self.batches() if b.get("rank", rank) == rank]

    # -- writing ---------------------------------------------------------------------
    def _write(self, name: str, data: bytes, files: dict[str, str], sums: dict[str, str], kind: str) -> None:
        atomic_write(self.out / name, data)
        files[kind] = name
        sums[kind] = hashlib.sha256(data).hexdigest()

    def write_batch(
        self,
        res: Result,
        batch: Batch,
        seconds: float,
        alpha: torch.Tensor | None = None,
        skip: Iterable[tuple[int, int]] = (),
        rank: int | None = None,
        timing: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Write the files of every pair of ``res`` and record them; return the entries.

        Args:
            res: the result of ``batch`` (its seeds are ``batch.seeds``, its targets ``batch.targets``).
            seconds: wall time of the batch.
            alpha: ``(N, M, H, W)`` opacity to use (default: ``res.alpha()``, each
                pair normalized on its own).
            skip: run indices ``(i, j)`` not to write (already complete).
            rank: the torchrun process that made the pairs (written into each entry), or ``None``.
            timing: more about the batch for ``timings.batches[]`` (``rank``, ``generator_seed``,
                ``cuda_peak_memory_bytes``).
        """
        skip = set(skip)
        self.doc["outputs"]["opacity"] = ("per pair" if alpha is None else "collective") if res.has_opacity else None
        if alpha is None:  # a result without opacity (opacity=False): no RGBA file, blank opacity panels
            alpha = res.alpha() if res.has_opacity else torch.zeros_like(res.images[:, :, 0])
        rgba = torch.cat([res.images, alpha[:, :, None]], dim=2)
        reg_layer = str(res.config.regularizer)
        dist = seed_distances(res)
        top_b, top_a = res.top("before", 5), res.top("after", 5)
        steps = res.config.steps
        hist_dist = res.history.distance if "distance" in res.history.keys() else None
        snaps = dict(res.snapshots)
        if snaps and res.steps_done not in snaps:  # stopped early (--until, Ctrl-C): end on the result
            snaps[res.steps_done] = (res.images.clamp(0, 1) * 255).round().to(torch.uint8)
        kept: dict[str, str] = {}
        if self.lossless:
            self._write(SIDECAR, npz_bytes(res), {}, kept, "lossless")
        written = []
        for a, i in enumerate(batch.seeds):
            for b, j in enumerate(batch.targets):
                if (i, j) in skip:
                    continue
                pair = self.work.pair(i, j)
                stem = pair.stem
                tinfo = self.targets[j].record()
                failed = res.failed.get((a, b))
                status = "failed" if failed else "partial" if res.interrupted else "complete"

                cls = self.targets[j].objective.class_index
                before = pair_numbers(res.before, a, b, cls, top_b)
                after = pair_numbers(res.after, a, b, cls, top_a)
                distances = _distances(dist, hist_dist, a, b, reg_layer)
                title = f"{self.images[i].name}  accentuated toward  {tinfo['label']}"
                if status != "complete":
                    title += f"   [{status.upper()}]"
                lines = self._caption(tinfo, before, after, distances, res, a, b, steps)
                files, sums = self._pair_files(res, a, b, stem, rgba, alpha, title, lines, snaps, tinfo["label"])
                if kept:
                    files["lossless"], sums["lossless"] = SIDECAR, kept["lossless"]
                entry = {
                    "key": pair.key, "id": stem, "seed": i, "target": j, "image": self.images[i].name,
                    "target_label": tinfo["label"], "objective": tinfo["objective"], "status": status,
                    "failed": failed, "before": before, "after": after, "distance": distances,
                    "steps_used": int(res.steps_used[a, b]), "steps_done": int(res.steps_done),
                    "lam_effective": _num(res.lam_effective[a, b].item()), "batch": batch.index,
                    "history": pair_history(res.history, a, b), "files": files, "sha256": sums,
                    "settings_hash": self.key, "resumed": False,
                }
                if rank is not None:
                    entry["rank"] = rank
                self._entries[pair.key] = entry
                written.append(entry)
        self.batches().append({
            "seeds": list(batch.seeds), "targets": list(batch.targets), "canvas": list(res.images.shape[-2:]),
            "pairs": len(written), "steps_done": int(res.steps_done), "seconds": round(seconds, 3),
            "interrupted": bool(res.interrupted), "index": batch.index, **(timing or {}),
        })
        self.doc.setdefault("engine_config", {**res.config.to_dict(),
                                              **{k: v for k, v in res.run.items() if k != "targets"}})
        return written

    def _pair_files(self, res: Result, a: int, b: int, stem: str, rgba: torch.Tensor, alpha: torch.Tensor,
                    title: str, lines: list[str], snaps: Mapping[int, torch.Tensor], label: str
                    ) -> tuple[dict[str, str], dict[str, str]]:
        """Write pair ``(a, b)`` of ``res``'s files (image, RGBA, figure, animation); ``(files, sha256)``
        by kind."""
        files: dict[str, str] = {}
        sums: dict[str, str] = {}
        self._write(f"{stem}.png", figures.png_bytes(figures.to_pil(res.images[a, b])), files, sums, "image")
        if res.has_opacity:
            rgba_img = Image.fromarray((rgba[a, b].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy(),
                                       "RGBA")
            self._write(f"{stem}_rgba.png", figures.png_bytes(rgba_img), files, sums, "rgba")
        fig = figures.pair_figure(res.seeds[a] if res.seeds is not None else None, res.images[a, b],
                                  alpha[a, b], title, lines)
        self._write(f"{stem}_figure.png", figures.png_bytes(fig), files, sums, "figure")
        if snaps:
            frames = animation.frames(snaps, a, b, res.config.steps, label=label)
            self._write(f"{stem}.gif", animation.gif_bytes(frames), files, sums, "gif")
            if self.mp4_reason is None:
                try:
                    self._write(f"{stem}.mp4", animation.mp4_bytes(frames), files, sums, "mp4")
                except Exception as e:  # noqa: BLE001 (an optional writer must not end the run)
                    self.mp4_reason = f"MP4 writer failed: {type(e).__name__}: {e}"
                    self.doc["outputs"].update(mp4=False, mp4_note=self.mp4_reason)
        return files, sums

    def _seed_text(self, generator_seed: int | None) -> str:
        """The run's ``--seed`` (what a user types to get the picture again); a batch's own generator
        seed, derived from it, only when the run records none."""
        run_seed = (self.doc.get("settings") or {}).get("seed")
        return str(run_seed if run_seed is not None else generator_seed)

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
            f"{cfg.param}, {cfg.crops} crops, seed {self._seed_text(cfg.seed)}"
        )
        if res.failed.get((a, b)):
            lines.append(f"FAILED: {res.failed[(a, b)]}")
        return lines

    def contact_sheet(self, title: str = "") -> Path | None:
        """Draw ``contact_sheet.png`` from every recorded pair (rows seeds, columns targets)."""
        if not self._entries:
            return None
        cells: dict[tuple[int, int], tuple[Image.Image, str]] = {}
        for e in self._entries.values():
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
        doc = self.document(status, **extra)
        atomic_write(self.path, (json.dumps(doc, indent=2, default=str) + "\n").encode())
        return self.path

    def document(self, status: str | None = None, **extra: Any) -> dict[str, Any]:
        """``run.json`` as :meth:`save` writes it, with every pair recorded so far (what
        :func:`accentuate.runs.saved.result_from_record` reads back before the file is final)."""
        if status is not None:
            self.doc["status"] = status
        self.doc.update(extra)
        self.doc["updated"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        pairs = self.entries()
        self.doc["pairs"] = pairs
        if not self._judged:  # an earlier run's verdict on the pairs resumed unchanged
            from .judged import carry_judges

            carried = carry_judges(self._previous_judges, pairs)
            if carried is None:
                self.doc.pop("judges", None)
            else:
                self.doc["judges"] = carried
        counts: dict[str, int] = {}
        for e in pairs:
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        counts["total"] = len(self.work)
        counts["resumed"] = sum(1 for e in pairs if e.get("resumed"))
        self.doc["counts"] = counts
        kept = self._lossless_entry(pairs) if self.lossless else None
        if kept is not None:
            self.doc["result"] = kept
        return self.doc

    def _lossless_entry(self, pairs: list[dict[str, Any]]) -> dict[str, Any] | None:
        """``run.json``'s ``result``: the lossless copy (``result.npz``), its SHA-256 and class names,
        and which pairs failed, all read from the pairs' entries (so a resumed run records it too)."""
        kept = [e for e in pairs if "lossless" in (e.get("files") or {})]
        if not kept:
            return None
        path = self.out / SIDECAR
        labels = labels_of(path.read_bytes()) if path.is_file() else None
        return {"file": SIDECAR, "sha256": kept[0]["sha256"]["lossless"],
                "labels": list(labels) if labels is not None else None,
                "failed": [[e["seed"], e["target"], e["failed"]] for e in pairs if e["status"] == "failed"],
                "interrupted": any(e["status"] == "partial" for e in pairs),
                "steps_done": max(int(e.get("steps_done") or 0) for e in kept)}


def device_record(device: torch.device | str) -> dict[str, Any]:
    """``device``, ``device_name`` (the GPU's name, or the CPU's architecture) and on CPU
    ``threads`` (torch's intra-op threads: a CPU run's pictures depend on them), as ``run.json``
    records them."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return {"device": str(dev), "device_name": torch.cuda.get_device_name(dev)}
    return {"device": str(dev), "device_name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}


def versions() -> dict[str, str]:
    """Versions of accentuate, torch, numpy, Pillow and Python."""
    import numpy
    import PIL

    return {"accentuate": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__, "python": platform.python_version()}

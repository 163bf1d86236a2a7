"""Saving a :class:`~accentuate.result.Result` as the command line saves a run, and reading it back.

:func:`save_result` (what :meth:`Result.save <accentuate.result.Result.save>` calls)
writes a folder through :class:`~accentuate.runs.record.RunWriter`, the command
line's writer: the same per-pair files named ``{image}__{target}``, the same contact
sheet and the same ``run.json`` (``docs/run-json.md``), plus ``result.npz``, every
tensor of the result in float32, and in ``run.json`` a ``result`` entry that names it
(with its SHA-256), the class names and the targets' definitions.

:func:`load_result` (what :meth:`Result.load <accentuate.result.Result.load>` calls)
reads such a folder exactly, and a command-line output folder (which has no
``result.npz``) from its PNGs and ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..digest import file_sha256
from ..objectives import Channel, Logit, Neuron, Objective, Recorded, from_record
from ..outputs.io import output_folder
from ..result import History, Result
from ..saving import register
from ..settings import FIELDS, Settings
from ..spec import ModelSpec
from .lossless import SIDECAR, read_npz
from .record import FORMAT, RunWriter, run_header, settings_key
from .work import ImageInfo, TargetInfo, WorkList, recorded_work

__all__ = ["SIDECAR", "RecordedObjective", "load_result", "objective_from_record", "objective_record",
           "result_from_record", "save_result"]


# -- targets ---------------------------------------------------------------------------------
#: A target read back without a definition (see :class:`accentuate.objectives.Recorded`).
RecordedObjective = Recorded


def objective_record(obj: Objective) -> dict[str, Any]:
    """A JSON-able definition of ``obj`` (:meth:`~accentuate.objectives.Objective.to_record`)."""
    return obj.to_record()


def objective_from_record(rec: dict[str, Any]) -> Objective:
    """The objective :func:`objective_record` described (:func:`accentuate.objectives.from_record`)."""
    return from_record(rec)


def _target_from_run(t: dict[str, Any]) -> Objective:
    """A target from a ``run.json`` ``targets[]`` entry: its ``definition``; a record written
    before every target had one gives classes, channels and neurons from their description,
    and any other kind as a :class:`RecordedObjective` that keeps its ``repr``."""
    if t.get("definition"):
        return objective_from_record(t["definition"])
    kind = t.get("kind")
    if kind == "class":
        out = Logit(int(t["class_index"]))
        out.name = t.get("class_name")
        return out
    if kind == "channel":
        return Channel(t["layer"], int(t["channel"]))
    if kind == "neuron":
        return Neuron(t["layer"], int(t["channel"]), t.get("y"), t.get("x"))
    return Recorded(str(t.get("objective")), t.get("class_index"))


# -- saving ----------------------------------------------------------------------------------
def save_result(
    res: Result,
    directory: str | os.PathLike,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``res`` to ``directory`` as the command line writes a run, plus ``result.npz``.

    See :meth:`accentuate.result.Result.save`.

    Raises:
        ValueError: ``names`` does not give one name per seed.
        OutputError: the folder or a file cannot be written.
    """
    out = output_folder(directory)
    n, m = res.images.shape[:2]
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n:
            raise ValueError(f"names has {len(names)} entries for {n} seed(s); give one name per seed")
    else:
        names = [str(x) for x in res.run.get("seed_names") or ()]
        if len(names) != n:
            names = [f"seed{i}" for i in range(n)]
    run = res.run
    hw = tuple(res.images.shape[-2:])
    infos = []
    for i in range(n):
        seed = res.seeds[i] if res.seeds is not None else None
        content = (seed.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().tobytes() if seed is not None else b""
        infos.append(ImageInfo(path=names[i], name=names[i], sha256=hashlib.sha256(content).hexdigest(),
                               size=(int(hw[1]), int(hw[0])), canvas=hw, tensor=seed))  # type: ignore[arg-type]
    targets = [TargetInfo(repr(o), o) for o in res.targets]
    input_size = tuple(run.get("input_size") or (224, 224))
    spec = ModelSpec(name=str(run.get("model", "custom")), input_size=input_size, labels=res.labels)  # type: ignore[arg-type]
    frames = len(res.snapshots)
    header = run_header(subcommand="Result.save", argv=None, model_arg=None, spec=spec,
                        device=str(run.get("device") or "cpu"), settings=res.config, frames=frames)
    work = WorkList(infos, targets, settings_key(res.config, frames, spec.name), batch_size=n * m)  # one batched run
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ignoring unreadable")  # an unreadable run.json is replaced
        writer = RunWriter(out, header, work, lossless=True)
    writer.forget_previous()
    entries = writer.write_batch(res, work.batches[0], float(run.get("seconds") or 0.0))
    if res.judgement is not None:
        from .judged import judgement_section

        writer.set_judges(judgement_section(res.judgement, entries))
    writer.timing(total_s=run.get("seconds"))
    sheet = writer.contact_sheet(f"{spec.name}: rows are seeds, columns are targets")
    path = writer.save("interrupted" if res.interrupted else "complete")
    written = sorted({out / name for e in entries for name in e["files"].values()})
    written += ([sheet] if sheet is not None else []) + [path]
    return written


# -- loading ---------------------------------------------------------------------------------
def _read_png(path: Path, mode: str) -> torch.Tensor:
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} is listed in run.json but missing; rerun the command to redo it")
    with Image.open(path) as im:
        arr = np.asarray(im.convert(mode), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).float().div_(255)


def _span(values: list[int]) -> str:
    """``0..3`` for consecutive values, else the list."""
    if values and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values)) or "none"


def _pick(doc: dict[str, Any], seeds: Sequence[int | str] | None) -> list[int]:
    n = len(doc.get("images", []))
    if seeds is None:
        return list(range(n))
    names = [im.get("name") for im in doc["images"]]
    picked = []
    for s in seeds:
        if isinstance(s, int) and 0 <= s < n:
            picked.append(s)
        elif isinstance(s, str) and s in names:
            picked.append(names.index(s))
        else:
            raise ValueError(f"seeds: {s!r} is not an image of this run (indices 0..{n - 1} or names "
                             f"{', '.join(map(repr, names[:5]))}{', ...' if n > 5 else ''})")
    return picked


def _seeds_from_files(doc: dict[str, Any], idx: list[int], hw: tuple[int, int]) -> torch.Tensor | None:
    """The seed images from their recorded paths, if every file is there with its SHA-256."""
    from ..images import load_image, prepare_seeds

    out = []
    for i in idx:
        im = doc["images"][i]
        p = Path(im.get("path", ""))
        if not p.is_absolute():
            p = Path(doc.get("cwd") or ".") / p
        if not p.is_file() or file_sha256(p) != im.get("sha256"):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append(prepare_seeds(load_image(p), hw)[0])
        except ValueError:
            return None
    return torch.stack(out)


def load_result(path: str | os.PathLike, seeds: Sequence[int | str] | None = None,
                batch: int | None = None) -> Result:
    """Read a folder written by :func:`save_result` or by the command line.

    See :meth:`accentuate.result.Result.load`.
    """
    p = Path(path)
    folder = p.parent if p.is_file() else p
    run = folder / "run.json"
    if not run.is_file():
        raise FileNotFoundError(f"no run.json in {str(folder)!r}; Result.load reads folders written by "
                                "Result.save or `accentuate run`")
    try:
        doc = json.loads(run.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {str(run)!r} ({e}); it is not a run record") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"{str(run)!r} has format {got!r}, not {FORMAT!r}; it was not written by this "
                         "version's Result.save or command line")
    return result_from_record(folder, doc, seeds, batch)


def result_from_record(folder: Path, doc: dict[str, Any], seeds: Sequence[int | str] | None = None,
                       batch: int | None = None) -> Result:
    """The result a run record ``doc`` (``run.json``'s content) of ``folder`` describes: see
    :func:`load_result`, which reads the record from the folder first."""
    from .judged import judgement_from_record

    res, idx, cols = _result_from_record(folder, doc, seeds, batch)
    verdict = judgement_from_record(doc.get("judges"))
    if verdict is not None:
        res.judgement = verdict.subset({i: a for a, i in enumerate(idx)}, {j: b for b, j in enumerate(cols)})
    return res


def _result_from_record(folder: Path, doc: dict[str, Any], seeds: Sequence[int | str] | None,
                        batch: int | None) -> tuple[Result, list[int], list[int]]:
    work = recorded_work(doc)
    pairs = {(e["seed"], e["target"]): e for e in doc.get("pairs", [])}
    if batch is not None:
        if seeds is not None:
            raise ValueError("give seeds= or batch=, not both")
        asked = work.batch_pairs(batch)
        if not asked:
            known = sorted({b for b in work.batches if b is not None})
            raise ValueError(f"run.json in {str(folder)!r} has no batch {batch!r} (its batches: "
                             f"{_span(known)}); give one of those")
        idx = sorted({i for i, _ in asked})
        cols = sorted({j for _, j in asked})
    else:
        idx = _pick(doc, seeds)
        wanted = [(i, j) for i, j in work.pairs if i in set(idx)]
        cols = sorted({j for _, j in wanted})
        if len(wanted) != len(idx) * len(cols):
            known = sorted({b for b in work.batches if b is not None})
            raise ValueError(f"run.json in {str(folder)!r} records a {work.kind} work list of {len(work.pairs)} "
                             f"pair(s) that is not every image x every target; load it one batch at a time: "
                             f"Result.load(folder, batch=k) for k in {_span(known)}")
    missing = [(i, j) for i in idx for j in cols if (i, j) not in pairs]
    if missing:
        raise ValueError(f"run.json in {str(folder)!r} records {len(pairs)} of {len(work.pairs)} pairs "
                         f"(e.g. image {missing[0][0]} x target {missing[0][1]} is missing); rerun "
                         f"its command with the same --out to finish it")
    canvases = sorted({tuple(doc["images"][i]["canvas"]) for i in idx})
    if len(canvases) > 1:
        raise ValueError(f"the images of {str(folder)!r} have {len(canvases)} canvas sizes {canvases}; "
                         "load the images of one size with seeds=[...] (indices or names)")
    meta = doc.get("result") or {}
    recorded = dict(doc.get("engine_config") or doc.get("settings") or {})
    fields = set(FIELDS)
    own = dict((doc["targets"][cols[0]].get("settings") or {}) if cols else {})  # a manifest row's settings
    config = Settings.from_dict({**{k: v for k, v in recorded.items() if k in fields}, **own})
    if batch is not None:  # the batch's own generator seed, as recorded
        seed = next((b.get("generator_seed") for b in (doc.get("timings") or {}).get("batches") or []
                     if b.get("index") == batch and b.get("generator_seed") is not None), None)
        config = config.replace(seed=seed) if seed is not None else config
    run_info = {k: v for k, v in recorded.items() if k not in fields and k != "animation_frames"}
    targets = [_target_from_run(doc["targets"][j]) for j in cols]
    run_info["targets"] = [repr(o) for o in targets]
    labels = tuple(meta["labels"]) if meta.get("labels") is not None else None
    sidecar = folder / str(meta.get("file", SIDECAR)) if meta else None
    if sidecar is not None and sidecar.is_file():
        data = sidecar.read_bytes()
        if hashlib.sha256(data).hexdigest() == meta.get("sha256"):
            pos = {i: a for a, i in enumerate(idx)}
            failed = {(pos[a], b): str(msg) for a, b, msg in meta.get("failed", []) if a in pos}
            return read_npz(data, idx, cols, targets, config, run_info, failed,
                            bool(meta.get("interrupted", False)), int(meta.get("steps_done", 0)), labels), idx, cols
        warnings.warn(f"{str(sidecar)!r} does not match its SHA-256 in run.json; reading the PNGs instead",
                      stacklevel=3)
    return _from_pngs(folder, doc, idx, cols, pairs, targets, labels, config, run_info), idx, cols


def _from_pngs(folder: Path, doc: dict[str, Any], idx: list[int], cols: list[int],
               pairs: dict[tuple[int, int], dict[str, Any]], targets: list[Objective],
               labels: tuple[str, ...] | None, config: Settings, run: dict[str, Any]) -> Result:
    images, masks = [], []
    for i in idx:
        row_i, row_m = [], []
        for j in cols:
            files = pairs[(i, j)].get("files") or {}
            img = _read_png(folder / files["image"], "RGB")
            row_i.append(img.permute(2, 0, 1))
            if "rgba" in files:
                row_m.append(_read_png(folder / files["rgba"], "RGBA")[..., 3])
            else:
                row_m.append(torch.zeros(img.shape[:2]))
        images.append(torch.stack(row_i))
        masks.append(torch.stack(row_m))
    img_t, mask_t = torch.stack(images), torch.stack(masks)
    entries = [[pairs[(i, j)] for j in cols] for i in idx]

    def grid(get: Any) -> torch.Tensor:
        return torch.tensor([[float("nan") if get(e) is None else float(get(e)) for e in row] for row in entries])

    before: dict[str, torch.Tensor] = {}
    after: dict[str, torch.Tensor] = {}
    for which, d in (("before", before), ("after", after)):
        d["value"] = grid(lambda e, w=which: e[w].get("value"))
        if all(e[which].get("rank") is not None for row in entries for e in row):
            d["rank"] = grid(lambda e, w=which: e[w]["rank"]).long()
            d["prob"] = grid(lambda e, w=which: e[w]["prob"])
    failed = {(a, b): str(e["failed"] or "failed") for a, row in enumerate(entries) for b, e in enumerate(row)
              if e.get("status") == "failed"}
    interrupted = doc.get("status") == "interrupted" or any(e.get("status") == "partial" for row in entries for e in row)
    return Result(
        images=img_t, masks=mask_t, seeds=_seeds_from_files(doc, idx, tuple(img_t.shape[-2:])),  # type: ignore[arg-type]
        targets=targets, labels=labels, history=History(), before=before, after=after,
        steps_used=grid(lambda e: e.get("steps_used")).long(), lam_effective=grid(lambda e: e.get("lam_effective")),
        failed=failed, config=config, run=run, interrupted=interrupted,
        steps_done=max(int(e.get("steps_done") or 0) for row in entries for e in row),
    )


# Result.save / Result.load call these (see accentuate.saving: the value type does not import its writer).
register(save_result, load_result)

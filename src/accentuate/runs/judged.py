"""A run judged: each pair's accentuation and seed shown to other models (``--judge``, ``evaluate``).

The judging itself is :func:`accentuate.judges.judge_pairs`; this module reads the pairs of an
output folder (each accentuation's PNG, and its seed on its canvas) and writes the verdict into
``run.json`` as its ``judges`` section:

- ``judges``: per judge its :meth:`~accentuate.judges.Judge.describe` (name, input size, crop,
  the feature layer, a digest of its weights, its classes);
- ``pairs``: per pair and judge, in the run's order: ``key``, ``seed``, ``target`` (the pair's
  identity and indices), ``image_sha256`` (of the PNG judged), ``judge``, ``class``,
  ``rank_before``, ``prob_before``, ``rank_after``, ``prob_after``, ``feature_cosine``,
  ``feature_change`` and ``note``;
- ``summary``: per judge the top-1 and top-5 rates and median rank before and after, and the
  mean feature change; ``notes``.

A rerun in the same folder without ``--judge`` keeps the rows of the pairs it resumed
unchanged (same key, same PNG); with ``--judge`` the run is judged again.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..digest import file_sha256
from ..errors import JudgeError, UsageError
from ..judges import DEFAULT_JUDGES, Judge, Judgement, judge_pairs, weights_digest

__all__ = ["carry_judges", "judge_folder", "judge_record", "judgement_from_record", "judgement_section",
           "load_judges"]


def load_judges(names: Sequence[str], model: nn.Module | None = None,
                model_names: Sequence[str | None] = ()) -> list[Judge]:
    """The judges named on the command line, each checked against the model accentuated.

    Raises:
        JudgeError: a judge equal to the model (the same module, the same weights, or named as the
            model is), or two judges of one name.
        ModelNameError: a name ``load_model`` cannot load.
    """
    if len(set(names)) != len(names):
        dup = next(n for n in names if list(names).count(n) > 1)
        raise JudgeError(f"--judge names {dup!r} twice; give each judge once")
    digest = weights_digest(model) if model is not None else None
    called = {str(n) for n in model_names if n}
    out = []
    for name in names:
        if name in called:
            raise JudgeError(f"judge {name!r} is the model that was accentuated; a judge must be another "
                             "model, e.g. one of " + ", ".join(DEFAULT_JUDGES))
        j = Judge.of(name)
        if (model is not None and j.model is model) or (digest is not None and weights_digest(j.model) == digest):
            raise JudgeError(f"judge {name!r} has the weights of the model that was accentuated; a judge must be "
                             "another model, e.g. one of " + ", ".join(DEFAULT_JUDGES))
        out.append(j)
    return out


def _seed_of(doc: dict[str, Any], i: int, given: dict[str, torch.Tensor], notes: list[str]) -> torch.Tensor | None:
    """Seed ``i`` on its canvas: the one the command has, else read from its recorded path when the
    file is there unchanged (else ``None``: no "before" for its pairs)."""
    from ..images import load_image, prepare_seeds

    im = doc["images"][i]
    if im.get("noise"):
        return None
    sha = str(im.get("sha256") or "")
    if sha in given:
        return given[sha]
    p = Path(im.get("path", ""))
    if not p.is_absolute():
        p = Path(doc.get("cwd") or ".") / p
    if not p.is_file() or file_sha256(p) != sha:
        notes.append(f"seed {im.get('name', i)!r} is not at {str(p)!r} as recorded: its pairs have no 'before' "
                     "and no feature change")
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed = prepare_seeds(load_image(p), tuple(im.get("canvas") or (512, 512)))[0]
    given[sha] = seed
    return seed


def judge_record(folder: str | Path, doc: dict[str, Any], judges: Sequence[Judge], *,
                 labels: Sequence[str] | None = None, seeds: dict[str, torch.Tensor] | None = None,
                 model: nn.Module | None = None, batch: int = 16) -> dict[str, Any]:
    """The ``judges`` section of ``run.json`` for the pairs ``doc`` records (complete, partial or
    failed with a picture), judged by ``judges``.

    Args:
        folder: the output folder (the PNGs are read from it).
        doc: ``run.json``'s content.
        judges: the judges (:func:`load_judges`).
        labels: the accentuated model's class names (to find a class in a judge with other names).
        seeds: seed images on their canvas by the SHA-256 ``run.json`` records (the command that
            ran has them); others are read from their recorded paths.
        model: the model accentuated (a judge equal to it is refused).
    """
    from ..images import load_image

    folder = Path(folder)
    given = dict(seeds or {})
    notes: list[str] = []
    targets = doc.get("targets") or []
    entries = [e for e in doc.get("pairs") or [] if (e.get("files") or {}).get("image")
               and (folder / e["files"]["image"]).is_file()]
    seed_t: dict[int, torch.Tensor | None] = {}
    pair_seeds, images, classes, shown = [], [], [], []
    for e in entries:
        i, j = int(e["seed"]), int(e["target"])
        if i not in seed_t:
            seed_t[i] = _seed_of(doc, i, given, notes)
        pair_seeds.append(seed_t[i])
        images.append(load_image(folder / e["files"]["image"]))
        index = targets[j].get("class_index") if j < len(targets) else None  # a class target's index
        classes.append(int(index) if isinstance(index, int) else None)
        shown.append(str(e.get("target_label") or (doc["targets"][j].get("label") if j < len(doc["targets"]) else j)))
    model_names = [(doc.get("model") or {}).get(k) for k in ("arg", "name")]
    if entries:
        verdict = judge_pairs(pair_seeds, images, classes, judges, labels=labels, target_labels=shown,
                              model=model, model_name=None if model is not None else [n for n in model_names if n],
                              batch=batch)
    else:
        verdict = Judgement([j.describe() for j in judges], [], [])
    for r in verdict.rows:
        e = entries[r["pair"]]
        r.update(key=e.get("key"), seed=int(e["seed"]), target=int(e["target"]),
                 image_sha256=(e.get("sha256") or {}).get("image"))
        del r["pair"]
    return {"judges": verdict.judges, "pairs": verdict.rows, "summary": verdict.summary(),
            "notes": list(dict.fromkeys(notes + verdict.notes))}


def judgement_from_record(section: dict[str, Any] | None) -> Judgement | None:
    """The :class:`~accentuate.judges.Judgement` a ``run.json`` ``judges`` section holds (``None``
    when there is none)."""
    if not isinstance(section, dict) or not isinstance(section.get("judges"), list):
        return None
    rows = [dict(r) for r in section.get("pairs") or [] if isinstance(r, dict)]
    return Judgement(list(section["judges"]), rows, list(section.get("notes") or []))


def judge_folder(folder: str | Path, judges: Sequence[str], *, model: nn.Module | None = None,
                 batch: int = 16) -> tuple[Path, dict[str, Any]]:
    """Judge a finished output folder (``accentuate evaluate``): its ``run.json`` gets (or has
    replaced) its ``judges`` section, written atomically. Returns the record's path and the section.

    ``model``: the model accentuated, when it can be loaded (its weights refuse a judge that has
    them; its class names find classes in judges with other names); without it a judge named as
    ``run.json``'s model is refused.

    Raises:
        UsageError: no ``run.json`` in the folder, or one that cannot be read.
        JudgeError: a judge equal to the model.
    """
    from ..outputs.io import atomic_write

    folder = Path(folder)
    path = folder / "run.json"
    if not path.is_file():
        raise UsageError(f"no run.json in {str(folder)!r}; give an output folder of accentuate run or explain")
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {str(path)!r} ({e}); rerun the command that wrote it") from None
    if not doc.get("pairs"):
        raise UsageError(f"{str(path)!r} records no pairs yet; rerun its command with the same --out to finish it")
    m = doc.get("model") or {}
    found = load_judges(judges, model, [m.get("arg"), m.get("name")])
    labels = getattr(getattr(model, "accentuate_spec", None), "labels", None) if model is not None else None
    section = judge_record(folder, doc, found, labels=labels, model=model, batch=batch)
    doc["judges"] = section
    atomic_write(path, (json.dumps(doc, indent=2, default=str) + "\n").encode())
    return path, section


def judgement_section(verdict: Judgement, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``judges`` section of a :class:`~accentuate.judges.Judgement` of a result whose pairs
    ``entries`` (``run.json``'s) record (``Result.save``): each row with its pair's key and PNG."""
    by_pair = {(int(e["seed"]), int(e["target"])): e for e in entries}
    rows = []
    for r in verdict.rows:
        e = by_pair.get((int(r.get("seed", -1)), int(r.get("target", -1))))
        if e is None:
            continue
        row = {k: v for k, v in r.items() if k != "pair"}
        rows.append(dict(row, key=e.get("key"), image_sha256=(e.get("sha256") or {}).get("image")))
    kept = Judgement(list(verdict.judges), rows, list(verdict.notes))
    return {"judges": kept.judges, "pairs": rows, "summary": kept.summary(), "notes": kept.notes}


def carry_judges(previous: dict[str, Any] | None, entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """An earlier run's ``judges`` section, kept for the pairs a rerun resumed unchanged (same
    key, same PNG); ``None`` when none is left."""
    if not isinstance(previous, dict) or not isinstance(previous.get("judges"), list):
        return None
    same = {(e.get("key"), (e.get("sha256") or {}).get("image")) for e in entries if e.get("resumed")}
    rows = [r for r in previous.get("pairs") or [] if (r.get("key"), r.get("image_sha256")) in same]
    if not rows:
        return None
    verdict = Judgement(list(previous["judges"]), rows, list(previous.get("notes") or []))
    return {"judges": verdict.judges, "pairs": rows, "summary": verdict.summary(), "notes": verdict.notes}


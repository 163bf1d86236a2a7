"""Manifests: a work list written as a file (``accentuate run --manifest FILE``).

A manifest is a CSV with the header ``image,target`` and the optional columns ``lam``,
``steps``, ``reg_layer``, ``until``, or JSON Lines with the same fields; each row asks for one
pair (a seed image toward a target, with its own settings). Paths in a manifest are relative to
the manifest's folder.

:func:`read_manifest` reads the rows (every cell checked, each error naming its row);
:func:`resolve_manifest` reads each row's target against the model
(:func:`accentuate.objectives.parse_target`) and gives the images, targets and pairs of the
run's :class:`~accentuate.runs.work.WorkList`, which cuts them into batches.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AccentuateError, UsageError
from ..hooks import ModelRunner
from ..objectives import parse_target
from ..settings import Settings
from .work import ImageInfo, TargetInfo

__all__ = ["MANIFEST_COLUMNS", "ManifestRow", "check_manifest_images", "read_manifest", "resolve_manifest"]

#: The columns a manifest may have (``image`` and ``target`` are required).
MANIFEST_COLUMNS = ("image", "target", "lam", "steps", "reg_layer", "until")
#: The per-row settings columns, with the type each cell is read as.
_SETTING_COLUMNS = {"lam": float, "steps": int, "reg_layer": str, "until": str}


@dataclass(frozen=True)
class ManifestRow:
    """One row of a manifest: ``where`` names it in errors (``m.csv line 3``)."""

    where: str
    image: Path
    target: str
    settings: tuple[tuple[str, Any], ...] = ()


def _fail(where: str, problem: str, fix: str) -> UsageError:
    return UsageError(f"{where}: {problem}; {fix}")


def _cell(where: str, column: str, value: Any) -> Any:
    """A settings cell as its type (``None`` for an empty cell)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    kind = _SETTING_COLUMNS[column]
    if isinstance(value, str):
        value = value.strip()
    try:
        if kind is str:
            v: Any = str(value)
        else:
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if kind is int:
                if not v.is_integer():
                    raise ValueError
                v = int(v)
    except (TypeError, ValueError):
        raise _fail(where, f"{column} {value!r} is not a{'n integer' if kind is int else ' number'}",
                    f"write a number in the {column} column or leave it empty") from None
    return v


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """The rows of a CSV or JSON Lines manifest, checked for form (not yet for content).

    A file whose name ends in ``.jsonl``/``.ndjson`` (or whose first character is
    ``{``) is JSON Lines; anything else is CSV. Image paths are made relative to the
    manifest's folder (absolute ones are kept).

    Raises:
        UsageError: the file is missing or empty, a required column is missing, a column is
            unknown, a row has no image or target, or a cell is not a number; one line that
            names the row and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"manifest not found: {str(path)!r}; check the path given to --manifest")
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read manifest {str(path)!r} ({e}); give a UTF-8 CSV or JSON Lines file") from None
    base = path.parent
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson") or text.lstrip().startswith("{")
    raw: list[tuple[str, dict[str, Any]]] = []
    if jsonl:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name} line {n}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise _fail(where, f"not JSON ({e.args[0] if e.args else e})",
                            'write one object per line, e.g. {"image": "cat.jpg", "target": "goldfish"}') from None
            if not isinstance(obj, dict):
                raise _fail(where, "not a JSON object", 'write one object per line, e.g. {"image": "cat.jpg", '
                            '"target": "goldfish"}')
            raw.append((where, obj))
    else:
        lines = text.splitlines()
        reader = csv.reader(lines)
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)
        if header is None:
            raise UsageError(f"manifest {path.name} is empty; write a header line 'image,target' and one row per "
                             "pair, e.g. 'cat.jpg,goldfish'")
        names = [h.strip().lower() for h in header]
        for h in names:
            if h not in MANIFEST_COLUMNS:
                raise _fail(f"{path.name} line 1", f"unknown column {h!r}",
                            f"the columns are {', '.join(MANIFEST_COLUMNS)} (image and target required)")
        for need in ("image", "target"):
            if need not in names:
                raise _fail(f"{path.name} line 1", f"no {need!r} column",
                            "the header must name the columns, e.g. 'image,target' or 'image,target,lam'")
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            where = f"{path.name} line {reader.line_num}"
            if len(row) > len(names):
                raise _fail(where, f"{len(row)} cells for {len(names)} columns",
                            "quote cells that contain commas, e.g. \"tiger cat\"")
            raw.append((where, {k: v for k, v in zip(names, row)}))
    if not raw:
        raise UsageError(f"manifest {path.name} has no rows; add one line per pair, e.g. 'cat.jpg,goldfish'")
    rows = []
    for where, obj in raw:
        unknown = [k for k in obj if k not in MANIFEST_COLUMNS]
        if unknown:
            raise _fail(where, f"unknown field {unknown[0]!r}", f"the fields are {', '.join(MANIFEST_COLUMNS)}")
        image, target = obj.get("image"), obj.get("target")
        if image is None or not str(image).strip():
            raise _fail(where, "no image", "give the image's path (relative to the manifest)")
        if target is None or not str(target).strip():
            raise _fail(where, "no target", "give a class name, a class index or LAYER:CHANNEL")
        settings = tuple((k, v) for k in _SETTING_COLUMNS if (v := _cell(where, k, obj.get(k))) is not None)
        p = Path(str(image).strip()).expanduser()
        rows.append(ManifestRow(where, p if p.is_absolute() else base / p, str(target).strip(), settings))
    return rows


def check_manifest_images(rows: Sequence[ManifestRow]) -> None:
    """Fail fast (before a model is loaded) on a row whose image does not exist or is a folder."""
    for r in rows:
        if not r.image.exists():
            raise _fail(r.where, f"image not found: {str(r.image)!r}",
                        "fix the path (paths are relative to the manifest's folder) or remove the row")
        if r.image.is_dir():
            raise _fail(r.where, f"{str(r.image)!r} is a folder", "name one image file per row")


def resolve_manifest(
    rows: Sequence[ManifestRow],
    runner: ModelRunner,
    settings: Settings,
    load_images: Callable[[list[tuple[str, bool]]], list[ImageInfo]],
) -> tuple[list[ImageInfo], list[TargetInfo], list[tuple[int, int]], list[str]]:
    """The manifest's images, targets and pairs, every row checked before any work.

    Each row's target is parsed against the runner's model (:func:`~accentuate.objectives.parse_target`,
    with the command's ``runner``) and its
    settings resolved on top of ``settings`` (a regularization layer must exist, ``until``
    needs a class target). Images are read once each with ``load_images(paths)`` (a path
    marked ``True`` may be skipped when unreadable; its rows are left out). A row repeated
    exactly is one pair (with a warning).

    Returns:
        ``(images, targets, pairs, rows)``: ``pairs`` index ``images`` and ``targets`` in the
        manifest's order, ``rows`` names the row of each pair (``m.csv line 3``).

    Raises:
        UsageError: an unknown target, an invalid setting; the message names the row.
    """
    check_manifest_images(rows)
    targets: list[TargetInfo] = []
    columns: dict[tuple[str, str], int] = {}
    resolved: dict[str, Settings] = {}
    row_cols: list[int] = []
    for r in rows:
        try:
            obj = parse_target(r.target, runner.model, runner.spec, runner)
        except (AccentuateError, ValueError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise UsageError(f"{r.where}: target {r.target!r}: {msg}") from None
        over = dict(r.settings)
        okey = json.dumps(over, sort_keys=True)
        if okey not in resolved:
            try:
                resolved[okey] = (Settings.resolve(runner.model, runner.spec, settings, runner=runner, **over)
                                  if over else settings)
            except (AccentuateError, ValueError, TypeError) as e:
                raise UsageError(f"{r.where}: {e}; fix the cell or leave it empty for the run's value") from None
        s = resolved[okey]
        try:
            s.check_targets([obj])
        except ValueError as e:
            raise _fail(r.where, f"{e} ({r.target!r} is not one)",
                        "leave until empty on this row or use a class target") from None
        full = s.to_dict()
        own = {k: full[k] for k in over}
        ckey = (obj.identity(), json.dumps(own, sort_keys=True, default=str))
        if ckey not in columns:
            columns[ckey] = len(targets)
            targets.append(TargetInfo(r.target, obj, own))
        row_cols.append(columns[ckey])

    paths: list[str] = []
    index: dict[str, int] = {}
    for r in rows:
        key = str(r.image.resolve())
        if key not in index:
            index[key] = len(paths)
            paths.append(str(r.image))
    images = load_images([(p, True) for p in paths])
    loaded = {str(Path(im.path).resolve()): k for k, im in enumerate(images)}
    pairs: list[tuple[int, int]] = []
    where: list[str] = []
    seen: set[tuple[int, int]] = set()
    for r, j in zip(rows, row_cols):
        i = loaded.get(str(r.image.resolve()))
        if i is None:  # unreadable: skipped and listed by load_images
            continue
        if (i, j) in seen:
            warnings.warn(f"{r.where} repeats an earlier row; it is done once", stacklevel=2)
            continue
        seen.add((i, j))
        pairs.append((i, j))
        where.append(r.where)
    used = sorted({j for _, j in pairs})
    if len(used) < len(targets):  # targets whose every image was skipped: renumber the columns
        remap = {j: k for k, j in enumerate(used)}
        targets = [targets[j] for j in used]
        pairs = [(i, remap[j]) for i, j in pairs]
    return images, targets, pairs, where

"""Reading a study's files: ``trials.json`` and the participants' response files (jsPsych's JSON
or CSV, as the page downloads them or ``accentuate study serve`` saves them)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import UsageError

__all__ = ["FORMAT", "ID_PATTERN", "read_responses", "read_trials", "response_files"]

#: The format tag of ``trials.json`` (written by :func:`accentuate.study.build`).
FORMAT = "accentuate-study/1"
#: Study and participant ids: safe in file names and URLs.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _fail(where: Path, what: str) -> UsageError:
    return UsageError(f"{where}: {what}; make the study folder again with `accentuate study build`")


def _image(directory: Path, trials_json: Path, trial_id: str, path: Any) -> str:
    """The checked relative POSIX path of one image of a trial."""
    p = PurePosixPath(path) if isinstance(path, str) else None
    if p is None or not path or "\\" in path or p.is_absolute() or ".." in p.parts or ":" in path:
        raise _fail(trials_json, f"trial {trial_id!r} has image {path!r}, not a relative path inside the folder")
    if not (directory / p).is_file():
        raise _fail(trials_json, f"trial {trial_id!r} needs {path!r}, which is missing")
    return str(p)


def _check_trial(directory: Path, trials_json: Path, trial: Any, seen: set[str]) -> None:
    if not isinstance(trial, dict) or not isinstance(trial.get("id"), str) or not trial["id"]:
        raise _fail(trials_json, f"a trial without an id: {str(trial)[:80]}")
    tid = trial["id"]
    if tid in seen:
        raise _fail(trials_json, f"trial id {tid!r} is used twice")
    seen.add(tid)
    refs, queries = trial.get("references"), trial.get("queries")
    if (not isinstance(refs, dict) or not all(isinstance(refs.get(k), list) for k in ("strong", "weak"))
            or not isinstance(queries, list) or len(queries) != 2 or trial.get("stronger") not in (0, 1)
            or isinstance(trial.get("stronger"), bool)
            or not all(isinstance(trial.get(k), str) for k in ("feature", "condition"))):
        raise _fail(trials_json, f"trial {tid!r} needs feature, condition, references {{strong, weak}}, "
                                 "two queries and stronger 0 or 1")
    for path in [*refs["strong"], *refs["weak"], *queries]:
        _image(directory, trials_json, tid, path)


def read_trials(directory: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of ``DIR/trials.json``.

    Raises:
        UsageError: the folder or its trials.json is missing, or trials.json is not a study of
            this format (a bad id, a trial without its fields, an image missing from the folder).
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise UsageError(f"no study folder {str(folder)!r}; make one with `accentuate study build`")
    path = folder / "trials.json"
    if not path.is_file():
        raise UsageError(f"no trials.json in {str(folder)!r}; make the study folder with `accentuate study build`")
    try:
        study = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _fail(path, f"cannot be read ({e})") from None
    if not isinstance(study, dict) or study.get("format") != FORMAT:
        got = study.get("format") if isinstance(study, dict) else type(study).__name__
        raise _fail(path, f"format is {got!r}, not {FORMAT!r}")
    if not isinstance(study.get("study_id"), str) or not ID_PATTERN.fullmatch(study["study_id"]):
        raise _fail(path, f"study_id {study.get('study_id')!r} is not 1 to 64 letters, digits, '-' or '_'")
    keys = study.setdefault("keys", {"left": "f", "right": "j"})
    if (not isinstance(keys, dict) or not all(isinstance(keys.get(k), str) and keys[k] for k in ("left", "right"))
            or keys["left"].lower() == keys["right"].lower()):
        raise _fail(path, f"keys {keys!r} are not two different keys {{'left': ..., 'right': ...}}")
    trials = study.get("trials")
    if not isinstance(trials, list) or not trials:
        raise _fail(path, "it has no trials")
    seen: set[str] = set()
    for trial in trials:
        _check_trial(folder, path, trial, seen)
    return study


def response_files(directory: Path) -> list[Path]:
    """The participants' files saved in ``DIR/responses`` (JSON and CSV), by name."""
    folder = directory / "responses"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".csv") and p.is_file())


def _value(v: Any) -> Any:
    """A CSV cell as JSON would have it (jsPsych's CSV writes ``true``/``false`` and numbers as text)."""
    if not isinstance(v, str):
        return v
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("", "null"):
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"response file {path} cannot be read ({type(e).__name__}); remove it or replace it") from None
    if path.suffix.lower() == ".csv":
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(text.splitlines())]
    try:
        data = json.loads(text)
    except ValueError:
        raise UsageError(f"response file {path} is not JSON (jsPsych's data, a list of rows); remove it or "
                         "replace it with the file the page saved") from None
    if isinstance(data, dict) and isinstance(data.get("trials"), list):
        data = data["trials"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UsageError(f"response file {path} is not a list of rows (jsPsych's data); replace it with the file "
                         "the page saved")
    return data


def read_responses(path: str | os.PathLike, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The trial rows of one response file, checked to belong to the study ``doc``.

    Rows without a ``trial_id`` (the consent, instructions and preload screens) are dropped.

    Raises:
        UsageError: the file cannot be read, holds no trial, or belongs to another study.
    """
    path = Path(path)
    rows = [r for r in _rows(path) if r.get("trial_id") is not None]
    if not rows:
        raise UsageError(f"response file {path} holds no trial (no row has a trial_id); is it a study's data?")
    ids = {str(r.get("study_id")) for r in rows}
    if ids != {doc["study_id"]}:
        other = sorted(ids - {doc["study_id"]})
        raise UsageError(f"response file {path} is from another study ({', '.join(other)}, this one is "
                         f"{doc['study_id']}); move it out of this study's responses")
    known = {t["id"] for t in doc["trials"]}
    unknown = sorted({str(r["trial_id"]) for r in rows} - known)
    if unknown:
        raise UsageError(f"response file {path} answers trial {unknown[0]!r}, which this study does not have; "
                         "it belongs to another build of the study")
    return rows

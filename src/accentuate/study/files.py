"""Reading a study's files: ``trials.json`` and the participants' response files (jsPsych's JSON
or CSV, as the page downloads them or ``accentuate study serve`` saves them)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["read_responses", "read_trials", "response_files"]

#: The format tag of ``trials.json`` (written by :func:`accentuate.study.build`).
FORMAT = "accentuate-study/1"


def read_trials(directory: str | os.PathLike) -> dict[str, Any]:
    """``DIR/trials.json``, checked to be a study's.

    Raises:
        UsageError: no such folder or file, or a file of another kind.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"no such study folder {str(directory)!r}; give the folder `accentuate study build` wrote")
    path = directory / "trials.json"
    if not path.exists():
        raise UsageError(f"{str(directory)!r} has no trials.json; build the study there first "
                         "(`accentuate study build ... --out DIR`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} cannot be read ({type(e).__name__}); rebuild the study") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("trials"), list):
        raise UsageError(f"{path} is not a study's trials.json (format {FORMAT}); rebuild the study")
    return doc


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

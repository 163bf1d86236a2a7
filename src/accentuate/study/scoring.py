"""The analysis of a study's responses (``accentuate study analyze``).

Accuracy is the share of trials in which the participant picked the query on which the feature
is stronger, scored from ``trials.json`` (the page does not know the answers). Participants who
fail the catch trials (accuracy on them below ``catch_min``) are excluded, and listed. Per
condition, and per condition and feature kind: the accuracy over every (participant, trial)
answer, with a percentile bootstrap interval that resamples participants and trials (both drawn
anew in each replicate: the interval covers what another set of people *and* another set of
query pairs would give), and the median response time. Model observers
(:func:`accentuate.study.observe`) get their accuracy per condition in the same table, with an
interval over trials.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..analysis.stats import Interval, bootstrap
from ..analysis.writing import markdown_table, require_matplotlib, save_analysis
from ..errors import UsageError
from .files import read_responses, read_trials, response_files

__all__ = ["StudyAnalysis", "analyze"]

ALL = "all"


@dataclass
class StudyAnalysis:
    """The analysis of a study: one row per condition (and per condition and feature kind)."""

    directory: Path
    study: dict[str, Any]
    participants: list[str]
    excluded: dict[str, str]
    observers: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    level: float = 0.95
    #: Each model observer's accuracy per condition (and kind), with an interval over trials.
    observer_rows: list[dict[str, Any]] = field(default_factory=list)

    def accuracy(self, condition: str, kind: str = ALL) -> float | None:
        row = next((r for r in self.rows if r["condition"] == condition and r["kind"] == kind), None)
        return None if row is None else row["accuracy"]

    def columns(self) -> list[str]:
        cols = ["condition", "kind", "accuracy", "lower", "upper", "participants", "trials", "answers",
                "rt_median_ms"]
        return cols + [f"observer {o}" for o in self.observers]

    def to_markdown(self) -> str:
        head = (f"Study {self.study['study_id']} ({self.study.get('model')}): {len(self.participants)} participant(s)"
                f" analyzed, {len(self.excluded)} excluded by the catch trials; accuracy with "
                f"{round(100 * self.level)} % bootstrap intervals over participants and trials.")
        lines = [head, "", markdown_table(self.rows, self.columns())]
        if self.excluded:
            lines += ["", "Excluded: " + "; ".join(f"{p} ({why})" for p, why in self.excluded.items())]
        if self.observer_rows:
            lines += ["", f"Model observers (accuracy, {round(100 * self.level)} % bootstrap intervals over trials):", "",
                      markdown_table(self.observer_rows, ["observer", "condition", "kind", "accuracy", "lower",
                                                          "upper", "trials"])]
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        return {"kind": "study", "target": self.study.get("title", ""), "study_id": self.study["study_id"],
                "model": self.study.get("model"), "participants": self.participants, "excluded": self.excluded,
                "observers": self.observers, "level": self.level, "columns": self.columns(), "rows": self.rows,
                "observer_rows": self.observer_rows}

    def plot(self) -> Any:
        """Accuracy per condition with its interval, chance at 0.5, and each observer's accuracy."""
        Figure = require_matplotlib()
        rows = [r for r in self.rows if r["kind"] == ALL]
        fig = Figure(figsize=(1.6 + 1.3 * len(rows), 3.6))
        ax = fig.add_subplot(1, 1, 1)
        x = list(range(len(rows)))
        est = [r["accuracy"] if r["accuracy"] is not None else math.nan for r in rows]
        lo = [e - (r["lower"] if r["lower"] is not None else e) for e, r in zip(est, rows)]
        hi = [(r["upper"] if r["upper"] is not None else e) - e for e, r in zip(est, rows)]
        if self.participants:
            ax.bar(x, est, color="#4c72b0", width=0.5, label="participants")
            ax.errorbar(x, est, yerr=[lo, hi], fmt="none", ecolor="black", capsize=4)
        n = len(self.observers)
        for k, name in enumerate(self.observers):
            shift = 0.3 + 0.12 * (k - (n - 1) / 2) if self.participants else 0.12 * (k - (n - 1) / 2)
            mine = {r["condition"]: r for r in self.observer_rows if r["observer"] == name and r["kind"] == ALL}
            xs = [i + shift for i, r in enumerate(rows) if r["condition"] in mine]
            got = [mine[r["condition"]] for r in rows if r["condition"] in mine]
            ax.errorbar(xs, [g["accuracy"] for g in got],
                        yerr=[[g["accuracy"] - g["lower"] for g in got], [g["upper"] - g["accuracy"] for g in got]],
                        fmt="D", color=["#dd8452", "#55a868", "#c44e52"][k % 3], capsize=3, markersize=5,
                        label=f"observer: {name}")
        ax.axhline(0.5, color="#777777", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, [r["condition"] for r in rows])
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{len(self.participants)} participant(s), {round(100 * self.level)} % intervals", fontsize=10)
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        return fig

    def save(self, directory: str | os.PathLike | None = None) -> list[Path]:
        """Write ``study.md``, ``study.json`` and (with matplotlib) ``study.png``; returns the paths."""
        try:
            require_matplotlib()
            plot = self.plot
        except ImportError:
            plot = None
        return save_analysis(directory or self.directory, "study", self.to_markdown(), self.record(), {}, plot)


def _scored(rows: list[dict[str, Any]], trials: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{trial id: {"correct", "rt"}}`` of one participant, scored from the trials (first answer kept)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        tid = str(r["trial_id"])
        chosen = r.get("chosen")
        if tid in out or chosen not in (0, 1):
            continue
        rt = r.get("rt")
        out[tid] = {"correct": int(chosen) == int(trials[tid]["stronger"]),
                    "rt": float(rt) if isinstance(rt, (int, float)) and not isinstance(rt, bool) else None}
    return out


def _matrix(answers: dict[str, dict[str, dict[str, Any]]], people: list[str], ids: list[str]) -> torch.Tensor:
    m = torch.full((len(people), len(ids)), math.nan, dtype=torch.float64)
    for i, p in enumerate(people):
        for j, t in enumerate(ids):
            a = answers[p].get(t)
            if a is not None:
                m[i, j] = float(a["correct"])
    return m


def _interval(m: torch.Tensor, replicates: int, level: float, generator: int) -> Interval:
    """Mean accuracy of ``m`` (participants x trials, NaN unanswered) with a bootstrap over both."""
    def stat(d: dict[str, torch.Tensor]) -> torch.Tensor:
        sub = m[d["participant"][:, :, None], d["trial"][:, None, :]]  # (R, P, T)
        return torch.nanmean(sub.flatten(1), dim=1)

    return bootstrap(stat, {"participant": m.shape[0], "trial": m.shape[1]}, replicates, level, generator)


def _group_row(condition: str, kind: str, ids: list[str], answers: dict[str, dict[str, dict[str, Any]]],
               people: list[str], observers: dict[str, dict[str, dict[str, Any]]], replicates: int, level: float,
               generator: int) -> dict[str, Any]:
    row: dict[str, Any] = {"condition": condition, "kind": kind, "trials": len(ids)}
    m = _matrix(answers, people, ids)
    n = int((~torch.isnan(m)).sum())
    row["answers"], row["participants"] = n, len(people)
    if n:
        ci = _interval(m, replicates, level, generator)
        row.update(accuracy=round(float(ci.estimate), 4), lower=round(float(ci.lower), 4),
                   upper=round(float(ci.upper), 4))
        rts = [answers[p][t]["rt"] for p in people for t in ids if t in answers[p] and answers[p][t]["rt"] is not None]
        row["rt_median_ms"] = round(statistics.median(rts), 1) if rts else None
    else:
        row.update(accuracy=None, lower=None, upper=None, rt_median_ms=None)
    for name, a in observers.items():
        got = [a[t]["correct"] for t in ids if t in a]
        row[f"observer {name}"] = round(sum(got) / len(got), 4) if got else None
    return row


def _observer_rows(condition: str, kind: str, ids: list[str], observers: dict[str, dict[str, dict[str, Any]]],
                   replicates: int, level: float, generator: int) -> list[dict[str, Any]]:
    """Each observer's accuracy on ``ids`` with a bootstrap interval over the trials."""
    out = []
    for name, a in observers.items():
        m = _matrix({name: a}, [name], ids)
        if int((~torch.isnan(m)).sum()) == 0:
            continue
        ci = _interval(m, replicates, level, generator)
        out.append({"observer": name, "condition": condition, "kind": kind, "trials": len(ids),
                    "accuracy": round(float(ci.estimate), 4), "lower": round(float(ci.lower), 4),
                    "upper": round(float(ci.upper), 4)})
    return out


def _load(directory: Path, doc: dict[str, Any], files: Sequence[str | os.PathLike] | None
          ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """``({participant: rows}, {observer: rows})`` from the response and observer files."""
    people: dict[str, list[dict[str, Any]]] = {}
    observers: dict[str, list[dict[str, Any]]] = {}
    paths = [Path(f) for f in files] if files is not None else response_files(directory)
    obs_dir = directory / "observers"
    obs_paths = sorted(obs_dir.glob("*.json")) if obs_dir.is_dir() else []
    for path in [*paths, *obs_paths]:
        for r in read_responses(path, doc):
            if r.get("observer"):
                observers.setdefault(str(r.get("observer_model") or r.get("participant")), []).append(r)
            else:
                people.setdefault(str(r.get("participant") or path.stem), []).append(r)
    return people, observers


def analyze(directory: str | os.PathLike, responses: Sequence[str | os.PathLike] | None = None, *,
            catch_min: float = 0.75, replicates: int = 2000, level: float = 0.95, generator: int = 0,
            save: bool = True) -> StudyAnalysis:
    """Analyze the responses of the study in ``directory``.

    Args:
        directory: the study folder (``trials.json``).
        responses: the response files (default: every file in ``DIR/responses``); the model
            observers' files in ``DIR/observers`` are always read.
        catch_min: a participant whose accuracy on the catch trials is below this is excluded.
        replicates, level, generator: the bootstrap's replicates, coverage and seed.
        save: write ``study.md``, ``study.json`` and ``study.png`` into the folder.

    Raises:
        UsageError: no responses, a response file of another study or an unreadable one.
    """
    directory = Path(directory)
    doc = read_trials(directory)
    if not 0 <= catch_min <= 1:
        raise UsageError(f"catch_min must be in [0, 1]; got {catch_min}")
    people_rows, observer_rows = _load(directory, doc, responses)
    if not people_rows and not observer_rows:
        raise UsageError(f"no responses in {directory / 'responses'} and no observer in {directory / 'observers'}; "
                         "collect some (the page's downloads, or `accentuate study serve`) or run "
                         "`accentuate study observe`")
    trials = {t["id"]: t for t in doc["trials"]}
    answers = {p: _scored(rows, trials) for p, rows in people_rows.items()}
    excluded = {}
    for p, a in answers.items():
        caught = [v["correct"] for t, v in a.items() if trials[t]["catch"]]
        if caught and sum(caught) / len(caught) < catch_min:
            excluded[p] = f"catch trials {sum(caught)}/{len(caught)}"
    people = sorted(p for p in answers if p not in excluded)
    observers = {o: _scored(rows, trials) for o, rows in sorted(observer_rows.items())}
    rows: list[dict[str, Any]] = []
    obs_rows: list[dict[str, Any]] = []
    kinds = sorted({t["feature_kind"] for t in doc["trials"]})
    for cond in doc["conditions"]:
        for kind in [ALL, *kinds] if len(kinds) > 1 else [ALL]:
            ids = [t["id"] for t in doc["trials"] if t["condition"] == cond and not t["catch"]
                   and (kind == ALL or t["feature_kind"] == kind)]
            if ids:
                rows.append(_group_row(cond, kind, ids, answers, people, observers, replicates, level, generator))
                obs_rows += _observer_rows(cond, kind, ids, observers, replicates, level, generator)
    catch_ids = [t["id"] for t in doc["trials"] if t["catch"]]
    if catch_ids:
        rows.append(_group_row("catch", ALL, catch_ids, answers, people, observers, replicates, level, generator))
        obs_rows += _observer_rows("catch", ALL, catch_ids, observers, replicates, level, generator)
    obs_rows.sort(key=lambda r: r["observer"])
    result = StudyAnalysis(directory, doc, people, excluded, list(observers), rows, level, obs_rows)
    if save:
        result.save()
    return result

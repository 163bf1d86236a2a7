"""What every accentuating command does around :func:`accentuate.runs.execute`.

:class:`Command` reads the options (model, settings, images, targets, output folder) into a
:class:`~accentuate.runs.Plan`; the library runs it (:mod:`accentuate.runs`: batches, resume,
torchrun, ``run.json``); :func:`finish` prints what happened, writes ``report.html`` and gives
the exit status: 0 done, 1 a pair failed, 130 interrupted (:func:`accentuate.cli.main` turns it
into 143 when SIGTERM was the cause).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import AccentuateError, UsageError
from ..hooks import ModelRunner
from ..objectives import Objective, parse_target
from ..runs import DEFAULT_BATCH, DEFAULT_FRAMES, ImageInfo, Outcome, Plan, TargetInfo, load_images, plan
from ..settings import Settings
from ..spec import ModelSpec
from .common import accentuation_kwargs, load_timed, make_output, output_path

__all__ = ["Command", "add_judge_option", "add_run_options", "build_settings", "finish", "print_results", "say"]


def say(quiet: bool, *parts: object) -> None:
    """A message on stderr unless ``quiet``."""
    if not quiet:
        print(*parts, file=sys.stderr, flush=True)


def build_settings(model: nn.Module, spec: ModelSpec, kw: dict[str, Any],
                   targets: Sequence[TargetInfo] = (), runner: ModelRunner | None = None) -> Settings:
    """The run's :class:`~accentuate.settings.Settings`, resolved and checked once, before
    anything runs (mistakes are :class:`UsageError`: exit status 2).

    ``until`` follows :meth:`Settings.for_targets <accentuate.settings.Settings.for_targets>`, as in
    the library: ``--preview``'s ``"top1 for classes"`` is dropped when a target is not a class,
    an explicit ``--until`` with such a target is an error.
    """
    objectives = [t.objective for t in targets]
    try:
        settings = Settings.resolve(model, spec, runner=runner, **kw).for_targets(objectives)
    except (ValueError, TypeError) as e:
        if isinstance(e, AccentuateError):
            raise
        raise UsageError(f"--{e}" if str(e).startswith("until ") else str(e)) from None
    return settings


class Command:
    """What every accentuating command does before its work, in this order: the options read
    and checked, the output folder chosen (created only once all input is checked), the
    model loaded, the settings resolved, the images read, and the plan made.

    Args:
        args: the parsed options (``--model``, the accentuation options, ``--out``, ``--batch``,
            ``--frames``, ``--quiet``).
        subcommand: what ``run.json`` records as ``subcommand``.
    """

    def __init__(self, args: argparse.Namespace, subcommand: str) -> None:
        check_run_options(args)
        self.args, self.subcommand = args, subcommand
        self.kw = accentuation_kwargs(args)
        self.out = output_path(args)
        self.model, self.spec, self.load_s = load_timed(args)
        #: The one runner of the model for the whole command: targets, settings and every
        #: batch read what its one traced pass found.
        self.runner = ModelRunner(self.model, self.spec)
        #: Files found in a folder that could not be read (listed in ``run.json``).
        self.skipped: list[dict[str, str]] = []
        #: ``--judge``: the models each pair is shown to at the end (checked now: a judge equal
        #: to the model is refused before any work).
        self.judges = load_cli_judges(args, self.model, self.spec)

    def target(self, text: str) -> Objective:
        """A target typed on the command line, read against the model (:func:`~accentuate.objectives.parse_target`)."""
        return parse_target(text, self.model, self.spec, self.runner)

    def targets(self, texts: Sequence[str]) -> list[TargetInfo]:
        """The targets typed on the command line, each read against the model."""
        return [TargetInfo(t, self.target(t)) for t in texts]

    def settings(self, targets: Sequence[TargetInfo] = ()) -> Settings:
        """The run's settings from the options (:func:`build_settings`)."""
        return build_settings(self.model, self.spec, self.kw, targets, runner=self.runner)

    def images(self, paths: Sequence[str | os.PathLike | tuple[str, bool]], settings: Settings) -> list[ImageInfo]:
        """The seed images fitted to the canvas (:func:`~accentuate.runs.load_images`; unreadable
        folder files skipped)."""
        return load_images(paths, settings.canvas, self.skipped)

    def plan(self, settings: Settings, images: Sequence[ImageInfo], targets: Sequence[TargetInfo],
             pairs: Sequence[tuple[int, int]] | None = None, kind: str = "product",
             rows: Sequence[str] | None = None, extra: dict[str, Any] | None = None,
             batch: int | None = None, **options: Any) -> Plan:
        """The plan (:func:`accentuate.runs.plan`: the work list built once) and its output folder made."""
        args = self.args
        extra = dict(extra or {})
        if self.skipped:
            extra["skipped_images"] = list(self.skipped)
        return plan(self.model, self.spec, settings, images, targets, make_output(self.out), pairs=pairs, kind=kind,
                    rows=rows, batch=int(batch if batch is not None else getattr(args, "batch", DEFAULT_BATCH)),
                    frames=int(getattr(args, "frames", DEFAULT_FRAMES)), subcommand=self.subcommand, argv=args.argv,
                    model_arg=args.model, quiet=args.quiet, model_load_s=self.load_s, extra=extra,
                    runner=self.runner, say=lambda text: say(args.quiet, f"accentuate: {text}"),
                    judges=self.judges, **options)


def add_judge_option(p: argparse.ArgumentParser) -> None:
    """``--judge MODEL [MODEL ...]``: judges of every pair (:mod:`accentuate.runs.judged`)."""
    p.add_argument("--judge", nargs="+", action="extend", default=[], metavar="MODEL",
                   help="show every pair, before and after, to these other models (load_model names, e.g. "
                   "mobilenet_v2 efficientnet_lite1 efficientnet_lite2): the target's rank and probability "
                   "on each and the change of its features go to run.json and the report; not the model itself")


def load_cli_judges(args: argparse.Namespace, model: nn.Module, spec: ModelSpec) -> list[Any]:
    """The ``--judge`` models, loaded and checked against the model (none without ``--judge``)."""
    names = list(getattr(args, "judge", None) or [])
    if not names:
        return []
    from ..runs.judged import load_judges

    return load_judges(names, model, [getattr(args, "model", None), spec.name])


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)  # None: not finite, or a failed pair


def _pair_line(e: dict[str, Any]) -> str:
    a, b = e["after"], e["before"]
    if a.get("rank") is not None:
        nums = f"rank {b['rank']} -> {a['rank']}, p {_fmt(b['prob'], '.3f')} -> {_fmt(a['prob'], '.3f')}"
    else:
        nums = f"value {_fmt(b['value'], '.3g')} -> {_fmt(a['value'], '.3g')}"
    flag = "" if e["status"] == "complete" else f"  [{e['status']}]"
    return f"  {e['image']} -> {e['target_label']}: {nums}{flag}"


def print_results(out: Path, files: Sequence[tuple[str, object | None]]) -> None:
    """``results in OUT/``, then one line per ``(what, path)`` with a path (labels aligned)."""
    print(f"results in {out}/")
    shown = [(f"{what}:", v) for what, v in files if v is not None]
    width = max((len(k) for k, _ in shown), default=0)
    for k, v in shown:
        print(f"  {k:<{width}} {v}")


def print_judges(section: dict[str, Any]) -> None:
    """One line per judge: the target in its top 1 / top 5 before and after, the median rank and
    the mean feature change (``run.json``'s ``judges`` summary)."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0%}"

    print("judges (target in top-1 / top-5, before -> after; feature change = 1 - cosine):")
    for s in section.get("summary") or []:
        layer = next((j.get("layer") for j in section.get("judges") or [] if j.get("name") == s["judge"]), "?")
        change = s.get("mean_feature_change")
        print(f"  {s['judge']}: top-1 {pct(s.get('top1_before'))} -> {pct(s.get('top1_after'))}, top-5 "
              f"{pct(s.get('top5_before'))} -> {pct(s.get('top5_after'))}, median rank "
              f"{_fmt(s.get('median_rank_before'), 'g')} -> {_fmt(s.get('median_rank_after'), 'g')}, feature change "
              f"{_fmt(change, '.3f')} (at {layer})")


def per_pair_files(frames: int, mp4: bool = False) -> str:
    """The files written per pair, as the end-of-run listing names them.

    Example:
        >>> per_pair_files(0)
        'NAME.png, NAME_rgba.png (alpha = opacity), NAME_figure.png'
    """
    names = ["NAME.png", "NAME_rgba.png (alpha = opacity)", "NAME_figure.png"]
    if frames > 0:
        names.append("NAME.gif")
        if mp4:
            names.append("NAME.mp4")
    return ", ".join(names)


def finish(p: Plan, outcome: Outcome, listing: Sequence[tuple[str, object | None]] | None = None,
           pairs: bool = True, hint: str = "") -> int:
    """After :func:`~accentuate.runs.execute`: ``report.html`` written (with the seeds the plan read,
    not decoded again), what happened printed (the pairs and where the files are, or how to go on
    after an interruption), and the exit status.

    ``listing``: the files to list instead of the default (contact sheet, per-pair files, record);
    ``pairs``: print a line per pair (a command that prints its own summary leaves them out);
    ``hint``: what to try when a pair failed.
    """
    if not outcome.lead:
        return outcome.status
    from ..report import maybe_write_report

    page = maybe_write_report(p.out, seeds={im.sha256: im.tensor for im in p.images if im.tensor is not None})
    entries = outcome.entries
    if outcome.missing:
        print(f"accentuate: error: {outcome.missing} pair(s) were not done (a process stopped early); rerun the "
              "same command to do them", file=sys.stderr)
    if outcome.status == 130:
        finished = sum(1 for e in entries if e["status"] == "complete")
        print(f"accentuate: interrupted; wrote {finished} finished pair(s)"
              + (f" and the partial state of {outcome.partial} (marked \"partial\" in run.json)"
                 if outcome.partial else "")
              + f" to {p.out}; rerun the same command with --out {shlex.quote(str(p.out))} to finish",
              file=sys.stderr)
        return 130
    if not p.quiet:
        if pairs:
            print(f"accentuated {len(entries)} pair(s) in {outcome.seconds:.0f} s:")
            for entry in entries:
                print(_pair_line(entry))
        files = listing if listing is not None else [
            ("contact sheet", outcome.sheet), ("per pair", per_pair_files(p.frames, outcome.writer.writes_mp4)),
            ("record", outcome.writer.path)]
        print_results(p.out, [*files, ("report", page)])
        judged = outcome.writer.section("judges")
        if judged:
            print_judges(judged)
    if outcome.failed:
        print(f"accentuate: error: {len(outcome.failed)} of {len(entries)} pair(s) failed (numerical trouble); "
              f"see \"failed\" in run.json{'; ' + hint if hint else ''}", file=sys.stderr)
    return outcome.status


def add_run_options(p: argparse.ArgumentParser, batch: bool = True, frames: int = DEFAULT_FRAMES) -> None:
    """``--batch`` (unless ``batch`` is False) and ``--frames`` (default ``frames``, which its help says)."""
    g = p.add_argument_group("output")
    if batch:
        g.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="B",
                       help=f"pairs optimized together in one batch (default {DEFAULT_BATCH}); lower it "
                       "if memory runs out")
    g.add_argument("--frames", type=int, default=frames, metavar="F",
                   help=f"animation frames per pair (default {frames}; 0: no animation)")


def check_run_options(args: argparse.Namespace) -> None:
    if getattr(args, "batch", 1) < 1:
        raise UsageError(f"--batch must be >= 1; got {args.batch}")
    if getattr(args, "frames", 0) < 0 or getattr(args, "frames", 0) == 1:
        raise UsageError(f"--frames must be 0 (no animation) or >= 2; got {args.frames}")

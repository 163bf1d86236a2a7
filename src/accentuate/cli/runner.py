"""Running many seeds x targets from the command line: batching, progress, resume, Ctrl-C.

:func:`execute` takes a :class:`Plan` (model, images, targets, settings, output
folder) and

1. cuts the run's pairs (every image x every target, or a manifest's rows) into batches
   of at most ``--batch`` pairs that share a canvas and settings, in a fixed order, each
   with its own generator seed (:mod:`accentuate.cli.worklist`: the batches do not
   depend on how many processes run them, or on what an earlier run finished);
2. skips the batches whose pairs an earlier run in the same folder finished with the same
   settings (verified by the SHA-256 of their files, see :meth:`RunWriter.verified`);
3. runs the others (one batched call of :func:`accentuate.accentuate` each), in this
   process or, under torchrun, claimed by each rank in turn
   (:mod:`accentuate.cli.distributed`);
4. after each batch writes its files and rewrites ``run.json`` (or the rank's record);
5. draws the contact sheet at the end (and on Ctrl-C, with what is finished).

Exit statuses: 0 when every pair is complete, 1 when a pair failed numerically
(the others are kept), 130 on Ctrl-C (finished pairs and the partial state of the
running batch are written and marked; :func:`accentuate.cli.main` turns it into 143 when
SIGTERM was the cause).
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..digest import file_sha256
from ..engine import accentuate
from ..errors import AccentuateError, ImageError, UsageError
from ..hooks import ModelRunner, model_device
from ..images import image_files, load_image, prepare_seeds
from ..outputs.animation import snapshot_interval
from ..outputs.record import RunWriter, device_record, settings_hash, versions
from ..outputs.worklist import Batch, ImageInfo, TargetInfo, WorkList
from ..settings import Settings
from ..spec import ModelSpec
from .common import accentuation_kwargs, load_timed, make_output, output_path
from .distributed import (
    Coordinator,
    Ranks,
    clear_rank_records,
    load_rank_records,
    merge_rank_records,
    write_rank_record,
)

__all__ = ["Command", "Job", "Plan", "build_settings", "check_paths", "execute", "expand_paths", "load_images",
           "per_pair_files", "print_results", "settings_key", "settings_record", "steps_bar"]

#: Default number of pairs (seeds x targets) optimized together in one call.
DEFAULT_BATCH = 4
#: Default number of animation frames per pair.
DEFAULT_FRAMES = 25


def say(quiet: bool, *parts: object) -> None:
    """A message on stderr unless ``quiet``."""
    if not quiet:
        print(*parts, file=sys.stderr, flush=True)


def check_paths(paths: Sequence[str]) -> None:
    """Fail fast (before loading a model) on image paths that do not exist or are folders."""
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ImageError(f"image not found: {p!r}; check the path")
        if path.is_dir():
            raise ImageError(f"{p!r} is a folder, not an image file; pass the image files inside it")


def expand_paths(paths: Sequence[str]) -> list[tuple[str, bool]]:
    """Image files in order: files as given, folders as the image files inside them (sorted).

    Returns ``(path, found_in_a_folder)`` pairs. Fails fast (before a model is loaded)
    on a path that does not exist or a folder without images.
    """
    out: list[tuple[str, bool]] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ImageError(f"image not found: {p!r}; check the path")
        if path.is_dir():
            out += [(str(f), True) for f in image_files(path)]
        else:
            out.append((p, False))
    return out


def load_images(
    paths: Sequence[str | os.PathLike | tuple[str, bool]],
    canvas: int | tuple[int, int],
    skipped: list[dict[str, str]] | None = None,
) -> list[ImageInfo]:
    """Read each image, fit it to the canvas, and hash the file.

    A file named on the command line that cannot be read is an error. A file found in
    a folder (``(path, True)``, see :func:`expand_paths`) that cannot be read is
    skipped with a warning and listed in ``skipped`` (one odd file must not stop a run
    over a folder); when every image is skipped, the first error is raised.
    """
    infos = []
    first: ImageError | None = None
    for item in paths:
        p, in_folder = item if isinstance(item, tuple) else (item, False)
        try:
            t = load_image(p)
            seed = prepare_seeds(t, canvas)[0]
        except ImageError as e:
            if not in_folder or skipped is None:
                raise
            first = first or e
            warnings.warn(f"skipped {str(p)!r}: {e}", stacklevel=2)
            skipped.append({"path": str(p), "error": str(e)})
            continue
        infos.append(ImageInfo(path=str(p), name=Path(p).name, sha256=file_sha256(p) or "",
                               size=(int(t.shape[-1]), int(t.shape[-2])),
                               canvas=(int(seed.shape[-2]), int(seed.shape[-1])),
                               tensor=seed))
    if not infos and first is not None:
        raise ImageError(f"no image could be read; the first error: {first}")
    return infos


def build_settings(model: nn.Module, spec: ModelSpec, kw: dict[str, Any],
                   targets: Sequence[TargetInfo] = (), preview_until: bool = False,
                   runner: ModelRunner | None = None) -> Settings:
    """The run's :class:`~accentuate.settings.Settings`, resolved and checked once, before
    anything runs (mistakes are :class:`UsageError`: exit status 2).

    ``preview_until``: ``until`` came from ``--preview``, not from ``--until``; it is dropped
    when a target is not a class (it cannot be judged) instead of being an error.
    """
    objectives = [t.objective for t in targets]
    try:
        settings = Settings.resolve(model, spec, runner=runner, **kw)
        try:
            settings.check_targets(objectives)
        except ValueError:
            if not preview_until:
                raise
            settings = settings.replace(until=None)  # --preview stops early only on classes
    except (ValueError, TypeError) as e:
        if isinstance(e, AccentuateError):
            raise
        raise UsageError(f"--{e}" if str(e).startswith("until ") else str(e)) from None
    return settings


def settings_record(settings: Settings, frames: int) -> dict[str, Any]:
    """What ``run.json`` records as ``settings``: every setting, and the animation frames."""
    return {**settings.to_dict(), "animation_frames": frames}


def steps_bar(
    quiet: bool, desc: str, total: int, position: int = 0
) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar over optimization steps: ``(progress callback, close)``."""
    if quiet:
        return (lambda t, n: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False, position=position, file=sys.stderr,
               dynamic_ncols=True)

    def update(t: int, n: int) -> None:
        bar.update(t - bar.n)

    return update, bar.close


@dataclass
class Plan:
    """What one accentuating command (``run``, ``demo``, ``explain``) does: the model, the
    settings, the work list and where the files go."""

    subcommand: str
    argv: list[str]
    model_arg: str
    model: nn.Module
    spec: ModelSpec
    settings: Settings
    work: WorkList
    out: Path
    quiet: bool = False
    frames: int = DEFAULT_FRAMES
    model_load_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: The command's one :class:`~accentuate.hooks.ModelRunner` (what it traced is reused).
    runner: ModelRunner | None = None

    @property
    def images(self) -> list[ImageInfo]:
        return self.work.images

    @property
    def targets(self) -> list[TargetInfo]:
        return self.work.targets


def settings_key(settings: Settings, frames: int, model_arg: str | None, model_name: str) -> str:
    """Hash of what changes a pair's result (settings, animation frames, model, library version)."""
    return settings_hash({"settings": settings.hash(), "frames": frames, "model": model_arg,
                          "model_name": model_name, "accentuate": __version__})


def header(plan: Plan) -> dict[str, Any]:
    """The part of ``run.json`` that describes the run itself."""
    spec = plan.spec
    return {
        "command": "accentuate " + shlex.join(plan.argv),
        "argv": list(plan.argv),
        "subcommand": plan.subcommand,
        "cwd": os.getcwd(),
        "model": {"arg": plan.model_arg, "name": spec.name, "input_size": list(spec.input_size),
                  "classes": len(spec.labels) if spec.labels is not None else None},
        **device_record(model_device(plan.model)),
        "settings": settings_record(plan.settings, plan.frames),
        "versions": versions(),
        **plan.extra,
    }


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

    def settings(self, targets: Sequence[TargetInfo] = (), preview_until: bool = False) -> Settings:
        """The run's settings from the options (:func:`build_settings`)."""
        return build_settings(self.model, self.spec, self.kw, targets, preview_until=preview_until,
                              runner=self.runner)

    def images(self, paths: Sequence[str | os.PathLike | tuple[str, bool]], settings: Settings) -> list[ImageInfo]:
        """The seed images fitted to the canvas (:func:`load_images`; unreadable folder files skipped)."""
        return load_images(paths, settings.canvas, self.skipped)

    def plan(self, settings: Settings, images: Sequence[ImageInfo], targets: Sequence[TargetInfo],
             pairs: Sequence[tuple[int, int]] | None = None, kind: str = "product",
             rows: Sequence[str] | None = None, extra: dict[str, Any] | None = None,
             batch: int | None = None) -> Plan:
        """The plan: the work list built once (keys, stems, batches) and the output folder made."""
        frames = int(getattr(self.args, "frames", DEFAULT_FRAMES))
        size = int(batch if batch is not None else getattr(self.args, "batch", DEFAULT_BATCH))
        key = settings_key(settings, frames, self.args.model, self.spec.name)
        work = WorkList(images, targets, key, size, pairs=pairs, kind=kind, rows=rows)
        extra = dict(extra or {})
        if self.skipped:
            extra["skipped_images"] = list(self.skipped)
        return Plan(subcommand=self.subcommand, argv=list(self.args.argv), model_arg=self.args.model,
                    model=self.model, spec=self.spec, settings=settings, work=work, out=make_output(self.out),
                    quiet=self.args.quiet, frames=frames, model_load_s=self.load_s, extra=extra,
                    runner=self.runner)


def _with_tick(update: Callable[[int, int], None], tick: Callable[[], None],
               every_s: float = 1.0) -> Callable[[int, int], None]:
    """``update`` that also calls ``tick`` (the job's pair count) at most every ``every_s`` seconds."""
    last = [0.0]

    def both(t: int, n: int) -> None:
        update(t, n)
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            tick()

    return both


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


class Job:
    """One plan's run: :meth:`run` the batches (this process's share under torchrun), then
    :meth:`finish` the record. :func:`execute` is both.

    Preparing (the constructor) opens the record, resumes the pairs an earlier run in the
    folder finished (checked by their files' SHA-256) and, under torchrun, agrees with the
    other processes on the batches left to do.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.started = time.perf_counter()
        self.ranks = Ranks.from_env()
        self.lead = self.ranks.rank == 0
        self.quiet = plan.quiet or not self.lead
        work = plan.work
        self.writer = writer = RunWriter(plan.out, header(plan), work)
        self.coord = Coordinator.start(self.ranks)
        if self.lead:
            writer.offer_previous(e for doc in load_rank_records(plan.out, writer.key) for e in doc.get("pairs", []))
            done = writer.resume()
            todo = [(b, {p for p in b.pairs if p in done}) for b in work.batches
                    if not all(p in done for p in b.pairs)]
            where = str(writer.section("device")) + (f" and {self.ranks.world - 1} more process(es)"
                                                     if self.ranks.distributed else "")
            s = plan.settings
            say(self.quiet, f"accentuate: {len(plan.images)} image(s) x {len(plan.targets)} target(s): {len(work)} "
                f"pair(s) in {len(work.batches)} batch(es) with {plan.spec.name} on {where} (reg layer "
                f"{s.regularizer}, lambda {s.lam:g}, {s.steps} steps); output: {plan.out}")
            if done:
                say(self.quiet, f"accentuate: resuming: {len(done)} pair(s) already complete in {plan.out}, "
                    f"{len(work) - len(done)} to do")
            writer.timing(model_load_s=plan.model_load_s)
            if plan.frames == 0:
                writer.no_animation()
            writer.save("running")
            clear_rank_records(plan.out)  # what they listed is in run.json now
            self.coord.publish([(b.index, sk) for b, sk in todo], work.digest())
        else:
            todo = [(work.batches[k], sk) for k, sk in self.coord.receive(work.digest())]
        self.todo = todo
        self.skips = {b.index: sk for b, sk in todo}
        self.rank_info: dict[str, Any] = {**device_record(model_device(plan.model)), "busy_s": 0.0}
        self.partial = 0
        self._bar: Any = None

    # -- one batch ------------------------------------------------------------------------------
    def run_batch(self, b: Batch) -> tuple[list[dict[str, Any]], bool]:
        """Optimize batch ``b``, write its files and record them; ``(entries, interrupted)``."""
        plan, writer = self.plan, self.writer
        ss, tt = list(b.seeds), list(b.targets)
        hw = plan.images[ss[0]].canvas
        seeds = torch.stack([plan.images[i].tensor for i in ss])  # type: ignore[misc]
        objectives = [plan.targets[j].objective for j in tt]
        bset = plan.work.batch_settings(plan.settings, b)
        snaps: int | tuple[()] = ()
        if plan.frames > 0:
            # about `frames` frames, fewer when the batch is large (memory).
            per_frame = len(ss) * len(tt) * 3 * hw[0] * hw[1]
            frames = max(2, min(plan.frames, int(1.5e9 // max(1, per_frame))))
            snaps = snapshot_interval(bset.steps, frames)
        names = ", ".join(plan.images[i].name for i in ss)
        desc = f"{names[:40]} x {len(tt)} target(s)" if len(ss) * len(tt) > 1 else \
            f"{names[:30]} -> {plan.targets[tt[0]].text[:30]}"
        update, close = steps_bar(self.quiet, desc, bset.steps, position=1 if self._bar is not None else 0)
        if self._bar is not None and self.ranks.distributed:
            update = _with_tick(update, lambda: self._tick(self.coord.done()))
        device = model_device(plan.model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        try:
            res = accentuate(plan.model, seeds, objectives, bset, snapshots=snaps, progress=update,
                             runner=plan.runner)
        finally:
            close()
        seconds = time.perf_counter() - t0
        self.rank_info["busy_s"] = round(self.rank_info["busy_s"] + seconds, 3)
        # The threads too: a CPU run's pictures depend on them (docs/scaling-out.md).
        timing: dict[str, Any] = {"rank": self.ranks.rank, "generator_seed": bset.seed,
                                  "threads": torch.get_num_threads()}
        if device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(device))
            timing["cuda_peak_memory_bytes"] = peak
            self.rank_info["cuda_peak_memory_bytes"] = max(peak, self.rank_info.get("cuda_peak_memory_bytes", 0))
        entries = writer.write_batch(res, b, seconds, skip=self.skips.get(b.index, set()),
                                     rank=self.ranks.rank if self.ranks.distributed else None, timing=timing)
        for e in entries:
            if e["status"] == "failed":
                print(f"accentuate: warning: {e['image']} -> {e['target_label']} failed: {e['failed']}; "
                      "the other pairs continue", file=sys.stderr)
        return entries, bool(res.interrupted)

    def _tick(self, n: int) -> None:
        if self._bar is not None and n != self._bar.n:
            self._bar.update(n - self._bar.n)

    # -- the batches ----------------------------------------------------------------------------
    def run(self) -> bool:
        """Run this process's batches (claimed in turn under torchrun), rewriting ``run.json`` (or
        the rank's record) after each; returns whether the run was interrupted."""
        ranks, writer = self.ranks, self.writer
        todo_pairs = sum(len(b.pairs) - len(sk) for b, sk in self.todo)
        if not self.quiet and (len(self.todo) > 1 or ranks.distributed):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=todo_pairs, desc="pairs", unit="pair", position=0, file=sys.stderr,
                             dynamic_ncols=True)
        interrupted = False
        try:
            for b in self.coord.claims([b for b, _ in self.todo]):
                entries, stopped = self.run_batch(b)
                if stopped:
                    interrupted, self.partial = True, len(entries)
                    break
                writer.timing(total_s=time.perf_counter() - self.started)
                if ranks.distributed:
                    write_rank_record(writer, ranks, self.rank_info)
                self.coord.add_done(len(entries))
                if self.lead:
                    if ranks.distributed:
                        merge_rank_records(writer, ranks, verify=False)  # a live run.json for the whole job
                    writer.save("running")
                    self._tick(self.coord.done())
            if ranks.distributed and not interrupted:
                write_rank_record(writer, ranks, self.rank_info)
                self.coord.finish()
                if self.lead:
                    self.coord.wait_all(self._tick)
        except KeyboardInterrupt:
            interrupted = True
        except BaseException as e:
            if ranks.distributed:
                write_rank_record(writer, ranks, self.rank_info)
            if self.lead:
                writer.save("error", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            if self._bar is not None:
                self._bar.close()
        return interrupted

    # -- the record -----------------------------------------------------------------------------
    def finish(self, interrupted: bool, before_save: Callable[[RunWriter], None] | None = None) -> int:
        """Merge the ranks' records (rank 0), draw the contact sheet, write the final ``run.json``
        and the report, and print the summary; returns the exit status.

        ``before_save(writer)`` (rank 0 only) adds to the record once every pair is in it
        (``explain --misclassified`` draws its confusion panels there).
        """
        plan, writer, ranks = self.plan, self.writer, self.ranks
        if ranks.distributed:
            write_rank_record(writer, ranks, self.rank_info)
            if not self.lead:
                return 130 if interrupted else 0
            dist_rec = merge_rank_records(writer, ranks, verify=True)
            dist_rec["ranks"].insert(0, {"rank": 0, "host": socket.gethostname(), "pid": os.getpid(),
                                         **self.rank_info,
                                         "batches": sum(1 for t in writer.batches() if t.get("rank") == 0),
                                         "pairs": sum(1 for e in writer.own_entries() if e.get("rank", 0) == 0)})
            writer.add_sections(distributed=dist_rec)
            missing = len(writer.missing())
            if missing and not interrupted:
                print(f"accentuate: error: {missing} pair(s) were not done (a process stopped early); rerun the "
                      "same command to do them", file=sys.stderr)
                interrupted = True
        elif "cuda_peak_memory_bytes" in self.rank_info:
            writer.add_sections(cuda_peak_memory_bytes=self.rank_info["cuda_peak_memory_bytes"])
        writer.timing(total_s=time.perf_counter() - self.started)
        s = plan.settings
        title = f"{plan.spec.name}: rows are seeds, columns are targets (reg layer {s.regularizer}, " \
            f"lambda {s.lam:g}, {s.steps} steps)"
        sheet = writer.contact_sheet(title)
        if before_save is not None:
            before_save(writer)
        entries = writer.entries()
        failed = [e for e in entries if e["status"] == "failed"]
        if interrupted:
            writer.save("interrupted")
            _report(plan)
            finished = sum(1 for e in entries if e["status"] == "complete")
            print(f"accentuate: interrupted; wrote {finished} finished pair(s)"
                  + (f" and the partial state of {self.partial} (marked \"partial\" in run.json)"
                     if self.partial else "")
                  + f" to {plan.out}; rerun the same command with --out {shlex.quote(str(plan.out))} to finish",
                  file=sys.stderr)
            return 130
        writer.save("complete")
        if ranks.distributed:
            clear_rank_records(plan.out)  # run.json holds every pair now
        page = _report(plan)
        if not plan.quiet:
            print(f"accentuated {len(entries)} pair(s) in {time.perf_counter() - self.started:.0f} s:")
            for entry in entries:
                print(_pair_line(entry))
            print_results(plan.out, [("contact sheet", sheet),
                                     ("per pair", per_pair_files(plan.frames, writer.writes_mp4)),
                                     ("record", writer.path), ("report", page)])
        if failed:
            print(f"accentuate: error: {len(failed)} of {len(entries)} pair(s) failed (numerical trouble); "
                  "see \"failed\" in run.json", file=sys.stderr)
            return 1
        return 0


def print_results(out: Path, files: Sequence[tuple[str, object | None]]) -> None:
    """``results in OUT/``, then one line per ``(what, path)`` with a path (labels aligned)."""
    print(f"results in {out}/")
    shown = [(f"{what}:", v) for what, v in files if v is not None]
    width = max((len(k) for k, _ in shown), default=0)
    for k, v in shown:
        print(f"  {k:<{width}} {v}")


def execute(plan: Plan, before_save: Callable[[RunWriter], None] | None = None) -> int:
    """Run the plan; write files and ``run.json`` as batches finish. Returns the exit status.

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs this with the same plan: they share the
    batches through torchrun's store and rank 0 writes ``run.json`` (see
    :mod:`accentuate.cli.distributed`). ``before_save``: see :meth:`Job.finish`.
    """
    job = Job(plan)
    return job.finish(job.run(), before_save)


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


def _report(plan: Plan) -> Path | None:
    """``report.html`` in the output folder (skipped with a warning without Jinja2)."""
    from ..report import maybe_write_report

    return maybe_write_report(plan.out)


def add_run_options(p: argparse.ArgumentParser, batch: bool = True) -> None:
    """``--batch`` (unless ``batch`` is False) and ``--frames``."""
    g = p.add_argument_group("output")
    if batch:
        g.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="B",
                       help=f"pairs optimized together in one batch (default {DEFAULT_BATCH}); lower it "
                       "if memory runs out")
    g.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="F",
                   help=f"animation frames per pair (default {DEFAULT_FRAMES}; 0: no animation)")


def check_run_options(args: argparse.Namespace) -> None:
    if getattr(args, "batch", 1) < 1:
        raise UsageError(f"--batch must be >= 1; got {args.batch}")
    if getattr(args, "frames", 0) < 0 or getattr(args, "frames", 0) == 1:
        raise UsageError(f"--frames must be 0 (no animation) or >= 2; got {args.frames}")

"""The one executor: a :class:`Plan` of seed x target pairs run in batches, resumable, under torchrun.

Every command that runs the engine over pairs (``run``, ``demo``, ``explain``, ``explain
--misclassified``, ``concepts``, ``study build``) makes a :class:`Plan` (the model, the
settings, the :class:`~accentuate.runs.work.WorkList` and the output folder) and calls
:func:`execute`, which

1. skips the batches whose pairs an earlier run in the same folder finished with the same
   settings (verified by the SHA-256 of their files, see
   :meth:`~accentuate.runs.record.RunWriter.verified`);
2. runs the others (one batched call of :func:`accentuate.accentuate` each), in this process
   or, under torchrun, claimed by each rank in turn (:mod:`accentuate.runs.distributed`);
3. after each batch writes its files and rewrites ``run.json`` (or the rank's record);
4. at the end (and on Ctrl-C, with what is finished) draws the contact sheet, calls the
   plan's ``before_save`` (a command's own pictures and sections of ``run.json``) and writes
   the final record;

and returns an :class:`Outcome`: what the command prints and its exit status. Status 0 when
every pair is complete, 1 when a pair failed numerically (the others are kept), 130 on Ctrl-C
(finished pairs and the partial state of the running batch are written and marked).
"""

from __future__ import annotations

import os
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

from ..engine import accentuate
from ..errors import ImageError
from ..hooks import ModelRunner, model_device
from ..images import prepare_seeds, read_image
from ..outputs.animation import snapshot_interval
from ..settings import Settings
from ..spec import ModelSpec
from .distributed import (
    Coordinator,
    Ranks,
    clear_rank_records,
    load_rank_records,
    merge_rank_records,
    write_rank_record,
)
from .record import RunWriter, device_record, run_header, settings_key
from .work import Batch, ImageInfo, TargetInfo, WorkList

__all__ = ["DEFAULT_BATCH", "DEFAULT_FRAMES", "Job", "Outcome", "Plan", "execute", "load_images", "plan"]

#: Default number of pairs (seeds x targets) optimized together in one call.
DEFAULT_BATCH = 4
#: Default number of animation frames per pair.
DEFAULT_FRAMES = 25


def load_images(
    paths: Sequence[str | os.PathLike | tuple[str, bool]],
    canvas: int | tuple[int, int],
    skipped: list[dict[str, str]] | None = None,
) -> list[ImageInfo]:
    """Read each image once (decoded and hashed from the same bytes) and fit it to the canvas.

    A file named on its own that cannot be read is an error. A file found in a folder
    (``(path, True)``, see :func:`accentuate.images.photo_set`) that cannot be read is
    skipped with a warning and listed in ``skipped`` (one odd file must not stop a run over a
    folder); when every image is skipped, the first error is raised.
    """
    infos = []
    first: ImageError | None = None
    for item in paths:
        p, in_folder = item if isinstance(item, tuple) else (item, False)
        try:
            t, digest = read_image(p)
            seed = prepare_seeds(t, canvas)[0]
        except ImageError as e:
            if not in_folder or skipped is None:
                raise
            first = first or e
            warnings.warn(f"skipped {str(p)!r}: {e}", stacklevel=2)
            skipped.append({"path": str(p), "error": str(e)})
            continue
        infos.append(ImageInfo(path=str(p), name=Path(p).name, sha256=digest,
                               size=(int(t.shape[-1]), int(t.shape[-2])),
                               canvas=(int(seed.shape[-2]), int(seed.shape[-1])), tensor=seed))
    if not infos and first is not None:
        raise ImageError(f"no image could be read; the first error: {first}")
    return infos


@dataclass
class Plan:
    """What a command does: the model, the settings, the work list and where the files go.

    Attributes:
        subcommand: what ``run.json`` records as ``subcommand``; argv: the command line (``None``
            from Python); model_arg: the ``--model`` it was loaded from.
        quiet: no progress bars or messages.
        frames: animation frames per pair (0: none).
        extra: sections of ``run.json``'s header (``manifest``, ``misclassified``, ...).
        runner: the command's one :class:`~accentuate.hooks.ModelRunner` (what it traced is reused).
        collective: each batch's opacity normalized over the whole batch (``explain``'s panel), not
            per pair.
        lossless: keep every tensor in ``result.npz`` (a work list of one batch; ``Result.load``
            then reads it back exactly).
        judges: :class:`~accentuate.judges.Judge` values (``--judge``): once every pair is done,
            each is shown to them and ``run.json`` gets its ``judges`` section
            (:mod:`accentuate.runs.judged`); not after an interruption.
        say: where messages go (a line each), or ``None``.
    """

    subcommand: str
    argv: list[str] | None
    model_arg: str | None
    model: nn.Module
    spec: ModelSpec
    settings: Settings
    work: WorkList
    out: Path
    quiet: bool = False
    frames: int = DEFAULT_FRAMES
    model_load_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    runner: ModelRunner | None = None
    collective: bool = False
    lossless: bool = False
    say: Callable[[str], None] | None = None
    judges: Sequence[Any] = ()

    @property
    def images(self) -> list[ImageInfo]:
        return self.work.images

    @property
    def targets(self) -> list[TargetInfo]:
        return self.work.targets

    def header(self) -> dict[str, Any]:
        """The part of ``run.json`` that describes the run (:func:`~accentuate.runs.record.run_header`)."""
        return run_header(subcommand=self.subcommand, argv=self.argv, model_arg=self.model_arg, spec=self.spec,
                          device=model_device(self.model), settings=self.settings, frames=self.frames,
                          extra=self.extra)


def plan(model: nn.Module, spec: ModelSpec, settings: Settings, images: Sequence[ImageInfo],
         targets: Sequence[TargetInfo], out: str | os.PathLike, *, pairs: Sequence[tuple[int, int]] | None = None,
         kind: str = "product", rows: Sequence[str] | None = None, batch: int = DEFAULT_BATCH,
         frames: int = DEFAULT_FRAMES, subcommand: str = "run", argv: Sequence[str] | None = None,
         model_arg: str | None = None, **options: Any) -> Plan:
    """A :class:`Plan`: the work list built once (keys from :func:`~accentuate.runs.record.settings_key`,
    file stems, batches of at most ``batch`` pairs); ``options`` are the other fields of :class:`Plan`."""
    key = settings_key(settings, frames, spec.name, model_arg)
    work = WorkList(images, targets, key, batch, pairs=pairs, kind=kind, rows=rows)
    return Plan(subcommand=subcommand, argv=list(argv) if argv is not None else None, model_arg=model_arg,
                model=model, spec=spec, settings=settings, work=work, out=Path(out), frames=frames, **options)


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


@dataclass
class Outcome:
    """How a plan's run ended: what its command prints, and its exit status.

    Attributes:
        status: 0 every pair complete, 1 a pair failed (numerically; the others are kept), 130
            interrupted (Ctrl-C, SIGTERM) or a process of the job stopped early.
        lead: this process is the one that wrote ``run.json`` (rank 0, or the only one).
        entries: every recorded pair (``run.json``'s ``pairs``), in the work list's order.
        partial: pairs of the batch that was running when the run was interrupted (written as
            ``partial``).
        missing: pairs not done because a process of a torchrun job stopped early.
        sheet: the contact sheet; seconds: the run's wall time.
    """

    status: int
    lead: bool
    out: Path
    writer: RunWriter
    entries: list[dict[str, Any]] = field(default_factory=list)
    partial: int = 0
    missing: int = 0
    sheet: Path | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["status"] == "failed"]


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
        self.writer = writer = RunWriter(plan.out, plan.header(), work, lossless=plan.lossless)
        self.coord = Coordinator.start(self.ranks)
        if self.lead:
            writer.offer_previous(e for doc in load_rank_records(plan.out, writer.key) for e in doc.get("pairs", []))
            done = writer.resume()
            todo = [(b, {p for p in b.pairs if p in done}) for b in work.batches
                    if not all(p in done for p in b.pairs)]
            where = str(writer.section("device")) + (f" and {self.ranks.world - 1} more process(es)"
                                                     if self.ranks.distributed else "")
            s = plan.settings
            self._say(f"{len(plan.images)} image(s) x {len(plan.targets)} target(s): {len(work)} pair(s) in "
                      f"{len(work.batches)} batch(es) with {plan.spec.name} on {where} (reg layer {s.regularizer}, "
                      f"lambda {s.lam:g}, {s.steps} steps); output: {plan.out}")
            if done:
                self._say(f"resuming: {len(done)} pair(s) already complete in {plan.out}, {len(work) - len(done)} to do")
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

    def _say(self, text: str) -> None:
        if not self.quiet and self.plan.say is not None:
            self.plan.say(text)

    # -- one batch ------------------------------------------------------------------------------
    def run_batch(self, b: Batch) -> tuple[list[dict[str, Any]], bool]:
        """Optimize batch ``b``, write its files and record them; ``(entries, interrupted)``."""
        plan, writer = self.plan, self.writer
        ss, tt = list(b.seeds), list(b.targets)
        hw = plan.images[ss[0]].canvas
        noise = plan.images[ss[0]].noise
        seeds = None if noise else torch.stack([plan.images[i].tensor for i in ss])  # type: ignore[misc]
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
        alpha = res.alpha(collective=True) if plan.collective and res.has_opacity else None
        entries = writer.write_batch(res, b, seconds, alpha=alpha, skip=self.skips.get(b.index, set()),
                                     rank=self.ranks.rank if self.ranks.distributed else None, timing=timing)
        for e in entries:
            if e["status"] == "failed":
                warnings.warn(f"{e['image']} -> {e['target_label']} failed: {e['failed']}; the other pairs continue",
                              stacklevel=2)
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
    def finish(self, interrupted: bool, before_save: Callable[[RunWriter], None] | None = None) -> Outcome:
        """Merge the ranks' records (rank 0), draw the contact sheet, call ``before_save(writer)``
        (rank 0 only, once every pair is in the record: a command's own pictures and sections) and
        write the final ``run.json``; returns the :class:`Outcome`."""
        plan, writer, ranks = self.plan, self.writer, self.ranks
        outcome = Outcome(status=130 if interrupted else 0, lead=self.lead, out=plan.out, writer=writer,
                          partial=self.partial)
        if ranks.distributed:
            write_rank_record(writer, ranks, self.rank_info)
            if not self.lead:
                return outcome
            dist_rec = merge_rank_records(writer, ranks, verify=True)
            dist_rec["ranks"].insert(0, {"rank": 0, "host": socket.gethostname(), "pid": os.getpid(),
                                         **self.rank_info,
                                         "batches": sum(1 for t in writer.batches() if t.get("rank") == 0),
                                         "pairs": sum(1 for e in writer.own_entries() if e.get("rank", 0) == 0)})
            writer.add_sections(distributed=dist_rec)
            outcome.missing = 0 if interrupted else len(writer.missing())
            if outcome.missing:
                outcome.status = 130
        elif "cuda_peak_memory_bytes" in self.rank_info:
            writer.add_sections(cuda_peak_memory_bytes=self.rank_info["cuda_peak_memory_bytes"])
        writer.timing(total_s=time.perf_counter() - self.started)
        s = plan.settings
        title = f"{plan.spec.name}: rows are seeds, columns are targets (reg layer {s.regularizer}, " \
            f"lambda {s.lam:g}, {s.steps} steps)"
        outcome.sheet = writer.contact_sheet(title)
        if before_save is not None:
            before_save(writer)
        if plan.judges and outcome.status != 130:
            from .judged import judge_record

            self._say(f"judging {len(writer.entries())} pair(s) with {', '.join(j.name for j in plan.judges)}")
            writer.set_judges(judge_record(plan.out, writer.document(), plan.judges, labels=plan.spec.labels,
                                           seeds={im.sha256: im.tensor for im in plan.images if im.tensor is not None},
                                           model=plan.model))
        outcome.entries = writer.entries()
        if outcome.status == 130:
            writer.save("interrupted")
        else:
            writer.save("complete")
            if ranks.distributed:
                clear_rank_records(plan.out)  # run.json holds every pair now
            if outcome.failed:
                outcome.status = 1
        outcome.seconds = time.perf_counter() - self.started
        return outcome


def execute(plan: Plan, before_save: Callable[[RunWriter], None] | None = None) -> Outcome:
    """Run the plan; write files and ``run.json`` as batches finish. Returns the :class:`Outcome`.

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs this with the same plan: they share the
    batches through torchrun's store and rank 0 writes ``run.json`` (see
    :mod:`accentuate.runs.distributed`). ``before_save``: see :meth:`Job.finish`.
    """
    job = Job(plan)
    return job.finish(job.run(), before_save)

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
import platform
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

from ..engine import accentuate
from ..errors import AccentuateError, ImageError, UsageError
from ..images import image_files, load_image, prepare_seeds
from ..outputs.animation import snapshot_interval
from ..outputs.record import ImageInfo, RunWriter, TargetInfo, file_sha256, settings_hash, versions
from ..settings import Settings
from ..spec import ModelSpec
from .distributed import (
    Coordinator,
    Ranks,
    add_previous,
    clear_rank_records,
    merge_rank_records,
    write_rank_record,
)
from .worklist import Batch, batch_seed, cut_batches, product

__all__ = ["Plan", "build_settings", "check_paths", "execute", "expand_paths", "load_images", "per_pair_files",
           "settings_record", "steps_bar"]

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
                   targets: Sequence[TargetInfo] = (), preview_until: bool = False) -> Settings:
    """The run's :class:`~accentuate.settings.Settings`, resolved and checked once, before
    anything runs (mistakes are :class:`UsageError`: exit status 2).

    ``preview_until``: ``until`` came from ``--preview``, not from ``--until``; it is dropped
    when a target is not a class (it cannot be judged) instead of being an error.
    """
    if kw.get("until") is not None and any(t.objective.class_index is None for t in targets):
        if not preview_until:
            raise UsageError("--until needs class targets; it cannot judge channels or neurons")
        kw = {k: v for k, v in kw.items() if k != "until"}  # --preview stops early only on classes
    try:
        return Settings.resolve(model, spec, **kw)
    except (ValueError, TypeError) as e:
        if isinstance(e, AccentuateError):
            raise
        raise UsageError(str(e)) from None


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


def device_record(model: nn.Module) -> dict[str, Any]:
    """The device the model runs on, in words."""
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    rec: dict[str, Any] = {"device": str(dev)}
    if dev.type == "cuda":
        rec["device_name"] = torch.cuda.get_device_name(dev)
    else:
        rec["device_name"] = platform.processor() or platform.machine()
        rec["threads"] = torch.get_num_threads()
    return rec


@dataclass
class Plan:
    """What one ``accentuate run`` (or ``demo``) does."""

    subcommand: str
    argv: list[str]
    model_arg: str
    model: nn.Module
    images: list[ImageInfo]
    targets: list[TargetInfo]
    spec: ModelSpec
    settings: Settings
    out: Path
    quiet: bool = False
    batch: int = DEFAULT_BATCH
    frames: int = DEFAULT_FRAMES
    model_load_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: The pairs ``(image, target)`` to do, in order (a manifest's rows); ``None``: every image x every target.
    pairs: list[tuple[int, int]] | None = None


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
        **device_record(plan.model),
        "settings": settings_record(plan.settings, plan.frames),
        "versions": versions(),
        **plan.extra,
    }


def key_settings(plan: Plan) -> str:
    """Hash of what changes a pair's result (settings, animation frames, model, library version)."""
    return settings_hash({"settings": plan.settings.hash(), "frames": plan.frames, "model": plan.model_arg,
                          "model_name": plan.spec.name, "accentuate": versions()["accentuate"]})


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


def _pair_line(e: dict[str, Any]) -> str:
    a, b = e["after"], e["before"]
    if a.get("rank") is not None:
        p0, p1 = (f"{v:.3f}" if v is not None else "n/a" for v in (b["prob"], a["prob"]))  # None: not finite
        nums = f"rank {b['rank']} -> {a['rank']}, p {p0} -> {p1}"
    else:
        nums = f"value {b['value']:.3g} -> {a['value']:.3g}"
    flag = "" if e["status"] == "complete" else f"  [{e['status']}]"
    return f"  {e['image']} -> {e['target_label']}: {nums}{flag}"


def _batch_settings(plan: Plan, batch: Batch, keys: Sequence[str]) -> Settings:
    """The settings of one batch: its targets' own settings (a manifest row's) over the run's,
    with the batch's generator seed (from the run seed and the batch's pairs, see
    :func:`~accentuate.cli.worklist.batch_seed`)."""
    own = plan.targets[batch.targets[0]].settings
    base = plan.settings.replace(**own) if own else plan.settings
    return base.replace(seed=batch_seed(plan.settings.seed or 0, keys))


def execute(plan: Plan) -> int:
    """Run the plan; write files and ``run.json`` as batches finish. Returns the exit status.

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs this with the same plan: they share the
    batches through torchrun's store and rank 0 writes ``run.json`` (see
    :mod:`accentuate.cli.distributed`).
    """
    started = time.perf_counter()
    spec, settings = plan.spec, plan.settings
    ranks = Ranks.from_env()
    lead = ranks.rank == 0
    quiet = plan.quiet or not lead
    writer = RunWriter(plan.out, header(plan), key_settings(plan), plan.images, plan.targets, pairs=plan.pairs)
    pairs = plan.pairs if plan.pairs is not None else product(len(plan.images), len(plan.targets))
    batches = cut_batches(pairs, plan.images, plan.targets, plan.batch)
    writer.doc["batch"] = plan.batch  # the batches (and so the pictures) depend on it
    work = settings_hash({"key": writer.key, "batch": plan.batch,
                          "batches": [[b.seeds, b.targets] for b in batches],
                          "pairs": [writer.pair_key(i, j) for i, j in pairs]})
    coord = Coordinator.start(ranks)
    steps = settings.steps
    if lead:
        add_previous(writer)  # pairs a stopped distributed run finished
        done = {p for p in pairs if writer.verified(*p)}
        todo = [(b, {p for p in b.pairs if p in done}) for b in batches if not all(p in done for p in b.pairs)]
        where = writer.doc["device"] + (f" and {ranks.world - 1} more process(es)" if ranks.distributed else "")
        say(quiet, f"accentuate: {len(plan.images)} image(s) x {len(plan.targets)} target(s): {len(pairs)} "
            f"pair(s) in {len(batches)} batch(es) with {spec.name} on {where} (reg layer {settings.regularizer}, "
            f"lambda {settings.lam:g}, {steps} steps); output: {plan.out}")
        if done:
            say(quiet, f"accentuate: resuming: {len(done)} pair(s) already complete in {plan.out}, "
                f"{len(pairs) - len(done)} to do")
        writer.doc["timings"]["model_load_s"] = round(plan.model_load_s, 3)
        if plan.frames == 0:  # no snapshots: no animation files
            writer.doc["outputs"].update(gif=False, mp4=False, mp4_note="no animation (--frames 0)")
        writer.save("running")
        clear_rank_records(plan.out)  # what they listed is in run.json now
        coord.publish([(b.index, s) for b, s in todo], work)
    else:
        todo = [(batches[k], s) for k, s in coord.receive(work)]
    skips = {b.index: s for b, s in todo}
    todo_pairs = sum(len(b.pairs) - len(s) for b, s in todo)
    device = next(iter(plan.model.parameters()), torch.empty(0)).device
    rank_info: dict[str, Any] = {**device_record(plan.model), "busy_s": 0.0}

    pair_bar = None
    if not quiet and (len(todo) > 1 or ranks.distributed):
        from tqdm.auto import tqdm

        pair_bar = tqdm(total=todo_pairs, desc="pairs", unit="pair", position=0, file=sys.stderr,
                        dynamic_ncols=True)

    def tick(n: int) -> None:
        if pair_bar is not None and n != pair_bar.n:
            pair_bar.update(n - pair_bar.n)

    interrupted, partial = False, 0
    try:
        for b in coord.claims([b for b, _ in todo]):
            ss, tt = list(b.seeds), list(b.targets)
            hw = plan.images[ss[0]].canvas
            seeds = torch.stack([plan.images[i].tensor for i in ss])  # type: ignore[misc]
            objectives = [plan.targets[j].objective for j in tt]
            bset = _batch_settings(plan, b, [writer.pair_key(i, j) for i, j in b.pairs])
            snaps: int | tuple[()] = ()
            if plan.frames > 0:
                # about `frames` frames, fewer when the batch is large (memory).
                per_frame = len(ss) * len(tt) * 3 * hw[0] * hw[1]
                frames = max(2, min(plan.frames, int(1.5e9 // max(1, per_frame))))
                snaps = snapshot_interval(bset.steps, frames)
            names = ", ".join(plan.images[i].name for i in ss)
            desc = f"{names[:40]} x {len(tt)} target(s)" if len(ss) * len(tt) > 1 else \
                f"{names[:30]} -> {plan.targets[tt[0]].text[:30]}"
            update, close = steps_bar(quiet, desc, bset.steps, position=1 if pair_bar else 0)
            if pair_bar is not None and ranks.distributed:
                update = _with_tick(update, lambda: tick(coord.done()))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            try:
                res = accentuate(plan.model, seeds, objectives, bset, snapshots=snaps, progress=update)
            finally:
                close()
            seconds = time.perf_counter() - t0
            rank_info["busy_s"] = round(rank_info["busy_s"] + seconds, 3)
            skip = skips.get(b.index, set())
            entries = writer.write_batch(res, ss, tt, seconds, skip=skip)
            timing = writer.doc["timings"]["batches"][-1]
            timing.update(index=b.index, rank=ranks.rank, generator_seed=bset.seed)
            if device.type == "cuda":
                peak = int(torch.cuda.max_memory_allocated(device))
                timing["cuda_peak_memory_bytes"] = peak
                rank_info["cuda_peak_memory_bytes"] = max(peak, rank_info.get("cuda_peak_memory_bytes", 0))
            for e in entries:
                e["batch"] = b.index
                if ranks.distributed:
                    e["rank"] = ranks.rank
                if e["status"] == "failed":
                    print(f"accentuate: warning: {e['image']} -> {e['target_label']} failed: {e['failed']}; "
                          "the other pairs continue", file=sys.stderr)
            if res.interrupted:
                interrupted, partial = True, len(entries)
                break
            writer.doc["timings"]["total_s"] = round(time.perf_counter() - started, 3)
            if ranks.distributed:
                write_rank_record(writer, ranks, rank_info)
            coord.add_done(len(entries))
            if lead:
                if ranks.distributed:
                    merge_rank_records(writer, ranks, verify=False)  # a live run.json for the whole job
                writer.save("running")
                tick(coord.done())
        if ranks.distributed and not interrupted:
            write_rank_record(writer, ranks, rank_info)
            coord.finish()
            if lead:
                coord.wait_all(tick)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException as e:
        if ranks.distributed:
            write_rank_record(writer, ranks, rank_info)
        if lead:
            writer.save("error", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if pair_bar is not None:
            pair_bar.close()
    if ranks.distributed:
        write_rank_record(writer, ranks, rank_info)
        if not lead:
            return 130 if interrupted else 0
        dist_rec = merge_rank_records(writer, ranks, verify=True)
        dist_rec["ranks"].insert(0, {"rank": 0, "host": socket.gethostname(), "pid": os.getpid(), **rank_info,
                                     "batches": sum(1 for t in writer.doc["timings"]["batches"]
                                                    if t.get("rank") == 0),
                                     "pairs": sum(1 for e in writer.entries.values()
                                                  if not e.get("resumed") and e.get("rank", 0) == 0)})
        writer.doc["distributed"] = dist_rec
        missing = len(pairs) - len(writer.entries)
        if missing and not interrupted:
            print(f"accentuate: error: {missing} pair(s) were not done (a process stopped early); rerun the same "
                  "command to do them", file=sys.stderr)
            interrupted = True
    elif "cuda_peak_memory_bytes" in rank_info:
        writer.doc["cuda_peak_memory_bytes"] = rank_info["cuda_peak_memory_bytes"]
    writer.doc["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    title = f"{spec.name}: rows are seeds, columns are targets (reg layer {settings.regularizer}, " \
        f"lambda {settings.lam:g}, {steps} steps)"
    sheet = writer.contact_sheet(title)
    entries = sorted(writer.entries.values(), key=lambda e: (e["seed"], e["target"]))
    failed = [e for e in entries if e["status"] == "failed"]
    if interrupted:
        writer.save("interrupted")
        _report(plan)
        finished = sum(1 for e in entries if e["status"] == "complete")
        print(f"accentuate: interrupted; wrote {finished} finished pair(s)"
              + (f" and the partial state of {partial} (marked \"partial\" in run.json)" if partial else "")
              + f" to {plan.out}; rerun the same command with --out {shlex.quote(str(plan.out))} to finish",
              file=sys.stderr)
        return 130
    writer.save("complete")
    if ranks.distributed:
        clear_rank_records(plan.out)  # run.json holds every pair now
    page = _report(plan)
    if not plan.quiet:
        print(f"accentuated {len(entries)} pair(s) in {time.perf_counter() - started:.0f} s:")
        for entry in entries:
            print(_pair_line(entry))
        print(f"results in {plan.out}/")
        if sheet is not None:
            print(f"  contact sheet: {sheet}")
        print(f"  per pair: {per_pair_files(plan.frames, writer.doc['outputs'].get('mp4', False))}")
        print(f"  record:   {writer.path}")
        if page is not None:
            print(f"  report:   {page}")
    if failed:
        print(f"accentuate: error: {len(failed)} of {len(entries)} pair(s) failed (numerical trouble); "
              "see \"failed\" in run.json", file=sys.stderr)
        return 1
    return 0


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

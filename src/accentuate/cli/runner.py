"""Running many seeds x targets from the command line: batching, progress, resume, Ctrl-C.

:func:`execute` takes a :class:`Plan` (model, images, targets, settings, output
folder) and

1. skips pairs an earlier run in the same folder finished with the same settings
   (verified by the SHA-256 of their files, see :meth:`RunWriter.verified`);
2. groups the other pairs by canvas shape (one batched call of
   :func:`accentuate.accentuate` per group, split into batches of at most
   ``--batch`` pairs);
3. after each batch writes its files and rewrites ``run.json``;
4. draws the contact sheet at the end (and on Ctrl-C, with what is finished).

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


def _batches(
    todo: list[tuple[int, int]], images: list[ImageInfo], batch: int
) -> list[tuple[list[int], list[int]]]:
    """Group pairs by canvas shape, then cut each group into seed x target batches."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in todo:
        groups.setdefault(images[i].canvas, []).append((i, j))
    out = []
    for pairs in groups.values():
        seeds = sorted({i for i, _ in pairs})
        targets = sorted({j for _, j in pairs})
        t_per = max(1, min(len(targets), batch))
        s_per = max(1, batch // t_per)
        for a in range(0, len(seeds), s_per):
            for b in range(0, len(targets), t_per):
                ss, tt = seeds[a:a + s_per], targets[b:b + t_per]
                if any((i, j) in pairs for i in ss for j in tt):
                    out.append((ss, tt))
    return out


def _pair_line(e: dict[str, Any]) -> str:
    a, b = e["after"], e["before"]
    if a.get("rank") is not None:
        nums = f"rank {b['rank']} -> {a['rank']}, p {b['prob']:.3f} -> {a['prob']:.3f}"
    else:
        nums = f"value {b['value']:.3g} -> {a['value']:.3g}"
    flag = "" if e["status"] == "complete" else f"  [{e['status']}]"
    return f"  {e['image']} -> {e['target_label']}: {nums}{flag}"


def execute(plan: Plan) -> int:
    """Run the plan; write files and ``run.json`` as batches finish. Returns the exit status."""
    started = time.perf_counter()
    spec, settings = plan.spec, plan.settings
    writer = RunWriter(plan.out, header(plan), key_settings(plan), plan.images, plan.targets)
    pairs = [(i, j) for i in range(len(plan.images)) for j in range(len(plan.targets))]
    done = {p for p in pairs if writer.verified(*p)}
    todo = [p for p in pairs if p not in done]
    batches = _batches(todo, plan.images, plan.batch)
    steps = settings.steps
    say(plan.quiet, f"accentuate: {len(plan.images)} image(s) x {len(plan.targets)} target(s) = {len(pairs)} "
        f"pair(s) with {spec.name} on {writer.doc['device']} (reg layer {settings.regularizer}, "
        f"lambda {settings.lam:g}, {steps} steps); output: {plan.out}")
    if done:
        say(plan.quiet, f"accentuate: resuming: {len(done)} pair(s) already complete in {plan.out}, "
            f"{len(todo)} to do")
    writer.doc["timings"]["model_load_s"] = round(plan.model_load_s, 3)
    if plan.frames == 0:  # no snapshots: no animation files
        writer.doc["outputs"].update(gif=False, mp4=False, mp4_note="no animation (--frames 0)")
    writer.save("running")

    pair_bar = None
    if not plan.quiet and len(batches) > 1:
        from tqdm.auto import tqdm

        pair_bar = tqdm(total=len(todo), desc="pairs", unit="pair", position=0, file=sys.stderr,
                        dynamic_ncols=True)
    interrupted, partial = False, 0
    try:
        for ss, tt in batches:
            hw = plan.images[ss[0]].canvas
            seeds = torch.stack([plan.images[i].tensor for i in ss])  # type: ignore[misc]
            objectives = [plan.targets[j].objective for j in tt]
            snaps: int | tuple[()] = ()
            if plan.frames > 0:
                # about `frames` frames, fewer when the batch is large (memory).
                per_frame = len(ss) * len(tt) * 3 * hw[0] * hw[1]
                frames = max(2, min(plan.frames, int(1.5e9 // max(1, per_frame))))
                snaps = snapshot_interval(steps, frames)
            names = ", ".join(plan.images[i].name for i in ss)
            desc = f"{names[:40]} x {len(tt)} target(s)" if len(ss) * len(tt) > 1 else \
                f"{names[:30]} -> {plan.targets[tt[0]].text[:30]}"
            update, close = steps_bar(plan.quiet, desc, steps, position=1 if pair_bar else 0)
            t0 = time.perf_counter()
            try:
                res = accentuate(plan.model, seeds, objectives, settings, snapshots=snaps, progress=update)
            finally:
                close()
            skip = {(i, j) for i in ss for j in tt if (i, j) in done}
            entries = writer.write_batch(res, ss, tt, time.perf_counter() - t0, skip=skip)
            for e in entries:
                if e["status"] == "failed":
                    print(f"accentuate: warning: {e['image']} -> {e['target_label']} failed: {e['failed']}; "
                          "the other pairs continue", file=sys.stderr)
            if res.interrupted:
                interrupted, partial = True, len(entries)
                break
            done.update((i, j) for i in ss for j in tt)
            writer.doc["timings"]["total_s"] = round(time.perf_counter() - started, 3)
            writer.save("running")
            if pair_bar is not None:
                pair_bar.update(len(entries))
    except KeyboardInterrupt:
        interrupted = True
    except BaseException as e:
        writer.save("error", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if pair_bar is not None:
            pair_bar.close()

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

"""The value an accentuation returns: images, masks, history and numbers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import saving
from .display import Display
from .objectives import Objective
from .settings import Settings

if TYPE_CHECKING:
    from .judges import Judgement
    from .outputs.grid import Grid

__all__ = ["History", "Result"]


class History:
    """Per-step records. Each attribute is a tensor ``(records, N, M)``.

    - ``step``: the step number after which the record was taken (1-based);
    - ``objective``: the target's value, mean over the step's augmented crops;
    - ``distance``: the regularization distance to the seed (before weighting);
    - ``weight``: the effective lambda (``lam * balance``; 0 until balance is measured);
    - ``value``: the target's value on the un-augmented image after the step;
    - ``rank``: the target class's rank there (1 = top-1), when targets are classes.

    ``value``, ``rank`` and ``prob`` come from an evaluation of the un-augmented
    images, which ``accentuate(record_every=k)`` makes every k steps: they are NaN in
    the records without one (and absent from those records in :meth:`to_records`).
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[torch.Tensor | None]] = {}  # aligned with steps; None: not recorded
        self.steps: list[int] = []

    def append(self, step: int, rec: dict[str, torch.Tensor], ev: dict[str, torch.Tensor] | None) -> None:
        merged = dict(rec)
        if ev is not None:
            merged["value"] = ev["value"]
            if "rank" in ev:
                merged["rank"] = ev["rank"].float()
                merged["prob"] = ev["prob"]
        i = len(self.steps)
        self.steps.append(step)
        for k, v in merged.items():
            self._rows.setdefault(k, [None] * i).append(v.detach())
        for col in self._rows.values():
            if len(col) == i:
                col.append(None)

    def __getattr__(self, name: str) -> torch.Tensor:
        rows = self.__dict__.get("_rows", {})
        if name in rows:
            col = rows[name]
            like = next(c for c in col if c is not None)
            return torch.stack([c if c is not None else torch.full_like(like, float("nan")) for c in col]).cpu()
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(self.steps)

    def keys(self) -> list[str]:
        """The recorded quantities (``objective``, ``distance``, ``weight``, ``value``, ...)."""
        return list(self._rows)

    def recorded(self, name: str) -> list[bool]:
        """For each record, whether ``name`` was recorded there (see ``record_every``)."""
        return [c is not None for c in self._rows[name]]

    @classmethod
    def from_columns(
        cls, steps: list[int], columns: dict[str, torch.Tensor], recorded: dict[str, list[bool]] | None = None
    ) -> History:
        """A history from stacked columns ``(records, N, M)`` (what :meth:`Result.load` reads).

        Args:
            steps: the step of each record.
            columns: each quantity stacked over the records, as the attributes give them.
            recorded: per quantity, which records hold it (default: all).
        """
        h = cls()
        h.steps = [int(t) for t in steps]
        for k, col in columns.items():
            flags = recorded.get(k) if recorded else None
            flags = [True] * len(h.steps) if flags is None else list(flags)
            if len(flags) != len(h.steps) or col.shape[0] != len(h.steps):
                raise ValueError(f"history column {k!r} has {col.shape[0]} records for {len(h.steps)} steps")
            h._rows[k] = [col[i].clone() if f else None for i, f in enumerate(flags)]
        return h

    def subset(self, seeds: list[int], targets: list[int]) -> History:
        """The records of the accentuations ``seeds`` x ``targets`` (indices)."""
        si, ti = torch.as_tensor(seeds, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long)
        h = History()
        h.steps = list(self.steps)
        h._rows = {k: [None if c is None else c.index_select(0, si.to(c.device)).index_select(1, ti.to(c.device))
                       for c in col] for k, col in self._rows.items()}
        return h

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per record, tensors as nested lists ``[seed][target]`` (only what was recorded)."""
        lists: dict[str, list[Any]] = {}
        for k, col in self._rows.items():  # one stack and one device copy per key
            have = iter(torch.stack([c for c in col if c is not None]).cpu().tolist())
            lists[k] = [None if c is None else next(have) for c in col]
        out = []
        for i, step in enumerate(self.steps):
            row: dict[str, Any] = {"step": step}
            row.update({k: v[i] for k, v in lists.items() if v[i] is not None})
            out.append(row)
        return out


@dataclass
class Result(Display):
    """What :func:`accentuate.accentuate` returns.

    Attributes:
        images: ``(N, M, 3, H, W)`` accentuations in [0, 1] (N seeds, M targets).
        masks: ``(N, M, H, W)`` raw accumulated ``|d target / d image|`` (channel mean);
            see :meth:`alpha` and :func:`accentuate.opacity.to_alpha`.
        seeds: ``(N, 3, H, W)`` the seeds as fitted to the canvas, or ``None``.
        targets: the M resolved objectives.
        history: per-step :class:`History`.
        before, after: ``value`` ``(N, M)`` and for class targets ``rank``, ``prob`` and
            ``logits`` ``(N, M, classes)``, on the un-augmented seed and result.
        steps_used: ``(N, M)`` steps each accentuation took (less than ``steps`` when it
            stopped early in least-change mode or failed).
        lam_effective: ``(N, M)`` the regularization weight after balancing.
        failed: ``{(seed, target): message}`` for accentuations stopped by a numerical fault.
        snapshots: ``{step: uint8 tensor (N, M, 3, H, W)}``.
        config: the :class:`~accentuate.settings.Settings` the run used (every setting).
        run: facts of the run: ``model``, ``input_size``, ``targets``, ``canvas_used`` ``(H, W)``,
            ``device``, ``generator_seed`` (the ``seed`` it ran from), ``seconds``.
        interrupted: the run was stopped by Ctrl-C; ``steps_done`` steps were taken.
        judgement: what other models saw (:func:`accentuate.judge`, which sets it; ``--judge`` and
            ``accentuate evaluate`` on the command line): a :class:`~accentuate.judges.Judgement`
            whose rows carry ``seed`` and ``target`` (indices into this result), or ``None``.
            :meth:`save` writes it to ``run.json`` and :meth:`load` reads it back.
    """

    images: torch.Tensor
    masks: torch.Tensor
    seeds: torch.Tensor | None
    targets: list[Objective]
    labels: tuple[str, ...] | None
    history: History
    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]
    steps_used: torch.Tensor
    lam_effective: torch.Tensor
    failed: dict[tuple[int, int], str] = field(default_factory=dict)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    config: Settings = field(default_factory=lambda: Settings())
    run: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    steps_done: int = 0
    judgement: Judgement | None = None

    @property
    def has_opacity(self) -> bool:
        """Whether the run accumulated opacity masks (``accentuate(..., opacity=True)``)."""
        return self.config.opacity

    def alpha(self, collective: bool = False, percentile: float = 99.0, sigma: float = 2.0) -> torch.Tensor:
        """Alpha channels ``(N, M, H, W)`` in [0, 1] from the raw masks.

        Raises:
            ValueError: the run kept no masks (``opacity=False``).
        """
        from .opacity import to_alpha

        if not self.has_opacity:
            raise ValueError("this result has no opacity masks (it ran with opacity=False); rerun with opacity=True")

        return to_alpha(self.masks, percentile=percentile, sigma=sigma, collective=collective)

    def rgba(self, collective: bool = False) -> torch.Tensor:
        """The accentuations with their opacity as alpha, ``(N, M, 4, H, W)``."""
        return torch.cat([self.images, self.alpha(collective)[:, :, None]], dim=2)

    def top(self, which: str = "after", k: int = 5) -> list[list[list[tuple[int, str | None, float]]]]:
        """Top-``k`` classes ``[(index, name, probability)]`` per seed and target."""
        logits = getattr(self, which).get("logits")
        if logits is None:
            return []
        probs = logits.softmax(-1)
        v, i = probs.topk(min(k, probs.shape[-1]), dim=-1)
        names = self.labels
        return [[[(int(c), names[int(c)] if names else None, float(p)) for p, c in zip(v[a, b], i[a, b])]
                 for b in range(v.shape[1])] for a in range(v.shape[0])]

    def summary(self) -> list[dict[str, Any]]:
        """Per accentuation: target, value and rank before and after, steps, lambda."""
        rows = []
        n, m = self.images.shape[:2]
        for i in range(n):
            for j in range(m):
                row: dict[str, Any] = {
                    "seed": i, "target": repr(self.targets[j]),
                    "value_before": float(self.before["value"][i, j]) if "value" in self.before else None,
                    "value_after": float(self.after["value"][i, j]),
                    "steps": int(self.steps_used[i, j]),
                    "lam_effective": float(self.lam_effective[i, j]),
                }
                for key in ("rank", "prob"):
                    if key in self.after:
                        row[f"{key}_before"] = (self.before[key][i, j]).item() if key in self.before else None
                        row[f"{key}_after"] = self.after[key][i, j].item()
                if (i, j) in self.failed:
                    row["failed"] = self.failed[(i, j)]
                rows.append(row)
        return rows

    def subset(self, seeds: list[int], targets: list[int]) -> Result:
        """The accentuations of ``seeds`` x ``targets`` (indices into the N seeds and M targets) as a
        result of their own, ``(len(seeds), len(targets), ...)``, with their history, numbers, masks,
        snapshots and record.

        Example:
            >>> import accentuate as acc                                        # doctest: +SKIP
            >>> res = acc.accentuate(model, [cat, dog], ["goldfish", "tabby"])  # doctest: +SKIP
            >>> res.subset([1], [0]).images.shape  # the dog with goldfish     # doctest: +SKIP
            torch.Size([1, 1, 3, 512, 512])
        """
        n, m = self.images.shape[:2]
        for what, idx, size in (("seed", seeds, n), ("target", targets, m)):
            bad = [k for k in idx if not 0 <= int(k) < size]
            if bad:
                raise IndexError(f"{what} index {bad[0]} is out of range: this result has {size} {what}s")
        si, ti = torch.as_tensor(seeds, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long)

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, si).index_select(1, ti)

        new_of_seed = {int(i): a for a, i in enumerate(seeds)}
        new_of_target = {int(j): b for b, j in enumerate(targets)}
        run = dict(self.run)
        if isinstance(run.get("targets"), list) and len(run["targets"]) == m:
            run["targets"] = [run["targets"][int(j)] for j in targets]
        if isinstance(run.get("seed_names"), list) and len(run["seed_names"]) == n:
            run["seed_names"] = [run["seed_names"][int(i)] for i in seeds]
        return Result(
            images=pick(self.images), masks=pick(self.masks),
            seeds=None if self.seeds is None else self.seeds.index_select(0, si),
            targets=[self.targets[int(j)] for j in targets], labels=self.labels,
            history=self.history.subset([int(i) for i in seeds], [int(j) for j in targets]),
            before={k: pick(v) for k, v in self.before.items()}, after={k: pick(v) for k, v in self.after.items()},
            steps_used=pick(self.steps_used), lam_effective=pick(self.lam_effective),
            failed={(new_of_seed[i], new_of_target[j]): msg for (i, j), msg in self.failed.items()
                    if i in new_of_seed and j in new_of_target},
            snapshots={k: pick(v) for k, v in self.snapshots.items()}, config=self.config, run=run,
            interrupted=self.interrupted, steps_done=self.steps_done,
            judgement=None if self.judgement is None else self.judgement.subset(new_of_seed, new_of_target),
        )

    def save(self, directory: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
        """Write the result as the command line writes a run, and a lossless copy.

        Per seed x target, with ``NAME`` = ``{image}__{target}`` (the command line's names,
        e.g. ``cat__goldfish``): ``NAME.png``, ``NAME_rgba.png`` (alpha = opacity; not when
        the run kept no opacity), ``NAME_figure.png`` and, with snapshots, ``NAME.gif``;
        then ``contact_sheet.png``, ``run.json`` in the command line's format
        (``docs/run-json.md``) and ``result.npz``, every tensor of the result as float32
        (images, masks, seeds, history, before/after with the logits), so that
        :meth:`load` gives them back exactly. Writes are atomic.

        Args:
            directory: the folder (created if needed).
            names: a name per seed for the file names (default: the file names of the
                seeds as given to :func:`accentuate.accentuate`, else ``seed0``, ``seed1``, ...).

        Returns:
            The paths written.
        """
        return saving.save(self, directory, names=names)

    @classmethod
    def load(cls, path: str | os.PathLike, seeds: list[int | str] | None = None,
             batch: int | None = None) -> Result:
        """Read a result written by :meth:`save` or by ``accentuate run`` / ``explain`` / ``demo``.

        From a folder with ``result.npz`` (what :meth:`save` writes) everything comes back
        exactly except ``snapshots`` (the GIFs hold them). From a command-line folder
        (``run.json`` and the PNGs), images are the 8-bit PNGs (within 1/255), masks the
        saved alpha channels (already normalized, not the raw accumulation), before/after
        the ``value``, ``rank`` and ``prob`` of ``run.json`` (no logits), the history is
        empty, and the seeds are read from their recorded paths when the files are still
        there unchanged (else ``None``).

        Args:
            path: the folder, or its ``run.json``.
            seeds: which images to load (indices or file names), e.g. those of one canvas
                size when a command-line run had photos of several aspect ratios.
            batch: load one batch of the run (its seeds x its targets, with its own settings
                and generator seed), e.g. of a ``run --manifest`` or ``explain --misclassified``
                folder, whose pairs are not every image x every target.

        Raises:
            FileNotFoundError: no ``run.json`` there, or a file it lists is missing.
            ValueError: not a run record, pairs missing, images of several canvas sizes, or a
                work list that is not every image x every target without ``batch=``.
        """
        return saving.load(path, seeds=seeds, batch=batch)

    def _grid(self) -> Grid:
        """What this looks like in a notebook (see :mod:`accentuate.outputs.grid`): its images with their numbers."""
        from .outputs.grid import MAX_COLS, MAX_ROWS, Cell, Grid, clip_count, num, overlay, picture

        n, m = self.images.shape[:2]
        rn, note_r = clip_count(n, MAX_ROWS, "seeds")
        cm, note_c = clip_count(m, MAX_COLS, "targets")
        labels = [t.describe()["label"] for t in self.targets[:cm]]
        alpha = self.alpha() if self.has_opacity else None
        rows = []
        for i in range(rn):
            cells = [Cell(picture(self.seeds[i]) if self.seeds is not None else None, ["seed"])]
            over = [Cell(None)]
            for j in range(cm):
                lines = [f"value {num(self.before['value'][i, j]) if 'value' in self.before else '?'} -> "
                         f"{num(self.after['value'][i, j])}"]
                if "rank" in self.after:
                    lines.append(f"rank {num(int(self.before['rank'][i, j])) if 'rank' in self.before else '?'} -> "
                                 f"{int(self.after['rank'][i, j])}")
                    lines.append(f"p {num(float(self.after['prob'][i, j]))}")
                if self.judgement is not None:
                    for r in self.judgement.rows_of(i, j):
                        lines.append(f"{r['judge']}: rank {num(r['rank_before'])} -> {num(r['rank_after'])}"
                                     if r["rank_after"] is not None else
                                     f"{r['judge']}: change {num(r['feature_change'])}")
                if (i, j) in self.failed:
                    lines.append("FAILED")
                cells.append(Cell(picture(self.images[i, j]), lines))
                if alpha is not None:
                    over.append(Cell(overlay(self.images[i, j], alpha[i, j]), ["with opacity"]))
            rows.append((f"seed {i}", cells))
            if alpha is not None:
                rows.append((f"seed {i}, opacity", over))
        note = "; ".join(x for x in (note_r, note_c) if x)
        title = f"Result: {n} seed(s) x {m} target(s), {self.steps_done} steps" + (" (interrupted)" if self.interrupted else "")
        return Grid(title, ["seed"] + labels, rows, note, ["seed", "target", "value_before", "value_after", "rank_before",
                                                         "rank_after", "prob_after", "steps", "lam_effective"],
                    self.summary())

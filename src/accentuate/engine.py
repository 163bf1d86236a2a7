"""The accentuation loop: one step, and the loop over steps.

:class:`Accentuator` holds one batch of N seeds x M targets (N * M independent
accentuations, each with its own parameters and paired with its own seed) and
exposes :meth:`Accentuator.step`, so you can write your own loop;
:func:`accentuate` is the loop with defaults, progress reporting, least-change
stopping and interrupt handling.

One step:

1. Draw K crops and their noise once (:mod:`accentuate.augment`); every
   accentuation and every seed gets the same crops, which pairs the regularizer
   and makes a batch equal to its single runs.
2. Render all images (reusing the rendering made for the last evaluation when the
   parameters have not changed since), crop them with one linear operator
   (:class:`~accentuate.augment.CropOperator`: two sparse resampling passes on CPU),
   run the model once on all crops, capturing the target layers and the
   regularization layer. The crops are the graph's leaf: the model's backward
   stops there.
3. Run the seeds' crops through the model without autograd, stopping at the
   regularization layer (once per seed, shared by its targets).
4. Backward the objective alone to the crops, and the distance alone (it only
   reaches back from the regularization layer, so costs a partial backward); map
   both to the canvas with the crop operator's adjoint (the objective's is the
   opacity), combine them there and backward once more through the (cheap)
   parameterization.
5. Skip accentuations whose loss or gradient is not finite (they keep their last
   good image), take an optimizer step, and record the un-augmented objective.

Options for speed: ``channels_last`` (on by default; conv nets run faster on CPU
with it) and ``autocast`` (e.g. ``"bfloat16"``: the model runs in mixed precision,
everything else in float32). ``benchmarks/bench_step.py`` measures both against
the cost of the model's own forward and backward pass.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .augment import CropOperator, Crops, sample_crops
from .errors import ModelError
from .hooks import OUTPUT, capture, check_layers
from .images import SeedLike, prepare_seeds, resize, seed_names
from .objectives import Objective, as_objective
from .params import ImageParam, make_param
from .regularize import NONE, PIXEL, distance
from .result import History, Result
from .spec import ModelSpec, default_reg_layer, forward_error, resolve_spec

__all__ = ["Accentuator", "Until", "accentuate", "model_state"]

from .spec import _UNSET  # noqa: E402  (the one sentinel resolve_spec knows)


@contextlib.contextmanager
def model_state(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode with frozen parameters; restore both afterwards."""
    training = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        for m, t in training:
            m.training = t


@dataclass(frozen=True)
class Until:
    """Least-change stopping: an accentuation stops once its target is seen.

    Exactly one criterion: ``rank`` (e.g. 1 for top-1) or ``prob`` (softmax
    probability of the target class). Checked every ``every`` steps on the
    un-augmented image.
    """

    rank: int | None = None
    prob: float | None = None
    every: int = 5

    @staticmethod
    def parse(value: str | int | float | Until | None, every: int = 5) -> Until | None:
        """``"top1"``/``"top5"`` or an int rank, or a float probability in (0, 1)."""
        if value is None or isinstance(value, Until):
            return value
        if isinstance(value, str):
            v = value.strip().lower()
            if v.startswith("top") and v[3:].isdigit():
                return Until(rank=int(v[3:]), every=every)
            try:
                num = float(v)
            except ValueError:
                raise ValueError(
                    f"until must be 'topK', a rank or a probability; got {value!r}"
                ) from None
            value = int(num) if num >= 1 and num.is_integer() else num
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return Until(rank=value, every=every)
        if isinstance(value, float) and 0 < value < 1:
            return Until(prob=value, every=every)
        raise ValueError(f"until must be 'topK', a rank >= 1 or a probability in (0, 1); got {value!r}")

    def reached(self, rank: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        if self.rank is not None:
            return rank <= self.rank
        return prob >= float(self.prob)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"top{self.rank}" if self.rank is not None else f"p>={self.prob}"


def _generator(generator: torch.Generator | int | None, device: torch.device) -> tuple[torch.Generator, int | None]:
    if isinstance(generator, torch.Generator):
        if generator.device.type != device.type:
            raise ValueError(
                f"the generator is on {generator.device} but the model is on {device}; "
                f"create it with torch.Generator(device={str(device)!r}) or pass an int seed"
            )
        return generator, None
    if generator is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    elif isinstance(generator, int) and not isinstance(generator, bool):
        seed = generator
    else:
        raise TypeError(f"generator must be a torch.Generator or an int seed; got {type(generator).__name__}")
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g, seed


def _check_noise(noise: Sequence[float]) -> None:
    values = list(noise)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"noise must be (gaussian sd, uniform width), two numbers >= 0; got {noise!r}")


def _check_options(steps: int, lam: float | torch.Tensor, lr: float, crops: int, crop_range: Sequence[float],
                   canvas: int | Sequence[int], input_size: tuple[int, int], noise: Sequence[float] = (0.0, 0.0)) -> None:
    _check_noise(noise)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    lam_t = torch.as_tensor(lam, dtype=torch.float64)
    if not bool(torch.isfinite(lam_t).all()) or bool((lam_t < 0).any()):
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    if not isinstance(crops, int) or crops < 1:
        raise ValueError(f"crops must be a positive integer; got {crops!r}")
    lo, hi = crop_range
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"crop_range must satisfy 0 < min <= max <= 1; got ({lo}, {hi})")
    sides = [canvas] if isinstance(canvas, int) else list(canvas)
    if any(int(s) < min(input_size) for s in sides) and isinstance(canvas, int):
        raise ValueError(
            f"canvas {canvas} is smaller than the model input {input_size[0]} x {input_size[1]}; "
            f"use canvas >= {max(input_size)}"
        )
    if not isinstance(canvas, int) and max(int(s) for s in sides) < min(input_size):
        raise ValueError(
            f"canvas {tuple(canvas)} is smaller than the model input {input_size}; enlarge it"
        )


class Accentuator:
    """State of one batched accentuation: N seeds x M targets.

    Args:
        model: the model (not modified; put in eval mode with frozen weights only
            while a step runs).
        spec: its :class:`ModelSpec` (see :func:`accentuate.spec.resolve_spec`).
        seeds: ``(N, 3, H, W)`` canvases in [0, 1], or ``None`` for noise-seeded
            feature visualization of shape ``canvas`` (then N = 1 and no regularizer).
        objectives: M resolved objectives.
        reg_layer: a layer name, ``"pixel"`` or ``"none"``.
        lam: regularization weight (before balancing).
        balance: multiply ``lam`` by the gradient-ratio balance (see :mod:`accentuate.regularize`).
        param: ``"fourier"``, ``"phase"`` or ``"pixel"``.
        lr: learning rate; optimizer: ``"adam"`` or a callable ``(params, lr) -> Optimizer``.
        crops, crop_range, noise: paired augmentation (see :func:`accentuate.augment.sample_crops`).
        canvas: ``(H, W)`` when ``seeds`` is ``None``.
        generator: all randomness.
        opacity: accumulate ``|d objective / d image|`` (the masks).
        record_every: :func:`accentuate` evaluates the un-augmented images every this many steps.
        channels_last: feed the model ``channels_last`` tensors (faster for conv nets on CPU).
        autocast: ``None`` (float32) or a lower precision for the model's forward and
            backward (``"bfloat16"`` or ``"float16"``, via :func:`torch.autocast`); the
            parameterization, crops, objectives, regularizer and optimizer stay float32.
        per_pass: accentuations per forward/backward pass of the model (each brings its
            K crops). ``None``: on CPU as many as fit in one default step's worth of
            input (16 crops of 224 x 224), since larger passes only add memory traffic
            there (a batch then costs per accentuation what its single runs cost, and
            peak memory stays that of one pass); all at once on other devices. Results
            depend on it only through rounding.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        seeds: torch.Tensor | None,
        objectives: Sequence[Objective],
        *,
        reg_layer: str = NONE,
        lam: float | torch.Tensor = 1.0,
        balance: bool = True,
        param: str = "fourier",
        lr: float = 0.05,
        optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
        crops: int = 16,
        crop_range: tuple[float, float] = (0.05, 0.99),
        noise: tuple[float, float] = (0.02, 0.02),
        canvas: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        opacity: bool = True,
        record_every: int = 1,
        channels_last: bool = True,
        autocast: str | torch.dtype | None = None,
        per_pass: int | None = None,
    ) -> None:
        p = next(model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.model, self.spec = model, spec
        self.objectives = list(objectives)
        self.n = 1 if seeds is None else seeds.shape[0]
        self.m = len(self.objectives)
        self.seeds = None if seeds is None else seeds.to(self.device, torch.float32)
        self.canvas = tuple(self.seeds.shape[-2:]) if self.seeds is not None else tuple(canvas)  # type: ignore[arg-type]
        self.reg_layer = NONE if self.seeds is None else reg_layer
        if self.reg_layer not in (NONE, PIXEL):
            check_layers(model, [self.reg_layer])
        check_layers(model, {layer for o in self.objectives for layer in o.layers})
        self.balance = balance
        _check_noise(noise)
        self.crops, self.crop_range, self.noise = crops, tuple(crop_range), tuple(noise)
        self.generator = generator
        self.opacity_on, self.record_every = opacity, record_every
        self.channels_last = channels_last
        self.autocast = _autocast_dtype(autocast)
        if per_pass is not None and (not isinstance(per_pass, int) or per_pass < 1):
            raise ValueError(f"per_pass must be a positive integer or None; got {per_pass!r}")
        self.per_pass = per_pass
        self.input_size = spec.input_size
        # The rendering made for the last evaluation, keyed by the parameters' versions.
        self._rendered: tuple[tuple[int, ...], torch.Tensor] | None = None  # (key, images)

        shape = (self.n * self.m, 3, *self.canvas)
        init = None if self.seeds is None else self.seeds.repeat_interleave(self.m, dim=0)
        self.param: ImageParam = make_param(param, shape, seed=init, generator=generator, device=self.device)
        self.param.to(self.device)
        params = [q for q in self.param.parameters() if q.requires_grad]
        if optimizer == "adam":
            # The fused kernel (one pass over the parameters) is ~7x faster than the
            # default foreach Adam on CPU; same update up to rounding.
            self.optimizer = torch.optim.Adam(params, lr=lr, fused=self.device.type in ("cpu", "cuda"))
        elif callable(optimizer):
            self.optimizer = optimizer(params, lr=lr)
        else:
            raise ValueError(f"optimizer must be 'adam' or a callable (params, lr=...); got {optimizer!r}")

        p_count = self.n * self.m
        self.t = 0
        # lam: a scalar, or one value per accentuation (anything broadcastable to (N, M)).
        self.lam = torch.as_tensor(lam, dtype=torch.float32, device=self.device).expand(self.n, self.m).reshape(-1)
        self.weight = (torch.full((p_count,), math.nan, device=self.device)
                       if self.reg_layer != NONE and balance else self.lam.clone())
        self.active = torch.ones(p_count, dtype=torch.bool, device=self.device)
        self.failed: dict[int, str] = {}
        self.steps_used = torch.full((p_count,), -1, dtype=torch.long, device=self.device)
        self.opacity = torch.zeros((p_count, *self.canvas), device=self.device)
        self._frozen: dict[int, list[torch.Tensor]] = {}
        self.history = History()
        self.last_crops: Crops | None = None

        # Validate objectives against the layers' real shapes before the first step.
        with torch.no_grad():
            view = self._full_view(self.param().detach()[:1])
            shapes = self._shapes(view)
        for o in self.objectives:
            o.validate(shapes)

    # -- model calls ---------------------------------------------------------------------
    def _layers(self) -> list[str]:
        names = {layer for o in self.objectives for layer in o.layers}
        if self.reg_layer not in (NONE, PIXEL):
            names.add(self.reg_layer)
        return sorted(names)

    def _run(self, x: torch.Tensor, names: Sequence[str], stop_at: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Forward ``x`` in [0, 1] with the named layers captured; ``OUTPUT`` holds the logits.

        Under ``autocast`` the captured tensors are returned in float32.
        """
        amp = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with capture(self.model, names, stop_at=stop_at) as cap, amp:
            try:
                if stop_at is None:
                    out = self.spec.logits(self.model(self.spec.preprocess(x)))
                else:
                    cap.run(self.model, self.spec.preprocess(x))
                    out = None
            except (ModelError, KeyboardInterrupt):
                raise
            except Exception as e:  # the user's model failed inside its forward
                raise forward_error(e, self.spec) from e
            missing = cap.missing()
            if missing:
                cap[missing[0]]  # raises LayerError: never ran
            acts = dict(cap.outputs)
        if out is not None:
            acts[OUTPUT] = out
        if self.autocast is not None:
            acts = {k: v.float() if v.is_floating_point() else v for k, v in acts.items()}
        return acts

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last input makes conv nets ~25% faster on CPU; the model is not touched.
        fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _per_pass(self) -> int:
        """Accentuations (or seeds) per model pass (see ``per_pass``)."""
        if self.per_pass is not None:
            return self.per_pass
        if self.device.type != "cpu":
            return self.n * self.m
        h, w = self.input_size
        return max(1, _CPU_PASS_PIXELS // (self.crops * h * w))

    def _images(self) -> torch.Tensor:
        """The current images ``(N * M, 3, H, W)`` with their graph to the parameters.

        Rendering is reused between :meth:`evaluate` and the next :meth:`step` while
        no parameter has changed (an in-place update bumps a parameter's version, a
        replaced ``.data`` changes its storage).
        """
        key = tuple(v for q in self.param.parameters() for v in (q._version, q.data_ptr()))
        if self._rendered is not None and self._rendered[0] == key:
            return self._rendered[1]
        with torch.enable_grad():
            images = self.param()
        self._rendered = (key, images)
        return images

    def _shapes(self, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
        with model_state(self.model):
            acts = self._run(x, self._layers())
        return {k: tuple(v.shape) for k, v in acts.items()}

    def _full_view(self, images: torch.Tensor) -> torch.Tensor:
        """The un-augmented view the model sees: the whole canvas resized to its input."""
        return resize(images, self.input_size)

    def _pair_objective(self, acts: dict[str, torch.Tensor], p0: int, p1: int, k: int) -> torch.Tensor:
        """Objective of accentuations ``p0 .. p1 - 1`` (``k`` rows each, in order), ``(p1 - p0,)``."""
        count, m = p1 - p0, self.m
        parts, where = [], []
        for j, obj in enumerate(self.objectives):
            idx = [q for q in range(count) if (p0 + q) % m == j]
            if not idx:
                continue
            if len(idx) == count:
                sub = acts
            else:
                rows = (torch.tensor(idx, device=self.device)[:, None] * k
                        + torch.arange(k, device=self.device)).flatten()
                sub = {name: a.index_select(0, rows) for name, a in acts.items() if name in obj.layers}
            parts.append(obj(sub).view(len(idx), k).mean(dim=1))
            where += idx
        values = torch.cat(parts)
        return values[torch.argsort(torch.tensor(where, device=self.device))]

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Objective, rank and probability of each accentuation on its un-augmented image.

        Args:
            images: ``(N * M, 3, H, W)``; defaults to the current images.

        Returns:
            ``value`` ``(N, M)``, and when the targets are class logits ``rank``
            (1 = top-1) and ``prob`` ``(N, M)``, plus ``logits`` ``(N, M, classes)``.
        """
        with _phase("evaluate"):
            if images is None:
                images = self._images().detach()
            with model_state(self.model):
                acts = self._run(self._layout(self._full_view(images)),
                                 sorted({l for o in self.objectives for l in o.layers} | {OUTPUT}))
        value = self._pair_objective(acts, 0, self.n * self.m, 1).view(self.n, self.m)
        out = {"value": value}
        logits = acts[OUTPUT]
        if logits.dim() == 2:
            logits = logits.view(self.n, self.m, -1)
            out["logits"] = logits
            idx = [o.class_index for o in self.objectives]
            if all(i is not None for i in idx):
                c = torch.tensor(idx, device=logits.device).view(1, self.m, 1).expand(self.n, -1, 1)
                target = logits.gather(2, c)
                out["rank"] = 1 + (logits > target).sum(dim=2)
                out["prob"] = logits.softmax(dim=2).gather(2, c)[..., 0]
        return out

    # -- one step ------------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        """Take one optimization step of every active accentuation.

        Returns:
            ``objective`` (mean over crops), ``distance`` (to the seed, unweighted) and
            ``weight`` (effective lambda), each ``(N, M)`` and detached.
        """
        n, m, k = self.n, self.m, self.crops
        with _phase("sample"):
            crops = sample_crops(self.canvas, self.input_size, k, self.crop_range, self.noise[0],
                                 self.noise[1], generator=self.generator, device=self.device)
        self.last_crops = crops
        reg = self.reg_layer
        # At step 0 the image is its seed: the distance is zero up to rounding, and its
        # gradient would be rounding noise. Step 0 is objective-only (see regularize.py).
        use_reg = reg != NONE and bool((self.lam > 0).any()) and self.t > 0
        with model_state(self.model):
            with _phase("render"):
                images = self._images()
                self._rendered = None  # its graph is consumed by this step's backward
            with _phase("crop"):
                op = CropOperator(crops)
                # Graph boundary: the model's gradients are taken at the crops (leaves),
                # and mapped to the canvas by the crop operator's adjoint.
                crops_all = self._layout(op(images.detach()))  # (N * M * K, 3, h, w)
            seed_act: torch.Tensor | None = None
            if use_reg:
                with _phase("seed_forward"), torch.no_grad():
                    seed_x = self._layout(op(self.seeds))  # (N * K, 3, h, w)
                    if reg == PIXEL:
                        seed_act = seed_x
                    else:
                        step_n = self._per_pass()
                        seed_act = torch.cat([self._run(seed_x[i * k:(i + step_n) * k], [reg], stop_at=[reg])[reg]
                                              for i in range(0, n, step_n)])
            obj_parts, dist_parts, g_obj_parts, g_reg_parts = [], [], [], []
            pairs, per = n * m, self._per_pass()
            # Without opacity, the objective's gradient alone is not needed: once the
            # balance is known, one backward of (objective - weight * distance) gives the
            # update (the regularizer's gradient joins at its layer), saving the second
            # backward through the layers below it. g_obj then holds that combined ascent.
            fused = use_reg and not self.opacity_on and not bool(torch.isnan(self.weight[self.active]).any())
            for p0 in range(0, pairs, per):
                p1 = min(pairs, p0 + per)
                x = crops_all[p0 * k:p1 * k].detach().requires_grad_(True)
                with _phase("forward"):
                    acts = self._run(x, self._layers())
                    obj_p = self._pair_objective(acts, p0, p1, k)
                if seed_act is not None:
                    img_act = x if reg == PIXEL else acts[reg]
                    mine = torch.arange(p0, p1, device=self.device) // m  # each accentuation's seed
                    paired = seed_act.view(n, k, *seed_act.shape[1:])[mine].flatten(0, 1)
                    dist_p = distance(img_act, paired, p1 - p0, 1).view(-1)
                if fused:
                    with _phase("backward"):
                        w_p = torch.nan_to_num(self.weight[p0:p1], nan=0.0).to(dist_p.dtype)
                        total = obj_p.sum() - (w_p * dist_p).sum()
                        gx, gx_reg = torch.autograd.grad(total, x)[0], None
                else:
                    with _phase("backward"):
                        gx = torch.autograd.grad(obj_p.sum(), x, retain_graph=use_reg)[0]
                    with _phase("backward_reg"):
                        gx_reg = torch.autograd.grad(dist_p.sum(), x)[0] if use_reg else None
                del acts
                with _phase("crop_adjoint"):
                    g_obj_parts.append(op.adjoint(gx, images[p0:p1]))
                    if gx_reg is not None:
                        g_reg_parts.append(op.adjoint(gx_reg, images[p0:p1]))
                obj_parts.append(obj_p.detach())
                if use_reg:
                    dist_parts.append(dist_p.detach())
                del gx, gx_reg, x
            del crops_all, seed_act
            obj = torch.cat(obj_parts).view(n, m)
            dist = torch.cat(dist_parts).view(n, m) if use_reg else torch.zeros((n, m), device=self.device)
            g_obj = torch.cat(g_obj_parts) if len(g_obj_parts) > 1 else g_obj_parts[0]
            g_reg = (torch.cat(g_reg_parts) if len(g_reg_parts) > 1 else g_reg_parts[0]) if g_reg_parts else None

            with _phase("update"):
                weight = self.weight
                if use_reg and self.balance and bool(torch.isnan(weight).any()):
                    weight = self._measure_balance(images, g_obj, g_reg)  # type: ignore[arg-type]
                grad = -g_obj
                if g_reg is not None:
                    grad = grad + torch.nan_to_num(weight, nan=0.0).view(-1, 1, 1, 1) * g_reg
                self._check_finite(obj, dist, grad)
                grad = torch.where(self.active.view(-1, 1, 1, 1), grad, torch.zeros_like(grad))
                self.optimizer.zero_grad(set_to_none=True)
                images.backward(grad)
                self._skip_inactive_grads()
                self.optimizer.step()
                self._restore_frozen()
                if self.opacity_on:
                    self.opacity += torch.where(self.active.view(-1, 1, 1), g_obj.abs().mean(dim=1), 0.0)
        self.t += 1
        rec = {"objective": obj.detach(), "distance": dist.detach(),
               "weight": torch.nan_to_num(self.weight, nan=0.0).view(n, m).clone()}
        return rec

    def _measure_balance(self, images: torch.Tensor, g_obj: torch.Tensor, g_reg: torch.Tensor) -> torch.Tensor:
        """Per accentuation: sum|d obj/d params| / sum|d dist/d params|, where not yet measured."""
        params = [q for q in self.param.parameters() if q.requires_grad]
        go = torch.autograd.grad(images, params, g_obj, retain_graph=True)
        gr = torch.autograd.grad(images, params, g_reg, retain_graph=True)
        num = sum(g.abs().reshape(g.shape[0], -1).sum(1) for g in go)
        den = sum(g.abs().reshape(g.shape[0], -1).sum(1) for g in gr)
        ratio = num / den
        ready = torch.isnan(self.weight) & (den > 0) & torch.isfinite(ratio)
        self.weight = torch.where(ready, self.lam * ratio, self.weight)
        return self.weight

    # -- bookkeeping of active / failed accentuations --------------------------------------
    def _check_finite(self, obj: torch.Tensor, dist: torch.Tensor, grad: torch.Tensor) -> None:
        bad = ~(torch.isfinite(obj.flatten()) & torch.isfinite(dist.flatten())
                & torch.isfinite(grad).flatten(1).all(dim=1))
        bad &= self.active
        if bool(bad.any()):
            for p in bad.nonzero().flatten().tolist():
                self.failed[p] = f"non-finite loss or gradient at step {self.t}; kept the image of step {self.t}"
                warnings.warn(f"accentuation {divmod(p, self.m)} (seed, target): {self.failed[p]}", stacklevel=3)
            self.deactivate(bad)

    def deactivate(self, which: torch.Tensor) -> None:
        """Stop the accentuations where ``which`` (``(N * M,)`` bool) is set; they keep their image."""
        which = which & self.active
        for p in which.nonzero().flatten().tolist():
            self._frozen[p] = [q.detach()[p].clone() for q in self.param.parameters()]
            self.steps_used[p] = self.t
        self.active &= ~which

    def _skip_inactive_grads(self) -> None:
        if bool(self.active.all()):
            return
        for q in self.param.parameters():
            if q.grad is not None:
                q.grad[~self.active] = 0

    def _restore_frozen(self) -> None:
        if not self._frozen:
            return
        with torch.no_grad():
            for p, saved in self._frozen.items():
                for q, s in zip(self.param.parameters(), saved):
                    q[p] = s

    def result(self, before: dict[str, torch.Tensor] | None = None, **extra: Any) -> Result:
        """A :class:`~accentuate.result.Result` of the current state."""
        with torch.no_grad():
            images = self.param().detach()
        after = self.evaluate(images)
        steps_used = torch.where(self.steps_used < 0, torch.full_like(self.steps_used, self.t), self.steps_used)
        n, m = self.n, self.m
        return Result(
            images=images.view(n, m, 3, *self.canvas).cpu(),
            masks=self.opacity.view(n, m, *self.canvas).cpu(),
            seeds=None if self.seeds is None else self.seeds.cpu(),
            targets=list(self.objectives),
            labels=self.spec.labels,
            history=self.history,
            before={k: v.cpu() for k, v in (before or {}).items()},
            after={k: v.cpu() for k, v in after.items()},
            steps_used=steps_used.view(n, m).cpu(),
            lam_effective=torch.nan_to_num(self.weight, nan=0.0).view(n, m).cpu(),
            failed={divmod(p, m): msg for p, msg in self.failed.items()},
            **extra,
        )


def accentuate(
    model: nn.Module,
    seeds: SeedLike | Sequence[SeedLike] | None,
    targets: int | str | Objective | Sequence[int | str | Objective],
    *,
    reg_layer: str | None = None,
    lam: float | Sequence[float] | torch.Tensor | None = None,
    balance: bool = True,
    steps: int | None = None,
    lr: float | None = None,
    param: str | None = None,
    crops: int = 16,
    crop_range: tuple[float, float] = (0.05, 0.99),
    noise: tuple[float, float] = (0.02, 0.02),
    canvas: int | tuple[int, int] | None = None,
    generator: torch.Generator | int | None = None,
    optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
    until: str | int | float | Until | None = None,
    snapshots: int | Sequence[int] = (),
    input_size: int | tuple[int, int] | None = None,
    normalize: Any = _UNSET,
    labels: Sequence[str] | None = _UNSET,
    output: Any = None,
    progress: bool | Callable[[int, int], None] = False,
    channels_last: bool = True,
    autocast: str | torch.dtype | None = None,
    opacity: bool = True,
    record_every: int = 1,
) -> Result:
    """Accentuate each target in each seed image.

    Args:
        model: a PyTorch image model (``accentuate.load_model(...)`` or your own).
        seeds: a path, PIL image, tensor ``(3, H, W)`` or ``(N, 3, H, W)`` in [0, 1],
            or a list of those; ``None`` gives noise-seeded feature visualization.
        targets: a class index, class name, :class:`Objective`, or a list of them.
        reg_layer: layer whose activations are kept near the seed's, or ``"pixel"``
            or ``"none"``. Default: the model spec's suggestion, else the rule of
            :func:`accentuate.spec.default_reg_layer`.
        lam: regularization weight (default: the spec's calibrated value, else 1); a
            scalar, or one value per accentuation (broadcastable to ``(N, M)``).
        balance: scale ``lam`` by the step-1 gradient ratio (see :mod:`accentuate.regularize`).
        steps, lr, param, canvas: optimization settings (defaults: the spec's, else
            the reference's 100, 0.05, ``"fourier"``, 512). ``canvas`` is the long
            side (the seed's aspect ratio is kept) or ``(H, W)``.
        crops, crop_range, noise: paired augmentation per step (16 crops of 5-99 % of
            the short side; Gaussian sd and uniform width of the pixel noise).
        generator: a ``torch.Generator`` on the model's device or an int seed; a run
            with the same seed is reproducible.
        until: least-change mode: stop each accentuation once its target class is
            seen (``"top1"``, a rank, or a probability); see :class:`Until`.
        snapshots: keep the images every this many steps (int) or at these steps.
        input_size, normalize, labels, output: the model's spec, for models that do
            not carry one (see :func:`accentuate.spec.resolve_spec`).
        progress: show a progress bar (``True``) or call ``progress(step, steps)``.
        channels_last: feed the model ``channels_last`` tensors (faster for conv nets on CPU).
        autocast: run the model in mixed precision (``"bfloat16"`` or ``"float16"``);
            default float32. ``benchmarks/RESULTS.md`` records how close the results stay.
        opacity: accumulate the opacity masks (the "where"). ``False`` keeps none
            (``result.alpha()`` raises; no RGBA files) and makes each regularized step
            one backward pass instead of two: use it when only the images matter.
        record_every: evaluate the un-augmented images for the history (objective, rank,
            probability) every this many steps and at the last; each evaluation is one
            more forward pass of the images (about 9 % of a default step on CPU). The
            images do not depend on it; ``until`` is still checked at its own steps.

    Returns:
        A :class:`~accentuate.result.Result`; ``result.images`` has shape
        ``(N, M, 3, H, W)``. Ctrl-C returns the partial result (``interrupted=True``).

    Example:
        >>> import accentuate as acc                                  # doctest: +SKIP
        >>> model = acc.load_model("efficientnet_lite0")              # doctest: +SKIP
        >>> res = acc.accentuate(model, "cat.jpg", "goldfish")        # doctest: +SKIP
        >>> res.save("out/")                                          # doctest: +SKIP
    """
    started = time.perf_counter()
    spec = resolve_spec(model, input_size=input_size, normalize=normalize, labels=labels, output=output)
    target_list = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not target_list:
        raise ValueError("no targets given")
    objectives = [as_objective(t).resolve(spec.labels) for t in target_list]
    lam = spec.setting("lam") if lam is None else lam
    steps = spec.setting("steps") if steps is None else steps
    lr = spec.setting("lr") if lr is None else lr
    param = spec.setting("param") if param is None else param
    canvas = spec.setting("canvas") if canvas is None else canvas
    _check_options(steps, lam, float(lr), crops, crop_range, canvas, spec.input_size, noise)
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be a positive integer; got {record_every!r}")
    stop = Until.parse(until)
    if stop is not None and any(o.class_index is None for o in objectives):
        raise ValueError("until= needs class targets (logits); it cannot judge neurons or directions")

    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    gen, gen_seed = _generator(generator, device)
    if seeds is None:
        seed_t, hw = None, (canvas, canvas) if isinstance(canvas, int) else tuple(canvas)
    else:
        seed_t = prepare_seeds(seeds, canvas)
        hw = tuple(seed_t.shape[-2:])
    if reg_layer is None:
        reg_layer = default_reg_layer(model, spec) or PIXEL
    config = {
        "model": spec.name, "reg_layer": reg_layer, "balance": balance,
        "lam": float(lam) if isinstance(lam, (int, float)) else torch.as_tensor(lam).tolist(),
        "steps": steps, "lr": float(lr), "param": param, "crops": crops,
        "crop_range": list(crop_range), "noise": list(noise), "canvas": list(hw),
        "generator_seed": gen_seed, "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
        "until": None if stop is None else str(stop), "check_every": None if stop is None else stop.every,
        "input_size": list(spec.input_size), "targets": [repr(o) for o in objectives],
        "seed_names": seed_names(seeds),  # for file names (Result.save)
        "device": str(device), "channels_last": bool(channels_last), "opacity": bool(opacity),
        "autocast": None if _autocast_dtype(autocast) is None else str(_autocast_dtype(autocast)).replace("torch.", ""),
    }
    acc = Accentuator(
        model, spec, seed_t, objectives, reg_layer=reg_layer,
        lam=float(lam) if isinstance(lam, (int, float)) else torch.as_tensor(lam), balance=balance,
        param=param, lr=float(lr), optimizer=optimizer, crops=crops, crop_range=tuple(crop_range),
        noise=tuple(noise), canvas=hw, generator=gen,  # type: ignore[arg-type]
        channels_last=channels_last, autocast=autocast, opacity=opacity, record_every=record_every,
    )
    snap_steps = _snapshot_steps(snapshots, steps)
    snaps: dict[int, torch.Tensor] = {}
    before = acc.evaluate()
    if 0 in snap_steps:
        snaps[0] = _snap(acc)
    bar = _progress(progress, steps)
    interrupted = False
    try:
        for _ in range(steps):
            rec = acc.step()
            t = acc.t
            check = stop is not None and (t % stop.every == 0 or t == steps)
            ev = acc.evaluate() if (check or t % acc.record_every == 0 or t == steps) else None
            acc.history.append(t, rec, ev)
            if check and "rank" in ev:
                hit = stop.reached(ev["rank"], ev["prob"]).flatten()
                acc.deactivate(hit)
            if t in snap_steps:
                snaps[t] = _snap(acc)
            bar(t)
            if not bool(acc.active.any()):
                break
    except KeyboardInterrupt:
        interrupted = True
        warnings.warn(f"interrupted at step {acc.t} of {steps}; returning the partial result", stacklevel=2)
    finally:
        bar(None)
    config["seconds"] = round(time.perf_counter() - started, 3)
    return acc.result(before, config=config, snapshots={k: v.cpu() for k, v in snaps.items()},
                      interrupted=interrupted, steps_done=acc.t)


#: On CPU, model passes hold at most this many input pixels (16 crops of 224 x 224) unless
#: ``per_pass`` says otherwise: beyond it, activations only grow past what caches and the
#: allocator's reuse cover, and the pass gets slower per crop.
_CPU_PASS_PIXELS = 16 * 224 * 224


def _phase(name: str) -> contextlib.AbstractContextManager[Any]:
    """Label a part of a step for :mod:`torch.profiler` (near free when no profiler runs)."""
    return torch.profiler.record_function(f"accentuate.{name}")


_AUTOCAST = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """``None``/``"float32"`` (off), or the lower-precision dtype for :func:`torch.autocast`."""
    if value is None or value in ("float32", "fp32", torch.float32):
        return None
    if isinstance(value, torch.dtype) and value in (torch.bfloat16, torch.float16):
        return value
    if isinstance(value, str) and value.lower() in _AUTOCAST:
        return _AUTOCAST[value.lower()]
    raise ValueError(f"autocast must be None, 'bfloat16' or 'float16'; got {value!r}")


def _snapshot_steps(snapshots: int | Sequence[int], steps: int) -> set[int]:
    if isinstance(snapshots, int):
        return set(range(0, steps + 1, snapshots)) | {steps} if snapshots > 0 else set()
    return {int(s) for s in snapshots}


def _snap(acc: Accentuator) -> torch.Tensor:
    with torch.no_grad():
        img = acc.param().detach()
    return (img * 255).round().to(torch.uint8).view(acc.n, acc.m, 3, *acc.canvas)


def _progress(progress: bool | Callable[[int, int], None], total: int) -> Callable[[int | None], None]:
    if callable(progress):
        return lambda t: None if t is None else progress(t, total)
    if not progress:
        return lambda t: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="accentuate", unit="step", leave=False)

    def update(t: int | None) -> None:
        if t is None:
            bar.close()
        else:
            bar.update(t - bar.n)

    return update

"""The accentuation loop: one step, and the loop over steps.

:class:`Accentuator` holds one batch of N seeds x M targets (N * M independent
accentuations, each with its own parameters and paired with its own seed) and
exposes :meth:`Accentuator.step`, so you can write your own loop;
:func:`accentuate` is the loop with defaults, progress reporting, least-change
stopping and interrupt handling.

One step:

1. Draw K crops and their noise once (:mod:`accentuate.augment`), and the crops'
   jitter, scale and rotation when ``transforms`` asks for them
   (:mod:`accentuate.transforms`); every accentuation and every seed gets the same
   crops and transforms, which pairs the regularizer and makes a batch equal to its
   single runs.
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
import difflib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import torch
from torch import nn

from .augment import CropOperator, Crops, sample_crops
from .display import progress_visible
from .hooks import OUTPUT, ModelRunner, check_layers, model_device, model_state
from .images import SeedLike, prepare_seeds, resize, seed_names
from .layout import Layout
from .metrics import class_rank
from .objectives import Objective, as_objective
from .params import PARAMS, ImageParam, make_param
from .regularize import Regularizer
from .result import History, Result
from .settings import FIELDS as SETTING_FIELDS
from .settings import SPEC_KEYS, Settings, Until
from .spec import ModelSpec, resolve_spec
from .transforms import TransformParams, apply_transforms, sample_transforms

__all__ = ["Accentuator", "Until", "accentuate", "model_state"]


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


class Accentuator:
    """State of one batched accentuation: N seeds x M targets.

    Args:
        model: the model (not modified; put in eval mode with frozen weights only
            while a step runs).
        spec: its :class:`ModelSpec` (see :func:`accentuate.spec.resolve_spec`).
        seeds: ``(N, 3, H, W)`` canvases in [0, 1], or ``None`` for noise-seeded
            feature visualization of shape ``canvas`` (then N = 1 and no regularizer).
        objectives: M resolved objectives.
        settings: the resolved :class:`~accentuate.settings.Settings` (regularizer, lambda,
            optimization, augmentation, how the model is fed).
        generator: all randomness (default: one seeded with ``settings.seed``).
        param: an :class:`~accentuate.params.ImageParam` of shape ``(N * M, 3, H, W)`` to
            optimize instead of a new one of ``settings.param`` (see its batch-first contract).
        canvas: ``(H, W)`` when ``seeds`` is ``None`` (default: ``settings.canvas``).

    ``settings.per_pass`` is the number of accentuations per forward/backward pass of the
    model (each brings its K crops). ``None``: on CPU as many as fit in one default step's
    worth of input (16 crops of 224 x 224), since larger passes only add memory traffic
    there (a batch then costs per accentuation what its single runs cost, and peak memory
    stays that of one pass); on other devices as many as fit in 128 crops of 224 x 224
    (8 accentuations of 16 crops), which bounds the activations the backward pass keeps
    (about 6 GiB for EfficientNet-Lite0 and 10 GiB for a ResNet-50 in float32, where 64
    accentuations at once would need 50 and 82 GiB). Results depend on it only through
    rounding.

    A step waits for the device once, in its check for non-finite losses (which warns and
    stops the accentuations concerned); what else it needs to know on the host (whether a
    balance is still to be measured, which accentuations still run) is kept on the host.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        seeds: torch.Tensor | None,
        objectives: Sequence[Objective],
        settings: Settings,
        *,
        generator: torch.Generator | None = None,
        param: ImageParam | None = None,
        canvas: tuple[int, int] | None = None,
        runner: ModelRunner | None = None,
    ) -> None:
        self.settings = settings
        self.runner = ModelRunner.reuse(runner, model, spec).configured(
            channels_last=settings.channels_last, autocast=settings.autocast)
        self.device = self.runner.device
        self.model, self.spec = model, spec
        self.objectives = list(objectives)
        self.n = 1 if seeds is None else seeds.shape[0]
        self.m = len(self.objectives)
        self.seeds = None if seeds is None else seeds.to(self.device, torch.float32)
        if self.seeds is not None:
            self.canvas: tuple[int, int] = (int(self.seeds.shape[-2]), int(self.seeds.shape[-1]))
        else:
            self.canvas = (int(canvas[0]), int(canvas[1])) if canvas is not None else settings.canvas_size()
        self.reg = Regularizer.none() if self.seeds is None else settings.regularizer
        check_layers(model, self._layers())
        self.balance = settings.balance
        self.crops, self.crop_range, self.noise = settings.crops, settings.crop_range, settings.noise
        if generator is None:
            generator, _ = _generator(settings.seed, self.device)
        self.generator = generator
        self.opacity_on, self.record_every = settings.opacity, settings.record_every
        self.per_pass = settings.per_pass
        self.input_size = spec.input_size
        # The rendering made for the last evaluation, keyed by the parameters' versions.
        self._rendered: tuple[tuple[int, ...], torch.Tensor] | None = None  # (key, images)

        self.param, self.optimizer = self._param_and_optimizer(settings, param, generator)

        p_count = self.n * self.m
        self.t = 0
        # lam: a scalar, or one value per accentuation (anything broadcastable to (N, M)).
        self.lam = torch.as_tensor(settings.lam, dtype=torch.float32, device=self.device).expand(
            self.n, self.m).reshape(-1)
        self.weight = (torch.full((p_count,), math.nan, device=self.device)
                       if self.reg.active and self.balance else self.lam.clone())
        self.active = torch.ones(p_count, dtype=torch.bool, device=self.device)
        # Known on the host, so that a step need not ask the device: whether any lambda is
        # positive, how many accentuations are active, and whether any balance (of all
        # accentuations, of the active ones) is still unmeasured (NaN).
        self._lam_positive = bool((self.lam > 0).any())
        self._n_active = p_count
        self._weight_nan = self._weight_nan_active = bool(self.reg.active and self.balance)
        # Index tensors of each chunk's objectives (see _pair_objective), made once.
        self._pair_rows: dict[tuple[int, int, int], tuple[list[tuple[int, torch.Tensor | None]],
                                                          torch.Tensor | None]] = {}
        classes = [o.class_index for o in self.objectives]
        self._classes = (torch.tensor(classes, device=self.device) if all(c is not None for c in classes)
                         else None)
        self.failed: dict[int, str] = {}
        self.steps_used = torch.full((p_count,), -1, dtype=torch.long, device=self.device)
        self.opacity = torch.zeros((p_count, *self.canvas), device=self.device)
        self._frozen: dict[int, list[torch.Tensor]] = {}
        self.history = History()
        self.last_crops: Crops | None = None
        #: The transforms drawn for the last step (``None`` without ``settings.transforms``).
        self.last_transforms: TransformParams | None = None
        self.transforms = settings.transforms

        # The layers' layouts from their real shapes, and the objectives checked against
        # them, before the first step.
        with torch.no_grad():
            view = self._full_view(self.param().detach()[:1])
            acts = self.runner(view, self._layers() + [OUTPUT])
        self.layouts: dict[str, Layout] = self.runner.layouts(
            list(acts), {k: tuple(v.shape) for k, v in acts.items()})
        for o in self.objectives:
            o.validate(self.layouts)

    def _param_and_optimizer(self, settings: Settings, param: ImageParam | None, generator: torch.Generator
                             ) -> tuple[ImageParam, torch.optim.Optimizer]:
        """The image parameterization ``(N * M, 3, H, W)`` (the one given, else a new one
        initialized from the seeds, each repeated for its M targets) and its optimizer."""
        shape = (self.n * self.m, 3, self.canvas[0], self.canvas[1])
        if param is not None:
            if tuple(param.shape) != shape:
                raise ValueError(f"param has shape {tuple(param.shape)}; this run needs {shape} "
                                 "(seeds x targets, 3, H, W)")
            param = param.to(self.device)
        else:
            init = None if self.seeds is None else self.seeds.repeat_interleave(self.m, dim=0)
            param = make_param(settings.param, shape, seed=init, generator=generator, device=self.device)
            param.to(self.device)
        params = [q for q in param.parameters() if q.requires_grad]
        lr, optimizer = settings.lr, settings.optimizer
        if optimizer == "adam":
            # The fused kernel (one pass over the parameters) is ~7x faster than the
            # default foreach Adam on CPU; same update up to rounding.
            return param, torch.optim.Adam(params, lr=lr, fused=self.device.type in ("cpu", "cuda"))
        return param, optimizer(params, lr=lr)  # type: ignore[operator]

    # -- model calls ---------------------------------------------------------------------
    def _layers(self) -> list[str]:
        return sorted({layer for o in self.objectives for layer in o.layers} | self.reg.layers)

    def _run(self, x: torch.Tensor, names: Sequence[str], stop_at: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Forward ``x`` in [0, 1] with the named layers captured; ``OUTPUT`` holds the logits."""
        return self.runner(x, names, stop_at=stop_at)

    def _per_pass(self) -> int:
        """Accentuations (or seeds) per model pass (see ``per_pass``)."""
        if self.per_pass is not None:
            return self.per_pass
        return pass_size(self.device, self.crops, self.input_size)

    @property
    def n_active(self) -> int:
        """How many accentuations still run (known on the host: reading it does not wait for the device)."""
        return self._n_active

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

    def _full_view(self, images: torch.Tensor) -> torch.Tensor:
        """The un-augmented view the model sees: the whole canvas resized to its input."""
        return resize(images, self.input_size)

    def _rows_of(self, p0: int, p1: int, k: int) -> tuple[list[tuple[int, torch.Tensor | None]], torch.Tensor | None]:
        """For accentuations ``p0 .. p1 - 1`` (``k`` rows each): per objective ``j`` that has some,
        ``(j, rows)`` (``None``: all rows), and the order that puts their values back in place
        (``None``: already in place). Made on the device once per chunk, not at every step."""
        key = (p0, p1, k)
        if key not in self._pair_rows:
            count, m = p1 - p0, self.m
            parts: list[tuple[int, torch.Tensor | None]] = []
            where: list[int] = []
            for j in range(m):
                idx = [q for q in range(count) if (p0 + q) % m == j]
                if not idx:
                    continue
                rows = None if len(idx) == count else (torch.tensor(idx, device=self.device)[:, None] * k
                                                       + torch.arange(k, device=self.device)).flatten()
                parts.append((j, rows))
                where += idx
            order = None if where == sorted(where) else torch.argsort(torch.tensor(where, device=self.device))
            self._pair_rows[key] = (parts, order)
        return self._pair_rows[key]

    def _pair_objective(self, acts: dict[str, torch.Tensor], p0: int, p1: int, k: int) -> torch.Tensor:
        """Objective of accentuations ``p0 .. p1 - 1`` (``k`` rows each, in order), ``(p1 - p0,)``."""
        rows_of, order = self._rows_of(p0, p1, k)
        parts = []
        for j, rows in rows_of:
            obj = self.objectives[j]
            sub = acts if rows is None else {name: a.index_select(0, rows) for name, a in acts.items()
                                             if name in obj.layers}
            count = p1 - p0 if rows is None else rows.shape[0] // k
            parts.append(obj(sub, self.layouts).view(count, k).mean(dim=1))
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        return values if order is None else values[order]

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, images: torch.Tensor | None = None, distance: bool = False) -> dict[str, torch.Tensor]:
        """Objective, rank and probability of each accentuation on its un-augmented image.

        Args:
            images: ``(N * M, 3, H, W)``; defaults to the current images.
            distance: also measure ``reg_distance``, the regularizer's distance of each
                whole image (resized to the model input, as the model sees it) to its seed's.

        Returns:
            ``value`` ``(N, M)``, and when the targets are class logits ``rank``
            (1 = top-1) and ``prob`` ``(N, M)``, plus ``logits`` ``(N, M, classes)``;
            ``reg_distance`` ``(N, M)`` if asked (NaN without a regularizer).
        """
        reg_names = sorted(self.reg.layers) if distance else []
        with _phase("evaluate"):
            if images is None:
                images = self._images().detach()
            with self.runner.state():
                views = self.runner.memory_format(self._full_view(images))
                acts = self._run(views, sorted({l for o in self.objectives for l in o.layers} | {OUTPUT}
                                               | set(reg_names)))
                if distance:
                    reg_distance = self._seed_distance(views, acts)
        value = self._pair_objective(acts, 0, self.n * self.m, 1).view(self.n, self.m)
        out = {"value": value}
        if distance:
            out["reg_distance"] = reg_distance
        logits = acts[OUTPUT]
        if logits.dim() == 2:
            logits = logits.view(self.n, self.m, -1)
            out["logits"] = logits
            if self._classes is not None:
                c = self._classes.view(1, self.m).expand(self.n, -1)
                out["rank"], out["prob"] = class_rank(logits, c)
        return out

    def _seed_distance(self, views: torch.Tensor, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The regularizer's distance of the whole images (``views``, their ``acts``) to the seeds'."""
        n, m = self.n, self.m
        if self.seeds is None or not self.reg.active:
            return torch.full((n, m), math.nan, device=self.device)
        seed_views = self.runner.memory_format(self._full_view(self.seeds))
        if self.reg.kind == "pixel":
            return self.reg.distance(views, seed_views, n, m)
        name = str(self.reg.name)
        seed_act = self.runner.activations(seed_views, [name], stop_at=[name])[name].to(self.device)
        return self.reg.distance(acts[name], seed_act, n, m, self.layouts[name])

    # -- one step ------------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        """Take one optimization step of every active accentuation.

        Returns:
            ``objective`` (mean over crops), ``distance`` (to the seed, unweighted) and
            ``weight`` (effective lambda), each ``(N, M)`` and detached.
        """
        # One piece on purpose: the step holds the rendered canvas's graph, the crops and each
        # chunk's activations, and drops each (`del`) as soon as its gradient is taken; split into
        # functions, those tensors would stay referenced by the callers' frames until they return
        # and raise the peak memory that benchmarks/RESULTS.md measures. The phases are marked
        # with `_phase` (the profile's rows) instead.
        n, m, k = self.n, self.m, self.crops
        with _phase("sample"):
            crops = sample_crops(self.canvas, self.input_size, k, self.crop_range, self.noise[0],
                                 self.noise[1], generator=self.generator, device=self.device)
            # Only when asked for: without transforms the generator draws what it always drew.
            warp = (sample_transforms(self.transforms, k, self.input_size, generator=self.generator,
                                      device=self.device) if self.transforms else None)
        self.last_crops, self.last_transforms = crops, warp
        reg = self.reg
        # At step 0 the image is its seed: the distance is zero up to rounding, and its
        # gradient would be rounding noise. Step 0 is objective-only (see regularize.py).
        use_reg = reg.active and self._lam_positive and self.t > 0
        with self.runner.state():
            with _phase("render"):
                images = self._images()
                self._rendered = None  # its graph is consumed by this step's backward
            with _phase("crop"):
                op = CropOperator(crops)
                # Graph boundary: the model's gradients are taken at the crops (leaves),
                # and mapped to the canvas by the crop operator's adjoint. With transforms the
                # leaves are the crops before the warp (and the noise, added after it).
                crops_all = (self.runner.memory_format(op(images.detach())) if warp is None
                             else op(images.detach(), add_noise=False))  # (N * M * K, 3, h, w)
            seed_act: torch.Tensor | None = None
            if use_reg:
                with _phase("seed_forward"), torch.no_grad():
                    assert self.seeds is not None  # use_reg needs seeds
                    seed_x = self.runner.memory_format(op(self.seeds) if warp is None  # (N * K, 3, h, w)
                                                       else apply_transforms(op(self.seeds, add_noise=False), warp,
                                                                             crops.noise))
                    if reg.kind == "pixel":
                        seed_act = seed_x
                    else:
                        step_n, name = self._per_pass(), str(reg.name)
                        seed_act = torch.cat([self._run(seed_x[i * k:(i + step_n) * k], [name], stop_at=[name])[name]
                                              for i in range(0, n, step_n)])
            obj_parts, dist_parts, g_obj_parts, g_reg_parts = [], [], [], []
            pairs, per = n * m, self._per_pass()
            # Without opacity, the objective's gradient alone is not needed: once the
            # balance is known, one backward of (objective - weight * distance) gives the
            # update (the regularizer's gradient joins at its layer), saving the second
            # backward through the layers below it. g_obj then holds that combined ascent.
            fused = use_reg and not self.opacity_on and not self._weight_nan_active
            for p0 in range(0, pairs, per):
                p1 = min(pairs, p0 + per)
                x = crops_all[p0 * k:p1 * k].detach().requires_grad_(True)
                with _phase("forward"):
                    x_in = x if warp is None else self.runner.memory_format(apply_transforms(x, warp, crops.noise))
                    acts = self._run(x_in, self._layers())
                    obj_p = self._pair_objective(acts, p0, p1, k)
                if seed_act is not None:
                    img_act = reg.activations(acts, x_in)
                    mine = torch.arange(p0, p1, device=self.device) // m  # each accentuation's seed
                    paired = seed_act.view(n, k, *seed_act.shape[1:])[mine].flatten(0, 1)
                    dist_p = reg.distance(img_act, paired, p1 - p0, 1, self.layouts.get(str(reg.name))).view(-1)
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
                del gx, gx_reg, x, x_in
            del crops_all, seed_act
            obj = torch.cat(obj_parts).view(n, m)
            dist = torch.cat(dist_parts).view(n, m) if use_reg else torch.zeros((n, m), device=self.device)
            g_obj = torch.cat(g_obj_parts) if len(g_obj_parts) > 1 else g_obj_parts[0]
            g_reg = (torch.cat(g_reg_parts) if len(g_reg_parts) > 1 else g_reg_parts[0]) if g_reg_parts else None

            with _phase("update"):
                weight = self.weight
                if use_reg and self.balance and self._weight_nan:
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
        num = torch.stack([g.abs().reshape(g.shape[0], -1).sum(1) for g in go]).sum(0)
        den = torch.stack([g.abs().reshape(g.shape[0], -1).sum(1) for g in gr]).sum(0)
        ratio = num / den
        ready = torch.isnan(self.weight) & (den > 0) & torch.isfinite(ratio)
        self.weight = torch.where(ready, self.lam * ratio, self.weight)
        self._note_weights()
        return self.weight

    def _note_weights(self) -> None:
        """Read on the host whether any balance is still unmeasured (NaN), overall and among the
        active accentuations (one wait for the device, at the steps that measure it)."""
        nan = torch.isnan(self.weight)
        both = torch.stack([nan.any(), (nan & self.active).any()]).tolist()
        self._weight_nan, self._weight_nan_active = bool(both[0]), bool(both[1])

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
        stopped = which.nonzero().flatten().tolist()
        for p in stopped:
            self._frozen[p] = [q.detach()[p].clone() for q in self.param.parameters()]
            self.steps_used[p] = self.t
        self.active &= ~which
        self._n_active -= len(stopped)
        if stopped and self._weight_nan_active:
            self._note_weights()

    def _skip_inactive_grads(self) -> None:
        if self._n_active == self.n * self.m:
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
        after = self.evaluate(images, distance=True)
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


def _run_settings(model: nn.Module, spec: ModelSpec, seeded: bool, settings: Settings | None,
                  runner: ModelRunner | None, overrides: dict[str, Any]
                  ) -> tuple[Settings, torch.Generator, int | None]:
    """The settings of one :func:`accentuate` call (``settings`` resolved, ``overrides`` applied, a
    seed drawn when the ``seed`` setting is ``None``) and its generator with the seed it records
    (``None`` when ``seed`` is a ``torch.Generator`` of the caller's)."""
    device = model_device(model)
    external = overrides.get("seed")
    if isinstance(external, torch.Generator):
        gen, seed_value = _generator(external, device)
        overrides["seed"] = None  # the caller's generator: no seed to record
    else:
        external = None
    if settings is None or not settings.resolved:
        settings = Settings.resolve(model, spec, settings, seeded=seeded, runner=runner, **overrides)
    elif overrides:
        settings = settings.replace(**overrides)
    if external is None:
        if settings.seed is None:
            settings = settings.replace(seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        gen, seed_value = _generator(settings.seed, device)
    if not seeded and settings.regularizer.active:
        settings = settings.replace(reg_layer="none")  # nothing to stay near
    settings.check_model(spec)
    return settings, gen, seed_value


def _legacy_generator(overrides: dict[str, Any], where: str) -> None:
    """``generator=`` (the old name of ``seed=``) moved into ``overrides["seed"]``, with a
    ``DeprecationWarning`` pointing at the caller of ``where``."""
    if "generator" not in overrides:
        return
    value = overrides.pop("generator")
    if "seed" in overrides:
        raise TypeError(f"{where}() got both seed= and generator=; give seed= only (generator= is its old name)")
    warnings.warn(f"{where}(generator=...) is deprecated; it is seed=... (an int, None to draw one, or a "
                  "torch.Generator), the name of the setting that run.json and Result.config record",
                  DeprecationWarning, stacklevel=3)
    overrides["seed"] = value


def _check_setting_names(overrides: dict[str, Any]) -> None:
    """A keyword that is no setting, spec key or ``param`` is a one-line error naming the closest."""
    unknown = [k for k in overrides if k not in SETTING_FIELDS and k not in SPEC_KEYS and k != "param"]
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*SETTING_FIELDS, *SPEC_KEYS], n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise TypeError(f"accentuate() got an unknown setting {unknown[0]!r}{hint}")


@overload
def accentuate(
    model: nn.Module,
    seeds: SeedLike | Sequence[SeedLike] | None,
    targets: int | str | Objective | Sequence[int | str | Objective],
    settings: Settings | None = None,
    *,
    pairs: Literal["product"] = "product",
    snapshots: int | Sequence[int] = (),
    progress: bool | Callable[[int, int], None] | None = None,
    runner: ModelRunner | None = None,
    **overrides: Any,
) -> Result: ...


@overload
def accentuate(
    model: nn.Module,
    seeds: SeedLike | Sequence[SeedLike] | None,
    targets: int | str | Objective | Sequence[int | str | Objective],
    settings: Settings | None = None,
    *,
    pairs: Literal["zip"] | Sequence[tuple[int, int]],
    snapshots: int | Sequence[int] = (),
    progress: bool | Callable[[int, int], None] | None = None,
    runner: ModelRunner | None = None,
    **overrides: Any,
) -> list[Result]: ...


def accentuate(
    model: nn.Module,
    seeds: SeedLike | Sequence[SeedLike] | None,
    targets: int | str | Objective | Sequence[int | str | Objective],
    settings: Settings | None = None,
    *,
    pairs: str | Sequence[tuple[int, int]] = "product",
    snapshots: int | Sequence[int] = (),
    progress: bool | Callable[[int, int], None] | None = None,
    runner: ModelRunner | None = None,
    **overrides: Any,
) -> Result | list[Result]:
    """Accentuate each target in each seed image.

    Args:
        model: a PyTorch image model (``accentuate.load_model(...)`` or your own).
        seeds: a path, PIL image, tensor ``(3, H, W)`` or ``(N, 3, H, W)`` in [0, 1],
            or a list of those; ``None`` gives noise-seeded feature visualization.
        targets: a target or a list of them: a class index, an :class:`Objective`, or a string
            read as the command line reads ``--target`` (:func:`accentuate.parse_target`): a class
            name (``"goldfish"``), ``"207"``, ``"blocks.5:20"`` (channel), ``"blocks.5:20@7,7"``
            (neuron), ``"layers.3:7@cls"``, ``"layers.3:head=2"``, ``"blocks.5:vector.npy"``.
        settings: a resolved :class:`~accentuate.settings.Settings` (e.g. from
            :meth:`Settings.resolve`); ``overrides`` change it. Default: resolved here.
        pairs: ``"product"``: every seed with every target (one batched run, one
            :class:`Result` of shape ``(N, M, ...)``); ``"zip"``: seed ``i`` with target ``i``
            (as many seeds as targets); or a list of ``(seed index, target index)`` pairs, as a
            manifest lists them on the command line. Those return a list of :class:`Result`, one
            per pair in order, each ``(1, 1, ...)``; the pairs run in batches (the seeds that share
            a target, or the targets that share a seed) from the one ``seed`` setting, and each
            pair's result is what a run of that pair alone gives.
        snapshots: keep the images every this many steps (int) or at these steps.
        progress: ``True`` shows a progress bar (in a notebook the widget of ``tqdm.auto``), ``False``
            none, a callable is called as ``progress(step, steps)``; ``None`` (default): a bar when one
            can be seen (a Jupyter kernel, or stderr a terminal), none otherwise (tests, pipes, logs).
        runner: the :class:`~accentuate.hooks.ModelRunner` the caller runs ``model`` with (what
            it has traced is reused; a command makes one and passes it everywhere).
        overrides: any field of :class:`~accentuate.settings.Settings` (``seed``, ``reg_layer``,
            ``lam``, ``steps``, ``lr``, ``param``, ``crops``, ``crop_range``, ``noise``, ``transforms``,
            ``canvas``, ``until``, ``opacity``, ``record_every``, ``channels_last``,
            ``autocast``, ...; see there), and for a model without a spec what it cannot
            tell: ``input_size``, ``normalize``, ``labels``, ``output``, ``layouts`` (see
            :func:`accentuate.spec.resolve_spec`). ``param`` may also be an
            :class:`~accentuate.params.ImageParam` of shape ``(N * M, 3, H, W)``.
            ``seed``: all randomness (crops, noise, transforms, a noise seed's start) comes from it:
            an int (default 0, as ``--seed`` on the command line: a call repeated gives the same
            result), ``None`` to draw one (recorded in ``result.config.seed``), or a
            ``torch.Generator`` on the model's device (then ``result.config.seed`` is ``None``).
            ``generator=`` is its old name (deprecated).

    Defaults: the model spec's calibrated values (``lam``, ``steps``, ``lr``, ``param``,
    ``canvas``, the regularization layer), else the reference recipe's (100 steps of Adam
    at 0.05, Fourier, a 512 canvas, lambda 1, the regularization layer by the rule of
    :func:`accentuate.hooks.default_reg_layer`), 16 paired crops of 5-99 % of the short side,
    seed 0. ``until="top1"`` stops each accentuation once the model sees its class (least
    change; ``"top1 for classes"``, the ``preview`` preset's, applies only when every target is a
    class, see :meth:`Settings.for_targets`); ``opacity=False`` keeps no masks and makes each
    regularized step one backward pass; ``record_every=k`` evaluates the history every k steps
    (the images do not change).

    Returns:
        A :class:`~accentuate.result.Result` (a list of them for ``pairs`` other than
        ``"product"``); ``result.images`` has shape ``(N, M, 3, H, W)``, ``result.config`` is the
        :class:`Settings` it ran with. Ctrl-C returns the partial result (``interrupted=True``).

    Example:
        >>> import accentuate as acc                                  # doctest: +SKIP
        >>> model = acc.load_model("efficientnet_lite0")              # doctest: +SKIP
        >>> res = acc.accentuate(model, "cat.jpg", ["goldfish", "blocks.5:20@7,7"])  # doctest: +SKIP
        >>> res.save("out/")                                          # doctest: +SKIP
    """
    _legacy_generator(overrides, "accentuate")
    if not (isinstance(pairs, str) and pairs == "product"):
        return _paired(model, seeds, targets, settings, pairs, snapshots, progress, runner, overrides)
    started = time.perf_counter()
    _check_setting_names(overrides)
    spec_kw = {k: overrides.pop(k) for k in SPEC_KEYS if k in overrides}
    spec = runner.spec if runner is not None and not spec_kw else resolve_spec(model, **spec_kw)
    target_list = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    if not target_list:
        raise ValueError("no targets given")
    runner = ModelRunner.reuse(runner, model, spec)  # one trace for the targets, the settings and the run
    objectives = [as_objective(t, model, spec, runner=runner) for t in target_list]
    param_obj = overrides.get("param")
    if isinstance(param_obj, ImageParam):
        if type(param_obj).name not in PARAMS or PARAMS[type(param_obj).name] is not type(param_obj):
            raise TypeError(f"param is a {type(param_obj).__name__}, which is not registered; decorate its "
                            "class with @accentuate.params.register_param('NAME')")
        overrides["param"] = type(param_obj).name
    else:
        param_obj = None
    device = model_device(model)
    settings, gen, seed_value = _run_settings(model, spec, seeds is not None, settings, runner, overrides)
    settings = settings.for_targets(objectives)  # an until for classes only applies, or is dropped, here
    stop = settings.until_rule
    if seeds is None:
        seed_t, hw = None, settings.canvas_size()
    else:
        seed_t = prepare_seeds(seeds, settings.canvas)
        hw = (int(seed_t.shape[-2]), int(seed_t.shape[-1]))
    steps = settings.steps
    acc = Accentuator(model, spec, seed_t, objectives, settings, generator=gen, param=param_obj,
                      canvas=hw, runner=runner)  # type: ignore[arg-type]
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
            if check and ev is not None and "rank" in ev:
                hit = stop.reached(ev["rank"], ev["prob"]).flatten()  # type: ignore[union-attr]
                acc.deactivate(hit)
            if t in snap_steps:
                snaps[t] = _snap(acc)
            bar(t)
            if acc.n_active == 0:
                break
    except KeyboardInterrupt:
        interrupted = True
        warnings.warn(f"interrupted at step {acc.t} of {steps}; returning the partial result", stacklevel=2)
    finally:
        bar(None)
    run = {
        "model": spec.name, "input_size": list(spec.input_size), "targets": [repr(o) for o in objectives],
        "canvas_used": list(hw), "device": str(device), "generator_seed": seed_value,
        "seed_names": seed_names(seeds),  # for file names (Result.save)
        "seconds": round(time.perf_counter() - started, 3),
    }
    return acc.result(before, config=settings, run=run, snapshots={k: v.cpu() for k, v in snaps.items()},
                      interrupted=interrupted, steps_done=acc.t)



def _paired(model: nn.Module, seeds: Any, targets: Any, settings: Settings | None,
            pairs: str | Sequence[tuple[int, int]], snapshots: int | Sequence[int],
            progress: bool | Callable[[int, int], None] | None, runner: ModelRunner | None,
            overrides: dict[str, Any]) -> list[Result]:
    """:func:`accentuate` with ``pairs`` other than ``"product"``: one result per pair, in order."""
    if seeds is None:
        raise ValueError("pairs= pairs seed images with targets; give seed images (seeds=None makes one "
                         "noise-seeded row: use the default pairs='product')")
    if isinstance(seeds, torch.Tensor) and seeds.dim() == 4:
        items: list[Any] = list(seeds)
    elif isinstance(seeds, (list, tuple)):
        items = list(seeds)
    else:
        items = [seeds]
    target_list = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    n, m = len(items), len(target_list)
    if isinstance(pairs, str):
        if pairs != "zip":
            raise ValueError(f"pairs must be 'product', 'zip' or a list of (seed, target) index pairs; got {pairs!r}")
        if n != m:
            raise ValueError(f"pairs='zip' pairs seed i with target i; got {n} seed(s) and {m} target(s)")
        wanted = [(i, i) for i in range(n)]
    else:
        try:
            wanted = [(int(i), int(j)) for i, j in pairs]
        except (TypeError, ValueError):
            raise ValueError("pairs must be 'product', 'zip' or a list of (seed index, target index) pairs") from None
        bad = [(i, j) for i, j in wanted if not (0 <= i < n and 0 <= j < m)]
        if bad:
            raise ValueError(f"pair {bad[0]} is out of range: there are {n} seed(s) and {m} target(s)")
        if not wanted:
            raise ValueError("pairs is empty; give at least one (seed index, target index) pair")
    seed_setting = overrides.get("seed", settings.seed if settings is not None else 0)
    if isinstance(seed_setting, torch.Generator):
        raise TypeError("pairs= runs its pairs in several batches from one seed; give seed= an int (or None to "
                        "draw one), not a torch.Generator")
    if seed_setting is None:
        overrides["seed"] = int(torch.randint(0, 2**31 - 1, (1,)).item())  # one seed for every batch
    # Batches: the seeds that share a target (or the targets that share a seed, when that makes
    # fewer runs). Every batch starts from the same seed, so each pair sees the crops it would alone.
    by_target: dict[int, list[int]] = {}
    by_seed: dict[int, list[int]] = {}
    for i, j in wanted:
        by_target.setdefault(j, []).append(i)
        by_seed.setdefault(i, []).append(j)
    blocks = ([(sorted(set(ss)), [j]) for j, ss in by_target.items()] if len(by_target) <= len(by_seed)
              else [([i], sorted(set(tt))) for i, tt in by_seed.items()])
    where: dict[tuple[int, int], tuple[Result, int, int]] = {}
    for ss, tt in blocks:
        res = accentuate(model, [items[i] for i in ss], [target_list[j] for j in tt], settings, snapshots=snapshots,
                         progress=progress, runner=runner, **dict(overrides))
        for a, i in enumerate(ss):
            for b, j in enumerate(tt):
                where[(i, j)] = (res, a, b)
    out = []
    for pair in wanted:
        res, a, b = where[pair]
        out.append(res.subset([a], [b]))
    return out


#: On CPU, model passes hold at most this many input pixels (16 crops of 224 x 224) unless
#: ``per_pass`` says otherwise: beyond it, activations only grow past what caches and the
#: allocator's reuse cover, and the pass gets slower per crop.
_CPU_PASS_PIXELS = 16 * 224 * 224
#: On other devices (CUDA), model passes hold at most this many input pixels (128 crops of
#: 224 x 224): the backward pass keeps about 50 MiB of activations per such crop for
#: EfficientNet-Lite0 and 82 MiB for a ResNet-50 in float32 (half that under bfloat16 autocast;
#: measured with ``torch.autograd.graph.saved_tensors_hooks``), so 128 crops keep 6 and 10 GiB,
#: where the 1024 crops of 64 accentuations at once would not fit in 80 GB.
_DEVICE_PASS_PIXELS = 128 * 224 * 224


def pass_size(device: torch.device | str, crops: int, input_size: tuple[int, int]) -> int:
    """The engine's default ``per_pass``: accentuations of ``crops`` crops at ``input_size`` per model pass.

    Example:
        >>> pass_size("cpu", 16, (224, 224)), pass_size("cuda", 16, (224, 224)), pass_size("cuda", 4, (224, 224))
        (1, 8, 32)
    """
    h, w = input_size
    budget = _CPU_PASS_PIXELS if torch.device(device).type == "cpu" else _DEVICE_PASS_PIXELS
    return max(1, budget // (crops * h * w))


def _phase(name: str) -> contextlib.AbstractContextManager[Any]:
    """Label a part of a step for :mod:`torch.profiler` (near free when no profiler runs)."""
    return torch.profiler.record_function(f"accentuate.{name}")


def _snapshot_steps(snapshots: int | Sequence[int], steps: int) -> set[int]:
    if isinstance(snapshots, int):
        return set(range(0, steps + 1, snapshots)) | {steps} if snapshots > 0 else set()
    return {int(s) for s in snapshots}


def _snap(acc: Accentuator) -> torch.Tensor:
    with torch.no_grad():
        img = acc.param().detach()
    return (img * 255).round().to(torch.uint8).view(acc.n, acc.m, 3, *acc.canvas)


def _progress(progress: bool | Callable[[int, int], None] | None, total: int) -> Callable[[int | None], None]:
    if callable(progress):
        call = progress
        return lambda t: None if t is None else call(t, total)
    if not (progress_visible() if progress is None else progress):
        return lambda t: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="accentuate", unit="step", leave=False)

    def update(t: int | None) -> None:
        if t is None:
            bar.close()
        else:
            bar.update(t - bar.n)

    return update


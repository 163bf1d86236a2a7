"""Benchmark suite: the cost of one accentuation step against the cost of the model itself.

The floor is what no implementation of the recipe can avoid: one forward and one
backward pass of the model, to its input, over the step's K crops at the model's
input size. Everything is measured in one process, interleaved round by round,
and reported as ratios to that floor (per-round ratios, then their median), so a
shared, noisy machine slows numerator and denominator alike:

- ``floor``: forward + backward to the input on K crops, in the default contiguous
  layout and in ``channels_last``; ratios use the faster of the two (the stricter
  comparison).
- ``step``: :meth:`accentuate.Accentuator.step` for the paper's recipe (K crops,
  paired seed crops, regularization at the model's default layer, opacity
  accumulation), and the history evaluation :func:`accentuate.accentuate` runs
  after every step (``evaluate``), and the two together (``step + history``).
- ``step, opacity off``: the same without the opacity masks (``opacity=False``): the
  regularizer's gradient then joins the one backward pass.
- ``step, reg off``: the recipe without the regularizer.
- batching: one run of B seeds x M targets against B * M single runs, per accentuation.
- peak memory: CPU resident set (``VmHWM`` in a fresh process per configuration,
  minus the process's RSS after loading the model and building the inputs), and
  on CUDA ``torch.cuda.max_memory_allocated`` above the same baseline.
- precision: images and objectives after a few steps with ``autocast="bfloat16"``
  and without ``channels_last``, against float32 ``channels_last``.
- a profile of one step: where its time goes, by phase and by operator.

Run ``python benchmarks/bench_step.py`` (``make bench``); ``--help`` lists the
parameters. ``--model bench_models:resnet50`` times a ResNet-50 (random weights, see
``bench_models.py``): the work outside the model is a fixed cost per step, so its
ratio to the floor depends on the model's size. Results go to ``benchmarks/RESULTS.md`` (the text after the
``<!-- notes -->`` line of an existing file is kept). Timings are never asserted
by the tests: they run ``--tiny`` and check that the suite produces well-formed
results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import accentuate as acc
from accentuate.engine import Accentuator
from accentuate.hooks import OUTPUT, ModelRunner, default_reg_layer, model_state
from accentuate.objectives import Logit
from accentuate.settings import Settings
from accentuate.spec import ModelSpec, resolve_spec

HERE = Path(__file__).resolve().parent
NOTES_MARK = "<!-- notes -->"
PHOTOS = ("chelsea", "coffee", "astronaut", "motorcycle", "rocket", "hubble")
#: ImageNet classes used as targets: goldfish, tabby cat, bee, volcano, ...
CLASSES = (1, 281, 309, 980, 954, 417, 76, 94)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """What to measure. ``model="tiny"`` is a small built-in conv net (for tests)."""

    model: str = "efficientnet_lite0"
    crops: int = 16
    canvas: int | None = None  # default: the model spec's canvas
    batch: int = 2  # B seeds in the batching comparison
    targets: int = 2  # M targets in the batching comparison
    device: str = "cpu"
    dtype: str = "float32"  # or "bfloat16" (autocast)
    repeats: int = 5
    batch_repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    memory: bool = True
    precision_steps: int = 8
    profile: bool = True
    out: str | None = str(HERE / "RESULTS.md")
    json_out: str | None = None
    command: str = ""
    # The batch sweep (``--sweep``): instead of the suite above, the floor and the full step at
    # each of these numbers of accentuations per step, then (``compile``) eager against
    # ``torch.compile`` of the model at ``compile_batch``.
    sweep: tuple[int, ...] = ()
    per_pass: int | None = None  # the engine's accentuations per model pass (None: its rule)
    compile: bool = False
    compile_batch: int = 16
    compile_backend: str = "inductor"

    @staticmethod
    def tiny(**overrides: Any) -> BenchConfig:
        """A configuration that runs in seconds: tiny model, small canvas, two repeats."""
        base = dict(model="tiny", crops=4, canvas=48, batch=2, targets=2, repeats=2, batch_repeats=1,
                    warmup=1, precision_steps=2, threads=1)
        base.update(overrides)
        return BenchConfig(**base)


class TinyNet(nn.Module):
    """A small conv net (32 x 32 input, 10 classes) with a named middle layer."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(x.mean(dim=(2, 3)))


def load(cfg: BenchConfig) -> tuple[nn.Module, ModelSpec]:
    """The model (eval mode, on ``cfg.device``) and its spec."""
    if cfg.model == "tiny":
        model: nn.Module = TinyNet()
        model.accentuate_spec = ModelSpec(name="tiny", input_size=(32, 32), normalize=None,  # type: ignore[assignment]
                                          labels=tuple(f"class{i}" for i in range(10)), reg_layer="conv2",
                                          defaults={"canvas": 48, "lam": 0.3})
    else:
        model = acc.load_model(cfg.model)
    model = model.eval().to(cfg.device)
    return model, resolve_spec(model)


def _autocast(cfg: BenchConfig) -> str | None:
    if cfg.dtype in ("float32", "fp32"):
        return None
    if cfg.dtype in ("bfloat16", "bf16", "float16", "fp16"):
        return cfg.dtype
    raise ValueError(f"--dtype must be float32, bfloat16 or float16; got {cfg.dtype!r}")


def _amp(cfg: BenchConfig) -> contextlib.AbstractContextManager[Any]:
    dt = _autocast(cfg)
    if dt is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16 if "b" in dt else torch.float16)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seeds_for(cfg: BenchConfig, spec: ModelSpec, n: int) -> torch.Tensor:
    """``n`` seed canvases: real photos for real models, smooth patterns for the tiny one."""
    canvas = cfg.canvas or spec.setting("canvas")
    if cfg.model == "tiny":
        g = torch.Generator().manual_seed(1)
        y, x = torch.meshgrid(torch.linspace(0, 1, canvas), torch.linspace(0, 1, canvas), indexing="ij")
        out = []
        for i in range(n):
            f = torch.rand(3, generator=g) * 6 + 2
            out.append(torch.stack([0.5 + 0.4 * torch.sin(f[0] * x + i), 0.5 + 0.4 * torch.cos(f[1] * y),
                                    x * y]).clamp(0, 1))
        return torch.stack(out)
    photos = [acc.photo(PHOTOS[i % len(PHOTOS)]) for i in range(n)]
    with warnings.catch_warnings():  # the photos are centre-cropped to the square canvas on purpose
        warnings.simplefilter("ignore", UserWarning)
        return acc.prepare_seeds(photos, (canvas, canvas))


def target_classes(cfg: BenchConfig, model: nn.Module, spec: ModelSpec) -> tuple[int, ...]:
    """The output indices the workloads target: :data:`CLASSES`, less those beyond the
    model's output (a feature extractor's vector, e.g. the 384 class-token channels of
    ``bench_models:vit_s14``)."""
    if cfg.model == "tiny":
        return tuple(range(10))
    n = len(spec.labels) if spec.labels else ModelRunner(model, spec).layouts([OUTPUT])[OUTPUT].channels
    return tuple(c for c in CLASSES if c < n) or tuple(range(min(n, len(CLASSES))))


# ---------------------------------------------------------------------------------------
# The measured workloads
# ---------------------------------------------------------------------------------------
def make_floor(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, channels_last: bool) -> Callable[[], None]:
    """Forward + backward to the input of the model on K crops at its input size."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((cfg.crops, 3, *spec.input_size), generator=g).to(cfg.device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    c = target_classes(cfg, model, spec)[0] if cfg.model != "tiny" else 1

    def run() -> None:
        xx = x.detach().requires_grad_(True)
        with _amp(cfg):
            logits = spec.logits(model(xx))
        torch.autograd.grad(logits[:, c].float().sum(), xx)

    return run


class _Stop(Exception):
    pass


def make_floor_reg(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, channels_last: bool,
                   reg_layer: str, separate: bool = True) -> Callable[[], None]:
    """The model work of the regularized recipe, without any of accentuate's machinery.

    The floor, plus what the regularizer needs from the model: a no-grad forward of
    the K seed crops up to ``reg_layer`` and (``separate``, when the objective's own
    gradient is kept for the opacity) a backward from ``reg_layer`` to the input;
    without ``separate``, one backward of objective minus distance.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand((cfg.crops, 3, *spec.input_size), generator=g).to(cfg.device)
    sx = torch.rand((cfg.crops, 3, *spec.input_size), generator=g).to(cfg.device)
    if channels_last:
        x, sx = x.contiguous(memory_format=torch.channels_last), sx.contiguous(memory_format=torch.channels_last)
    c = target_classes(cfg, model, spec)[0] if cfg.model != "tiny" else 1
    layer = dict(model.named_modules())[reg_layer]
    seen: dict[str, torch.Tensor] = {}

    def grab(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        seen["act"] = out
        if not torch.is_grad_enabled():
            raise _Stop

    def run() -> None:
        handle = layer.register_forward_hook(grab)
        try:
            xx = x.detach().requires_grad_(True)
            with _amp(cfg):
                logits = spec.logits(model(xx))
                act = seen["act"]
                with torch.no_grad(), contextlib.suppress(_Stop):
                    model(sx)
                seed_act = seen["act"]
            dist = (act.float() - seed_act.float()).pow(2).sum(1).add(1e-12).sqrt().mean()
            if separate:
                torch.autograd.grad(logits[:, c].float().sum(), xx, retain_graph=True)
                torch.autograd.grad(dist, xx)
            else:
                torch.autograd.grad(logits[:, c].float().sum() - dist, xx)
        finally:
            handle.remove()

    return run


def build_accentuator(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, n: int = 1, m: int = 1,
                      reg: bool = True, seeds: torch.Tensor | None = None, offset: int = 0,
                      channels_last: bool = True, opacity: bool = True) -> Accentuator:
    """An :class:`Accentuator` for the paper's recipe with the model's default settings."""
    if seeds is None:
        seeds = seeds_for(cfg, spec, n)
    classes = target_classes(cfg, model, spec)
    objectives = [Logit(classes[(offset + j) % len(classes)]).resolve(spec.labels) for j in range(m)]
    base = Settings(reg_layer=None if reg else "none", crops=cfg.crops, autocast=_autocast(cfg),
                    channels_last=channels_last, opacity=opacity, per_pass=cfg.per_pass)
    settings = Settings.resolve(model, spec, base)  # the spec's calibrated lam, lr, param, reg layer
    gen = torch.Generator(device=cfg.device).manual_seed(0)
    return Accentuator(model, spec, seeds.to(cfg.device), objectives, settings, generator=gen)


def make_accentuator(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, **kw: Any) -> Accentuator:
    """:func:`build_accentuator`, warmed up to its steady state."""
    a = build_accentuator(model, spec, cfg, **kw)
    # Step 0 is objective-only and step 1 measures the balance; later steps are all alike.
    a.history.append(0, {}, a.evaluate())
    for _ in range(2):
        loop_iteration(a)
    return a


def loop_iteration(a: Accentuator) -> None:
    """What :func:`accentuate.accentuate` does per step: the step, then the history record."""
    rec = a.step()
    a.history.append(a.t, rec, a.evaluate())


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------
@dataclass
class Series:
    """Repeated measurements of one workload: wall-clock and process CPU seconds."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    def summary(self) -> dict[str, float]:
        return {"min_ms": 1e3 * min(self.wall), "median_ms": 1e3 * statistics.median(self.wall),
                "cpu_min_ms": 1e3 * min(self.cpu), "cpu_median_ms": 1e3 * statistics.median(self.cpu),
                "n": len(self.wall)}


@contextlib.contextmanager
def timer(series: Series, device: str) -> Iterator[None]:
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    yield
    _sync(device)
    series.add(time.perf_counter() - w, time.process_time() - c)


def _paired(num: Series, den: Series) -> dict[str, float]:
    """Ratios of two interleaved series: median of per-round ratios, and min over min."""
    per_round = [a / b for a, b in zip(num.wall, den.wall)]
    return {"median": statistics.median(per_round), "min": min(num.wall) / min(den.wall),
            "cpu_median": statistics.median(a / b for a, b in zip(num.cpu, den.cpu))}


def run_timings(cfg: BenchConfig, model: nn.Module, spec: ModelSpec, log: Callable[[str], None]) -> dict[str, Any]:
    """Interleaved rounds of every workload; returns summaries and ratios to the floor.

    Within a round the floor is timed again between the workloads, and each workload
    is compared with the mean of the floors timed just before and just after it (on a
    shared machine the load changes within seconds; adjacent floors see the same load).
    """
    dev = cfg.device
    cl, contig, with_reg = "floor (channels_last)", "floor (contiguous)", "floor + regularizer (channels_last)"
    with_reg1 = "floor + regularizer, one backward (channels_last)"
    floors = {contig: make_floor(model, spec, cfg, False), cl: make_floor(model, spec, cfg, True)}
    reg_layer = default_reg_layer(model, spec)
    if reg_layer is not None:
        floors[with_reg] = make_floor_reg(model, spec, cfg, True, reg_layer)
        floors[with_reg1] = make_floor_reg(model, spec, cfg, True, reg_layer, separate=False)
    a_reg = make_accentuator(model, spec, cfg, reg=True)
    a_off = make_accentuator(model, spec, cfg, reg=False)
    a_nop = make_accentuator(model, spec, cfg, reg=True, opacity=False)
    b, m = cfg.batch, cfg.targets
    seeds = seeds_for(cfg, spec, b)
    a_batch = make_accentuator(model, spec, cfg, n=b, m=m, seeds=seeds)
    singles = [make_accentuator(model, spec, cfg, seeds=seeds[i:i + 1], offset=j) for i in range(b) for j in range(m)]
    names = [*floors, "step", "evaluate", "step + history", "step, opacity off", "evaluate, opacity off",
             "step + history, opacity off", "step, reg off", "evaluate, reg off", "step + history, reg off",
             "batched run", "single runs"]
    s: dict[str, Series] = {k: Series() for k in names}
    # The channels_last floors adjacent to each measurement (mean of before and after).
    near: dict[str, Series] = {k: Series() for k in names}

    def floor_now() -> tuple[float, float]:
        with timer(s[cl], dev):
            floors[cl]()
        return s[cl].wall[-1], s[cl].cpu[-1]

    def pair(keys: list[str], before: tuple[float, float], after: tuple[float, float]) -> None:
        for k in keys:
            near[k].add((before[0] + after[0]) / 2, (before[1] + after[1]) / 2)

    with model_state(model):
        for f in floors.values():
            for _ in range(cfg.warmup):
                f()
        for r in range(cfg.repeats):
            for name in (contig, with_reg, with_reg1):
                if name in floors:
                    with timer(s[name], dev):
                        floors[name]()
            f0 = floor_now()
            pair([contig, with_reg, with_reg1] if with_reg in floors else [contig], f0, f0)
            pair([cl], f0, f0)
            for a, suffix in ((a_reg, ""), (a_nop, ", opacity off"), (a_off, ", reg off")):
                with timer(s["step" + suffix], dev):
                    rec = a.step()
                with timer(s["evaluate" + suffix], dev):
                    ev = a.evaluate()
                a.history.append(a.t, rec, ev)
                s["step + history" + suffix].add(s["step" + suffix].wall[-1] + s["evaluate" + suffix].wall[-1],
                                                 s["step" + suffix].cpu[-1] + s["evaluate" + suffix].cpu[-1])
                f1 = floor_now()
                pair(["step" + suffix, "evaluate" + suffix, "step + history" + suffix], f0, f1)
                f0 = f1
            if r < cfg.batch_repeats:
                with timer(s["batched run"], dev):
                    loop_iteration(a_batch)
                with timer(s["single runs"], dev):
                    for one in singles:
                        loop_iteration(one)
                f1 = floor_now()
                pair(["batched run", "single runs"], f0, f1)
            log(f"  round {r + 1}/{cfg.repeats}: floor {1e3 * s[cl].wall[-1]:.0f} ms, "
                f"step {1e3 * s['step'].wall[-1]:.0f} ms, step (reg off) {1e3 * s['step, reg off'].wall[-1]:.0f} ms")
    # The reference layout: the faster floor (by the median of its own timings).
    ref_name = min((contig, cl), key=lambda k: statistics.median(s[k].wall))
    scale = statistics.median(s[contig].wall) / statistics.median(s[cl].wall) if ref_name == contig else 1.0

    def ratio(name: str, per: float) -> dict[str, float]:
        num = Series([w / per for w in s[name].wall], [c / per for c in s[name].cpu])
        den = Series([w * scale for w in near[name].wall], [c * scale for c in near[name].cpu])
        return _paired(num, den)

    rows = {}
    for name in names[:-2]:
        if name == ref_name:  # the reference against itself: 1 by definition, in every round
            own = _paired(s[name], s[name])
        else:
            # The channels_last floor is timed several times a round: its row compares its
            # first timing of each round with the reference.
            num = near[cl] if name == cl else s[name]
            own = _paired(num, Series([w * scale for w in near[name].wall], [c * scale for c in near[name].cpu]))
        rows[name] = {**s[name].summary(), "ratio": own}
    # What the reg-off step spends beyond the model (no model work but the floor's):
    # per round, the step minus the mean of its adjacent floors, in ms.
    beyond = [1e3 * (w - f * scale) for w, f in zip(s["step, reg off"].wall, near["step, reg off"].wall)]
    rows["step, reg off"]["beyond_floor_ms"] = {"median": statistics.median(beyond), "min": min(beyond)}
    if with_reg in floors:
        for name in ("step", "step + history"):
            rows[name]["ratio_to_reg_floor"] = _paired(s[name], s[with_reg])
        for name in ("step, opacity off", "step + history, opacity off"):
            rows[name]["ratio_to_reg_floor"] = _paired(s[name], s[with_reg1])
    pa = b * m
    per_batch = Series([w / pa for w in s["batched run"].wall], [c / pa for c in s["batched run"].cpu])
    per_single = Series([w / pa for w in s["single runs"].wall], [c / pa for c in s["single runs"].cpu])
    batching = {
        "B": b, "M": m,
        "batch_per_accentuation": {**per_batch.summary(), "ratio": ratio("batched run", pa)},
        "single_per_accentuation": {**per_single.summary(), "ratio": ratio("single runs", pa)},
        "batch_over_single": _paired(s["batched run"], s["single runs"]),
    }
    return {"rows": rows, "reference_floor": ref_name, "batching": batching,
            "reg_layer": str(a_reg.reg), "lam": float(spec.setting("lam")), "param": spec.setting("param"),
            "canvas": list(a_reg.canvas), "input_size": list(spec.input_size)}


# ---------------------------------------------------------------------------------------
# Memory: a fresh process per configuration
# ---------------------------------------------------------------------------------------
def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM in bytes (Linux); elsewhere the peak from getrusage."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        out = {"VmRSS": peak, "VmHWM": peak}
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def memory_child(cfg: BenchConfig, which: str) -> dict[str, Any]:
    """Run one configuration a few times in this (fresh) process; report its peak memory."""
    model, spec = load(cfg)
    dev = torch.device(cfg.device)
    with model_state(model):
        if which.startswith("floor"):
            work = make_floor(model, spec, cfg, channels_last=which.endswith("channels_last"))
        else:
            seeds = seeds_for(cfg, spec, 1)
            a = build_accentuator(model, spec, cfg, reg=which == "step", seeds=seeds)

            def work() -> None:
                loop_iteration(a)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = _proc_status()
        exact = _reset_peak()
        cuda_base = torch.cuda.memory_allocated() if dev.type == "cuda" else 0
        for _ in range(3):
            work()
        _sync(cfg.device)
        peak = _proc_status()
    res = {"which": which, "rss_baseline": base["VmRSS"], "rss_peak": peak["VmHWM"],
           "rss_delta": peak["VmHWM"] - base["VmRSS"], "peak_reset": exact}
    if dev.type == "cuda":
        res["cuda_delta"] = torch.cuda.max_memory_allocated() - cuda_base
    return res


def run_memory(cfg: BenchConfig, ref_floor: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Peak memory of the floor and of the steps, each in a fresh interpreter."""
    out: dict[str, Any] = {}
    floor_key = "floor_channels_last" if "channels_last" in ref_floor else "floor_contiguous"
    for which in (floor_key, "step", "step_reg_off"):
        payload = json.dumps(asdict(replace(cfg, out=None, json_out=None)))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", which, "--config", payload]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"memory measurement of {which} failed:\n{proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        out[which] = res
        log(f"  memory {which}: +{res['rss_delta'] / 2**20:.0f} MiB")
    floor = out[floor_key]
    for k in ("step", "step_reg_off"):
        out[k]["rss_ratio"] = out[k]["rss_delta"] / floor["rss_delta"]
        if "cuda_delta" in floor:
            out[k]["cuda_ratio"] = out[k]["cuda_delta"] / floor["cuda_delta"]
    out["floor"] = floor_key
    return out


# ---------------------------------------------------------------------------------------
# Precision: bfloat16 autocast and layouts against float32
# ---------------------------------------------------------------------------------------
def run_precision(cfg: BenchConfig, model: nn.Module, spec: ModelSpec) -> list[dict[str, Any]]:
    """How far bfloat16 autocast and the layouts move results, against float32 channels_last.

    Two views: one step from the same start with the same crops (the objective and
    the opacity, i.e. ``|d objective / d image|``: the model's precision proper),
    and the images after ``precision_steps`` steps (the trajectory; Adam's updates
    are about ``lr * sign(gradient)`` where gradients are near zero, so rounding
    alone already moves it, which the float32 contiguous row measures).
    """
    seeds = seeds_for(cfg, spec, 1)
    fp32, bf16 = replace(cfg, dtype="float32"), replace(cfg, dtype="bfloat16")
    variants = [("float32, channels_last", fp32, True), ("float32, contiguous", fp32, False),
                ("bfloat16 autocast, channels_last", bf16, True), ("bfloat16 autocast, contiguous", bf16, False)]
    results = []
    ref: dict[str, torch.Tensor] = {}
    with model_state(model):
        for name, c, cl in variants:
            a = build_accentuator(model, spec, c, reg=True, seeds=seeds, channels_last=cl)
            t0 = time.perf_counter()
            rec = a.step()  # step 0: same start, same crops for every variant
            grad_map = a.opacity.detach().float().cpu().flatten().clone()  # opacity keeps accumulating
            obj = rec["objective"].float().cpu().flatten().clone()
            for _ in range(cfg.precision_steps - 1):
                a.step()
            secs = (time.perf_counter() - t0) / cfg.precision_steps
            img = a.param().detach().float().cpu()
            if not ref:
                ref = {"img": img, "grad": grad_map, "obj": obj}
            g_ref = ref["grad"]
            corr = torch.corrcoef(torch.stack([grad_map, g_ref]))[0, 1] if g_ref.std() > 0 else torch.tensor(1.0)
            results.append({
                "variant": name, "steps": cfg.precision_steps, "seconds_per_step": secs,
                "objective_rel_err": float((obj - ref["obj"]).abs().max() / ref["obj"].abs().max().clamp(min=1e-12)),
                "gradient_rel_err": float((grad_map - g_ref).norm() / g_ref.norm().clamp(min=1e-12)),
                "gradient_corr": float(corr),
                "max_abs_image": float((img - ref["img"]).abs().max()),
                "mean_abs_image": float((img - ref["img"]).abs().mean()),
                "mean_change_from_seed_fp32": float((ref["img"] - seeds).abs().mean()),
            })
    return results


# ---------------------------------------------------------------------------------------
# Profile of one step
# ---------------------------------------------------------------------------------------
def run_profile(cfg: BenchConfig, model: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    """Phases (``accentuate.*`` labels) and top operators of one warm loop iteration."""
    from torch.profiler import ProfilerActivity, profile

    a = make_accentuator(model, spec, cfg, reg=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(cfg.device).type == "cuda" else [])
    with model_state(model), profile(activities=acts) as prof:
        loop_iteration(a)
    events = prof.key_averages()
    phases = {e.key.split(".", 1)[1]: e.cpu_time_total / 1e3 for e in events if e.key.startswith("accentuate.")}
    ops = sorted((e for e in events if not e.key.startswith("accentuate.")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    top = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in ops[:12]]
    return {"phases_ms": phases, "top_ops": top, "total_self_ms": total}


# ---------------------------------------------------------------------------------------
# The batch sweep: accentuations per second at several batch sizes, and torch.compile
# ---------------------------------------------------------------------------------------
def make_floor_batch(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, crops: int, per: int) -> Callable[[], None]:
    """The floor of a step of ``crops`` crops, in passes of at most ``per`` crops as the engine makes
    them: forward + backward to the input of each pass, ``channels_last``."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((crops, 3, *spec.input_size), generator=g).to(cfg.device)
    x = x.contiguous(memory_format=torch.channels_last)
    c = target_classes(cfg, model, spec)[0] if cfg.model != "tiny" else 1

    def run() -> None:
        for start in range(0, crops, per):
            xx = x[start:start + per].detach().requires_grad_(True)
            with _amp(cfg):
                logits = spec.logits(model(xx))
            torch.autograd.grad(logits[:, c].float().sum(), xx)

    return run


def _cuda_peak(device: str, work: Callable[[], None]) -> dict[str, float] | None:
    """On CUDA: memory allocated before ``work`` and the peak above it during ``work``, in MiB."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    work()
    torch.cuda.synchronize()
    return {"allocated_mib": base / 2**20, "peak_above_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}


def _error_text(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}"


def _free(device: str) -> None:
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def sweep_row(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, seeds: torch.Tensor, b: int) -> dict[str, Any]:
    """Floor and step + history (what :func:`accentuate.accentuate` spends per step) for ``b``
    accentuations (``b`` seeds x 1 target), interleaved over ``cfg.repeats`` rounds after warm-up."""
    a = make_accentuator(model, spec, cfg, n=b, m=1, seeds=seeds[:b])
    per = min(b, a._per_pass())
    floor = make_floor_batch(model, spec, cfg, b * cfg.crops, per * cfg.crops)
    for _ in range(max(1, cfg.warmup)):
        floor()
    fl, st = Series(), Series()
    for _ in range(cfg.repeats):
        with timer(fl, cfg.device):
            floor()
        with timer(st, cfg.device):
            loop_iteration(a)
    f_med, s_med = statistics.median(fl.wall), statistics.median(st.wall)
    row: dict[str, Any] = {
        "batch": b, "per_pass": per, "crops_per_pass": per * cfg.crops,
        "floor_ms": 1e3 * f_med, "step_ms": 1e3 * s_med, "floor_min_ms": 1e3 * min(fl.wall),
        "step_min_ms": 1e3 * min(st.wall),
        "ratio": _paired(st, fl), "accentuations_per_s": b / s_med, "floor_accentuations_per_s": b / f_med,
    }
    mem_floor = _cuda_peak(cfg.device, floor)
    if mem_floor is not None:
        row["cuda_floor"] = mem_floor
        row["cuda_step"] = _cuda_peak(cfg.device, lambda: loop_iteration(a))
    return row


def run_compile(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, seeds: torch.Tensor,
                log: Callable[[str], None], partial: Callable[[dict[str, Any]], None] = lambda d: None
                ) -> dict[str, Any]:
    """Eager against ``torch.compile`` of the model (``nn.Module.compile``, on a copy, so layer
    names stay), at ``cfg.compile_batch`` accentuations: the floor, then step + history, each with
    the seconds its first calls took (compilation) and what dynamo counted.

    The engine reads layers with forward hooks that it adds for each pass and removes after it.
    Dynamo does not guard on module hooks by default (``torch._dynamo.config.skip_nnmodule_hook_guards``),
    so a compiled graph ignores hooks added after it was compiled; the step is measured with those
    guards on (new hooks then force recompilations: past :data:`STEP_RECOMPILES` of them dynamo runs
    the model eagerly, which bounds the time compilation takes), and a failure is reported as the
    answer. ``partial`` gets the results so far (the floor's) before the step is measured.
    """
    import copy

    b = cfg.compile_batch
    out: dict[str, Any] = {"batch": b, "backend": cfg.compile_backend, "torch": torch.__version__}
    if not hasattr(nn.Module, "compile"):
        out["error"] = f"torch {torch.__version__} has no nn.Module.compile (torch 2.2 or later)"
        return out
    from torch import _dynamo
    from torch._dynamo.utils import counters

    def dynamo() -> dict[str, Any]:
        return {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
                "graph_breaks": int(sum(counters["graph_break"].values())),
                "recompiles": int(sum(counters["recompiles"].values())) if "recompiles" in counters else None}

    _dynamo.reset()
    counters.clear()
    compiled = copy.deepcopy(model)
    compiled.compile(backend=cfg.compile_backend)
    per = pass_size_for(model, spec, cfg, b)
    eager_f = make_floor_batch(model, spec, cfg, b * cfg.crops, per * cfg.crops)
    comp_f = make_floor_batch(compiled, spec, cfg, b * cfg.crops, per * cfg.crops)
    eager_f()
    t0 = time.perf_counter()
    comp_f()
    comp_f()
    _sync(cfg.device)
    floor: dict[str, Any] = {"first_calls_s": time.perf_counter() - t0}
    log(f"  compiled floor: first two calls {floor['first_calls_s']:.1f} s")
    fe, fc = Series(), Series()
    for _ in range(cfg.repeats):
        with timer(fe, cfg.device):
            eager_f()
        with timer(fc, cfg.device):
            comp_f()
    floor.update(eager_ms=1e3 * statistics.median(fe.wall), compiled_ms=1e3 * statistics.median(fc.wall),
                 speedup=_paired(fe, fc), dynamo=dynamo())
    out["floor"] = floor
    partial(out)
    del eager_f, comp_f
    _free(cfg.device)

    _dynamo.reset()
    counters.clear()
    compiled = copy.deepcopy(model)
    compiled.compile(backend=cfg.compile_backend)
    guards = getattr(_dynamo.config, "skip_nnmodule_hook_guards", None)
    limit_name = next((n for n in ("recompile_limit", "cache_size_limit") if hasattr(_dynamo.config, n)), None)
    limit = getattr(_dynamo.config, limit_name) if limit_name else None
    step: dict[str, Any] = {"hook_guards": guards is not None, "recompile_limit": STEP_RECOMPILES if limit_name else None}
    try:
        if guards is not None:
            _dynamo.config.skip_nnmodule_hook_guards = False
        if limit_name:
            setattr(_dynamo.config, limit_name, STEP_RECOMPILES)
        eager_a = make_accentuator(model, spec, cfg, n=b, m=1, seeds=seeds[:b])
        t0 = time.perf_counter()
        comp_a = make_accentuator(compiled, spec, cfg, n=b, m=1, seeds=seeds[:b])
        _sync(cfg.device)
        step["first_calls_s"] = time.perf_counter() - t0
        log(f"  compiled accentuator: set-up and two steps {step['first_calls_s']:.1f} s")
        se, sc = Series(), Series()
        for _ in range(cfg.repeats):
            with timer(se, cfg.device):
                loop_iteration(eager_a)
            with timer(sc, cfg.device):
                loop_iteration(comp_a)
        step.update(eager_ms=1e3 * statistics.median(se.wall), compiled_ms=1e3 * statistics.median(sc.wall),
                    speedup=_paired(se, sc))
    except Exception as e:  # the answer to "does it help": it does not run
        step["error"] = _error_text(e)
        log(f"  compiled step: FAILED {step['error']}")
    finally:
        if guards is not None:
            _dynamo.config.skip_nnmodule_hook_guards = guards
        if limit_name:
            setattr(_dynamo.config, limit_name, limit)
    step["dynamo"] = dynamo()
    out["step"] = step
    _free(cfg.device)
    return out


#: Compilations of the model's forward the step's compile check allows (dynamo's recompile limit)
#: before dynamo runs it eagerly: the engine's new hooks for each pass fail the hook guards.
STEP_RECOMPILES = 2


def pass_size_for(model: nn.Module, spec: ModelSpec, cfg: BenchConfig, b: int) -> int:
    """The accentuations per model pass the engine uses for ``b`` accentuations of ``cfg``."""
    from accentuate.engine import pass_size

    return cfg.per_pass or min(b, pass_size(cfg.device, cfg.crops, spec.input_size))


def run_sweep(cfg: BenchConfig, model: nn.Module, spec: ModelSpec, log: Callable[[str], None],
              partial: Callable[[dict[str, Any]], None] = lambda d: None) -> dict[str, Any]:
    """Every batch size of ``cfg.sweep`` (a row with ``error`` where one fails, e.g. out of memory),
    then the compile check. ``partial`` gets the results so far after each part (so that a run
    stopped from outside leaves what it measured)."""
    seeds = seeds_for(cfg, spec, max([*cfg.sweep, cfg.compile_batch if cfg.compile else 1]))
    a = build_accentuator(model, spec, cfg, seeds=seeds[:1])
    facts = {"reg_layer": str(a.reg), "param": spec.setting("param"), "canvas": list(a.canvas),
             "input_size": list(spec.input_size), "lam": float(spec.setting("lam"))}
    del a
    rows: list[dict[str, Any]] = []
    with model_state(model):
        for b in cfg.sweep:
            try:
                row = sweep_row(model, spec, cfg, seeds, b)
                log(f"  batch {b}: floor {row['floor_ms']:.1f} ms, step + history {row['step_ms']:.1f} ms, "
                    f"{row['accentuations_per_s']:.1f} accentuations/s")
            except Exception as e:  # out of memory, a kernel missing for this dtype: the row says it
                row = {"batch": b, "error": _error_text(e)}
                log(f"  batch {b}: FAILED {row['error']}")
            _free(cfg.device)  # the batch's accentuator and inputs are gone with sweep_row's frame
            rows.append(row)
            partial({"rows": rows, "compile": None, **facts})
        comp = None
        if cfg.compile:
            try:
                comp = run_compile(model, spec, cfg, seeds, log,
                                   partial=lambda c: partial({"rows": rows, "compile": c, **facts}))
            except Exception as e:
                comp = {"batch": cfg.compile_batch, "backend": cfg.compile_backend, "error": _error_text(e)}
                log(f"  compile: FAILED {comp['error']}")
                _free(cfg.device)
    return {"rows": rows, "compile": comp, **facts}


def sweep_markdown(res: dict[str, Any]) -> str:
    """The sweep's results as markdown (a section a larger report can include)."""
    cfg, sw, m = res["config"], res["sweep"], res["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['torch_threads']} threads"
    lines = [
        f"### `{cfg['model']}`, {cfg['dtype']}, on {cfg['device']} ({where})",
        "",
        f"- Command: `{cfg['command']}`",
        f"- Date {res['date']}; torch {m['torch']}" + (f", CUDA {m['cuda']}" if m.get("cuda") else "")
        + (f"; load average at start {res['load_start']}, at end {m.get('load_average', '?')}" if res.get("load_start")
           else ""),
        f"- Workload: K = {cfg['crops']} crops at {sw['input_size'][0]} x {sw['input_size'][1]}, canvas "
        f"{sw['canvas'][0]} x {sw['canvas'][1]}, param `{sw['param']}`, regularization at `{sw['reg_layer']}`, "
        f"lam {sw['lam']:g} (balanced), opacity on; B seeds x 1 target. Step = `Accentuator.step()` and the "
        f"history evaluation (what `accentuate()` spends per step). Floor = forward + backward to the input of the "
        f"B x K crops, in the engine's passes. Medians of {cfg['repeats']} interleaved rounds after warm-up.",
        "",
        "| accentuations per step | crops per pass | floor ms | step + history ms | ratio to floor "
        "| accentuations/s | floor accentuations/s | CUDA MiB allocated before | peak above it: floor / step |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in sw["rows"]:
        if "error" in r:
            lines.append(f"| {r['batch']} | | | | **failed**: {r['error']} | | | | |")
            continue
        mem_before = mem_peak = "n/a"
        if "cuda_step" in r:
            mem_before = f"{r['cuda_step']['allocated_mib']:.0f}"
            mem_peak = f"{r['cuda_floor']['peak_above_mib']:.0f} / {r['cuda_step']['peak_above_mib']:.0f}"
        lines.append(f"| {r['batch']} | {r['crops_per_pass']} | {r['floor_ms']:.1f} | {r['step_ms']:.1f} "
                     f"| {_fmt_ratio(r['ratio'])} | {r['accentuations_per_s']:.2f} "
                     f"| {r['floor_accentuations_per_s']:.2f} | {mem_before} | {mem_peak} |")
    comp = sw.get("compile")
    if comp:
        lines += ["", f"`torch.compile` of the model (`nn.Module.compile(backend={comp['backend']!r})` on a copy) at "
                  f"{comp['batch']} accentuations:", ""]
        if "error" in comp:
            lines.append(f"- **failed**: {comp['error']}")
        for key, label in (("floor", "floor"), ("step", "step + history")):
            part = comp.get(key)
            if not part:
                continue
            if "error" in part:
                lines.append(f"- {label}: **does not run compiled**: {part['error']} (dynamo: {json.dumps(part['dynamo'])})")
                continue
            lines.append(f"- {label}: eager {part['eager_ms']:.1f} ms, compiled {part['compiled_ms']:.1f} ms: speedup "
                         f"{_fmt_ratio(part['speedup'])}; first calls {part['first_calls_s']:.1f} s "
                         f"(dynamo: {json.dumps(part['dynamo'])})")
        if "step" in comp:
            lines.append("- The step is run with dynamo's guards on module hooks on (`torch._dynamo.config."
                         "skip_nnmodule_hook_guards = False`): the engine adds its capture hooks for each pass, and "
                         "without those guards a compiled graph ignores them. New hooks fail those guards, so past "
                         f"{comp['step'].get('recompile_limit')} compilations (dynamo's recompile limit, lowered to "
                         "bound the time) the model runs eagerly.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """CPU model, cores, torch and Python versions, device name."""
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = str(torch.version.cuda)
        info["cudnn"] = str(torch.backends.cudnn.version())
    try:
        info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


def _fmt_ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.2f} x (min/min {r['min']:.2f}, CPU {r['cpu_median']:.2f})"


def markdown(res: dict[str, Any]) -> str:
    """The results as a markdown report."""
    cfg = res["config"]
    t = res["timings"]
    m = res["machine"]
    lines = [
        "# Benchmark results: one accentuation step against the model's own cost",
        "",
        f"- Date: {res['date']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}"
        + (f", GPU {m['gpu']}" if "gpu" in m else "")
        + (f"; load average at start {res['load_start']}, at end {m.get('load_average', '?')}" if res.get("load_start") else ""),
        f"- Software: torch {m['torch']}, Python {m['python']}, {m['platform']}",
        f"- Command: `{cfg['command']}`",
        f"- Workload: model `{cfg['model']}`, input {t['input_size'][0]} x {t['input_size'][1]}, K = {cfg['crops']} crops, "
        f"canvas {t['canvas'][0]} x {t['canvas'][1]}, device {cfg['device']}, dtype {cfg['dtype']}; "
        f"recipe: param `{t['param']}`, regularization at `{t['reg_layer']}`, lam {t['lam']:g} (balanced), opacity on",
        f"- {cfg['repeats']} interleaved rounds (batching: {cfg['batch_repeats']}) after warm-up; the floor is timed again "
        f"between workloads. Ratio = median over rounds of (workload / mean of the floors timed just before and after "
        f"it); also min over min, and the median ratio in process CPU time. On a shared machine, min over min is the "
        f"best estimate of the unloaded cost.",
        f"- Reference floor: **{t['reference_floor']}** (the faster of the two layouts, by median).",
        "",
        "## Time per step",
        "",
        "| workload | min ms | median ms | ratio to floor |",
        "|---|---:|---:|---|",
    ]
    for name, row in t["rows"].items():
        lines.append(f"| {name} | {row['min_ms']:.1f} | {row['median_ms']:.1f} | {_fmt_ratio(row['ratio'])} |")
    if "ratio_to_reg_floor" in t["rows"]["step"]:
        lines += ["", "Against the model work the regularized recipe cannot avoid (`floor + regularizer`: the floor, "
                  "a no-grad forward of the K seed crops to the regularization layer and a backward from that layer "
                  "to the input): `step` "
                  f"{_fmt_ratio(t['rows']['step']['ratio_to_reg_floor'])}, `step + history` "
                  f"{_fmt_ratio(t['rows']['step + history']['ratio_to_reg_floor'])}. Without opacity the "
                  "unavoidable work is the floor, the seed forward and one backward of objective minus distance "
                  "(`floor + regularizer, one backward`): `step, opacity off` "
                  f"{_fmt_ratio(t['rows']['step, opacity off']['ratio_to_reg_floor'])}."]
    off = t["rows"].get("step, reg off", {}).get("beyond_floor_ms")
    if off:
        lines += ["", f"`step, reg off` does no model work but the floor's; what it spends beyond it (crops, noise, "
                  f"the crops' gradient mapped back to the canvas, the parameterization and the optimizer) is "
                  f"{off['median']:.1f} ms per step (median over rounds of the step minus its adjacent floors; "
                  f"lowest {off['min']:.1f} ms). That cost does not depend on the model: its ratio to the floor "
                  f"shrinks as the model grows."]
    b = t["batching"]
    lines += [
        "",
        "`step` is `Accentuator.step()` alone; `evaluate` is the per-step history record "
        "(a no-grad forward of the un-augmented image); `step + history` is what `accentuate()` spends per step.",
        "",
        f"## Batching: {b['B']} seeds x {b['M']} targets in one run against {b['B'] * b['M']} single runs",
        "",
        "| per accentuation | min ms | median ms | ratio to floor (K crops) |",
        "|---|---:|---:|---|",
        f"| one batched run | {b['batch_per_accentuation']['min_ms']:.1f} | {b['batch_per_accentuation']['median_ms']:.1f} "
        f"| {_fmt_ratio(b['batch_per_accentuation']['ratio'])} |",
        f"| single runs | {b['single_per_accentuation']['min_ms']:.1f} | {b['single_per_accentuation']['median_ms']:.1f} "
        f"| {_fmt_ratio(b['single_per_accentuation']['ratio'])} |",
        "",
        f"Batched / single: {_fmt_ratio(b['batch_over_single'])}. Both include the per-step history evaluation.",
    ]
    mem = res.get("memory")
    if mem:
        lines += ["", "## Peak memory", "",
                  "Each configuration in a fresh process; increase of the peak resident set (VmHWM) over the RSS "
                  "after loading the model and building the inputs, over three iterations.", "",
                  "| configuration | peak increase MiB | ratio to floor |" + (" CUDA MiB | CUDA ratio |" if "cuda_delta" in mem["step"] else ""),
                  "|---|---:|---:|" + ("---:|---:|" if "cuda_delta" in mem["step"] else "")]
        for k, label in ((mem["floor"], "floor"), ("step", "step + history"), ("step_reg_off", "step + history, reg off")):
            r = mem[k]
            ratio = f"{r['rss_ratio']:.2f}" if "rss_ratio" in r else "1.00"
            row = f"| {label} | {r['rss_delta'] / 2**20:.0f} | {ratio} |"
            if "cuda_delta" in r:
                row += f" {r['cuda_delta'] / 2**20:.0f} | {r.get('cuda_ratio', 1.0):.2f} |"
            lines.append(row)
    prec = res.get("precision")
    if prec:
        lines += ["", "## Precision and layout, against float32 channels_last", "",
                  "One step from the same start with the same crops: relative error of the objective and of the "
                  "opacity map (`|d objective / d image|`, the gradient), and its correlation. Then the images after "
                  f"{prec[0]['steps']} steps.", "",
                  "| variant | s / step | objective rel. err | gradient rel. err | gradient corr. "
                  f"| image max abs diff ({prec[0]['steps']} steps) | image mean abs diff |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for p in prec:
            lines.append(f"| {p['variant']} | {p['seconds_per_step']:.2f} | {p['objective_rel_err']:.1e} | "
                         f"{p['gradient_rel_err']:.1e} | {p['gradient_corr']:.5f} | {p['max_abs_image']:.2e} | "
                         f"{p['mean_abs_image']:.2e} |")
        lines += ["", f"For scale: in those {prec[0]['steps']} steps the float32 image moved "
                  f"{prec[0]['mean_change_from_seed_fp32']:.2e} (mean abs, pixel values in [0, 1]) from its seed."]
    prof = res.get("profile")
    if prof:
        ph = prof["phases_ms"]
        lines += ["", "## Profile of one step + history (torch.profiler, CPU time)", "",
                  "| phase | ms |", "|---|---:|"]
        for k, v in sorted(ph.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {k} | {v:.1f} |")
        lines += ["", "| operator | self ms | calls |", "|---|---:|---:|"]
        for o in prof["top_ops"]:
            lines.append(f"| `{o['op']}` | {o['self_ms']:.1f} | {o['calls']} |")
    return "\n".join(lines) + "\n"


def write_results(res: dict[str, Any], path: str | Path) -> Path:
    """Write the markdown report, keeping the notes after ``<!-- notes -->`` of an existing file."""
    path = Path(path)
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK):]
    text = markdown(res)
    if notes:
        text += "\n" + notes if not notes.startswith("\n") else notes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_suite(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every measurement of ``cfg``; write the report when ``cfg.out`` is set."""
    log = log or (lambda s: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    load_start = ""
    with contextlib.suppress(OSError):
        load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    model, spec = load(cfg)
    if cfg.canvas is None:
        cfg = replace(cfg, canvas=int(spec.setting("canvas")))
    log(f"timing {cfg.model} on {cfg.device} ({cfg.dtype}), K={cfg.crops}, canvas {cfg.canvas}")
    res: dict[str, Any] = {"config": asdict(cfg), "date": _dt.datetime.now().isoformat(timespec="minutes"),
                           "load_start": load_start}
    if cfg.sweep:
        def write(sweep: dict[str, Any]) -> None:
            res["sweep"], res["machine"] = sweep, machine()
            if cfg.out:
                Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
                Path(cfg.out).write_text(sweep_markdown(res))
            if cfg.json_out:
                Path(cfg.json_out).write_text(json.dumps(res, indent=1))

        write(run_sweep(cfg, model, spec, log, partial=write))
        if cfg.out:
            log(f"wrote {cfg.out}")
        return res
    res["timings"] = run_timings(cfg, model, spec, log)
    if cfg.profile:
        log("profiling one step")
        res["profile"] = run_profile(cfg, model, spec)
    if cfg.precision_steps > 0:
        log("precision check")
        res["precision"] = run_precision(cfg, model, spec)
    if cfg.memory:
        log("peak memory (fresh process per configuration)")
        res["memory"] = run_memory(cfg, res["timings"]["reference_floor"], log)
    res["machine"] = machine()
    if cfg.out:
        write_results(res, cfg.out)
        log(f"wrote {cfg.out}")
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(res, indent=1))
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        description="Time one accentuation step against the model's own forward + backward (the floor).",
        argument_default=argparse.SUPPRESS)
    p.add_argument("--model", help=f"accentuate.load_model name (module:function too), 'tiny', or "
                   f"bench_models:resnet50 for a heavier model (random weights), bench_models:vit_s14 for the "
                   f"DINOv2 ViT-S/14 (default {d.model})")
    p.add_argument("--crops", type=int, help=f"K crops per step (default {d.crops})")
    p.add_argument("--canvas", type=int, help="canvas side (default: the model spec's)")
    p.add_argument("--batch", type=int, help=f"B seeds in the batching comparison (default {d.batch})")
    p.add_argument("--targets", type=int, help=f"M targets in the batching comparison (default {d.targets})")
    p.add_argument("--device", help=f"torch device (default {d.device})")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="float32, or autocast to this dtype, for the step and the floor alike (default float32)")
    p.add_argument("--repeats", type=int, help=f"interleaved timing rounds (default {d.repeats})")
    p.add_argument("--batch-repeats", type=int,
                   help=f"rounds that include the batching comparison (default {d.batch_repeats})")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--precision-steps", type=int,
                   help=f"steps of the bfloat16/layout precision check, 0 to skip (default {d.precision_steps})")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak memory measurement")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profile of one step")
    p.add_argument("--tiny", action="store_true", help="tiny model and sizes: seconds (what the tests run)")
    p.add_argument("--out", help=f"markdown report, '' to skip (default {d.out})")
    p.add_argument("--json", dest="json_out", help="also write the raw results as JSON")
    p.add_argument("--sweep", type=int, nargs="+", metavar="B",
                   help="instead of the suite: the floor and step + history at B accentuations per step for each B "
                        "(accentuations/s, ratio to the floor, CUDA peak memory), e.g. --sweep 1 16 64")
    p.add_argument("--per-pass", type=int, help="accentuations per model pass in the sweep (default: the engine's rule)")
    p.add_argument("--compile", action="store_true",
                   help="with --sweep: also eager against torch.compile of the model at --compile-batch")
    p.add_argument("--compile-batch", type=int, help=f"accentuations of the compile check (default {d.compile_batch})")
    p.add_argument("--compile-backend", help=f"torch.compile backend (default {d.compile_backend}; 'eager' only "
                   f"traces: a quick check of the code path)")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace, command: str = "") -> BenchConfig:
    """The configuration: defaults (or ``--tiny``'s), overridden by the options given."""
    given = {k: v for k, v in vars(args).items() if k in BenchConfig.__dataclass_fields__}
    if "sweep" in given:
        given["sweep"] = tuple(given["sweep"])
    if given.get("out") == "":
        given["out"] = None
    base = BenchConfig.tiny() if getattr(args, "tiny", False) else BenchConfig()
    return replace(base, **given, command=command)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if getattr(args, "memory_child", None):
        cfg = BenchConfig(**json.loads(args.config))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        print(json.dumps(memory_child(cfg, args.memory_child)))
        return 0
    words = sys.argv[1:] if argv is None else argv
    cfg = config_from_args(args, command=" ".join(["python benchmarks/bench_step.py", *words]))
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        print("bench_step: --device cuda was given but CUDA is not available", file=sys.stderr)
        return 2
    run_suite(cfg, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

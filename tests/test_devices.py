"""The device path: what runs on any device, and what the CPU can check of code meant for CUDA.

Tests that take the ``device`` fixture (tests/conftest.py) run here on the CPU and, on a
machine with a GPU, on CUDA too (``pytest -m cuda``, which ``benchmarks/gpu_check.sh`` runs).
The others catch on the CPU the faults that only show on another device:

- a tensor made without ``device=`` (the run again with the default device set to ``meta``:
  such a tensor lands there and the run fails or changes);
- a wait for the device, or a copy from host memory, inside a step (counted by a dispatch mode:
  ``aten._local_scalar_dense`` is every ``.item()``, ``bool()``, ``.tolist()``; ``aten.lift_fresh``
  every tensor made from Python values, a copy from host memory on CUDA);
- a ``.numpy()`` of a tensor that is not on the CPU (a tensor subclass that refuses it);
- a generator of another device, and the size of a model pass off the CPU.
"""

from __future__ import annotations

import collections
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FAST, TINY_SPEC
from torch.utils._python_dispatch import TorchDispatchMode

import accentuate as acc
from accentuate.clip import Text
from accentuate.engine import Accentuator, _generator, pass_size
from accentuate.layout import Layout
from accentuate.objectives import Like, Logit
from accentuate.params import make_param
from accentuate.result import Result
from accentuate.settings import Settings
from accentuate.spec import ModelSpec, resolve_spec

TARGETS = [Logit(1), acc.channel("conv2", 3)]


def _settings(model: torch.nn.Module, **kw: Any) -> Settings:
    return Settings.resolve(model, resolve_spec(model), Settings(crops=4, canvas=48, seed=0, lam=1.0, **kw))


# -- on each device ------------------------------------------------------------------------------------
def test_one_step_on_the_device(tiny, seed_img, device):
    ref = Accentuator(tiny, resolve_spec(tiny), seed_img[None], TARGETS, _settings(tiny)).evaluate()
    model = tiny.to(device)
    a = Accentuator(model, resolve_spec(model), seed_img[None], TARGETS, _settings(model))
    assert a.generator.device.type == device.type
    assert {t.device.type for t in [*a.param.parameters(), *a.param.buffers()]} == {device.type}
    before = a.evaluate()
    assert torch.allclose(before["value"].cpu(), ref["value"], rtol=1e-4, atol=1e-5)  # the same model output
    for _ in range(2):  # step 0 is objective-only; step 1 measures the balance and adds the regularizer
        rec = a.step()
    for k, v in rec.items():
        assert v.device.type == device.type and v.shape == (1, 2) and bool(torch.isfinite(v).all()), k
    assert float(rec["distance"].min()) > 0 and float(rec["weight"].min()) > 0
    assert a.opacity.device.type == device.type and float(a.opacity.min()) >= 0 and float(a.opacity.max()) > 0
    assert a.last_crops is not None and a.last_crops.boxes.device.type == device.type
    res = a.result(before)
    tensors = [res.images, res.masks, res.seeds, res.steps_used, res.lam_effective, *res.before.values(),
               *res.after.values(), *(getattr(res.history, k) for k in res.history.keys())]
    assert {t.device.type for t in tensors} == {"cpu"}


def test_a_device_run_saves_and_loads(tiny, seed_img, device, tmp_path: Path):
    res = acc.accentuate(tiny.to(device), [seed_img, seed_img.flip(-1)], TARGETS, **{**FAST, "steps": 3})
    assert torch.device(res.run["device"]).type == device.type  # "cuda:0" for "cuda"
    res.save(tmp_path / "out")
    back = Result.load(tmp_path / "out")
    for name in ("images", "masks", "seeds", "steps_used", "lam_effective"):
        assert torch.equal(getattr(back, name), getattr(res, name)), name
    assert torch.equal(back.after["logits"], res.after["logits"])
    assert torch.equal(back.history.objective, res.history.objective)
    assert back.run["device"] == res.run["device"]


# -- what the CPU can tell of other devices -------------------------------------------------------------
def test_the_engine_makes_no_tensor_on_the_default_device(tiny, seed_img):
    """Run with the default device set to ``meta``: a tensor made without ``device=`` lands there,
    and the run fails (a meta tensor has no values) or gives other pictures. On CUDA such a tensor
    would be on the CPU, next to the model's CUDA tensors."""
    other = seed_img.flip(-1).roll(7, dims=-2)
    runs: list[tuple[Any, dict[str, Any]]] = [
        ([seed_img, other], {}),  # Fourier, regularizer at the spec's layer, opacity
        ([seed_img], {"param": "phase", "reg_layer": "pixel", "opacity": False, "lam": [[0.5, 2.0]]}),
        (None, {"param": "pixel"}),  # noise-seeded
    ]
    for seeds, kw in runs:
        opts = {**FAST, "steps": 3, **kw}
        plain = acc.accentuate(tiny, seeds, TARGETS, **opts)
        with torch.device("meta"):
            meta = acc.accentuate(tiny, seeds, TARGETS, **opts)
        assert torch.equal(plain.images, meta.images) and torch.equal(plain.masks, meta.masks), kw


class _Waits(TorchDispatchMode):
    """Counts the operations that make the host wait for the device, or copy from host memory, on CUDA."""

    WAIT = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.is_nonzero")
    COPY = ("aten.lift_fresh", "aten.lift_fresh_copy")

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = str(func.overloadpacket)
        if name in self.WAIT or name in self.COPY:
            self.counts[name] += 1
        elif name == "aten.index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                          for i in args[1] if i is not None):
            self.counts["boolean mask index"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def waits(self) -> int:
        return sum(v for k, v in self.counts.items() if k not in self.COPY)

    @property
    def copies(self) -> int:
        return sum(self.counts[k] for k in self.COPY)


@pytest.mark.parametrize("opacity", [True, False])
def test_a_step_waits_for_the_device_once(tiny, seed_img, opacity):
    """Only the check for non-finite losses reads a value on the host; a step copies nothing from host
    memory (the normalization, the objectives' indices and constants are on the device already)."""
    tiny.accentuate_spec = replace(TINY_SPEC, normalize=((0.4, 0.5, 0.6), (0.2, 0.25, 0.3)))
    targets = [Logit(1), acc.direction("conv2", torch.linspace(-1, 1, 16))]  # two kinds: rows picked per kind
    a = Accentuator(tiny, resolve_spec(tiny), torch.stack([seed_img, seed_img.flip(-1)]), targets,
                    _settings(tiny, opacity=opacity))
    for _ in range(3):  # past step 1, which measures the balance
        a.history.append(a.t, a.step(), a.evaluate())
    with _Waits() as w:
        a.history.append(a.t, a.step(), a.evaluate())
    assert w.waits == 1 and w.copies == 0, w.counts


def test_the_loop_waits_once_per_step(tiny, seed_img):
    counts = []
    for steps in (2, 5):
        with _Waits() as w:
            acc.accentuate(tiny, seed_img, TARGETS, **{**FAST, "steps": steps})
        counts.append(w.waits)
    assert counts[1] - counts[0] == 3


def _cpu_inputs(fn: Any) -> int:
    """How many operations of ``fn()`` take a CPU tensor."""
    seen = []

    class Inputs(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            flat = [*args, *(kwargs or {}).values()]
            if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in flat):
                seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Inputs():
        fn()
    return len(seen)


def test_constants_are_copied_to_the_device_once():
    """A direction's vector, a reference feature, a text embedding and the spec's normalization
    are made on the CPU; on the activations' device (``meta`` here) they are copied at the first
    call only."""
    lay = {"conv2": Layout("nchw", 16, (8, 8)), acc.OUTPUT: Layout("vector", 16, ())}
    acts = {"conv2": torch.empty(4, 16, 8, 8, device="meta"), acc.OUTPUT: torch.empty(4, 16, device="meta")}
    spec = ModelSpec(normalize=((0.41, 0.52, 0.63), (0.21, 0.26, 0.31)))  # values no other test uses
    x = torch.rand(4, 3, 32, 32)  # (made from Python values, a tensor is on the CPU first: count those)
    objs = {"direction": acc.direction("conv2", torch.linspace(-1, 1, 16)),
            "like": Like("conv2", torch.rand(16), pool="mean"), "text": Text("a dog", torch.rand(16))}
    for name, obj in objs.items():
        first = _cpu_inputs(lambda obj=obj: obj(acts, lay))
        again = _cpu_inputs(lambda obj=obj: obj(acts, lay))
        assert first > 0 and again == 0, name
        assert obj(acts, lay).device.type == "meta"
    counts = []
    for _ in range(2):  # the mean and std come from Python values: on CUDA a copy from host memory
        with _Waits() as w:
            spec.preprocess(x)
        counts.append(w.copies)
    assert counts == [2, 0]


@pytest.mark.parametrize("name", ["pixel", "fourier", "phase"])
def test_parameterizations_make_every_tensor_on_the_asked_device(name):
    seed = torch.empty(2, 3, 20, 28, device="meta")
    for p in (make_param(name, (2, 3, 20, 28), seed=seed), make_param(name, (2, 3, 20, 28), device="meta")):
        assert {t.device.type for t in [*p.parameters(), *p.buffers()]} == {"meta"}
        assert p().device.type == "meta"


def test_a_generator_of_another_device_is_refused():
    with pytest.raises(ValueError, match=r"generator is on cpu but the model is on cuda.*torch.Generator\(device='cuda'\)"):
        _generator(torch.Generator(), torch.device("cuda"))
    g, seed = _generator(7, torch.device("cpu"))
    assert seed == 7 and g.device.type == "cpu" and g.initial_seed() == 7


def test_model_passes_are_bounded_off_the_cpu():
    """On CUDA the default pass holds at most 128 crops of 224 x 224 (the activations a backward keeps
    grow with it: 64 accentuations of 16 crops at once would need 50 GiB for EfficientNet-Lite0)."""
    assert pass_size("cpu", 16, (224, 224)) == 1 and pass_size("cuda", 16, (224, 224)) == 8
    assert pass_size("cuda:1", 16, (224, 224)) == 8 and pass_size("cuda", 2, (224, 224)) == 64
    assert pass_size("cuda", 4, (32, 32)) == 128 * 49 // 4 and pass_size("cuda", 4, (1024, 1024)) == 1


class _OffHost(torch.Tensor):
    """A CPU tensor that, like a CUDA tensor, refuses ``.numpy()`` until ``.cpu()`` is called."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.Tensor.numpy:
            raise TypeError("can't convert a tensor that is not on the CPU to numpy; use Tensor.cpu() first")
        if func is torch.Tensor.cpu:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {})).as_subclass(torch.Tensor)
        return super().__torch_function__(func, types, args, kwargs)


def test_saving_reads_tensors_only_through_the_cpu(tiny, seed_img, tmp_path: Path):
    res = acc.accentuate(tiny, seed_img, TARGETS, **{**FAST, "steps": 2})

    def off(t: torch.Tensor) -> torch.Tensor:
        return t.as_subclass(_OffHost)

    away = replace(res, images=off(res.images), masks=off(res.masks), seeds=off(res.seeds),
                   steps_used=off(res.steps_used), lam_effective=off(res.lam_effective),
                   before={k: off(v) for k, v in res.before.items()}, after={k: off(v) for k, v in res.after.items()})
    with pytest.raises(TypeError, match="not on the CPU"):
        away.images.numpy()
    away.save(tmp_path / "out")
    back = Result.load(tmp_path / "out")
    assert torch.equal(back.images, res.images) and torch.equal(back.masks, res.masks)


def test_a_compiled_model_runs_or_says_why_it_cannot(tiny, seed_img):
    """A model compiled and first called on another batch (here 8 crops, channels_last, autograd on)
    may keep a graph that ignores the hooks the engine adds later: dynamo does not guard on module
    hooks by default. The engine then cannot read its layers and says why (on torch 2.13 this call
    does), instead of "layer never ran"; where the graph sees the hooks, the pictures are the
    uncompiled model's."""
    opts = {**FAST, "steps": 2}
    ref = acc.accentuate(tiny, seed_img, TARGETS, **opts)
    tiny.requires_grad_(False)  # frozen, as the engine runs it
    tiny.compile(backend="eager")  # dynamo's tracing only: no code generation
    try:
        x = torch.rand(8, 3, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        tiny(x)
        try:
            res = acc.accentuate(tiny, seed_img, TARGETS, **opts)
        except acc.LayerError as e:
            assert "the model is compiled" in str(e) and "accentuate the model before compiling" in str(e)
        else:
            assert torch.equal(res.images, ref.images)
    finally:
        torch._dynamo.reset()

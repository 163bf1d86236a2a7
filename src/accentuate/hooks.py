"""Running the model: capture of layer outputs by dotted name, and the one model runner.

:func:`capture` is a context manager that registers forward hooks on the named
layers and removes exactly those hooks in ``finally`` (user hooks are never
touched). It is the only place in accentuate that registers hooks. Captured outputs
are cloned, so a later in-place operation (an in-place ReLU, a residual ``+=``)
cannot change what was read. With ``stop_at`` the forward pass is cut short once
every requested layer has run.

:class:`ModelRunner` is the one way accentuate runs a model: it owns eval mode and
frozen parameters (restored on every path, see :func:`model_state`), the model's
preprocessing, capture with ``stop_at``, autocast and channels-last input, chunking
into passes, the layer layouts (:mod:`accentuate.layout`), and the wrapping of the
model's own errors into :class:`~accentuate.errors.ModelError`. The engine, the
analyses, :func:`layers` and the default regularization layer rule all use it.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import torch
from torch import nn

from .errors import LayerError, ModelError
from .layout import Layout, infer_layout, parse_layout
from .spec import forward_error

if TYPE_CHECKING:
    from .spec import ModelSpec

__all__ = [
    "Capture", "INPUT", "LayerInfo", "ModelRunner", "OUTPUT", "capture", "check_layers", "first_tensor",
    "default_reg_layer", "input_of", "layers", "model_state", "readable_layouts",
]

#: Pseudo layer name for the model's (extracted) output, read by logit objectives.
OUTPUT = "@output"

#: Suffix of a capture name that reads a module's INPUT (its first tensor argument)
#: instead of its output: ``"layers.3.attention.o_proj@input"`` is what enters the
#: attention output projection, the per-head context (see :func:`input_of`).
INPUT = "@input"


def input_of(name: str) -> str:
    """The capture name of module ``name``'s input: ``input_of("a.o_proj") == "a.o_proj@input"``."""
    return name if name.endswith(INPUT) else name + INPUT


def _split_input(name: str) -> tuple[str, bool]:
    """``(module name, is an input capture)`` of a capture name."""
    return (name[: -len(INPUT)], True) if name.endswith(INPUT) else (name, False)


def first_tensor(value: object) -> torch.Tensor | None:
    """The tensor a layer produced: itself, or the first tensor inside a tuple/list/dict.

    Hugging Face blocks return tuples or ``ModelOutput`` s whose first element is the
    hidden state; that is what is read.
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def check_layers(model: nn.Module, names: Iterable[str]) -> None:
    """Raise :class:`LayerError` for any name that is not a submodule of ``model``.

    The message names the layer, lists the closest valid names and points to
    ``accentuate.layers(model)``.
    """
    modules = dict(model.named_modules())
    for name in names:
        if name == OUTPUT:
            continue
        name = _split_input(name)[0]
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f"closest: {', '.join(close)}" if close else "no similar names"
            raise LayerError(
                f"layer {name!r} is not in the model ({hint}); "
                "list valid names with accentuate.layers(model) or `accentuate layers`"
            )


def readable_layouts(runner: ModelRunner, names: Sequence[str]) -> dict[str, Layout]:
    """Check that every layer of ``names`` exists, runs in the forward pass and has channels and
    positions accentuate can read; returns the layouts of every readable layer the runner's one
    traced pass found.

    Raises:
        LayerError: a name that is not in the model (with the closest names), a layer that never
            runs in the forward pass, or one whose output accentuate cannot read as channels and
            positions.
    """
    check_layers(runner.model, list(names))
    layouts = {r.name: r.layout for r in runner.trace()}
    for layer in names:
        if layer not in layouts:
            raise LayerError(f"layer {layer!r} never runs in the model's forward pass; pick one "
                             "`accentuate layers` lists")
        if layouts[layer] is None:
            raise LayerError(f"layer {layer!r} has an output accentuate cannot read as channels and positions; "
                             "pick another layer (`accentuate layers` shows each layout)")
    return {name: lay for name, lay in layouts.items() if lay is not None}


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


class _Stop(Exception):
    """Raised inside a hook to end a forward pass early."""


class Capture:
    """Outputs captured during a forward pass: ``capture[name]`` is a tensor.

    With ``trace=True`` nothing is kept but ``events``: ``(name, shape)`` each time a
    hooked module completes, in completion order (for :meth:`ModelRunner.trace`).
    """

    def __init__(self, names: list[str], stop_at: set[str] | None, trace: bool = False,
                 attach: bool = False) -> None:
        self.names = names
        self.outputs: dict[str, torch.Tensor] = {}
        self.events: list[tuple[str, tuple[int, ...]]] = []
        self._stop_at = stop_at
        self._trace = trace
        self._attach = attach

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.outputs[name]
        except KeyError:
            raise LayerError(
                f"layer {name!r} never ran in the model's forward pass; "
                "pick a layer that is used (see accentuate.layers(model))"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.outputs

    def clear(self) -> None:
        self.outputs.clear()

    def missing(self) -> list[str]:
        return [n for n in self.names if n not in self.outputs]

    def run(self, model: nn.Module, x: torch.Tensor) -> object:
        """Call ``model(x)``; when ``stop_at`` was given, return None once those layers ran."""
        try:
            return model(x)
        except _Stop:
            return None

    def _hook(self, name: str) -> Callable[[nn.Module, object, object], object]:
        def hook(module: nn.Module, args: object, output: object) -> object:
            t = first_tensor(output)
            if t is None:
                return None
            if self._trace:
                self.events.append((name, tuple(t.shape)))
                return None
            replaced = None
            if self._attach:  # keep the layer's own output; the model goes on with a copy
                self.outputs[name] = t
                replaced = _with_first_tensor(output, t.clone(), name)
            else:  # Clone: a later in-place op on this tensor must not change what we read.
                self.outputs[name] = t.clone()
            if self._stop_at is not None and self._stop_at.issubset(self.outputs):
                raise _Stop
            return replaced

        return hook

    def _pre_hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        """A forward pre-hook keeping the module's input (its first tensor argument) as ``name``."""

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            t = first_tensor(args)
            if t is None:
                t = first_tensor(kwargs)
            if t is None or self._trace:
                return
            self.outputs[name] = t.clone()
            if self._stop_at is not None and self._stop_at.issubset(self.outputs):
                raise _Stop

        return hook


def _with_first_tensor(output: object, t: torch.Tensor, name: str) -> object:
    """``output`` with its first tensor (itself, or the first item of a tuple or list) replaced by ``t``."""
    if isinstance(output, torch.Tensor):
        return t
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        items = [t, *output[1:]]
        return type(output)(items) if type(output) in (tuple, list) else type(output)(*items)
    raise LayerError(
        f"layer {name!r} returns {type(output).__name__}, whose tensor cannot be passed on as a copy; "
        "gradients at a layer need one that returns a tensor or a tuple starting with one"
    )


@contextmanager
def capture(
    model: nn.Module, names: Iterable[str], stop_at: Iterable[str] | None = None, trace: bool = False,
    inputs: Iterable[str] = (), attach: bool = False,
) -> Iterator[Capture]:
    """Hook the named layers of ``model`` for the duration of the block.

    Args:
        model: any module.
        names: dotted ``named_modules()`` paths (``OUTPUT`` is ignored here). A name
            ending in :data:`INPUT` (``"a.o_proj@input"``, see :func:`input_of`) captures
            that module's input instead of its output, as ``inputs`` does.
        inputs: module names whose INPUT (the first tensor argument) is captured, with a
            forward pre-hook, as ``capture[input_of(name)]``.
        stop_at: if given, :meth:`Capture.run` stops the forward pass as soon as all
            these layers have produced output (their later layers never run).
        trace: record only the completion order and shapes (``Capture.events``).
        attach: keep each layer's own output (not a copy) and let the model go on with a
            copy of it, so that ``torch.autograd.grad(value, cap[name])`` is the gradient of a
            value computed later with respect to that layer's output (an in-place op
            downstream changes the copy, not what was kept). Module inputs are not attached.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
        >>> with capture(net, ["0"]) as cap:
        ...     _ = cap.run(net, torch.randn(1, 3, 8, 8))
        >>> bool((cap["0"] < 0).any())  # the in-place ReLU did not touch our copy
        True
        >>> with capture(net, [], inputs=["1"]) as cap:  # what enters the ReLU
        ...     _ = cap.run(net, torch.randn(1, 3, 8, 8))
        >>> tuple(cap["1@input"].shape)
        (1, 4, 6, 6)
    """
    names = [n for n in dict.fromkeys([*names, *(input_of(i) for i in inputs)]) if n != OUTPUT]
    check_layers(model, names)
    modules = dict(model.named_modules())
    cap = Capture(names, set(stop_at) if stop_at is not None else None, trace=trace, attach=attach)
    handles = []
    try:
        for name in names:
            module, is_input = _split_input(name)
            if is_input:
                handles.append(modules[module].register_forward_pre_hook(cap._pre_hook(name), with_kwargs=True))
            else:
                handles.append(modules[name].register_forward_hook(cap._hook(name)))
        yield cap
    finally:
        for h in handles:
            h.remove()


# Built from objects, not string annotations, so that documentation tools can read its fields.
LayerInfo = NamedTuple("LayerInfo", [("name", str), ("shape", tuple[int, ...]),  # noqa: UP014
                                     ("layout", Optional[Layout]), ("weighted", bool)])  # noqa: UP045
LayerInfo.__doc__ = """A hookable layer: its dotted name, the output shape for one input, its layout
(``None`` for shapes that have none), and whether it has parameters of its own."""


_AUTOCAST = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def autocast_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """``None``/``"float32"`` (off), or the lower-precision dtype for :func:`torch.autocast`."""
    if value is None or value in ("float32", "fp32", torch.float32):
        return None
    if isinstance(value, torch.dtype) and value in (torch.bfloat16, torch.float16):
        return value
    if isinstance(value, str) and value.lower() in _AUTOCAST:
        return _AUTOCAST[value.lower()]
    raise ValueError(f"autocast must be None, 'bfloat16' or 'float16'; got {value!r}")


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` runs through ``torch.compile`` (``model.compile()`` or ``torch.compile(model)``)."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        return True
    return type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class ModelRunner:
    """The one way accentuate runs a model.

    Args:
        model: the user's model; left as found on every path (mode, ``requires_grad``).
        spec: its :class:`~accentuate.spec.ModelSpec` (preprocessing, logits, input size,
            layout overrides).
        channels_last: feed 4-d input in ``channels_last`` memory format (faster for
            conv nets on CPU).
        autocast: ``None`` (float32), ``"bfloat16"`` or ``"float16"``: the model runs under
            :func:`torch.autocast`; captured tensors come back as float32.

    Example:
        >>> from accentuate.spec import ModelSpec
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
        >>> run = ModelRunner(net, ModelSpec(input_size=(8, 8), normalize=None))
        >>> acts = run(torch.rand(2, 3, 8, 8), ["0"])
        >>> sorted(acts), tuple(acts["0"].shape)
        (['0', '@output'], (2, 4, 6, 6))
        >>> run.layouts(["0"])["0"]
        Layout('nchw', channels=4, grid=(6, 6))
    """

    def __init__(self, model: nn.Module, spec: ModelSpec, *, channels_last: bool = False,
                 autocast: str | torch.dtype | None = None) -> None:
        self.model, self.spec = model, spec
        self.device = model_device(model)
        self.channels_last = channels_last
        self.autocast = autocast_dtype(autocast)
        self._depth = 0
        #: What one pass teaches about the model (its traced layers), shared by the runners
        #: :meth:`configured` makes from this one, so a command traces its model once.
        self._cache: dict[str, list[LayerInfo]] = {}

    @classmethod
    def reuse(cls, runner: ModelRunner | None, model: nn.Module, spec: ModelSpec) -> ModelRunner:
        """``runner`` when it runs ``model`` with ``spec`` (the caller's, with what it has traced),
        else a new runner for them.

        Raises:
            ValueError: ``runner`` runs another model.
        """
        if runner is None:
            return cls(model, spec)
        if runner.model is not model:
            raise ValueError("the runner given runs another model; pass the runner made for this model "
                             "(ModelRunner(model, spec)) or none")
        return runner if runner.spec is spec or runner.spec == spec else cls(model, spec)

    def configured(self, *, channels_last: bool = False, autocast: str | torch.dtype | None = None) -> ModelRunner:
        """This runner fed as asked (memory format, autocast), sharing what it has traced."""
        if channels_last == self.channels_last and autocast_dtype(autocast) == self.autocast:
            return self
        other = ModelRunner(self.model, self.spec, channels_last=channels_last, autocast=autocast)
        other._cache = self._cache
        return other

    # -- state --------------------------------------------------------------------------------
    @contextmanager
    def state(self) -> Iterator[None]:
        """Eval mode and frozen parameters for the block (nested blocks share the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with model_state(self.model):
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the model is fed (``channels_last`` if asked)."""
        fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def _wrap(self, e: Exception) -> ModelError:
        """The model's own exception as one line (with a hint when the input size was assumed)."""
        return forward_error(e, self.spec)

    # -- one pass -------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, layers: Iterable[str] = (), *, logits: bool = True,
                 stop_at: Sequence[str] | None = None, attach: bool = False) -> dict[str, torch.Tensor]:
        """Run ``x`` (``(B, 3, h, w)`` in [0, 1] at the model's input size) once.

        Args:
            layers: dotted names to capture (:data:`OUTPUT` is the logits).
            logits: also return the logits as ``acts[OUTPUT]`` (ignored with ``stop_at``).
            stop_at: end the pass once these layers ran (no logits then).
            attach: return the layers' own outputs, so that ``torch.autograd.grad`` of a value
                computed from the pass is taken with respect to them (see :func:`capture`).

        Returns:
            ``{name: tensor}``, float32; autograd follows ``x`` when it is enabled.

        Raises:
            LayerError: a layer is not in the model or never ran.
            ModelError: the model raised inside its forward pass (the cause is chained).
        """
        wanted = list(layers)
        names = [n for n in dict.fromkeys(wanted) if n != OUTPUT]
        amp = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
               else contextlib.nullcontext())
        with self.state(), capture(self.model, names, stop_at=stop_at, attach=attach) as cap, amp:
            x = self.memory_format(self.spec.preprocess(self.memory_format(x)))
            try:
                if stop_at is None:
                    out = self.model(x)
                    result = self.spec.logits(out) if logits or OUTPUT in wanted else None
                else:
                    cap.run(self.model, x)
                    result = None
            except (ModelError, LayerError, KeyboardInterrupt):
                raise
            except Exception as e:  # the user's model failed inside its forward
                raise self._wrap(e) from e
            missing = cap.missing()
            if missing:
                if is_compiled(self.model):
                    raise LayerError(
                        f"layer {missing[0]!r} never ran as far as its hook can tell: the model is compiled "
                        "(torch.compile), and a compiled graph does not see forward hooks added after it was "
                        "compiled (torch._dynamo.config.skip_nnmodule_hook_guards); accentuate the model "
                        "before compiling it, or set that option to False before the model's first call")
                cap[missing[0]]  # raises LayerError: never ran
            acts = dict(cap.outputs)
        if result is not None:
            acts[OUTPUT] = result
        if self.autocast is not None:
            acts = {k: v.float() if v.is_floating_point() else v for k, v in acts.items()}
        return acts

    @torch.no_grad()
    def activations(self, images: torch.Tensor, layers: Sequence[str], *, batch: int = 16,
                    reduce: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
                    stop_at: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The named layers' outputs for many images, ``batch`` at a time, without autograd.

        Args:
            images: ``(N, 3, h, w)`` in [0, 1] at the model's input size (any device).
            layers: dotted names; :data:`OUTPUT` is the logits.
            reduce: ``reduce(name, tensor)`` applied to each captured batch before it is
                kept (e.g. pooling, to save memory).
            stop_at: end each pass once these layers ran (no logits then).

        Returns:
            ``{name: (N, ...)}`` on the CPU, float32.
        """
        out: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        with self.state():
            for start in range(0, images.shape[0], batch):
                x = images[start : start + batch].to(self.device, torch.float32)
                acts = self(x, layers, logits=OUTPUT in layers, stop_at=stop_at)
                for n in layers:
                    t = acts[n].float()
                    out[n].append((reduce(n, t) if reduce is not None else t).cpu())
        return {n: torch.cat(v) for n, v in out.items()}

    # -- the model's layers -------------------------------------------------------------------------
    def trace(self, example: torch.Tensor | None = None) -> list[LayerInfo]:
        """Every hookable layer in the order its output completes, with shape and layout.

        One pass on ``example`` (default: zeros of the model's input size), in eval mode
        without autograd; cached when no example is given. Layers that did not run are
        left out; a layer run twice is listed once, with its first shape.
        """
        cache = example is None
        if cache and "trace" in self._cache:
            return self._cache["trace"]
        if example is None:
            p = next(self.model.parameters(), None)
            dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
            example = torch.zeros((1, 3, *self.spec.input_size), device=self.device, dtype=dtype)
        modules = dict(self.model.named_modules())
        names = [n for n in modules if n]
        with self.state(), torch.no_grad(), capture(self.model, names, trace=True) as cap:
            try:
                self.model(self.spec.preprocess(example))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # the user's model failed inside its forward
                raise self._wrap(e) from e
        seen: dict[str, LayerInfo] = {}
        for name, shape in cap.events:
            if name not in seen:
                weighted = any(True for _ in modules[name].parameters(recurse=False))
                seen[name] = LayerInfo(name, shape, self._layout_of(name, shape), weighted)
        rows = list(seen.values())
        if cache:
            self._cache["trace"] = rows
        return rows

    def _layout_of(self, name: str, shape: tuple[int, ...]) -> Layout | None:
        override = self.spec.layouts.get(name)
        if override is not None:
            return parse_layout(override, shape)
        return infer_layout(shape, self.spec.input_size, self.spec.patch_size)

    def layouts(self, names: Iterable[str], shapes: Mapping[str, tuple[int, ...]] | None = None
                ) -> dict[str, Layout]:
        """The layout of each named layer (:data:`OUTPUT` included), from ``shapes`` when given,
        else from one traced pass.

        Raises:
            LayerError: a layer is not in the model or never runs.
            ValueError: a layer whose shape has no layout (pass ``layouts=`` for it).
        """
        names = list(dict.fromkeys(names))
        if shapes is None:
            check_layers(self.model, names)
            known = {r.name: r.shape for r in self.trace()}
            inputs = [n for n in names if n.endswith(INPUT)]
            if inputs:  # module inputs are not traced: one pass reads their shapes
                with torch.no_grad():
                    acts = self(torch.zeros((1, 3, *self.spec.input_size), device=self.device), inputs,
                                logits=False)
                known.update({n: tuple(acts[n].shape) for n in inputs})
            if OUTPUT in names:
                known[OUTPUT] = tuple(self(torch.zeros((1, 3, *self.spec.input_size), device=self.device),
                                           logits=True)[OUTPUT].shape)
            shapes = known
        out: dict[str, Layout] = {}
        for n in names:
            if n not in shapes:
                raise LayerError(
                    f"layer {n!r} never runs in the model's forward pass; pick one `accentuate layers` lists"
                )
            lay = self._layout_of(n, tuple(shapes[n])) if n != OUTPUT else infer_layout(
                tuple(shapes[n]), self.spec.input_size)
            if lay is None:
                raise ValueError(
                    f"layer {n!r} has output shape {tuple(shapes[n])}, which accentuate cannot read as "
                    "channels and positions; pass layouts={name: 'nchw' | 'nhwc' | 'tokens:PREFIX:HxW'}"
                )
            out[n] = lay
        return out

    def default_reg_layer(self) -> str | None:
        """The regularization layer when neither the call nor the spec names one.

        Rule: walk the modules in the order their outputs complete (the pass of :meth:`trace`).
        Among modules with spatial output (a layout with more than one position), take the
        outermost one that completes once a third of the model's weighted layers (modules
        with their own parameters) have run. When that is a token layer inside a block of
        a transformer (a module in a ``ModuleList`` or ``nn.Sequential`` of like blocks,
        such as ``encoder.layer.3`` or ``blocks.3``), take the block: its output is the residual
        stream, which the calibration compared (``benchmarks/CALIBRATION.md``). ``None`` if
        no layer is spatial.
        """
        if self.spec.reg_layer is not None:
            return self.spec.reg_layer
        events: list[tuple[str, Layout | None, int]] = []  # (name, layout, weighted layers run so far)
        count = 0
        for row in self.trace():
            count += row.weighted
            events.append((row.name, row.layout, count))
        spatial = [(n, c) for n, lay, c in events if lay is not None and lay.spatial]
        if not spatial:
            return None
        threshold = count / 3
        chosen = next(((n, c) for n, c in spatial if c >= threshold), spatial[-1])
        # Outermost module completing at the same point: the shortest name among same-count events.
        same = [n for n, c in spatial if c == chosen[1] and chosen[0].startswith(n + ".")]
        name = min(same, key=len) if same else chosen[0]
        layouts = {n: lay for n, lay, _ in events}
        if getattr(layouts.get(name), "kind", None) == "tokens":
            block = self._enclosing_block(name)
            if block is not None and getattr(layouts.get(block), "kind", None) == "tokens":
                return block
        return name

    def _enclosing_block(self, name: str) -> str | None:
        """The innermost module containing (or being) ``name`` that is one block of a stack:
        a module with submodules, in a ``ModuleList`` or ``nn.Sequential`` holding another of
        its class (``encoder.layer.3``, ``blocks.3``; not a layer of an MLP's ``Sequential``,
        nor the backbone of a wrapper ``Sequential(backbone, head)``), or ``None``."""
        from torch import nn

        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if not parts[i - 1].isdigit():
                continue
            parent = ".".join(parts[: i - 1])
            container = self.model.get_submodule(parent) if parent else self.model
            if not isinstance(container, (nn.ModuleList, nn.Sequential)):
                continue
            element = container[int(parts[i - 1])]
            has_children = next(element.children(), None) is not None
            if has_children and sum(type(m) is type(element) for m in container) >= 2:
                return ".".join(parts[:i])
        return None


def layers(
    model: nn.Module,
    input_size: tuple[int, int] | int | None = None,
    example: torch.Tensor | None = None,
    **spec_overrides: Any,
) -> list[LayerInfo]:
    """List hookable layers with the output shape and layout each has for an example input.

    Args:
        model: any module; left as found (its mode, flags and BatchNorm statistics: the
            pass runs in eval mode without autograd).
        input_size: ``(h, w)`` of the example input; default: the model spec's, else the size
            it declares (:func:`accentuate.spec.declared`), else 224.
        example: an explicit example batch in [0, 1] instead of zeros of ``input_size``.
        spec_overrides: ``normalize=``, ``layouts=``, ... as for :func:`accentuate.spec.resolve_spec`.

    Returns:
        ``[LayerInfo(name, shape, layout, weighted), ...]`` in the order outputs complete;
        layers that did not run are omitted. ``layout`` is ``None`` for shapes that have
        none (e.g. 5-d).

    Raises:
        ModelError: the model raised inside its forward pass (the cause is chained).
    """
    import warnings

    from .spec import resolve_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shapes do not depend on the assumed normalization
        spec = resolve_spec(model, input_size=input_size, **spec_overrides)
    return ModelRunner(model, spec).trace(example)


def default_reg_layer(model: nn.Module, spec: ModelSpec) -> str | None:
    """The regularization layer used when neither the call nor the spec names one.

    Rule: run the model once on a zero input and walk the modules in the order their
    outputs complete. Among modules with spatial output (a layout with more than one
    position: conv maps, channels-last stages, token grids), take the outermost one
    that completes once a third of the model's weighted layers (modules with their own
    parameters) have run. Returns ``None`` if the model has no spatial layer. (See
    :meth:`ModelRunner.default_reg_layer`.)
    """
    return ModelRunner(model, spec).default_reg_layer()

"""Capture of layer outputs by their ``named_modules()`` dotted path.

:func:`capture` is a context manager that registers forward hooks on the named
layers and removes exactly those hooks in ``finally`` (user hooks are never
touched). Captured outputs are cloned, so a later in-place operation (an in-place
ReLU, a residual ``+=``) cannot change what was read. With ``stop_at`` the forward
pass is cut short once every requested layer has run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .errors import LayerError
from .spec import forward_error, spec_of

__all__ = ["Capture", "OUTPUT", "capture", "check_layers", "first_tensor", "layers"]

#: Pseudo layer name for the model's (extracted) output, read by logit objectives.
OUTPUT = "@output"


def first_tensor(value: object) -> torch.Tensor | None:
    """The tensor a layer produced: itself, or the first tensor inside a tuple/list/dict."""
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
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f"closest: {', '.join(close)}" if close else "no similar names"
            raise LayerError(
                f"layer {name!r} is not in the model ({hint}); "
                "list valid names with accentuate.layers(model) or `accentuate layers`"
            )


class _Stop(Exception):
    """Raised inside a hook to end a forward pass early."""


class Capture:
    """Outputs captured during a forward pass: ``capture[name]`` is a tensor."""

    def __init__(self, names: list[str], stop_at: set[str] | None) -> None:
        self.names = names
        self.outputs: dict[str, torch.Tensor] = {}
        self._stop_at = stop_at

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

    def _hook(self, name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            t = first_tensor(output)
            if t is None:
                return
            # Clone: a later in-place op on this tensor must not change what we read.
            self.outputs[name] = t.clone()
            if self._stop_at is not None and self._stop_at.issubset(self.outputs):
                raise _Stop

        return hook


@contextmanager
def capture(
    model: nn.Module, names: Iterable[str], stop_at: Iterable[str] | None = None
) -> Iterator[Capture]:
    """Hook the named layers of ``model`` for the duration of the block.

    Args:
        model: any module.
        names: dotted ``named_modules()`` paths (``OUTPUT`` is ignored here).
        stop_at: if given, :meth:`Capture.run` stops the forward pass as soon as all
            these layers have produced output (their later layers never run).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
        >>> with capture(net, ["0"]) as cap:
        ...     _ = cap.run(net, torch.randn(1, 3, 8, 8))
        >>> bool((cap["0"] < 0).any())  # the in-place ReLU did not touch our copy
        True
    """
    names = [n for n in dict.fromkeys(names) if n != OUTPUT]
    check_layers(model, names)
    modules = dict(model.named_modules())
    cap = Capture(names, set(stop_at) if stop_at is not None else None)
    handles = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(cap._hook(name)))
        yield cap
    finally:
        for h in handles:
            h.remove()


def layers(
    model: nn.Module,
    input_size: tuple[int, int] | int | None = None,
    example: torch.Tensor | None = None,
) -> list[tuple[str, tuple[int, ...]]]:
    """List hookable layers with the output shape each produces for an example input.

    Args:
        model: any module (left in the mode it was in).
        input_size: ``(h, w)`` of the example input; default: the model's spec, else the
            size it declares (:func:`accentuate.spec.declared`), else 224.
        example: an explicit example batch instead of zeros of ``input_size``.

    Returns:
        ``[(name, shape), ...]`` in execution order; layers that did not run are omitted.

    Raises:
        ModelError: the model raised inside its forward pass (the cause is chained).
    """
    spec = None
    if example is None:
        if input_size is None:
            spec = spec_of(model)  # its own, else what it declares (a Hugging Face or timm config), else 224
            input_size = spec.input_size
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        example = torch.zeros((1, 3, *input_size), device=device, dtype=dtype)
    order: list[tuple[str, tuple[int, ...]]] = []
    handles = []

    def make(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            t = first_tensor(output)
            if t is not None:
                order.append((name, tuple(t.shape)))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make(name)))
        with torch.no_grad():
            try:
                model(example)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # the user's model failed inside its forward
                raise forward_error(e, spec) from e
    finally:
        for h in handles:
            h.remove()
    seen: dict[str, tuple[int, ...]] = {}
    for name, shape in order:
        seen.setdefault(name, shape)
    return list(seen.items())

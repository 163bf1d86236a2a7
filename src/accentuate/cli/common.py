"""Pieces shared by the subcommands: options, model loading, targets, output folders.

Every subcommand module exposes ``register(subparsers)`` and sets
``func=run(args) -> int`` with ``set_defaults``. The helpers here give all of them
the same option names, the same validation and the same errors:

- :func:`add_model_options` (``--model``, ``--device``) and :func:`load_model_from_args`;
- :func:`add_accentuation_options` (``--reg-layer --lam --steps --lr --param --crops
  --crop-range --canvas --seed --until --out --quiet``) and :func:`accentuation_kwargs`,
  which turns them into keyword arguments of :func:`accentuate.accentuate`;
- :func:`parse_target` for ``goldfish``, ``1``, ``blocks.5:20`` and ``blocks.5:20@3,4``;
- :func:`output_dir` for ``--out`` (default: a fresh ``accentuate-runs/YYYYmmdd-HHMMSS``).

Mistakes in the input raise :class:`UsageError` (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ClassNameError, LayerError, UsageError
from ..hooks import check_layers
from ..objectives import Objective, channel, logit, neuron

__all__ = [
    "ArgumentParser",
    "DEFAULT_MODEL",
    "RUNS_DIR",
    "UsageError",
    "accentuation_kwargs",
    "add_accentuation_options",
    "add_global_options",
    "check_layers_run",
    "add_model_options",
    "load_model_from_args",
    "output_dir",
    "parse_canvas",
    "parse_target",
]

#: The model used when ``--model`` is not given.
DEFAULT_MODEL = "efficientnet_lite0"
#: Parent folder of the default output folders (relative to the working directory).
RUNS_DIR = "accentuate-runs"


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, raised as :class:`UsageError`.

    ``main()`` prints them as ``accentuate: error: ...`` and exits with status 2,
    like every other usage mistake (argparse's own handler prints the usage block and
    exits from inside the parser).
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def add_global_options(p: argparse.ArgumentParser, top: bool = False) -> None:
    """Add ``--quiet`` and ``--debug`` to ``p`` (once; safe to call again).

    On subcommands the defaults are suppressed so that ``accentuate --quiet run ...``
    and ``accentuate run ... --quiet`` both work.
    """
    default: Any = False if top else argparse.SUPPRESS
    have = p._option_string_actions  # noqa: SLF001 (argparse has no public way to ask)
    if "--quiet" not in have:
        p.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="no progress bars or messages, only errors and warnings")
    if "--debug" not in have:
        p.add_argument("--debug", action="store_true", default=default,
                       help="show the full traceback of an error")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Add ``--model`` and ``--device``."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="M",
        help=f"model to use (default: {DEFAULT_MODEL}, embedded); also torchvision:NAME, timm:NAME, "
        "hf:NAME when installed, or module:function for your own factory returning an nn.Module",
    )
    g.add_argument("--device", default="auto", metavar="DEV",
                   help="torch device: cpu, cuda, cuda:N, mps, or auto (default: cuda when available); under "
                   "torchrun, cuda is cuda:LOCAL_RANK")
    g.add_argument("--autocast", choices=("bfloat16", "float16"), default=None,
                   help="run the model under autocast in this dtype (default: float32)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="feed the model channels-last tensors (the default; --no-channels-last: contiguous NCHW)")


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer; got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer; got {text!r}")
        return v

    return parse


def _number(name: str, low: float, low_inclusive: bool):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number; got {text!r}") from None
        ok = v == v and v not in (float("inf"), float("-inf")) and (v >= low if low_inclusive else v > low)
        if not ok:
            rel = ">=" if low_inclusive else ">"
            raise argparse.ArgumentTypeError(f"{name} must be a finite number {rel} {low:g}; got {text!r}")
        return v

    return parse


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crop-range values must be numbers; got {text!r}") from None


def parse_canvas(text: str) -> int | tuple[int, int]:
    """``"512"`` (the long side; the seed's aspect ratio is kept) or ``"384x512"`` (H x W)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(
            f"--canvas must be the long side in pixels (512) or HxW (384x512); got {text!r}"
        )
    if m.group(2) is None:
        v = int(m.group(1))
        if v < 1:
            raise argparse.ArgumentTypeError(f"--canvas must be positive; got {text!r}")
        return v
    h, w = int(m.group(1)), int(m.group(2))
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"--canvas sides must be positive; got {text!r}")
    return (h, w)


def add_accentuation_options(p: argparse.ArgumentParser) -> None:
    """Add the settings of an accentuation, ``--out`` and ``--quiet``.

    Options left out fall back to the model's calibrated defaults (its spec), so
    their defaults here are ``None``; ``--seed`` defaults to 0 so that the same
    command gives the same pictures.
    """
    g = p.add_argument_group("accentuation settings (defaults: the model's calibrated ones)")
    g.add_argument("--reg-layer", metavar="LAYER",
                   help="layer kept close to the seed's activations; 'pixel' or 'none' also work")
    g.add_argument("--lam", type=_number("--lam", 0.0, True), metavar="L",
                   help="regularization weight (larger stays closer to the seed)")
    g.add_argument("--steps", type=_positive_int("--steps"), metavar="N", help="optimization steps")
    g.add_argument("--lr", type=_number("--lr", 0.0, False), metavar="LR", help="learning rate")
    from ..params import PARAMS

    g.add_argument("--param", choices=tuple(PARAMS), help="image parameterization")
    g.add_argument("--crops", type=_positive_int("--crops"), metavar="K",
                   help="augmented crops per step (default 16)")
    g.add_argument("--crop-range", nargs=2, type=_fraction, metavar=("MIN", "MAX"),
                   help="crop side as a fraction of the canvas's short side (default 0.05 0.99)")
    g.add_argument("--canvas", type=parse_canvas, metavar="PX",
                   help="canvas long side in pixels (aspect ratio kept), or HxW")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="random seed; the same seed gives the same result (default 0)")
    g.add_argument("--until", metavar="STOP",
                   help="least-change mode: stop each pair once its class is top1/topK, a rank, "
                   "or a probability like 0.5")
    g.add_argument("--out", metavar="DIR",
                   help=f"output folder (default: a new {RUNS_DIR}/YYYYmmdd-HHMMSS)")
    add_global_options(p)


def accentuation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Settings (fields of :class:`accentuate.settings.Settings`) from the parsed options.

    Options that were not given are left out (the model's defaults apply).
    ``progress``, ``snapshots`` and the like are the caller's to add.

    Raises:
        UsageError: a value argparse could not check alone (``--crop-range``, ``--until``).
    """
    kw: dict[str, Any] = {}
    for opt in ("reg_layer", "lam", "steps", "lr", "param", "crops", "canvas"):
        v = getattr(args, opt, None)
        if v is not None:
            kw[opt] = v
    cr = getattr(args, "crop_range", None)
    if cr is not None:
        lo, hi = cr
        if not (0 < lo <= hi <= 1):
            raise UsageError(
                f"--crop-range must satisfy 0 < MIN <= MAX <= 1; got {lo:g} {hi:g} "
                "(e.g. --crop-range 0.05 0.99)"
            )
        kw["crop_range"] = (float(lo), float(hi))
    until = getattr(args, "until", None)
    if until is not None:
        from ..settings import Until

        try:
            Until.parse(until)
        except ValueError as e:
            raise UsageError(f"--until: {e}") from None
        kw["until"] = until
    seed = getattr(args, "seed", None)
    if seed is not None:
        kw["seed"] = int(seed)
    if getattr(args, "autocast", None) is not None:
        kw["autocast"] = args.autocast
    if getattr(args, "channels_last", None) is not None:
        kw["channels_last"] = bool(args.channels_last)
    return kw


def _local_rank() -> int | None:
    """``LOCAL_RANK`` when torchrun started this process (several processes), else ``None``."""
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return None
    return None


def _device(name: str) -> torch.device:
    """The device ``--device`` names; ``cuda`` (and ``auto`` with CUDA) under torchrun is
    ``cuda:LOCAL_RANK``, so each process of a machine takes its own GPU."""
    local = _local_rank()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"--device {name!r} is not a torch device ({e}); use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name!r}: CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name!r}: MPS is not available here; use --device cpu")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local if local is not None else torch.cuda.current_device())
        count = torch.cuda.device_count()
        if dev.index >= count:
            why = f" (LOCAL_RANK {local})" if local is not None and name == "cuda" else ""
            raise UsageError(f"--device {str(dev)!r}{why}: this machine has {count} CUDA device(s); "
                             f"use cuda:0..cuda:{count - 1} or start at most {count} process(es) per machine")
        torch.cuda.set_device(dev)
    return dev


def load_model_from_args(args: argparse.Namespace) -> nn.Module:
    """Load ``--model`` on ``--device``.

    For a ``module:function`` factory, the working directory is importable (as for
    ``python -m``), so ``--model mymodels:build`` finds ``./mymodels.py``.
    """
    from ..models import load

    name = getattr(args, "model", None) or DEFAULT_MODEL
    device = _device(getattr(args, "device", "auto") or "auto")
    added = ":" in name and os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        return load(name, device=device)
    finally:
        if added and os.getcwd() in sys.path:
            sys.path.remove(os.getcwd())


_CHANNEL = re.compile(r"^(?P<layer>[^:@\s]+):(?P<c>-?\d+)(?:@(?P<y>-?\d+),(?P<x>-?\d+))?$")


_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def _layer_layouts(model: nn.Module) -> dict[str, Any]:
    """Layout of every layer for one input of the model's size (cached per model)."""
    if model not in _LAYOUTS:
        from ..hooks import layers

        _LAYOUTS[model] = {r.name: r.layout for r in layers(model)}
    return _LAYOUTS[model]


def check_layers_run(model: nn.Module, names: Sequence[str]) -> dict[str, Any]:
    """Check that every layer in ``names`` exists and runs in the forward pass; returns all layouts.

    Raises:
        LayerError: a name is not in the model (with the closest names), or the layer never
            runs in the model's forward pass.
        UsageError: the layer's output has no layout accentuate can read.
    """
    check_layers(model, list(names))
    layouts = _layer_layouts(model)
    for layer in names:
        if layer not in layouts:
            raise LayerError(
                f"layer {layer!r} never runs in the model's forward pass; pick one `accentuate layers` lists"
            )
        if layouts[layer] is None:
            raise UsageError(f"layer {layer!r} has an output accentuate cannot read as channels and positions; "
                             "pick another layer (`accentuate layers` shows each layout)")
    return layouts


def _labels(model: nn.Module):
    spec = getattr(model, "accentuate_spec", None)
    return None if spec is None else spec.labels


def parse_target(text: str, model: nn.Module) -> Objective:
    """A target from the command line, resolved against ``model``.

    Forms: a class name (``goldfish``, case-insensitive; ``"golden retriever"``), a
    class index (``1``), ``layer:channel`` (the channel's spatial mean), or
    ``layer:channel@y,x`` (one neuron).

    Raises:
        ClassNameError: unknown (with the closest names) or ambiguous class name, or an
            index out of range.
        LayerError: a layer not in the model (with the closest names).
        UsageError: an empty target or a negative channel or position.
    """
    t = str(text).strip()
    if not t:
        raise UsageError("empty target; give a class name, a class index, layer:channel or layer:channel@y,x")
    m = _CHANNEL.match(t)
    if m:
        layer, c = m.group("layer"), int(m.group("c"))
        layouts = check_layers_run(model, [layer])
        if c < 0:
            raise UsageError(f"target {t!r}: the channel must be >= 0")
        if m.group("y") is None:
            obj: Objective = channel(layer, c)
        else:
            y, x = int(m.group("y")), int(m.group("x"))
            if y < 0 or x < 0:
                raise UsageError(f"target {t!r}: the position y,x must be >= 0")
            obj = neuron(layer, c, y, x)
        obj.validate(layouts)  # channel and position in range
        return obj
    labels = _labels(model)
    if ("@" in t or ":" in t) and not (labels and t.lower() in (n.lower() for n in labels)):
        raise UsageError(
            f"cannot read target {t!r}; use a class name, a class index, layer:channel "
            "(e.g. blocks.5:20) or layer:channel@y,x (e.g. blocks.5:20@3,4)"
        )
    if re.fullmatch(r"-?\d+", t):
        idx = int(t)
        n = len(labels) if labels is not None else None
        if idx < 0 or (n is not None and idx >= n):
            raise ClassNameError(f"class index {idx} is out of range (0..{(n or 1) - 1})")
        return logit(idx).resolve(labels)
    if labels is None:
        raise ClassNameError(
            f"class name {t!r} given but the model has no class names; use a class index"
        )
    return logit(t).resolve(labels)


def output_dir(args: argparse.Namespace, create: bool = True) -> Path:
    """The output folder: ``--out``, or a new ``accentuate-runs/YYYYmmdd-HHMMSS``.

    The folder is created (with parents) and checked to be writable.

    Raises:
        UsageError: the folder cannot be created or written to, or ``--out`` is a file.
    """
    out = getattr(args, "out", None)
    if out:
        path = Path(out).expanduser()
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(RUNS_DIR) / stamp
        k = 2
        while path.exists():
            path = Path(RUNS_DIR) / f"{stamp}-{k}"
            k += 1
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a file, not a folder; choose another path")
    if not create:
        parent = path.absolute()
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(
                f"cannot write to output folder {str(path)!r} ({str(parent)!r} is not a writable folder); "
                "choose another --out"
            )
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(
            f"cannot write to output folder {str(path)!r} ({reason}); choose another --out"
        ) from None
    return path

"""Pieces shared by the subcommands: options, model loading, targets, output folders.

Every subcommand module exposes ``register(subparsers)`` and sets
``func=run(args) -> int`` with ``set_defaults``. The helpers here give all of them
the same option names, the same validation and the same errors:

- :func:`add_model_options` (``--model``, ``--device``) and :func:`load_model_from_args`;
- :func:`add_accentuation_options` (``--reg-layer --lam --steps --lr --param --crops
  --crop-range --canvas --seed --until --out --quiet``) and :func:`accentuation_kwargs`,
  which turns them into keyword arguments of :func:`accentuate.accentuate`;
- targets are read by the library's :func:`accentuate.objectives.parse_target` (``goldfish``,
  ``blocks.5:20@3,4``, ``layers.3:head=2``, ...), with the command's spec and runner;
- :func:`output_dir` for ``--out`` (default: a fresh ``accentuate-runs/YYYYmmdd-HHMMSS``).

Mistakes in the input raise :class:`UsageError` (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..runs.distributed import Ranks
from ..spec import ModelSpec

__all__ = [
    "ArgumentParser",
    "DEFAULT_MODEL",
    "RUNS_DIR",
    "UsageError",
    "accentuation_kwargs",
    "add_accentuation_options",
    "add_global_options",
    "add_model_options",
    "load_model_from_args",
    "load_timed",
    "model_in_argv",
    "make_output",
    "output_dir",
    "output_path",
    "parse_canvas",
    "show_model_defaults",
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
        "hf:NAME, clip:NAME or clip:FOLDER (CLIP's image branch) when installed, or module:function for "
        "your own factory returning an nn.Module",
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
    g = p.add_argument_group(_SETTINGS_TITLE.format(model=DEFAULT_MODEL))
    from ..params import PARAMS

    options: list[tuple[str, dict[str, Any], str]] = [
        ("--reg-layer", dict(metavar="LAYER"), "layer kept close to the seed's activations; 'pixel' or 'none' also work"),
        ("--lam", dict(type=_number("--lam", 0.0, True), metavar="L"),
         "regularization weight (larger stays closer to the seed)"),
        ("--steps", dict(type=_positive_int("--steps"), metavar="N"), "optimization steps"),
        ("--lr", dict(type=_number("--lr", 0.0, False), metavar="LR"), "learning rate"),
        ("--param", dict(choices=tuple(PARAMS)), "image parameterization"),
        ("--crops", dict(type=_positive_int("--crops"), metavar="K"), "augmented crops per step"),
        ("--crop-range", dict(nargs=2, type=_fraction, metavar=("MIN", "MAX")),
         "crop side as a fraction of the canvas's short side"),
        ("--canvas", dict(type=parse_canvas, metavar="PX"), "canvas long side in pixels (aspect ratio kept), or HxW"),
    ]
    for flag, kw, text in options:
        action = g.add_argument(flag, **kw)
        action.help_text = text  # type: ignore[attr-defined]  # the help without the default
    show_model_defaults(p, DEFAULT_MODEL)
    g.add_argument("--transforms", nargs="+", metavar="T",
                   help="jitter, scale and rotation of each crop on top of the crops, e.g. jitter:8 "
                   "scale:0.9,1.1 rotate:10 (default: none)")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="random seed; the same seed gives the same result (default 0)")
    g.add_argument("--until", metavar="STOP",
                   help="least-change mode: stop each pair once its class is top1/topK, a rank, "
                   "or a probability like 0.5")
    g.add_argument("--check-every", type=int, metavar="N",
                   help="with --until: check the stop rule every N steps (default 5; 2 with --preview)")
    from ..settings import PRESETS, Until

    quick = PRESETS["preview"]
    stop = str(dataclasses.replace(Until.parse(quick["until"]), classes_only=False))  # type: ignore[type-var]
    g.add_argument("--preview", action="store_true",
                   help=f"a quick first look: {quick['canvas']}-pixel canvas, {quick['crops']} crops, and when "
                   f"every target is a class stop at {stop} checked every {quick['check_every']} steps (options "
                   "given explicitly still win)")
    g.add_argument("--out", metavar="DIR",
                   help=f"output folder (default: a new {RUNS_DIR}/YYYYmmdd-HHMMSS)")
    add_global_options(p)


_SETTINGS_TITLE = "accentuation settings (defaults: the model's calibrated ones, shown for --model {model})"


def _model_defaults(model_arg: str) -> tuple[dict[str, Any], bool]:
    """The defaults of the settings for ``--model model_arg`` and whether they are its own: the
    spec of a built-in model's name (:func:`accentuate.models.spec_by_name`, no weights loaded),
    else the reference recipe's (the model's own spec, once loaded, may change them)."""
    from ..models import spec_by_name
    from ..spec import REFERENCE_DEFAULTS

    spec = spec_by_name(model_arg)
    if spec is None:
        return {**REFERENCE_DEFAULTS, "reg_layer": None}, False
    return {**{k: spec.setting(k) for k in REFERENCE_DEFAULTS}, "reg_layer": spec.reg_layer}, True


def show_model_defaults(parser: argparse.ArgumentParser, model_arg: str) -> None:
    """Write the defaults of ``--model model_arg`` into the help of the settings options (``run
    --model dinov2_vits14_focus --help`` shows DINOv2's 4 crops of 0.5-1.0, not the CNN's 16)."""
    values, own = _model_defaults(model_arg)
    for action in parser._actions:
        text = getattr(action, "help_text", None)
        if text is None:
            continue
        key = action.dest
        v = values.get(key)
        if key == "reg_layer":
            shown = v if v is not None else "chosen by the rule of accentuate.hooks.default_reg_layer"
        elif isinstance(v, (tuple, list)):
            shown = " ".join(f"{x:g}" for x in v)
        else:
            shown = f"{v:g}" if isinstance(v, float) else str(v)
        action.help = f"{text} (default for {model_arg}: {shown})" if own else \
            f"{text} (default: the model's spec, else {shown})"
    for group in parser._action_groups:
        if group.title and group.title.startswith("accentuation settings"):
            group.title = _SETTINGS_TITLE.format(model=model_arg) if own else (
                f"accentuation settings (defaults: the spec of --model {model_arg} once loaded, else these)")


def model_in_argv(argv: Sequence[str]) -> str:
    """The ``--model`` an argument list names (the last one given), else :data:`DEFAULT_MODEL`."""
    model = DEFAULT_MODEL
    for i, a in enumerate(argv):
        if a == "--model" and i + 1 < len(argv):
            model = argv[i + 1]
        elif a.startswith("--model="):
            model = a.split("=", 1)[1]
    return model


def accentuation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Settings (fields of :class:`accentuate.settings.Settings`) from the parsed options.

    Options that were not given are left out (the model's defaults apply).
    ``progress``, ``snapshots`` and the like are the caller's to add.

    Raises:
        UsageError: a value argparse could not check alone (``--crop-range``, ``--until``, ``--transforms``).
    """
    kw: dict[str, Any] = {}
    if getattr(args, "preview", False):
        from ..settings import PRESETS

        kw.update(PRESETS["preview"])
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
    every = getattr(args, "check_every", None)
    if every is not None:
        if every < 1:
            raise UsageError(f"--check-every must be a positive integer; got {every}")
        if "until" not in kw:
            raise UsageError("--check-every needs a stop rule; add --until (e.g. --until 0.9 --check-every 2)")
        kw["check_every"] = every
    transforms = getattr(args, "transforms", None)
    if transforms:
        from ..transforms import parse_transforms

        try:
            kw["transforms"] = parse_transforms(transforms)
        except ValueError as e:
            raise UsageError(f"--transforms: {e}") from None
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
    ranks = Ranks.from_env()
    return ranks.local_rank if ranks.distributed else None


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


def load_timed(args: argparse.Namespace) -> tuple[nn.Module, ModelSpec, float]:
    """``--model`` loaded (:func:`load_model_from_args`), its resolved spec, and the seconds loading took."""
    from ..spec import resolve_spec

    t0 = time.perf_counter()
    model = load_model_from_args(args)
    return model, resolve_spec(model), time.perf_counter() - t0


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


def output_path(args: argparse.Namespace) -> Path:
    """The output folder ``--out`` names, or a new ``accentuate-runs/YYYYmmdd-HHMMSS``, chosen
    once and checked to be creatable (it is made by :func:`make_output` once the input is checked).

    Raises:
        UsageError: ``--out`` is a file, or no folder can be made there.
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
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write to output folder {str(path)!r} ({str(parent)!r} is not a writable folder); "
            "choose another --out"
        )
    return path


def make_output(path: Path) -> Path:
    """Create the output folder ``path`` (with parents) and check that it can be written to.

    Raises:
        UsageError: the folder cannot be created or written to.
    """
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


def output_dir(args: argparse.Namespace, create: bool = True) -> Path:
    """The output folder (:func:`output_path`), created unless ``create`` is False.

    Raises:
        UsageError: the folder cannot be created or written to, or ``--out`` is a file.
    """
    path = output_path(args)
    return make_output(path) if create else path

"""Pieces shared by the subcommands: options, model loading, targets, output folders.

Every subcommand module exposes ``register(subparsers)`` and sets
``func=run(args) -> int`` with ``set_defaults``. The helpers here give all of them
the same option names, the same validation and the same errors:

- :func:`add_model_options` (``--model``, ``--device``) and :func:`load_model_from_args`;
- :func:`add_accentuation_options` (``--reg-layer --lam --steps --lr --param --crops
  --crop-range --canvas --seed --until --out --quiet``) and :func:`accentuation_kwargs`,
  which turns them into keyword arguments of :func:`accentuate.accentuate`;
- :func:`parse_target` for ``goldfish``, ``1``, ``blocks.5:20``, ``blocks.5:20@3,4``,
  ``layers.3:7@cls`` / ``@tok1`` and ``layers.3:head=2`` / ``layers.3:head=2:5``;
- :func:`output_dir` for ``--out`` (default: a fresh ``accentuate-runs/YYYYmmdd-HHMMSS``).

Mistakes in the input raise :class:`UsageError` (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ClassNameError, LayerError, UsageError
from ..hooks import ModelRunner, check_layers
from ..objectives import Objective, channel, direction, head, logit, neuron
from ..spec import ModelSpec
from .distributed import Ranks

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
    "load_timed",
    "model_in_argv",
    "make_output",
    "output_dir",
    "output_path",
    "parse_canvas",
    "parse_target",
    "read_vector",
    "runner_for",
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
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="random seed; the same seed gives the same result (default 0)")
    g.add_argument("--until", metavar="STOP",
                   help="least-change mode: stop each pair once its class is top1/topK, a rank, "
                   "or a probability like 0.5")
    from ..settings import PRESETS

    quick = PRESETS["preview"]
    g.add_argument("--preview", action="store_true",
                   help=f"a quick first look: {quick['canvas']}-pixel canvas, {quick['crops']} crops, and for "
                   f"class targets stop at {quick['until']} checked every {quick['check_every']} steps (options "
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
        UsageError: a value argparse could not check alone (``--crop-range``, ``--until``).
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


_CHANNEL = re.compile(
    r"^(?P<layer>[^:@=\s]+):(?:(?P<c>-?\d+)|head=(?P<h>-?\d+)(?::(?P<u>-?\d+))?)"
    r"(?:@(?:(?P<y>-?\d+),(?P<x>-?\d+)|(?P<cls>cls)|tok(?P<tok>-?\d+)))?$",
    re.IGNORECASE,
)
#: ``LAYER:FILE.npy`` or ``LAYER:FILE.pt``: a direction in the layer's channel space, read from a file.
_DIRECTION = re.compile(r"^(?P<layer>[^:@\s]+):(?P<path>.+\.(?:npy|pt|pth))$", re.IGNORECASE)
#: Direction files larger than this are refused before reading (a vector has one entry per channel).
_MAX_VECTOR_BYTES = 64 << 20

#: The target forms, for error messages.
TARGET_FORMS = ("a class name, a class index, LAYER:C (channel mean), LAYER:C@Y,X (neuron), LAYER:C@cls or "
                "LAYER:C@tokI (leading token), LAYER:head=H or LAYER:head=H:U (attention head), or "
                "LAYER:FILE.npy (a direction), or sae:PATH:UNIT@LAYER (a sparse autoencoder's latent)")


def runner_for(model: nn.Module, runner: ModelRunner | None = None) -> ModelRunner:
    """``runner`` (the command's, see :class:`~accentuate.cli.runner.Command`), else a runner for
    ``model`` with its spec as far as the model tells it (shapes do not depend on the assumed
    normalization, so its warning is not shown)."""
    if runner is not None:
        return ModelRunner.reuse(runner, model, runner.spec)
    import warnings

    from ..spec import resolve_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelRunner(model, resolve_spec(model))


def check_layers_run(model: nn.Module, names: Sequence[str], runner: ModelRunner | None = None) -> dict[str, Any]:
    """Check that every layer in ``names`` exists and runs in the forward pass; returns all layouts
    (from the one traced pass of ``runner``, see :func:`runner_for`).

    Raises:
        LayerError: a name is not in the model (with the closest names), or the layer never
            runs in the model's forward pass.
        UsageError: the layer's output has no layout accentuate can read.
    """
    check_layers(model, list(names))
    layouts = {r.name: r.layout for r in runner_for(model, runner).trace()}
    for layer in names:
        if layer not in layouts:
            raise LayerError(
                f"layer {layer!r} never runs in the model's forward pass; pick one `accentuate layers` lists"
            )
        if layouts[layer] is None:
            raise UsageError(f"layer {layer!r} has an output accentuate cannot read as channels and positions; "
                             "pick another layer (`accentuate layers` shows each layout)")
    return layouts


def _labels(model: nn.Module) -> tuple[str, ...] | None:
    from ..spec import spec_of

    return spec_of(model).labels  # its own spec's, else the class names the model declares


def read_vector(path: str | os.PathLike, target: str = "") -> torch.Tensor:
    """A 1-D float vector from a ``.npy`` file (NumPy, no pickles) or a ``.pt`` file (a tensor).

    Raises:
        UsageError: the file is missing, unreadable, not one vector (shape ``(C,)``, or
            ``(1, C)``), or has NaN, infinite or only zero entries; one line naming the file.
    """
    import numpy as np

    p = Path(path).expanduser()
    where = f"target {target!r}: " if target else ""
    if not p.is_file():
        raise UsageError(f"{where}direction file {str(p)!r} not found; give the path of a .npy or .pt vector "
                         "with one entry per channel of the layer")
    if p.stat().st_size > _MAX_VECTOR_BYTES:
        raise UsageError(f"{where}direction file {str(p)!r} is {p.stat().st_size:,} bytes; a vector of one "
                         "entry per channel is far smaller")
    try:
        if p.suffix.lower() == ".npy":
            v = torch.from_numpy(np.array(np.load(p, allow_pickle=False), dtype=np.float32))
        else:
            v = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any reading failure is one line)
        raise UsageError(f"{where}cannot read {str(p)!r} as a vector ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else 'unreadable'}); save it with "
                         "numpy.save or torch.save") from None
    if not isinstance(v, torch.Tensor):
        raise UsageError(f"{where}{str(p)!r} holds a {type(v).__name__}, not a tensor; torch.save the vector itself")
    if v.dim() == 2 and 1 in v.shape:
        v = v.flatten()
    if v.dim() != 1 or v.numel() == 0:
        raise UsageError(f"{where}{str(p)!r} holds an array of shape {tuple(v.shape)}; a direction is one vector "
                         "(C,) with an entry per channel")
    v = v.float()
    if not torch.isfinite(v).all():
        bad = int((~torch.isfinite(v)).sum())
        raise UsageError(f"{where}the vector in {str(p)!r} has {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}; "
                         "a direction must be finite")
    if float(v.abs().max()) == 0:
        raise UsageError(f"{where}the vector in {str(p)!r} is all zeros; a direction needs a non-zero vector")
    return v


def parse_target(text: str, model: nn.Module, runner: ModelRunner | None = None) -> Objective:
    """A target from the command line, resolved against ``model``.

    Forms: a class name (``goldfish``, case-insensitive; ``"golden retriever"``), a
    class index (``1``), ``layer:channel`` (the channel's mean over positions, the patch
    tokens of a token layer), ``layer:channel@y,x`` (one neuron), ``layer:channel@cls`` or
    ``layer:channel@tokI`` (channel of leading token 0 / I), ``layer:head=H`` or
    ``layer:head=H:U`` (attention head H's output RMS, or its unit U, over the patch tokens;
    ``layer`` is the attention output projection or a block containing one; ``@cls``,
    ``@tokI`` and ``@y,x`` apply too), or ``layer:FILE.npy`` / ``layer:FILE.pt`` (a
    direction: the dot product of the layer's activations with the unit vector read from
    the file, averaged over positions; see :func:`read_vector`), or ``sae:PATH:UNIT@LAYER``
    (latent UNIT of the SAE checkpoint at PATH, :func:`accentuate.objectives.parse_sae_target`).

    Raises:
        ClassNameError: unknown (with the closest names) or ambiguous class name, or an
            index out of range.
        LayerError: a layer not in the model (with the closest names).
        UsageError: an empty target, a channel, position, token, head or unit out of range
            (the message names the valid range), or a direction file that is missing,
            unreadable, of the wrong length or not finite.
    """
    t = str(text).strip()
    if not t:
        raise UsageError(f"empty target; give {TARGET_FORMS}")
    if t.lower().startswith("sae:"):  # an SAE latent: the grammar lives beside its objective
        from ..objectives.latent import parse_sae_target

        return parse_sae_target(t, model, runner)
    d = _DIRECTION.match(t)
    if d:
        layer = d.group("layer")
        vector = read_vector(d.group("path"), t)
        layouts = check_layers_run(model, [layer], runner)
        obj_d = direction(layer, vector)
        obj_d.source = Path(d.group("path")).name  # for labels and file names
        try:
            obj_d.validate(layouts)
        except ValueError as e:
            raise UsageError(f"target {t!r}: {e}; the vector needs one entry per channel "
                             f"(`accentuate layers` shows the layer's shape)") from None
        return obj_d
    m = _CHANNEL.match(t)
    if m:
        return _layer_target(t, m, model, runner)
    labels = _labels(model)
    if ("@" in t or ":" in t) and not (labels and t.lower() in (n.lower() for n in labels)):
        raise UsageError(
            f"cannot read target {t!r}; use {TARGET_FORMS}, e.g. blocks.5:20, blocks.5:20@3,4, "
            "layers.3:7@cls, layers.3:head=2, blocks.5:vector.npy"
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


def _layer_target(t: str, m: re.Match[str], model: nn.Module, runner: ModelRunner | None) -> Objective:
    """The objective of a ``LAYER:...`` target (see :func:`parse_target`), validated on the model."""
    layer = m.group("layer")
    token = 0 if m.group("cls") else (int(m.group("tok")) if m.group("tok") is not None else None)
    y = int(m.group("y")) if m.group("y") is not None else None
    x = int(m.group("x")) if m.group("x") is not None else None
    numbers = [("the channel", m.group("c")), ("the head", m.group("h")), ("the unit", m.group("u")),
               ("the token", m.group("tok")), ("the position y,x", m.group("y")), ("the position y,x", m.group("x"))]
    for what, v in numbers:
        if v is not None and int(v) < 0:
            raise UsageError(f"target {t!r}: {what} must be >= 0")
    try:
        if m.group("h") is not None:
            check_layers(model, [layer])
            obj: Objective = head(layer, int(m.group("h")), None if m.group("u") is None else int(m.group("u")),
                                  model=model, y=y, x=x, token=token)
            layouts = _input_layouts(model, obj.layers, runner)
        else:
            layouts = check_layers_run(model, [layer], runner)
            c = int(m.group("c"))
            if token is not None:
                obj = channel(layer, c, token=token)
            elif y is None:
                obj = channel(layer, c)
            else:
                obj = neuron(layer, c, y, x)
        obj.validate(layouts)  # channel, position, token, head and unit in range
    except (LayerError, UsageError):
        raise
    except ValueError as e:
        raise UsageError(f"target {t!r}: {e}") from None
    return obj


def _input_layouts(model: nn.Module, names: frozenset[str], runner: ModelRunner | None) -> dict[str, Any]:
    """Layouts of module inputs (``name@input``) for one input of the model's size."""
    return runner_for(model, runner).layouts(sorted(names))


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

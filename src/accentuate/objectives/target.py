"""From text to an objective: the target grammar of the command line, manifests and studies.

:func:`parse_target` reads what a user types (``goldfish``, ``207``, ``blocks.5:20``,
``blocks.5:20@3,4``, ``layers.3:7@cls``, ``layers.3:head=2:5``, ``blocks.5:vector.npy``,
``sae:runs/sae-b10:12@blocks.10``) and
returns the objective, checked against the model: a class name is looked up among the model's
class names (the closest ones named when it is unknown), a layer must exist and run, and a
channel, position, token, head, unit or vector length must fit the layer (a sparse autoencoder's
width too). The command line,
the manifest reader (:mod:`accentuate.runs.manifest`) and the study kit read targets here; in
Python, :func:`accentuate.accentuate` takes these strings as targets too.

Example:
    >>> from torch import nn
    >>> from accentuate.spec import ModelSpec
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    >>> spec = ModelSpec(input_size=(16, 16), normalize=None, labels=("cat", "dog"))
    >>> parse_target("dog", net, spec), parse_target("0:5", net, spec), parse_target("1:3@2,4", net, spec)
    (Logit(1 'dog'), Channel(0, 5), Neuron(1, 3, y=2, x=4))
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ClassNameError, LayerError, TargetError
from ..hooks import ModelRunner, check_layers, readable_layouts
from ..spec import ModelSpec, spec_of
from .base import Objective
from .basic import channel, direction, logit, neuron
from .heads import head
from .latent import SAELatent, encoder_name

__all__ = ["SAE_TARGET", "TARGET_FORMS", "as_objective", "parse_sae_target", "parse_target", "read_vector"]

_CHANNEL = re.compile(
    r"^(?P<layer>[^:@=\s]+):(?:(?P<c>-?\d+)|head=(?P<h>-?\d+)(?::(?P<u>-?\d+))?)"
    r"(?:@(?:(?P<y>-?\d+),(?P<x>-?\d+)|(?P<cls>cls)|tok(?P<tok>-?\d+)))?$",
    re.IGNORECASE,
)
#: ``LAYER:FILE.npy`` or ``LAYER:FILE.pt``: a direction in the layer's channel space, read from a file.
_DIRECTION = re.compile(r"^(?P<layer>[^:@\s]+):(?P<path>.+\.(?:npy|pt|pth))$", re.IGNORECASE)
#: ``sae:PATH:UNIT@LAYER``: a sparse autoencoder's latent (the layer may be left out when the
#: checkpoint's cfg.json names it).
SAE_TARGET = re.compile(r"^sae:(?P<path>.+):(?P<unit>-?\d+)(?:@(?P<layer>[^@\s]+))?$", re.IGNORECASE)
#: Direction files larger than this are refused before reading (a vector has one entry per channel).
_MAX_VECTOR_BYTES = 64 << 20

#: The target forms, for error messages.
TARGET_FORMS = ("a class name, a class index, LAYER:C (channel mean), LAYER:C@Y,X (neuron), LAYER:C@cls or "
                "LAYER:C@tokI (leading token), LAYER:head=H or LAYER:head=H:U (attention head), or "
                "LAYER:FILE.npy (a direction), or sae:PATH:UNIT@LAYER (a sparse autoencoder's latent)")


def read_vector(path: str | os.PathLike, target: str = "") -> torch.Tensor:
    """A 1-D float vector from a ``.npy`` file (NumPy, no pickles) or a ``.pt`` file (a tensor).

    Raises:
        TargetError: the file is missing, unreadable, not one vector (shape ``(C,)``, or
            ``(1, C)``), or has NaN, infinite or only zero entries; one line naming the file.
    """
    import numpy as np

    p = Path(path).expanduser()
    where = f"target {target!r}: " if target else ""
    if not p.is_file():
        raise TargetError(f"{where}direction file {str(p)!r} not found; give the path of a .npy or .pt vector "
                          "with one entry per channel of the layer")
    if p.stat().st_size > _MAX_VECTOR_BYTES:
        raise TargetError(f"{where}direction file {str(p)!r} is {p.stat().st_size:,} bytes; a vector of one "
                          "entry per channel is far smaller")
    try:
        if p.suffix.lower() == ".npy":
            v = torch.from_numpy(np.array(np.load(p, allow_pickle=False), dtype=np.float32))
        else:
            v = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any reading failure is one line)
        raise TargetError(f"{where}cannot read {str(p)!r} as a vector ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else 'unreadable'}); save it with "
                          "numpy.save or torch.save") from None
    if not isinstance(v, torch.Tensor):
        raise TargetError(f"{where}{str(p)!r} holds a {type(v).__name__}, not a tensor; torch.save the vector itself")
    if v.dim() == 2 and 1 in v.shape:
        v = v.flatten()
    if v.dim() != 1 or v.numel() == 0:
        raise TargetError(f"{where}{str(p)!r} holds an array of shape {tuple(v.shape)}; a direction is one vector "
                          "(C,) with an entry per channel")
    v = v.float()
    if not torch.isfinite(v).all():
        bad = int((~torch.isfinite(v)).sum())
        raise TargetError(f"{where}the vector in {str(p)!r} has {bad} NaN or infinite "
                          f"entr{'y' if bad == 1 else 'ies'}; a direction must be finite")
    if float(v.abs().max()) == 0:
        raise TargetError(f"{where}the vector in {str(p)!r} is all zeros; a direction needs a non-zero vector")
    return v


def parse_target(text: str, model: nn.Module, spec: ModelSpec | None = None,
                 runner: ModelRunner | None = None) -> Objective:
    """The objective ``text`` names, checked against ``model``.

    Forms: a class name (``goldfish``, case-insensitive; ``"golden retriever"``), a class index
    (``1``), ``layer:channel`` (the channel's mean over positions, the patch tokens of a token
    layer), ``layer:channel@y,x`` (one neuron), ``layer:channel@cls`` or ``layer:channel@tokI``
    (channel of leading token 0 / I), ``layer:head=H`` or ``layer:head=H:U`` (attention head H's
    output RMS, or its unit U, over the patch tokens; ``layer`` is the attention output projection or
    a block containing one; ``@cls``, ``@tokI`` and ``@y,x`` apply too), or ``layer:FILE.npy`` /
    ``layer:FILE.pt`` (a direction: the dot product of the layer's activations with the unit vector
    read from the file, averaged over positions; see :func:`read_vector`), or ``sae:PATH:UNIT@LAYER``
    (latent UNIT of the sparse autoencoder checkpoint at PATH, its mean code over the positions;
    see :func:`parse_sae_target`).

    Args:
        text: the target as typed.
        model: the model it is read against.
        spec: the model's spec (its class names); default: the model's own, as far as it tells.
        runner: a :class:`~accentuate.hooks.ModelRunner` of ``model`` whose traced pass is reused
            (a command reads many targets against one trace).

    Raises:
        ClassNameError: unknown (with the closest names) or ambiguous class name, or an index out
            of range.
        LayerError: a layer not in the model (with the closest names), one that never runs, or one
            whose output has no channels and positions.
        TargetError: an empty or unreadable target, a channel, position, token, head or unit out of
            range (the message names the valid range), or a direction file that is missing,
            unreadable, of the wrong length or not finite.
        CheckpointError: an SAE checkpoint that cannot be read or does not fit the layer.
    """
    t = str(text).strip()
    if not t:
        raise TargetError(f"empty target; give {TARGET_FORMS}")
    spec = spec if spec is not None else (runner.spec if runner is not None else spec_of(model))
    if t.lower().startswith("sae:"):
        return parse_sae_target(t, model, spec, runner)
    d = _DIRECTION.match(t)
    if d:
        return _direction_target(t, d, model, spec, runner)
    m = _CHANNEL.match(t)
    if m:
        return _layer_target(t, m, model, spec, runner)
    labels = spec.labels
    if ("@" in t or ":" in t) and not (labels and t.lower() in (n.lower() for n in labels)):
        raise TargetError(
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
        raise ClassNameError(f"class name {t!r} given but the model has no class names; use a class index")
    return logit(t).resolve(labels)


def _runner(model: nn.Module, spec: ModelSpec, runner: ModelRunner | None) -> ModelRunner:
    return ModelRunner.reuse(runner, model, runner.spec if runner is not None else spec)


def _direction_target(t: str, d: re.Match[str], model: nn.Module, spec: ModelSpec,
                      runner: ModelRunner | None) -> Objective:
    """The direction of a ``LAYER:FILE.npy`` target, its length checked on the layer."""
    layer = d.group("layer")
    vector = read_vector(d.group("path"), t)
    layouts = readable_layouts(_runner(model, spec, runner), [layer])
    obj = direction(layer, vector)
    obj.source = Path(d.group("path")).name  # for labels and file names
    try:
        obj.validate(layouts)
    except ValueError as e:
        raise TargetError(f"target {t!r}: {e}; the vector needs one entry per channel "
                          f"(`accentuate layers` shows the layer's shape)") from None
    return obj


def _layer_target(t: str, m: re.Match[str], model: nn.Module, spec: ModelSpec,
                  runner: ModelRunner | None) -> Objective:
    """The objective of a ``LAYER:...`` target (see :func:`parse_target`), validated on the model."""
    layer = m.group("layer")
    token = 0 if m.group("cls") else (int(m.group("tok")) if m.group("tok") is not None else None)
    y = int(m.group("y")) if m.group("y") is not None else None
    x = int(m.group("x")) if m.group("x") is not None else None
    numbers = [("the channel", m.group("c")), ("the head", m.group("h")), ("the unit", m.group("u")),
               ("the token", m.group("tok")), ("the position y,x", m.group("y")), ("the position y,x", m.group("x"))]
    for what, v in numbers:
        if v is not None and int(v) < 0:
            raise TargetError(f"target {t!r}: {what} must be >= 0")
    run = _runner(model, spec, runner)
    try:
        if m.group("h") is not None:
            check_layers(model, [layer])
            obj: Objective = head(layer, int(m.group("h")), None if m.group("u") is None else int(m.group("u")),
                                  model=model, y=y, x=x, token=token)
            layouts = run.layouts(sorted(obj.layers))  # the attention projection's input
        else:
            layouts = readable_layouts(run, [layer])
            c = int(m.group("c"))
            if token is not None:
                obj = channel(layer, c, token=token)
            elif y is None:
                obj = channel(layer, c)
            else:
                obj = neuron(layer, c, y, x)
        obj.validate(layouts)  # channel, position, token, head and unit in range
    except (LayerError, TargetError):
        raise
    except ValueError as e:
        raise TargetError(f"target {t!r}: {e}") from None
    return obj


def parse_sae_target(text: str, model: nn.Module, spec: ModelSpec | None = None,
                     runner: ModelRunner | None = None) -> SAELatent:
    """The target ``sae:PATH:UNIT@LAYER``: latent ``UNIT`` of the SAE checkpoint at ``PATH`` (a folder
    or weights file, :func:`~accentuate.sae.load_sae`) on ``LAYER``'s activations, averaged over the
    positions. Without ``@LAYER``, the layer the checkpoint's ``cfg.json`` names (``layer``, as
    :func:`accentuate.train_sae` writes it, or SAELens' ``hook_name``) is used.

    Raises:
        TargetError: the text is not of that form, names no layer, or the unit is out of range.
        CheckpointError: the checkpoint cannot be read or its width is not the layer's.
        LayerError: the layer is not in the model (with the closest names), never runs, or has no
            channels and positions.

    Example:
        >>> SAE_TARGET.match("sae:runs/sae-b10:1234@blocks.10").group("path", "unit", "layer")
        ('runs/sae-b10', '1234', 'blocks.10')
    """
    from ..sae import load_sae

    t = str(text).strip()
    m = SAE_TARGET.match(t)
    if not m:
        raise TargetError(f"cannot read target {t!r}; an SAE latent is sae:PATH:UNIT@LAYER, e.g. "
                          "sae:runs/sae-head:12@head")
    unit = int(m.group("unit"))
    if unit < 0:
        raise TargetError(f"target {t!r}: the latent must be >= 0")
    sae = load_sae(m.group("path"))
    layer = m.group("layer") or sae.config.get("layer") or sae.config.get("hook_name")
    if not layer:
        raise TargetError(f"target {t!r} names no layer and {sae.path} does not say which it was trained on; "
                          "write sae:PATH:UNIT@LAYER")
    layer = str(layer)
    spec = spec if spec is not None else (runner.spec if runner is not None else spec_of(model))
    lay = readable_layouts(_runner(model, spec, runner), [layer])[layer]
    if sae.d_in != lay.channels:
        raise CheckpointError(f"target {t!r}: the SAE {sae.path} reads {sae.d_in}-wide activations (d_in={sae.d_in}) "
                              f"but layer {layer!r} has {lay.channels} channels ({lay}); use an SAE trained on "
                              "that layer")
    if unit >= sae.d_sae:
        raise TargetError(f"target {t!r}: latent {unit} is out of range; {encoder_name(sae)} has {sae.d_sae} "
                          f"latents (0..{sae.d_sae - 1})")
    obj = SAELatent(layer, sae, unit)
    obj.validate({layer: lay})
    return obj

def as_objective(target: object, model: nn.Module | None = None, spec: ModelSpec | None = None, *,
                 runner: ModelRunner | None = None) -> Objective:
    """Turn a target into an objective: the one place every function that takes targets reads them.

    A target is an :class:`Objective`, a class index, or a string. With ``model`` (and its
    :class:`~accentuate.spec.ModelSpec` ``spec``, default the model's own), a string is read by
    the target grammar of the command line (:func:`~accentuate.objectives.parse_target`:
    ``"goldfish"``, ``"207"``, ``"blocks.5:20"``, ``"blocks.5:20@3,4"``, ``"layers.3:head=2"``,
    ``"blocks.5:vector.npy"``, ...) and checked against the model, and every objective comes back
    resolved (class names turned into indices). Without ``model``, a string is a class name,
    resolved later by :meth:`Objective.resolve`.

    Args:
        target: the target.
        model: the model the target is read against (optional).
        spec: the model's spec (its class names); default: the runner's, else the model's own.
        runner: a :class:`~accentuate.hooks.ModelRunner` of ``model`` whose traced pass is reused.

    Raises:
        TypeError: not a target.
        ClassNameError, LayerError, TargetError: (with ``model``) a string that does not name a
            class, layer, channel, ... of the model (see :func:`~accentuate.objectives.parse_target`).

    Example:
        >>> from torch import nn
        >>> from accentuate.spec import ModelSpec
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, 2))
        >>> spec = ModelSpec(input_size=(8, 8), normalize=None, labels=("cat", "dog"))
        >>> as_objective("0:5@2,3", net, spec), as_objective("dog", net, spec), as_objective(0, net, spec)
        (Neuron(0, 5, y=2, x=3), Logit(1 'dog'), Logit(0 'cat'))
    """
    if isinstance(target, bool) or not isinstance(target, (Objective, int, str)):
        raise TypeError(f"a target must be a class index, a target string (a class name, 'LAYER:C', "
                        f"'LAYER:C@Y,X', ...) or an Objective; got {type(target).__name__}")
    if model is None and spec is None and runner is None:
        if isinstance(target, Objective):
            return target
        return logit(target)
    if runner is not None and model is None:
        model = runner.model
    if spec is None and runner is not None:
        spec = runner.spec
    elif spec is None:
        assert model is not None  # with no model, spec or runner the target came back above
        spec = spec_of(model)
    if isinstance(target, str) and model is not None:
        return parse_target(target, model, spec, runner)
    obj = target if isinstance(target, Objective) else logit(target)
    return obj.resolve(spec.labels)

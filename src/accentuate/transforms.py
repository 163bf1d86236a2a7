"""Transforms on top of the paired crops: jitter, scale and rotation, sampled, then applied.

What Lucid and Lucent users expect of an augmentation pipeline, in the form of
:mod:`accentuate.augment` (Kornia's: the random values are drawn into a value first, then
applied): :func:`sample_transforms` draws, per crop, a shift, a scale factor and an angle from the
run's generator into a :class:`TransformParams`; :func:`apply_transforms` warps every crop with its
affine map (bilinear, reflection at the border). The engine applies the same value to the crops of
the images being optimized and to the crops of their seeds (the regularizer compares like with
like), and takes the objective's gradient at the crops before the warp, so the crop operator's
adjoint maps it, through the warp, onto the canvas pixels it came from (the opacity).

A transform is written as text, and so recorded in :class:`~accentuate.settings.Settings` (and
``run.json``):

- ``"jitter:D"``: shift each crop by up to ``D`` pixels of the model input along each axis
  (uniform in ``[-D, D]``);
- ``"scale:LO,HI"``: enlarge each crop's content about its centre by a factor uniform in
  ``[LO, HI]`` (below 1 shrinks it);
- ``"rotate:DEG"``: rotate each crop's content about its centre by an angle uniform in
  ``[-DEG, DEG]`` degrees.

The values are drawn in the order the transforms are listed, after the crops, from the same
generator: a run with the same ``seed`` draws the same values again (replayable), and a run without
transforms draws nothing more (the default pipeline is unchanged, bit for bit).

Example:
    >>> import torch
    >>> ts = parse_transforms(["rotate:10", "jitter:4", "scale:0.9,1.1"])
    >>> ts
    ('rotate:10', 'jitter:4', 'scale:0.9,1.1')
    >>> p = sample_transforms(ts, 3, (32, 32), generator=torch.Generator().manual_seed(0))
    >>> tuple(p.matrices.shape), sorted(p.values)
    ((3, 2, 3), ['angle', 'scale', 'shift'])
    >>> apply_transforms(torch.rand(6, 3, 32, 32), p).shape  # 2 images x 3 crops
    torch.Size([6, 3, 32, 32])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["TRANSFORMS", "TransformParams", "apply_transforms", "parse_transforms", "sample_transforms"]

#: The kinds of transform and how each is written.
TRANSFORMS = {"jitter": "jitter:D (pixels)", "scale": "scale:LO,HI (factors)", "rotate": "rotate:DEG (degrees)"}


def _parse(text: str) -> tuple[str, tuple[float, ...]]:
    """``(kind, values)`` of one transform's text, validated."""
    forms = ", ".join(TRANSFORMS.values())
    kind, _, rest = str(text).strip().lower().partition(":")
    if kind not in TRANSFORMS or not rest:
        raise ValueError(f"unknown transform {text!r}; write {forms}")
    try:
        values = tuple(float(v) for v in rest.split(","))
    except ValueError:
        raise ValueError(f"transform {text!r}: the values must be numbers ({TRANSFORMS[kind]})") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"transform {text!r}: the values must be finite")
    if kind in ("jitter", "rotate"):
        if len(values) != 1 or values[0] < 0:
            raise ValueError(f"transform {text!r}: write {TRANSFORMS[kind]}, one number >= 0")
        if kind == "rotate" and values[0] > 180:
            raise ValueError(f"transform {text!r}: the angle is at most 180 degrees")
    elif len(values) != 2 or not 0 < values[0] <= values[1]:
        raise ValueError(f"transform {text!r}: write scale:LO,HI with 0 < LO <= HI (e.g. scale:0.9,1.1)")
    return kind, values


def _text(kind: str, values: tuple[float, ...]) -> str:
    return f"{kind}:{','.join(f'{v:g}' for v in values)}"


def parse_transforms(transforms: str | Sequence[str] | None) -> tuple[str, ...]:
    """The transforms as their canonical texts (``"rotate:10"``), in order; each validated.

    Raises:
        ValueError: an unknown kind or bad values (one line, with the forms), or a kind given twice.
    """
    if transforms is None:
        return ()
    items = [transforms] if isinstance(transforms, str) else list(transforms)
    out, seen = [], set()
    for t in items:
        kind, values = _parse(t)
        if kind in seen:
            raise ValueError(f"transform {kind!r} is given twice; give each kind once")
        seen.add(kind)
        out.append(_text(kind, values))
    return tuple(out)


@dataclass(frozen=True)
class TransformParams:
    """The transforms of one step, drawn.

    Attributes:
        matrices: ``(K, 2, 3)`` for :func:`torch.nn.functional.affine_grid` (``align_corners=False``):
            per crop, where each output position samples its input, in normalized coordinates.
        values: what was drawn, per crop: ``shift`` ``(K, 2)`` (x, y pixels), ``scale`` ``(K,)``,
            ``angle`` ``(K,)`` (degrees); only the kinds asked for.
        size: ``(h, w)`` of the crops (the model's input size).
    """

    matrices: torch.Tensor
    values: dict[str, torch.Tensor]
    size: tuple[int, int]

    @property
    def k(self) -> int:
        return int(self.matrices.shape[0])


def sample_transforms(transforms: str | Sequence[str], k: int, size: tuple[int, int],
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> TransformParams:
    """Draw the transforms of ``k`` crops of ``size`` ``(h, w)`` from ``generator``, in the order given.

    Returns:
        A :class:`TransformParams` (the identity for an empty list, drawing nothing).
    """
    h, w = int(size[0]), int(size[1])
    shift = torch.zeros(k, 2, device=device)
    scale = torch.ones(k, device=device)
    angle = torch.zeros(k, device=device)
    values: dict[str, torch.Tensor] = {}
    for text in parse_transforms(transforms):
        kind, v = _parse(text)
        if kind == "jitter":
            shift = (torch.rand((k, 2), generator=generator, device=device) * 2 - 1) * v[0]
            values["shift"] = shift
        elif kind == "scale":
            scale = v[0] + (v[1] - v[0]) * torch.rand((k,), generator=generator, device=device)
            values["scale"] = scale
        else:
            angle = (torch.rand((k,), generator=generator, device=device) * 2 - 1) * v[0]
            values["angle"] = angle
    # The content moves by q -> s R(a) q + t (pixels, origin at the crop's centre), so an output
    # position p samples q = R(-a) (p - t) / s; in normalized coordinates n = D^-1 p, D = diag(w/2, h/2).
    a = angle.double() * math.pi / 180
    cos, sin = torch.cos(a), torch.sin(a)
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64, device=cos.device)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # R(-a)
    lin = rot * (half[None, None, :] / half[None, :, None]) / scale.double()[:, None, None]  # D^-1 R(-a) D / s
    trans = -(lin @ (shift.double() / half)[:, :, None])[..., 0]
    matrices = torch.cat([lin, trans[:, :, None]], dim=2).float()
    return TransformParams(matrices=matrices, values=values, size=(h, w))


def apply_transforms(x: torch.Tensor, params: TransformParams, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Warp crops ``x`` ``(B * K, C, h, w)`` (image-major: row ``b * K + k`` is crop ``k`` of image
    ``b``) with their transforms, then add ``noise`` ``(K, C, h, w)`` (the crops' pixel noise) if given.
    Differentiable in ``x``.
    """
    bk, c, h, w = x.shape
    k = params.k
    if bk % k:
        raise ValueError(f"expected a multiple of {k} crops; got {bk}")
    if (h, w) != tuple(params.size):
        raise ValueError(f"the transforms were drawn for {params.size} crops; these are {(h, w)}")
    theta = params.matrices.to(device=x.device, dtype=x.dtype).repeat(bk // k, 1, 1)
    grid = F.affine_grid(theta, [bk, c, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if noise is not None:
        out = (out.view(bk // k, k, c, h, w) + noise.to(out.dtype)).view(bk, c, h, w)
    return out

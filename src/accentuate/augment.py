"""Paired augmentation: sample random square crops and pixel noise, then apply them.

Sampling and applying are separate (as in Kornia): :func:`sample_crops` returns a
:class:`Crops` value holding the boxes and the noise, and :func:`apply_crops`
applies that value to any batch of canvases. The engine applies the same value to
the images being optimized and to their seeds, so the regularizer compares like
with like, and the opacity accumulator maps gradients back through the same boxes.

All crops of a step are resampled in one ``grid_sample`` call: the K crops are
stacked along the output height of one sampling grid, so no Python loop runs per
crop and the canvases are never copied K times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Crops", "apply_crops", "sample_crops"]


@dataclass(frozen=True)
class Crops:
    """Crop boxes and pixel noise of one step.

    Attributes:
        boxes: ``(K, 3)`` float tensor of ``(top, left, side)`` in canvas pixels.
        noise: ``(K, 3, h, w)`` additive pixel noise, or ``None``.
        canvas: ``(H, W)`` of the canvas the boxes were drawn for.
        out: ``(h, w)`` of each resized crop (the model's input size).
        supersample: samples per output pixel along each axis (antialiasing).
    """

    boxes: torch.Tensor
    noise: torch.Tensor | None
    canvas: tuple[int, int]
    out: tuple[int, int]
    supersample: int = 1

    @property
    def k(self) -> int:
        return int(self.boxes.shape[0])


def sample_crops(
    canvas: tuple[int, int],
    out: tuple[int, int],
    k: int = 16,
    crop_range: tuple[float, float] = (0.05, 0.99),
    noise_sd: float = 0.02,
    noise_uniform: float = 0.02,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    antialias: bool = True,
    max_supersample: int = 2,
) -> Crops:
    """Draw ``k`` square crops and their noise.

    The side of each crop is uniform in ``crop_range`` times the canvas's shorter
    side; its top-left corner is uniform over the positions where it fits. The
    noise is Gaussian (``noise_sd``) plus uniform of total width ``noise_uniform``,
    in [0, 1] pixel units.

    Args:
        canvas: ``(H, W)`` of the canvas.
        out: ``(h, w)`` each crop is resized to.
        k: number of crops.
        crop_range: ``(min, max)`` fractions of the shorter canvas side, in (0, 1].
        generator: source of all randomness (on ``device``).
        antialias: average ``supersample x supersample`` bilinear samples per output
            pixel, with ``supersample = ceil(largest side / output side)`` capped at
            ``max_supersample``.

    Returns:
        A :class:`Crops` value.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> c = sample_crops((64, 96), (32, 32), k=4, generator=g)
        >>> tuple(c.boxes.shape), tuple(c.noise.shape)
        ((4, 3), (4, 3, 32, 32))
    """
    lo, hi = crop_range
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"crop_range must satisfy 0 < min <= max <= 1; got ({lo}, {hi})")
    if k < 1:
        raise ValueError(f"crops must be at least 1; got {k}")
    h, w = canvas
    short = min(h, w)
    u = torch.rand((k, 3), generator=generator, device=device)
    side = (lo + (hi - lo) * u[:, 0]) * short
    top = u[:, 1] * (h - side)
    left = u[:, 2] * (w - side)
    boxes = torch.stack([top, left, side], dim=1)
    noise = None
    if noise_sd > 0 or noise_uniform > 0:
        shape = (k, 3, out[0], out[1])
        noise = noise_sd * torch.randn(shape, generator=generator, device=device)
        noise = noise + noise_uniform * (torch.rand(shape, generator=generator, device=device) - 0.5)
    ss = 1
    if antialias:
        ss = max(1, min(max_supersample, math.ceil(hi * short / min(out))))
    return Crops(boxes=boxes, noise=noise, canvas=(h, w), out=tuple(out), supersample=ss)  # type: ignore[arg-type]


def _grid(crops: Crops, dtype: torch.dtype) -> torch.Tensor:
    """Sampling grid ``(1, K*h*ss, w*ss, 2)`` in grid_sample's normalized coordinates."""
    H, W = crops.canvas
    oh, ow = crops.out
    ss = crops.supersample
    dev = crops.boxes.device
    boxes = crops.boxes.to(dtype)
    iy = (torch.arange(oh * ss, device=dev, dtype=dtype) + 0.5) / (oh * ss)
    ix = (torch.arange(ow * ss, device=dev, dtype=dtype) + 0.5) / (ow * ss)
    top, left, side = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3]
    gy = (top + iy[None, :] * side) / H * 2 - 1  # (K, oh*ss)
    gx = (left + ix[None, :] * side) / W * 2 - 1  # (K, ow*ss)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return grid.reshape(1, -1, ow * ss, 2)


def apply_crops(images: torch.Tensor, crops: Crops, add_noise: bool = True) -> torch.Tensor:
    """Apply crops (and noise) to a batch of canvases.

    Args:
        images: ``(B, C, H, W)`` canvases of the size the crops were drawn for.
        crops: the value from :func:`sample_crops`.
        add_noise: add the crops' pixel noise.

    Returns:
        ``(B * K, C, h, w)``, ordered image-major: row ``b * K + k`` is crop ``k`` of image ``b``.
    """
    b, c, h, w = images.shape
    if (h, w) != tuple(crops.canvas):
        raise ValueError(f"crops were drawn for a {crops.canvas} canvas; images are {(h, w)}")
    k, (oh, ow), ss = crops.k, crops.out, crops.supersample
    grid = _grid(crops, images.dtype).expand(b, -1, -1, -1)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.view(b, c, k, oh * ss, ow * ss).transpose(1, 2).reshape(b * k, c, oh * ss, ow * ss)
    if ss > 1:
        out = F.avg_pool2d(out, ss)
    if add_noise and crops.noise is not None:
        out = (out.view(b, k, c, oh, ow) + crops.noise.to(out.dtype)).view(b * k, c, oh, ow)
    return out

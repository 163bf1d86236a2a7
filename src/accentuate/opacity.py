"""Opacity: where in the image the target's gradient concentrated.

The engine accumulates ``|d target / d image|`` over the steps (the target alone,
not the regularizer). :func:`to_alpha` turns raw accumulations into alpha
channels: clip at a high percentile, divide by the maximum, blur. With
``collective=True`` the percentile and maximum are taken over the whole set, so
relevance compares between images (the paper's collective normalization).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur", "to_alpha"]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(..., H, W)`` with reflect padding."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:])
    pad_h, pad_w = min(radius, shape[-2] - 1), min(radius, shape[-1] - 1)
    y = F.pad(y, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w else "replicate")
    y = F.conv2d(y, kernel[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, pad_h, pad_h), mode="reflect" if pad_h else "replicate")
    y = F.conv2d(y, kernel[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1))
    return y.reshape(shape)


def to_alpha(
    masks: torch.Tensor,
    percentile: float = 99.0,
    sigma: float = 2.0,
    collective: bool = False,
) -> torch.Tensor:
    """Raw accumulated opacity ``(..., H, W)`` to alpha in [0, 1], same shape.

    Args:
        masks: raw accumulations (e.g. ``Result.masks``), non-negative.
        percentile: values above this percentile are clipped (outliers would
            otherwise make the rest invisible).
        sigma: Gaussian blur in canvas pixels.
        collective: normalize over all masks together instead of each on its own.
    """
    if masks.dim() < 2:
        raise ValueError(f"masks must be (..., H, W); got shape {tuple(masks.shape)}")
    x = masks.detach().float()
    flat = x.reshape(1, -1) if collective else x.reshape(-1, x.shape[-2] * x.shape[-1])
    q = torch.quantile(flat[:, :: max(1, flat.shape[1] // 1_000_000)], percentile / 100, dim=1)
    flat = torch.minimum(flat, q[:, None])
    top = flat.amax(dim=1, keepdim=True).clamp(min=1e-12)
    x = (flat / top).reshape(x.shape)
    x = gaussian_blur(x, sigma)
    if collective:
        return x / x.amax().clamp(min=1e-12)
    return x / x.reshape(-1, x.shape[-2] * x.shape[-1]).amax(1).clamp(min=1e-12).view(*x.shape[:-2], 1, 1)

"""Image distances used in run records, calibration and analyses."""

from __future__ import annotations

import torch

from .images import resize
from .opacity import gaussian_blur

__all__ = ["gray", "pixel_rmse", "ssim"]

_LUMA = (0.2125, 0.7154, 0.0721)  # Rec. 709, as skimage.color.rgb2gray


def gray(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` RGB in [0, 1] to ``(..., H, W)`` luminance."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * w).sum(dim=-3)


def ssim(a: torch.Tensor, b: torch.Tensor, size: int | None = 224, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity of grayscale versions of ``a`` and ``b``.

    Both are ``(..., 3, H, W)`` in [0, 1]; with ``size`` they are first resized to
    ``size x size`` (antialiased). Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
    data range 1, population covariances: the definition of Wang et al. (2004), as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False, data_range=1)`` computes it, averaged over the
    image less a 5-pixel border.

    Returns:
        ``(...)`` SSIM values in [-1, 1].
    """
    lead = a.shape[:-3]
    a = a.reshape(-1, *a.shape[-3:]).float()
    b = b.reshape(-1, *b.shape[-3:]).float()
    if size is not None:
        a, b = resize(a, (size, size)), resize(b, (size, size))
    x, y = gray(a), gray(b)
    c1, c2 = 0.01**2, 0.03**2
    blur = lambda t: gaussian_blur(t, sigma)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = 5  # skimage averages away from the borders, where the window is cut (its crop of (11-1)//2)
    return s[..., pad:-pad, pad:-pad].mean(dim=(-2, -1)).reshape(lead)


def pixel_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean square difference per image of ``(..., 3, H, W)`` tensors in [0, 1]."""
    return (a.float() - b.float()).pow(2).mean(dim=(-3, -2, -1)).sqrt()

"""Image distances used in run records, calibration and analyses."""

from __future__ import annotations

import torch

from .images import resize
from .opacity import gaussian_blur

__all__ = ["class_rank", "gray", "patch_grid_score", "pixel_rmse", "power_spectrum", "ssim"]

_LUMA = (0.2125, 0.7154, 0.0721)  # Rec. 709, as skimage.color.rgb2gray


def class_rank(logits: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank (1 = the model's top class) and softmax probability of class ``classes`` in ``logits``.

    Shape:
        logits ``(..., C)``, classes ``(...)`` (integer); both results ``(...)``.

    Example:
        >>> rank, prob = class_rank(torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([2]))
        >>> rank.tolist(), round(float(prob), 4)
        ([2], 0.2447)
    """
    c = classes.to(logits.device, torch.long)[..., None]
    rank = 1 + (logits > logits.gather(-1, c)).sum(dim=-1)
    return rank, logits.softmax(dim=-1).gather(-1, c)[..., 0]


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


def power_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Power spectrum of ``(..., C, H, W)`` images, summed over channels: ``(..., H, W)`` in
    float64, unshifted (bin ``(0, 0)`` is the mean). Per channel the mean is removed and a
    2-d Hann window applied first, so the image's edges add no spurious lines."""
    x = x.double()
    h, w = x.shape[-2:]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=x.dtype),
                      torch.hann_window(w, periodic=False, dtype=x.dtype))
    return torch.fft.fft2(x * win, dim=(-2, -1)).abs().pow(2).sum(dim=-3)


def patch_grid_score(change: torch.Tensor, cycles: float, limit: float | None = None, guard: int = 2,
                     width: int = 4) -> torch.Tensor:
    """How much a grid of period ``extent / cycles`` stands out in an image, in decibels.

    Meant for the change an accentuation made (``result - seed``): a vision transformer
    whose ``P``-pixel patches tile its ``S``-pixel input sees the whole image as
    ``cycles = S / P`` patches along each axis (on a non-square image too, since the
    whole view is the image resized to the square input), and a pattern repeated in
    every patch puts its energy at the lattice of frequencies ``(k, l) * cycles``.

    Method: the change's :func:`power_spectrum` (mean removed, Hann window, summed over
    channels). At each lattice point ``(k, l) * cycles`` other than
    the origin, with both coordinates at most ``limit`` cycles per extent, the peak (the
    largest bin of the 3 x 3 bins around it) is divided by the median of the same
    statistic at the bins ``guard + 1`` to ``guard + width`` away (a square ring), so that
    a spectrum without a grid scores about 0 dB. The score is ``10 log10`` of the mean of
    these ratios (a grid of lines puts its energy on the axes' points only, a pattern
    repeated in every patch on all of them).

    Args:
        change: ``(..., C, H, W)``, any range.
        cycles: grid periods per image extent (e.g. ``224 / 14 = 16``), on both axes.
        limit: the highest frequency considered, in cycles per extent (e.g. half the
            model's input size, the finest detail it sees in the whole view); default and
            at most the image's Nyquist frequency.
        guard, width: the ring around each lattice point the peak is compared with (bins).

    Returns:
        ``(...)`` scores in dB.

    Example:
        >>> y, x = torch.meshgrid(torch.arange(224.), torch.arange(224.), indexing="ij")
        >>> grid = ((x % 14 == 0) | (y % 14 == 0)).float()[None]
        >>> noise = torch.randn(1, 224, 224, generator=torch.Generator().manual_seed(0))
        >>> bool(abs(patch_grid_score(noise, 16)) < 1), bool(patch_grid_score(noise + grid, 16) > 5)
        (True, True)
    """
    import torch.nn.functional as F

    if cycles <= 0:
        raise ValueError(f"cycles must be > 0; got {cycles}")
    lead = change.shape[:-3]
    power = power_spectrum(change.reshape(-1, *change.shape[-3:]))  # (B, h, w), bins wrap around
    h, w = power.shape[-2:]
    local = F.max_pool2d(F.pad(power[:, None], (1, 1, 1, 1), mode="circular"), 3, 1)[:, 0]
    top = min(h // 2, w // 2) if limit is None else min(h // 2, w // 2, int(limit))
    reach = int((top - guard - width - 1) // cycles)
    if reach < 1:
        raise ValueError(f"an image of {h} x {w} pixels is too small to hold {cycles:g} grid periods and a harmonic")
    r = guard + width
    ring = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if max(abs(dy), abs(dx)) > guard]
    dy_t = torch.tensor([d[0] for d in ring], device=power.device)
    dx_t = torch.tensor([d[1] for d in ring], device=power.device)
    scores = []
    for k in range(-reach, reach + 1):
        for m in range(-reach, reach + 1):
            if k == 0 and m == 0:
                continue
            fy, fx = int(round(k * cycles)), int(round(m * cycles))
            near = local[:, (fy + dy_t) % h, (fx + dx_t) % w]
            ref = near.median(dim=-1).values.clamp_min(1e-300)
            scores.append(local[:, fy % h, fx % w] / ref)
    return (10 * torch.log10(torch.stack(scores, dim=-1).mean(dim=-1))).float().reshape(lead)

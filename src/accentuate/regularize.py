"""The "stay near the seed" term: distances between activations under the same crops.

The distance at one layer is the per-position L2 norm over channels (a norm, not
its square) of ``act(image) - act(seed)``, averaged over positions and crops, as
in the reference. ``PIXEL`` regularizes the crops themselves; ``NONE`` turns the
term off.

Balance: the term is weighted by ``lam * balance``, where ``balance`` is measured
once per accentuation as ``sum|d objective / d params| / sum|d distance / d params|``.
The reference measures it at step 0; there the image equals its seed, so the
distance is zero up to rounding and its gradient is rounding noise. We therefore
skip the term at step 0 (an objective-only step) and measure the balance at
step 1, the first step where the image differs from its seed.
"""

from __future__ import annotations

import torch

__all__ = ["NONE", "PIXEL", "distance"]

#: Regularize in pixel space (on the augmented crops).
PIXEL = "pixel"
#: No regularization.
NONE = "none"

_EPS = 1e-12


def distance(image: torch.Tensor, seed: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Distance of each accentuation to its own seed, averaged over crops and positions.

    Args:
        image: activations of the accentuations' crops, ``(N * M * K, *layer)``, ordered
            seed-major then target then crop.
        seed: activations of the seeds' crops, ``(N * K, *layer)``, the same crops.
        n, m: numbers of seeds and targets.

    Returns:
        ``(N, M)``: for accentuation ``(i, j)``, its mean distance to seed ``i``.

    Layer shapes: conv ``(C, H, W)`` (norm over C), tokens ``(T, D)`` (norm over D), or
    vectors ``(C,)``. The norm is smoothed by ``1e-12`` inside the square root so it
    has a (zero) gradient where the two are equal.
    """
    layer = tuple(image.shape[1:])
    k = seed.shape[0] // n
    diff = image.view(n, m, k, *layer) - seed.view(n, 1, k, *layer)
    axis = 3 if len(layer) == 3 else diff.dim() - 1
    d = (diff.pow(2).sum(dim=axis) + _EPS).sqrt()
    return d.reshape(n, m, -1).mean(dim=-1)

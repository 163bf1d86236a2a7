"""The "stay near the seed" term: distances between activations under the same crops.

A :class:`Regularizer` is a value: ``Regularizer.layer("blocks.4")`` keeps a layer's
activations near the seed's, ``Regularizer.pixel()`` the crops themselves, and
``Regularizer.none()`` turns the term off. :func:`regularizer` reads the forms users
type (a layer name, ``"pixel"``, ``"none"``).

The distance at one layer is the per-position L2 norm over channels (a norm, not
its square) of ``act(image) - act(seed)``, averaged over positions and crops, as
in the reference. Positions come from the layer's :class:`~accentuate.layout.Layout`;
in a token layer the leading tokens (class, registers) count as positions too, so
they are kept near the seed's like the patch tokens.

Balance: the term is weighted by ``lam * balance``, where ``balance`` is measured
once per accentuation as ``sum|d objective / d params| / sum|d distance / d params|``.
The reference measures it at step 0; there the image equals its seed, so the
distance is zero up to rounding and its gradient is rounding noise. We therefore
skip the term at step 0 (an objective-only step) and measure the balance at
step 1, the first step where the image differs from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import Layout

__all__ = ["Regularizer", "distance", "regularizer"]

_EPS = 1e-12


@dataclass(frozen=True)
class Regularizer:
    """What the distance to the seed is measured on.

    Attributes:
        kind: ``"layer"`` (a layer's activations), ``"pixel"`` (the crops) or ``"none"``.
        name: the layer's dotted name (``kind == "layer"`` only).
    """

    kind: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("layer", "pixel", "none"):
            raise ValueError(f"a regularizer is 'layer', 'pixel' or 'none'; got {self.kind!r}")
        if (self.kind == "layer") != bool(self.name):
            raise ValueError("a layer regularizer needs the layer's name (and only it has one)")

    @staticmethod
    def at(name: str) -> Regularizer:
        """Keep the activations of layer ``name`` near the seed's."""
        return Regularizer("layer", name)

    @staticmethod
    def pixel() -> Regularizer:
        """Keep the crops themselves near the seed's."""
        return Regularizer("pixel")

    @staticmethod
    def none() -> Regularizer:
        """No regularization."""
        return Regularizer("none")

    @property
    def active(self) -> bool:
        return self.kind != "none"

    @property
    def layers(self) -> frozenset[str]:
        """The layers the model must capture for this term."""
        return frozenset({self.name}) if self.name else frozenset()

    def __str__(self) -> str:
        """The form users type and records keep: the layer name, ``pixel`` or ``none``."""
        return self.name if self.name else self.kind

    def activations(self, acts: dict[str, torch.Tensor], crops: torch.Tensor) -> torch.Tensor:
        """What the distance is measured on for one batch: the layer's output or the crops."""
        return crops if self.kind == "pixel" else acts[str(self.name)]

    def distance(self, image: torch.Tensor, seed: torch.Tensor, n: int, m: int,
                 layout: Layout | None = None) -> torch.Tensor:
        """:func:`distance` of this term (``layout``: the layer's; the crops' is ``nchw``)."""
        if self.kind == "none":
            raise ValueError("Regularizer.none() has no distance")
        if layout is None:
            if self.kind == "layer":
                raise ValueError(f"the distance at layer {self.name!r} needs the layer's layout")
            layout = Layout("nchw", image.shape[1], (image.shape[2], image.shape[3]))
        return distance(image, seed, n, m, layout)


def regularizer(value: str | Regularizer | None) -> Regularizer:
    """A :class:`Regularizer` from a layer name, ``"pixel"``, ``"none"`` or ``None`` (none)."""
    if isinstance(value, Regularizer):
        return value
    if value is None:
        return Regularizer.none()
    text = str(value).strip()
    if not text:
        raise ValueError("reg_layer is empty; give a layer name, 'pixel' or 'none'")
    if text.lower() in ("none", "pixel"):
        return Regularizer(text.lower())
    return Regularizer.at(text)


def distance(image: torch.Tensor, seed: torch.Tensor, n: int, m: int, layout: Layout) -> torch.Tensor:
    """Distance of each accentuation to its own seed, averaged over crops and positions.

    Args:
        image: activations of the accentuations' crops, ``(N * M * K, *layer)``, ordered
            seed-major then target then crop.
        seed: activations of the seeds' crops, ``(N * K, *layer)``, the same crops.
        n, m: numbers of seeds and targets.
        layout: the layer's layout (where its channels are).

    Returns:
        ``(N, M)``: for accentuation ``(i, j)``, its mean distance to seed ``i``.

    The norm over the channels is smoothed by ``1e-12`` inside the square root so it
    has a (zero) gradient where the two are equal.
    """
    layer = tuple(image.shape[1:])
    k = seed.shape[0] // n
    diff = image.view(n, m, k, *layer) - seed.view(n, 1, k, *layer)
    d = layout.norms(diff.view(n * m * k, *layer), _EPS)
    return d.reshape(n, m, -1).mean(dim=-1)

"""Image parameterizations: ``pixel``, ``fourier`` and ``phase``.

Each parameterization is an :class:`torch.nn.Module` whose ``forward()`` takes no
input and returns a batch of images of shape ``(B, 3, H, W)`` with values in
``[0, 1]``. Each can be initialized exactly from a seed batch (the photo in is the
photo out, to float32 precision) or, without a seed, from noise (ordinary feature
visualization).

The pipeline shared by all three is::

    latent --(representation)--> z (decorrelated colour, logit-like units)
    z --(colour correlation)--> y --(to_unit)--> image in [0, 1]

``to_unit`` is the map from unbounded values to ``[0, 1]``. Plain ``sigmoid``
saturates on pure black or white pixels (its gradient is about ``1e-4`` at a seed
value of ``1e-4``), which freezes night skies and blown-out highlights. We use a
sigmoid stretched by a margin ``m`` and clipped, ``clip((1 + 2m) * sigmoid(y) - m,
0, 1)``, with a clip whose gradient still passes when it points back into range.
A seed value of 0 sits at ``sigmoid(y) = m / (1 + 2m)``, where the gradient is
still about ``0.1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "COLOR_CORRELATION",
    "FourierParam",
    "ImageParam",
    "PhaseParam",
    "PARAMS",
    "PixelParam",
    "from_unit",
    "make_param",
    "register_param",
    "to_unit",
]

#: Lucid's square root of the ImageNet colour covariance, normalized. Row ``j`` is the RGB
#: direction of decorrelated component ``j`` (luminance, then two colour-opponent axes).
COLOR_CORRELATION = torch.tensor(
    [[0.5628, 0.5845, 0.5845], [0.1948, 0.0, -0.1948], [0.0433, -0.1082, 0.0649]]
)
# rgb = _COLOR @ z: each component adds its row's RGB direction.
_COLOR = (COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=1).max()).T.contiguous()
_COLOR_INV = torch.linalg.inv(_COLOR.double()).float()

#: Margin of the stretched sigmoid (see the module docstring).
MARGIN = 0.1


class _InwardClamp(torch.autograd.Function):
    """Clamp to [0, 1] whose gradient passes where it would move a value back in range."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(y)
        return y.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        # Gradient descent moves y by -grad: below 0 only a negative grad helps, above 1 a positive.
        blocked = ((y < 0) & (grad > 0)) | ((y > 1) & (grad < 0))
        return grad.masked_fill(blocked, 0.0)


def to_unit(y: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Map unbounded values to [0, 1] without saturating at 0 and 1 (see module docs)."""
    return _InwardClamp.apply((1 + 2 * margin) * torch.sigmoid(y) - margin)


def from_unit(x: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """Exact inverse of :func:`to_unit` on [0, 1]."""
    s = (x.double() + margin) / (1 + 2 * margin)
    return torch.logit(s).to(x.dtype)


def _correlate(z: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _COLOR.to(z), z)


def _decorrelate(y: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _COLOR_INV.to(y), y)


def _freq_radius(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Spatial frequency magnitude of each rfft2 bin, shape (h, w // 2 + 1), in cycles/pixel."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class ImageParam(nn.Module):
    """Base class: ``forward()`` returns images ``(B, 3, H, W)`` in [0, 1].

    Subclasses implement :meth:`z` (their representation mapped to decorrelated colour
    space, ``(B, 3, H, W)``) and take ``(shape, seed=None, generator=None, device=None)``;
    with a seed ``(B, 3, H, W)`` in [0, 1] they start from it exactly (the photo in is the
    photo out, to float32 precision).

    The batch-first contract the engine relies on: row ``b`` of the batch is one
    accentuation (seed-major, then target), and **every parameter and buffer that
    differs between rows has the batch as its first dimension**, so that row ``b`` of
    each parameter belongs to image ``b`` alone. The engine freezes a finished
    accentuation by saving and restoring ``q[b]`` of each parameter, zeroes ``q.grad[b]``,
    and measures the regularizer's balance per row from the parameters' gradients.

    A new parameterization is one subclass decorated with :func:`register_param`; the
    engine (``param="NAME"``) and the command line (``--param NAME``) then offer it. An
    instance can also be passed as ``param=`` to :func:`accentuate.accentuate`.
    """

    shape: tuple[int, int, int, int]
    #: The name it is registered under (see :func:`register_param`).
    name: str = ""

    def z(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        return to_unit(_correlate(self.z()))

    @property
    def batch(self) -> int:
        return self.shape[0]

    @staticmethod
    def _check_seed(seed: torch.Tensor) -> torch.Tensor:
        if seed.dim() != 4 or seed.shape[1] != 3:
            raise ValueError(f"seed must have shape (B, 3, H, W); got {tuple(seed.shape)}")
        return seed.detach().float()


class PixelParam(ImageParam):
    """Pixels in decorrelated colour space.

    Args:
        shape: ``(B, 3, H, W)``.
        seed: optional images ``(B, 3, H, W)`` in [0, 1] to start from exactly.
        generator: randomness for the noise start when no seed is given.
        sd: standard deviation of the noise start.
    """

    def __init__(
        self,
        shape: tuple[int, int, int, int],
        seed: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sd: float = 0.01,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)  # type: ignore[assignment]
        if seed is not None:
            latent = _decorrelate(from_unit(self._check_seed(seed)))
        else:
            latent = sd * torch.randn(self.shape, generator=generator, device=device)
        self.latent = nn.Parameter(latent.contiguous())

    def z(self) -> torch.Tensor:
        return self.latent


class FourierParam(ImageParam):
    """Lucid-style Fourier parameterization with 1/f frequency scaling.

    The latent is the orthonormal real FFT of the decorrelated image divided by
    ``1 / max(f, 1/max(H, W)) ** decay``: low frequencies get large steps, high
    frequencies small ones, which favours natural-looking changes.
    """

    scale: torch.Tensor

    def __init__(
        self,
        shape: tuple[int, int, int, int],
        seed: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        sd: float = 0.01,
        decay: float = 1.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)  # type: ignore[assignment]
        b, c, h, w = self.shape
        dev = seed.device if seed is not None else device
        radius = _freq_radius(h, w, device=dev)
        scale = 1.0 / radius.clamp(min=1.0 / max(h, w)) ** decay
        scale = scale * math.sqrt(h * w) / scale.norm()  # keeps the overall step size ~ pixel units
        self.register_buffer("scale", scale)
        if seed is not None:
            z = _decorrelate(from_unit(self._check_seed(seed)))
            spec = torch.fft.rfft2(z, norm="ortho") / scale
            latent = torch.view_as_real(spec)
        else:
            latent = sd * torch.randn((b, c, h, w // 2 + 1, 2), generator=generator, device=dev)
        self.latent = nn.Parameter(latent.contiguous())

    def z(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.latent) * self.scale
        return torch.fft.irfft2(spec, s=self.shape[-2:], norm="ortho")


class PhaseParam(ImageParam):
    """MACO-style phase-only parameterization.

    The magnitude of the spectrum is fixed to the seed's own (or, without a seed,
    a natural 1/f magnitude); only the phase is optimized. With ``gate=True`` a
    learnable attenuation ``sigmoid(a) / sigmoid(a0)`` per frequency lets
    magnitudes shrink (not grow beyond ``1 / sigmoid(a0)``, about 1.007).
    """

    magnitude: torch.Tensor

    def __init__(
        self,
        shape: tuple[int, int, int, int],
        seed: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        gate: bool = True,
        gate_init: float = 5.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)  # type: ignore[assignment]
        b, c, h, w = self.shape
        dev = seed.device if seed is not None else device
        if seed is not None:
            z = _decorrelate(from_unit(self._check_seed(seed)))
            spec = torch.fft.rfft2(z, norm="ortho")
            magnitude, phase = spec.abs(), spec.angle()
        else:
            radius = _freq_radius(h, w, device=dev)
            magnitude = (1.0 / radius.clamp(min=1.0 / max(h, w))).expand(b, c, -1, -1).clone()
            phase = (torch.rand(magnitude.shape, generator=generator, device=dev) * 2 - 1) * math.pi
            # Scale the 1/f magnitude so the noise image has unit spread in logit units.
            zs = torch.fft.irfft2(torch.polar(magnitude, phase), s=(h, w), norm="ortho")
            magnitude = magnitude / zs.std().clamp(min=1e-8)
        self.register_buffer("magnitude", magnitude.contiguous())
        self.phase = nn.Parameter(phase.contiguous())
        self.gate_init = gate_init
        if gate:
            self.gate = nn.Parameter(torch.full_like(magnitude, gate_init))
        else:
            self.register_parameter("gate", None)

    def z(self) -> torch.Tensor:
        mag = self.magnitude
        if self.gate is not None:
            mag = mag * torch.sigmoid(self.gate) * (1.0 + math.exp(-self.gate_init))
        return torch.fft.irfft2(torch.polar(mag, self.phase), s=self.shape[-2:], norm="ortho")


#: Registered parameterizations by name (what ``param=`` and ``--param`` accept).
PARAMS: dict[str, type[ImageParam]] = {}


def register_param(name: str) -> Callable[[type[ImageParam]], type[ImageParam]]:
    """Class decorator: register an :class:`ImageParam` subclass under ``name``."""

    def add(cls: type[ImageParam]) -> type[ImageParam]:
        if not (isinstance(cls, type) and issubclass(cls, ImageParam)):
            raise TypeError(f"register_param needs an ImageParam subclass; got {cls!r}")
        cls.name = name
        PARAMS[name] = cls
        return cls

    return add


for _name, _cls in (("pixel", PixelParam), ("fourier", FourierParam), ("phase", PhaseParam)):
    register_param(_name)(_cls)


def make_param(
    name: str,
    shape: tuple[int, int, int, int],
    seed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> ImageParam:
    """Build a registered parameterization by name (``"pixel"``, ``"fourier"``, ``"phase"``, ...)."""
    try:
        cls = PARAMS[name]
    except KeyError:
        raise ValueError(
            f"unknown parameterization {name!r}; choose one of {', '.join(PARAMS)}"
        ) from None
    return cls(shape, seed=seed, generator=generator, device=device)

import pytest
import torch

import accentuate as acc
from accentuate.params import from_unit, make_param, to_unit

NAMES = ["pixel", "fourier", "phase"]


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_real_photo(name, photo_tensor):
    seed = acc.prepare_seeds(photo_tensor, 256)  # non-square: 300 x 451 -> 170 x 256
    assert seed.shape[-2:] == (170, 256)
    p = make_param(name, tuple(seed.shape), seed=seed)
    out = p()
    assert out.shape == seed.shape
    assert (out - seed).abs().max() < 2e-6  # float32 rounding (measured 1e-7 to 4e-7)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_with_black_and_white_pixels(name, device):
    seed = torch.rand(2, 3, 40, 56)
    seed[:, :, :10] = 0.0
    seed[:, :, -10:] = 1.0
    seed = seed.to(device)
    p = make_param(name, tuple(seed.shape), seed=seed)
    assert {t.device for t in [*p.parameters(), *p.buffers()]} == {seed.device}
    out = p()
    assert (out - seed).abs().max() < 2e-6  # float32 rounding (measured 1e-7 to 4e-7)


@pytest.mark.parametrize("name", NAMES)
def test_noise_start_is_valid_image(name, device):
    g = torch.Generator(device=device).manual_seed(0)
    p = make_param(name, (2, 3, 30, 44), generator=g, device=device)
    assert {t.device.type for t in [*p.parameters(), *p.buffers()]} == {device.type}
    img = p()
    assert img.shape == (2, 3, 30, 44) and img.device.type == device.type
    assert img.min() >= 0 and img.max() <= 1
    assert torch.isfinite(img).all()
    assert img.std() > 0  # not constant


@pytest.mark.parametrize("name", NAMES)
def test_each_parameterization_can_fit_a_photo(name, photo_tensor):
    target = acc.prepare_seeds(photo_tensor, 64)
    if name == "phase":
        # Phase-only keeps its magnitude: give it the photo's, and scramble the phase.
        p = make_param(name, tuple(target.shape), seed=target)
        with torch.no_grad():
            p.phase.copy_(torch.rand(p.phase.shape, generator=torch.Generator().manual_seed(0)) * 6.28)
    else:
        p = make_param(name, tuple(target.shape), seed=torch.full_like(target, 0.5))
    opt = torch.optim.Adam([q for q in p.parameters() if q.requires_grad], lr=0.1)
    first = None
    for _ in range(150):
        loss = (p() - target).pow(2).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = float((p().detach() - target).pow(2).mean())
    assert final < first * (0.3 if name == "phase" else 0.05)


def test_to_unit_does_not_saturate_at_black_and_white():
    x = torch.tensor([0.0, 1.0, 0.5])
    y = from_unit(x).requires_grad_(True)
    out = to_unit(y)
    assert torch.allclose(out, x, atol=1e-6)
    (g,) = torch.autograd.grad(out.sum(), y)
    assert (g > 0.05).all()  # plain sigmoid would give ~1e-4 at 0 and 1


def test_inward_clamp_gradient_passes_only_back_into_range():
    y = torch.tensor([-0.5, 1.5], requires_grad=True)
    out = acc.params._InwardClamp.apply(y)
    (g,) = torch.autograd.grad(out, y, torch.tensor([-1.0, -1.0]))
    # Descent moves y by -grad = +1: helps the value below 0, pushes the one above 1 further out.
    assert g.tolist() == [-1.0, 0.0]


def test_phase_keeps_the_seed_magnitude():
    seed = torch.rand(1, 3, 32, 32)
    p = make_param("phase", (1, 3, 32, 32), seed=seed)
    with torch.no_grad():
        p.phase.add_(torch.randn_like(p.phase))
    z = p.z()
    spec = torch.fft.rfft2(z, norm="ortho").abs()
    ref = p.magnitude
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # Hermitian edge bins are constrained
    assert torch.allclose(spec[inner], ref[inner], rtol=1e-3, atol=1e-4)


def test_unknown_parameterization_is_named():
    with pytest.raises(ValueError, match="unknown parameterization 'wavelet'"):
        make_param("wavelet", (1, 3, 8, 8))

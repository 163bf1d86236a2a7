import pytest
import torch
import torch.nn.functional as F

from accentuate.augment import apply_crops, sample_crops


def test_full_crop_of_identity_reproduces_image_without_noise():
    img = torch.rand(2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    c = sample_crops((16, 16), (16, 16), k=3, crop_range=(1.0, 1.0), noise_sd=0, noise_uniform=0, generator=g)
    out = apply_crops(img, c)
    assert out.shape == (6, 3, 16, 16)
    for b in range(2):
        for k in range(3):
            assert torch.allclose(out[b * 3 + k], img[b], atol=1e-5)


def test_crop_picks_the_right_region_by_hand():
    img = torch.arange(64.0).view(1, 1, 8, 8).expand(1, 3, 8, 8).contiguous()
    from accentuate.augment import Crops

    c = Crops(boxes=torch.tensor([[2.0, 4.0, 4.0]]), noise=None, canvas=(8, 8), out=(4, 4))
    out = apply_crops(img, c)[0, 0]
    assert torch.allclose(out, img[0, 0, 2:6, 4:8])


def test_downscaled_crop_is_antialiased():
    # A fine checkerboard averages to grey when downscaled with supersampling.
    y, x = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    img = ((x + y) % 2).float().expand(1, 3, 64, 64).contiguous()
    g = torch.Generator().manual_seed(0)
    c = sample_crops((64, 64), (16, 16), k=2, crop_range=(0.9, 0.99), noise_sd=0, noise_uniform=0,
                     generator=g, max_supersample=4)
    assert c.supersample == 4
    out = apply_crops(img, c)
    assert (out - 0.5).abs().max() < 0.3


def test_same_crops_same_noise_for_seed_and_image():
    g = torch.Generator().manual_seed(3)
    c = sample_crops((40, 60), (20, 20), k=5, generator=g)
    a = torch.rand(1, 3, 40, 60)
    both = apply_crops(torch.cat([a, a]), c)
    assert torch.equal(both[:5], both[5:])
    # Noise is identical: the difference of two images' crops has no noise in it.
    b = torch.rand(1, 3, 40, 60)
    diff = apply_crops(b, c) - apply_crops(a, c)
    clean = apply_crops(b, c, add_noise=False) - apply_crops(a, c, add_noise=False)
    assert torch.allclose(diff, clean, atol=1e-6)


def test_boxes_fit_in_canvas_and_respect_range():
    g = torch.Generator().manual_seed(1)
    c = sample_crops((50, 80), (10, 10), k=500, crop_range=(0.2, 0.6), generator=g)
    top, left, side = c.boxes.unbind(1)
    assert (side >= 0.2 * 50 - 1e-4).all() and (side <= 0.6 * 50 + 1e-4).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + side <= 50 + 1e-4).all() and (left + side <= 80 + 1e-4).all()


def test_generator_makes_crops_reproducible():
    a = sample_crops((32, 32), (8, 8), k=4, generator=torch.Generator().manual_seed(5))
    b = sample_crops((32, 32), (8, 8), k=4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.noise, b.noise)


def test_crop_is_differentiable_gradcheck():
    img = torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    from accentuate.augment import Crops

    c = Crops(boxes=torch.tensor([[0.5, 1.0, 4.5]], dtype=torch.float64), noise=None, canvas=(6, 6),
              out=(3, 3), supersample=2)
    assert torch.autograd.gradcheck(lambda t: apply_crops(t, c), (img,))


@pytest.mark.parametrize("bad", [(0.0, 0.5), (0.6, 0.5), (0.5, 1.2)])
def test_bad_crop_range(bad):
    with pytest.raises(ValueError, match="crop_range"):
        sample_crops((32, 32), (8, 8), crop_range=bad)


def test_resampling_is_one_call_not_a_loop(monkeypatch):
    calls = []
    real = F.grid_sample

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(F, "grid_sample", spy)
    c = sample_crops((32, 32), (8, 8), k=16, generator=torch.Generator().manual_seed(0))
    apply_crops(torch.rand(3, 3, 32, 32), c)
    assert len(calls) == 1


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov distance of equal-size samples."""
    both = torch.cat([a.double().flatten(), b.double().flatten()])
    which = torch.cat([torch.ones(a.numel()), -torch.ones(b.numel())]).double()
    order = torch.argsort(both, stable=True)
    return float(which[order].cumsum(0).abs().max()) / a.numel()


@pytest.mark.parametrize("sd,width", [(0.02, 0.02), (0.02, 0.0), (0.0, 0.02), (0.01, 0.08)])
def test_noise_has_the_distribution_of_gaussian_plus_uniform(sd, width):
    from accentuate.augment import draw_noise

    n = 1_000_000
    ours = draw_noise((n,), sd, width, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(n, generator=g, dtype=torch.float64) * sd + (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * width
    assert _ks(ours, ref) < 0.003  # the two samples' CDFs agree everywhere
    expected_sd = (sd ** 2 + width ** 2 / 12) ** 0.5
    assert abs(ours.double().std().item() / expected_sd - 1) < 0.005
    assert abs(ours.double().mean().item()) < 0.005 * expected_sd
    # Independent values: neighbours, and the two values made from one random word.
    pairs = [(ours[:-1], ours[1:]), (ours[: n // 2], ours[n // 2:])]
    for a, b in pairs:
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 0.005


def test_noise_is_reproducible_and_shaped():
    from accentuate.augment import draw_noise

    a = draw_noise((3, 3, 5, 7), 0.02, 0.02, generator=torch.Generator().manual_seed(4))
    b = draw_noise((3, 3, 5, 7), 0.02, 0.02, generator=torch.Generator().manual_seed(4))
    assert a.shape == (3, 3, 5, 7) and torch.equal(a, b)  # odd count: the last word's second value dropped
    c = sample_crops((32, 32), (8, 8), k=64, noise_sd=0.05, noise_uniform=0.0, generator=torch.Generator().manual_seed(2))
    assert abs(c.noise.std().item() - 0.05) < 0.002
    with pytest.raises(ValueError, match="noise"):
        sample_crops((32, 32), (8, 8), noise_sd=-0.1)

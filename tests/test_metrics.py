import torch
from skimage.metrics import structural_similarity

import accentuate as acc
from accentuate.images import resize
from accentuate.metrics import gray, pixel_rmse, ssim


def test_ssim_matches_skimage_definition():
    a = acc.load_image(acc.photo("chelsea"))
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ar, br = resize(a, (224, 224)), resize(b, (224, 224))
    ref = structural_similarity(gray(ar).numpy(), gray(br).numpy(), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1)
    assert abs(float(ssim(a, b)) - ref) < 1e-4
    assert float(ssim(a, a)) > 0.9999
    assert float(ssim(a, b)) < 0.9


def test_batched_shapes_and_rmse():
    a = torch.rand(2, 3, 3, 40, 40)
    assert ssim(a, a).shape == (2, 3)
    assert torch.allclose(pixel_rmse(a, a + 0.1), torch.full((2, 3), 0.1), atol=1e-5)

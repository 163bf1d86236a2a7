import pytest
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


# -- patch-grid score -------------------------------------------------------------------------------
def _tiled(period: int, size: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """A random pattern repeated in every ``period`` x ``period`` tile (what a patch grid leaves)."""
    h, w = size
    tile = torch.randn(3, period, period, generator=gen)
    return tile.repeat(1, h // period + 1, w // period + 1)[:, :h, :w]


def test_patch_grid_score_is_near_zero_without_a_grid_and_high_with_one():
    from accentuate.metrics import patch_grid_score

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(8, 3, 224, 224, generator=g)
    base = patch_grid_score(noise, 16)
    assert base.shape == (8,) and float(base.abs().max()) < 1.0
    smooth = torch.nn.functional.avg_pool2d(noise, 5, 1, 2)  # a falling spectrum, no grid
    assert float(patch_grid_score(smooth, 16).abs().max()) < 1.5
    grid = _tiled(14, (224, 224), g)
    assert float(patch_grid_score(noise[0] * 2 + grid, 16)) > 6
    # The score rises with the grid's share of the change, and only at the grid's own frequency.
    weak, strong = (float(patch_grid_score(noise[0] * 2 + a * grid, 16)) for a in (0.3, 1.0))
    assert weak < strong
    assert float(patch_grid_score(noise[0] * 2 + grid, 16 * 224 / 203)) < 2


def test_patch_grid_score_counts_periods_per_extent_on_non_square_images():
    from accentuate.metrics import patch_grid_score

    g = torch.Generator().manual_seed(1)
    # A 16 x 16 grid stretched over a 3:2 image, as a square-input model sees the whole image.
    tile = _tiled(14, (224, 224), g)[None]
    stretched = torch.nn.functional.interpolate(tile, size=(336, 504), mode="nearest")[0]
    change = stretched + torch.randn(3, 336, 504, generator=g)
    assert float(patch_grid_score(change, 16, limit=112)) > 6
    with pytest.raises(ValueError, match="too small"):
        patch_grid_score(torch.randn(3, 20, 20), 16)

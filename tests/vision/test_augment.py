"""Batch augmentation: checked against hand-computed geometry, not against itself."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accel.vision.augment import BatchAugment, center_resize, homography, normalize

NO_RANDOMNESS = dict(
    min_scale=1.0,
    ratio=(1.0, 1.0),
    flip=False,
    max_rotate=0.0,
    max_zoom=1.0,
    max_warp=0.0,
    max_lighting=0.0,
)


def test_without_randomness_it_is_the_identity():
    x = torch.rand(3, 3, 16, 16)
    out = BatchAugment(16, **NO_RANDOMNESS)(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_flips_are_exact_mirror_images_of_about_half_the_batch():
    x = torch.rand(200, 1, 8, 8)
    out = BatchAugment(8, **{**NO_RANDOMNESS, "flip": True})(x)
    same = (out - x).abs().flatten(1).amax(1) < 1e-5
    mirrored = (out - x.flip(-1)).abs().flatten(1).amax(1) < 1e-5
    assert bool((same | mirrored).all())
    assert 60 < int(mirrored.sum()) < 140


def test_rotation_turns_the_sampling_grid_rigidly_within_the_limit():
    base = BatchAugment(8, **NO_RANDOMNESS).sampling_grid(torch.zeros(1, 1, 8, 8))[0]
    aug = BatchAugment(8, **{**NO_RANDOMNESS, "max_rotate": 30.0, "p_affine": 1.0})
    grid = aug.sampling_grid(torch.zeros(50, 1, 8, 8))
    # Angle of the first grid row, then the whole grid must be `base` turned by that angle.
    row = grid[:, 0, -1] - grid[:, 0, 0]
    angle = torch.atan2(row[:, 1], row[:, 0])
    assert float(angle.abs().max()) <= math.radians(30) + 1e-5
    assert float(angle.abs().max()) > math.radians(10)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    u, v = base[..., 0], base[..., 1]
    expected = torch.stack([cos * u - sin * v, sin * u + cos * v], -1)
    torch.testing.assert_close(grid, expected, atol=1e-5, rtol=0)


def test_crops_cover_between_min_scale_and_all_of_the_image():
    aug = BatchAugment(16, **{**NO_RANDOMNESS, "min_scale": 0.25})
    x = torch.rand(500, 1, 32, 32)
    grid = aug.sampling_grid(x)
    # Sample points sit at output pixel centres, so the box spans grid extent * size/(size-1).
    width = (grid[..., 0].amax((1, 2)) - grid[..., 0].amin((1, 2))) * 16 / 15 / 2
    height = (grid[..., 1].amax((1, 2)) - grid[..., 1].amin((1, 2))) * 16 / 15 / 2
    area = width * height
    assert float(area.min()) >= 0.25 - 1e-4 and float(area.max()) <= 1 + 1e-4
    assert float(grid.abs().max()) <= 1 + 1e-5  # the box never leaves the image
    assert float(area.max()) > 0.9 and float(area.min()) < 0.35


def test_lighting_keeps_values_in_range_and_pixel_order():
    x = torch.rand(64, 3, 8, 8)
    out = BatchAugment(8, **{**NO_RANDOMNESS, "max_lighting": 0.2}).lighting(x)
    assert float(out.min()) > 0 and float(out.max()) < 1
    # A monotone map per image: sorting pixels by input value sorts them by output value too.
    order = x.flatten(1).argsort(1)
    sorted_out = out.flatten(1).gather(1, order)
    assert bool((sorted_out.diff(dim=1) >= -1e-6).all())
    assert not torch.allclose(out, x)


def test_the_full_pipeline_outputs_the_requested_size_in_range():
    out = BatchAugment(24)(torch.rand(5, 3, 40, 40))
    assert out.shape == (5, 3, 24, 24)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-0.3, 0.3, allow_nan=False, allow_infinity=False), min_size=8, max_size=8)
)
def test_homography_sends_the_corners_where_asked(shifts):
    src = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]], dtype=torch.float64)
    dst = src + torch.tensor(shifts, dtype=torch.float64).view(1, 4, 2)
    h = homography(src, dst)
    mapped = torch.cat([src, torch.ones(1, 4, 1, dtype=torch.float64)], -1) @ h.transpose(1, 2)
    torch.testing.assert_close(mapped[..., :2] / mapped[..., 2:], dst)


def test_center_resize_crops_the_middle_square_then_resizes():
    x = torch.arange(6 * 10, dtype=torch.float32).view(1, 1, 6, 10)
    torch.testing.assert_close(center_resize(x, 6), x[..., :, 2:8])
    small = center_resize(torch.ones(2, 3, 12, 9), 4)
    assert small.shape == (2, 3, 4, 4)
    torch.testing.assert_close(small, torch.ones(2, 3, 4, 4))


def test_normalize_matches_the_formula():
    x = torch.rand(2, 3, 4, 4)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    expected = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], 1)
    torch.testing.assert_close(normalize(x, mean, std), expected)


def test_zoom_samples_a_smaller_centred_region():
    aug = BatchAugment(8, **{**NO_RANDOMNESS, "max_zoom": 2.0, "p_affine": 1.0})
    grid = aug.sampling_grid(torch.zeros(200, 1, 8, 8))
    half_width = grid[..., 0].amax((1, 2)) * 8 / 7  # sample points sit at pixel centres
    assert float(half_width.min()) >= 0.5 - 1e-5 and float(half_width.max()) <= 1 + 1e-5
    assert float(half_width.min()) < 0.6 and float(half_width.max()) > 0.9
    torch.testing.assert_close(grid.mean((1, 2)), torch.zeros(200, 2), atol=1e-5, rtol=0)

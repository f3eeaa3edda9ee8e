from __future__ import annotations

import numpy as np
import pytest

from training.augment import AugmentParams, augment
from training.errors import TrainingError


def coded(size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A mask and an image whose first channel is the mask (scaled) and others unique per pixel."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 5, (size, size)).astype(np.int32)
    unique = (np.arange(size * size).reshape(size, size) / (size * size)).astype(np.float32)
    image = np.stack([mask / 4.0, unique, rng.random((size, size))], axis=-1).astype(np.float32)
    return image, mask


@pytest.mark.parametrize("seed", range(8))
def test_image_and_mask_stay_aligned(seed) -> None:
    image, mask = coded()
    out_image, out_mask = augment(image, mask, np.array([seed, 1]), AugmentParams(shift=0.2))
    out_image, out_mask = np.asarray(out_image), np.asarray(out_mask)
    assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32) and out_mask.dtype == np.int32
    np.testing.assert_array_equal(np.rint(out_image[..., 0] * 4).astype(np.int32), out_mask)


def test_geometry_changes_and_is_reproducible() -> None:
    image, mask = coded()
    params = AugmentParams(shift=0.0)
    results = [np.asarray(augment(image, mask, np.array([s, 0]), params)[0]) for s in range(8)]
    assert sum(not np.array_equal(r, image) for r in results) >= 4
    # Rotations and flips only permute pixels.
    assert all(np.array_equal(np.sort(r[..., 1].ravel()), np.sort(image[..., 1].ravel())) for r in results)
    again = np.asarray(augment(image, mask, np.array([3, 0]), params)[0])
    np.testing.assert_array_equal(again, results[3])


def test_shift_fills_by_reflection_not_zeros() -> None:
    image, mask = coded()
    image[..., 1] += 0.5  # no zeros anywhere, so zero fill would show
    params = AugmentParams(rotate=False, flip=False, shift=0.25)
    shifted = [np.asarray(augment(image, mask, np.array([s, 9]), params)[0]) for s in range(6)]
    assert any(not np.array_equal(s, image) for s in shifted)
    assert all(s[..., 1].min() >= 0.5 for s in shifted)


def test_crop_and_colour_jitter_touch_image_only() -> None:
    image, mask = coded(64)
    params = AugmentParams(crop=32, brightness=0.2, contrast=0.3)
    out_image, out_mask = augment(image, mask, np.array([5, 5]), params)
    out_image, out_mask = np.asarray(out_image), np.asarray(out_mask)
    assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32)
    assert set(np.unique(out_mask)) <= set(range(5))
    # The mask's values are the original ones (no interpolation), the image's are jittered.
    assert not np.allclose(np.rint(out_image[..., 0] * 4), out_mask)


def test_white_balance_scales_each_channel_by_its_own_gain_and_keeps_the_mask() -> None:
    image, mask = coded()
    image += 0.1  # no zeros, so every ratio is defined
    params = AugmentParams(rotate=False, flip=False, shift=0.0, white_balance=0.2)
    ratios = []
    for seed in range(6):
        out_image, out_mask = (np.asarray(a) for a in augment(image, mask, np.array([seed, 2]), params))
        np.testing.assert_array_equal(out_mask, mask)
        ratio = out_image / image
        # One gain per channel over the whole patch, within the configured range.
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:1, :1], ratio.shape), rtol=1e-5)
        assert np.all(np.abs(ratio[0, 0] - 1) <= 0.2 + 1e-6)
        ratios.append(ratio[0, 0])
    # The channels get different gains, and the draws differ between samples.
    assert max(np.ptp(r) for r in ratios) > 0.05 and np.ptp([r[0] for r in ratios]) > 0.05


def test_saturation_leaves_grey_pixels_grey_and_moves_coloured_ones() -> None:
    grey = np.full((32, 32, 3), 0.4, np.float32)
    grey[:16, :, 0] = 0.8  # the upper half red-ish
    mask = np.zeros((32, 32), np.int32)
    params = AugmentParams(rotate=False, flip=False, shift=0.0, saturation=0.5)
    outs = [np.asarray(augment(grey, mask, np.array([s, 3]), params)[0]) for s in range(6)]
    for out in outs:
        np.testing.assert_allclose(out[16:], grey[16:], atol=1e-6)
        np.testing.assert_allclose(out[:16].mean(axis=-1), grey[:16].mean(axis=-1), atol=1e-6)  # same brightness
    spreads = [out[0, 0, 0] - out[0, 0, 1] for out in outs]
    assert min(spreads) >= 0.4 * 0.5 - 1e-6 and max(spreads) <= 0.4 * 1.5 + 1e-6 and np.ptp(spreads) > 0.05


@pytest.mark.parametrize("kwargs", [{"shift": 0.6}, {"crop": 48}, {"brightness": 1.5}, {"white_balance": -0.1},
                                    {"saturation": 1.0}])
def test_bad_parameters(kwargs) -> None:
    with pytest.raises(TrainingError):
        AugmentParams(**kwargs)

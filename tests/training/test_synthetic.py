from __future__ import annotations

import numpy as np
import pytest
import rasterio

from training.errors import TrainingError
from training.synthetic import ClassShares, SyntheticParams, generate_scene, scene_rng


def test_scene_is_deterministic_per_seed_and_index() -> None:
    a_img, a_mask = generate_scene(scene_rng(7, 2), 256, ClassShares())
    b_img, b_mask = generate_scene(scene_rng(7, 2), 256, ClassShares())
    c_img, _ = generate_scene(scene_rng(8, 2), 256, ClassShares())
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)


def test_scene_has_every_class_near_the_target_shares() -> None:
    shares = ClassShares()
    counts = np.zeros(5)
    for i in range(2):
        img, mask = generate_scene(scene_rng(0, i), 1024, shares, jitter=0.0)
        assert img.shape == (1024, 1024, 3) and img.dtype == np.uint8
        assert mask.shape == (1024, 1024) and mask.max() <= 4
        counts += np.bincount(mask.ravel(), minlength=5)
    share = counts / counts.sum()
    assert all(share > 0), share
    assert share[2] == pytest.approx(shares.woodland, abs=0.06)
    assert share[3] == pytest.approx(shares.water, abs=0.03)
    assert share[1] == pytest.approx(shares.building, abs=0.006)
    assert share[4] < 0.05
    assert share[0] > 0.45


def test_class_shares_steer_the_scene() -> None:
    _, wooded = generate_scene(scene_rng(1, 0), 512, ClassShares(woodland=0.6, water=0.0), jitter=0.0)
    _, open_ = generate_scene(scene_rng(1, 0), 512, ClassShares(woodland=0.1, water=0.0), jitter=0.0)
    assert (wooded == 2).mean() > 0.5 > 0.2 > (open_ == 2).mean()
    assert not (wooded == 3).any()


def test_dataset_layout_and_georeferencing(synthetic_dir) -> None:
    images = sorted((synthetic_dir / "images").glob("*.tif"))
    masks = sorted((synthetic_dir / "masks").glob("*.tif"))
    assert [p.name for p in images] == [p.name for p in masks] and len(images) == 4
    with rasterio.open(images[0]) as src:
        assert src.count == 3 and src.dtypes[0] == "uint8" and src.crs.to_epsg() == 2180
        assert src.res == (0.25, 0.25) and src.width == 256
    with rasterio.open(masks[0]) as src:
        assert src.count == 1 and src.read(1).max() <= 4


@pytest.mark.parametrize("kwargs", [{"orthophotos": 0}, {"size": 16}, {"jitter": 1.5}])
def test_bad_parameters(kwargs) -> None:
    with pytest.raises(TrainingError):
        SyntheticParams(**kwargs)


def test_bad_shares() -> None:
    with pytest.raises(TrainingError):
        ClassShares(woodland=0.9, water=0.1)

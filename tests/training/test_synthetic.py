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


# ------------------------------------------------------------------ styles


def test_style_v1_is_the_first_generator_bit_for_bit():
    """The shipped model's calibration and its reports rebuild v1 scenes: they must not change.

    The digest is that of the scene before styles existed (the same call, measured on the commit before them).
    """
    import hashlib

    img, mask = generate_scene(scene_rng(7, 2), 256, ClassShares())
    assert hashlib.sha256(img.tobytes() + mask.tobytes()).hexdigest() == \
        "8dcc12ef96723a201be83a8fe37f2b88fba3d9ada6364b3b508274d896e2ba91"
    assert np.array_equal(generate_scene(scene_rng(7, 2), 256, ClassShares(), style="v1")[0], img)


def test_style_v2_is_deterministic_different_and_keeps_the_class_balance():
    from training.synthetic import WOODLAND

    a_img, a_mask = generate_scene(scene_rng(3, 1), 512, ClassShares(), style="v2")
    b_img, b_mask = generate_scene(scene_rng(3, 1), 512, ClassShares(), style="v2")
    v1_img, _ = generate_scene(scene_rng(3, 1), 512, ClassShares(), style="v1")
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, v1_img)
    shares = np.mean([np.bincount(generate_scene(scene_rng(0, i), 1024, ClassShares(), jitter=0.0, style="v2")[1]
                                  .ravel(), minlength=5) / 1024 ** 2 for i in range(4)], axis=0)
    assert 0.25 < shares[WOODLAND] < 0.45  # woodland target 0.33 (+ scattered single trees)
    assert 0.03 < shares[3] < 0.09 and 0.005 < shares[1] < 0.02 and 0.008 < shares[4] < 0.04


def test_mixed_alternates_the_styles_and_unknown_styles_are_refused():
    from training.errors import TrainingError
    from training.synthetic import SyntheticParams, scene_style

    assert [scene_style("mixed", i) for i in range(4)] == ["v1", "v2", "v1", "v2"]
    assert scene_style("v2", 0) == "v2"
    with pytest.raises(TrainingError, match="style must be one of v1, v2, mixed"):
        SyntheticParams(style="photoreal")
    with pytest.raises(TrainingError, match="unknown synthetic style"):
        generate_scene(scene_rng(0, 0), 64, ClassShares(), style="mixed")  # a scene has one style

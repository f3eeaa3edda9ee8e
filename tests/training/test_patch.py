from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.training.conftest import coded_pair, write_pair
from training.errors import TrainingError
from training.patch import PatchParams, grid_shape, patch_dataset, read_index


def test_counts_names_and_content(coded_dir, tmp_path) -> None:
    out = tmp_path / "patches"
    summary = patch_dataset(coded_dir, out, PatchParams(size=64))
    # 200 x 300 cropped to 192 x 256: 3 rows x 4 columns per orthophoto.
    assert summary.per_source == {"alpha": 12, "beta": 12} and summary.patches == 24
    names = sorted(p.stem for p in (out / "images").glob("*.png"))
    assert names == sorted(f"{s}_r{r:03d}_c{c:03d}" for s in ("alpha", "beta") for r in range(3) for c in range(4))
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == names
    image, mask = coded_pair(200, 300, seed=1)
    patch = np.asarray(Image.open(out / "images" / "beta_r002_c001.png"))
    patch_mask = np.asarray(Image.open(out / "masks" / "beta_r002_c001.png"))
    assert np.array_equal(patch, image[128:192, 64:128]) and np.array_equal(patch_mask, mask[128:192, 64:128])
    records = {r.patch: r for r in read_index(out)}
    assert len(records) == 24
    rec = records["beta_r002_c001"]
    assert (rec.source, rec.row, rec.col) == ("beta", 2, 1)
    assert rec.pixels == tuple(np.bincount(mask[128:192, 64:128].ravel(), minlength=5))


def test_stride_gives_overlapping_patches(coded_dir, tmp_path) -> None:
    summary = patch_dataset(coded_dir, tmp_path / "p", PatchParams(size=64, stride=32))
    assert summary.per_source["alpha"] == ((200 - 64) // 32 + 1) * ((300 - 64) // 32 + 1)
    image, _ = coded_pair(200, 300, seed=0)
    patch = np.asarray(Image.open(tmp_path / "p" / "images" / "alpha_r001_c003.png"))
    assert np.array_equal(patch, image[32:96, 96:160])


def test_grid_shape_edges() -> None:
    assert grid_shape(255, 1000, PatchParams(256)) == (0, 0)
    assert grid_shape(256, 511, PatchParams(256)) == (1, 1)
    assert grid_shape(512, 512, PatchParams(256, stride=128)) == (3, 3)


def test_rerun_replaces_previous_output(coded_dir, tmp_path) -> None:
    out = tmp_path / "patches"
    patch_dataset(coded_dir, out, PatchParams(size=64))
    patch_dataset(coded_dir, out, PatchParams(size=96))
    assert len(list((out / "images").glob("*.png"))) == 2 * 2 * 3
    assert not (tmp_path / "patches.part").exists()


@pytest.mark.parametrize("kwargs", [{"size": 100}, {"size": 16}, {"size": 64, "stride": 0}, {"size": 64, "stride": 65}])
def test_bad_parameters(kwargs) -> None:
    with pytest.raises(TrainingError):
        PatchParams(**kwargs)


def test_mask_size_mismatch(tmp_path) -> None:
    image, _ = coded_pair(128, 128)
    _, mask = coded_pair(128, 96)
    write_pair(tmp_path, "odd", image, mask)
    with pytest.raises(TrainingError, match="odd.*mask is 96x128"):
        patch_dataset(tmp_path, tmp_path / "out", PatchParams(size=64))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()


def test_mask_values_outside_classes(tmp_path) -> None:
    image, mask = coded_pair(128, 128)
    mask[70, 5] = 7
    write_pair(tmp_path, "bad", image, mask)
    with pytest.raises(TrainingError, match=r"mask values \[7\] are outside 0..4"):
        patch_dataset(tmp_path, tmp_path / "out", PatchParams(size=64))


def test_empty_folder(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(TrainingError, match="no .tif orthophotos"):
        patch_dataset(tmp_path, tmp_path / "out", PatchParams(size=64))
    with pytest.raises(TrainingError, match="images does not exist"):
        patch_dataset(tmp_path / "nowhere", tmp_path / "out", PatchParams(size=64))


def test_missing_mask(tmp_path) -> None:
    write_pair(tmp_path, "ok", *coded_pair(64, 64))
    (tmp_path / "masks" / "ok.tif").unlink()
    with pytest.raises(TrainingError, match="has no mask"):
        patch_dataset(tmp_path, tmp_path / "out", PatchParams(size=64))


def test_mixed_resolutions_are_patched_at_one_pixel_size(tmp_path) -> None:
    """LandCover.ai mixes 25 and 50 cm sheets: with ``gsd_m`` every sheet is patched at that size (masks by
    nearest neighbour, so class ids stay exact); without it each keeps its native pixels."""
    import rasterio
    from rasterio.transform import from_origin

    from tests.training.conftest import write_geotiff

    data = tmp_path / "data"
    write_pair(data, "fine", *coded_pair(128, 128, seed=1))  # 0.25 m
    image, mask = coded_pair(64, 64, seed=2)
    (data / "images").mkdir(exist_ok=True)
    coarse = from_origin(500_000, 400_000, 0.5, 0.5)
    write_geotiff(data / "images" / "coarse.tif", image, coarse)
    write_geotiff(data / "masks" / "coarse.tif", mask, coarse)
    native = patch_dataset(data, tmp_path / "native", PatchParams(size=32))
    assert native.per_source == {"coarse": 4, "fine": 16}
    even = patch_dataset(data, tmp_path / "even", PatchParams(size=32, gsd_m=0.25))
    assert even.per_source == {"coarse": 16, "fine": 16}  # 64 px at 0.5 m = 128 px at 0.25 m
    patch_mask = np.asarray(Image.open(tmp_path / "even" / "masks" / "coarse_r001_c002.png"))
    expected = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)[32:64, 64:96]  # each pixel becomes 2 x 2
    assert np.array_equal(patch_mask, expected)
    fine = np.asarray(Image.open(tmp_path / "even" / "masks" / "fine_r001_c002.png"))
    assert np.array_equal(fine, coded_pair(128, 128, seed=1)[1][32:64, 64:96])  # already 0.25 m: untouched
    with rasterio.open(data / "images" / "coarse.tif") as src:
        assert src.res == (0.5, 0.5)  # the data folder itself is never changed
    with pytest.raises(TrainingError, match="gsd_m must be a positive"):
        PatchParams(gsd_m=0)

"""Inputs as analysts have them: band layouts, data types, masks, CRS, pixel size, broken files."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import LandcoverError
from backend.raster_io import RasterSource, Window, pixel_size_m
from tests.data.rasters import random_rgb, write_raster


def _read_all(src: RasterSource):
    return src.read(np.arange(src.height), np.arange(src.width))


def test_rgb_uint8_is_read_unchanged(tmp_path):
    rgb = random_rgb(20, 30)
    with RasterSource(write_raster(tmp_path / "a.tif", rgb), 3, model_gsd_m=0.25) as src:
        pixels, valid = _read_all(src)
        assert src.info.warnings == []
    np.testing.assert_array_equal(pixels, np.moveaxis(rgb, 0, -1))
    assert valid.all()


def test_rgbn_uses_bands_1_to_3_by_default_and_says_so(tmp_path):
    data = np.concatenate([random_rgb(10, 10), np.full((1, 10, 10), 7, np.uint8)])
    with RasterSource(write_raster(tmp_path / "n.tif", data), 3) as src:
        pixels, _ = _read_all(src)
        assert src.bands == (1, 2, 3)
        assert any("--bands" in w for w in src.info.warnings)
    np.testing.assert_array_equal(pixels[..., 2], data[2])


def test_bands_option_chooses_bands(tmp_path):
    data = np.concatenate([random_rgb(10, 10), np.full((1, 10, 10), 7, np.uint8)])
    with RasterSource(write_raster(tmp_path / "n.tif", data), 3, bands=(4, 1, 2)) as src:
        pixels, _ = _read_all(src)
    assert (pixels[..., 0] == 7).all()


@pytest.mark.parametrize("bands,message", [((1, 2), "lists 2 band"), ((1, 2, 9), "do not exist")])
def test_bad_bands_option_is_refused(tmp_path, bands, message):
    with pytest.raises(LandcoverError, match=message):
        RasterSource(write_raster(tmp_path / "a.tif", random_rgb(5, 5)), 3, bands=bands)


def test_one_band_raster_is_refused_with_the_fix(tmp_path):
    path = write_raster(tmp_path / "gray.tif", random_rgb(5, 5)[:1])
    with pytest.raises(LandcoverError, match=r"1 data band\(s\) but the model needs 3"):
        RasterSource(path, 3)


def test_alpha_band_is_a_mask_not_a_colour(tmp_path):
    alpha = np.zeros((1, 8, 8), np.uint8)
    alpha[0, :4] = 255
    path = write_raster(tmp_path / "rgba.tif", np.concatenate([random_rgb(8, 8), alpha]), alpha=True)
    with RasterSource(path, 3) as src:
        _, valid = _read_all(src)
        assert src.bands == (1, 2, 3) and src.info.warnings == []
    assert valid[:4].all() and not valid[4:].any()


def test_uint16_values_are_stretched_by_percentiles(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1000, 4000, (3, 40, 40)).astype(np.uint16)
    with RasterSource(write_raster(tmp_path / "u16.tif", data), 3) as src:
        pixels, _ = _read_all(src)
        assert "percentile" in src.info.scaling
    assert pixels.dtype == np.float32 and pixels.min() == 0 and pixels.max() == 255
    assert 100 < pixels.mean() < 155


def test_uint16_holding_8bit_values_is_used_as_is(tmp_path):
    data = random_rgb(10, 10).astype(np.uint16)
    with RasterSource(write_raster(tmp_path / "u16.tif", data), 3) as src:
        pixels, _ = _read_all(src)
    np.testing.assert_array_equal(pixels, np.moveaxis(data, 0, -1))


def test_float_reflectance_0_to_1_is_scaled_and_nan_is_invalid(tmp_path):
    data = (random_rgb(10, 10) / 255.0).astype(np.float32)
    data[:, 0, 0] = np.nan
    with RasterSource(write_raster(tmp_path / "f.tif", data), 3) as src:
        pixels, valid = _read_all(src)
    assert not valid[0, 0] and valid.sum() == 99
    np.testing.assert_allclose(pixels[1, 1], data[:, 1, 1] * 255, rtol=1e-5)


def test_no_crs_still_reads_and_warns(tmp_path):
    with RasterSource(write_raster(tmp_path / "nocrs.tif", random_rgb(5, 5), crs=None), 3, model_gsd_m=0.25) as src:
        assert src.crs is None and src.info.pixel_size_m is None
        assert any("no CRS" in w for w in src.info.warnings)


@pytest.mark.parametrize("pixel,warned", [(0.25, False), (0.5, False), (0.1, True), (5.0, True)])
def test_pixel_size_far_from_the_models_warns(tmp_path, pixel, warned):
    path = write_raster(tmp_path / "g.tif", random_rgb(5, 5), pixel_size=pixel)
    with RasterSource(path, 3, model_gsd_m=0.25) as src:
        assert any("--resample" in w for w in src.info.warnings) is warned


def test_geographic_pixel_size_is_converted_to_metres():
    from affine import Affine
    from rasterio.crs import CRS

    size = pixel_size_m(CRS.from_epsg(4326), Affine(0.00001, 0, 20.0, 0, -0.00001, 52.0), 10, 10)
    assert size[0] == pytest.approx(111_320 * 0.00001 * np.cos(np.radians(52.0)), rel=1e-3)
    assert size[1] == pytest.approx(1.106, rel=1e-2)


def test_resample_warps_to_the_models_pixel_size(tmp_path):
    path = write_raster(tmp_path / "coarse.tif", random_rgb(40, 60), pixel_size=1.0)
    with RasterSource(path, 3, model_gsd_m=0.25, resample=True) as src:
        assert (src.height, src.width) == (160, 240)
        assert src.transform.a == pytest.approx(0.25)
        assert src.info.resampled
        pixels, valid = _read_all(src)
        assert pixels.shape == (160, 240, 3) and valid.all()


def test_resample_refuses_absurd_sizes(tmp_path):
    path = write_raster(tmp_path / "landsat.tif", random_rgb(100, 100), pixel_size=300.0)
    with pytest.raises(LandcoverError, match="smaller area"):
        RasterSource(path, 3, model_gsd_m=0.25, resample=True)


def test_window_outside_the_raster_is_refused(tmp_path):
    path = write_raster(tmp_path / "a.tif", random_rgb(10, 10))
    with pytest.raises(LandcoverError, match="outside the raster"):
        RasterSource(path, 3, window=Window(50, 50, 5, 5))
    with RasterSource(path, 3, window=Window(5, 5, 50, 50)) as src:  # clipped to the raster
        assert (src.height, src.width) == (5, 5)


def test_missing_and_corrupt_files_are_refused_clearly(tmp_path):
    with pytest.raises(LandcoverError, match="does not exist"):
        RasterSource(tmp_path / "nope.tif", 3)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(LandcoverError, match="cannot read"):
        RasterSource(tmp_path / "bad.tif", 3)


def test_truncated_file_fails_with_a_clear_read_error(tmp_path):
    path = write_raster(tmp_path / "full.tif", random_rgb(400, 400))
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LandcoverError, match="truncated|corrupt|cannot read"):
        with RasterSource(cut, 3) as src:
            _read_all(src)


# ---- ground metres for projections with scale distortion ------------------------------------------------------

def _mercator_transform(lon: float, lat: float, pixel: float):
    from affine import Affine
    from rasterio.warp import transform

    x, y = transform("EPSG:4326", "EPSG:3857", [lon], [lat])
    return Affine(pixel, 0, x[0], 0, -pixel, y[0])


def _equal_area_m2(crs: str, transform, width: int, height: int, steps: int = 50) -> float:
    """The raster footprint's area in an equal-area projection (LAEA Europe), from its densified outline."""
    from rasterio.warp import transform as warp

    edge = [(c, 0) for c in np.linspace(0, width, steps)] + [(width, r) for r in np.linspace(0, height, steps)]
    edge += [(c, height) for c in np.linspace(width, 0, steps)] + [(0, r) for r in np.linspace(height, 0, steps)]
    xs, ys = zip(*(transform @ p for p in edge), strict=True)
    ex, ey = warp(crs, "EPSG:3035", xs, ys)
    return abs(sum(ex[i] * ey[i + 1] - ex[i + 1] * ey[i] for i in range(len(ex) - 1))) / 2


def test_web_mercator_pixels_and_areas_are_ground_metres(tmp_path, bundle, identity):
    """2 m Web Mercator pixels at 54° N are 1.18 m on the ground; the areas match an equal-area computation."""
    from rasterio.crs import CRS

    from backend.inference import segment

    t = _mercator_transform(10.0, 54.0, 2.0)
    size = pixel_size_m(CRS.from_epsg(3857), t, 300, 300)
    assert size == pytest.approx((1.178, 1.176), abs=0.002)  # not the projected 2 m: that is 1.7x on each axis
    src = write_raster(tmp_path / "merc.tif", random_rgb(300, 300), crs="EPSG:3857", transform=t)
    result = segment(src, tmp_path / "out.tif", bundle, runtime=identity)
    total = sum(c["area_m2"] for c in result.areas.to_dict()["classes"])
    assert total == pytest.approx(_equal_area_m2("EPSG:3857", t, 300, 300), rel=0.002)  # 2.9x before


def test_projections_true_to_scale_keep_their_own_metres():
    """UTM near its meridian (scale within 0.5 % of 1) reports the CRS's metres exactly, as before."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.warp import transform

    for lon in (15.0, 19.0):  # on the central meridian, and 4° off it (scale 1.0007)
        x, y = transform("EPSG:4326", "EPSG:32633", [lon], [54.0])
        assert pixel_size_m(CRS.from_epsg(32633), Affine(0.25, 0, x[0], 0, -0.25, y[0]), 100, 100) == (0.25, 0.25)


def test_tall_web_mercator_rasters_add_their_areas_row_by_row(tmp_path, bundle, identity):
    """1,500 km north-south in Web Mercator: the ground pixel shrinks from row to row, so the areas are summed
    per row; the centre's pixel area alone would be off by about 2 %."""
    from backend.inference import segment

    t = _mercator_transform(10.0, 66.0, 3000.0)  # top edge at 66° N, 3 km projected pixels
    src = write_raster(tmp_path / "tall.tif", random_rgb(900, 40), crs="EPSG:3857", transform=t)
    result = segment(src, tmp_path / "out.tif", bundle, runtime=identity)
    areas = result.areas.to_dict()
    total = sum(c["area_m2"] for c in areas["classes"])
    truth = _equal_area_m2("EPSG:3857", t, 40, 900, steps=400)
    assert total == pytest.approx(truth, rel=0.002)
    centre_only = areas["valid_pixels"] * areas["pixel_area_m2"]
    assert abs(centre_only / truth - 1) > 0.01  # 1.8 % here

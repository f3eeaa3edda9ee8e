"""The real rasters of tests/data/real segment end to end (random network: georeferencing,
masks and warnings are checked, not land-cover accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from backend.bundle import untrained_bundle
from backend.inference import segment
from backend.outputs import NODATA
from backend.progress import Progress
from backend.raster_io import Window

pytestmark = pytest.mark.slow


class Recorder(Progress):
    def __init__(self):
        self.warnings: list[str] = []

    def warn(self, message):
        self.warnings.append(message)


@pytest.fixture(scope="module")
def runtime():
    from backend.runtime import make_runtime

    return make_runtime(untrained_bundle("untrained:Unet:resnet18"), "tensorflow")


@pytest.fixture(scope="module")
def bundle():
    return untrained_bundle("untrained:Unet:resnet18")


@pytest.mark.parametrize(
    "name,window,gsd_warning",
    [
        ("riverfront_rgb_jpeg_epsg3395.tif", Window(600, 700, 700, 500), True),   # ~0.1 m: 2.5x finer
        ("naip_rgbn_epsg26914.tif", None, True),                                  # 5 m, 4 bands
        ("drone_rgba_epsg32633.tif", None, True),                                 # 2 cm, alpha
        ("landsat_rgb_nodata_epsg32618.tif", None, True),                         # 300 m, nodata=0
    ],
)
def test_real_raster_segments_with_georeferencing_and_masks(real_fixtures, tmp_path, runtime, bundle, name, window,
                                                            gsd_warning):
    path = real_fixtures / name
    rec = Recorder()
    result = segment(path, tmp_path / "out.tif", bundle, window=window, runtime=runtime, progress=rec)
    with rasterio.open(path) as src, rasterio.open(result.output) as out:
        expected_transform = src.window_transform(window.as_rasterio()) if window else src.transform
        assert out.crs == src.crs
        assert out.transform.almost_equals(expected_transform)
        h, w = (window.height, window.width) if window else src.shape
        assert out.shape == (h, w)
        classes = out.read(1)
        valid = src.dataset_mask(window=window.as_rasterio() if window else None) > 0
        if "nodata" in name:  # the rotated Landsat footprint; the drone's alpha happens to be all opaque
            assert (~valid).any()
        assert (classes[~valid] == NODATA).all()
        assert (classes[valid] < 5).all()
    assert any("--resample" in m for m in rec.warnings) is gsd_warning
    if "rgbn" in name:
        assert any("bands 1,2,3" in m for m in rec.warnings)


def test_resample_puts_the_output_on_the_models_grid(real_fixtures, tmp_path, runtime, bundle):
    path = real_fixtures / "naip_rgbn_epsg26914.tif"
    result = segment(path, tmp_path / "out.tif", bundle, window=Window(0, 0, 10, 8), resample=True, runtime=runtime)
    with rasterio.open(result.output) as out, rasterio.open(path) as src:
        assert out.res == pytest.approx((0.25, 0.25))
        assert out.shape == (160, 200)
        assert out.crs == src.crs
        assert (out.bounds.left, out.bounds.top) == pytest.approx((src.bounds.left, src.bounds.top))
    assert np.isclose(result.areas.pixel_area_m2, 0.0625)

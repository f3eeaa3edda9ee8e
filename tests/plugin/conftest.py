"""Fixtures for the plugin tests (pytest-qgis; run with QT_QPA_PLATFORM=offscreen).

Worker runs use ``untrained:Unet:resnet18`` on small crops of the real fixture rasters so the real
worker process, protocol and outputs are exercised in a few seconds each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsSettings


@pytest.fixture(scope="session")
def real_dir(real_fixtures: Path) -> Path:
    """The real GeoTIFFs in tests/data/real/ (``real_fixtures`` from tests/conftest.py)."""
    return real_fixtures


def _crop(src: Path, dst: Path, col: int, row: int, width: int, height: int, bands: list[int] | None = None) -> Path:
    from osgeo import gdal

    options = gdal.TranslateOptions(srcWin=[col, row, width, height], bandList=bands, format="GTiff")
    ds = gdal.Translate(str(dst), str(src), options=options)
    assert ds is not None, f"cannot crop {src}"
    ds = None
    return dst


@pytest.fixture(scope="session")
def crops(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small crops: 320 px riverfront RGB (EPSG:3395, 0.1 m), 1-band, NAIP RGBN and Landsat with nodata."""
    d = tmp_path_factory.mktemp("crops")
    river = real_dir / "riverfront_rgb_jpeg_epsg3395.tif"
    return {
        "rgb": _crop(river, d / "river_rgb.tif", 900, 900, 320, 320),
        "gray": _crop(river, d / "river_gray.tif", 900, 900, 64, 64, bands=[1]),
        "naip": _crop(real_dir / "naip_rgbn_epsg26914.tif", d / "naip.tif", 300, 200, 256, 256),
        "landsat": _crop(real_dir / "landsat_rgb_nodata_epsg32618.tif", d / "landsat.tif", 0, 0, 256, 256),
    }


@pytest.fixture
def clean_settings() -> None:
    """Forget the plugin's remembered choices so each dialog test starts from defaults."""
    settings = QgsSettings()
    settings.remove("landcover")
    yield
    settings.remove("landcover")


@pytest.fixture
def project(qgis_new_project: QgsProject) -> QgsProject:
    return qgis_new_project

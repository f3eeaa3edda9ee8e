"""Fixtures for the plugin tests (pytest-qgis; run with QT_QPA_PLATFORM=offscreen).

Worker runs use ``untrained:Unet:resnet18`` on small crops of the real fixture rasters so the real
worker process, protocol and outputs are exercised in a few seconds each.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings, QgsTask  # noqa: E402

UNTRAINED = "untrained:Unet:resnet18"


def shared_real_dir() -> Path:
    """``../shared/fixtures/real`` beside the repository, or ``$LANDCOVER_SHARED/fixtures/real``."""
    env = os.environ.get("LANDCOVER_SHARED")
    candidates = [Path(env) / "fixtures" / "real", Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "fixtures" / "real")
    for candidate in candidates:
        if (candidate / "riverfront_rgb_jpeg_epsg3395.tif").is_file():
            return candidate
    pytest.fail(f"real fixture rasters not found in {[str(c) for c in candidates]}; set LANDCOVER_SHARED")


@pytest.fixture(scope="session")
def real_dir() -> Path:
    return shared_real_dir()


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


def add_raster(path: Path, name: str | None = None) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name or path.stem, "gdal")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def wait_for_task(task: QgsTask, timeout: float = 180.0) -> None:
    """Spin the event loop until the task has finished and its finished() handler ran."""
    from qgis.PyQt.QtCore import QCoreApplication

    deadline = time.monotonic() + timeout
    done_states = (QgsTask.Complete, QgsTask.Terminated)
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if task.status() in done_states and QgsApplication.taskManager().count() == 0:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"task {task.description()} did not finish within {timeout} s")
    for _ in range(5):
        QCoreApplication.processEvents()
        time.sleep(0.01)

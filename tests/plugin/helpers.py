"""Helpers for the plugin tests (importable by test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsTask

REPO = Path(__file__).resolve().parents[2]
UNTRAINED = "untrained:Unet:resnet18"


@contextmanager
def landcover_provider():
    """The Landcover Processing provider, registered for the block; removed after it only if this registered it
    (so a provider the plugin registered stays)."""
    from landcover_plugin.processing_provider.provider import LandcoverProvider

    registry = QgsApplication.processingRegistry()
    prov = registry.providerById("landcover")
    added = prov is None
    if added:
        prov = LandcoverProvider()
        assert registry.addProvider(prov)
    try:
        yield prov
    finally:
        if added:
            registry.removeProvider(prov)


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


def write_bundle(folder: Path, name: str = "tiny", gsd: float = 0.5, overlap: int | None = 16) -> Path:
    """A bundle JSON (with an empty weights file) the plugin can list and describe."""
    import json

    from landcover_plugin.contract import LANDCOVER_CLASSES

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.weights.h5").write_bytes(b"")
    path = folder / f"{name}.json"
    path.write_text(json.dumps({
        "format": 1, "name": name, "architecture": "Unet", "backbone": "resnet18", "tile_size": 128,
        "input_bands": 3, "gsd_m": gsd, "default_overlap": overlap, "default_batch_size": 4,
        "classes": [c.to_dict() for c in LANDCOVER_CLASSES], "weights": "tiny.weights.h5",
    }))
    return path


def bar_texts(bar, level) -> list[str]:
    """Title and text of every message shown in ``bar`` at ``level`` (pushMessage or pushWidget)."""
    texts = list(bar.get_messages(level)) if hasattr(bar, "get_messages") else []
    texts += [f"{item.title()}: {item.text()}" for item in bar.items() if item.level() == level]
    return texts


def python_without_ensurepip(tmp_path: Path) -> Path:
    """This machine's Python as Debian installs it without python3.X-venv: a standard library with no ensurepip.

    The interpreter is copied and its standard library linked entry by entry, ensurepip left out (the files
    python3.X-venv adds); Python finds its library beside the binary, so Debian's venv takes its real path.
    """
    from landcover_plugin.runtime_setup import find_base_python

    version = tuple(sys.version_info[:2])
    major_minor = f"{version[0]}.{version[1]}"
    base = Path(find_base_python(version))
    stdlib = Path(subprocess.run([str(base), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    prefix = tmp_path / "python-no-venv"
    lib = prefix / "lib" / f"python{major_minor}"
    lib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "ensurepip":
            (lib / entry.name).symlink_to(entry)
    (prefix / "bin").mkdir()
    python = prefix / "bin" / f"python{major_minor}"
    shutil.copy2(base.resolve(), python)
    return python


def write_class_raster(path: Path, data) -> Path:
    """A Landcover-like class GeoTIFF: ``data`` (uint8 rows × cols), EPSG:32633 at 1 m pixels, nodata 255."""
    from osgeo import gdal, osr

    rows, cols = data.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, 1, gdal.GDT_Byte)
    ds.SetGeoTransform([500000, 1, 0, 100, 0, -1])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(255)
    band.WriteArray(data)
    ds = None
    return path


@contextmanager
def backend_imports():
    """Import ``backend`` modules in a plugin test (to compare both sides of the contract), then forget them: the
    plugin itself never imports the backend, and test_plugin_load checks ``sys.modules`` for it."""
    before = set(sys.modules)
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            if name == "backend" or name.startswith("backend."):
                del sys.modules[name]

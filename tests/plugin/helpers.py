"""Helpers for the plugin tests (importable by test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsTask

REPO = Path(__file__).resolve().parents[2]
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

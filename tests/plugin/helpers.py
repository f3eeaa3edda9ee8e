"""Helpers for the plugin tests (importable by test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsTask

REPO = Path(__file__).resolve().parents[2]
UNTRAINED = "untrained:Unet:resnet18"


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

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

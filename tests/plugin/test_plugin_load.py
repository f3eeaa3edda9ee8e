"""The plugin shell: loads/unloads cleanly, registers Processing, stays light (no TensorFlow)."""

from __future__ import annotations

import subprocess
import sys

from qgis.core import QgsApplication
from qgis.PyQt.QtWidgets import QAction

import landcover_plugin
from tests.plugin.helpers import REPO


def test_load_and_unload(qgis_iface, qgis_processing) -> None:
    plugin = landcover_plugin.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert isinstance(plugin.action, QAction) and plugin.action.text().startswith("Land cover")
        assert not plugin.action.icon().isNull()
        assert plugin.toolbar.objectName() == "landcoverToolbar" and plugin.action in plugin.toolbar.actions()
        provider = QgsApplication.processingRegistry().providerById("landcover")
        assert provider is not None and provider.name() == "Landcover"
        assert {a.id() for a in provider.algorithms()} == {"landcover:segment", "landcover:segment_batch",
                                                           "landcover:vectorize", "landcover:setup_runtime"}
        assert [a.objectName() for a in plugin.menu_actions] == ["landcoverModels",
            "landcoverSetupRuntime", "landcoverRepairRuntime", "landcoverAddTensorflow"]
        plugin.run()  # opens the dialog
        assert plugin.dialog is not None and plugin.dialog.isVisible()
    finally:
        plugin.unload()
    assert QgsApplication.processingRegistry().providerById("landcover") is None
    assert plugin.action is None and plugin.dialog is None and not plugin.menu_actions and plugin.toolbar is None
    assert "tensorflow" not in sys.modules and "backend" not in sys.modules


def test_loading_is_light_and_fast() -> None:
    """Importing everything the plugin loads on start imports no TensorFlow and takes well under a second."""
    code = (
        # QGIS itself has qgis.core/gui loaded before any plugin: time only what the plugin adds.
        "import sys, time; import qgis.core, qgis.gui, qgis.PyQt.QtWidgets; t = time.perf_counter();"
        "import landcover_plugin.plugin, landcover_plugin.processing_provider.provider, landcover_plugin.dialog;"
        "dt = time.perf_counter() - t;"
        "heavy = ('tensorflow', 'segmentation_models', 'backend', 'keras', 'onnxruntime', 'rasterio', 'tqdm');"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy];"
        "assert sys.modules['landcover_plugin.contract'].__file__.endswith('backend/contract.py');"
        "print(dt, bad); assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    seconds = float(out.stdout.split()[0])
    assert seconds < 1.0, out.stdout


def test_metadata_is_complete() -> None:
    import configparser

    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt")
    general = meta["general"]
    for key in ("name", "description", "about", "version", "qgisMinimumVersion", "author", "email", "tags", "icon",
                "hasProcessingProvider"):
        assert general.get(key), key
    assert general["qgisMinimumVersion"] == "3.22" and general["hasProcessingProvider"] == "yes"
    assert (REPO / "landcover_plugin" / general["icon"]).is_file()
    assert (REPO / "landcover_plugin" / "metadata.txt").read_text() == (REPO / "metadata.txt").read_text()

"""Plugin entry: menu entries, toolbar button, Processing provider; everything else loads on first use."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

ICON = Path(__file__).resolve().parent / "icon.png"
MENU = "&Landcover"
TOOLBAR = "landcoverToolbar"  # objectName: QGIS remembers the toolbar's visibility and place under it


class LandcoverPlugin:
    """What QGIS instantiates through ``classFactory``."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.action: QAction | None = None
        self.toolbar = None
        self.menu_actions: list[QAction] = []
        self.provider = None
        self.dialog = None
        self._models = None
        self._runtime = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        """Register the Processing provider (also called by qgis_process without a GUI)."""
        from .processing_provider.provider import LandcoverProvider

        if self.provider is None:
            self.provider = LandcoverProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        """Add the menu entries and the plugin's own toolbar.

        The button lives in a *Landcover* toolbar of its own, not the Raster toolbar: that one is hidden in a
        fresh QGIS profile, a new plugin toolbar is shown.
        """
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "Land cover map…", self.iface.mainWindow())
        self.action.setObjectName("landcoverRun")
        self.action.setToolTip("Landcover: segment an orthophoto into background, building, woodland, water, road")
        self.action.triggered.connect(self.run)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.toolbar = self.iface.addToolBar("Landcover")
        self.toolbar.setObjectName(TOOLBAR)
        self.toolbar.setToolTip("Landcover")
        self.toolbar.addAction(self.action)
        models = QAction("Models…", self.iface.mainWindow())
        models.setObjectName("landcoverModels")
        models.setToolTip("Landcover: installed models; add a Deepness ONNX model or a bundle, remove one")
        models.triggered.connect(self.open_models)
        self.iface.addPluginToRasterMenu(MENU, models)
        self.menu_actions.append(models)
        for name, label, tensorflow, reinstall in (
            ("landcoverSetupRuntime", "Set up runtime…", False, False),
            ("landcoverRepairRuntime", "Repair / reinstall runtime…", False, True),
            ("landcoverAddTensorflow", "Add TensorFlow runtime…", True, False),
        ):
            action = QAction(label, self.iface.mainWindow())
            action.setObjectName(name)
            action.triggered.connect(lambda _=False, t=tensorflow, r=reinstall: self.setup_runtime(t, r))
            self.iface.addPluginToRasterMenu(MENU, action)
            self.menu_actions.append(action)

    @property
    def runtime(self):
        """The :class:`~landcover_plugin.runtime_ui.RuntimeManager` (created on first use)."""
        if self._runtime is None:
            from .runtime_ui import RuntimeManager

            self._runtime = RuntimeManager(self.iface, self.open_at)
        return self._runtime

    def setup_runtime(self, tensorflow: bool = False, reinstall: bool = False):
        """Set up (or repair, or extend with TensorFlow) the managed worker runtime in the background."""
        if reinstall:  # repairing an ONNX+TensorFlow runtime keeps TensorFlow
            tensorflow = tensorflow or self.runtime.status().has_tensorflow
        return self.runtime.start(tensorflow, reinstall)

    def open_models(self):
        """Open the model manager (the dialog's model list follows what it adds or removes)."""
        from .model_manager import ModelManagerDialog

        def changed(select: str | None) -> None:
            if self.dialog is not None:
                self.dialog.refresh_models(select)

        manager = ModelManagerDialog(self.iface.mainWindow(), on_changed=changed)
        manager.show()
        self._models = manager  # keep a Python reference while it is open
        return manager

    def open_at(self, field: str) -> None:
        """Open the dialog at ``field`` (what an error's fix button does)."""
        self.run()
        self.dialog.focus_field(field)

    def unload(self) -> None:
        """Remove everything initGui added."""
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.action.deleteLater()
            self.action = None
        if self.toolbar is not None:
            main = self.iface.mainWindow()
            if hasattr(main, "removeToolBar"):
                main.removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        for action in self.menu_actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.menu_actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None

    def run(self) -> None:
        """Open (or raise) the dialog."""
        from .dialog import LandcoverDialog

        if self.dialog is None:
            self.dialog = LandcoverDialog(self.iface, runtime=self.runtime)
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()

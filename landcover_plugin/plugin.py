"""Plugin entry: menu entries, toolbar button, Processing provider; everything else loads on first use."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

ICON = Path(__file__).resolve().parent / "icon.png"
MENU = "&Landcover"


class LandcoverPlugin:
    """What QGIS instantiates through ``classFactory``."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.action: QAction | None = None
        self.runtime_actions: list[QAction] = []
        self.provider = None
        self.dialog = None
        self._runtime = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        """Register the Processing provider (also called by qgis_process without a GUI)."""
        from .processing_provider.provider import LandcoverProvider

        if self.provider is None:
            self.provider = LandcoverProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        """Add the menu entry and toolbar button."""
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "Land cover map…", self.iface.mainWindow())
        self.action.setObjectName("landcoverRun")
        self.action.setToolTip("Landcover: segment an orthophoto into background, building, woodland, water, road")
        self.action.triggered.connect(self.run)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.iface.addRasterToolBarIcon(self.action)
        for name, label, tensorflow, reinstall in (
            ("landcoverSetupRuntime", "Set up runtime…", False, False),
            ("landcoverRepairRuntime", "Repair / reinstall runtime…", False, True),
            ("landcoverAddTensorflow", "Add TensorFlow runtime…", True, False),
        ):
            action = QAction(label, self.iface.mainWindow())
            action.setObjectName(name)
            action.triggered.connect(lambda _=False, t=tensorflow, r=reinstall: self.setup_runtime(t, r))
            self.iface.addPluginToRasterMenu(MENU, action)
            self.runtime_actions.append(action)

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

    def open_at(self, field: str) -> None:
        """Open the dialog at ``field`` (what an error's fix button does)."""
        self.run()
        self.dialog.focus_field(field)

    def unload(self) -> None:
        """Remove everything initGui added."""
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeRasterToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        for action in self.runtime_actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.runtime_actions = []
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

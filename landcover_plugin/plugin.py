"""Plugin entry: menu entry, toolbar button, Processing provider; everything else loads on first use."""

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
        self.provider = None
        self.dialog = None

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

    def unload(self) -> None:
        """Remove everything initGui added."""
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeRasterToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
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
            self.dialog = LandcoverDialog(self.iface)
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()

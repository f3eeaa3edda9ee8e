"""The Processing provider: ``landcover:segment``, ``landcover:segment_batch``, ``landcover:vectorize`` and
``landcover:setup_runtime``."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import SegmentAlgorithm, SegmentBatchAlgorithm, SetupRuntimeAlgorithm, VectorizeAlgorithm

ICON = Path(__file__).resolve().parent.parent / "icon.png"


class LandcoverProvider(QgsProcessingProvider):
    """Landcover algorithms for the toolbox, the modeler and qgis_process."""

    def id(self) -> str:  # noqa: A003 - QGIS API name
        return "landcover"

    def name(self) -> str:
        return "Landcover"

    def longName(self) -> str:  # noqa: N802
        return "Landcover: land-cover segmentation of orthophotos"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802
        self.addAlgorithm(SegmentAlgorithm())
        self.addAlgorithm(SegmentBatchAlgorithm())
        self.addAlgorithm(VectorizeAlgorithm())
        self.addAlgorithm(SetupRuntimeAlgorithm())

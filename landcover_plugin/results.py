"""Put finished results on the map: styled layers in a "Landcover" group."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsVectorLayer

from .errors import OutputError
from .job import Outcome
from .styling import style_class_layer, style_polygon_layer

GROUP_NAME = "Landcover"


@dataclass
class AddedLayers:
    """Layers added for one outcome."""

    classes: QgsRasterLayer
    confidence: QgsRasterLayer | None = None
    polygons: QgsVectorLayer | None = None


def landcover_group(project: QgsProject) -> QgsLayerTreeGroup:
    """The "Landcover" group at the top of the layer tree (created on first use)."""
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP_NAME)
    if group is None:
        group = root.insertGroup(0, GROUP_NAME)
    return group


def add_results(outcome: Outcome, project: QgsProject | None = None) -> AddedLayers:
    """Load the outputs as layers named after the model, styled with its classes.

    Raises:
        OutputError: the class raster cannot be loaded.
    """
    project = project or QgsProject.instance()
    name = outcome.model.name
    classes = QgsRasterLayer(str(outcome.output), name, "gdal")
    if not classes.isValid():
        raise OutputError(f"QGIS cannot open the result {outcome.output}; see the Landcover log for details")
    style_class_layer(classes, outcome.model.classes)
    group = landcover_group(project)
    added = AddedLayers(classes)
    if outcome.polygons is not None:
        polygons = QgsVectorLayer(str(outcome.polygons), f"{name} polygons", "ogr")
        if polygons.isValid():
            style_polygon_layer(polygons, outcome.model.classes)
            project.addMapLayer(polygons, False)
            group.addLayer(polygons)
            added.polygons = polygons
    project.addMapLayer(classes, False)
    group.addLayer(classes)
    if outcome.confidence is not None and outcome.confidence.is_file():
        confidence = QgsRasterLayer(str(outcome.confidence), f"{name} confidence", "gdal")
        if confidence.isValid():
            project.addMapLayer(confidence, False)
            node = group.addLayer(confidence)
            node.setItemVisibilityChecked(False)  # shown on demand; it would hide the classes
            added.confidence = confidence
    return added

"""Put finished results on the map: styled layers in a "Landcover" group, newest first, above the input.

Result layers are named after the input and the model (:func:`styling.result_layer_name`). Each run's layers go
to the TOP of the *Landcover* group (class polygons, class raster, then the hidden confidence raster), and the
group itself sits above the input layer in the layer tree, so the newest result is what the map shows. The
Processing algorithm places its loaded outputs with the same :func:`place_result_layer`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from qgis.core import (
    QgsLayerTree,
    QgsLayerTreeGroup,
    QgsLayerTreeNode,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .errors import OutputError
from .job import Outcome
from .styling import result_layer_name, style_class_layer, style_polygon_layer

GROUP_NAME = "Landcover"
RUN_PROPERTY = "landcover/run"  # layer-tree node property: which run a result belongs to
RANK_PROPERTY = "landcover/rank"  # its place within the run: polygons, classes, confidence
RANK_POLYGONS, RANK_CLASSES, RANK_CONFIDENCE = 0, 1, 2


@dataclass
class AddedLayers:
    """Layers added for one outcome."""

    classes: QgsRasterLayer
    confidence: QgsRasterLayer | None = None
    polygons: QgsVectorLayer | None = None


def _first_of(node: QgsLayerTreeNode, group_name: str, layer_id: str) -> str | None:
    """Depth-first (= drawing order, top first): ``"group"`` or ``"layer"``, whichever comes first; None: neither."""
    for child in node.children():
        if QgsLayerTree.isGroup(child):
            if child.name() == group_name:
                return "group"
            found = _first_of(child, group_name, layer_id)
            if found:
                return found
        elif QgsLayerTree.isLayer(child) and child.layerId() == layer_id:
            return "layer"
    return None


def landcover_group(project: QgsProject, input_layer_id: str | None = None) -> QgsLayerTreeGroup:
    """The "Landcover" group, created on first use: directly above the input layer when it is in the layer tree
    (moved there if it is below it), else at the top of the tree."""
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP_NAME)
    input_node = root.findLayer(input_layer_id) if input_layer_id else None
    if input_node is None:
        return group if group is not None else root.insertGroup(0, GROUP_NAME)
    if group is not None and _first_of(root, GROUP_NAME, input_layer_id) == "group":
        return group  # already drawn above the input (or the input sits inside it)
    parent = input_node.parent()
    index = next(i for i, child in enumerate(parent.children())
                 if QgsLayerTree.isLayer(child) and child.layerId() == input_layer_id)
    if group is None:
        return parent.insertGroup(index, GROUP_NAME)
    # Move: insert a copy first, then drop the old node, so the layers never leave the tree (and the project).
    moved = group.clone()
    parent.insertChildNode(index, moved)
    group.parent().removeChildNode(group)
    return moved


def place_result_layer(project: QgsProject, layer: QgsMapLayer, run: str, rank: int,
                       input_layer_id: str | None = None, visible: bool = True) -> None:
    """Put ``layer`` (added to ``project``, in the tree or not) at the top of the Landcover group, after the layers
    of the same ``run`` with a lower ``rank``; the group above the input layer."""
    group = landcover_group(project, input_layer_id)
    root = project.layerTreeRoot()
    old = root.findLayer(layer.id())
    index = 0
    for child in group.children():  # this run's layers are at the top; keep them in rank order
        if child.customProperty(RUN_PROPERTY) != run or int(child.customProperty(RANK_PROPERTY, 0)) >= rank:
            break
        index += 1
    node = group.insertLayer(index, layer)
    node.setCustomProperty(RUN_PROPERTY, run)
    node.setCustomProperty(RANK_PROPERTY, rank)
    node.setItemVisibilityChecked(visible)
    if old is not None and old.parent() is not None:
        old.parent().removeChildNode(old)


def new_run_id() -> str:
    """An identifier shared by the layers of one run."""
    return uuid.uuid4().hex


def add_results(outcome: Outcome, project: QgsProject | None = None,
                input_layer_id: str | None = None) -> AddedLayers:
    """Load the outputs as layers named after the input and the model, styled with its classes, at the top of
    the Landcover group (which is placed above ``input_layer_id``'s layer when given).

    Raises:
        OutputError: the class raster cannot be loaded.
    """
    project = project or QgsProject.instance()
    model = outcome.model.name
    classes = QgsRasterLayer(str(outcome.output), result_layer_name(outcome.layer_name, model), "gdal")
    if not classes.isValid():
        raise OutputError(f"QGIS cannot open the result {outcome.output}; see the Landcover log for details")
    style_class_layer(classes, outcome.model.classes)
    run = new_run_id()
    added = AddedLayers(classes)
    project.addMapLayer(classes, False)
    place_result_layer(project, classes, run, RANK_CLASSES, input_layer_id)
    if outcome.polygons is not None:
        polygons = QgsVectorLayer(str(outcome.polygons), result_layer_name(outcome.layer_name, model, "polygons"),
                                  "ogr")
        if polygons.isValid():
            style_polygon_layer(polygons, outcome.model.classes)
            project.addMapLayer(polygons, False)
            place_result_layer(project, polygons, run, RANK_POLYGONS, input_layer_id)
            added.polygons = polygons
    if outcome.confidence is not None and outcome.confidence.is_file():
        confidence = QgsRasterLayer(str(outcome.confidence),
                                    result_layer_name(outcome.layer_name, model, "confidence"), "gdal")
        if confidence.isValid():
            project.addMapLayer(confidence, False)
            # shown on demand; it would hide the classes
            place_result_layer(project, confidence, run, RANK_CONFIDENCE, input_layer_id, visible=False)
            added.confidence = confidence
    return added

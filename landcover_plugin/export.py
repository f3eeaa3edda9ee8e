"""Areas, pixel windows and exporting any QGIS raster layer to a GeoTIFF the worker can read.

The worker reads files with rasterio. File-based GDAL rasters are passed by path with a pixel window
for the chosen area; everything else (WMS/XYZ, VRT, in-memory, other providers) and layers that must
be resampled to the model's resolution are rendered through QGIS into a temporary GeoTIFF first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsFeatureRequest,
    QgsFeedback,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRasterRenderer,
    QgsRectangle,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsWkbTypes,
)

from .contract import METRES_PER_DEGREE_LON_EQUATOR, degrees_to_metres, ground_distance_m, ground_pixel_size
from .errors import CancelledError, InputError, OutputError

#: Largest raster (pixels) the plugin will export, to keep a stray whole-WMS export from filling the disk.
MAX_EXPORT_PIXELS = 40000 * 40000

AREA_LAYER = "layer"
AREA_EXTENT = "extent"
AREA_POLYGONS = "polygons"


@dataclass
class Area:
    """The part of the layer to segment, in the layer's CRS."""

    kind: str = AREA_LAYER
    extent: QgsRectangle | None = None
    geometries: list[QgsGeometry] = field(default_factory=list)

    def describe(self) -> str:
        """Short label for messages."""
        return {AREA_LAYER: "whole layer", AREA_EXTENT: "map extent", AREA_POLYGONS: "polygon features"}[self.kind]


def extent_area(extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem, layer: QgsRasterLayer) -> Area:
    """Area for a rectangle (e.g. the map canvas extent) given in ``extent_crs``."""
    rect = QgsRectangle(extent)
    if extent_crs.isValid() and extent_crs != layer.crs():
        transform = QgsCoordinateTransform(extent_crs, layer.crs(), QgsProject.instance())
        rect = transform.transformBoundingBox(rect)
    return Area(AREA_EXTENT, rect)


def polygon_area(polygons: QgsVectorLayer, layer: QgsRasterLayer, selected_only: bool = False) -> Area:
    """Area covering the features of a polygon layer (or its selection), geometries in the layer's CRS.

    Raises:
        InputError: the layer has no (selected) polygon features.
    """
    if polygons is None or polygons.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise InputError("choose a polygon layer for the area (or pick 'whole layer' / 'map extent')")
    if selected_only:
        if polygons.selectedFeatureCount() == 0:
            raise InputError(
                f"no features are selected in {polygons.name()!r}; select polygons or untick 'selected features only'"
            )
        features = polygons.getSelectedFeatures()
    else:
        features = polygons.getFeatures(QgsFeatureRequest().setNoAttributes())
    transform = None
    if polygons.crs() != layer.crs():
        transform = QgsCoordinateTransform(polygons.crs(), layer.crs(), QgsProject.instance())
    geoms: list[QgsGeometry] = []
    for feature in features:
        geom = QgsGeometry(feature.geometry())
        if geom.isEmpty():
            continue
        if transform is not None:
            geom.transform(transform)
        geoms.append(geom)
    if not geoms:
        raise InputError(f"{polygons.name()!r} has no polygon features to use as the area")
    rect = QgsRectangle(geoms[0].boundingBox())
    for geom in geoms[1:]:
        rect.combineExtentWith(geom.boundingBox())
    return Area(AREA_POLYGONS, rect, geoms)


def layer_file_path(layer: QgsRasterLayer) -> Path | None:
    """Local file behind a GDAL layer that the worker can read directly, else None (export needed)."""
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or ""
    if not path or parts.get("layerName") or path.startswith("/vsi"):
        return None
    p = Path(path)
    # VRTs can reference relative or remote sources the worker cannot resolve; export them.
    if not p.is_file() or p.suffix.lower() == ".vrt":
        return None
    return p


def metres_per_unit(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle | None = None) -> float:
    """Ground metres per map unit of ``crs`` along x at the extent's centre (degrees: at its latitude; a
    projection whose scale there is off by more than the contract's tolerance, like Web Mercator: measured on the
    ellipsoid, as the backend does)."""
    if crs.isGeographic():
        lat = extent.center().y() if extent is not None else 0.0
        return METRES_PER_DEGREE_LON_EQUATOR * max(math.cos(math.radians(lat)), 0.01)
    factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters)
    factor = factor if factor > 0 else 1.0
    if extent is None:
        return factor
    centre = extent.center()
    span = max(extent.width(), extent.height()) / 1000 or 1.0  # a short, straight span at the centre
    ground = ground_size_m(crs, centre, span)
    if ground is None:
        return factor
    gx, gy = ground_pixel_size((span * factor, span * factor), ground)
    return gx / span


def has_native_pixels(layer: QgsRasterLayer) -> bool:
    """Whether the layer has a fixed pixel grid (false for WMS/XYZ and other rendered services)."""
    provider = layer.dataProvider()
    return bool(provider.capabilities() & QgsRasterDataProvider.Size) and layer.width() > 0


def ground_size_m(crs: QgsCoordinateReferenceSystem, centre: QgsPointXY, span: float,
                  span_y: float | None = None) -> tuple[float, float] | None:
    """Ground metres of a ``span`` x ``span_y`` (map units) cell centred at ``centre``, on the WGS84 ellipsoid
    (the contract's formula, as the backend measures it); None when the CRS cannot reach WGS84."""
    span_y = span if span_y is None else span_y
    to_wgs84 = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    x, y = centre.x(), centre.y()
    try:
        pts = [to_wgs84.transform(QgsPointXY(px, py)) for px, py in
               ((x - span / 2, y), (x + span / 2, y), (x, y - span_y / 2), (x, y + span_y / 2))]
    except QgsCsException:
        return None
    return (ground_distance_m(pts[0].x(), pts[0].y(), pts[1].x(), pts[1].y()),
            ground_distance_m(pts[2].x(), pts[2].y(), pts[3].x(), pts[3].y()))


def layer_pixel_size_m(layer: QgsRasterLayer) -> tuple[float, float] | None:
    """The layer's pixel width and height in metres, as the backend measures them (None for services)."""
    if not has_native_pixels(layer):
        return None
    px, py = abs(layer.rasterUnitsPerPixelX()), abs(layer.rasterUnitsPerPixelY())
    if layer.crs().isGeographic():
        return degrees_to_metres(px, py, layer.extent().center().y())
    factor = QgsUnitTypes.fromUnitToUnitFactor(layer.crs().mapUnits(), QgsUnitTypes.DistanceMeters)
    nominal = (px * (factor or 1.0), py * (factor or 1.0))
    ground = ground_size_m(layer.crs(), layer.extent().center(), px, py)
    return nominal if ground is None else ground_pixel_size(nominal, ground)


def describe_pixel_size(size: tuple[float, float] | None) -> str:
    """``0.25 m`` (or ``0.25 x 0.3 m``) for messages."""
    if not size:
        return "no fixed resolution (service)"
    return f"{size[0]:.3g} m" if math.isclose(size[0], size[1], rel_tol=0.01) else f"{size[0]:.3g} x {size[1]:.3g} m"


def clip_to_layer(layer: QgsRasterLayer, area: Area) -> QgsRectangle:
    """The area's rectangle intersected with the layer's extent.

    Raises:
        InputError: they do not overlap.
    """
    if area.kind == AREA_LAYER or area.extent is None:
        return QgsRectangle(layer.extent())
    rect = area.extent.intersect(layer.extent())
    if rect.isEmpty() or rect.width() <= 0 or rect.height() <= 0:
        raise InputError(
            f"the chosen area ({area.describe()}) does not overlap layer {layer.name()!r}; pan the map over the "
            "layer or choose other polygons"
        )
    return rect


def window_for_extent(layer: QgsRasterLayer, rect: QgsRectangle) -> tuple[int, int, int, int]:
    """Pixel window ``(col_off, row_off, width, height)`` of ``layer`` covering ``rect`` (layer CRS)."""
    ext = layer.extent()
    px, py = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    # Small epsilon so an extent exactly on a pixel edge does not grab a whole extra row/column.
    eps = 1e-6
    col0 = max(0, math.floor((rect.xMinimum() - ext.xMinimum()) / px + eps))
    col1 = min(layer.width(), math.ceil((rect.xMaximum() - ext.xMinimum()) / px - eps))
    row0 = max(0, math.floor((ext.yMaximum() - rect.yMaximum()) / py + eps))
    row1 = min(layer.height(), math.ceil((ext.yMaximum() - rect.yMinimum()) / py - eps))
    if col1 <= col0 or row1 <= row0:
        raise InputError(f"the chosen area covers no pixel of layer {layer.name()!r}")
    return col0, row0, col1 - col0, row1 - row0


def window_extent(layer: QgsRasterLayer, window: tuple[int, int, int, int]) -> QgsRectangle:
    """Map extent of a pixel window (for checks and tests)."""
    ext = layer.extent()
    px, py = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    col, row, w, h = window
    x0, y1 = ext.xMinimum(), ext.yMaximum()
    return QgsRectangle(x0 + col * px, y1 - (row + h) * py, x0 + (col + w) * px, y1 - row * py)


@dataclass
class ExportSpec:
    """A raster to render through QGIS into a GeoTIFF (prepared on the main thread, run in a task)."""

    provider: QgsRasterDataProvider  # a clone: providers are not thread-safe, clones may move threads
    renderer: QgsRasterRenderer | None  # set for ARGB services (WMS/XYZ): write what QGIS draws, as RGBA
    crs: QgsCoordinateReferenceSystem
    extent: QgsRectangle
    width: int
    height: int
    transform_context: QgsCoordinateTransformContext


def export_spec(layer: QgsRasterLayer, rect: QgsRectangle, pixel_size: float | None) -> ExportSpec:
    """Plan an export of ``rect`` (layer CRS) at ``pixel_size`` map units (None: the layer's own).

    Raises:
        InputError: no pixel size is known, or the export would be unreasonably large.
    """
    if pixel_size is None:
        if not has_native_pixels(layer):
            raise InputError(
                f"{layer.name()!r} has no native resolution (web service); choose a model with a resolution or tick "
                "'Resample to the model's resolution'"
            )
        pixel_size = (abs(layer.rasterUnitsPerPixelX()) + abs(layer.rasterUnitsPerPixelY())) / 2
    width = max(1, round(rect.width() / pixel_size))
    height = max(1, round(rect.height() / pixel_size))
    if width * height > MAX_EXPORT_PIXELS:
        raise InputError(
            f"exporting {layer.name()!r} for this area would make a {width} x {height} pixel raster; choose a smaller "
            "area (map extent or polygons)"
        )
    provider = layer.dataProvider().clone()
    renderer = None
    if provider.dataType(1) in (Qgis.ARGB32, Qgis.ARGB32_Premultiplied):
        renderer = layer.renderer().clone()
    return ExportSpec(provider, renderer, layer.crs(), QgsRectangle(rect), width, height,
                      QgsProject.instance().transformContext())


def run_export(spec: ExportSpec, out_path: Path, feedback: QgsFeedback | None = None) -> Path:
    """Write the planned raster to a GeoTIFF (safe in a background thread); ``feedback`` can cancel it.

    Raises:
        CancelledError: ``feedback`` was cancelled.
        OutputError: QGIS could not write it.
    """
    # The writer wants a QgsRasterBlockFeedback; Processing and tasks hand us a plain QgsFeedback.
    block_feedback = QgsRasterBlockFeedback()
    if feedback is not None:
        if feedback.isCanceled():
            block_feedback.cancel()
        feedback.canceled.connect(block_feedback.cancel)
    pipe = QgsRasterPipe()
    if not pipe.set(spec.provider):
        raise InputError("QGIS cannot read this layer for export; save it as a GeoTIFF and use that")
    if spec.renderer is not None:
        pipe.set(spec.renderer)
    writer = QgsRasterFileWriter(str(out_path))
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
    err = writer.writeRaster(pipe, spec.width, spec.height, spec.extent, spec.crs, spec.transform_context,
                             block_feedback)
    if err == QgsRasterFileWriter.WriteCanceled or block_feedback.isCanceled():
        Path(out_path).unlink(missing_ok=True)
        raise CancelledError("cancelled during the export; no output was kept")
    if err != QgsRasterFileWriter.NoError:
        raise OutputError(f"exporting the layer to {out_path} failed (QGIS writer error {int(err)}); "
                                   "check free disk space or save the layer as a GeoTIFF first")
    return out_path

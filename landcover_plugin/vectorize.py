"""Class raster to polygons (class id, class name, area in m²), and masking to polygon areas.

Uses GDAL's polygonize/rasterize directly (GDAL's Python bindings ship with QGIS) rather than the
Processing ``gdal:polygonize`` algorithm, so it works inside a background QgsTask without Processing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from osgeo import gdal, ogr, osr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsDistanceArea,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsRectangle,
    QgsUnitTypes,
    QgsVectorFileWriter,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .contract import (
    LANDCOVER_CLASSES,
    NODATA,
    TAG_CLASSES,
    ClassInfo,
    LandcoverError,
    areas_csv,
    areas_table,
    classes_from_dicts,
    degrees_to_metres,
    output_files,
    write_text_atomic,
)
from .errors import InputError, OutputError


def polygon_fields() -> QgsFields:
    """Attribute table of the polygons layer."""
    fields = QgsFields()
    fields.append(QgsField("class_id", QVariant.Int))
    fields.append(QgsField("class_name", QVariant.String, len=64))
    fields.append(QgsField("area_m2", QVariant.Double))
    return fields


def classes_for_raster(raster: str | Path) -> tuple[ClassInfo, ...]:
    """Classes recorded with a class raster: its class metadata tag, its areas JSON, or LandCover.ai."""
    ds = gdal.Open(str(raster))
    meta = ds.GetMetadataItem(TAG_CLASSES) if ds is not None else None
    ds = None
    try:
        if meta:
            return classes_from_dicts(json.loads(meta))
    except (ValueError, LandcoverError):
        pass
    grey = (128, 128, 128)
    colours = {c.id: c.color for c in LANDCOVER_CLASSES}
    try:
        data = json.loads(output_files(raster).areas_json.read_text(encoding="utf-8"))
        return tuple(ClassInfo(int(c["id"]), str(c["name"]), colours.get(int(c["id"]), grey)) for c in data["classes"])
    except (OSError, ValueError, KeyError, TypeError, LandcoverError):
        return LANDCOVER_CLASSES


def class_names_for_raster(raster: str | Path, classes: Sequence[ClassInfo] | None = None) -> dict[int, str]:
    """Class names by id: the given classes, else those recorded with the raster."""
    return {c.id: c.name for c in (classes or classes_for_raster(raster))}


def area_calculator(crs: QgsCoordinateReferenceSystem, context: QgsCoordinateTransformContext,
                    ellipsoid: str = "EPSG:7030", extent: QgsRectangle | None = None) -> Callable[[QgsGeometry], float]:
    """Area in m² on the ground, by the backend's rule: ellipsoidal in degrees and in projections whose scale at
    ``extent`` is off by more than the contract's tolerance (Web Mercator), planar in true-to-scale ones."""
    if crs.isGeographic() or (extent is not None and _scale_is_distorted(crs, extent)):
        da = QgsDistanceArea()
        da.setSourceCrs(crs, context)
        da.setEllipsoid(ellipsoid)
        return lambda g: da.convertAreaMeasurement(da.measureArea(g), QgsUnitTypes.AreaSquareMeters)
    factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters) or 1.0
    return lambda g: g.area() * factor * factor


def row_pixel_areas_m2(crs: QgsCoordinateReferenceSystem, gt: Sequence[float], width: int, height: int):
    """Ground area of a pixel in each row (middle column), as the backend measures it; None where one area fits
    all rows (true-to-scale projections, or no CRS)."""
    import numpy as np

    if not crs.isValid():
        return None
    px, py = abs(gt[1]), abs(gt[5])
    centres = [(gt[0] + gt[1] * width / 2, gt[3] + gt[5] * (r + 0.5)) for r in range(height)]
    if crs.isGeographic():
        return np.array([np.prod(degrees_to_metres(px, py, y)) for _, y in centres])
    extent = QgsRectangle(gt[0], gt[3] + gt[5] * height, gt[0] + gt[1] * width, gt[3])
    if not _scale_is_distorted(crs, extent):
        return None
    from .export import ground_size_m

    sizes = [ground_size_m(crs, QgsPointXY(x, y), px, py) for x, y in centres]
    if any(s is None for s in sizes):
        return None
    return np.array([w * h for w, h in sizes])


def _scale_is_distorted(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle) -> bool:
    from .export import metres_per_unit

    nominal = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters) or 1.0
    return metres_per_unit(crs, extent) != nominal  # it returns the CRS's own factor unless past the tolerance


def iter_class_polygons(raster: str | Path, band: int = 1,
                        is_canceled: Callable[[], bool] = lambda: False) -> Iterator[tuple[int, QgsGeometry]]:
    """Connected regions of equal class as ``(class_id, polygon)``; nodata pixels are skipped.

    Raises:
        InputError: the raster cannot be read.
    """
    ds = gdal.Open(str(raster))
    if ds is None:
        raise InputError(f"cannot open class raster {raster}; choose a raster written by Landcover")
    if not 1 <= band <= ds.RasterCount:
        raise InputError(f"{raster} has {ds.RasterCount} band(s); band {band} does not exist")
    rb = ds.GetRasterBand(band)
    srs = osr.SpatialReference()
    if ds.GetProjection():
        srs.ImportFromWkt(ds.GetProjection())
    mem = ogr.GetDriverByName("Memory").CreateDataSource("polygons")
    lyr = mem.CreateLayer("polygons", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))

    def progress(_complete: float, _message: str, _data: Any) -> int:
        return 0 if is_canceled() else 1

    # 8-connectedness keeps diagonal runs of roads/buildings in one polygon.
    gdal.Polygonize(rb, rb.GetMaskBand(), lyr, 0, ["8CONNECTED=8"], callback=progress)
    lyr.ResetReading()
    for feature in lyr:
        if is_canceled():
            return
        geom = QgsGeometry()
        geom.fromWkb(bytes(feature.GetGeometryRef().ExportToIsoWkb()))
        yield int(feature.GetField(0)), geom


def polygon_features(raster: str | Path, names: dict[int, str], crs: QgsCoordinateReferenceSystem,
                     context: QgsCoordinateTransformContext, band: int = 1,
                     is_canceled: Callable[[], bool] = lambda: False) -> Iterator[QgsFeature]:
    """Features with class id, name and area for every region of the raster."""
    fields = polygon_fields()
    ds = gdal.Open(str(raster))
    gt, width, height = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
    ds = None
    extent = QgsRectangle(gt[0], gt[3] + gt[5] * height, gt[0] + gt[1] * width, gt[3])
    measure = area_calculator(crs, context, extent=extent)
    for class_id, geom in iter_class_polygons(raster, band, is_canceled):
        feature = QgsFeature(fields)
        feature.setGeometry(geom)
        feature.setAttributes([class_id, names.get(class_id, f"class {class_id}"), round(measure(geom), 3)])
        yield feature


def write_polygons(raster: str | Path, out_path: str | Path, names: dict[int, str],
                   crs: QgsCoordinateReferenceSystem, context: QgsCoordinateTransformContext,
                   is_canceled: Callable[[], bool] = lambda: False) -> Path:
    """Vectorise a class raster into a GeoPackage (or any OGR format by extension).

    Raises:
        OutputError: the file cannot be written.
    """
    out_path = Path(out_path)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = QgsVectorFileWriter.driverForExtension(out_path.suffix) or "GPKG"
    options.layerName = out_path.stem
    writer = QgsVectorFileWriter.create(str(out_path), polygon_fields(), QgsWkbTypes.Polygon, crs, context, options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise OutputError(f"cannot write polygons to {out_path} ({writer.errorMessage()})")
    for feature in polygon_features(raster, names, crs, context, is_canceled=is_canceled):
        writer.addFeature(feature)
    del writer  # closes the file
    return out_path


def mask_outside(raster: str | Path, geometries: Sequence[QgsGeometry], nodata: float = 255) -> None:
    """Set pixels outside ``geometries`` (raster CRS) to ``nodata``, in place."""
    ds = gdal.Open(str(raster), gdal.GA_Update)
    if ds is None:
        raise OutputError(f"cannot update {raster} to mask it to the polygons")
    srs = osr.SpatialReference()
    if ds.GetProjection():
        srs.ImportFromWkt(ds.GetProjection())
    mem = ogr.GetDriverByName("Memory").CreateDataSource("mask")
    lyr = mem.CreateLayer("mask", srs, ogr.wkbMultiPolygon)
    for geom in geometries:
        feature = ogr.Feature(lyr.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkb(bytes(geom.asWkb())))
        lyr.CreateFeature(feature)
    # Burn the polygons into a byte mask, then blank everything outside (RasterizeLayer's INVERT option
    # proved unreliable with GDAL 3.6 here).
    mask_ds = gdal.GetDriverByName("MEM").Create("", ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Byte)
    mask_ds.SetGeoTransform(ds.GetGeoTransform())
    mask_ds.SetProjection(ds.GetProjection())
    gdal.RasterizeLayer(mask_ds, [1], lyr, burn_values=[1], options=["ALL_TOUCHED=FALSE"])
    outside = mask_ds.GetRasterBand(1).ReadAsArray() == 0
    for i in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(i)
        data = band.ReadAsArray()
        data[outside] = nodata
        band.WriteArray(data)
    ds.FlushCache()
    ds = None


def recount_areas(raster: str | Path, classes: Sequence[ClassInfo], previous: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Class areas of a (masked) class raster, in the contract's ``areas`` form; rewrites the JSON/CSV beside it."""
    import numpy as np  # QGIS ships numpy; imported here so loading the plugin stays light

    ds = gdal.Open(str(raster))
    data = ds.GetRasterBand(1).ReadAsArray()
    gt = ds.GetGeoTransform()
    crs = QgsCoordinateReferenceSystem.fromWkt(ds.GetProjection())
    ds = None
    pixel_area = (previous or {}).get("pixel_area_m2") or abs(gt[1] * gt[5])
    counts = np.bincount(data[data != NODATA].ravel(), minlength=len(classes))[: len(classes)]
    rows = row_pixel_areas_m2(crs, gt, data.shape[1], data.shape[0])
    by_class = None
    if rows is not None:  # the backend's rule: row by row where the ground pixel varies
        weights = np.broadcast_to(rows[:, None], data.shape)
        by_class = np.bincount(data.ravel(), weights.ravel(), minlength=NODATA + 1)[: len(classes)].tolist()
    areas = areas_table(classes, [int(n) for n in counts], float(pixel_area), int(data.size - counts.sum()),
                        by_class)
    files = output_files(raster)
    for path, text in ((files.areas_json, json.dumps(areas, indent=2) + "\n"), (files.areas_csv, areas_csv(areas))):
        try:
            write_text_atomic(path, text)  # a reader never sees half a table
        except OSError as exc:
            raise OutputError(f"cannot rewrite {path} ({exc.strerror}); check free space and permissions") from exc
    return areas

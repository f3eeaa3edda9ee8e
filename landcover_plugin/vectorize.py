"""Class raster to polygons (class id, class name, area in m²), and masking to polygon areas.

Uses GDAL's polygonize/rasterize directly (GDAL's Python bindings ship with QGIS) rather than the
Processing ``gdal:polygonize`` algorithm, so it works inside a background QgsTask without Processing.
"""

from __future__ import annotations

import csv
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
    QgsUnitTypes,
    QgsVectorFileWriter,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .errors import LandcoverPluginError
from .models import ClassInfo, default_classes


def polygon_fields() -> QgsFields:
    """Attribute table of the polygons layer."""
    fields = QgsFields()
    fields.append(QgsField("class_id", QVariant.Int))
    fields.append(QgsField("class_name", QVariant.String, len=64))
    fields.append(QgsField("area_m2", QVariant.Double))
    return fields


def areas_json_path(raster: str | Path) -> Path:
    """``<stem>.areas.json`` beside a class raster."""
    raster = Path(raster)
    return raster.with_name(raster.stem + ".areas.json")


def classes_for_raster(raster: str | Path) -> list[ClassInfo]:
    """Classes recorded with a class raster: its LANDCOVER_CLASSES metadata, its areas JSON, or LandCover.ai."""
    ds = gdal.Open(str(raster))
    meta = ds.GetMetadataItem("LANDCOVER_CLASSES") if ds is not None else None
    ds = None
    try:
        if meta:
            return [ClassInfo(int(c["id"]), str(c["name"]), tuple(int(v) for v in c["color"]))
                    for c in json.loads(meta)]
    except (ValueError, KeyError, TypeError):
        pass
    defaults = {c.id: c for c in default_classes()}
    try:
        data = json.loads(areas_json_path(raster).read_text())
        grey = ClassInfo(0, "", (128, 128, 128))
        return [ClassInfo(int(c["id"]), str(c["name"]), defaults.get(int(c["id"]), grey).color)
                for c in data["classes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return default_classes()


def class_names_for_raster(raster: str | Path, classes: Sequence[ClassInfo] | None = None) -> dict[int, str]:
    """Class names by id: the given classes, else those recorded with the raster."""
    return {c.id: c.name for c in (classes or classes_for_raster(raster))}


def area_calculator(crs: QgsCoordinateReferenceSystem, context: QgsCoordinateTransformContext,
                    ellipsoid: str = "EPSG:7030") -> Callable[[QgsGeometry], float]:
    """Area in m²: planar in projected CRSs (matching the backend's pixel areas), ellipsoidal in degrees."""
    if crs.isGeographic():
        da = QgsDistanceArea()
        da.setSourceCrs(crs, context)
        da.setEllipsoid(ellipsoid)
        return lambda g: da.convertAreaMeasurement(da.measureArea(g), QgsUnitTypes.AreaSquareMeters)
    factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), QgsUnitTypes.DistanceMeters) or 1.0
    return lambda g: g.area() * factor * factor


def iter_class_polygons(raster: str | Path, band: int = 1,
                        is_canceled: Callable[[], bool] = lambda: False) -> Iterator[tuple[int, QgsGeometry]]:
    """Connected regions of equal class as ``(class_id, polygon)``; nodata pixels are skipped.

    Raises:
        LandcoverPluginError: the raster cannot be read.
    """
    ds = gdal.Open(str(raster))
    if ds is None:
        raise LandcoverPluginError(f"cannot open class raster {raster}; choose a raster written by Landcover")
    if not 1 <= band <= ds.RasterCount:
        raise LandcoverPluginError(f"{raster} has {ds.RasterCount} band(s); band {band} does not exist")
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
    measure = area_calculator(crs, context)
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
        LandcoverPluginError: the file cannot be written.
    """
    out_path = Path(out_path)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = QgsVectorFileWriter.driverForExtension(out_path.suffix) or "GPKG"
    options.layerName = out_path.stem
    writer = QgsVectorFileWriter.create(str(out_path), polygon_fields(), QgsWkbTypes.Polygon, crs, context, options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise LandcoverPluginError(f"cannot write polygons to {out_path} ({writer.errorMessage()})")
    for feature in polygon_features(raster, names, crs, context, is_canceled=is_canceled):
        writer.addFeature(feature)
    del writer  # closes the file
    return out_path


def mask_outside(raster: str | Path, geometries: Sequence[QgsGeometry], nodata: float = 255) -> None:
    """Set pixels outside ``geometries`` (raster CRS) to ``nodata``, in place."""
    ds = gdal.Open(str(raster), gdal.GA_Update)
    if ds is None:
        raise LandcoverPluginError(f"cannot update {raster} to mask it to the polygons")
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
    """Class areas of a (masked) class raster, in the backend's ``areas`` format; rewrites the JSON/CSV beside it."""
    import numpy as np  # QGIS ships numpy; imported here so loading the plugin stays light

    ds = gdal.Open(str(raster))
    data = ds.GetRasterBand(1).ReadAsArray()
    gt = ds.GetGeoTransform()
    ds = None
    pixel_area = (previous or {}).get("pixel_area_m2") or abs(gt[1] * gt[5])
    counts = np.bincount(data[data != 255].ravel(), minlength=len(classes))
    valid = int(counts.sum())
    areas = {
        "classes": [
            {"id": c.id, "name": c.name, "pixels": int(counts[c.id]),
             "area_m2": round(float(counts[c.id] * pixel_area), 3),
             "percent": round(100.0 * float(counts[c.id]) / (valid or 1), 4)}
            for c in classes
        ],
        "pixel_area_m2": float(pixel_area),
        "valid_pixels": valid,
        "nodata_pixels": int(data.size - valid),
    }
    json_path = areas_json_path(raster)
    json_path.write_text(json.dumps(areas, indent=2) + "\n")
    with open(json_path.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "name", "pixels", "area_m2", "percent"])
        for c in areas["classes"]:
            writer.writerow([c["id"], c["name"], c["pixels"], c["area_m2"], c["percent"]])
    return areas

"""Areas, pixel windows, resolution checks and export through QGIS (no worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from landcover_plugin import export
from landcover_plugin.contract import gsd_is_far
from landcover_plugin.errors import CancelledError, InputError


def _layer(path: Path | str) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), Path(str(path)).stem, "gdal")
    assert layer.isValid(), path
    return layer


def polygons_layer(crs: str, rects: list[QgsRectangle]) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "areas", "memory")
    feats = []
    for rect in rects:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromRect(rect))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_file_layers_are_passed_by_path_others_exported(crops: dict[str, Path], tmp_path: Path) -> None:
    assert export.layer_file_path(_layer(crops["rgb"])) == crops["rgb"]
    vrt = tmp_path / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(crops["rgb"])]).FlushCache()
    assert export.layer_file_path(_layer(vrt)) is None
    gdal.Translate("/vsimem/lc_test.tif", str(crops["rgb"]))
    try:
        assert export.layer_file_path(_layer("/vsimem/lc_test.tif")) is None
    finally:
        gdal.Unlink("/vsimem/lc_test.tif")


def test_pixel_size_in_metres_and_far_check(crops: dict[str, Path]) -> None:
    size = export.layer_pixel_size_m(_layer(crops["rgb"]))
    assert size == pytest.approx((0.1, 0.1), rel=0.2)
    assert gsd_is_far(size, 0.25) and not gsd_is_far((0.3, 0.3), 0.25)
    assert export.layer_pixel_size_m(_layer(crops["naip"])) == pytest.approx((5, 5), rel=0.05)
    assert not gsd_is_far(None, 0.25) and not gsd_is_far((0.1, 0.1), None)


def test_window_for_extent_roundtrip(crops: dict[str, Path]) -> None:
    layer = _layer(crops["rgb"])
    ext = layer.extent()
    px = layer.rasterUnitsPerPixelX()
    rect = QgsRectangle(ext.xMinimum() + 10.4 * px, ext.yMinimum() + 5 * px, ext.xMinimum() + 100 * px,
                        ext.yMaximum() - 20 * px)
    window = export.window_for_extent(layer, rect)
    assert window == (10, 20, 90, 295)
    got = export.window_extent(layer, window)
    assert got.contains(rect)
    assert export.window_for_extent(layer, ext) == (0, 0, 320, 320)


def test_area_outside_layer_is_rejected(crops: dict[str, Path]) -> None:
    layer = _layer(crops["rgb"])
    far = QgsRectangle(0, 0, 10, 10)
    with pytest.raises(InputError, match="does not overlap"):
        export.clip_to_layer(layer, export.Area(export.AREA_EXTENT, far))


def test_extent_area_is_transformed_to_layer_crs(crops: dict[str, Path]) -> None:
    layer = _layer(crops["rgb"])  # EPSG:3395
    from qgis.core import QgsCoordinateTransform, QgsProject

    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    to_wgs = QgsCoordinateTransform(layer.crs(), wgs84, QgsProject.instance())
    area = export.extent_area(to_wgs.transformBoundingBox(layer.extent()), wgs84, layer)
    assert area.kind == export.AREA_EXTENT
    assert area.extent.width() == pytest.approx(layer.extent().width(), rel=0.01)


def test_polygon_area_selected_only(crops: dict[str, Path]) -> None:
    layer = _layer(crops["rgb"])
    e = layer.extent()
    w, h = e.width(), e.height()
    a = QgsRectangle(e.xMinimum(), e.yMinimum(), e.xMinimum() + w / 4, e.yMinimum() + h / 4)
    b = QgsRectangle(e.xMaximum() - w / 4, e.yMaximum() - h / 4, e.xMaximum(), e.yMaximum())
    polys = polygons_layer(layer.crs().authid(), [a, b])
    both = export.polygon_area(polys, layer)
    assert len(both.geometries) == 2 and both.extent == e
    with pytest.raises(InputError, match="no features are selected"):
        export.polygon_area(polys, layer, selected_only=True)
    polys.selectByIds([2])
    one = export.polygon_area(polys, layer, selected_only=True)
    assert len(one.geometries) == 1 and one.extent.xMinimum() == pytest.approx(b.xMinimum())


def test_export_vrt_at_model_resolution(crops: dict[str, Path], tmp_path: Path) -> None:
    vrt = tmp_path / "v.vrt"
    gdal.BuildVRT(str(vrt), [str(crops["rgb"])]).FlushCache()
    layer = _layer(vrt)
    rect = layer.extent()
    spec = export.export_spec(layer, rect, pixel_size=rect.width() / 128)
    out = export.run_export(spec, tmp_path / "out.tif")
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (128, 128, 3)
    gt = ds.GetGeoTransform()
    assert gt[0] == pytest.approx(rect.xMinimum()) and gt[3] == pytest.approx(rect.yMaximum())
    assert "3395" in ds.GetProjection() or "Mercator" in ds.GetProjection()


def test_huge_exports_are_refused(crops: dict[str, Path]) -> None:
    layer = _layer(crops["rgb"])
    with pytest.raises(InputError, match="smaller"):
        export.export_spec(layer, layer.extent(), pixel_size=layer.extent().width() / 100_000)


def test_cancelled_export_leaves_no_file(crops: dict[str, Path], tmp_path: Path) -> None:
    from qgis.core import QgsFeedback


    layer = _layer(crops["rgb"])
    feedback = QgsFeedback()
    feedback.cancel()
    with pytest.raises(CancelledError):
        export.run_export(export.export_spec(layer, layer.extent(), None), tmp_path / "out.tif", feedback)
    assert not (tmp_path / "out.tif").exists()


def test_ground_pixel_size_agrees_with_the_backend(crops: dict[str, Path], tmp_path: Path) -> None:
    """Mercator layers (World Mercator here, Web Mercator from basemaps) are measured on the ground, the same way
    in QGIS and in the worker, and exports at the model's resolution target ground metres."""
    import rasterio
    from osgeo import gdal

    from tests.plugin.helpers import backend_imports

    with backend_imports():
        from backend.raster_io import pixel_size_m

    web = tmp_path / "web.tif"
    gdal.Warp(str(web), str(crops["rgb"]), dstSRS="EPSG:3857")
    for path in (crops["rgb"], web):
        with rasterio.open(path) as src:
            backend_size = pixel_size_m(src.crs, src.transform, src.width, src.height)
            nominal = src.res
        layer = _layer(path)
        plugin_size = export.layer_pixel_size_m(layer)
        assert plugin_size == pytest.approx(backend_size, rel=2e-3)
        assert plugin_size[0] < nominal[0] * 0.98  # the projected unit is not a ground metre here
        per_unit = export.metres_per_unit(layer.crs(), layer.extent())
        assert per_unit * nominal[0] == pytest.approx(plugin_size[0], rel=5e-3)


def test_polygon_areas_are_ground_areas_in_web_mercator(tmp_path: Path) -> None:
    """Polygons of a Web Mercator class raster carry ground m², as the backend's area table does (planar m²
    would be 2.9x at 54° N); in a true-to-scale projection they stay planar, equal to pixels x pixel area."""
    import numpy as np
    import rasterio
    from osgeo import gdal, osr
    from qgis.core import QgsCoordinateReferenceSystem, QgsProject

    from tests.plugin.helpers import backend_imports

    with backend_imports():
        from backend.raster_io import pixel_size_m
    from landcover_plugin.vectorize import polygon_features
    from tests.plugin.helpers import write_class_raster

    data = np.full((60, 80), 2, np.uint8)
    data[:20, :30] = 1
    utm = write_class_raster(tmp_path / "utm.tif", data)
    merc = tmp_path / "merc.tif"
    ds = gdal.GetDriverByName("GTiff").CreateCopy(str(merc), gdal.Open(str(utm)))
    x, y = 1113194.9, 7170156.3  # 10° E, 54° N in EPSG:3857
    ds.SetGeoTransform([x, 2, 0, y, 0, -2])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3857)
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    context = QgsProject.instance().transformContext()
    for path, epsg in ((utm, 32633), (merc, 3857)):
        crs = QgsCoordinateReferenceSystem(f"EPSG:{epsg}")
        total = sum(f["area_m2"] for f in polygon_features(path, {1: "a", 2: "b"}, crs, context))
        with rasterio.open(path) as src:
            w, h = pixel_size_m(src.crs, src.transform, src.width, src.height)
        assert total == pytest.approx(data.size * w * h, rel=5e-3)


def test_recounted_areas_match_the_backend_row_by_row(tmp_path: Path) -> None:
    """After masking to polygons the plugin recounts the areas; for a tall Web Mercator raster it must add them
    up row by row exactly as the worker does (the contract's rule), not with the centre's pixel area."""
    import json

    import numpy as np
    import rasterio
    from osgeo import gdal, osr

    from tests.plugin.helpers import backend_imports

    with backend_imports():
        from backend.raster_io import row_pixel_areas_m2 as backend_rows
    from landcover_plugin.contract import LANDCOVER_CLASSES, output_files
    from landcover_plugin.vectorize import recount_areas
    from tests.plugin.helpers import write_class_raster

    data = np.random.default_rng(0).integers(0, 5, (600, 30)).astype(np.uint8)
    path = write_class_raster(tmp_path / "tall.tif", data)
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.SetGeoTransform([1113194.9, 3000, 0, 10000000.0, 0, -3000])  # 10° E, from 66.5° N southwards
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(3857)
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    with rasterio.open(path) as src:
        rows = backend_rows(src.crs, src.transform, src.width, src.height)
    expected = np.bincount(data.ravel(), np.broadcast_to(rows[:, None], data.shape).ravel(), minlength=5)
    areas = recount_areas(path, LANDCOVER_CLASSES, {"pixel_area_m2": float(rows[300])})
    assert [c["area_m2"] for c in areas["classes"]] == pytest.approx(expected.tolist(), rel=1e-4)
    assert json.loads(output_files(path).areas_json.read_text()) == areas

"""The dialog filled programmatically: validation messages, every area option, cancel, non-file layers.

Runs marked slow start the real worker (``untrained:Unet:resnet18``) on 320 px crops, a few seconds each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsTask,
    QgsVectorLayer,
)
from qgis.PyQt.QtWidgets import QPushButton

from landcover_plugin import export, job
from landcover_plugin.contract import LANDCOVER_CLASSES, PRECISIONS, TTA_MODES
from landcover_plugin.dialog import LandcoverDialog
from landcover_plugin.results import GROUP_NAME
from landcover_plugin.settings import Settings
from tests.plugin.helpers import UNTRAINED, add_raster, bar_texts, wait_for_task, write_bundle

pytestmark = pytest.mark.usefixtures("clean_settings")


def make_dialog(iface, layer: QgsRasterLayer | None, resample: bool | None = False) -> LandcoverDialog:
    if layer is not None:
        iface.setActiveLayer(layer)
    dlg = LandcoverDialog(iface)
    assert dlg.select_model(UNTRAINED)
    dlg.confirm = lambda message: resample  # answer the "pixel size far from the model's" question
    return dlg


def result_layers(project: QgsProject) -> list:
    group = project.layerTreeRoot().findGroup(GROUP_NAME)
    return [node.layer() for node in group.findLayers()] if group else []


def run_dialog(dlg: LandcoverDialog):
    task = dlg.run()
    assert task is not None, dlg.last_error
    wait_for_task(task)
    assert task.outcome is not None, task.error
    return task


def assert_class_style(layer: QgsRasterLayer) -> None:
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    got = [(c.value, c.label, c.color.getRgb()[:3]) for c in renderer.classes()]
    assert got == [(c.id, c.name, c.color) for c in LANDCOVER_CLASSES]
    assert layer.dataProvider().sourceNoDataValue(1) == 255


# ------------------------------------------------------------------ validation (fast)
def test_no_layer(qgis_iface, project) -> None:
    dlg = make_dialog(qgis_iface, None)
    assert dlg.run() is None
    assert "no raster layer chosen" in str(dlg.last_error)


def test_one_band_layer(qgis_iface, project, crops) -> None:
    dlg = make_dialog(qgis_iface, add_raster(crops["gray"]))
    assert dlg.run() is None
    assert "has 1 band(s)" in str(dlg.last_error) and "RGB" in str(dlg.last_error)


def test_layer_without_crs(qgis_iface, project, tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 3).FlushCache()
    layer = QgsRasterLayer(str(path), "nocrs", "gdal")
    layer.setCrs(QgsCoordinateReferenceSystem())
    QgsProject.instance().addMapLayer(layer)
    dlg = make_dialog(qgis_iface, layer)
    assert dlg.run() is None
    assert "no coordinate reference system" in str(dlg.last_error)


def test_missing_model(qgis_iface, project, crops, tmp_path: Path) -> None:
    from landcover_plugin.errors import ModelError
    from tests.plugin.helpers import write_bundle

    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    with pytest.raises(ModelError, match="does not exist"):
        dlg.add_model_file(str(tmp_path / "nope.json"))
    bundle = write_bundle(tmp_path / "m")
    info = dlg.add_model_file(str(bundle))
    assert dlg.current_model().name == info.name == "tiny"
    assert "0.5 m/pixel" in dlg.model_label.text() and "woodland" in dlg.model_label.text()
    assert (dlg.overlap_spin.value(), dlg.batch_spin.value()) == (16, 4)  # defaults from the model
    bundle.unlink()
    assert dlg.run() is None
    assert "no longer exists" in str(dlg.last_error)


def test_gsd_question_can_cancel_or_resample(qgis_iface, project, crops) -> None:
    layer = add_raster(crops["rgb"])  # 0.1 World Mercator units = 0.0969 m on the ground here; the model: 0.25 m
    dlg = make_dialog(qgis_iface, layer, resample=None)
    assert "0.0969 m/pixel" in dlg.layer_label.text() and "tick Resample" in dlg.layer_label.text()
    asked: list[str] = []
    dlg.confirm = lambda message: asked.append(message)  # returns None: cancel
    assert dlg.run() is None and dlg.last_error is None
    assert "expects 0.25 m" in asked[0] and "Resample" in asked[0]
    request = dlg.request()
    request.resample = True
    plan = job.prepare(request)
    assert plan.export_spec is not None and plan.window is None
    assert (plan.export_spec.width, plan.export_spec.height) == pytest.approx((124, 124), abs=1)  # 320 x 0.0969/0.25


def test_worker_without_runtime_offers_the_worker_python_field(qgis_iface, project, crops) -> None:
    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    dlg.python_widget.setFilePath("/usr/bin/python3")  # Debian's system Python: no onnxruntime, no rasterio
    task = dlg.run()
    assert task is not None
    wait_for_task(task, timeout=60)
    assert task.outcome is None and result_layers(QgsProject.instance()) == []
    assert task.error is not None and task.error.kind == "dependency"
    bar = qgis_iface.messageBar()
    critical = " ".join(bar_texts(bar, Qgis.Critical))
    assert "/usr/bin/python3" in critical and "lacks the package" in critical
    fix = bar.findChild(QPushButton, "landcoverFix_worker_python")
    assert fix is not None and fix.text() == "Worker Python…"
    setup = bar.findChild(QPushButton, "landcoverSetupRuntime")  # the other way out: the managed runtime
    assert setup is not None and "Set up the Landcover runtime" in setup.text()
    dlg.hide()
    fix.click()  # the action the kind maps to: the dialog, at the Worker Python field
    assert dlg.isVisible()


def test_error_kinds_in_the_dialog(qgis_iface, project, crops, tmp_path: Path) -> None:
    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    dlg.output_widget.setFilePath(str(tmp_path / "no such folder" / "out.tif"))
    assert dlg.run() is None
    assert dlg.last_error.kind == "output" and "does not exist; choose another" in str(dlg.last_error)
    assert dlg.bar.findChild(QPushButton, "landcoverFix_output") is not None
    assert dlg.bar.findChild(QPushButton, "landcoverDetails") is not None


def test_broken_bundles_are_listed_disabled_with_their_error(qgis_iface, project, crops, tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("LANDCOVER_MODELS_DIR", str(tmp_path))
    write_bundle(tmp_path / "good", name="good-model")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.json").write_text("{not json")
    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    labels = [dlg.model_combo.itemText(i) for i in range(dlg.model_combo.count())]
    assert "good-model (user)" in labels and "broken (user, unreadable)" in labels
    item = dlg.model_combo.model().item(labels.index("broken (user, unreadable)"))
    assert not item.isEnabled() and "not valid JSON" in item.toolTip()


def test_processing_and_dialog_share_the_saved_worker_python(qgis_iface, project, crops, tmp_path: Path) -> None:
    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    missing = tmp_path / "gone" / "python"
    dlg.python_widget.setFilePath(str(missing))
    dlg._save_settings()
    assert Settings.load().worker_python == str(missing)
    request = job.SegmentRequest(layer=dlg.layer_combo.currentLayer(), model=dlg.current_model())  # as Processing
    with pytest.raises(Exception, match=f"worker Python {missing} set by the dialog's Worker Python setting"):
        job.prepare(request)


def test_non_file_layers_are_exported(qgis_iface, project, crops, tmp_path: Path) -> None:
    gdal.Translate("/vsimem/landcover_mem.tif", str(crops["rgb"]))
    try:
        layer = QgsRasterLayer("/vsimem/landcover_mem.tif", "in-memory", "gdal")
        assert layer.isValid()
        QgsProject.instance().addMapLayer(layer)
        plan = job.prepare(make_dialog(qgis_iface, layer).request())
        assert plan.input_path is None and plan.export_spec is not None
        assert (plan.export_spec.width, plan.export_spec.height) == (320, 320)
    finally:
        gdal.Unlink("/vsimem/landcover_mem.tif")


def test_choices_are_remembered(qgis_iface, project, crops) -> None:
    dlg = make_dialog(qgis_iface, add_raster(crops["gray"]))
    dlg.area_extent.setChecked(True)
    dlg.polygons_check.setChecked(True)
    dlg._save_settings()
    again = LandcoverDialog(qgis_iface)
    assert again.current_model().spec == UNTRAINED
    assert again.area_extent.isChecked() and again.polygons_check.isChecked()


def worker_args(dlg: LandcoverDialog):
    """The worker arguments a run of the dialog's current choices would use (no run)."""
    plan = job.prepare(dlg.request())
    try:
        return plan.segment_args(plan.input_path)
    finally:
        plan.workdir.rmdir()


def test_precision_and_tta_reach_the_worker_and_are_remembered(qgis_iface, project, crops) -> None:
    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    combos = {"precision": dlg.precision_combo, "tta": dlg.tta_combo}
    assert [dlg.precision_combo.itemData(i) for i in range(dlg.precision_combo.count())] == list(PRECISIONS)
    assert [dlg.tta_combo.itemData(i) for i in range(dlg.tta_combo.count())] == list(TTA_MODES)
    assert dlg.precision_combo.itemText(PRECISIONS.index("fp32")) == "Float (fp32)"
    assert dlg.tta_combo.itemText(TTA_MODES.index("d4")) == "D4: 8 rotations and mirrors (8x time)"
    assert all(combo.toolTip() for combo in combos.values())
    default = worker_args(dlg)
    assert (default.precision, default.tta) == ("auto", "none")
    assert "--precision" not in default.argv() and "--tta" not in default.argv()

    dlg.precision_combo.setCurrentIndex(dlg.precision_combo.findData("fp32"))
    dlg.tta_combo.setCurrentIndex(dlg.tta_combo.findData("d4"))
    args = worker_args(dlg)
    assert (args.precision, args.tta) == ("fp32", "d4")
    argv = args.argv()
    start = argv.index("--precision")
    assert argv[start:start + 4] == ["--precision", "fp32", "--tta", "d4"]

    dlg._save_settings()
    saved = Settings.load()
    assert (saved.precision, saved.tta) == ("fp32", "d4")
    again = LandcoverDialog(qgis_iface)
    assert (again.precision_combo.currentData(), again.tta_combo.currentData()) == ("fp32", "d4")
    Settings(precision="fp64", tta="d8").save()  # values no longer offered (edited by hand): the defaults
    fresh = LandcoverDialog(qgis_iface)
    assert (fresh.precision_combo.currentData(), fresh.tta_combo.currentData()) == ("auto", "none")


# ------------------------------------------------------------------ real worker runs (slow)
@pytest.mark.slow
def test_whole_layer_with_all_outputs(qgis_iface, project, crops, tmp_path: Path) -> None:
    layer = add_raster(crops["rgb"])
    dlg = make_dialog(qgis_iface, layer)
    dlg.output_widget.setFilePath(str(tmp_path / "classes.tif"))
    dlg.confidence_check.setChecked(True)
    dlg.polygons_check.setChecked(True)
    dlg.polygons_widget.setFilePath(str(tmp_path / "polygons.gpkg"))
    run_dialog(dlg)

    layers = {lyr.name(): lyr for lyr in result_layers(project)}
    # named after the input and the model; in the group: polygons, classes, then the (hidden) confidence
    assert list(layers) == ["river_rgb — polygons (untrained-unet-resnet18)",
                            "river_rgb — land cover (untrained-unet-resnet18)",
                            "river_rgb — confidence (untrained-unet-resnet18)"]
    classes = layers["river_rgb — land cover (untrained-unet-resnet18)"]
    assert classes.source() == str(tmp_path / "classes.tif")
    assert classes.crs() == layer.crs()
    assert classes.extent().toString(3) == layer.extent().toString(3)
    assert (classes.width(), classes.height()) == (320, 320)
    assert_class_style(classes)
    areas = json.loads((tmp_path / "classes.areas.json").read_text())
    assert [c["name"] for c in areas["classes"]] == [c.name for c in LANDCOVER_CLASSES]
    assert sum(c["percent"] for c in areas["classes"]) == pytest.approx(100, abs=0.01)
    assert (tmp_path / "classes.areas.csv").is_file()
    polygons = layers["river_rgb — polygons (untrained-unet-resnet18)"]
    assert [f.name() for f in polygons.fields()][-3:] == ["class_id", "class_name", "area_m2"]
    total = sum(f["area_m2"] for f in polygons.getFeatures())
    assert total == pytest.approx(sum(c["area_m2"] for c in areas["classes"]), rel=1e-3)
    success = " ".join(bar_texts(qgis_iface.messageBar(), Qgis.Success))
    assert "river_rgb — land cover (untrained-unet-resnet18)" in success and " ha (" in success and "%" in success


@pytest.mark.slow
def test_current_map_extent(qgis_iface, project, crops) -> None:
    layer = add_raster(crops["rgb"])
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))  # the area is transformed to the layer CRS
    from qgis.core import QgsCoordinateTransform

    e = layer.extent()
    w, h = e.width(), e.height()
    sub = QgsRectangle(e.xMinimum() + 0.3 * w, e.yMinimum() + 0.3 * h, e.xMinimum() + 0.7 * w, e.yMinimum() + 0.7 * h)
    to_canvas = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(sub))
    canvas_rect_in_layer = export.extent_area(canvas.extent(), canvas.mapSettings().destinationCrs(), layer).extent
    dlg = make_dialog(qgis_iface, layer)
    dlg.area_extent.setChecked(True)
    task = run_dialog(dlg)
    (classes,) = [lyr for lyr in result_layers(project) if isinstance(lyr, QgsRasterLayer)]
    window = task.plan.window
    # The canvas widens the extent to its aspect ratio; the window must be what the canvas shows, clipped.
    assert window == export.window_for_extent(layer, canvas_rect_in_layer.intersect(e))
    assert window[3] == 128 and window[2] <= 320
    assert classes.extent().toString(3) == export.window_extent(layer, window).toString(3)
    assert classes.extent().buffered(1e-6).contains(canvas_rect_in_layer.intersect(e))
    assert (classes.width(), classes.height()) == window[2:]
    assert_class_style(classes)


@pytest.mark.slow
def test_selected_polygon_features(qgis_iface, project, crops) -> None:
    layer = add_raster(crops["rgb"])
    e = layer.extent()
    polys = QgsVectorLayer(f"Polygon?crs={layer.crs().authid()}", "fields", "memory")
    tri = QgsGeometry.fromPolygonXY([[QgsPointXY(e.xMinimum(), e.yMinimum()), QgsPointXY(e.center().x(), e.yMinimum()),
                                      QgsPointXY(e.xMinimum(), e.center().y())]])
    other = QgsGeometry.fromRect(QgsRectangle(e.xMaximum() - 5, e.yMaximum() - 5, e.xMaximum(), e.yMaximum()))
    feats = []
    for geom in (tri, other):
        f = QgsFeature()
        f.setGeometry(geom)
        feats.append(f)
    polys.dataProvider().addFeatures(feats)
    QgsProject.instance().addMapLayer(polys)
    polys.selectByIds([1])  # only the triangle

    dlg = make_dialog(qgis_iface, layer)
    dlg.area_polygons.setChecked(True)
    dlg.polygon_combo.setLayer(polys)
    dlg.selected_only.setChecked(True)
    task = run_dialog(dlg)
    assert task.plan.window == (0, 160, 160, 160)
    (classes,) = [lyr for lyr in result_layers(project) if isinstance(lyr, QgsRasterLayer)]
    assert (classes.width(), classes.height()) == (160, 160)
    data = gdal.Open(classes.source()).ReadAsArray()
    assert data[0, -1] == 255 and data[-1, 0] != 255  # outside the triangle: nodata; inside: a class
    areas = task.outcome.areas
    assert areas["nodata_pixels"] == pytest.approx(160 * 160 / 2, rel=0.05)
    assert sum(c["pixels"] for c in areas["classes"]) == areas["valid_pixels"]


@pytest.mark.slow
def test_vrt_layer_is_exported_and_segmented(qgis_iface, project, crops, tmp_path: Path) -> None:
    vrt = tmp_path / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(crops["rgb"])]).FlushCache()
    layer = add_raster(vrt)
    task = run_dialog(make_dialog(qgis_iface, layer))
    assert task.plan.export_spec is not None and task.plan.input_path is None
    (classes,) = [lyr for lyr in result_layers(project) if isinstance(lyr, QgsRasterLayer)]
    assert classes.crs() == layer.crs()
    assert classes.extent().toString(3) == layer.extent().toString(3)
    assert_class_style(classes)
    assert not (task.plan.workdir / "input.tif").exists()  # the temporary export is removed


@pytest.mark.slow
def test_cancel_leaves_no_layer_and_no_file(qgis_iface, project, real_dir, tmp_path: Path) -> None:
    from qgis.PyQt.QtCore import QCoreApplication

    layer = add_raster(real_dir / "riverfront_rgb_jpeg_epsg3395.tif")  # 2048 px: long enough to cancel
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dlg = make_dialog(qgis_iface, layer)
    dlg.output_widget.setFilePath(str(out_dir / "classes.tif"))
    task = dlg.run()
    assert task is not None, dlg.last_error
    import time

    deadline = time.monotonic() + 120
    while task.progress() < 3 and time.monotonic() < deadline:  # wait until tiles are being predicted
        QCoreApplication.processEvents()
        time.sleep(0.05)
    assert task.progress() >= 3, task.stage
    task.cancel()
    ended: list[tuple[int, str]] = []
    report = task.on_done
    task.on_done = lambda t: (ended.append((t.status(), t.description())), report(t))  # QGIS deletes the task next
    wait_for_task(task, timeout=60)
    assert task.canceled and task.outcome is None
    assert result_layers(project) == []
    assert list(out_dir.iterdir()) == []
    bar = qgis_iface.messageBar()
    assert any("cancelled" in m for m in bar_texts(bar, Qgis.Info))
    assert not [m for level in (Qgis.Warning, Qgis.Critical) for m in bar_texts(bar, level) if "Landcover" in m]
    # What QGIS 3.22 announces itself: "Task complete" (not "Task failed") with a description saying cancelled.
    assert ended == [(QgsTask.Complete, "Landcover: segmenting riverfront_rgb_jpeg_epsg3395 cancelled; nothing was "
                                        "kept")]


@pytest.fixture
def xyz_layer(crops, tmp_path: Path) -> QgsRasterLayer:
    """A local XYZ tile service (the wms provider, ARGB data, no native grid) made from the RGB crop."""
    import shutil
    import subprocess

    tool = shutil.which("gdal2tiles.py") or shutil.which("gdal2tiles")
    if tool is None:
        pytest.skip("gdal2tiles is not installed (Debian package gdal-bin / python3-gdal)")
    tiles = tmp_path / "tiles"
    subprocess.run([tool, "--xyz", "-q", "-z", "19-21", "-w", "none", str(crops["rgb"]), str(tiles)], check=True)
    url = f"file://{tiles}/%7Bz%7D/%7Bx%7D/%7By%7D.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmin=19&zmax=21", "tiles", "wms")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_web_service_needs_an_area(qgis_iface, project, xyz_layer) -> None:
    dlg = make_dialog(qgis_iface, xyz_layer)
    assert dlg.run() is None
    assert "web service" in str(dlg.last_error) and "map extent" in str(dlg.last_error)


@pytest.mark.slow
def test_xyz_service_is_exported_at_model_resolution(qgis_iface, project, crops, xyz_layer) -> None:
    from qgis.core import QgsCoordinateTransform

    source = QgsRasterLayer(str(crops["rgb"]), "rgb")
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(xyz_layer.crs())
    to_web = QgsCoordinateTransform(source.crs(), xyz_layer.crs(), QgsProject.instance())
    canvas.setExtent(to_web.transformBoundingBox(source.extent()))
    dlg = make_dialog(qgis_iface, xyz_layer)
    dlg.area_extent.setChecked(True)
    task = run_dialog(dlg)
    spec = task.plan.export_spec
    assert spec is not None and spec.renderer is not None and task.plan.bands == (1, 2, 3)
    (classes,) = [lyr for lyr in result_layers(project) if isinstance(lyr, QgsRasterLayer)]
    assert classes.crs() == xyz_layer.crs()
    # The model's resolution on the ground (Web Mercator units are 3 % shorter than metres at this latitude).
    assert export.layer_pixel_size_m(classes) == pytest.approx((0.25, 0.25), rel=0.01)
    assert classes.rasterUnitsPerPixelX() > 0.255
    assert_class_style(classes)


def test_run_stays_on_a_short_screen_and_the_sections_scroll(qgis_iface, project, crops) -> None:
    """The sections scroll between the message bar and the buttons, so Run is never below the screen's edge."""
    from qgis.PyQt.QtWidgets import QApplication

    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    available = QApplication.primaryScreen().availableGeometry().height()
    content = dlg.scroll.widget().sizeHint().height()
    assert dlg.height() <= available
    dlg.show()
    QApplication.processEvents()
    run = dlg.run_button
    bottom = run.mapTo(dlg, run.rect().bottomLeft()).y()
    assert run.isVisible() and 0 < bottom <= dlg.height()
    if content > available:  # this screen is too short for every section: they scroll, nothing is cut off
        assert dlg.scroll.verticalScrollBar().maximum() > 0
    dlg.close()

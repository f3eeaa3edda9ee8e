"""The analyst's workflow: result names and order, messages, the dialog on reopening, resample questions, Help,
the Processing model list, batch runs with empty optional outputs, and the plugin's toolbar.

Fast tests build results from a small class raster written here (no worker); runs marked slow start the real
worker (``untrained:Unet:resnet18`` on small crops, a few seconds each).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterEnum,
    QgsProject,
    QgsRasterLayer,
    QgsTask,
)
from qgis.PyQt.QtCore import QCoreApplication, QUrl
from qgis.PyQt.QtWidgets import QDialogButtonBox, QLabel, QPushButton, QTableWidget

import landcover_plugin
from landcover_plugin import dialog as dialog_module
from landcover_plugin.contract import LANDCOVER_CLASSES, resolve_model, untrained_model
from landcover_plugin.dialog import LandcoverDialog, help_target, report_task, resample_estimate
from landcover_plugin.errors import InputError
from landcover_plugin.feedback import clear_messages, landcover_messages, push_error
from landcover_plugin.job import Outcome
from landcover_plugin.results import GROUP_NAME, add_results
from landcover_plugin.worker.task import SILENT, SegmentTask
from tests.plugin.helpers import (
    REPO,
    UNTRAINED,
    add_raster,
    bar_texts,
    landcover_provider,
    wait_for_task,
    write_class_raster,
)

pytestmark = pytest.mark.usefixtures("clean_settings")
MODEL = untrained_model(UNTRAINED)
CLASSES_NAME = "sjer_rgb — land cover (untrained-unet-resnet18)"


# ------------------------------------------------------------------ helpers
def class_raster(path: Path, value: int = 2, size: int = 20) -> Path:
    """A small class GeoTIFF (EPSG:32633, 1 m pixels) with its areas JSON/CSV, as the worker writes them."""
    data = np.full((size, size), value, dtype=np.uint8)
    data[: size // 4] = 1
    return write_class_raster(path, data)


def areas_for(path: Path) -> dict:
    data = gdal.Open(str(path)).ReadAsArray()
    counts = [int((data == c.id).sum()) for c in LANDCOVER_CLASSES]
    total = sum(counts)
    return {"classes": [{"id": c.id, "name": c.name, "pixels": n, "area_m2": float(n),
                         "percent": 100.0 * n / total} for c, n in zip(LANDCOVER_CLASSES, counts, strict=True)],
            "pixel_area_m2": 1.0, "valid_pixels": total, "nodata_pixels": 0}


def outcome_for(path: Path, layer_name: str = "sjer_rgb", confidence: Path | None = None) -> Outcome:
    return Outcome(MODEL, path, confidence, None, areas_for(path), [], [], layer_name)


def tree_names(node) -> list[str]:
    return [child.name() for child in node.children()]


def spin(times: int = 5) -> None:
    for _ in range(times):
        QCoreApplication.processEvents()


def make_dialog(iface, layer: QgsRasterLayer | None) -> LandcoverDialog:
    if layer is not None:
        iface.setActiveLayer(layer)
    dlg = LandcoverDialog(iface)
    assert dlg.select_model(UNTRAINED)
    dlg.confirm = lambda message: False  # run at the layer's own resolution unless a test says otherwise
    return dlg


@pytest.fixture
def bar(qgis_iface):
    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    bar.clear_messages()
    yield bar
    bar.clearWidgets()


# ------------------------------------------------------------------ 1. result layers: names and order
def test_result_names_and_newest_on_top_of_group_above_input(project, tmp_path: Path) -> None:
    root = project.layerTreeRoot()
    ortho = QgsRasterLayer(str(class_raster(tmp_path / "ortho.tif")), "sjer_rgb", "gdal")
    other = QgsRasterLayer(str(class_raster(tmp_path / "other.tif")), "basemap", "gdal")
    project.addMapLayer(other)
    project.addMapLayer(ortho)  # added last: at the top of the tree, above the basemap
    assert tree_names(root)[:2] == ["sjer_rgb", "basemap"]

    first = add_results(outcome_for(class_raster(tmp_path / "a.tif"), confidence=class_raster(tmp_path / "c.tif")),
                        project, input_layer_id=ortho.id())
    assert first.classes.name() == CLASSES_NAME
    assert first.confidence.name() == "sjer_rgb — confidence (untrained-unet-resnet18)"
    assert tree_names(root)[:3] == [GROUP_NAME, "sjer_rgb", "basemap"]  # the group right above the input
    group = root.findGroup(GROUP_NAME)
    assert tree_names(group) == [CLASSES_NAME, "sjer_rgb — confidence (untrained-unet-resnet18)"]
    assert not group.findLayer(first.confidence.id()).itemVisibilityChecked()

    second = add_results(outcome_for(class_raster(tmp_path / "b.tif"), layer_name="other_tile"), project,
                         input_layer_id=ortho.id())
    assert second.classes.name() == "other_tile — land cover (untrained-unet-resnet18)"
    assert [n.layerId() for n in group.children()] == [
        second.classes.id(), first.classes.id(), first.confidence.id()]  # newest first


def test_group_below_the_input_moves_above_it(project, tmp_path: Path) -> None:
    root = project.layerTreeRoot()
    old = add_results(outcome_for(class_raster(tmp_path / "a.tif")), project)  # no input known: top of the tree
    ortho = QgsRasterLayer(str(class_raster(tmp_path / "ortho.tif")), "sjer_rgb", "gdal")
    project.addMapLayer(ortho, False)
    root.insertLayer(0, ortho)  # the analyst loads a new orthophoto above the group
    assert tree_names(root) == ["sjer_rgb", GROUP_NAME]
    new = add_results(outcome_for(class_raster(tmp_path / "b.tif")), project, input_layer_id=ortho.id())
    assert tree_names(root) == [GROUP_NAME, "sjer_rgb"]
    group = root.findGroup(GROUP_NAME)
    assert [n.layerId() for n in group.findLayers()] == [new.classes.id(), old.classes.id()]
    assert project.mapLayer(old.classes.id()) is not None  # moving the group kept its layers in the project


# ------------------------------------------------------------------ 2. messages
def test_success_message_stays_with_ha_percent_and_area_table(qgis_iface, project, bar, tmp_path: Path) -> None:
    outcome = outcome_for(class_raster(tmp_path / "a.tif"))
    report_task(qgis_iface, SimpleNamespace(outcome=outcome, canceled=False, error=None, input_layer_id=None))
    spin()
    (item,) = [i for i in landcover_messages(bar) if i.level() == Qgis.Success]
    assert item.duration() == 0  # stays until dismissed (or the next run)
    # 20 x 20 px of 1 m²: woodland 300 m² = 0.03 ha (75 %), building 100 m² = 0.01 ha (25 %)
    assert CLASSES_NAME in item.text()
    assert "woodland 0.03 ha (75.0 %)" in item.text() and "building 0.01 ha (25.0 %)" in item.text()
    assert "water" not in item.text()  # classes without pixels are left out of the one-liner
    button = item.findChild(QPushButton, "landcoverAreaTable")
    assert button is not None and button.text() == "Area table…"
    button.click()
    from landcover_plugin.area_table import _open

    table_dialog = _open[-1]
    try:
        table = table_dialog.findChild(QTableWidget)
        rows = [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]
        assert rows[0] == ["woodland", "0.0300", "300.0", "75.00", "300"]
        assert rows[-1][0] == "total" and rows[-1][3] == "100.00"
        assert table_dialog.text().splitlines()[0].split("\t") == ["Class", "Area (ha)", "Area (m²)", "%", "Pixels"]
        labels = " ".join(label.text() for label in table_dialog.findChildren(QLabel))
        assert str(outcome.files.areas_csv) in labels
    finally:
        table_dialog.close()


def test_log_says_which_precision_and_tta_ran(qgis_iface, project, bar, tmp_path: Path) -> None:
    plain = outcome_for(class_raster(tmp_path / "a.tif"))  # a worker that reports neither (TensorFlow, no TTA)
    assert plain.how_run() == ""
    assert replace(plain, precision="fp32").how_run() == "float"
    outcome = replace(plain, precision="int8", tta="d4")
    assert outcome.how_run() == "INT8, TTA d4"
    logged: list[str] = []

    def record(message: str, tag: str, level) -> None:
        if tag == "Landcover":
            logged.append(message)

    log = QgsApplication.messageLog()
    log.messageReceived.connect(record)
    try:
        report_task(qgis_iface, SimpleNamespace(outcome=outcome, canceled=False, error=None, input_layer_id=None))
        spin()
    finally:
        log.messageReceived.disconnect(record)
    assert any(f"{outcome.output} (INT8, TTA d4)" in message for message in logged), logged


def test_cancel_is_reported_as_cancelled_not_failed(qgis_iface, project, bar) -> None:
    plan = SimpleNamespace(layer_name="sjer_rgb")
    report_task(qgis_iface, SimpleNamespace(outcome=None, canceled=True, error=None, plan=plan))
    spin()
    texts = bar_texts(bar, Qgis.Info)
    assert any("segmenting sjer_rgb was cancelled" in t for t in texts), texts
    everything = " ".join(t for level in (Qgis.Info, Qgis.Warning, Qgis.Critical, Qgis.Success)
                          for t in bar_texts(bar, level)).lower()
    assert "fail" not in everything


def test_clearing_takes_only_landcover_messages(qgis_iface, bar) -> None:
    push_error(bar, InputError("an old problem"))
    other = bar.createMessage("OtherPlugin", "not ours")
    bar.pushWidget(other, Qgis.Warning, 0)
    assert clear_messages(bar) == 1
    assert [i.title() for i in bar.items()] == ["OtherPlugin"]


@pytest.mark.slow
def test_runs_replace_old_messages_and_stack_results(qgis_iface, project, bar, crops) -> None:
    layer = add_raster(crops["rgb"])
    push_error(bar, InputError("a first-run error"))  # an old red error
    dlg = make_dialog(qgis_iface, layer)
    stages: list[str] = []
    task = dlg.run()
    assert task is not None, dlg.last_error
    task.stageChanged.connect(lambda stage: stages.append(task.description()))
    ended: list[str] = []
    report = task.on_done
    task.on_done = lambda t: (ended.append(t.description()), report(t))  # QGIS deletes the task afterwards
    assert not any("first-run error" in i.text() for i in bar.items())  # cleared when the run started
    wait_for_task(task)
    assert task.outcome is not None, task.error
    assert any("predict" in d or "tile" in d for d in stages), stages  # the stage shows in the task manager
    assert all(d.startswith("Landcover: segmenting river_rgb") for d in stages)
    success = [i for i in landcover_messages(bar) if i.level() == Qgis.Success]
    assert len(success) == 1 and "river_rgb — land cover (untrained-unet-resnet18)" in success[0].text()
    assert " ha (" in success[0].text() and " %)" in success[0].text()
    assert ended == ["Landcover: river_rgb segmented with untrained-unet-resnet18"]  # what QGIS 3.22 announces

    dlg.show()  # a second run on the same layer
    again = dlg.run()
    wait_for_task(again)
    success = [i for i in landcover_messages(bar) if i.level() == Qgis.Success]
    assert len(success) == 1  # the first run's summary went when the second started
    group = project.layerTreeRoot().findGroup(GROUP_NAME)
    ids = [n.layerId() for n in group.findLayers()]
    assert len(ids) == 2
    assert project.mapLayer(ids[0]).source() == str(again.outcome.output)  # newest on top
    assert tree_names(project.layerTreeRoot())[:2] == [GROUP_NAME, "river_rgb"]


def test_segment_task_is_silent_where_qgis_allows(qgis_iface, project, crops) -> None:
    from landcover_plugin import job

    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))
    plan = job.prepare(dlg.request())
    try:
        task = SegmentTask(plan)
        assert task.flags() & QgsTask.CanCancel
        if SILENT:  # QGIS >= 3.26
            assert task.flags() & SILENT
    finally:
        plan.workdir.rmdir()


# ------------------------------------------------------------------ 3. the dialog
def test_reopening_selects_the_active_raster_and_forgets_errors(qgis_iface, project, crops) -> None:
    first, second = add_raster(crops["rgb"], "first"), add_raster(crops["naip"], "second")
    dlg = make_dialog(qgis_iface, first)
    dlg.show()
    assert dlg.layer_combo.currentLayer() is first
    dlg.layer_combo.setLayer(None)
    assert dlg.run() is None and "no raster layer chosen" in str(dlg.last_error)
    assert dlg.bar.items()
    dlg.hide()
    qgis_iface.setActiveLayer(second)
    dlg.show()
    assert dlg.layer_combo.currentLayer() is second  # the active layer, not the previous choice
    assert dlg.last_error is None and not [i for i in dlg.bar.items() if i.level() == Qgis.Critical]
    dlg.hide()
    from qgis.core import QgsVectorLayer

    polygons = QgsVectorLayer("Polygon?crs=EPSG:32633", "fields", "memory")
    QgsProject.instance().addMapLayer(polygons)
    qgis_iface.setActiveLayer(polygons)  # not a raster: the previous choice stays
    dlg.show()
    assert dlg.layer_combo.currentLayer() is second
    dlg.hide()


def test_hints_match_the_resample_state(qgis_iface, project, crops) -> None:
    dlg = make_dialog(qgis_iface, add_raster(crops["rgb"]))  # 0.1 m pixels, the model wants 0.25 m
    assert "tick Resample" in dlg.layer_label.text()
    dlg.resample_check.setChecked(True)
    text = dlg.layer_label.text()
    assert "tick Resample" not in text and "resamples it to the model's 0.25 m" in text
    dlg.resample_check.setChecked(False)
    dlg.layer_combo.setLayer(add_raster(crops["naip"]))  # 5 m: 20x coarser
    text = dlg.layer_label.text()
    assert "tick Resample" not in text and "far coarser" in text and "400x the pixels" in text
    dlg.resample_check.setChecked(True)
    assert "you will see the size and time" in dlg.layer_label.text()


def test_large_resample_shows_size_and_time_and_no_runs_nothing(qgis_iface, project, crops, tmp_path,
                                                                  monkeypatch) -> None:
    import tempfile

    layer = add_raster(crops["naip"])  # 256 px at 5 m -> 5120 px at 0.25 m
    estimate = resample_estimate(layer, MODEL)
    assert (estimate.width, estimate.height) == (5120, 5120) and estimate.factor == pytest.approx(400)
    assert estimate.tiles == 23 * 23  # (5120 - 32) / 224 tiles per axis, rounded up
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # job.prepare's work folder would land here
    dlg = make_dialog(qgis_iface, layer)
    dlg.resample_check.setChecked(True)
    asked: list[str] = []
    dlg.ask = lambda message: asked.append(message) or False  # No
    assert dlg.run() is None and dlg.tasks == [] and dlg.last_error is None
    assert QgsApplication.taskManager().count() == 0 and list(tmp_path.iterdir()) == []
    (question,) = asked
    assert "5,120 x 5,120 px" in question and "26 MB class raster" in question and "400" in question
    assert f"{estimate.tiles:,} tiles at 31 ms" in question and "about 16 s" in question
    assert "adds no detail" in question and question.endswith("Continue?")

    dlg.resample_check.setChecked(False)  # not ticked: the pixel-size question carries the same numbers
    questions: list[str] = []
    dlg.confirm = lambda message: questions.append(message)  # None: cancel
    dlg.ask = lambda message: pytest.fail("asked twice")
    assert dlg.run() is None
    assert "Resample the layer" in questions[0] and "5,120 x 5,120 px" in questions[0]


def test_small_resample_does_not_ask(qgis_iface, project, crops) -> None:
    layer = add_raster(crops["rgb"])  # 0.0969 m on the ground -> 0.25 m: fewer pixels
    assert resample_estimate(layer, MODEL).factor == pytest.approx((0.0969 / 0.25) ** 2, rel=0.02)
    dlg = make_dialog(qgis_iface, layer)
    dlg.resample_check.setChecked(True)
    dlg.ask = lambda message: pytest.fail("no question for a downsample")
    dlg.python_widget.setFilePath("/nonexistent/python")  # stops at job.prepare, after the questions
    assert dlg.run() is None and dlg.last_error.kind == "dependency"


def test_help_button_opens_the_guide(qgis_iface, project, monkeypatch, tmp_path: Path) -> None:
    opened: list[QUrl] = []
    monkeypatch.setattr(dialog_module.QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    dlg = LandcoverDialog(qgis_iface)
    button = dlg.buttons.button(QDialogButtonBox.Help)
    assert button is not None
    button.click()
    assert [u.toLocalFile() for u in opened] == [str(REPO / "docs" / "plugin.md")]  # the source tree's guide
    # The zip ships README.md inside the plugin folder (no docs/): that is what opens there.
    zipped = tmp_path / "plugins" / "landcover_plugin"
    zipped.mkdir(parents=True)
    (zipped / "README.md").write_text("# Landcover\n")
    assert help_target(zipped).toLocalFile() == str(zipped / "README.md")
    (zipped / "README.md").unlink()
    (zipped / "metadata.txt").write_text("[general]\nhomepage=https://example.org/landcover\n")
    assert help_target(zipped).toString() == "https://example.org/landcover"


# ------------------------------------------------------------------ 4. Processing
@pytest.fixture
def provider(qgis_processing):
    with landcover_provider() as prov:
        yield prov


def test_model_is_a_list_of_installed_models(provider, crops, tmp_path: Path) -> None:
    import processing

    alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment")
    param = alg.parameterDefinition("MODEL")
    assert isinstance(param, QgsProcessingParameterEnum) and param.usesStaticStrings()
    default = resolve_model("default")
    assert param.defaultValue() == default.name
    assert default.name in param.options() and UNTRAINED in param.options()
    assert alg.parameterDefinition("MODEL_FILE").flags() & alg.parameterDefinition("MODEL_FILE").FlagOptional
    context = QgsProcessingContext()
    base = {"INPUT": str(crops["rgb"]), "OUTPUT": str(tmp_path / "o.tif")}
    for accepted in ("default", default.name, UNTRAINED, str(default.source)):  # names and paths still work
        ok, message = alg.checkParameterValues({**base, "MODEL": accepted}, context)
        assert ok, (accepted, message)
    # qgis_process help offers option numbers for enums: they name the listed model
    assert alg.checkParameterValues({**base, "MODEL": "1"}, context)[0]
    assert alg.model_spec({**base, "MODEL": "1"}, context) == param.options()[1]
    ok, message = alg.checkParameterValues({**base, "MODEL": "no-such-model"}, context)
    assert not ok and "no model named 'no-such-model'" in message
    # MODEL_FILE wins over MODEL
    with pytest.raises(Exception, match="does not exist"):
        processing.run("landcover:segment", {**base, "MODEL": UNTRAINED, "MODEL_FILE": str(tmp_path / "x.json")})


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.texts: list[str] = []

    def setProgressText(self, text: str) -> None:  # noqa: N802 - QGIS API
        self.texts.append(text)
        super().setProgressText(text)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803 - QGIS API
        self.errors.append(error)
        super().reportError(error, fatalError)

    def pushWarning(self, warning: str) -> None:  # noqa: N802 - QGIS API
        self.warnings.append(warning)
        super().pushWarning(warning)


@pytest.mark.slow
def test_processing_runs_the_default_model(provider, crops, tmp_path: Path) -> None:
    import processing

    layer = QgsRasterLayer(str(crops["rgb"]), "rgb")
    e = layer.extent()
    area = f"{e.xMinimum()},{e.xMinimum() + e.width() / 4},{e.yMinimum()},{e.yMinimum() + e.height() / 4}"
    feedback = RecordingFeedback()
    result = processing.run("landcover:segment", {  # no MODEL: the enum's default, the default model
        "INPUT": str(crops["rgb"]), "AREA": f"{area} [{layer.crs().authid()}]",
        "OUTPUT": str(tmp_path / "o.tif")}, feedback=feedback)
    assert resolve_model("default").name in gdal.Info(result["OUTPUT"])  # the class raster names its model
    texts = feedback.texts
    assert "checking the worker Python" in texts and len(texts) > 2, texts  # the stage, not only a percentage


@pytest.mark.slow
def test_batch_row_with_empty_optional_outputs_reports_no_error(provider, qgis_iface, qgis_new_project, crops,
                                                                tmp_path: Path) -> None:
    """What the batch dialog does per row: empty output cells become empty definitions that load on completion,
    then Processing loads the results (processing/gui/BatchAlgorithmDialog.py in 3.22)."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from processing.tools import dataobjects

    project = QgsProject.instance()
    ortho = add_raster(crops["rgb"], "river_rgb")
    e = ortho.extent()
    area = f"{e.xMinimum()},{e.xMinimum() + e.width() / 4},{e.yMinimum()},{e.yMinimum() + e.height() / 4}"
    alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment")
    parameters = {
        "INPUT": ortho.id(), "MODEL": UNTRAINED, "AREA": f"{area} [{ortho.crs().authid()}]",
        "OUTPUT": QgsProcessingOutputLayerDefinition(str(tmp_path / "classes.tif"), project),
        "CONFIDENCE": QgsProcessingOutputLayerDefinition("", project),
        "POLYGONS": QgsProcessingOutputLayerDefinition("", project),
    }
    feedback = RecordingFeedback()
    context = dataobjects.createContext(feedback)
    parameters = alg.preprocessParameters(parameters)
    results, ok = alg.run(parameters, context, feedback)
    assert ok, feedback.errors
    assert "CONFIDENCE" not in results and "POLYGONS" not in results
    assert handleAlgorithmResults(alg, context, feedback, False, parameters)
    assert not [e for e in feedback.errors if "not correctly generated" in e], feedback.errors
    assert feedback.errors == []
    group = project.layerTreeRoot().findGroup(GROUP_NAME)
    (node,) = group.findLayers()
    assert node.layer().name() == "river_rgb — land cover (untrained-unet-resnet18)"
    assert tree_names(project.layerTreeRoot())[:2] == [GROUP_NAME, "river_rgb"]


# ------------------------------------------------------------------ 5. toolbar
def test_own_toolbar(qgis_iface) -> None:
    plugin = landcover_plugin.classFactory(qgis_iface)
    plugin.initGui()
    try:
        toolbar = plugin.toolbar
        assert toolbar.objectName() == "landcoverToolbar" and not toolbar.isHidden()
        assert plugin.action in toolbar.actions()
    finally:
        plugin.unload()
    assert plugin.toolbar is None


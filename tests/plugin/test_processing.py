"""Processing algorithms ``landcover:segment`` and ``landcover:vectorize`` through ``processing.run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from tests.plugin.helpers import UNTRAINED, landcover_provider, write_class_raster


@pytest.fixture(scope="module")
def provider(qgis_processing):
    with landcover_provider() as prov:
        yield prov


@pytest.fixture(scope="module")
def segmented(provider, crops, tmp_path_factory) -> dict:
    """One real segment run (with AREA, OVERLAP, BATCH_SIZE, BANDS and POLYGONS) shared by the tests below."""
    import processing

    out = tmp_path_factory.mktemp("proc")
    vrt = out / "rgb.vrt"  # not a plain file: exercises the export path inside Processing
    gdal.BuildVRT(str(vrt), [str(crops["rgb"])]).FlushCache()
    layer = QgsRasterLayer(str(crops["rgb"]), "rgb")
    e = layer.extent()
    area = f"{e.xMinimum()},{e.xMinimum() + e.width() / 2},{e.yMinimum()},{e.yMaximum()} [{layer.crs().authid()}]"
    result = processing.run("landcover:segment", {
        "INPUT": str(vrt), "MODEL": UNTRAINED, "AREA": area, "OVERLAP": 16, "BATCH_SIZE": 2,
        "BANDS": "1,2,3", "RESAMPLE": False, "OUTPUT": str(out / "classes.tif"),
        "POLYGONS": str(out / "polygons.gpkg"),
    })
    return {"result": result, "layer": layer, "out": out}


@pytest.mark.slow
def test_segment_outputs(segmented) -> None:
    result, layer, out = segmented["result"], segmented["layer"], segmented["out"]
    assert result["OUTPUT"] == str(out / "classes.tif")
    classes = QgsRasterLayer(result["OUTPUT"], "classes")
    assert classes.crs() == layer.crs()
    assert (classes.width(), classes.height()) == (160, 320)
    assert classes.extent().xMinimum() == pytest.approx(layer.extent().xMinimum())
    areas = json.loads(Path(result["AREAS"]).read_text())
    assert areas["valid_pixels"] == 160 * 320
    polygons = QgsVectorLayer(result["POLYGONS"], "polygons", "ogr")
    assert polygons.isValid() and polygons.featureCount() > 0
    assert {"class_id", "class_name", "area_m2"} <= set(polygons.fields().names())


@pytest.mark.slow
def test_vectorize(segmented, tmp_path: Path) -> None:
    import processing

    raster = segmented["result"]["OUTPUT"]
    result = processing.run("landcover:vectorize", {"INPUT": raster, "BAND": 1, "OUTPUT": str(tmp_path / "v.gpkg")})
    layer = QgsVectorLayer(result["OUTPUT"], "v", "ogr")
    assert layer.isValid() and layer.featureCount() > 0
    areas = json.loads(Path(segmented["result"]["AREAS"]).read_text())
    by_class: dict[str, float] = {}
    for f in layer.getFeatures():
        by_class[f["class_name"]] = by_class.get(f["class_name"], 0.0) + f["area_m2"]
    expected = {c["name"]: c["area_m2"] for c in areas["classes"] if c["pixels"]}
    # Ground areas both ways (this crop is World Mercator): the polygons' ellipsoidal areas and the table's
    # row-by-row pixel areas agree to 1e-5 on large classes; each polygon's area is rounded to 0.001 m², which
    # tiny classes of many small polygons feel.
    assert by_class == pytest.approx(expected, rel=2e-3, abs=0.02)


@pytest.mark.slow
def test_vectorize_styles_the_loaded_layer(segmented, qgis_iface, qgis_new_project) -> None:
    import processing

    result = processing.runAndLoadResults("landcover:vectorize", {
        "INPUT": segmented["result"]["OUTPUT"], "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = QgsProject.instance().mapLayer(result["OUTPUT"])
    assert isinstance(layer, QgsVectorLayer)
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer)
    assert [c.label() for c in renderer.categories()] == ["background", "building", "woodland", "water", "road"]


def test_vectorize_handles_nodata(provider, tmp_path: Path) -> None:
    import numpy as np
    import processing

    path = write_class_raster(tmp_path / "c.tif", np.array(
        [[1, 1, 2, 2], [1, 1, 2, 2], [255, 255, 3, 3], [255, 255, 3, 3]], dtype=np.uint8))
    result = processing.run("landcover:vectorize", {"INPUT": str(path), "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = result["OUTPUT"]
    if isinstance(layer, str):
        layer = QgsVectorLayer(layer, "v", "ogr")
    got = sorted((f["class_id"], f["class_name"], f["area_m2"]) for f in layer.getFeatures())
    assert got == [(1, "building", 4.0), (2, "woodland", 4.0), (3, "water", 4.0)]


def test_segment_parameter_errors(provider, crops, tmp_path: Path) -> None:
    import processing

    with pytest.raises(QgsProcessingException, match="does not exist"):
        processing.run("landcover:segment", {"INPUT": str(crops["rgb"]), "MODEL": str(tmp_path / "nope.json"),
                                             "OUTPUT": str(tmp_path / "o.tif")})
    with pytest.raises(QgsProcessingException, match="has 1 band"):
        processing.run("landcover:segment", {"INPUT": str(crops["gray"]), "MODEL": UNTRAINED,
                                             "OUTPUT": str(tmp_path / "o.tif")})
    with pytest.raises(QgsProcessingException, match="bands"):
        processing.run("landcover:segment", {"INPUT": str(crops["rgb"]), "MODEL": UNTRAINED, "BANDS": "1,x",
                                             "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_segment_precision_and_tta_are_advanced_contract_enums(provider, crops, tmp_path: Path) -> None:
    from landcover_plugin import job
    from landcover_plugin.contract import PRECISIONS, TTA_MODES, untrained_model

    alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment")
    for name, values, choices in (("PRECISION", PRECISIONS, job.PRECISION_CHOICES),
                                  ("TTA", TTA_MODES, job.TTA_CHOICES)):
        param = alg.parameterDefinition(name)
        assert isinstance(param, QgsProcessingParameterEnum) and not param.usesStaticStrings()
        assert [value for value, _ in choices] == list(values)  # option number i is the contract's value i
        assert param.options() == [label for _, label in choices]
        assert param.defaultValue() == 0 and values[0] in ("auto", "none")
        assert param.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert alg.parameterDefinition("PRECISION").options()[PRECISIONS.index("fp32")] == "Float (fp32)"
    assert alg.parameterDefinition("TTA").options()[TTA_MODES.index("d4")] == "D4: 8 rotations and mirrors (8x time)"

    layer = QgsRasterLayer(str(crops["rgb"]), "rgb")

    def worker_args(**chosen):
        context = QgsProcessingContext()
        parameters = {"INPUT": str(crops["rgb"]), "MODEL": UNTRAINED, "OUTPUT": str(tmp_path / "o.tif"), **chosen}
        ok, message = alg.checkParameterValues(parameters, context)
        assert ok, message
        plan = job.prepare(alg.segment_request(layer, untrained_model(UNTRAINED), parameters, context))
        try:
            return plan.segment_args(plan.input_path)
        finally:
            plan.workdir.rmdir()

    default = worker_args()  # scripts written before these parameters existed
    assert (default.precision, default.tta) == ("auto", "none")
    assert "--precision" not in default.argv() and "--tta" not in default.argv()
    chosen = worker_args(PRECISION=PRECISIONS.index("fp32"), TTA=TTA_MODES.index("d4"))
    assert (chosen.precision, chosen.tta) == ("fp32", "d4")
    argv = chosen.argv()
    assert argv[argv.index("--precision"):argv.index("--precision") + 4] == ["--precision", "fp32", "--tta", "d4"]
    as_text = worker_args(PRECISION=str(PRECISIONS.index("int8")), TTA=str(TTA_MODES.index("flip")))  # qgis_process
    assert (as_text.precision, as_text.tta) == ("int8", "flip")
    assert not alg.checkParameterValues({"INPUT": str(crops["rgb"]), "MODEL": UNTRAINED, "TTA": len(TTA_MODES),
                                         "OUTPUT": str(tmp_path / "o.tif")}, QgsProcessingContext())[0]


@pytest.mark.slow
def test_segment_result_is_styled_and_named_when_loaded(provider, crops, qgis_iface, qgis_new_project) -> None:
    import processing

    layer = QgsRasterLayer(str(crops["rgb"]), "rgb")
    e = layer.extent()
    area = f"{e.xMinimum()},{e.xMinimum() + e.width() / 4},{e.yMinimum()},{e.yMinimum() + e.height() / 4}"
    result = processing.runAndLoadResults("landcover:segment", {
        "INPUT": str(crops["rgb"]), "MODEL": UNTRAINED, "AREA": f"{area} [{layer.crs().authid()}]",
        "OUTPUT": "TEMPORARY_OUTPUT"})
    loaded = QgsProject.instance().mapLayer(result["OUTPUT"])
    if loaded is None:
        loaded = next(lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == result["OUTPUT"])
    from qgis.core import QgsPalettedRasterRenderer

    assert loaded.name() == "river_rgb — land cover (untrained-unet-resnet18)"  # the input's and the model's name
    group = QgsProject.instance().layerTreeRoot().findGroup("Landcover")
    assert group is not None and group.findLayer(loaded.id()) is not None
    assert isinstance(loaded.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in loaded.renderer().classes()] == ["background", "building", "woodland", "water", "road"]


@pytest.mark.slow
def test_segment_cancel_via_feedback(provider, real_dir, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    # Cancel as soon as tiles are being predicted (progress beyond the start-up share).
    feedback.progressChanged.connect(lambda percent: feedback.cancel() if percent >= 3 else None)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("landcover:segment", {
            "INPUT": str(real_dir / "riverfront_rgb_jpeg_epsg3395.tif"), "MODEL": UNTRAINED,
            "OUTPUT": str(tmp_path / "classes.tif")}, feedback=feedback)
    assert list(tmp_path.iterdir()) == []


def _deepness_with_metadata(tmp_path: Path) -> Path:
    """Deepness's dummy colour model with the metadata a complete export carries (class names, resolution)."""
    import onnx

    from tests.plugin.helpers import REPO

    model = onnx.load(str(REPO / "tests" / "data" / "deepness" / "dummy_model.onnx"))
    for key, value in (("model_type", '"Segmentor"'), ("class_names", '{"0": "red", "1": "green", "2": "blue"}'),
                       ("resolution", "10")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / "colours.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_model_file_takes_a_deepness_onnx_for_one_run(provider, crops, tmp_path: Path) -> None:
    import processing

    from landcover_plugin.settings import Settings

    models = tmp_path / "my models"
    Settings(models_dir=str(models)).save()
    try:
        result = processing.run("landcover:segment", {
            "INPUT": str(crops["rgb"]), "MODEL_FILE": str(_deepness_with_metadata(tmp_path)),
            "OUTPUT": str(tmp_path / "classes.tif")})
        areas = json.loads(Path(result["AREAS"]).read_text())
        assert [c["name"] for c in areas["classes"]] == ["red", "green", "blue"]
        assert not models.exists() or not any(models.iterdir())  # the user's models folder is left alone
        bare = tmp_path / "bare.onnx"  # the fixture itself: no class names, no resolution
        bare.write_bytes((Path(__file__).resolve().parents[1] / "data" / "deepness" / "dummy_model.onnx").read_bytes())
        with pytest.raises(QgsProcessingException, match="no class_names.*Class names"):
            processing.run("landcover:segment", {"INPUT": str(crops["rgb"]), "MODEL_FILE": str(bare),
                                                 "OUTPUT": str(tmp_path / "x.tif")})
    finally:
        Settings.clear()

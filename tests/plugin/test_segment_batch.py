"""Processing algorithm ``landcover:segment_batch``: the backend's ``batch`` command (Dask) through the worker.

The real runs use the bundled default model on 256–400 px crops of the demo orthophoto with one local Dask
worker; each starts a LocalCluster (a few seconds), so there are only two.
"""

from __future__ import annotations

import csv
import gc
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProject,
    QgsRasterLayer,
)
from rasterio.windows import Window

from tests.plugin.helpers import REPO, UNTRAINED, landcover_provider

DEMO = REPO / "demo" / "orthophoto.tif"
CLASS_NAMES = ["background", "building", "woodland", "water", "road"]


@pytest.fixture(scope="module")
def provider(qgis_processing):
    with landcover_provider() as prov:
        yield prov


def demo_crop(path: Path, row: int, col: int, height: int, width: int) -> Path:
    """A georeferenced piece of the demo orthophoto as its own GeoTIFF."""
    with rasterio.open(DEMO) as src:
        window = Window(col, row, width, height)
        data, transform, crs = src.read(window=window), src.window_transform(window), src.crs
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, compress="deflate") as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def sheets(tmp_path_factory) -> list[Path]:
    """Three neighbouring sheets of different sizes (256–400 px)."""
    d = tmp_path_factory.mktemp("sheets")
    return [demo_crop(d / "sheet_a.tif", 600, 600, 256, 320),
            demo_crop(d / "sheet_b.tif", 600, 920, 300, 256),
            demo_crop(d / "sheet_c.tif", 900, 600, 400, 288)]


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what the algorithm reported."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[tuple[str, bool]] = []
        self.warnings: list[str] = []
        self.progress: list[float] = []
        self.progressChanged.connect(self.progress.append)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803 - QGIS API
        self.errors.append((error, fatalError))
        super().reportError(error, fatalError)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.warnings.append(warning)
        super().pushWarning(warning)


def context_for(project: QgsProject | None = None) -> QgsProcessingContext:
    context = QgsProcessingContext()
    context.setProject(project or QgsProject.instance())
    return context


def test_registered_with_its_parameters(provider) -> None:
    from landcover_plugin import job
    from landcover_plugin.contract import PRECISIONS, TTA_MODES

    alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment_batch")
    assert alg is not None and alg.displayName() == "Segment land cover (batch)"
    kinds = {"INPUT": QgsProcessingParameterMultipleLayers, "FOLDER": QgsProcessingParameterFile,
             "MODEL": QgsProcessingParameterEnum, "OUTPUT_FOLDER": QgsProcessingParameterFolderDestination,
             "WORKERS": QgsProcessingParameterNumber, "THREADS": QgsProcessingParameterNumber,
             "SCHEDULER": QgsProcessingParameterString, "CHUNK": QgsProcessingParameterNumber,
             "RESUME": QgsProcessingParameterBoolean, "PRECISION": QgsProcessingParameterEnum,
             "TTA": QgsProcessingParameterEnum}
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert list(params) == list(kinds)
    for name, kind in kinds.items():
        assert isinstance(params[name], kind), name
        advanced = bool(params[name].flags() & QgsProcessingParameterDefinition.FlagAdvanced)
        assert advanced == (name in ("WORKERS", "THREADS", "SCHEDULER", "CHUNK", "RESUME", "PRECISION", "TTA")), name
        optional = bool(params[name].flags() & QgsProcessingParameterDefinition.FlagOptional)
        assert optional == (name in ("INPUT", "FOLDER", "WORKERS", "THREADS", "SCHEDULER")), name
    assert params["FOLDER"].behavior() == QgsProcessingParameterFile.Folder
    assert params["INPUT"].layerType() == 3  # QgsProcessing.TypeRaster
    assert params["CHUNK"].defaultValue() == 8192 and params["RESUME"].defaultValue() is False
    assert params["WORKERS"].defaultValue() is None and params["THREADS"].defaultValue() is None
    for name, values, choices in (("PRECISION", PRECISIONS, job.PRECISION_CHOICES),
                                  ("TTA", TTA_MODES, job.TTA_CHOICES)):
        assert [value for value, _ in choices] == list(values)
        assert params[name].options() == [label for _, label in choices] and params[name].defaultValue() == 0
    # MODEL: the very parameter landcover:segment offers (installed models, the default model first choice).
    segment_alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment")
    segment = segment_alg.parameterDefinition("MODEL")
    assert params["MODEL"].options() == segment.options() and UNTRAINED in params["MODEL"].options()
    assert params["MODEL"].defaultValue() == segment.defaultValue()
    assert params["MODEL"].usesStaticStrings()
    outputs = {o.name(): type(o) for o in alg.outputDefinitions()}
    assert outputs == {"OUTPUT_FOLDER": QgsProcessingOutputFolder, "MOSAIC": QgsProcessingOutputRasterLayer,
                       "AREAS": QgsProcessingOutputFile}
    help_text = alg.shortHelpString()
    for word in ("Dask", "RESUME", "CHUNK", "identical", "mosaic.vrt", "areas.csv", "SCHEDULER"):
        assert word in help_text, word


def test_parameters_make_the_worker_command(provider, sheets, tmp_path: Path) -> None:
    from landcover_plugin.contract import PRECISIONS, TTA_MODES, resolve_model

    alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment_batch")
    context = context_for()
    layer = QgsRasterLayer(str(sheets[0]), "a", "gdal")
    vrt = tmp_path / "mosaic.vrt"  # a VRT file is read by the worker itself (and chunked when large)
    from osgeo import gdal

    gdal.BuildVRT(str(vrt), [str(s) for s in sheets[1:]]).FlushCache()
    parameters = {"INPUT": [layer, str(vrt)], "FOLDER": str(sheets[0].parent), "MODEL": UNTRAINED,
                  "OUTPUT_FOLDER": str(tmp_path / "out"), "WORKERS": 3, "THREADS": 2, "CHUNK": 1024,
                  "RESUME": True, "PRECISION": PRECISIONS.index("fp32"), "TTA": TTA_MODES.index("flip")}
    assert alg.checkParameterValues(parameters, context) == (True, "")
    inputs = alg.input_paths(parameters, context)
    assert inputs == [str(sheets[0].resolve()), str(vrt.resolve()), str(sheets[0].parent)]
    request = alg.batch_request(parameters, context, inputs, resolve_model(UNTRAINED), tmp_path / "out")
    argv = request.command("py")
    assert argv[:4] == ["py", "-m", "backend", "batch"]
    assert argv[4:8] == [*inputs, str(tmp_path / "out")]
    rest = " ".join(argv[8:])
    assert rest == (f"--model {UNTRAINED} --workers 3 --threads-per-worker 2 --resume --chunk 1024 "
                    "--precision fp32 --tta flip --progress json")
    defaults = alg.batch_request({"INPUT": [layer], "MODEL": UNTRAINED}, context, [str(sheets[0])],
                                 resolve_model(UNTRAINED), tmp_path / "o")
    assert defaults.command("py")[6:] == ["--model", UNTRAINED, "--progress", "json"]
    scheduler = alg.batch_request({"SCHEDULER": " tcp://host:8786 "}, context, ["x.tif"], resolve_model(UNTRAINED),
                                  tmp_path / "o")
    assert "--scheduler tcp://host:8786 --progress" in " ".join(scheduler.command("py"))


def test_model_takes_names_numbers_and_paths_like_segment(provider, sheets, tmp_path: Path) -> None:
    from landcover_plugin.contract import resolve_model

    alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment_batch")
    context = context_for()
    base = {"INPUT": [str(sheets[0])], "OUTPUT_FOLDER": str(tmp_path / "out")}
    options = alg.parameterDefinition("MODEL").options()
    default_path = str(resolve_model("default").source)
    for value, spec in (("default", "default"), (options.index(UNTRAINED), UNTRAINED),
                        (str(options.index(UNTRAINED)), UNTRAINED), (default_path, default_path)):
        parameters = {**base, "MODEL": value}
        assert alg.checkParameterValues(parameters, context) == (True, ""), value
        assert alg.model_spec(parameters, context) == spec
    ok, message = alg.checkParameterValues({**base, "MODEL": "no-such-model"}, context)
    assert not ok and message.startswith("MODEL: no model named 'no-such-model'")


def test_needs_inputs_that_are_raster_files(provider, sheets, tmp_path: Path) -> None:
    import processing
    from osgeo import gdal

    out = str(tmp_path / "out")
    with pytest.raises(QgsProcessingException, match=r"nothing to segment.*INPUT.*FOLDER"):
        processing.run("landcover:segment_batch", {"MODEL": UNTRAINED, "OUTPUT_FOLDER": out})
    with pytest.raises(QgsProcessingException, match=r"nothing to segment"):
        processing.run("landcover:segment_batch", {"INPUT": [], "FOLDER": "", "MODEL": UNTRAINED,
                                                   "OUTPUT_FOLDER": out})
    gdal.Translate("/vsimem/in_memory_sheet.tif", str(sheets[0]))
    memory = QgsRasterLayer("/vsimem/in_memory_sheet.tif", "scratch sheet", "gdal")
    try:
        assert memory.isValid()
        with pytest.raises(QgsProcessingException, match=r"'scratch sheet' is not a raster file.*save it as a GeoTIFF"):
            processing.run("landcover:segment_batch", {"INPUT": [str(sheets[0]), memory], "MODEL": UNTRAINED,
                                                       "OUTPUT_FOLDER": out})
    finally:
        # The layer must close its dataset before the in-memory file goes: else GDAL crashes at exit.
        del memory
        gc.collect()
        gdal.Unlink("/vsimem/in_memory_sheet.tif")
    with pytest.raises(QgsProcessingException, match=r"FOLDER .*not a folder"):
        processing.run("landcover:segment_batch", {"FOLDER": str(sheets[0]), "MODEL": UNTRAINED,
                                                   "OUTPUT_FOLDER": out})
    for into_inputs in ({"INPUT": [str(sheets[0])]}, {"FOLDER": str(sheets[0].parent)}):
        with pytest.raises(QgsProcessingException, match=r"holds the inputs.*choose another"):
            processing.run("landcover:segment_batch", {**into_inputs, "MODEL": UNTRAINED,
                                                       "OUTPUT_FOLDER": str(sheets[0].parent)})
    assert not Path(out).exists()  # refused before the worker started
    assert not (sheets[0].parent / "manifest.jsonl").exists()


@pytest.mark.parametrize("settings, message", [
    ({"CHUNK": 1000}, r"chunk 1000 \(--chunk; CHUNK in Processing\) must be a multiple of 256"),
    ({"SCHEDULER": "tcp://127.0.0.1:8786", "WORKERS": 2}, r"with --scheduler \(SCHEDULER\) the cluster's own workers"),
    ({"THREADS": 0}, r"THREADS in Processing\) is 0; it must be at least 1"),
])
def test_contradicting_settings_are_refused_before_a_worker_starts(provider, sheets, tmp_path: Path, monkeypatch,
                                                                   settings, message) -> None:
    import processing

    from landcover_plugin import batch

    started = []
    monkeypatch.setattr(batch, "run", lambda *args, **kwargs: started.append(args))
    parameters = {"INPUT": [str(sheets[0])], "MODEL": UNTRAINED, "OUTPUT_FOLDER": str(tmp_path / "out"), **settings}
    alg = QgsApplication.processingRegistry().createAlgorithmById("landcover:segment_batch")
    ok, why = alg.checkParameterValues(parameters, context_for())  # what the dialog shows before it runs anything
    assert not ok and re.search(message, why), why
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("landcover:segment_batch", parameters)
    assert started == [] and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_batch_run_writes_outputs_and_loads_the_styled_mosaic(provider, sheets, tmp_path: Path, qgis_iface,
                                                              qgis_new_project) -> None:
    import processing

    layers = [QgsRasterLayer(str(s), s.stem, "gdal") for s in sheets]
    out = tmp_path / "batch out"
    context, feedback = context_for(QgsProject.instance()), RecordingFeedback()
    # As the toolbox runs it: then the outputs registered to load on completion are added to the project.
    result = processing.runAndLoadResults("landcover:segment_batch", {
        "INPUT": layers, "MODEL": "default", "OUTPUT_FOLDER": str(out), "WORKERS": 1,
    }, feedback=feedback, context=context)

    assert result["OUTPUT_FOLDER"] == str(out)
    assert sorted(p.name for p in out.glob("*.tif")) == ["sheet_a.tif", "sheet_b.tif", "sheet_c.tif"]
    assert result["MOSAIC"] == str(out / "mosaic.vrt") and (out / "mosaic.qml").is_file()
    assert result["AREAS"] == str(out / "areas.json")
    areas = json.loads(Path(result["AREAS"]).read_text())
    pixels = 0
    for s in sheets:
        with rasterio.open(s) as src:
            pixels += src.width * src.height
    assert areas["valid_pixels"] + areas["nodata_pixels"] == pixels == 256 * 320 + 300 * 256 + 400 * 288
    assert [c["name"] for c in areas["classes"]] == CLASS_NAMES
    with open(out / "areas.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["item"] for r in rows} == {"sheet_a", "sheet_b", "sheet_c", "TOTAL"}
    totals = {r["class"]: int(r["pixels"]) for r in rows if r["item"] == "TOTAL"}
    assert totals == {c["name"]: c["pixels"] for c in areas["classes"]}
    with rasterio.open(out / "mosaic.vrt") as vrt:  # the mosaic is every sheet's classes in place
        mosaic = vrt.read(1)
        with rasterio.open(out / "sheet_c.tif") as sheet:
            row, col = vrt.index(*sheet.xy(0, 0))
            assert np.array_equal(mosaic[row:row + sheet.height, col:col + sheet.width], sheet.read(1))
    # Progress: item by item to 100 %; no item failed.
    assert feedback.progress[-1] == 100 and any(0 < p < 100 for p in feedback.progress)
    assert not feedback.errors

    # The mosaic was registered to load when the run ends, as one layer named after the model ...
    loads = context.layersToLoadOnCompletion()
    assert list(loads) == [result["MOSAIC"]]
    details = loads[result["MOSAIC"]]
    name = "land cover mosaic (landcover-unet-resnet18-synthetic)"  # the default model's name
    assert details.name == name and details.forceName and details.outputName == "MOSAIC"
    assert details.postProcessor() is not None
    # ... and loaded styled by class, at the top of the Landcover group like the other results.
    loaded = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == result["MOSAIC"]]
    assert len(loaded) == 1
    layer = loaded[0]
    assert layer.name() == name
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in layer.renderer().classes()] == CLASS_NAMES
    group = QgsProject.instance().layerTreeRoot().findGroup("Landcover")
    assert group is not None and group.findLayer(layer.id()) is not None


@pytest.mark.slow
def test_a_corrupt_sheet_fails_naming_it_and_keeps_the_others(provider, sheets, tmp_path: Path) -> None:
    import processing

    folder = tmp_path / "sheets"
    folder.mkdir()
    for s in sheets[:2]:
        (folder / s.name).write_bytes(s.read_bytes())
    (folder / "broken_sheet.tif").write_bytes(b"II*\x00" + b"\x00" * 200)  # a TIFF header and nothing else
    out = tmp_path / "out"
    feedback = RecordingFeedback()
    with pytest.raises(QgsProcessingException) as caught:
        processing.run("landcover:segment_batch", {
            "FOLDER": str(folder), "MODEL": "default", "OUTPUT_FOLDER": str(out), "WORKERS": 1,
        }, context=context_for(), feedback=feedback)
    message = str(caught.value)
    assert "broken_sheet.tif" in message and "1 failed" in message
    assert sorted(p.name for p in out.glob("*.tif")) == ["sheet_a.tif", "sheet_b.tif"]
    assert (out / "mosaic.vrt").is_file() and (out / "areas.csv").is_file()
    # The failed item was reported while the others ran, as a non-fatal error.
    assert any("broken_sheet.tif" in text and not fatal for text, fatal in feedback.errors)

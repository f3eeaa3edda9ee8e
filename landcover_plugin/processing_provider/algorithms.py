"""Processing algorithms: ``landcover:segment`` (orthophoto → class raster), ``landcover:segment_batch`` (many
rasters or a large mosaic, on Dask), ``landcover:vectorize`` and ``landcover:setup_runtime`` (the managed worker
runtime, so that a headless install needs no terminal).

All raise :class:`QgsProcessingException` with the plugin's actionable messages, report progress
through ``feedback`` and honour ``feedback.isCanceled()``. Heavy modules load only when they run.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgis.core import (
    QgsFeatureSink,
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)

from ..errors import CancelledError, InputError, InternalError, LandcoverError

if TYPE_CHECKING:
    from ..contract import BatchArgs, ModelInfo
    from ..job import SegmentRequest

UNTRAINED_SPEC = "untrained:Unet:resnet18"


@dataclass(frozen=True)
class _Placement:
    """Where a loaded segment output goes: the Landcover group, at the top, above the input (see results.py)."""

    run: str
    rank: int
    input_layer_id: str | None = None
    visible: bool = True


class _StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Applies the class palette (raster) or categories (polygons) when Processing loads an output, names it,
    and (segment outputs) moves it to the top of the Landcover group like the dialog's results."""

    _alive: list[_StyleOnLoad] = []  # Processing keeps only a raw pointer; Python must hold the object

    def __init__(self, classes, name: str | None = None, placement: _Placement | None = None) -> None:
        super().__init__()
        self.classes = classes
        self.name = name
        self.placement = placement

    @classmethod
    def create(cls, classes, name: str | None = None, placement: _Placement | None = None) -> _StyleOnLoad:
        processor = cls(classes, name, placement)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API name
        from ..styling import style_class_layer, style_polygon_layer

        if self.classes is None:
            pass  # the confidence raster: QGIS's default grey ramp
        elif isinstance(layer, QgsRasterLayer):
            style_class_layer(layer, self.classes)
        elif isinstance(layer, QgsVectorLayer):
            style_polygon_layer(layer, self.classes)
        if self.name:
            layer.setName(self.name)
        project = context.project() or layer.project()
        if self.placement is not None and project is not None and project.mapLayer(layer.id()) is not None:
            from ..results import place_result_layer

            p = self.placement
            place_result_layer(project, layer, p.run, p.rank, p.input_layer_id, p.visible)


def _style_output(context: QgsProcessingContext, layer_id: str, classes, name: str | None = None,
                  placement: _Placement | None = None) -> None:
    """Style (and name, and place) an output when Processing loads it on completion."""
    if layer_id and context.willLoadLayerOnCompletion(layer_id):
        details = context.layerToLoadOnCompletionDetails(layer_id)
        if name:
            details.name = name
            details.forceName = True  # not the file name, even with Processing's "use file name" option
        details.setPostProcessor(_StyleOnLoad.create(classes, name, placement))


def _drop_empty_loads(context: QgsProcessingContext) -> None:
    """Forget load-on-completion entries without a file: batch mode asks to load every layer output, including
    optional ones left empty, and Processing then logs "The following layers were not correctly generated"."""
    loads = context.layersToLoadOnCompletion()
    if any(not key for key in loads):
        context.setLayersToLoadOnCompletion({key: details for key, details in loads.items() if key})


def _is_empty_output(value: Any) -> bool:
    """Whether an output parameter's value asks for no output (None, "", or a batch row's empty definition)."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        value = value.sink.staticValue()
    return value is None or (isinstance(value, str) and not value.strip())


def _installed_models() -> tuple[list[str], str | None]:
    """The MODEL enum: names of the usable installed models (bundled, user folder) plus the untrained check
    model, and the default model's name (None when no default model is installed)."""
    from ..contract import DEFAULT_MODEL, list_models
    from ..settings import Settings

    listed = [m for m in list_models(Settings.load().model_dirs()) if m.info is not None]
    names: list[str] = []
    for m in listed:
        if m.info.name not in names:
            names.append(m.info.name)
    default = next((m.info.name for m in listed if m.matches(DEFAULT_MODEL)), None)
    return names + [UNTRAINED_SPEC], default


class _LandcoverAlgorithm(QgsProcessingAlgorithm):
    """What every Landcover algorithm shares: no sub-group in the provider, fresh instances of its own class."""

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def createInstance(self) -> _LandcoverAlgorithm:  # noqa: N802
        return type(self)()


class _ModelAlgorithm(_LandcoverAlgorithm):
    """An algorithm that runs a model chosen in ``MODEL`` (and, when the subclass has one, ``MODEL_FILE``)."""

    MODEL = "MODEL"
    MODEL_FILE = ""  # the parameter that overrides MODEL; "" when the algorithm has none

    def _add_model_parameter(self) -> None:
        """The MODEL enum of the installed models, default: the default model."""
        # An enum of names (static strings: the value is the name, so qgis_process users keep passing names),
        # listed when the algorithm is created (each dialog opening sees newly installed models).
        self._models, default = _installed_models()
        self.addParameter(QgsProcessingParameterEnum(
            self.MODEL, "Model", options=self._models,
            defaultValue=default if default is not None else "default", usesStaticStrings=True))

    def _model_file_set(self, parameters: dict[str, Any]) -> bool:
        return bool(self.MODEL_FILE and parameters.get(self.MODEL_FILE))

    def model_spec(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """What to resolve: MODEL_FILE when set, else MODEL (a listed name, or any name/key/path/'default')."""
        path = self.parameterAsFile(parameters, self.MODEL_FILE, context) if self._model_file_set(parameters) else ""
        if path:
            return path
        listed = self._listed(parameters.get(self.MODEL))
        return listed if listed is not None else self.parameterAsString(parameters, self.MODEL, context)

    def _listed(self, value: Any) -> str | None:
        """The listed model an option number names (``qgis_process help`` offers numbers for enums), else None."""
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and 0 <= value < len(self._models):
            return self._models[value]
        return None

    def checkParameterValues(self, parameters: dict[str, Any], context: QgsProcessingContext):  # noqa: N802
        """Accept any model name, key, 'default' or bundle path in MODEL (as before it was a list), checked by
        resolving it, so ``qgis_process … MODEL=default`` and scripts passing a path keep working."""
        from ..contract import resolve_model
        from ..settings import Settings

        value = parameters.get(self.MODEL)
        if self._listed(value) is not None:
            parameters = {**parameters, self.MODEL: self._listed(value)}
        elif isinstance(value, str) and value.strip() and value not in self._models:
            if not self._model_file_set(parameters):
                try:
                    resolve_model(value, Settings.load().model_dirs())
                except LandcoverError as exc:
                    return False, f"MODEL: {exc}"
            parameters = {**parameters, self.MODEL: None}  # the enum's own check would refuse an unlisted name
        return super().checkParameterValues(parameters, context)


class SegmentAlgorithm(_ModelAlgorithm):
    """Segment an orthophoto with a Landcover model in a separate worker process."""

    INPUT, MODEL_FILE, AREA, OVERLAP, BATCH_SIZE, BANDS, RESAMPLE = (
        "INPUT", "MODEL_FILE", "AREA", "OVERLAP", "BATCH_SIZE", "BANDS", "RESAMPLE")
    PRECISION, TTA = "PRECISION", "TTA"
    OUTPUT, CONFIDENCE, POLYGONS, AREAS = "OUTPUT", "CONFIDENCE", "POLYGONS", "AREAS"

    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:  # noqa: N802
        return "Segment land cover"

    def shortHelpString(self) -> str:  # noqa: N802
        from .. import job

        return (
            "Classifies an orthophoto into land-cover classes (LandCover.ai: background, building, woodland, water, "
            "road) with a Landcover model bundle. The model runs in a separate Python worker: the Worker Python "
            "saved in the Landcover dialog, else LANDCOVER_PYTHON, else the plugin's managed runtime (run "
            "landcover:setup_runtime once), else the source tree's .venv. MODEL lists the installed models "
            "(bundled and the models folder; default: the default model) and untrained:Unet:resnet18 (random "
            "weights, installation check only). From the command line MODEL also takes any model name or key, "
            "'default', or a bundle .json path. MODEL_FILE, when set, is a bundle .json or a Deepness-format .onnx "
            "(its metadata must name the classes and resolution; otherwise add it with Models… first) to use "
            "instead of MODEL. "
            "Layers that are not plain files "
            "(WMS, VRT, in-memory) are exported first; RESAMPLE exports at the model's resolution when the pixel size "
            "differs. Writes a paletted class GeoTIFF (nodata 255) with class areas (.areas.json/.areas.csv) beside "
            f"it. Advanced: PRECISION: {job.PRECISION_HELP} TTA: {job.TTA_HELP}"
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        from .. import job

        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Orthophoto"))
        self._add_model_parameter()
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL_FILE, "Model file: bundle .json or Deepness .onnx (overrides Model)",
            QgsProcessingParameterFile.File,
            fileFilter="Landcover bundle or Deepness model (*.json *.onnx);;All files (*)", optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.AREA, "Area (default: whole layer)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap in pixels (default: the model's)", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size (default: the model's)", QgsProcessingParameterNumber.Integer,
            optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterString(
            self.BANDS, "Bands, e.g. 1,2,3 (default: first bands, alpha skipped)", optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.RESAMPLE, "Resample to the model's resolution when the pixel size differs", defaultValue=False))
        # Option numbers index the contract's PRECISIONS and TTA_MODES; advanced, so existing calls keep working.
        for name, label, choices in ((self.PRECISION, "Precision", job.PRECISION_CHOICES),
                                     (self.TTA, "Test-time augmentation", job.TTA_CHOICES)):
            param = QgsProcessingParameterEnum(name, label, options=[text for _, text in choices], defaultValue=0)
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Land cover"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.CONFIDENCE, "Confidence", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.POLYGONS, "Land-cover polygons", QgsProcessing.TypeVectorPolygon, optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputFile(self.AREAS, "Class areas (JSON)"))

    def segment_request(self, layer: QgsRasterLayer, model: ModelInfo, parameters: dict[str, Any],
                        context: QgsProcessingContext) -> SegmentRequest:
        """The job request the parameters ask for, with ``model`` resolved (registers the outputs to load).

        Raises:
            InputError: BANDS is not a list of band numbers.
        """
        from .. import export, job
        from ..contract import PRECISIONS, TTA_MODES

        area = export.Area()
        if parameters.get(self.AREA) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.AREA, context, layer.crs())
            if not rect.isNull() and not rect.isEmpty():
                area = export.Area(export.AREA_EXTENT, rect)
        overlap = parameters.get(self.OVERLAP)
        batch = parameters.get(self.BATCH_SIZE)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        # Optional outputs left empty are not asked for: parameterAsOutputLayer would register an empty
        # layer to load (batch rows pass empty definitions), which Processing reports as not generated.
        confidence = polygons = None
        if not _is_empty_output(parameters.get(self.CONFIDENCE)):
            confidence = self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) or None
        if not _is_empty_output(parameters.get(self.POLYGONS)):
            polygons = self.parameterAsOutputLayer(parameters, self.POLYGONS, context) or None
        _drop_empty_loads(context)
        return job.SegmentRequest(
            layer=layer, model=model, area=area,
            overlap=None if overlap in (None, "") else self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=None if batch in (None, "") else self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            bands=job.parse_bands(self.parameterAsString(parameters, self.BANDS, context)),
            resample=self.parameterAsBool(parameters, self.RESAMPLE, context),
            output=output, confidence=confidence, polygons=polygons,
            precision=PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
            tta=TTA_MODES[self.parameterAsEnum(parameters, self.TTA, context)],
        )

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("INPUT is not a raster layer; pass an orthophoto path or layer")
        with tempfile.TemporaryDirectory(prefix="landcover_model_") as scratch:
            return self._process(layer, parameters, context, feedback, Path(scratch))

    def _process(self, layer, parameters: dict[str, Any], context: QgsProcessingContext,
                 feedback: QgsProcessingFeedback, scratch: Path) -> dict[str, Any]:
        from .. import job
        from ..contract import resolve_model
        from ..settings import Settings

        try:
            spec = self.model_spec(parameters, context)
            if spec.lower().endswith(".onnx"):
                spec = _import_onnx(spec, scratch, feedback)
            model = resolve_model(spec, Settings.load().model_dirs())
            request = self.segment_request(layer, model, parameters, context)
            for warning in job.validate(request):
                feedback.pushWarning(f"{warning} (set RESAMPLE=true to resample)")
            plan = job.prepare(request)

            def progress(percent: float, message: str) -> None:
                if percent >= 0:
                    feedback.setProgress(percent)
                if message:
                    feedback.setProgressText(message)

            outcome = job.execute(plan, progress, feedback.isCanceled, feedback)
        except CancelledError:
            raise QgsProcessingException("cancelled; no output was kept") from None
        except LandcoverError as exc:
            if exc.details:
                feedback.pushDebugInfo(exc.details)
            raise QgsProcessingException(str(exc)) from exc
        for warning in outcome.warnings:
            feedback.pushWarning(warning)
        from ..styling import areas_summary

        feedback.pushInfo(areas_summary(outcome.areas))
        if outcome.how_run():
            feedback.pushInfo(f"ran with {outcome.how_run()}")
        from ..results import RANK_CLASSES, RANK_CONFIDENCE, RANK_POLYGONS, new_run_id
        from ..styling import result_layer_name

        run = new_run_id()
        project = context.project()
        input_id = layer.id() if project is not None and project.mapLayer(layer.id()) is not None else None
        _style_output(context, str(outcome.output), model.classes, result_layer_name(layer.name(), model.name),
                      _Placement(run, RANK_CLASSES, input_id))
        if outcome.polygons:
            _style_output(context, str(outcome.polygons), model.classes,
                          result_layer_name(layer.name(), model.name, "polygons"),
                          _Placement(run, RANK_POLYGONS, input_id))
        if outcome.confidence and context.willLoadLayerOnCompletion(str(outcome.confidence)):
            details = context.layerToLoadOnCompletionDetails(str(outcome.confidence))
            details.name = result_layer_name(layer.name(), model.name, "confidence")
            details.forceName = True
            details.setPostProcessor(_StyleOnLoad.create(None, details.name, _Placement(
                run, RANK_CONFIDENCE, input_id, visible=False)))
        results: dict[str, Any] = {self.OUTPUT: str(outcome.output), self.AREAS: str(outcome.files.areas_json)}
        if outcome.confidence:
            results[self.CONFIDENCE] = str(outcome.confidence)
        if outcome.polygons:
            results[self.POLYGONS] = str(outcome.polygons)
        return results


def _import_onnx(path: str, scratch: Path, feedback: QgsProcessingFeedback) -> str:
    """A Deepness ONNX given as MODEL_FILE, imported by the worker into ``scratch`` for this run only.

    Reading an ONNX file needs onnxruntime, which only the worker has; the user's models folder is left alone
    (the model manager is the way to keep a model).
    """
    from .. import runner
    from ..contract import BACKEND_PARENT, ENV_MODELS_DIR, WORKER_MODULE
    from ..settings import Settings

    settings = Settings.load()
    python = settings.find_worker_python()
    env = {**settings.worker_env(), ENV_MODELS_DIR: str(scratch)}
    feedback.setProgressText(f"reading the model {Path(path).name}")
    result = runner.run_worker([python, "-m", WORKER_MODULE, "models", "add", path, "--progress", "json"], env,
                               cwd=str(BACKEND_PARENT), is_canceled=feedback.isCanceled)
    if result.done is None:
        raise InternalError(f"the worker did not import {path}", "\n".join(result.log))
    return result.done.output


class SegmentBatchAlgorithm(_ModelAlgorithm):
    """Segment many rasters (or a large mosaic, in chunks) in one run of the worker's ``batch`` command (Dask)."""

    INPUT, FOLDER, OUTPUT_FOLDER = "INPUT", "FOLDER", "OUTPUT_FOLDER"
    WORKERS, THREADS, SCHEDULER, CHUNK, RESUME = "WORKERS", "THREADS", "SCHEDULER", "CHUNK", "RESUME"
    PRECISION, TTA = "PRECISION", "TTA"
    MOSAIC, AREAS = "MOSAIC", "AREAS"

    def name(self) -> str:
        return "segment_batch"

    def displayName(self) -> str:  # noqa: N802
        return "Segment land cover (batch)"

    def shortHelpString(self) -> str:  # noqa: N802
        from .. import job
        from ..contract import BATCH_DEFAULT_CHUNK as DEFAULT_CHUNK

        return (
            "Segments many orthophotos in one run, on Dask: a local cluster of worker processes by default, or an "
            "existing Dask cluster (SCHEDULER). INPUT: raster layers backed by files (save others as GeoTIFF "
            "first); FOLDER: a folder whose rasters are added; at least one is needed. MODEL as in Segment land "
            "cover. OUTPUT_FOLDER receives one class GeoTIFF per raster (rasters larger than CHUNK pixels on a "
            "side, e.g. a VRT mosaic, are split into chunks on one shared tile grid, so the result is identical "
            "to a single run over the whole raster), mosaic.vrt over them with its style mosaic.qml, areas.csv "
            "(per raster and total, m² and ha), areas.json (the totals) and manifest.jsonl (one line per "
            "finished item). A raster that fails (e.g. a corrupt file) does not stop the others: the algorithm "
            "then fails naming it, and the finished outputs stay in the folder; fix the input and run again "
            "into the same folder with RESUME, which skips the items already done (checked by checksum) and "
            "also continues a cancelled run. "
            "Advanced: WORKERS (local worker processes) and THREADS (inference threads per worker); by default "
            "one single-threaded worker per core; SCHEDULER is the address of a running Dask scheduler "
            "(tcp://host:8786), whose workers need the Landcover runtime and the same paths (leave WORKERS "
            "empty with SCHEDULER); CHUNK is a "
            f"multiple of 256 (default {DEFAULT_CHUNK}); PRECISION: {job.PRECISION_HELP} TTA: {job.TTA_HELP} "
            "Outputs: OUTPUT_FOLDER, MOSAIC (the mosaic.vrt, added to the map styled by class) and AREAS (the "
            "total class areas as JSON, areas.json)."
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        from .. import job
        from ..contract import BATCH_DEFAULT_CHUNK as DEFAULT_CHUNK

        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT, "Orthophotos (raster layers backed by files)", QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.FOLDER, "Folder of orthophotos (every raster in it)", QgsProcessingParameterFile.Folder,
            optional=True))
        self._add_model_parameter()
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, "Output folder"))
        advanced = [
            QgsProcessingParameterNumber(
                self.WORKERS, "Local worker processes (default: cores / threads per worker)",
                QgsProcessingParameterNumber.Integer, optional=True, minValue=1),
            QgsProcessingParameterNumber(
                self.THREADS, "Inference threads per worker (default: 1, all cores for one worker)",
                QgsProcessingParameterNumber.Integer, optional=True, minValue=1),
            QgsProcessingParameterString(
                self.SCHEDULER, "Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster)",
                optional=True),
            QgsProcessingParameterNumber(
                self.CHUNK, "Split rasters larger than this many pixels on a side into chunks (multiple of 256)",
                QgsProcessingParameterNumber.Integer, defaultValue=DEFAULT_CHUNK, minValue=256),
            QgsProcessingParameterBoolean(
                self.RESUME, "Resume: continue the batch in the output folder, skipping items already done",
                defaultValue=False),
        ]
        # The same option lists (and numbers) as landcover:segment's.
        for name, label, choices in ((self.PRECISION, "Precision", job.PRECISION_CHOICES),
                                     (self.TTA, "Test-time augmentation", job.TTA_CHOICES)):
            advanced.append(QgsProcessingParameterEnum(name, label, options=[text for _, text in choices],
                                                       defaultValue=0))
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputRasterLayer(self.MOSAIC, "Land-cover mosaic (mosaic.vrt)"))
        self.addOutput(QgsProcessingOutputFile(self.AREAS, "Class areas, totals (JSON)"))

    def input_paths(self, parameters: dict[str, Any], context: QgsProcessingContext) -> list[str]:
        """The files of the INPUT layers, then the FOLDER.

        Raises:
            InputError: neither is given, or a layer is not a raster file the worker can read.
        """
        paths = [str(_raster_file(layer)) for layer in self.parameterAsLayerList(parameters, self.INPUT, context)]
        folder = self.parameterAsFile(parameters, self.FOLDER, context) if parameters.get(self.FOLDER) else ""
        if folder:
            if not Path(folder).is_dir():
                raise InputError(f"FOLDER {folder} is not a folder; choose the folder that holds the orthophotos")
            paths.append(folder)
        if not paths:
            raise InputError("nothing to segment: choose raster layers (INPUT) and/or a folder of rasters (FOLDER)")
        return paths

    def checkParameterValues(self, parameters: dict[str, Any], context: QgsProcessingContext):  # noqa: N802
        """Refuse a run without inputs, with a layer the worker cannot read, or with settings that contradict each
        other (the contract's checks of the batch arguments), before it starts."""
        try:
            self.batch_request(parameters, context, self.input_paths(parameters, context), None, Path("."))
        except InputError as exc:
            return False, str(exc)
        return super().checkParameterValues(parameters, context)

    def batch_request(self, parameters: dict[str, Any], context: QgsProcessingContext, inputs: list[str],
                      model: ModelInfo | None, outdir: Path) -> BatchArgs:
        """The worker's ``batch`` arguments the parameters ask for, with the inputs and ``model`` resolved.

        Raises:
            InputError: the settings contradict each other (:class:`~landcover_plugin.contract.BatchArgs`).
        """
        from ..contract import BATCH_DEFAULT_CHUNK as DEFAULT_CHUNK
        from ..contract import PRECISIONS, TTA_MODES, BatchArgs

        def optional_int(name: str) -> int | None:
            return None if parameters.get(name) in (None, "") else self.parameterAsInt(parameters, name, context)

        return BatchArgs(
            inputs=tuple(inputs), outdir=outdir, model=model.spec if model else None,
            workers=optional_int(self.WORKERS), threads_per_worker=optional_int(self.THREADS),
            scheduler=self.parameterAsString(parameters, self.SCHEDULER, context).strip() or None,
            resume=self.parameterAsBool(parameters, self.RESUME, context),
            chunk=optional_int(self.CHUNK) or DEFAULT_CHUNK,
            precision=PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
            tta=TTA_MODES[self.parameterAsEnum(parameters, self.TTA, context)],
        )

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from .. import batch
        from ..contract import BATCH_MANIFEST, resolve_model
        from ..settings import Settings

        # Asked once: each call for a temporary output folder names a new one.
        outdir = Path(self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)).expanduser()
        try:
            inputs = self.input_paths(parameters, context)
            _check_output_folder(inputs, outdir)
            settings = Settings.load()
            model = resolve_model(self.model_spec(parameters, context), settings.model_dirs())
            request = self.batch_request(parameters, context, inputs, model, outdir)
            python = settings.find_worker_python()

            def progress(percent: float, message: str) -> None:
                if percent >= 0:
                    feedback.setProgress(percent)
                if message:
                    feedback.setProgressText(message)

            outcome = batch.run(request, python, settings.worker_env(), progress,
                                warn=lambda message: feedback.reportError(message, False),
                                info=feedback.pushInfo, is_canceled=feedback.isCanceled)
        except CancelledError:
            raise QgsProcessingException(
                f"cancelled; the items finished so far are kept in {outdir}: run again into that folder with "
                "RESUME to continue") from None
        except LandcoverError as exc:
            if exc.details:
                feedback.pushDebugInfo(exc.details)
            if (outdir / BATCH_MANIFEST).is_file():
                feedback.pushInfo(f"the items that succeeded are in {outdir}; after fixing the inputs, run again "
                                  "into that folder with RESUME to redo only the rest")
            raise QgsProcessingException(str(exc)) from exc
        for warning in outcome.warnings:
            feedback.pushWarning(warning)
        from ..styling import areas_summary

        feedback.pushInfo(areas_summary(outcome.areas))
        feedback.setProgress(100)
        results: dict[str, Any] = {self.OUTPUT_FOLDER: str(outdir), self.MOSAIC: None,
                                   self.AREAS: str(outcome.areas_json)}
        if outcome.mosaic is not None:
            results[self.MOSAIC] = str(outcome.mosaic)
            self._load_mosaic(context, str(outcome.mosaic), model)
        return results

    @staticmethod
    def _load_mosaic(context: QgsProcessingContext, path: str, model: ModelInfo) -> None:
        """Add the mosaic to the map when the run ends (toolbox, modeler), styled by class at the top of the
        Landcover group like the dialog's results."""
        from ..results import RANK_CLASSES, new_run_id
        from ..styling import result_layer_name

        name = result_layer_name("", model.name, "land cover mosaic")
        project = context.project() or QgsProject.instance()  # Processing adds the layer to the details' project
        details = QgsProcessingContext.LayerDetails(name, project, SegmentBatchAlgorithm.MOSAIC)
        details.forceName = True
        details.layerTypeHint = QgsProcessingUtils.LayerHint.Raster
        details.setPostProcessor(_StyleOnLoad.create(model.classes, name, _Placement(new_run_id(), RANK_CLASSES)))
        context.addLayerToLoadOnCompletion(path, details)


def _check_output_folder(inputs: list[str], outdir: Path) -> None:
    """Refuse an output folder that holds inputs: each sheet's class raster is named after it (the worker would
    fail those items) and a later run would take the outputs for inputs.

    Raises:
        OutputError: naming the folder.
    """
    from ..errors import OutputError

    out = outdir.expanduser().resolve()
    for text in inputs:
        path = Path(text).resolve()
        if path == out or (not path.is_dir() and path.parent == out):
            raise OutputError(f"OUTPUT_FOLDER {outdir} holds the inputs, and each class raster is named after its "
                              "input: choose another (e.g. empty) folder")


def _raster_file(layer: QgsMapLayer) -> Path:
    """The local raster file behind ``layer``, which the worker reads itself (VRT mosaics included).

    Raises:
        InputError: the layer is not a plain file (a web service, an in-memory or /vsi raster, a GeoPackage
            table): the message names it and says to save it as a GeoTIFF.
    """
    from qgis.core import QgsProviderRegistry

    if isinstance(layer, QgsRasterLayer) and layer.providerType() == "gdal":
        parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
        path = str(parts.get("path") or "")
        if path and not parts.get("layerName") and not path.startswith("/vsi") and Path(path).is_file():
            return Path(path).resolve()
    raise InputError(
        f"layer {layer.name()!r} is not a raster file the batch can read ({layer.providerType()} source); save "
        "it as a GeoTIFF first (right-click > Export > Save As…) and choose that file")


class SetupRuntimeAlgorithm(_LandcoverAlgorithm):
    """Create (or repair) the plugin's managed worker runtime: what a fresh install needs before segmenting."""

    TENSORFLOW, REINSTALL = "TENSORFLOW", "REINSTALL"
    PYTHON, RUNTIME_DIR = "PYTHON", "RUNTIME_DIR"

    def name(self) -> str:
        return "setup_runtime"

    def displayName(self) -> str:  # noqa: N802
        return "Set up the Landcover runtime"

    def shortHelpString(self) -> str:  # noqa: N802
        from ..contract import RUNTIME_DISK_MB, RUNTIME_DOWNLOAD_MB

        return (
            "Creates the Python environment the Landcover worker runs in, inside the QGIS profile folder "
            "(<profile>/landcover/runtime, or the runtime folder set in the Landcover settings), and installs the "
            f"pinned packages there with pip from the package index (about {RUNTIME_DOWNLOAD_MB['onnx']} MB to "
            f"download, {RUNTIME_DISK_MB['onnx']} MB on disk). Nothing is installed into QGIS's own Python or the "
            "system. pip's proxy and index settings (pip.conf, HTTPS_PROXY) are honoured. TENSORFLOW adds the "
            f"TensorFlow runtime (about {RUNTIME_DOWNLOAD_MB['tensorflow']} MB more), needed only for models without "
            "an ONNX export. An existing, complete runtime is kept unless REINSTALL is set; a cancelled or failed "
            "setup leaves the previous runtime as it was. Segmenting uses it automatically unless a Worker Python "
            "is set in the Landcover dialog or LANDCOVER_PYTHON."
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterBoolean(
            self.TENSORFLOW, "Also install the TensorFlow runtime (models without an ONNX export)", defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            self.REINSTALL, "Rebuild even if the runtime is already set up (repair)", defaultValue=False))
        self.addOutput(QgsProcessingOutputString(self.PYTHON, "Worker Python"))
        self.addOutput(QgsProcessingOutputFolder(self.RUNTIME_DIR, "Runtime folder"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from .. import runner
        from ..runtime_setup import RuntimeRequest, runtime_status, satisfies, setup_runtime
        from ..settings import Settings

        root = Settings.load().runtime_root()
        try:
            request = RuntimeRequest(root, tensorflow=self.parameterAsBool(parameters, self.TENSORFLOW, context))
            status = runtime_status(root)
            if satisfies(status, request) and not self.parameterAsBool(parameters, self.REINSTALL, context):
                feedback.pushInfo(f"{status.message}; nothing to do (set REINSTALL to rebuild it)")
            else:
                feedback.pushInfo(f"setting up the Landcover runtime in {root} (about {request.download_mb} MB to "
                                  "download)")

                def progress(percent: float, message: str) -> None:
                    feedback.setProgress(percent)
                    feedback.setProgressText(message)

                status = setup_runtime(request, progress, feedback.pushConsoleInfo, feedback.isCanceled)
                runner.forget_checks()
                feedback.pushInfo(f"{status.message}: {status.record.size_mb:.0f} MB")
        except CancelledError:
            raise QgsProcessingException("runtime setup cancelled; nothing was changed") from None
        except LandcoverError as exc:
            if exc.details:
                feedback.pushDebugInfo(exc.details)
            raise QgsProcessingException(str(exc)) from exc
        return {self.PYTHON: status.python, self.RUNTIME_DIR: str(root)}


class VectorizeAlgorithm(_LandcoverAlgorithm):
    """Class raster → polygons with class id, class name and area in m²."""

    INPUT, BAND, OUTPUT = "INPUT", "BAND", "OUTPUT"

    def name(self) -> str:
        return "vectorize"

    def displayName(self) -> str:  # noqa: N802
        return "Vectorize land cover"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Turns a Landcover class raster into polygons (one per connected region, 8-connected) with the class "
                "id, class name and area in m². Nodata pixels are skipped. Class names come from the raster's "
                "Landcover metadata or the .areas.json beside it.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Land-cover class raster"))
        self.addParameter(QgsProcessingParameterBand(self.BAND, "Band", 1, self.INPUT, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, "Land-cover polygons", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from ..export import layer_file_path
        from ..vectorize import classes_for_raster, polygon_features, polygon_fields

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("INPUT is not a raster layer; pass the class raster written by Landcover")
        path = layer_file_path(layer) or (layer.source() if layer.providerType() == "gdal" else None)
        if not path:
            raise QgsProcessingException(f"{layer.name()!r} is not a GDAL raster; save it as a GeoTIFF first")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        classes = classes_for_raster(path)
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, polygon_fields(),
                                             QgsWkbTypes.Polygon, layer.crs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        feedback.setProgressText("polygonizing")
        names = {c.id: c.name for c in classes}
        count = 0
        try:
            for feature in polygon_features(path, names, layer.crs(), context.transformContext(), band,
                                            feedback.isCanceled):
                sink.addFeature(feature, QgsFeatureSink.FastInsert)
                count += 1
        except LandcoverError as exc:
            raise QgsProcessingException(str(exc)) from exc
        if feedback.isCanceled():
            return {}
        feedback.pushInfo(f"{count} polygons")
        feedback.setProgress(100)
        _style_output(context, dest_id, classes)
        return {self.OUTPUT: dest_id}

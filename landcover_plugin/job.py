"""One segmentation job, shared by the dialog's task and the Processing algorithm.

``validate`` and ``prepare`` run on the main thread (they touch layers); ``execute`` is blocking and
thread-safe (export through a cloned provider, then the worker process, then optional masking and
vectorising) so it can run inside a QgsTask or a Processing algorithm.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransformContext, QgsGeometry, QgsRasterLayer

from . import export, runner
from .contract import (
    BACKEND_PARENT,
    PRECISIONS,
    TTA_MODES,
    TTA_PASSES,
    ModelInfo,
    OutputFiles,
    ProgressEvent,
    SegmentArgs,
    gsd_is_far,
    output_files,
)
from .contract import parse_bands as parse_bands
from .errors import CancelledError, InputError, LandcoverError, ModelError, OutputError
from .settings import Settings

ProgressFn = Callable[[float, str], None]

#: The worker's ``--precision`` and ``--tta`` choices as the dialog and Processing offer them: ``(value, label)``
#: in the contract's order (Processing's enums are option numbers into these lists).
_PRECISION_LABELS = {"auto": "Auto (INT8 where the CPU supports it)", "fp32": "Float (fp32)", "int8": "INT8"}
PRECISION_CHOICES: tuple[tuple[str, str], ...] = tuple((p, _PRECISION_LABELS.get(p, p)) for p in PRECISIONS)
_TTA_LABELS = {"none": "None", "flip": "Flip", "d4": "D4: 8 rotations and mirrors"}
TTA_CHOICES: tuple[tuple[str, str], ...] = tuple(
    (m, _TTA_LABELS.get(m, m) + (f" ({TTA_PASSES[m]}x time)" if TTA_PASSES.get(m, 1) > 1 else ""))
    for m in TTA_MODES)
PRECISION_HELP = ("Which ONNX export of the model runs. INT8 is about 1.8x faster per tile on CPUs with VNNI, AMX or "
                  "dot-product instructions, with at least 99.5 % of pixels the same class as float; Auto picks it "
                  "only where it is fast (and the model has an INT8 export), else float.")
TTA_HELP = ("Test-time augmentation: averages the predictions over transformed copies of each tile (Flip: the "
            "tile and its mirror; D4: 4 rotations x mirror). Smoother and usually slightly more accurate, at "
            f"N times the cost ({', '.join(f'{TTA_PASSES[m]}x' for m in TTA_MODES if TTA_PASSES.get(m, 1) > 1)}).")


@dataclass
class SegmentRequest:
    """Everything the user chose."""

    layer: QgsRasterLayer | None
    model: ModelInfo
    area: export.Area = field(default_factory=export.Area)
    overlap: int | None = None
    batch_size: int | None = None
    bands: tuple[int, ...] | None = None
    resample: bool = False
    output: str | None = None  # None: a temporary file
    confidence: str | None = None  # "" or None: no confidence raster; "TEMP": temporary
    polygons: str | None = None
    python: str | None = None  # None: the saved Worker Python setting (then $LANDCOVER_PYTHON, the .venv)
    precision: str = "auto"  # contract PRECISIONS
    tta: str = "none"  # contract TTA_MODES


def validate(request: SegmentRequest) -> list[str]:
    """Check a request before running; returns warnings the user should confirm.

    Raises:
        LandcoverError: the request cannot run (an input, model or output error); the message says how to fix it.
    """
    layer = request.layer
    if layer is None:
        raise InputError("no raster layer chosen; add an orthophoto to the map and select it as input")
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        raise InputError(f"layer {layer.name()!r} is not a valid raster layer; choose an orthophoto")
    if not layer.crs().isValid():
        raise InputError(
            f"layer {layer.name()!r} has no coordinate reference system; set it in Layer Properties > Source "
            "(or georeference the image) so results land in the right place"
        )
    model = request.model
    if model.source is not None and not model.source.is_file():
        raise ModelError(f"model bundle {model.source} no longer exists; choose another model")
    count = layer.bandCount()
    if request.bands:
        bad = [b for b in request.bands if b > count]
        if bad:
            raise InputError(f"layer {layer.name()!r} has {count} band(s); band(s) {bad} do not exist")
        if len(request.bands) != model.input_bands:
            raise InputError(
                f"model {model.name!r} takes {model.input_bands} bands but {len(request.bands)} were chosen; "
                f"list {model.input_bands} band numbers, e.g. 1,2,3"
            )
    elif export.has_native_pixels(layer) and count < model.input_bands:
        raise InputError(
            f"layer {layer.name()!r} has {count} band(s) but model {model.name!r} needs {model.input_bands} "
            "(red, green, blue); choose an RGB orthophoto"
        )
    if request.area.kind == export.AREA_LAYER and not export.has_native_pixels(layer):
        raise InputError(
            f"{layer.name()!r} is a web service without a fixed extent; choose 'current map extent' or polygons as area"
        )
    export.clip_to_layer(layer, request.area)
    for label, path in (("class raster", request.output), ("confidence raster", request.confidence),
                        ("polygons", request.polygons)):
        if path and path != "TEMP" and not Path(path).expanduser().parent.is_dir():
            raise OutputError(f"the folder for the {label} output {path} does not exist; choose another")
    warnings = []
    size = export.layer_pixel_size_m(layer)
    if gsd_is_far(size, model.gsd_m) and not request.resample:
        warnings.append(
            f"layer {layer.name()!r} has {export.describe_pixel_size(size)} pixels but model {model.name!r} "
            f"expects {model.gsd_m:g} m; results will likely be poor"
        )
    return warnings


@dataclass
class Plan:
    """A validated request turned into files, windows and a command line (no QGIS layer references)."""

    model: ModelInfo
    python: str
    env: dict[str, str]
    workdir: Path  # temporary folder for exports and temporary outputs; removed unless it holds outputs
    output: Path
    confidence: Path | None
    polygons: Path | None
    input_path: Path | None
    window: tuple[int, int, int, int] | None
    export_spec: export.ExportSpec | None
    mask: list[QgsGeometry]
    crs: QgsCoordinateReferenceSystem
    transform_context: QgsCoordinateTransformContext
    overlap: int | None
    batch_size: int | None
    bands: tuple[int, ...] | None
    layer_name: str
    precision: str = "auto"
    tta: str = "none"

    def segment_args(self, input_path: Path) -> SegmentArgs:
        """Arguments for the worker once the input file exists."""
        return SegmentArgs(
            input=str(input_path), output=str(self.output), model=self.model.spec, overlap=self.overlap,
            batch_size=self.batch_size, bands=self.bands, confidence=str(self.confidence) if self.confidence else None,
            window=self.window if self.export_spec is None else None, precision=self.precision, tta=self.tta,
        )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "landcover"


def prepare(request: SegmentRequest) -> Plan:
    """Decide file-plus-window or export, and where outputs go (main thread).

    Raises:
        LandcoverError: no worker Python (dependency), or the area/export cannot work (input).
    """
    layer = request.layer
    assert layer is not None
    settings = Settings.load()
    python = settings.find_worker_python(request.python)
    env = settings.worker_env()
    rect = export.clip_to_layer(layer, request.area)
    file_path = export.layer_file_path(layer)
    resample = request.resample and gsd_is_far(export.layer_pixel_size_m(layer), request.model.gsd_m)
    spec = None
    window = None
    if file_path is not None and not resample:
        if request.area.kind != export.AREA_LAYER:
            window = export.window_for_extent(layer, rect)
    else:
        pixel_size = None
        if request.model.gsd_m and (resample or not export.has_native_pixels(layer)):
            pixel_size = request.model.gsd_m / export.metres_per_unit(layer.crs(), rect)
        spec = export.export_spec(layer, rect, pixel_size)

    # Created last so a refused request leaves nothing behind; removed after the run unless it holds outputs.
    workdir = Path(tempfile.mkdtemp(prefix="landcover_"))
    stem = _safe_name(request.model.name)
    output = Path(request.output).expanduser() if request.output else workdir / f"{stem}.tif"
    confidence = None
    if request.confidence:
        confidence = (workdir / f"{stem}_confidence.tif" if request.confidence == "TEMP"
                      else Path(request.confidence).expanduser())
    polygons = None
    if request.polygons:
        polygons = (workdir / f"{stem}_polygons.gpkg" if request.polygons == "TEMP"
                    else Path(request.polygons).expanduser())
    bands = request.bands
    if bands is None and spec is not None and spec.renderer is not None:
        bands = (1, 2, 3)  # rendered services export as RGBA
    return Plan(
        model=request.model, python=python, env=env, workdir=workdir, output=output, confidence=confidence,
        polygons=polygons, input_path=file_path if spec is None else None, window=window, export_spec=spec,
        mask=[QgsGeometry(g) for g in request.area.geometries] if request.area.kind == export.AREA_POLYGONS else [],
        crs=layer.crs(), transform_context=layer.transformContext(), overlap=request.overlap,
        batch_size=request.batch_size, bands=bands, layer_name=layer.name(), precision=request.precision,
        tta=request.tta,
    )


@dataclass
class Outcome:
    """Files a finished job produced."""

    model: ModelInfo
    output: Path
    confidence: Path | None
    polygons: Path | None
    areas: dict[str, Any]
    warnings: list[str]
    log: list[str]
    layer_name: str
    precision: str = ""  # what ran, from the worker's done line: fp32 | int8 (ONNX Runtime), "" (TensorFlow)
    tta: str = "none"

    def how_run(self) -> str:
        """``INT8, TTA d4``: the precision and test-time augmentation the worker reported (empty when it reported
        neither, e.g. a TensorFlow run without TTA)."""
        parts = [{"int8": "INT8", "fp32": "float"}[self.precision]] if self.precision in ("int8", "fp32") else []
        if self.tta and self.tta != "none":
            parts.append(f"TTA {self.tta}")
        return ", ".join(parts)

    @property
    def files(self) -> OutputFiles:
        """The class raster and the sidecars the worker wrote beside it."""
        return output_files(self.output)


def execute(plan: Plan, progress: ProgressFn = lambda p, m: None, is_canceled: Callable[[], bool] = lambda: False,
            feedback=None) -> Outcome:
    """Run the job (blocking; safe off the main thread).

    Raises:
        CancelledError: cancelled; partial outputs were removed.
        LandcoverError: any failure, of a kind the caller can act on, with an actionable message.
    """
    # The class raster with every sidecar the worker writes beside it (its .qml and areas files do not share
    # the raster's file name), so a failure after the worker finished leaves none of them behind.
    outputs = output_files(plan.output).all() + [p for p in (plan.confidence, plan.polygons) if p]
    guard = runner.OutputGuard(outputs)
    try:
        progress(0, "checking the worker Python")
        runner.check_runtime(plan.python, plan.env)
        if is_canceled():
            raise CancelledError("cancelled; no output was kept")
        input_path = plan.input_path
        if plan.export_spec is not None:
            progress(1, f"exporting {plan.layer_name} ({plan.export_spec.width} x {plan.export_spec.height} px)")
            input_path = export.run_export(plan.export_spec, plan.workdir / "input.tif", feedback)
            if is_canceled():
                raise CancelledError("cancelled; no output was kept")
        assert input_path is not None
        base = 10.0 if plan.export_spec is not None else 2.0
        top = 90.0 if plan.polygons else 98.0

        def on_event(event) -> None:
            if isinstance(event, ProgressEvent) and event.percent is not None:
                progress(base + (top - base) * event.percent / 100.0, event.message or event.stage)
            elif getattr(event, "message", ""):
                progress(-1, f"{event.stage}: {event.message}")

        argv = plan.segment_args(input_path).command(plan.python)
        result = runner.run_worker(argv, plan.env, cwd=str(BACKEND_PARENT), on_event=on_event,
                                   is_canceled=is_canceled, cleanup=guard)
        assert result.done is not None  # a run without error ends with the done event
        areas = result.done.areas
        if plan.mask:
            progress(top, "masking to the polygons")
            from .vectorize import mask_outside, recount_areas

            mask_outside(plan.output, plan.mask)
            if plan.confidence and plan.confidence.is_file():
                mask_outside(plan.confidence, plan.mask, nodata=_nodata_of(plan.confidence))
            areas = recount_areas(plan.output, plan.model.classes, areas)
        if plan.polygons:
            progress(top, "vectorising classes")
            from .vectorize import write_polygons

            names = {c.id: c.name for c in plan.model.classes}
            write_polygons(plan.output, plan.polygons, names, plan.crs, plan.transform_context, is_canceled)
            if is_canceled():
                raise CancelledError("cancelled; no output was kept")
        progress(100, "done")
        return Outcome(plan.model, plan.output, plan.confidence, plan.polygons, areas, result.warnings, result.log,
                       plan.layer_name, result.done.precision, result.done.tta)
    except CancelledError:
        guard.cleanup()
        shutil.rmtree(plan.workdir, ignore_errors=True)
        raise
    except LandcoverError:
        guard.cleanup()
        raise
    finally:
        # The exported input is never needed afterwards; temporary outputs live in workdir too, so keep those.
        (plan.workdir / "input.tif").unlink(missing_ok=True)
        (plan.workdir / "input.tif.aux.xml").unlink(missing_ok=True)
        try:
            plan.workdir.rmdir()  # only succeeds when no temporary output lives there
        except OSError:
            pass


def _nodata_of(path: Path) -> float:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    value = ds.GetRasterBand(1).GetNoDataValue() if ds is not None else None
    return 255 if value is None else value

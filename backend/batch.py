"""Whole archives on Dask: ``python -m backend batch INPUT... OUTDIR``, resumable, from one machine to many.

Every sheet is a task; a raster larger than ``chunk`` pixels (a mosaic, e.g. a VRT) is split into chunks,
each a task classified by :func:`backend.inference.segment` with ``chunk=`` on the *whole* raster's tile
grid, so the chunks together equal one run over the mosaic pixel for pixel. Tasks run on a Dask
``LocalCluster`` sized to the machine or on an existing cluster (``--scheduler tcp://host:8786``): Dask
re-runs the tasks of a worker that dies, and each worker process loads the model once.

The driver appends one JSON line per finished item to ``OUTDIR/manifest.jsonl`` (input, output, SHA-256,
seconds, status, error) as items finish; ``resume`` skips items whose output is on disk with the recorded
checksum and redoes the rest. Failures of one item (a corrupt sheet) are recorded with their one-line error
while all other items complete. At the end: ``mosaic.vrt`` over every class raster (with the colour table
and a ``mosaic.qml`` style), ``areas.csv`` per item and in total (ground m² and ha), ``areas.json`` (the
totals, as the worker protocol's ``areas`` object).
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.contract import (
    BATCH_AREAS_CSV,
    BATCH_AREAS_JSON,
    BATCH_CHUNK_STEP,
    BATCH_MANIFEST,
    BATCH_MOSAIC_QML,
    BATCH_MOSAIC_VRT,
    ENV_THREADS,
    STAGE_BATCH,
    BatchArgs,
    ClassInfo,
    areas_table,
    write_text_atomic,
)
from backend.errors import DependencyError, InputError, LandcoverError, OutputError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg")
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Item:
    """One task: a sheet, or one chunk (``col_off, row_off, width, height``) of a mosaic."""

    key: str
    input: str
    output: str
    chunk: tuple[int, int, int, int] | None = None


@dataclass
class BatchResult:
    """What a batch did (also written as ``areas.*`` and ``mosaic.vrt``)."""

    outdir: Path
    items: int
    succeeded: int
    failed: list[dict[str, Any]]
    skipped: int
    seconds: float
    mosaic: Path | None
    areas: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = (f"{self.items} items: {self.succeeded} done, {len(self.failed)} failed, {self.skipped} skipped "
                f"(already done) in {self.seconds:.1f} s; outputs in {self.outdir}")
        for record in self.failed[:10]:
            line += f"\n  failed: {record['input']}: {record['error']}"
        if len(self.failed) > 10:
            line += f"\n  … and {len(self.failed) - 10} more (see {self.outdir / BATCH_MANIFEST})"
        return line


# ------------------------------------------------------------------------------------------- planning


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Rasters named by ``inputs``: files as they are, folders' rasters (sorted), glob patterns' matches."""
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            rasters = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
                             and not p.name.startswith("."))
            if not rasters:
                raise InputError(f"folder {path} holds no rasters ({', '.join(RASTER_SUFFIXES)})")
            found += rasters
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"no file matches {text!r}")
            found += matches
        elif path.is_file() or text.startswith("/vsi"):
            found.append(path)
        else:
            raise InputError(f"input {text} does not exist; give rasters, folders or glob patterns")
    unique = list(dict.fromkeys(p.resolve() if not str(p).startswith("/vsi") else p for p in found))
    return unique


def chunk_windows(height: int, width: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """``(col_off, row_off, width, height)`` windows of about ``chunk`` px covering the raster, on 256 px borders."""
    rows, cols = math.ceil(height / chunk), math.ceil(width / chunk)
    step_y = math.ceil(math.ceil(height / rows) / BATCH_CHUNK_STEP) * BATCH_CHUNK_STEP
    step_x = math.ceil(math.ceil(width / cols) / BATCH_CHUNK_STEP) * BATCH_CHUNK_STEP
    return [(x, y, min(step_x, width - x), min(step_y, height - y))
            for y in range(0, height, step_y) for x in range(0, width, step_x)]


def plan(rasters: Sequence[Path], outdir: Path, chunk: int,
         size_of: Callable[[Path], tuple[int, int]] | None = None) -> list[Item]:
    """One item per sheet and per chunk of every raster larger than ``chunk``; output names are unique."""
    size_of = size_of or raster_size
    items: list[Item] = []
    stems: dict[str, int] = {}
    for path in rasters:
        stem = path.stem
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:
            stem = f"{stem}_{stems[stem]}"  # two sheets named alike in different folders
        try:
            height, width = size_of(path)
        except LandcoverError:
            items.append(Item(stem, str(path), str(outdir / f"{stem}.tif")))  # fails, recorded, when run
            continue
        if height <= chunk and width <= chunk:
            items.append(Item(stem, str(path), str(outdir / f"{stem}.tif")))
            continue
        for col, row, w, h in chunk_windows(height, width, chunk):
            key = f"{stem}_r{row:06d}_c{col:06d}"
            items.append(Item(key, str(path), str(outdir / f"{key}.tif"), (col, row, w, h)))
    return items


def raster_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of a raster, or an InputError naming it."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(str(path)) as src:
            return src.height, src.width
    except RasterioIOError as exc:
        raise InputError(f"{path.name} cannot be read as a raster ({str(exc)[:160]})") from exc


# ------------------------------------------------------------------------------------------- manifest


class Manifest:
    """``manifest.jsonl``: one JSON object per finished item, appended and synced as items finish."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> dict[str, dict[str, Any]]:
        """The newest record of every key (a torn last line from a killed run is ignored)."""
        latest: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return latest
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "key" in record:
                latest[record["key"]] = record
        return latest

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def is_done(item: Item, record: dict[str, Any] | None) -> bool:
    """The item's output exists with the checksum its manifest record gives."""
    from backend.onnx_runtime import file_sha256

    if not record or record.get("status") != "ok" or record.get("output") != item.output:
        return False
    out = Path(item.output)
    return out.is_file() and file_sha256(out) == record.get("sha256")


# ------------------------------------------------------------------------------------------- the task

_RUNTIMES: dict[tuple, Any] = {}  # per worker process: the model is loaded once, by its first task


@dataclass(frozen=True)
class TaskSpec:
    """What every task needs besides its item (pickled to the workers)."""

    model: str | None
    precision: str
    tta: str
    threads: int


def run_item(item: Item, spec: TaskSpec) -> dict[str, Any]:
    """Segment one item in this (worker) process; returns its manifest record (never raises for bad input)."""
    from backend.bundle import resolve_model
    from backend.inference import segment
    from backend.onnx_runtime import file_sha256
    from backend.raster_io import Window

    started = time.perf_counter()
    record: dict[str, Any] = {"key": item.key, "input": item.input, "output": item.output,
                              "chunk": list(item.chunk) if item.chunk else None, "worker_pid": os.getpid()}
    try:
        bundle, runtime, precision = _cached_runtime(spec, resolve_model)
        result = segment(item.input, item.output, bundle, runtime=runtime, tta=spec.tta,
                         chunk=Window(*item.chunk) if item.chunk else None)
        record.update(status="ok", sha256=file_sha256(Path(item.output)), areas=result.areas.to_dict(),
                      tiles=result.tiles_predicted, width=result.width, height=result.height,
                      precision=precision)
    except LandcoverError as exc:
        record.update(status="failed", error=str(exc), kind=exc.kind)
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _cached_runtime(spec: TaskSpec, resolve_model) -> tuple[Any, Any, str]:
    """``(bundle, runtime, precision)`` of this worker process for ``spec``: built by the first task."""
    from backend.precision import choose_precision
    from backend.runtime import make_runtime

    key = (spec.model, spec.precision, spec.threads)
    if key not in _RUNTIMES:
        os.environ[ENV_THREADS] = str(spec.threads)  # read by both runtimes when they start their thread pools
        bundle = resolve_model(spec.model)
        choice = choose_precision(bundle, spec.precision, "auto")
        kind = "onnx" if spec.precision == "int8" else "auto"
        runtime = make_runtime(bundle.with_precision(choice.precision), kind)
        _RUNTIMES[key] = (bundle, runtime, choice.precision if runtime.name == "onnx" else "fp32")
    return _RUNTIMES[key]


# ------------------------------------------------------------------------------------------- the cluster


def local_layout(workers: int | None, threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)`` for a LocalCluster on ``cores`` cores (default: this machine's)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
    if workers is None and threads is None:
        threads = 1
    if workers is None:
        workers = max(1, cores // threads)
    if threads is None:
        threads = max(1, cores // workers)
    return workers, threads


@contextmanager
def dask_client(params: BatchArgs) -> Iterator[tuple[Any, int]]:
    """A connected ``distributed.Client`` and the inference threads per task."""
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise DependencyError(f"batch runs on Dask, which this Python lacks ({exc}); install it with 'make setup' "
                              "(or pip install dask distributed into the worker runtime)") from exc
    if params.scheduler:
        try:
            client = Client(params.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(
                f"no Dask scheduler answers at {params.scheduler} ({type(exc).__name__}: {str(exc)[:120]}); start "
                "one with 'dask scheduler' and workers with 'dask worker ADDRESS', or leave out --scheduler to run "
                "on this machine"
            ) from exc
        try:
            yield client, params.threads_per_worker or 1
        finally:
            client.close()
        return
    workers, threads = local_layout(params.workers, params.threads_per_worker)
    # One task at a time per worker process (nthreads=1): the model's own thread pool uses the cores. The
    # dashboard (if bokeh is installed) takes a free port, so two batches on one machine do not collide.
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR, memory_limit=None)
    client = Client(cluster)
    try:
        yield client, threads
    finally:
        client.close()
        cluster.close()


# ------------------------------------------------------------------------------------------- the driver


def run_batch(params: BatchArgs, progress=None, client_factory=dask_client) -> BatchResult:
    """Plan, skip what is done (``resume``), run the rest on Dask, then write the mosaic and the area tables.

    ``params`` are checked when they are made (:class:`~backend.contract.BatchArgs`); ``params.progress`` is the
    command line's business, not this function's: it reports to ``progress``.
    """
    from backend.progress import Progress

    progress = progress or Progress()
    started = time.perf_counter()
    outdir = Path(params.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output folder {outdir} is a file; give a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(outdir / BATCH_MANIFEST)
    if manifest.path.exists() and not params.resume:
        raise OutputError(f"{outdir} already holds a batch ({BATCH_MANIFEST}); add --resume to continue it, or choose "
                          "another folder")
    rasters = expand_inputs(params.inputs)
    inside = [r for r in rasters if not str(r).startswith("/vsi") and outdir.resolve() in Path(r).resolve().parents]
    if inside:
        raise InputError(f"{inside[0]} is inside the output folder {outdir}; choose an output folder apart from "
                         "the inputs")
    items = plan(rasters, outdir, params.chunk)
    records = manifest.records()
    done = [i for i in items if params.resume and is_done(i, records.get(i.key))]
    todo = [i for i in items if i not in done]
    progress.start(STAGE_BATCH, len(items), f"{len(items)} items ({len(done)} already done)")
    progress.advance(len(done))
    finished: dict[str, dict[str, Any]] = {i.key: records[i.key] for i in done}
    if todo:
        with client_factory(params) as (client, threads):
            spec = TaskSpec(params.model, params.precision, params.tta, threads)
            futures = {client.submit(run_item, item, spec, key=f"landcover-{item.key}-{time.time_ns()}",
                                     pure=False): item for item in todo}
            from distributed import as_completed

            for future in as_completed(futures):
                item = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker died on this item too often, or a bug
                    record = {"key": item.key, "input": item.input, "output": item.output,
                              "chunk": list(item.chunk) if item.chunk else None, "status": "failed",
                              "error": f"{type(exc).__name__}: {str(exc)[:300]}", "kind": "internal"}
                manifest.append(record)
                finished[item.key] = record
                if record["status"] != "ok":
                    progress.warn(f"{Path(item.input).name}: {record['error']}")
                progress.advance(len(finished))
    progress.close()
    ok = [finished[i.key] for i in items if finished.get(i.key, {}).get("status") == "ok"]
    failed = [finished[i.key] for i in items if finished.get(i.key, {}).get("status") != "ok"]
    classes = _classes(params.model)
    warnings: list[str] = []
    mosaic = write_mosaic(outdir / BATCH_MOSAIC_VRT, [Path(r["output"]) for r in ok], classes, warnings) if ok else None
    areas = write_areas(outdir, ok, classes)
    return BatchResult(outdir, len(items), len(ok) - len(done), failed, len(done), time.perf_counter() - started,
                       mosaic, areas, warnings)


def _classes(model: str | None) -> tuple[ClassInfo, ...]:
    from backend.bundle import resolve_model

    return resolve_model(model).classes


# ------------------------------------------------------------------------------------------- outputs


def write_areas(outdir: Path, records: Sequence[dict[str, Any]], classes: Sequence[ClassInfo]) -> dict[str, Any]:
    """``areas.csv`` (per item and total, m² and ha) and ``areas.json`` (the total); returns the total."""
    import csv
    import io

    pixels = [0] * len(classes)
    area = [0.0] * len(classes)
    known = True
    nodata = 0
    rows = []
    for record in records:
        a = record.get("areas") or {}
        nodata += int(a.get("nodata_pixels") or 0)
        for i, c in enumerate(a.get("classes") or []):
            pixels[i] += int(c["pixels"])
            if c.get("area_m2") is None:
                known = False
            else:
                area[i] += float(c["area_m2"])
            rows.append({"item": record["key"], "input": record["input"], "class": c["name"], "pixels": c["pixels"],
                         "area_m2": c.get("area_m2"), "area_ha": None if c.get("area_m2") is None
                         else round(c["area_m2"] / 1e4, 4), "percent": c["percent"]})
    total = areas_table(classes, pixels, None, nodata, area if known else None)
    for c in total["classes"]:
        rows.append({"item": "TOTAL", "input": "", "class": c["name"], "pixels": c["pixels"], "area_m2": c["area_m2"],
                     "area_ha": None if c["area_m2"] is None else round(c["area_m2"] / 1e4, 4),
                     "percent": c["percent"]})
    fields = ("item", "input", "class", "pixels", "area_m2", "area_ha", "percent")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in fields})
    write_text_atomic(outdir / BATCH_AREAS_CSV, table.getvalue())
    write_text_atomic(outdir / BATCH_AREAS_JSON, json.dumps(total, indent=2) + "\n")
    return total


def write_mosaic(path: Path, rasters: Sequence[Path], classes: Sequence[ClassInfo],
                 warnings: list[str]) -> Path | None:
    """A VRT over the class rasters (nearest neighbour onto the finest pixel size) plus its QGIS style.

    Rasters in another CRS than the first, or rotated, cannot share one VRT: they are left out, with a warning.
    """
    import rasterio

    from backend.outputs import NODATA, qml_style

    infos = []
    for raster in sorted(rasters):
        with rasterio.open(raster) as src:
            infos.append((raster, src.crs, src.transform, src.width, src.height))
    crs = infos[0][1]
    usable = []
    for raster, r_crs, t, w, h in infos:
        if r_crs != crs or t.b or t.d or t.e >= 0:
            warnings.append(f"{raster.name} is not in {crs} north-up like the others: left out of {path.name}")
            continue
        usable.append((raster, t, w, h))
    res_x = min(t.a for _, t, _, _ in usable)
    res_y = min(-t.e for _, t, _, _ in usable)
    left = min(t.c for _, t, _, _ in usable)
    top = max(t.f for _, t, _, _ in usable)
    right = max(t.c + w * t.a for _, t, w, _ in usable)
    bottom = min(t.f + h * t.e for _, t, _, h in usable)
    width, height = round((right - left) / res_x), round((top - bottom) / res_y)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in (left, res_x, 0.0, top, 0.0, -res_y))
    band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ET.SubElement(band, "NoDataValue").text = str(NODATA)
    ET.SubElement(band, "ColorInterp").text = "Palette"
    names = ET.SubElement(band, "CategoryNames")
    for c in classes:
        ET.SubElement(names, "Category").text = c.name
    table = ET.SubElement(band, "ColorTable")
    colours = {c.id: c.color for c in classes}
    for i in range(256):
        r, g, b = colours.get(i, (0, 0, 0))
        ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4="255" if i in colours else "0")
    for raster, t, w, h in usable:
        source = ET.SubElement(band, "ComplexSource", resampling="nearest")
        name = os.path.relpath(raster, path.parent)
        ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = name
        ET.SubElement(source, "SourceBand").text = "1"
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(source, "DstRect", xOff=_num((t.c - left) / res_x), yOff=_num((top - t.f) / res_y),
                      xSize=_num(w * t.a / res_x), ySize=_num(h * -t.e / res_y))
        ET.SubElement(source, "NODATA").text = str(NODATA)
    ET.indent(root)
    write_text_atomic(path, ET.tostring(root, encoding="unicode") + "\n")
    write_text_atomic(path.with_name(BATCH_MOSAIC_QML), qml_style(classes))
    return path


def _num(value: float) -> str:
    return str(round(value)) if abs(value - round(value)) < 1e-6 else repr(value)


"""Streaming, blended tiled inference: orthophoto in, class GeoTIFF out, in bounded memory.

The raster is processed in column blocks (usually one) and, within a block, one row of tiles at a
time. Tiles are batched for the runtime (batches may span tile rows); each tile's probabilities
are weighted by the grid's blend window and added into an accumulator that holds only the rows
still receiving contributions. As soon as no further tile reaches a row it is argmaxed and written.
Peak memory is therefore set by the tile size, batch size and block width, never by the height,
and the width only up to the block limit.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.bundle import ModelBundle
from backend.contract import TTA_PASSES, DoneEvent, OutputFiles, output_files
from backend.errors import InputError, ModelError, OutputError
from backend.outputs import (
    CONFIDENCE_NODATA,
    NODATA,
    AreaSummary,
    OutputSet,
    check_output_path,
    check_replaceable,
    class_counts,
    disk_errors,
    pam_xml,
    qml_style,
    raster_profile,
    remove_stale_temps,
    write_class_metadata,
)
from backend.pipeline import OrderedWorker, Prefetcher
from backend.precision import choose_precision
from backend.progress import Progress
from backend.raster_io import RasterSource, Window, silence_rasterio_warnings
from backend.runtime import Runtime, make_runtime
from backend.tiling import OUTPUT_BLOCK, ColumnBlock, TileGrid, reflect_indices
from backend.tta import check_tta, with_tta
from backend.write_guard import WriteGuard

DEFAULT_MAX_BLOCK_WIDTH = 16384
GDAL_CACHE_MB = 64
NETWORK_STRIDE = 32  # output stride of the U-Net/FPN/Linknet encoders: tile origins align to it
#: Largest --batch-size accepted. A run never uses more tiles per call than it has tiles, so on small
#: rasters any batch size costs what a normal one does; above this, one call would need gigabytes.
MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class SegmentParams:
    """How to tile: validated once, before any file is opened."""

    tile_size: int
    overlap: int
    batch_size: int
    max_block_width: int = DEFAULT_MAX_BLOCK_WIDTH
    overlap_io: bool = True  # read ahead and write behind in threads (False: the serial engine)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise InputError(
                f"--overlap {self.overlap} must be between 0 and half the model's tile size ({self.tile_size // 2})"
            )
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size} must be at least 1")
        if self.batch_size > MAX_BATCH_SIZE:
            raise InputError(f"--batch-size {self.batch_size} is above the limit of {MAX_BATCH_SIZE} tiles per call; "
                             "use e.g. 8 to 64 (larger batches need more memory and are rarely faster)")
        if self.max_block_width < self.tile_size:
            raise InputError(f"block width {self.max_block_width} must be at least one tile ({self.tile_size})")

    @classmethod
    def for_bundle(cls, bundle: ModelBundle, overlap: int | None = None, batch_size: int | None = None, **kw: Any):
        return cls(
            tile_size=bundle.tile_size,
            overlap=bundle.overlap if overlap is None else overlap,
            batch_size=bundle.default_batch_size if batch_size is None else batch_size,
            **kw,
        )


@dataclass
class SegmentResult:
    """What a run produced."""

    output: Path
    areas: AreaSummary
    width: int
    height: int
    tiles_predicted: int
    tiles_total: int
    seconds: float
    runtime: str
    confidence: Path | None = None
    warnings: list[str] = field(default_factory=list)
    precision: str = ""  # fp32 | int8 (empty when a Runtime object was passed in)
    tta: str = "none"

    @property
    def files(self) -> OutputFiles:
        """The class raster and its sidecars."""
        return output_files(self.output)

    def done_event(self) -> DoneEvent:
        """The protocol's last line for this run."""
        return DoneEvent(
            output=str(self.output),
            areas=self.areas.to_dict(),
            confidence=str(self.confidence) if self.confidence else None,
            width=self.width,
            height=self.height,
            tiles=self.tiles_predicted,
            seconds=round(self.seconds, 3),
            runtime=self.runtime,
            warnings=tuple(self.warnings),
            precision=self.precision,
            tta=self.tta,
        )


class _Accumulator:
    """Weighted probability sums for the raster rows still in flight, within one column block."""

    def __init__(self, y0: int, width: int, classes: int, capacity: int) -> None:
        self.y0 = y0  # raster row of buffer row 0
        self.width = width
        self.probs = np.zeros((capacity, width, classes), np.float32)
        self.valid = np.zeros((capacity, width), bool)

    def ensure(self, y_end: int) -> None:
        need = y_end - self.y0
        if need > self.probs.shape[0]:
            grow = max(need, 2 * self.probs.shape[0])
            probs = np.zeros((grow, *self.probs.shape[1:]), np.float32)
            valid = np.zeros((grow, self.width), bool)
            probs[: self.probs.shape[0]] = self.probs
            valid[: self.valid.shape[0]] = self.valid
            self.probs, self.valid = probs, valid

    def add(self, y: int, x: int, weighted: np.ndarray) -> None:
        r = y - self.y0
        self.probs[r : r + weighted.shape[0], x : x + weighted.shape[1]] += weighted

    def set_valid(self, y: int, valid: np.ndarray) -> None:
        r = y - self.y0
        self.valid[r : r + valid.shape[0]] = valid

    def release(self, y_end: int, consume) -> None:
        """Hand rows ``[y0, y_end)`` to ``consume(y0, probs, valid)`` as views, then drop them."""
        n = y_end - self.y0
        if n <= 0:
            return
        consume(self.y0, self.probs[:n], self.valid[:n])  # views: no copy of the finished rows
        self.probs[: len(self.probs) - n] = self.probs[n:]
        self.probs[len(self.probs) - n :] = 0
        self.valid[: len(self.valid) - n] = self.valid[n:]
        self.valid[len(self.valid) - n :] = False
        self.y0 = y_end


class _AlignedWriter:
    """Buffers finished rows of one column block and writes them in whole 256-row output blocks,
    so no compressed GeoTIFF block is written twice."""

    def __init__(self, dst, x0: int, x1: int, height: int, guard: WriteGuard | None = None,
                 path: Path | None = None) -> None:
        self.dst, self.x0, self.x1, self.height = dst, x0, x1, height
        self.guard, self.path = guard, path
        self.y0 = 0
        self.chunks: list[np.ndarray] = []

    def push(self, rows: np.ndarray) -> None:
        self.chunks.append(rows)
        pending = sum(len(c) for c in self.chunks)
        end = self.y0 + pending
        aligned = end if end >= self.height else (end // OUTPUT_BLOCK) * OUTPUT_BLOCK
        if aligned > self.y0:
            data = np.concatenate(self.chunks, axis=0)
            n = aligned - self.y0
            self._write(data[:n])
            self.chunks = [data[n:]] if n < len(data) else []
            self.y0 = aligned

    def _write(self, data: np.ndarray) -> None:
        from rasterio.windows import Window as RioWindow

        window = RioWindow(self.x0, self.y0, self.x1 - self.x0, len(data))
        if self.guard is None:
            self.dst.write(data, 1, window=window)
            return
        with self.guard.writing(self.path):  # a failed block write raises here, naming the file
            self.dst.write(data, 1, window=window)


def segment(
    input_path: Path | str,
    output_path: Path | str,
    bundle: ModelBundle,
    *,
    overlap: int | None = None,
    batch_size: int | None = None,
    bands: tuple[int, ...] | None = None,
    window: Window | None = None,
    resample: bool = False,
    confidence_path: Path | str | None = None,
    progress: Progress | None = None,
    runtime: Runtime | str = "auto",
    max_block_width: int = DEFAULT_MAX_BLOCK_WIDTH,
    precision: str = "auto",
    tta: str = "none",
    overlap_io: bool = True,
    chunk: Window | None = None,
) -> SegmentResult:
    """Segment ``input_path`` with ``bundle`` into a styled class GeoTIFF at ``output_path``.

    Args:
        overlap: tile overlap in pixels (default: the bundle's).
        batch_size: tiles per runtime call (default: the bundle's).
        bands: 1-based input bands to use (default: see :mod:`backend.raster_io`).
        window: only this pixel window of the input.
        resample: warp the input to the model's pixel size first; the output is on that grid.
        confidence_path: also write the top-class probability (float32, nodata -1) here.
        progress: reporter for stages, warnings and tile counts.
        runtime: a :class:`~backend.runtime.Runtime` or the name of one.
        max_block_width: widest column block processed at once (bounds memory on wide mosaics).
        precision: ``auto``, ``fp32`` or ``int8``: which ONNX export runs (see :mod:`backend.precision`);
            only used when ``runtime`` is a name.
        tta: test-time augmentation, ``none``, ``flip`` or ``d4`` (see :mod:`backend.tta`).
        overlap_io: read the next tile row and write finished rows in threads while the network runs;
            False gives the serial engine (same output, for comparison).
        chunk: classify only this pixel window of the (windowed or resampled) input, on the whole input's
            tile grid: the output covers the window and equals that part of a run over everything, pixel
            for pixel (how :mod:`backend.batch` splits a mosaic). A chunk wholly in nodata is no error.

    Raises:
        LandcoverError: an :class:`InputError`, :class:`ModelError` or :class:`OutputError` naming the fix.
    """
    started = time.perf_counter()
    progress = progress or Progress()
    params = SegmentParams.for_bundle(bundle, overlap, batch_size, max_block_width=max_block_width,
                                      overlap_io=overlap_io)
    choice = choose_precision(bundle, precision, runtime) if isinstance(runtime, str) else None
    check_tta(tta)  # before any file is opened
    input_path = Path(input_path)
    output = check_output_path(Path(output_path), input_path)
    confidence = check_output_path(Path(confidence_path), input_path) if confidence_path else None
    if confidence is not None and confidence.resolve() == output.resolve():
        raise OutputError("the confidence raster needs a different name than the class raster")
    finals = [*output_files(output).all(), *([confidence] if confidence else [])]
    check_replaceable(finals)  # a folder named like an output, another user's file in /tmp: before any work
    for folder in {f.parent for f in finals}:
        remove_stale_temps(folder)  # hidden files of killed runs (never of a live process)
    silence_rasterio_warnings()

    with _gdal_env(), RasterSource(input_path, bundle.input_bands, bands, window, bundle.gsd_m, resample) as source:
        for message in source.info.warnings:
            progress.warn(message)
        if isinstance(runtime, str):
            progress.info(f"loading model {bundle.name} ({bundle.architecture}/{bundle.backbone})")
            if bundle.is_untrained:
                progress.warn(
                    f"model {bundle.name} has RANDOM weights (untrained, seed {bundle.seed}): the classes are "
                    "meaningless; use it only to check the installation or to benchmark"
                )
            assert choice is not None
            # An INT8 export runs on ONNX Runtime only: asked for explicitly, it must not fall back to TensorFlow.
            kind = "onnx" if precision == "int8" and runtime == "auto" else runtime
            runtime = make_runtime(bundle.with_precision(choice.precision), kind)
            if runtime.name == "onnx" and bundle.onnx_int8 is not None:
                progress.info(f"precision: {choice.reason}")
        runtime_name = getattr(runtime, "name", type(runtime).__name__)
        used_precision = "" if choice is None else (choice.precision if runtime_name == "onnx" else "fp32")
        if tta != "none":
            progress.info(f"test-time augmentation {tta}: {TTA_PASSES[tta]} predictions per tile")
        runtime = with_tta(runtime, tta)
        outputs = OutputSet()
        try:
            with WriteGuard() as guard:
                result = _segment_source(source, output, confidence, bundle, params, runtime, progress, outputs,
                                         guard, chunk)
            outputs.commit()
        except BaseException:
            outputs.discard()
            raise
        finally:
            progress.close()
    result.seconds = time.perf_counter() - started
    result.warnings = list(source.info.warnings)
    result.runtime, result.precision, result.tta = runtime_name, used_precision, tta
    return result


class _RowSink:
    """Turns finished rows of blended probabilities into classes (and confidence), counts and writes them."""

    def __init__(self, grid: TileGrid, height: int, num_classes: int, dst, conf_dst,
                 guard: WriteGuard | None = None, paths: tuple[Path | None, Path | None] = (None, None),
                 row_areas_m2: np.ndarray | None = None, own: Window | None = None) -> None:
        self.grid, self.height, self.num_classes = grid, height, num_classes
        # The pixels this run writes (a chunk of the raster, or all of it), in raster coordinates.
        self.own = own or Window(0, 0, grid.width, height)
        self.dst, self.conf_dst = dst, conf_dst
        self.guard, self.paths = guard, paths
        self.counts = np.zeros(num_classes, np.int64)
        self.row_areas_m2 = row_areas_m2  # per-row ground pixel areas, when they vary over the raster
        self.areas_m2 = np.zeros(num_classes, np.float64)
        self.nodata_pixels = 0
        self.block: ColumnBlock | None = None

    def start_block(self, block: ColumnBlock) -> None:
        """Rows handed over from now on belong to ``block``."""
        self.block = block
        x0, x1, rows = block.x0 - self.own.col_off, block.x1 - self.own.col_off, self.own.height
        self.writer = _AlignedWriter(self.dst, x0, x1, rows, self.guard, self.paths[0])
        self.conf_writer = (_AlignedWriter(self.conf_dst, x0, x1, rows, self.guard, self.paths[1])
                            if self.conf_dst else None)

    def __call__(self, y0: int, probs: np.ndarray, valid: np.ndarray) -> None:
        """Accumulator rows ``y0 .. y0 + len(probs)`` are final (rows outside the owned window are dropped)."""
        block = self.block
        top, bottom = self.own.row_off, self.own.row_off + self.own.height
        lo, hi = max(top, y0), min(bottom, y0 + len(probs))
        if hi <= lo:
            return
        xs = slice(block.x0 - block.acc_x0, block.x1 - block.acc_x0)
        p = probs[lo - y0 : hi - y0, xs]
        v = valid[lo - y0 : hi - y0, xs]
        classes = p.argmax(axis=-1).astype(np.uint8)
        classes[~v] = NODATA
        self.counts += class_counts(classes, self.num_classes)
        if self.row_areas_m2 is not None:
            weights = np.broadcast_to(self.row_areas_m2[lo:hi, None], classes.shape)
            self.areas_m2 += np.bincount(classes.ravel(), weights.ravel(), minlength=NODATA + 1)[: self.num_classes]
        self.nodata_pixels += int((~v).sum())
        self.writer.push(classes)
        if self.conf_writer is not None:
            conf = p.max(axis=-1) / self.grid.weight_sum(lo, hi, block.x0, block.x1)
            conf[~v] = CONFIDENCE_NODATA
            self.conf_writer.push(conf.astype(np.float32))


def _segment_source(
    source: RasterSource,
    output: Path,
    confidence: Path | None,
    bundle: ModelBundle,
    params: SegmentParams,
    runtime: Runtime,
    progress: Progress,
    outputs: OutputSet,
    guard: WriteGuard,
    chunk: Window | None = None,
) -> SegmentResult:
    import rasterio

    grid = TileGrid(source.height, source.width, params.tile_size, params.overlap, NETWORK_STRIDE)
    own = _check_chunk(chunk, source) if chunk is not None else Window(0, 0, source.width, source.height)
    blocks = grid.column_blocks(params.max_block_width, own.col_off, own.col_off + own.width)
    tile_rows = grid.rows.tiles_touching(own.row_off, own.row_off + own.height)
    total = sum(len(b.tiles) for b in blocks) * len(tile_rows)
    # No call needs more tiles than the run has: a huge --batch-size costs what a normal one does.
    params = replace(params, batch_size=max(1, min(params.batch_size, total)))

    tmp_out = outputs.reserve(output)
    tmp_conf = outputs.reserve(confidence) if confidence else None
    guard.watch(output)
    transform = source.transform
    if transform is not None and (own.col_off or own.row_off):
        from rasterio.transform import Affine

        transform = transform * Affine.translation(own.col_off, own.row_off)
    profile = raster_profile(own.width, own.height, source.crs, transform, "uint8", NODATA)
    with disk_errors(output), guard.writing(output):
        dst = rasterio.open(tmp_out, "w", **profile)
    conf_dst = None
    try:
        with disk_errors(output), guard.writing(output):
            write_class_metadata(dst, bundle.classes, bundle.name)
        if tmp_conf is not None:
            conf_profile = raster_profile(own.width, own.height, source.crs, transform, "float32", CONFIDENCE_NODATA)
            with disk_errors(confidence), guard.writing(confidence):
                conf_dst = rasterio.open(tmp_conf, "w", **conf_profile)
                conf_dst.set_band_description(1, "top-class probability")
        progress.start("predict", total, f"{total} tiles of {params.tile_size} px, overlap {params.overlap} px")
        sink = _RowSink(grid, source.height, bundle.num_classes, dst, conf_dst, guard, (output, confidence),
                        source.row_pixel_areas_m2(), own)
        done = predicted = 0
        with disk_errors(output), _io_threads(params.overlap_io) as (reader, writer):
            blend = OrderedWorker(writer)
            try:
                for block in blocks:
                    blend.submit(sink.start_block, block)
                    for n_done, n_pred in _run_block(source, grid, block, bundle, params, runtime, sink, reader,
                                                     blend, tile_rows):
                        guard.check(output)  # a write that failed while reading or predicting: stop now
                        done += n_done
                        predicted += n_pred
                        progress.advance(done)
                blend.drain()
            except BaseException:
                blend.abandon()  # the writer must be idle before the datasets are closed
                raise
        guard.check(output)
    except BaseException:
        for ds in (conf_dst, dst):
            if ds is not None:
                try:
                    ds.close()  # flushing may fail too: the first error is the one to report
                except Exception:  # noqa: BLE001, S110
                    pass
        raise
    # Closing writes the last blocks and the header: a failure there is a failed write too.
    if conf_dst is not None:
        with disk_errors(confidence), guard.writing(confidence):
            conf_dst.close()
    with disk_errors(output), guard.writing(output):
        dst.close()
    if sink.counts.sum() == 0 and chunk is None:  # a chunk of a mosaic may lie wholly in its nodata
        raise InputError(
            f"{source.path.name} has no valid pixels in the area to segment (all nodata or transparent)"
        )
    pixel_size = source.info.pixel_size_m
    areas = AreaSummary(
        classes=bundle.classes,
        counts=tuple(int(c) for c in sink.counts),
        pixel_area_m2=None if pixel_size is None else pixel_size[0] * pixel_size[1],
        nodata_pixels=sink.nodata_pixels,
        areas_m2=None if sink.row_areas_m2 is None else tuple(float(a) for a in sink.areas_m2),
    )
    files = output_files(output)
    outputs.write_text(files.qml, qml_style(bundle.classes))
    outputs.write_text(files.aux, pam_xml(bundle.classes))
    outputs.write_text(files.areas_json, _json(areas.to_dict()))
    outputs.write_text(files.areas_csv, areas.to_csv())
    return SegmentResult(
        output=output,
        areas=areas,
        width=own.width,
        height=own.height,
        tiles_predicted=predicted,
        tiles_total=total,
        seconds=0.0,
        runtime=getattr(runtime, "name", type(runtime).__name__),
        confidence=confidence,
    )


def _check_chunk(chunk: Window, source: RasterSource) -> Window:
    if chunk.col_off + chunk.width > source.width or chunk.row_off + chunk.height > source.height:
        raise InputError(f"chunk {chunk.as_text()} reaches beyond the {source.width} x {source.height} px raster; "
                         "give a window inside it")
    return chunk


def _run_block(source, grid: TileGrid, block: ColumnBlock, bundle: ModelBundle, params: SegmentParams,
               runtime: Runtime, finish, reader: ThreadPoolExecutor | None = None, blend: OrderedWorker | None = None,
               tile_rows: range | None = None):
    """Predict every tile of one column block, row by row; yields ``(tiles_done, tiles_predicted)`` steps.

    With a ``reader`` pool the next tile row is read while this one is predicted, and with a threaded
    ``blend`` worker the accumulator is updated and finished rows are written on the writer thread
    (:mod:`backend.pipeline`); this thread then only prepares batches and runs the network.
    """
    tile = params.tile_size
    # Models whose output covers only the centre of their input (imported ONNX models) are tiled on the
    # output's grid, and each tile is read with ``margin`` pixels of context around it (reflected at the
    # raster's edges like the padding). Blending and stitching then stay exactly those of any other model:
    # no pixel depends on output the network never produced.
    margin = bundle.context_margin
    rows = grid.rows
    # Rows in flight: from the first tile row with unpredicted tiles to the end of the newest one;
    # a batch spans at most ceil(batch / tiles per row) + 1 tile rows. ensure() grows it if needed.
    capacity = min(tile + rows.stride * -(-params.batch_size // len(block.tiles)), rows.padded_length)
    tile_rows = range(rows.count) if tile_rows is None else tile_rows
    acc = _Accumulator(rows.start(tile_rows.start), block.acc_width, bundle.num_classes, capacity)
    cols_idx = reflect_indices(block.acc_x0 - margin, block.acc_width + 2 * margin, source.width)

    def read_row(i: int) -> tuple[np.ndarray, np.ndarray]:
        y = rows.start(tile_rows[i])
        return source.read(reflect_indices(y - margin, tile + 2 * margin, source.height), cols_idx)

    reads = Prefetcher(read_row, len(tile_rows), reader)
    try:
        yield from _predict_rows(reads, grid, block, bundle, params, runtime, finish, acc, blend or OrderedWorker(None),
                                 tile_rows)
    finally:
        reads.cancel()


def _add_batch(acc: _Accumulator, origins: list[tuple[int, int]], probs: np.ndarray, weights: np.ndarray) -> None:
    """Weight one batch of tile predictions by the blend window and add them into the accumulator."""
    probs = probs * weights
    for (y, x), p in zip(origins, probs, strict=True):
        acc.add(y, x, p)


def _predict_rows(reads: Prefetcher, grid: TileGrid, block: ColumnBlock, bundle: ModelBundle, params: SegmentParams,
                  runtime: Runtime, finish, acc: _Accumulator, blend: OrderedWorker, tile_rows: range):
    """The body of :func:`_run_block`: rows of pixels in, batches predicted, blending handed to ``blend``.

    Every accumulator call goes through ``blend`` (in order), so with a threaded worker this thread never
    touches the accumulator.
    """
    tile, margin, rows = params.tile_size, bundle.context_margin, grid.rows
    weights = grid.weights[None, :, :, None]
    queue: list[tuple[int, int, np.ndarray]] = []

    def flush() -> int:
        if not queue:
            return 0
        batch = bundle.preprocessing.apply(np.stack([q[2] for q in queue]))
        probs = runtime.predict(batch)
        if probs.shape != (len(queue), tile, tile, bundle.num_classes):
            raise ModelError(
                f"the model returned shape {probs.shape}, expected {(len(queue), tile, tile, bundle.num_classes)}; "
                "the bundle metadata does not match the network"
            )
        blend.submit(_add_batch, acc, [(y, x) for y, x, _ in queue], probs, weights)
        n = len(queue)
        queue.clear()
        return n

    # Rows after the last tile row of the range are reached by no further tile of this run: a chunk of the
    # raster stops there, and its rows below are another chunk's.
    for r, (pixels, valid) in zip(tile_rows, reads, strict=True):
        y = rows.start(r)
        blend.submit(acc.ensure, y + tile)
        valid = valid[margin : margin + tile, margin : margin + block.acc_width]  # the pixels classified
        blend.submit(acc.set_valid, y, valid)
        skipped = 0
        for c in block.tiles:
            x = grid.cols.start(c) - block.acc_x0
            if not valid[:, x : x + tile].any():
                skipped += 1  # nothing valid to classify: no contribution needed
                continue
            queue.append((y, x, pixels[:, x : x + tile + 2 * margin]))
            if len(queue) == params.batch_size:
                n = flush()
                yield n + skipped, n
                skipped = 0
                blend.submit(acc.release, y, finish)  # every tile of the rows above is predicted
        if r == tile_rows[-1]:
            n = flush()
            yield n + skipped, n
            blend.submit(acc.release, rows.final_before(r), finish)
        elif not queue:
            yield skipped, 0
            blend.submit(acc.release, rows.final_before(r), finish)
        elif skipped:
            yield skipped, 0


@contextlib.contextmanager
def _io_threads(enabled: bool):
    """``(reader, writer)`` single-thread pools for a run, or ``(None, None)`` for the serial engine."""
    if not enabled:
        yield None, None
        return
    with ThreadPoolExecutor(1, thread_name_prefix="landcover-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="landcover-write") as writer:
        yield reader, writer


def _gdal_env():
    """GDAL settings for a run: a small block cache.

    GDAL's default cache (5 % of RAM) would keep every input and output block of a large raster
    that the run touches, so memory would grow with the raster after all; rows are read and written
    in order, so a cache of a few strips of blocks is all that helps.
    """
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2) + "\n"

"""Static INT8 quantization of a bundle's float ONNX export, checked against it before it is kept.

``python -m backend export-onnx MODEL --int8 --calibration DIR|RASTER [--tiles N]`` writes
``<stem>.int8.onnx`` beside the bundle JSON and records it as the JSON's ``onnx_int8`` entry (file and
SHA-256) next to the float ``onnx`` entry, which stays: ``segment --precision`` chooses between them.

The quantizer is ONNX Runtime's ``quantize_static`` in QDQ form: weights int8, symmetric, per output
channel, on the weights after ONNX Runtime's basic optimisation has folded BatchNorm into the convolutions;
activations per tensor with MinMax ranges from calibration tiles, which are real pixels (training patches
or orthophotos), never noise. The classifier head (the last Conv and what follows it) stays float: its
logits decide the argmax, and quantizing them flips close calls (measured: see
``training/reports/default_model_int8.md``). Activations default to ``uint8``: x86 VNNI (``vpdpbusd``) and
ARM dot-product instructions multiply u8 x s8 natively; without VNNI the u8 x s8 products can saturate,
which is one reason ``--precision auto`` runs INT8 only on CPUs with those instructions.

Before the file is kept its classes are compared with the float model's on the calibration tiles; below
``min_agreement`` (99.5 %) it is refused with the figure and the bundle is left unchanged.
"""

from __future__ import annotations

import datetime as _dt
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.bundle import ModelBundle
from backend.contract import atomic_path, write_text_atomic
from backend.errors import DependencyError, InputError, ModelError

ACTIVATION_TYPES = ("uint8", "int8")
QUANTIZED_SUFFIX = ".int8.onnx"
METADATA_KEY = "landcover_quantization"
DEFAULT_TILES = 64
MAX_TILES = 4096
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".png", ".jpg", ".jpeg", ".img")
# Ops left float on purpose: ORT has no integer BatchNormalization kernel, so the BNs left after folding
# (ResNet's, after an Add) run in float either way; Q/DQ pairs around them would only cost time.
FLOAT_OP_TYPES = ("BatchNormalization",)
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}
# A calibration tile is used only if at least this share of its pixels is valid (not nodata/transparent).
_MIN_VALID_SHARE = 0.9


@dataclass(frozen=True)
class QuantSettings:
    """How to quantize and when to refuse the result.

    Attributes:
        activations: ``uint8`` (default: native on VNNI/dot-product CPUs) or ``int8``.
        symmetric_activations: zero point 0; asymmetric keeps more resolution for ReLU outputs.
        min_agreement: the least share of calibration pixels that must keep the float model's class.
    """

    activations: str = "uint8"
    symmetric_activations: bool = False
    min_agreement: float = 0.995

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATION_TYPES:
            raise InputError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, got {self.activations!r}")
        if not 0.0 < self.min_agreement <= 1.0:
            raise InputError(f"the minimum agreement must be in (0, 1], got {self.min_agreement}")


@dataclass(frozen=True)
class CalibrationTiles:
    """Normalised model input for calibration, and where it came from."""

    tiles: np.ndarray  # (n, tile, tile, bands) float32 with the bundle's preprocessing applied
    source: str

    def __post_init__(self) -> None:
        if self.tiles.ndim != 4 or len(self.tiles) == 0:
            raise InputError(f"calibration needs a non-empty (n, tile, tile, bands) stack, got {self.tiles.shape}")


@dataclass(frozen=True)
class Int8Report:
    """What :func:`quantize_export` wrote and measured."""

    bundle: ModelBundle
    path: Path
    fp32_bytes: int
    int8_bytes: int
    tiles: int
    agreement: float
    provenance: dict[str, Any]

    def summary(self) -> str:
        return (f"wrote {self.path} ({self.int8_bytes / 1e6:.1f} MB; float {self.fp32_bytes / 1e6:.1f} MB)\n"
                f"checked on the {self.tiles} calibration tiles: {100 * self.agreement:.3f} % of pixels keep the "
                f"float model's class\nrecorded as \"onnx_int8\" in {self.bundle.source}; "
                "'segment --precision auto' runs it on CPUs with VNNI/AMX/dot-product instructions")


# ------------------------------------------------------------------------------------------- calibration


def calibration_rasters(source: Path | Sequence[Path]) -> list[Path]:
    """``source`` itself when it is a raster file, every raster under it when it is a folder, or a list of files."""
    if not isinstance(source, str | Path):
        files = [Path(p) for p in source]
        missing = [p for p in files if not p.is_file()]
        if not files or missing:
            raise InputError(f"calibration image {missing[0] if missing else '(none)'} does not exist; give existing "
                             "rasters (training patches or orthophotos)")
        return files
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise InputError(f"calibration source {source} does not exist; give a raster or a folder of rasters "
                         "(training patches or orthophotos like those the model will map)")
    found = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
                   and not p.name.startswith("."))
    if not found:
        raise InputError(f"no rasters ({', '.join(RASTER_SUFFIXES)}) in {source}; give a folder of training patches "
                         "or orthophotos")
    return found


def check_tile_count(count: int) -> int:
    """``count`` if it is a usable number of calibration tiles."""
    if not 1 <= count <= MAX_TILES:
        raise InputError(f"--tiles must be 1..{MAX_TILES}, got {count}")
    return count


def raster_calibration_tiles(bundle: ModelBundle, source: Path | Sequence[Path], count: int = DEFAULT_TILES,
                             seed: int = 0) -> CalibrationTiles:
    """``count`` model-input tiles drawn from the rasters at ``source``, with the bundle's bands and preprocessing.

    Tiles are spread over the rasters in proportion to their areas, at random positions (``seed``), and
    only tiles with at least 90 % valid pixels are kept; a raster smaller than a tile is read whole and
    padded by reflection, as the engine does. Rasters whose pixel size differs from the model's are used
    as they are (calibration needs realistic value ranges, not exact scale).
    """
    from backend.raster_io import RasterSource, silence_rasterio_warnings
    from backend.tiling import reflect_indices

    silence_rasterio_warnings()  # training patches are PNGs without georeferencing: expected here
    check_tile_count(count)
    rasters = calibration_rasters(source)
    rng = np.random.default_rng(seed)
    t = bundle.input_tile
    sizes = []
    for path in rasters:
        with RasterSource(path, bundle.input_bands) as src:
            sizes.append(src.height * src.width)
    share = np.asarray(sizes, np.float64) / sum(sizes)
    wanted = np.maximum(rng.multinomial(count, share), 0)
    tiles: list[np.ndarray] = []
    for path, n in zip(rasters, wanted, strict=True):
        if not n:
            continue
        with RasterSource(path, bundle.input_bands) as src:
            got, attempts = 0, 0
            while got < n and attempts < 20 * n:
                attempts += 1
                y0 = int(rng.integers(0, max(1, src.height - t + 1)))
                x0 = int(rng.integers(0, max(1, src.width - t + 1)))
                pixels, valid = src.read(reflect_indices(y0, t, src.height), reflect_indices(x0, t, src.width))
                if valid.mean() >= _MIN_VALID_SHARE:
                    tiles.append(pixels)
                    got += 1
    if not tiles:
        raise InputError(f"no calibration tile of {t} px with >= 90 % valid pixels in {source}; give rasters with "
                         "fewer nodata areas")
    if not isinstance(source, str | Path):
        what = f"{len(rasters)} images ({rasters[0].parent})"
    else:
        what = f"{len(rasters)} raster(s) under {source}" if Path(source).is_dir() else str(source)
    return CalibrationTiles(bundle.preprocessing.apply(np.stack(tiles)),
                            f"{len(tiles)} random {t} px tiles of {what} (seed {seed})")


class TileReader:
    """ONNX Runtime's calibration data reader protocol (``get_next``), over batches of NHWC tiles."""

    def __init__(self, input_name: str, tiles: np.ndarray, layout: str, batch: int = 8) -> None:
        self._tiles, self._nchw, self._batch, self._input_name = tiles, layout == "NCHW", batch, input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._tiles):
            return None
        x = self._tiles[self._next:self._next + self._batch]
        self._next += self._batch
        # Transposed one batch at a time: a second full copy of hundreds of tiles would cost 100s of MB.
        return {self._input_name: np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self._nchw else x, np.float32)}


# ------------------------------------------------------------------------------------------- quantization


def import_quantization() -> tuple[Any, Any]:
    """``onnx`` and ``onnxruntime.quantization``, or a DependencyError naming the fix."""
    try:
        import onnx
        import onnxruntime.quantization as ortq
    except ImportError as exc:
        raise DependencyError(f"INT8 quantization needs onnx and onnxruntime ({exc}); install them with "
                              "'make setup' (the source tree's .venv has both)") from exc
    return onnx, ortq


def is_quantized(proto: Any) -> bool:
    """True when the ONNX model already holds quantized operators."""
    return any(node.op_type in _QUANTIZED_OPS for node in proto.graph.node)


def float_head(proto: Any) -> list[str]:
    """Names of the nodes from the graph output back to (and including) the last Conv: kept float."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    names: list[str] = []
    node = producer.get(proto.graph.output[0].name)
    while node is not None and node.name:
        names.append(node.name)
        if node.op_type == "Conv":
            break
        node = producer.get(node.input[0]) if node.input else None
    return names


def quantize_onnx(fp32_path: Path, out_path: Path, calibration: np.ndarray, layout: str,
                  settings: QuantSettings, producer: str = "landcover backend") -> dict[str, Any]:
    """Quantize ``fp32_path`` into ``out_path`` (not atomic: callers pass a temporary name).

    Args:
        fp32_path: the float ONNX model.
        out_path: where the QDQ model goes.
        calibration: ``(n, tile, tile, bands)`` normalised tiles (NHWC, as the engine holds them).
        layout: the ONNX model's layout, ``NHWC`` or ``NCHW``.
        settings: activation type and symmetry.
        producer: written as the model's producer name.

    Returns:
        The quantization settings, for provenance and the model's metadata.
    """
    onnx, ortq = import_quantization()
    fp32 = onnx.load(str(fp32_path))
    if is_quantized(fp32):
        raise ModelError(f"{fp32_path.name} is already quantized; re-export the float model with "
                         "'python -m backend export-onnx MODEL' and quantize that")
    with tempfile.TemporaryDirectory(prefix="landcover-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        # ORT's basic graph optimisation folds the float16->float32 Casts of the export into float32
        # initializers and BatchNorm into the Convs: the quantizer only quantizes Conv weights that are
        # initializers, and per-channel scales must be computed on the folded weights. Symbolic shape
        # inference is for transformers and gives up on this graph; ONNX shape inference suffices.
        ortq.quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        head = float_head(onnx.load(str(pre), load_external_data=False))
        activation = ortq.QuantType.QInt8 if settings.activations == "int8" else ortq.QuantType.QUInt8
        registered = set(ortq.registry.QDQRegistry) | set(ortq.registry.QLinearOpsRegistry)
        ortq.quantize_static(
            str(pre), str(out_path), TileReader(fp32.graph.input[0].name, calibration, layout),
            quant_format=ortq.QuantFormat.QDQ,
            per_channel=True,
            activation_type=activation,
            weight_type=ortq.QuantType.QInt8,
            nodes_to_exclude=head,
            op_types_to_quantize=sorted(registered - set(FLOAT_OP_TYPES)),
            calibrate_method=ortq.CalibrationMethod.MinMax,
            # No CalibMaxIntermediateOutputs: in ORT 1.31 it drops the ranges collected so far instead of
            # merging them (and MinMax keeps only reduced min/max outputs, so memory is no issue).
            extra_options={"ActivationSymmetric": settings.symmetric_activations, "WeightSymmetric": True},
        )
    used = {
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel",
        "activations": f"{settings.activations}, {'symmetric' if settings.symmetric_activations else 'asymmetric'}, "
                       "per tensor",
        "calibration_method": "MinMax",
        "float_nodes": head,
        "float_op_types": list(FLOAT_OP_TYPES),
    }
    proto = onnx.load(str(out_path))
    # The quantizer keeps pre-processing's metadata only by accident of its implementation; set exactly
    # the float model's (Deepness reads class names, resolution, tiling from it) plus a note of our own.
    del proto.metadata_props[:]
    for prop in fp32.metadata_props:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(used))
    proto.producer_name = f"{producer} (onnxruntime quantize_static)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out_path))
    return used


def tile_agreement(bundle: ModelBundle, fp32_path: Path, int8_path: Path, tiles: np.ndarray,
                   batch: int = 8) -> float:
    """Share of the tiles' pixels whose int8 class equals the float model's (both run by ONNX Runtime)."""
    from backend.onnx_runtime import OnnxRuntime

    fp32, int8 = (OnnxRuntime(with_onnx_file(bundle, p)) for p in (fp32_path, int8_path))
    equal = total = 0
    for i in range(0, len(tiles), batch):
        x = tiles[i:i + batch]
        a, b = fp32.predict(x).argmax(-1), int8.predict(x).argmax(-1)
        equal += int((a == b).sum())
        total += a.size
    return equal / max(total, 1)


def with_onnx_file(bundle: ModelBundle, path: Path) -> ModelBundle:
    """``bundle`` running the ONNX file ``path`` (checksum recomputed; layout and readout unchanged)."""
    from backend.onnx_runtime import file_sha256

    if bundle.onnx is None:
        raise ModelError(f"model {bundle.name!r} has no ONNX export")
    return replace(bundle, onnx=replace(bundle.onnx, file=Path(path), sha256=file_sha256(Path(path))))


# ------------------------------------------------------------------------------------------- the bundle


def default_output(bundle_json: Path) -> Path:
    """``landcover.json`` -> ``landcover.int8.onnx`` beside it."""
    stem = bundle_json.name[: -len(".json")] if bundle_json.name.endswith(".json") else bundle_json.stem
    return bundle_json.with_name(stem + QUANTIZED_SUFFIX)


def check_output(bundle: ModelBundle, out: Path) -> Path:
    """Where the INT8 file may go: an ``.onnx`` beside the bundle JSON, not the float file itself."""
    assert bundle.source is not None and bundle.onnx is not None
    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"the INT8 file {out} must end with .onnx")
    if out.resolve().parent != bundle.source.resolve().parent:
        raise InputError(f"the INT8 file {out} must be in the bundle's folder {bundle.source.parent} (the JSON "
                         "names it relative to itself)")
    if out.resolve() == bundle.onnx.file.resolve():
        raise InputError(f"the INT8 file {out} would replace the float model; choose another name")
    return out


def int8_provenance(bundle: ModelBundle, out: Path, used: dict[str, Any], calibration: Any,
                    agreement: dict[str, Any]) -> dict[str, Any]:
    """The bundle's ``provenance["onnx_quantization"]``: method and settings, calibration, agreement, both files."""
    import onnxruntime

    assert bundle.onnx is not None
    return {
        "method": "onnxruntime.quantization.quantize_static (static INT8, QDQ)",
        **used,
        "calibration": {"source": calibration.source, "tiles": len(calibration.tiles)},
        "agreement_with_fp32": agreement,
        "fp32_file": bundle.onnx.file.name,
        "fp32_sha256": bundle.onnx.sha256,
        "fp32_bytes": bundle.onnx.file.stat().st_size,
        "int8_bytes": out.stat().st_size,
        "onnxruntime": onnxruntime.__version__,
        "date": _dt.date.today().isoformat(),
    }


def record_int8(bundle: ModelBundle, out: Path, provenance: dict[str, Any]) -> ModelBundle:
    """Name ``out`` as the bundle JSON's ``onnx_int8`` entry with its checksum and provenance (atomic rewrite)."""
    from backend.onnx_runtime import file_sha256

    assert bundle.source is not None and bundle.onnx is not None
    entry = replace(bundle.onnx, file=out.resolve(), sha256=file_sha256(out))
    json_path = bundle.source
    data = json.loads(json_path.read_text())
    data["onnx_int8"] = entry.to_dict()
    data.setdefault("provenance", {})["onnx_quantization"] = provenance
    write_text_atomic(json_path, json.dumps(data, indent=2) + "\n")
    return replace(bundle, onnx_int8=entry, provenance={**bundle.provenance, "onnx_quantization": provenance})


def quantize_export(bundle: ModelBundle, calibration: CalibrationTiles, settings: QuantSettings = QuantSettings(),
                    out: Path | None = None) -> Int8Report:
    """Quantize the bundle's float export, check it on the calibration tiles, and record it in the JSON.

    Raises:
        LandcoverError: no float export, a bad output name, or too low an agreement (the bundle is unchanged).
    """
    from backend.onnx_runtime import verified_onnx_path

    if bundle.source is None:
        raise InputError(f"model {bundle.name!r} is not a bundle file; give its .json")
    if bundle.onnx is None:
        raise ModelError(f"model {bundle.name!r} has no float ONNX export to quantize; run "
                         f"'python -m backend export-onnx {bundle.source}' first")
    fp32_path = verified_onnx_path(bundle)
    onnx, _ = import_quantization()
    if is_quantized(onnx.load(str(fp32_path), load_external_data=False)):
        raise ModelError(f"{fp32_path.name}, the \"onnx\" entry of {bundle.source.name}, is already quantized; "
                         "re-export the float model with 'python -m backend export-onnx MODEL' and quantize that")
    out = check_output(bundle, default_output(bundle.source) if out is None else out)
    with atomic_path(out) as part:
        used = quantize_onnx(fp32_path, part, calibration.tiles, bundle.onnx.layout, settings)
        agreement = tile_agreement(bundle, fp32_path, part, calibration.tiles, bundle.default_batch_size)
        if agreement < settings.min_agreement:
            raise ModelError(
                f"the INT8 model keeps the float model's class on only {100 * agreement:.3f} % of the calibration "
                f"pixels (minimum {100 * settings.min_agreement:.2f} %); it was not kept and the bundle is "
                "unchanged; calibrate on more or more typical tiles, try --activations int8, or use the float model"
            )
    provenance = int8_provenance(bundle, out, used, calibration, {
        "calibration_tiles": round(agreement, 6),
        "how": "share of calibration-tile pixels with the float model's class (ONNX Runtime, argmax)",
    })
    updated = record_int8(bundle, out, provenance)
    return Int8Report(updated, out, fp32_path.stat().st_size, out.stat().st_size, len(calibration.tiles), agreement,
                      provenance)


def quantize_from_rasters(bundle: ModelBundle, sources: Sequence[Path], tiles: int = DEFAULT_TILES,
                          settings: QuantSettings = QuantSettings(), seed: int = 0) -> Int8Report:
    """:func:`quantize_export` calibrated on tiles drawn from rasters (one source, or several pooled)."""
    if not sources:
        raise InputError("INT8 export needs --calibration DIR|RASTER: training patches or orthophotos like those the "
                         "model will map (not random noise)")
    check_tile_count(tiles)
    if tiles < len(sources):
        raise InputError(f"--tiles {tiles} is fewer than the {len(sources)} calibration sources; use at least one "
                         "tile per source")
    stacks, names = [], []
    per = [tiles // len(sources) + (1 if k < tiles % len(sources) else 0) for k in range(len(sources))]
    for source, n in zip(sources, per, strict=True):
        if n:
            cal = raster_calibration_tiles(bundle, Path(source), n, seed)
            stacks.append(cal.tiles)
            names.append(cal.source)
    return quantize_export(bundle, CalibrationTiles(np.concatenate(stacks), "; ".join(names)), settings)

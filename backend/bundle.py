"""Model bundles: a JSON metadata file beside a weights file, validated on load.

A bundle is what the CLI, the plugin and the training export agree on. The JSON carries the
format version, architecture, backbone, tile size, input preprocessing, the classes (id, name,
colour), the ground sampling distance the model was trained for, and provenance. See
``DESIGN.md`` and the README for an example.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import (
    ARCHITECTURES,
    DEFAULT_MODEL,
    FORMAT_VERSION,
    LANDCOVER_CLASSES,
    ONNX_ARCHITECTURE,
    UNTRAINED_PREFIX,
    ClassInfo,
    ListedModel,
    ModelInfo,
    model_dirs,
    model_fields_from_dict,
    read_bundle_json,
    untrained_model,
    user_models_dir,
    write_text_atomic,
)
from backend.contract import list_models as list_bundle_files
from backend.contract import resolve_model as resolve_model_info
from backend.errors import LandcoverError, ModelError

DEFAULT_BUNDLE_NAME = DEFAULT_MODEL
BUNDLED_DIR = model_dirs()[0][1]

__all__ = [
    "ARCHITECTURES", "BUNDLED_DIR", "FORMAT_VERSION", "LANDCOVER_CLASSES", "UNTRAINED_PREFIX", "ClassInfo",
    "ListedModel", "ModelBundle", "ModelInfo", "OUTPUT_KINDS", "OnnxExport", "Preprocessing", "bundle_from_dict",
    "list_models", "load_bundle", "model_search_dirs", "resolve_model", "untrained_bundle", "user_models_dir",
    "with_weights",
]


@dataclass(frozen=True)
class Preprocessing:
    """Input normalisation: ``(pixel / scale - mean) / std`` per band."""

    scale: float = 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not self.scale > 0:
            raise ModelError(f"preprocessing scale must be > 0, got {self.scale}")
        if len(self.mean) != len(self.std):
            raise ModelError("preprocessing mean and std must have one value per input band")
        if any(s <= 0 for s in self.std):
            raise ModelError(f"preprocessing std values must be > 0, got {list(self.std)}")

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Normalise a ``(..., bands)`` array of 0..255 pixel values to float32 model input."""
        # One pass, no temporary: the same float32 values as astype() followed by the division.
        x = np.divide(pixels, np.float32(self.scale), dtype=np.float32)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if np.any(mean != 0) or np.any(std != 1):
            x -= mean
            x /= std
        return x


ONNX_LAYOUTS = ("NHWC", "NCHW")
#: How the chosen ONNX output encodes the classes (see :mod:`backend.onnx_runtime` for the conversion):
#: ``softmax``: one score per class (C >= 2 channels; Landcover's own exports); ``sigmoid``: the probability
#: of one class against background, thresholded at ``threshold``; ``labels``: class ids (no class axis).
OUTPUT_KINDS = ("softmax", "sigmoid", "labels")


@dataclass(frozen=True)
class OnnxExport:
    """The bundle's ONNX export (see :mod:`backend.onnx_export`): the file beside the JSON and its checksum.

    ``layout`` is the ONNX tensors' layout: NHWC like Keras, or NCHW for Deepness. ``weights_sha256``
    is the checksum of the weights file it was converted from, so a retrained bundle with a stale
    ONNX file is caught instead of silently running the old network.

    Imported models (:mod:`backend.deepness`) also say how to read their output, with defaults that
    describe Landcover's own exports, so older bundles load unchanged:

    Attributes:
        output: index of the graph output holding the segmentation (several outputs are allowed).
        output_kind: one of :data:`OUTPUT_KINDS`.
        class_axis: False when the output has no class axis (``N x H x W``).
        threshold: ``sigmoid`` only: the probability above which a pixel is the class, not background.
        context_margin: pixels the output lacks on each side of the input (the output covers the
            tile's centre); the engine feeds that much context around every tile it classifies.
        fixed_batch: the graph's batch size when it is fixed (tiles are fed in groups of exactly it).
    """

    file: Path
    sha256: str
    opset: int = 17
    layout: str = "NHWC"
    deepness: bool = False
    weights_sha256: str | None = None
    output: int = 0
    output_kind: str = "softmax"
    class_axis: bool = True
    threshold: float = 0.5
    context_margin: int = 0
    fixed_batch: int | None = None

    def __post_init__(self) -> None:
        if self.layout not in ONNX_LAYOUTS:
            raise ModelError(f"ONNX layout {self.layout!r} is not one of {', '.join(ONNX_LAYOUTS)}")
        for value in (self.sha256, self.weights_sha256):
            if value is not None and (len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value)):
                raise ModelError(f"ONNX checksum {value!r} is not a 64-digit lowercase hex SHA-256")
        if self.output_kind not in OUTPUT_KINDS:
            raise ModelError(f"ONNX output kind {self.output_kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
        if self.output < 0:
            raise ModelError(f"ONNX output index {self.output} must be >= 0")
        if self.output_kind == "softmax" and not self.class_axis:
            raise ModelError("a softmax ONNX output needs a class axis; use output kind labels or sigmoid")
        if not 0.0 < self.threshold < 1.0:
            raise ModelError(f"ONNX output threshold {self.threshold} must be between 0 and 1")
        if self.context_margin < 0:
            raise ModelError(f"ONNX context margin {self.context_margin} must be >= 0")
        if self.fixed_batch is not None and self.fixed_batch < 1:
            raise ModelError(f"ONNX fixed batch size {self.fixed_batch} must be >= 1")

    #: The fields older bundles lack; written only when they differ from these defaults.
    _READOUT_DEFAULTS = {"output": 0, "output_kind": "softmax", "class_axis": True, "threshold": 0.5,
                         "context_margin": 0, "fixed_batch": None}

    def to_dict(self) -> dict[str, Any]:
        d = {
            "file": self.file.name,
            "sha256": self.sha256,
            "opset": self.opset,
            "layout": self.layout,
            "deepness": self.deepness,
            "weights_sha256": self.weights_sha256,
        }
        # Landcover's own exports keep exactly their old JSON; imported models add how to read them.
        d.update({k: getattr(self, k) for k, v in self._READOUT_DEFAULTS.items() if getattr(self, k) != v})
        return d

    def describe(self) -> str:
        """How the output is read, for ``info`` and ``models`` (empty for a plain softmax output)."""
        parts = []
        if self.output:
            parts.append(f"output #{self.output}")
        if self.output_kind != "softmax" or not self.class_axis:
            kind = self.output_kind + ("" if self.class_axis else " (no class axis)")
            parts.append(kind + (f", threshold {self.threshold:g}" if self.output_kind == "sigmoid" else ""))
        if self.context_margin:
            parts.append(f"centre output, {self.context_margin} px context on each side")
        if self.fixed_batch:
            parts.append(f"fixed batch {self.fixed_batch}")
        return "; ".join(parts)


@dataclass(frozen=True)
class ModelBundle(ModelInfo):
    """A model's metadata (:class:`~backend.contract.ModelInfo`, checked there) plus how to run it.

    ``weights`` is None for untrained (random-initialised) models, which use ``seed``, and for
    ONNX-only bundles. It may name a file that is absent when the ONNX export is there: the plugin
    zip ships only the ONNX file, and the TensorFlow runtime then explains what is missing.
    """

    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    onnx: OnnxExport | None = None
    onnx_int8: OnnxExport | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.onnx_int8 is not None and self.onnx is None:
            raise ModelError(f"the model bundle{self._where} has an \"onnx_int8\" entry but no \"onnx\" (float) entry "
                             "it was quantized from; re-export with 'python -m backend export-onnx MODEL --int8 ...'")
        if self.architecture == ONNX_ARCHITECTURE and self.onnx is None:
            raise ModelError(f"an imported ({ONNX_ARCHITECTURE!r}) model needs an \"onnx\" entry{self._where}; "
                             "re-add it with 'python -m backend models add'")
        if self.onnx is not None and self.onnx.output_kind == "sigmoid" and self.num_classes != 2:
            raise ModelError(f"a sigmoid ONNX output gives 2 classes (background and the class), but the bundle"
                             f"{self._where} lists {self.num_classes}; fix the classes")
        if len(self.preprocessing.mean) != self.input_bands:
            raise ModelError(
                f"preprocessing has {len(self.preprocessing.mean)} mean/std values but the model takes "
                f"{self.input_bands} bands{self._where}; give one value per band"
            )

    @property
    def is_untrained(self) -> bool:
        return self.weights is None and self.onnx is None

    @property
    def context_margin(self) -> int:
        """Pixels of context the network needs on each side of the tile it classifies (0 for most models)."""
        return self.onnx.context_margin if self.onnx is not None else 0

    @property
    def input_tile(self) -> int:
        """Side of the tiles the network takes: the classified tile plus the context on both sides."""
        return self.tile_size + 2 * self.context_margin

    def export_for(self, precision: str) -> OnnxExport | None:
        """The ``fp32`` or ``int8`` ONNX export named by the JSON, whether or not its file is there."""
        if precision not in ("fp32", "int8"):
            raise ModelError(f"unknown precision {precision!r}; use fp32 or int8")
        return self.onnx if precision == "fp32" else self.onnx_int8

    def has_export(self, precision: str) -> bool:
        """The ``precision`` ONNX file is on disk (the plugin zip ships one export per bundle)."""
        export = self.export_for(precision)
        return export is not None and export.file.is_file()

    def with_precision(self, precision: str) -> ModelBundle:
        """This bundle with ``precision``'s export as the one ONNX Runtime runs (``onnx``)."""
        if precision == "int8":
            if self.onnx_int8 is None:
                raise ModelError(f"model {self.name!r} has no INT8 export; create one with 'python -m backend "
                                 f"export-onnx {self.source or self.name} --int8 --calibration DIR|RASTER' or use "
                                 "--precision fp32")
            return replace(self, onnx=self.onnx_int8)
        self.export_for(precision)  # validates the name
        return self

    @property
    def has_weights(self) -> bool:
        """The TensorFlow weights file is on disk (the TensorFlow runtime needs it)."""
        return self.weights is not None and self.weights.is_file()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (weights path relative to the JSON file)."""
        d: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "name": self.name,
            "architecture": self.architecture,
            "backbone": self.backbone,
            "tile_size": self.tile_size,
            "input_bands": self.input_bands,
            "preprocessing": asdict(self.preprocessing),
            "gsd_m": self.gsd_m,
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes],
            "weights": self.weights.name if self.weights else None,
            "default_overlap": self.default_overlap,
            "default_batch_size": self.default_batch_size,
            "provenance": self.provenance,
        }
        if self.onnx is not None:
            d["onnx"] = self.onnx.to_dict()
        if self.onnx_int8 is not None:
            d["onnx_int8"] = self.onnx_int8.to_dict()
        d["preprocessing"]["mean"] = list(self.preprocessing.mean)
        d["preprocessing"]["std"] = list(self.preprocessing.std)
        return d

    def save(self, json_path: Path) -> Path:
        """Write the metadata JSON (atomically); the weights file must already sit beside it."""
        return write_text_atomic(json_path, json.dumps(self.to_dict(), indent=2) + "\n")

    def _weights_summary(self) -> str:
        if self.architecture == ONNX_ARCHITECTURE:
            return "none (imported ONNX model: runs on ONNX Runtime only)"
        if self.is_untrained:
            return f"random (untrained, seed {self.seed})"
        if not self.has_weights:
            return "not installed (ONNX export only; the TensorFlow runtime needs them)"
        return str(self.weights)

    def summary(self) -> str:
        """A few human-readable lines about the model."""
        gsd = f"{self.gsd_m:g} m/px" if self.gsd_m else "unknown"
        lines = [
            f"name:         {self.name}",
            f"model:        {self.architecture} / {self.backbone}",
            f"tile size:    {self.tile_size} px (default overlap {self.overlap} px"
            + (f"; network input {self.input_tile} px with context)" if self.context_margin else ")"),
            f"input:        {self.input_bands} bands, pixel / {self.preprocessing.scale:g}",
            f"resolution:   {gsd}",
            f"classes:      {', '.join(f'{c.id} {c.name}' for c in self.classes)}",
            f"weights:      {self._weights_summary()}",
        ]
        if self.onnx is not None:
            extra = ", Deepness metadata" if self.onnx.deepness else ""
            lines.append(f"onnx:         {self.onnx.file.name} ({self.onnx.layout}, opset {self.onnx.opset}{extra})")
            if self.onnx.describe():
                lines.append(f"output:       {self.onnx.describe()}")
        if self.onnx_int8 is not None:
            there = "" if self.onnx_int8.file.is_file() else ", file not installed"
            lines.append(f"onnx int8:    {self.onnx_int8.file.name} (static INT8{there}; --precision auto|fp32|int8)")
        source = self.provenance.get("source")
        if source:
            lines.append(f"imported from: {source}")
        metrics = self.provenance.get("metrics") or {}
        if "miou" in metrics:
            lines.append(f"mIoU:         {metrics['miou']:.3f}")
        if self.provenance.get("data"):
            lines.append(f"trained on:   {self.provenance['data']}")
        return "\n".join(lines)


def bundle_from_dict(data: dict[str, Any], source: Path | None = None) -> ModelBundle:
    """Validate a parsed bundle JSON and build a :class:`ModelBundle`.

    The model fields are checked by the contract (the plugin reads them the same way); this adds
    preprocessing, weights, provenance and the ONNX export.
    """
    info = model_fields_from_dict(data, source)
    where = f" in {source}" if source else ""
    try:
        pre = Preprocessing(**data.get("preprocessing", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model bundle{where} has malformed preprocessing ({exc})") from exc
    onnx = _onnx_from_dict(data.get("onnx"), source, where)
    onnx_int8 = _onnx_from_dict(data.get("onnx_int8"), source, where, key="onnx_int8")
    has_onnx = any(e is not None and e.file.is_file() for e in (onnx, onnx_int8))
    weights = data.get("weights")
    if not weights and not has_onnx:
        raise ModelError(f"model bundle{where} names no weights file and no ONNX export; set \"weights\" to the "
                         ".weights.h5 beside it")
    weights_path = ((source.parent if source else Path.cwd()) / weights).resolve() if weights else None
    if weights_path is not None and not weights_path.is_file() and not has_onnx:
        raise ModelError(
            f"weights file {weights_path} named by the model bundle{where} is missing; "
            "copy it beside the JSON or fix the \"weights\" entry"
        )
    return ModelBundle(
        **info,
        preprocessing=pre,
        weights=weights_path,
        provenance=dict(data.get("provenance") or {}),
        onnx=onnx,
        onnx_int8=onnx_int8,
    )


def _onnx_from_dict(entry: Any, source: Path | None, where: str, key: str = "onnx") -> OnnxExport | None:
    """Parse the optional ``onnx`` (float) or ``onnx_int8`` entry.

    The file is not required here: a bundle copied without it still runs on TensorFlow, and
    ``--runtime onnx`` explains what is missing. Its checksum is checked when it is run.
    """
    if entry is None:
        return None
    fix = f"re-export it with 'python -m backend export-onnx MODEL' or delete the \"{key}\" entry from the JSON"
    if not isinstance(entry, dict) or not entry.get("file") or not entry.get("sha256"):
        raise ModelError(f"the \"{key}\" entry of the model bundle{where} needs \"file\" and \"sha256\"; {fix}")
    base = source.parent if source else Path.cwd()
    path = (base / str(entry["file"])).resolve()
    try:
        return OnnxExport(
            file=path,
            sha256=str(entry["sha256"]),
            opset=int(entry.get("opset", 17)),
            layout=str(entry.get("layout", "NHWC")),
            deepness=bool(entry.get("deepness", False)),
            weights_sha256=None if entry.get("weights_sha256") is None else str(entry["weights_sha256"]),
            output=int(entry.get("output", 0)),
            output_kind=str(entry.get("output_kind", "softmax")),
            class_axis=bool(entry.get("class_axis", True)),
            threshold=float(entry.get("threshold", 0.5)),
            context_margin=int(entry.get("context_margin", 0)),
            fixed_batch=None if entry.get("fixed_batch") is None else int(entry["fixed_batch"]),
        )
    except (TypeError, ValueError) as exc:
        raise ModelError(f"the \"{key}\" entry of the model bundle{where} is malformed ({exc}); {fix}") from exc


def load_bundle(path: Path | str) -> ModelBundle:
    """Load a bundle from its JSON file or from a folder holding exactly one bundle JSON."""
    json_path, data = read_bundle_json(path)
    return bundle_from_dict(data, source=json_path)


def untrained_bundle(spec: str, seed: int = 0, tile_size: int = 256) -> ModelBundle:
    """Build the bundle for ``untrained:ARCH:BACKBONE`` (random weights, LandCover.ai classes)."""
    info = untrained_model(spec, tile_size)
    return ModelBundle(
        **{f.name: getattr(info, f.name) for f in fields(ModelInfo)},
        weights=None,
        seed=seed,
        provenance={"data": "none: random weights, for benchmarks and installation checks only"},
    )


def model_search_dirs() -> list[tuple[str, Path]]:
    """Where bundles are looked up by name, in order (see :func:`backend.contract.model_dirs`)."""
    return model_dirs()


def list_models() -> list[ListedModel]:
    """Every bundle in the model folders, fully loaded; ``info`` is its :class:`ModelBundle`, or ``error`` says why not.

    Which files count and how they are keyed is the contract's rule; loading also checks the weights.
    """
    found = []
    for listed in list_bundle_files():
        if listed.info is not None:
            try:
                listed = replace(listed, info=load_bundle(listed.path))
            except LandcoverError as exc:
                listed = replace(listed, info=None, error=str(exc))
        found.append(listed)
    return found


def resolve_model(name_or_path: str | None, seed: int = 0) -> ModelBundle:
    """Find a model by path, by key/name in the model folders, ``untrained:ARCH:BACKBONE``, or the default.

    Which bundle a name means is decided by :func:`backend.contract.resolve_model`, as in the plugin.
    """
    info = resolve_model_info(name_or_path)
    if info.source is None:
        return untrained_bundle(info.spec, seed=seed, tile_size=info.tile_size)
    return load_bundle(info.source)


def with_weights(bundle: ModelBundle, weights: Path, **changes: Any) -> ModelBundle:
    """A copy of ``bundle`` pointing at ``weights`` (used by the training export).

    Any ONNX export is dropped unless given: it was converted from the old weights.
    """
    changes.setdefault("onnx", None)
    changes.setdefault("onnx_int8", None)
    return replace(bundle, weights=Path(weights), **changes)


# ------------------------------------------------------------------------------ damaged files

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def damage_report(path: Path) -> str | None:
    """Why the weights (HDF5) or ONNX file at ``path`` is truncated or corrupt, or None if it looks whole.

    Reads only the file's structure (no h5py, no onnx): the HDF5 superblock records the file's
    end-of-file address; an ONNX file is a protobuf message whose fields must end exactly at the
    end of the file. A whole file with other contents (a retrained model) gives None.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
            if size == 0:
                return "0 bytes: the file is empty"
            if path.suffix.lower() == ".onnx":
                return _protobuf_damage(f, size)
            if head[:8] == _HDF5_SIGNATURE or path.suffix.lower() in (".h5", ".hdf5"):
                return _hdf5_damage(head, size)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    return None


def _hdf5_damage(head: bytes, size: int) -> str | None:
    if head[:8] != _HDF5_SIGNATURE:
        return f"{size:,} bytes without the HDF5 signature: not a weights file"
    version = head[8]
    if version in (0, 1):
        offsets = head[13]
        pos = 24 + (4 if version == 1 else 0) + 2 * offsets  # base address, free-space address
    elif version in (2, 3):
        offsets = head[9]
        pos = 12 + 2 * offsets  # base address, superblock extension address
    else:
        return None
    if offsets not in (2, 4, 8) or len(head) < pos + offsets:
        return f"{size:,} bytes: its HDF5 header is incomplete"
    eof = int.from_bytes(head[pos : pos + offsets], "little")
    if eof > size:
        return f"{size:,} bytes of the {eof:,} its header records"
    return None


def _protobuf_damage(f, size: int) -> str | None:
    """Walk the top-level protobuf fields of an ONNX ModelProto: each must fit in the file."""
    f.seek(0)
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            b = f.read(1)
            if not b:
                raise EOFError
            pos += 1
            value |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError

    try:
        while pos < size:
            key = varint()
            wire = key & 7
            if key >> 3 == 0:
                raise ValueError
            if wire == 0:
                varint()
                continue
            length = {1: 8, 5: 4}.get(wire)
            if wire == 2:
                length = varint()
            if length is None:
                raise ValueError
            if pos + length > size:
                return f"{size:,} bytes, but its last part needs {pos + length:,}"
            pos += length
            f.seek(pos)
    except EOFError:
        return f"{size:,} bytes, ending inside a field"
    except ValueError:
        return f"{size:,} bytes that are not an ONNX model"
    return None

"""Model bundles: a JSON metadata file beside a weights file, validated on load.

A bundle is what the CLI, the plugin and the training export agree on. The JSON carries the
format version, architecture, backbone, tile size, input preprocessing, the classes (id, name,
colour), the ground sampling distance the model was trained for, and provenance. See
``DESIGN.md`` and the README for an example.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.errors import LandcoverError

FORMAT_VERSION = 1
ARCHITECTURES = ("Unet", "FPN", "Linknet")
BUNDLED_DIR = Path(__file__).resolve().parent / "bundles"
DEFAULT_BUNDLE_NAME = "default"
UNTRAINED_PREFIX = "untrained:"

LANDCOVER_CLASSES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (0, "background", (222, 214, 182)),
    (1, "building", (220, 40, 40)),
    (2, "woodland", (38, 115, 0)),
    (3, "water", (0, 150, 255)),
    (4, "road", (120, 120, 120)),
)


@dataclass(frozen=True)
class ClassInfo:
    """One output class of a model."""

    id: int
    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not 0 <= self.id < 255:
            raise LandcoverError(f"class id {self.id} is outside 0..254 (255 is reserved for nodata)")
        if not self.name:
            raise LandcoverError(f"class {self.id} has no name; give every class a name in the bundle JSON")
        if len(self.color) != 3 or any(not 0 <= int(c) <= 255 for c in self.color):
            raise LandcoverError(f"class {self.name!r} colour {list(self.color)} is not three values 0..255")
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))


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
            raise LandcoverError(f"preprocessing scale must be > 0, got {self.scale}")
        if len(self.mean) != len(self.std):
            raise LandcoverError("preprocessing mean and std must have one value per input band")
        if any(s <= 0 for s in self.std):
            raise LandcoverError(f"preprocessing std values must be > 0, got {list(self.std)}")

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Normalise a ``(..., bands)`` array of 0..255 pixel values to float32 model input."""
        x = pixels.astype(np.float32) / np.float32(self.scale)
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if np.any(mean != 0) or np.any(std != 1):
            x = (x - mean) / std
        return x


ONNX_LAYOUTS = ("NHWC", "NCHW")


@dataclass(frozen=True)
class OnnxExport:
    """The bundle's ONNX export (see :mod:`backend.onnx_export`): the file beside the JSON and its checksum.

    ``layout`` is the ONNX tensors' layout: NHWC like Keras, or NCHW for Deepness. ``weights_sha256``
    is the checksum of the weights file it was converted from, so a retrained bundle with a stale
    ONNX file is caught instead of silently running the old network.
    """

    file: Path
    sha256: str
    opset: int = 17
    layout: str = "NHWC"
    deepness: bool = False
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in ONNX_LAYOUTS:
            raise LandcoverError(f"ONNX layout {self.layout!r} is not one of {', '.join(ONNX_LAYOUTS)}")
        for value in (self.sha256, self.weights_sha256):
            if value is not None and (len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value)):
                raise LandcoverError(f"ONNX checksum {value!r} is not a 64-digit lowercase hex SHA-256")

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file.name,
            "sha256": self.sha256,
            "opset": self.opset,
            "layout": self.layout,
            "deepness": self.deepness,
            "weights_sha256": self.weights_sha256,
        }


@dataclass(frozen=True)
class ModelBundle:
    """Validated model metadata plus where its weights live.

    ``weights`` is None only for untrained (random-initialised) models, which use ``seed``.
    """

    name: str
    architecture: str
    backbone: str
    tile_size: int = 256
    input_bands: int = 3
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    gsd_m: float | None = 0.25
    classes: tuple[ClassInfo, ...] = tuple(ClassInfo(*c) for c in LANDCOVER_CLASSES)
    weights: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    default_overlap: int | None = None
    default_batch_size: int = 8
    seed: int = 0
    source: Path | None = None
    onnx: OnnxExport | None = None

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if self.architecture not in ARCHITECTURES:
            raise LandcoverError(
                f"unknown architecture {self.architecture!r}{where}; use one of {', '.join(ARCHITECTURES)}"
            )
        if not self.backbone:
            raise LandcoverError(f"bundle{where} names no backbone; set e.g. \"backbone\": \"resnet18\"")
        if self.tile_size < 32 or self.tile_size % 32:
            raise LandcoverError(f"tile_size {self.tile_size}{where} must be a multiple of 32 (e.g. 256)")
        if self.input_bands < 1:
            raise LandcoverError(f"input_bands must be >= 1{where}")
        if len(self.preprocessing.mean) != self.input_bands:
            raise LandcoverError(
                f"preprocessing has {len(self.preprocessing.mean)} mean/std values but the model takes "
                f"{self.input_bands} bands{where}; give one value per band"
            )
        if self.gsd_m is not None and not (self.gsd_m > 0 and math.isfinite(self.gsd_m)):
            raise LandcoverError(f"gsd_m must be a positive number of metres per pixel{where}")
        if len(self.classes) < 2:
            raise LandcoverError(f"a model needs at least 2 classes{where}")
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise LandcoverError(f"class ids{where} must be 0..{len(ids) - 1} in order, got {ids}")
        if self.default_overlap is not None and not 0 <= self.default_overlap <= self.tile_size // 2:
            raise LandcoverError(f"default_overlap must be 0..{self.tile_size // 2}{where}")
        if self.default_batch_size < 1:
            raise LandcoverError(f"default_batch_size must be >= 1{where}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def overlap(self) -> int:
        """Default tile overlap in pixels: the bundle's choice, else an eighth of a tile."""
        return self.default_overlap if self.default_overlap is not None else self.tile_size // 8

    @property
    def is_untrained(self) -> bool:
        return self.weights is None

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
        d["preprocessing"]["mean"] = list(self.preprocessing.mean)
        d["preprocessing"]["std"] = list(self.preprocessing.std)
        return d

    def save(self, json_path: Path) -> Path:
        """Write the metadata JSON (atomically); the weights file must already sit beside it."""
        json_path = Path(json_path)
        tmp = json_path.with_name(json_path.name + ".part")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, json_path)
        return json_path

    def summary(self) -> str:
        """A few human-readable lines about the model."""
        gsd = f"{self.gsd_m:g} m/px" if self.gsd_m else "unknown"
        lines = [
            f"name:         {self.name}",
            f"model:        {self.architecture} / {self.backbone}",
            f"tile size:    {self.tile_size} px (default overlap {self.overlap} px)",
            f"input:        {self.input_bands} bands, pixel / {self.preprocessing.scale:g}",
            f"resolution:   {gsd}",
            f"classes:      {', '.join(f'{c.id} {c.name}' for c in self.classes)}",
            f"weights:      {self.weights if self.weights else f'random (untrained, seed {self.seed})'}",
        ]
        if self.onnx is not None:
            extra = ", Deepness metadata" if self.onnx.deepness else ""
            lines.append(f"onnx:         {self.onnx.file.name} ({self.onnx.layout}, opset {self.onnx.opset}{extra})")
        metrics = self.provenance.get("metrics") or {}
        if "miou" in metrics:
            lines.append(f"mIoU:         {metrics['miou']:.3f}")
        if self.provenance.get("data"):
            lines.append(f"trained on:   {self.provenance['data']}")
        return "\n".join(lines)


def bundle_from_dict(data: dict[str, Any], source: Path | None = None) -> ModelBundle:
    """Validate a parsed bundle JSON and build a :class:`ModelBundle`."""
    where = f" in {source}" if source else ""
    if not isinstance(data, dict):
        raise LandcoverError(f"model bundle{where} is not a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT_VERSION:
        raise LandcoverError(
            f"model bundle format {fmt!r}{where} is not supported (this version reads format {FORMAT_VERSION}); "
            "re-export the model with this version's training export"
        )
    missing = [k for k in ("name", "architecture", "backbone", "classes") if k not in data]
    if missing:
        raise LandcoverError(f"model bundle{where} lacks {', '.join(missing)}; add them to the JSON")
    try:
        classes = tuple(ClassInfo(int(c["id"]), str(c["name"]), tuple(c["color"])) for c in data["classes"])
        pre = Preprocessing(**data.get("preprocessing", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise LandcoverError(f"model bundle{where} has malformed classes or preprocessing ({exc})") from exc
    weights = data.get("weights")
    weights_path: Path | None = None
    if weights:
        base = source.parent if source else Path.cwd()
        weights_path = (base / weights).resolve()
        if not weights_path.is_file():
            raise LandcoverError(
                f"weights file {weights_path} named by the model bundle{where} is missing; "
                "copy it beside the JSON or fix the \"weights\" entry"
            )
    else:
        raise LandcoverError(f"model bundle{where} names no weights file; set \"weights\" to the .weights.h5 beside it")
    try:
        return ModelBundle(
            name=str(data["name"]),
            architecture=str(data["architecture"]),
            backbone=str(data["backbone"]),
            tile_size=int(data.get("tile_size", 256)),
            input_bands=int(data.get("input_bands", 3)),
            preprocessing=pre,
            gsd_m=None if data.get("gsd_m") is None else float(data["gsd_m"]),
            classes=classes,
            weights=weights_path,
            provenance=dict(data.get("provenance") or {}),
            default_overlap=None if data.get("default_overlap") is None else int(data["default_overlap"]),
            default_batch_size=int(data.get("default_batch_size", 8)),
            source=source,
            onnx=_onnx_from_dict(data.get("onnx"), source, where),
        )
    except (TypeError, ValueError) as exc:
        raise LandcoverError(f"model bundle{where} has a value of the wrong type ({exc})") from exc


def _onnx_from_dict(entry: Any, source: Path | None, where: str) -> OnnxExport | None:
    """Parse the optional ``onnx`` entry.

    The file is not required here: a bundle copied without it still runs on TensorFlow, and
    ``--runtime onnx`` explains what is missing. Its checksum is checked when it is run.
    """
    if entry is None:
        return None
    fix = "re-export it with 'python -m backend export-onnx MODEL' or delete the \"onnx\" entry from the JSON"
    if not isinstance(entry, dict) or not entry.get("file") or not entry.get("sha256"):
        raise LandcoverError(f"the \"onnx\" entry of the model bundle{where} needs \"file\" and \"sha256\"; {fix}")
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
        )
    except (TypeError, ValueError) as exc:
        raise LandcoverError(f"the \"onnx\" entry of the model bundle{where} is malformed ({exc}); {fix}") from exc


def load_bundle(path: Path | str) -> ModelBundle:
    """Load a bundle from its JSON file or from a folder holding exactly one bundle JSON."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        if len(candidates) != 1:
            raise LandcoverError(
                f"folder {path} holds {len(candidates)} JSON files; point --model at the bundle's .json file"
            )
        path = candidates[0]
    if not path.is_file():
        raise LandcoverError(f"model bundle {path} does not exist; list models with 'python -m backend models'")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LandcoverError(f"model bundle {path} is not valid JSON ({exc}); re-export or fix the file") from exc
    return bundle_from_dict(data, source=path.resolve())


def untrained_bundle(spec: str, seed: int = 0, tile_size: int = 256) -> ModelBundle:
    """Build the bundle for ``untrained:ARCH:BACKBONE`` (random weights, LandCover.ai classes)."""
    parts = spec[len(UNTRAINED_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise LandcoverError(f"{spec!r} is not of the form untrained:ARCH:BACKBONE, e.g. untrained:Unet:resnet18")
    arch = _canonical_architecture(parts[0])
    return ModelBundle(
        name=f"untrained-{arch.lower()}-{parts[1]}",
        architecture=arch,
        backbone=parts[1],
        tile_size=tile_size,
        gsd_m=0.25,
        weights=None,
        seed=seed,
        provenance={"data": "none: random weights, for benchmarks and installation checks only"},
    )


def _canonical_architecture(name: str) -> str:
    for arch in ARCHITECTURES:
        if arch.lower() == name.lower():
            return arch
    raise LandcoverError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}")


def user_models_dir() -> Path:
    """Folder for the user's own bundles: ``$LANDCOVER_MODELS_DIR`` or ``~/.local/share/landcover/models``."""
    env = os.environ.get("LANDCOVER_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "landcover" / "models"


def model_search_dirs() -> list[tuple[str, Path]]:
    """Where bundles are looked up by name, in order."""
    return [("bundled", BUNDLED_DIR), ("user", user_models_dir())]


@dataclass(frozen=True)
class ListedModel:
    """A bundle found in a model folder (or the reason it could not be read)."""

    key: str
    origin: str
    path: Path
    bundle: ModelBundle | None
    error: str | None = None


def list_models(extra_dirs: Iterable[Path] = ()) -> list[ListedModel]:
    """Every bundle JSON one folder below each model folder (``<dir>/<key>/*.json``) or directly in it."""
    found: list[ListedModel] = []
    dirs = model_search_dirs() + [("extra", Path(d)) for d in extra_dirs]
    for origin, root in dirs:
        if not root.is_dir():
            continue
        for json_path in sorted([*root.glob("*.json"), *root.glob("*/*.json")]):
            key = json_path.parent.name if json_path.parent != root else json_path.stem
            try:
                found.append(ListedModel(key, origin, json_path, load_bundle(json_path)))
            except LandcoverError as exc:
                found.append(ListedModel(key, origin, json_path, None, str(exc)))
    return found


def resolve_model(name_or_path: str | None, seed: int = 0) -> ModelBundle:
    """Find a model by path, by key/name in the model folders, ``untrained:ARCH:BACKBONE``, or the default."""
    if name_or_path is None or name_or_path == "":
        name_or_path = DEFAULT_BUNDLE_NAME
    if name_or_path.startswith(UNTRAINED_PREFIX):
        return untrained_bundle(name_or_path, seed=seed)
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".json" or candidate.exists() or os.sep in name_or_path:
        return load_bundle(candidate)
    for listed in list_models():
        if name_or_path in (listed.key, listed.bundle.name if listed.bundle else None):
            if listed.bundle is None:
                raise LandcoverError(str(listed.error))
            return listed.bundle
    if name_or_path == DEFAULT_BUNDLE_NAME:
        raise LandcoverError(
            "no default model bundle is installed; train one with 'make train' or pass --model PATH "
            "(or --model untrained:Unet:resnet18 to check the installation)"
        )
    raise LandcoverError(
        f"no model named {name_or_path!r}; list models with 'python -m backend models' or pass a bundle .json path"
    )


def with_weights(bundle: ModelBundle, weights: Path, **changes: Any) -> ModelBundle:
    """A copy of ``bundle`` pointing at ``weights`` (used by the training export).

    Any ONNX export is dropped unless given: it was converted from the old weights.
    """
    changes.setdefault("onnx", None)
    return replace(bundle, weights=Path(weights), **changes)

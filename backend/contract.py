"""The plugin-backend contract: every rule both sides of the worker boundary rely on, defined once.

The QGIS plugin never imports the backend's heavy parts (TensorFlow crashes QGIS), so the two
sides talk through a command line, JSON progress lines, bundle files and file names beside the
output. This module holds all of it: the class table, errors and their kinds, bundle-JSON reading
and model-folder resolution, output and sidecar names, the worker environment, the ``segment``
arguments, the progress protocol, area tables and the pixel-size tolerance.

Standard library only, and no import of other ``backend`` modules: the backend imports it as
``backend.contract``; the plugin loads this very file as ``landcover_plugin.contract`` (see that
module), inside QGIS, from the source tree and from the packaged zip alike.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Union

# ---------------------------------------------------------------------------------------- errors

ERROR_KINDS = ("input", "model", "dependency", "output", "cancelled", "internal")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class LandcoverError(Exception):
    """Root of every Landcover error; ``kind`` says what the caller can do about it.

    The message names the problem and the fix in one line; ``details`` carries logs (for example
    the worker's stderr) for a log panel, not for the message itself.
    """

    kind: ClassVar[str] = "internal"

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 2 for problems the user fixes, 130 when cancelled, 1 for bugs."""
        return {"internal": EXIT_FAILED, "cancelled": EXIT_INTERRUPTED}.get(self.kind, EXIT_USAGE)


class InputError(LandcoverError):
    """The input raster, an option or a configuration value is wrong: fix the input."""

    kind = "input"


class ModelError(LandcoverError):
    """The model bundle is missing, unreadable or does not fit: choose or repair the model."""

    kind = "model"


class DependencyError(LandcoverError):
    """A package the worker needs is not installed: install it (or set up the runtime)."""

    kind = "dependency"


class OutputError(LandcoverError):
    """The output cannot be written (folder, permission, full disk): choose another place or free space."""

    kind = "output"


class CancelledError(LandcoverError):
    """The user cancelled; nothing that looks finished was left behind."""

    kind = "cancelled"


class InternalError(LandcoverError):
    """A bug: report it with the details."""

    kind = "internal"


ERROR_CLASSES: dict[str, type[LandcoverError]] = {
    cls.kind: cls for cls in (InputError, ModelError, DependencyError, OutputError, CancelledError, InternalError)
}


def error_for_kind(kind: str, message: str, details: str = "") -> LandcoverError:
    """The error of ``kind`` (unknown kinds are internal) carrying ``message``."""
    return ERROR_CLASSES.get(kind, InternalError)(message, details)


# ----------------------------------------------------------------------------------- classes

NODATA = 255  # class raster value outside the data; class ids are 0..254


@dataclass(frozen=True)
class ClassInfo:
    """One output class of a model: id, name and RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not 0 <= self.id < NODATA:
            raise ModelError(f"class id {self.id} is outside 0..254 (255 is reserved for nodata)")
        if not self.name:
            raise ModelError(f"class {self.id} has no name; give every class a name in the bundle JSON")
        if len(self.color) != 3 or any(not 0 <= int(c) <= 255 for c in self.color):
            raise ModelError(f"class {self.name!r} colour {list(self.color)} is not three values 0..255")
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": list(self.color)}


#: LandCover.ai v1: what untrained models predict and what a raster without class metadata is read as.
LANDCOVER_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", (222, 214, 182)),
    ClassInfo(1, "building", (220, 40, 40)),
    ClassInfo(2, "woodland", (38, 115, 0)),
    ClassInfo(3, "water", (0, 150, 255)),
    ClassInfo(4, "road", (120, 120, 120)),
)

#: GeoTIFF metadata tags of a class raster (written by the backend, read by the plugin and the preview).
TAG_MODEL = "LANDCOVER_MODEL"
TAG_CLASSES = "LANDCOVER_CLASSES"


def classes_from_dicts(items: Any, where: str = "") -> tuple[ClassInfo, ...]:
    """Classes from their JSON form ``[{"id": 0, "name": ..., "color": [r, g, b]}, ...]``."""
    try:
        return tuple(ClassInfo(int(c["id"]), str(c["name"]), tuple(c["color"])) for c in items)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"the classes{where} are malformed ({exc}); each needs id, name and color") from exc


def classes_to_json(classes: Sequence[ClassInfo]) -> str:
    """The value of the :data:`TAG_CLASSES` tag."""
    return json.dumps([c.to_dict() for c in classes])


# ------------------------------------------------------------------------------- model bundles

FORMAT_VERSION = 1
ARCHITECTURES = ("Unet", "FPN", "Linknet")
#: The architecture of a model that exists only as an imported ONNX file (e.g. one exported for Deepness):
#: there is no Keras network to build, so it runs only on ONNX Runtime and its tile size is whatever it takes.
ONNX_ARCHITECTURE = "onnx"
UNTRAINED_PREFIX = "untrained:"
DEFAULT_MODEL = "default"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundles"
ENV_MODELS_DIR = "LANDCOVER_MODELS_DIR"


@dataclass(frozen=True)
class ModelInfo:
    """A model as described by its bundle JSON: everything known without loading the network.

    ``source`` is the bundle JSON (None for untrained models). The backend's ``ModelBundle`` extends
    this with preprocessing, weights and the ONNX export.
    """

    name: str
    architecture: str
    backbone: str
    tile_size: int = 256
    input_bands: int = 3
    gsd_m: float | None = 0.25
    classes: tuple[ClassInfo, ...] = LANDCOVER_CLASSES
    default_overlap: int | None = None
    default_batch_size: int = 8
    source: Path | None = None

    def __post_init__(self) -> None:
        where = self._where
        if self.architecture not in ARCHITECTURES and self.architecture != ONNX_ARCHITECTURE:
            raise ModelError(
                f"unknown architecture {self.architecture!r}{where}; use one of {', '.join(ARCHITECTURES)} "
                f"(or {ONNX_ARCHITECTURE!r} for an imported ONNX model)"
            )
        if not self.backbone:
            raise ModelError(f"bundle{where} names no backbone; set e.g. \"backbone\": \"resnet18\"")
        if self.architecture == ONNX_ARCHITECTURE:
            # Imported networks were trained on their own tile size; only the encoders built here need 32 | tile.
            if self.tile_size < 8:
                raise ModelError(f"tile_size {self.tile_size}{where} must be at least 8 pixels")
        elif self.tile_size < 32 or self.tile_size % 32:
            raise ModelError(f"tile_size {self.tile_size}{where} must be a multiple of 32 (e.g. 256)")
        if self.input_bands < 1:
            raise ModelError(f"input_bands must be >= 1{where}")
        if self.gsd_m is not None and not (self.gsd_m > 0 and math.isfinite(self.gsd_m)):
            raise ModelError(f"gsd_m must be a positive number of metres per pixel{where}")
        if len(self.classes) < 2:
            raise ModelError(f"a model needs at least 2 classes{where}")
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ModelError(f"class ids{where} must be 0..{len(ids) - 1} in order, got {ids}")
        if self.default_overlap is not None and not 0 <= self.default_overlap <= self.tile_size // 2:
            raise ModelError(f"default_overlap must be 0..{self.tile_size // 2}{where}")
        if self.default_batch_size < 1:
            raise ModelError(f"default_batch_size must be >= 1{where}")

    @property
    def _where(self) -> str:
        return f" in {self.source}" if self.source else ""

    @property
    def is_untrained(self) -> bool:
        return self.source is None

    @property
    def spec(self) -> str:
        """What ``segment --model`` takes for this model: the bundle JSON path or ``untrained:ARCH:BACKBONE``."""
        return str(self.source) if self.source else f"{UNTRAINED_PREFIX}{self.architecture}:{self.backbone}"

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

    def describe(self) -> str:
        """Two lines for a person: resolution, bands, tile; classes."""
        gsd = f"{self.gsd_m:g} m/pixel" if self.gsd_m else "unknown resolution"
        return (f"{gsd}, {self.input_bands} bands, tile {self.tile_size} px\n"
                f"classes: {', '.join(self.class_names)}")


def model_fields_from_dict(data: Mapping[str, Any], source: Path | None = None) -> dict[str, Any]:
    """The :class:`ModelInfo` fields of a parsed bundle JSON (format, required keys and types checked)."""
    where = f" in {source}" if source else ""
    if not isinstance(data, Mapping):
        raise ModelError(f"model bundle{where} is not a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT_VERSION:
        raise ModelError(
            f"model bundle format {fmt!r}{where} is not supported (this version reads format {FORMAT_VERSION}); "
            "re-export the model with this version's training export"
        )
    missing = [k for k in ("name", "architecture", "backbone", "classes") if k not in data]
    if missing:
        raise ModelError(f"model bundle{where} lacks {', '.join(missing)}; add them to the JSON")
    try:
        return {
            "name": str(data["name"]),
            "architecture": str(data["architecture"]),
            "backbone": str(data["backbone"]),
            "tile_size": int(data.get("tile_size", 256)),
            "input_bands": int(data.get("input_bands", 3)),
            "gsd_m": None if data.get("gsd_m") is None else float(data["gsd_m"]),
            "classes": classes_from_dicts(data["classes"], where),
            "default_overlap": None if data.get("default_overlap") is None else int(data["default_overlap"]),
            "default_batch_size": int(data.get("default_batch_size", 8)),
            "source": source,
        }
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model bundle{where} has a value of the wrong type ({exc})") from exc


def bundle_json_path(path: Path | str) -> Path:
    """The bundle JSON named by ``path``: the file itself, or the one JSON file in a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        if len(candidates) != 1:
            raise ModelError(
                f"folder {path} holds {len(candidates)} JSON files; point --model at the bundle's .json file"
            )
        path = candidates[0]
    if not path.is_file():
        raise ModelError(f"model bundle {path} does not exist; list models with 'python -m backend models'")
    return path.resolve()


def read_bundle_json(path: Path | str) -> tuple[Path, dict[str, Any]]:
    """``(json_path, parsed JSON)`` of the bundle at ``path`` (file or folder)."""
    json_path = bundle_json_path(path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model bundle {json_path} is not valid JSON ({exc}); re-export or fix the file") from exc
    return json_path, data


def load_model_info(path: Path | str) -> ModelInfo:
    """The :class:`ModelInfo` of the bundle at ``path`` (a .json file or a folder holding one)."""
    json_path, data = read_bundle_json(path)
    return ModelInfo(**model_fields_from_dict(data, json_path))


def canonical_architecture(name: str) -> str:
    """``unet`` → ``Unet``: architecture names are matched without regard to case."""
    for arch in ARCHITECTURES:
        if arch.lower() == name.lower():
            return arch
    raise ModelError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}")


def untrained_model(spec: str, tile_size: int = 256) -> ModelInfo:
    """``untrained:ARCH:BACKBONE``: random weights, LandCover.ai classes (installation checks, benchmarks)."""
    parts = spec[len(UNTRAINED_PREFIX):].split(":")
    if not spec.startswith(UNTRAINED_PREFIX) or len(parts) != 2 or not all(parts):
        raise ModelError(f"{spec!r} is not of the form untrained:ARCH:BACKBONE, e.g. untrained:Unet:resnet18")
    arch = canonical_architecture(parts[0])
    return ModelInfo(name=f"untrained-{arch.lower()}-{parts[1]}", architecture=arch, backbone=parts[1],
                     tile_size=tile_size, gsd_m=0.25)


def user_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """The user's bundles: ``$LANDCOVER_MODELS_DIR``, else ``$XDG_DATA_HOME/landcover/models``."""
    env = os.environ if env is None else env
    if env.get(ENV_MODELS_DIR):
        return Path(env[ENV_MODELS_DIR]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "landcover" / "models"


def model_dirs(env: Mapping[str, str] | None = None) -> list[tuple[str, Path]]:
    """Where bundles are looked up by name, in order: ``(origin, folder)``."""
    return [("bundled", BUNDLED_DIR), ("user", user_models_dir(env))]


@dataclass(frozen=True)
class ListedModel:
    """A bundle JSON found in a model folder, with its model or the reason it cannot be read."""

    key: str  # the bundle's folder name, or the JSON's stem for a JSON directly in the model folder
    origin: str
    path: Path
    info: ModelInfo | None
    error: str | None = None

    def matches(self, spec: str) -> bool:
        """Whether ``spec`` names this bundle: its key, or the model name inside its JSON."""
        return spec == self.key or (self.info is not None and spec == self.info.name)


def list_models(dirs: Iterable[tuple[str, Path]] | None = None) -> list[ListedModel]:
    """Every bundle JSON in each model folder (``<dir>/<key>/*.json`` or ``<dir>/*.json``), broken ones too."""
    found: list[ListedModel] = []
    for origin, root in model_dirs() if dirs is None else dirs:
        root = Path(root)
        if not root.is_dir():
            continue
        for json_path in sorted([*root.glob("*.json"), *root.glob("*/*.json")]):
            key = json_path.parent.name if json_path.parent != root else json_path.stem
            try:
                found.append(ListedModel(key, origin, json_path.resolve(), load_model_info(json_path)))
            except LandcoverError as exc:
                found.append(ListedModel(key, origin, json_path.resolve(), None, str(exc)))
    return found


def is_model_path(spec: str) -> bool:
    """Whether ``--model`` names a file or folder rather than a model key or name."""
    return spec.endswith(".json") or os.sep in spec or "/" in spec or Path(spec).expanduser().exists()


def resolve_model(spec: str | None, dirs: Iterable[tuple[str, Path]] | None = None) -> ModelInfo:
    """The model ``--model`` names: ``untrained:...``, a bundle path, a key or name in the model folders.

    Empty means the default. A name matching a broken bundle raises that bundle's error.
    """
    spec = (spec or "").strip() or DEFAULT_MODEL
    if spec.startswith(UNTRAINED_PREFIX):
        return untrained_model(spec)
    if is_model_path(spec):
        return load_model_info(spec)
    dirs = model_dirs() if dirs is None else list(dirs)
    for listed in list_models(dirs):
        if listed.matches(spec):
            if listed.info is None:
                raise ModelError(str(listed.error))
            return listed.info
    if spec == DEFAULT_MODEL:
        raise ModelError(
            "no default model bundle is installed; train one with 'make train' or choose a bundle .json "
            "(or use untrained:Unet:resnet18 to check the installation)"
        )
    where = " or ".join(str(d) for _, d in dirs)
    raise ModelError(f"no model named {spec!r} in {where}; list models with 'python -m backend models' "
                     "or pass a bundle .json path")


# ---------------------------------------------------------------------------- output files

RASTER_SUFFIXES = (".tif", ".tiff")


def output_stem(output: Path | str) -> Path:
    """``landcover.2024.tif`` → ``landcover.2024``: only a GeoTIFF suffix is taken off, never other dots."""
    output = Path(output)
    return output.with_suffix("") if output.suffix.lower() in RASTER_SUFFIXES else output


@dataclass(frozen=True)
class OutputFiles:
    """The class raster and the files the backend writes beside it."""

    raster: Path

    @property
    def qml(self) -> Path:
        """QGIS style, named so QGIS applies it on load: ``<stem>.qml``."""
        return Path(f"{output_stem(self.raster)}.qml")

    @property
    def areas_json(self) -> Path:
        return Path(f"{output_stem(self.raster)}.areas.json")

    @property
    def areas_csv(self) -> Path:
        return Path(f"{output_stem(self.raster)}.areas.csv")

    @property
    def aux(self) -> Path:
        """GDAL PAM sidecar (category names)."""
        return Path(f"{self.raster}.aux.xml")

    def sidecars(self) -> dict[str, Path]:
        return {"qml": self.qml, "areas_json": self.areas_json, "areas_csv": self.areas_csv, "aux": self.aux}

    def all(self) -> list[Path]:
        return [self.raster, *self.sidecars().values()]


def output_files(output: Path | str) -> OutputFiles:
    return OutputFiles(Path(output))


TEMP_MARK = ".part-"


def temp_path(final: Path, pid: int | None = None) -> Path:
    """Hidden in-progress name beside ``final`` (same folder, so the rename into place is atomic)."""
    return final.with_name(f".{final.name}{TEMP_MARK}{os.getpid() if pid is None else pid}")


def is_temp_of(path: Path, final: Path) -> bool:
    """Whether ``path`` is an in-progress name of ``final`` (any process)."""
    return path.parent == final.parent and path.name.startswith(f".{final.name}{TEMP_MARK}")


@contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """The in-progress name (:func:`temp_path`) to write the file ``final`` under; it becomes ``final`` when the
    block ends.

    The file is flushed to disk before the rename, so that even a power cut leaves the old file or the new one, never
    half of one. If the block raises, the in-progress file is removed, ``final`` keeps what it held, and the block's
    error is what the caller sees. The writer must write exactly the path given (h5py, rasterio, PIL, ONNX do; a
    library that appends its own suffix does not), and must be told the format where it would guess it from the
    suffix. Files only, not folders.
    """
    final = Path(final)
    tmp = temp_path(final)
    try:
        yield tmp
        with open(tmp, "rb") as written, contextlib.suppress(OSError):  # some systems cannot fsync a read handle
            os.fsync(written.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(final: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8, line ends as given on every system) to ``final`` through :func:`atomic_path`."""
    with atomic_path(final) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return Path(final)


# ------------------------------------------------------------------------------ class areas

AREA_FIELDS = ("id", "name", "pixels", "area_m2", "percent")


def areas_table(classes: Sequence[ClassInfo], counts: Sequence[int], pixel_area_m2: float | None,
                nodata_pixels: int, areas_m2: Sequence[float] | None = None) -> dict[str, Any]:
    """The ``areas`` object of the done event and the ``.areas.json`` file.

    ``areas_m2``, when given, are the classes' ground areas summed row by row (geographic CRSs and projections
    whose scale varies over the raster); otherwise area = pixels × ``pixel_area_m2`` (the raster's centre).
    """
    valid = int(sum(counts))

    def area(i: int, n: int) -> float | None:
        if areas_m2 is not None:
            return round(float(areas_m2[i]), 3)
        return None if pixel_area_m2 is None else round(int(n) * pixel_area_m2, 3)

    rows = [
        {
            "id": c.id,
            "name": c.name,
            "pixels": int(n),
            "area_m2": area(i, n),
            "percent": round(100.0 * int(n) / valid, 4) if valid else 0.0,
        }
        for i, (c, n) in enumerate(zip(classes, counts, strict=False))
    ]
    return {"classes": rows, "pixel_area_m2": pixel_area_m2, "valid_pixels": valid, "nodata_pixels": int(nodata_pixels)}


def areas_csv(areas: Mapping[str, Any]) -> str:
    """The ``.areas.csv`` text of an ``areas`` object (empty cells for unknown areas)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(AREA_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in areas["classes"]:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in AREA_FIELDS})
    return buf.getvalue()


# ------------------------------------------------------------------------------- pixel size

#: Pixel sizes within this factor of the model's either way count as matching: no warning, no resampling.
#: LandCover.ai itself mixes 0.25 m and 0.5 m orthophotos, so a factor of 2 is still in the training range.
GSD_TOLERANCE = 2.0
METRES_PER_DEGREE_LAT = 110_574.0
METRES_PER_DEGREE_LON_EQUATOR = 111_320.0


def degrees_to_metres(px_deg: float, py_deg: float, latitude: float) -> tuple[float, float]:
    """A geographic pixel's width and height in metres at ``latitude``."""
    lat = max(-89.9, min(89.9, latitude))
    return px_deg * METRES_PER_DEGREE_LON_EQUATOR * math.cos(math.radians(lat)), py_deg * METRES_PER_DEGREE_LAT


#: A projected CRS whose scale at the raster differs from 1 by more than this (Web Mercator away from the
#: equator, a UTM zone far from its meridian) has its pixel sizes and areas measured on the ground.
SCALE_TOLERANCE = 0.005
_WGS84_A = 6378137.0
_WGS84_E2 = (1 / 298.257223563) * (2 - 1 / 298.257223563)


def ground_distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Distance on the WGS84 ellipsoid between two nearby points (degrees), from the local radii of curvature.

    Exact to about 1e-6 for the few-metre spans it is used for (one pixel), with no geodesy library.
    """
    lat = math.radians((lat1 + lat2) / 2)
    w = 1 - _WGS84_E2 * math.sin(lat) ** 2
    meridional = _WGS84_A * (1 - _WGS84_E2) / w ** 1.5
    normal = _WGS84_A / math.sqrt(w)
    north = meridional * math.radians(lat2 - lat1)
    east = normal * math.cos(lat) * math.radians(lon2 - lon1)
    return math.hypot(north, east)


def ground_pixel_size(nominal_m: tuple[float, float], ground_m: tuple[float, float]) -> tuple[float, float]:
    """The pixel size to report and resample to: on the ground when the projection's scale is off by more
    than :data:`SCALE_TOLERANCE` on either axis, else the CRS's own metres (equal within the tolerance)."""
    if any(g <= 0 or abs(n / g - 1) > SCALE_TOLERANCE for n, g in zip(nominal_m, ground_m, strict=True)):
        return (ground_m[0], ground_m[1]) if min(ground_m) > 0 else nominal_m
    return nominal_m


def gsd_ratio(pixel_size_m: tuple[float, float], model_gsd_m: float) -> float:
    """How many model pixels fit in one raster pixel (geometric mean of both axes)."""
    return math.sqrt(pixel_size_m[0] * pixel_size_m[1]) / model_gsd_m


def gsd_is_far(pixel_size_m: tuple[float, float] | None, model_gsd_m: float | None) -> bool:
    """True when the raster's pixels differ from the model's by more than :data:`GSD_TOLERANCE` either way."""
    if not pixel_size_m or not model_gsd_m or min(pixel_size_m) <= 0:
        return False
    ratio = gsd_ratio(pixel_size_m, model_gsd_m)
    return ratio > GSD_TOLERANCE or ratio < 1 / GSD_TOLERANCE


# --------------------------------------------------------------------------- worker process

ENV_PYTHON = "LANDCOVER_PYTHON"
ENV_THREADS = "LANDCOVER_THREADS"
WORKER_MODULE = "backend"
BACKEND_PARENT = Path(__file__).resolve().parent.parent  # what the worker needs on PYTHONPATH

#: The worker's pinned requirement lists (shipped in the plugin zip inside ``backend/``): ``runtime.txt`` for
#: bundles with an ONNX export, ``tensorflow.txt`` (+ ``tensorflow-nodeps.txt``, installed with --no-deps) on top.
REQUIREMENTS_DIR = Path(__file__).resolve().parent / "requirements"
RUNTIME_REQUIREMENTS = ("runtime.txt",)
TENSORFLOW_REQUIREMENTS = ("tensorflow.txt",)
TENSORFLOW_NODEPS_REQUIREMENTS = ("tensorflow-nodeps.txt",)
#: Measured on Debian 12 / Python 3.11 (README, "Worker runtime"): what setting up each runtime downloads and
#: then occupies on disk, in MB. Shown to the user before they agree to the download.
RUNTIME_DOWNLOAD_MB = {"onnx": 80, "tensorflow": 370}
RUNTIME_DISK_MB = {"onnx": 330, "tensorflow": 1700}
#: The one fix for a worker Python that lacks packages, on either side of the boundary.
SETUP_HINT = ("set up the Landcover runtime: in QGIS, Raster > Landcover > Set up runtime… (or "
              "'qgis_process.bin run landcover:setup_runtime'); in the source tree, 'make setup'")
TENSORFLOW_HINT = ("add the TensorFlow runtime: in QGIS, Raster > Landcover > Add TensorFlow runtime… (or "
                   "'qgis_process.bin run landcover:setup_runtime -- TENSORFLOW=true'); in the source tree, "
                   "'make setup'")

#: Read by TensorFlow and segmentation_models at import time (see backend/tf_import.py).
TENSORFLOW_ENV = {"SM_FRAMEWORK": "tf.keras", "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
WORKER_ENV = {**TENSORFLOW_ENV, "PYTHONUNBUFFERED": "1"}


def worker_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the worker: ``backend`` importable, TensorFlow configured, a host Python's setup removed."""
    env = dict(os.environ if base is None else base)
    # QGIS bundles (Windows/macOS) set PYTHONHOME/PYTHONPATH for their own Python; the worker must not inherit them.
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = str(BACKEND_PARENT)
    env.update(WORKER_ENV)
    return env


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"1,2,3"`` (commas and/or spaces) → ``(1, 2, 3)``; empty → None."""
    if text is None or not str(text).strip():
        return None
    try:
        bands = tuple(int(b) for b in re.split(r"[,\s]+", str(text).strip()) if b)
    except ValueError:
        raise InputError(f"bands {text!r} must be band numbers separated by commas, e.g. 1,2,3") from None
    if not bands or any(b < 1 for b in bands):
        raise InputError(f"bands {text!r}: band numbers start at 1, e.g. 1,2,3")
    return bands


def parse_window(text: str | None) -> tuple[int, int, int, int] | None:
    """``"COL_OFF,ROW_OFF,WIDTH,HEIGHT"`` → a tuple; empty → None."""
    if text is None or not str(text).strip():
        return None
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"window {text!r} must be four integers COL_OFF,ROW_OFF,WIDTH,HEIGHT")
    if values[0] < 0 or values[1] < 0 or values[2] < 1 or values[3] < 1:
        raise InputError(f"window {text!r} must have COL_OFF,ROW_OFF >= 0 and WIDTH,HEIGHT >= 1")
    return values  # type: ignore[return-value]


RUNTIMES = ("auto", "onnx", "tensorflow")
#: ``--precision``: which ONNX export runs (``auto``: INT8 where the CPU has fast int8 instructions).
PRECISIONS = ("auto", "fp32", "int8")
#: ``--tta``: test-time augmentation, the probabilities averaged over transformed copies of each tile:
#: ``flip`` = the tile and its left-right mirror (2 passes), ``d4`` = 4 rotations x mirror (8 passes).
TTA_MODES = ("none", "flip", "d4")
TTA_PASSES = {"none": 1, "flip": 2, "d4": 8}


def check_precision_tta(precision: str, tta: str) -> None:
    """An InputError unless ``precision`` and ``tta`` are among :data:`PRECISIONS` and :data:`TTA_MODES`."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if tta not in TTA_MODES:
        raise InputError(f"unknown test-time augmentation {tta!r}; use one of {', '.join(TTA_MODES)}")


def precision_tta_argv(precision: str, tta: str) -> list[str]:
    """``--precision`` and ``--tta`` words for non-default choices (``segment`` and ``batch`` take both)."""
    return ([] if precision == "auto" else ["--precision", precision]) + ([] if tta == "none" else ["--tta", tta])


PROGRESS_MODES = ("bar", "json", "none")


@dataclass(frozen=True)
class SegmentArgs:
    """The arguments of ``python -m backend segment``: built by the plugin, parsed by the backend."""

    input: str
    output: str
    model: str | None = None
    overlap: int | None = None
    batch_size: int | None = None
    bands: tuple[int, ...] | None = None
    window: tuple[int, int, int, int] | None = None
    resample: bool = False
    confidence: str | None = None
    runtime: str = "auto"
    seed: int = 0
    progress: str = "json"
    precision: str = "auto"
    tta: str = "none"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise InputError(f"unknown runtime {self.runtime!r}; use one of {', '.join(RUNTIMES)}")
        check_precision_tta(self.precision, self.tta)
        if self.progress not in PROGRESS_MODES:
            raise InputError(f"unknown progress mode {self.progress!r}; use one of {', '.join(PROGRESS_MODES)}")
        for name in ("bands", "window"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))

    def argv(self) -> list[str]:
        """The words after ``segment``."""
        argv = [str(self.input), str(self.output)]
        if self.model:
            argv += ["--model", str(self.model)]
        if self.overlap is not None:
            argv += ["--overlap", str(int(self.overlap))]
        if self.batch_size is not None:
            argv += ["--batch-size", str(int(self.batch_size))]
        if self.bands:
            argv += ["--bands", ",".join(map(str, self.bands))]
        if self.window is not None:
            argv += ["--window", ",".join(map(str, self.window))]
        if self.resample:
            argv.append("--resample")
        if self.confidence:
            argv += ["--confidence", str(self.confidence)]
        if self.runtime != "auto":
            argv += ["--runtime", self.runtime]
        if self.seed:
            argv += ["--seed", str(int(self.seed))]
        return [*argv, *precision_tta_argv(self.precision, self.tta), "--progress", self.progress]

    def command(self, python: str) -> list[str]:
        """The whole worker command line."""
        return [str(python), "-m", WORKER_MODULE, "segment", *self.argv()]

    @classmethod
    def from_namespace(cls, ns: Any) -> SegmentArgs:
        """From the backend parser's parsed ``segment`` arguments (bands and window still text)."""
        values = {f.name: getattr(ns, f.name) for f in fields(cls)}
        values["bands"] = parse_bands(ns.bands)
        values["window"] = parse_window(ns.window)
        return cls(**values)


# ------------------------------------------------------------------------- batch

#: What ``python -m backend batch`` writes in its output folder besides one class raster per item.
BATCH_MANIFEST = "manifest.jsonl"
BATCH_MOSAIC_VRT = "mosaic.vrt"
BATCH_MOSAIC_QML = "mosaic.qml"
BATCH_AREAS_CSV = "areas.csv"
BATCH_AREAS_JSON = "areas.json"
#: ``--chunk``: rasters larger than this on a side are split into chunks of about this size.
BATCH_DEFAULT_CHUNK = 8192
BATCH_CHUNK_STEP = 256  # chunk sizes and borders are multiples of the output block


@dataclass(frozen=True)
class BatchArgs:
    """The arguments of ``python -m backend batch``: built by the plugin, parsed and run by the backend.

    Attributes:
        inputs: rasters, folders (every raster in them) or glob patterns.
        outdir: where every output goes.
        model: bundle path or model name (``None``: the default model); workers resolve it themselves.
        workers: LocalCluster worker processes (``None``: cores / threads_per_worker).
        threads_per_worker: inference threads in each worker (``None``: 1, or all cores for one worker).
        scheduler: address of an existing Dask scheduler instead of a LocalCluster.
        resume: skip items already done (same output checksum as in the manifest).
        chunk: mosaics larger than this many pixels on a side are split into chunks of about this size.
        precision, tta: as for ``segment``.
        progress: how the worker reports progress (:data:`PROGRESS_MODES`).

    Raises:
        InputError: no inputs, or settings that contradict each other; checked here so that the plugin refuses them
            before it starts a worker.
    """

    inputs: tuple[str, ...]
    outdir: str
    model: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    resume: bool = False
    chunk: int = BATCH_DEFAULT_CHUNK
    precision: str = "auto"
    tta: str = "none"
    progress: str = "json"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        object.__setattr__(self, "outdir", str(self.outdir))
        if not self.inputs:
            raise InputError("nothing to segment: give rasters, folders of rasters or glob patterns")
        if self.chunk < BATCH_CHUNK_STEP or self.chunk % BATCH_CHUNK_STEP:
            raise InputError(f"chunk {self.chunk} (--chunk; CHUNK in Processing) must be a multiple of "
                             f"{BATCH_CHUNK_STEP} pixels, e.g. 8192")
        for name, parameter in (("workers", "WORKERS"), ("threads_per_worker", "THREADS")):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} ({parameter} in Processing) is {value}; it must be at "
                                 "least 1")
        if self.scheduler and self.workers is not None:
            raise InputError("--workers (WORKERS) sizes a local cluster; with --scheduler (SCHEDULER) the cluster's "
                             "own workers run the tasks: leave --workers out (start more workers with 'dask worker "
                             "ADDRESS')")
        check_precision_tta(self.precision, self.tta)
        if self.progress not in PROGRESS_MODES:
            raise InputError(f"unknown progress mode {self.progress!r}; use one of {', '.join(PROGRESS_MODES)}")

    def argv(self) -> list[str]:
        """The words after ``batch``."""
        argv = [*self.inputs, self.outdir]
        if self.model:
            argv += ["--model", str(self.model)]
        if self.workers is not None:
            argv += ["--workers", str(int(self.workers))]
        if self.threads_per_worker is not None:
            argv += ["--threads-per-worker", str(int(self.threads_per_worker))]
        if self.scheduler:
            argv += ["--scheduler", self.scheduler]
        if self.resume:
            argv.append("--resume")
        if self.chunk != BATCH_DEFAULT_CHUNK:
            argv += ["--chunk", str(int(self.chunk))]
        return [*argv, *precision_tta_argv(self.precision, self.tta), "--progress", self.progress]

    def command(self, python: str) -> list[str]:
        """The whole worker command line."""
        return [str(python), "-m", WORKER_MODULE, "batch", *self.argv()]

    @classmethod
    def from_namespace(cls, ns: Any) -> BatchArgs:
        """From the backend parser's parsed ``batch`` arguments."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls)})


# ------------------------------------------------------------------------- progress protocol

STAGE_PREDICT = "predict"
STAGE_BATCH = "batch"  # done/total: items (sheets and chunks) of a batch
STAGE_WARNING = "warning"
STAGE_INFO = "info"
STAGE_DONE = "done"
STAGE_ERROR = "error"


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` steps of a work stage (for example ``predict``: tiles)."""

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""

    @property
    def percent(self) -> float | None:
        """Progress of this stage in 0..100, when known."""
        return 100.0 * self.done / self.total if self.total else None


@dataclass(frozen=True)
class WarningEvent:
    """Something the user should know that does not stop the run."""

    message: str
    stage: ClassVar[str] = STAGE_WARNING


@dataclass(frozen=True)
class InfoEvent:
    """A status line, e.g. which model was loaded."""

    message: str
    stage: ClassVar[str] = STAGE_INFO


@dataclass(frozen=True)
class DoneEvent:
    """The run succeeded; the last line. Sidecar paths follow from ``output`` (:func:`output_files`)."""

    output: str
    areas: dict[str, Any]
    confidence: str | None = None
    width: int = 0
    height: int = 0
    tiles: int = 0
    seconds: float = 0.0
    runtime: str = ""
    warnings: tuple[str, ...] = ()
    precision: str = ""  # fp32 | int8 for ONNX Runtime runs
    tta: str = "none"
    stage: ClassVar[str] = STAGE_DONE


@dataclass(frozen=True)
class ErrorEvent:
    """The run failed; the last line. ``kind`` is one of :data:`ERROR_KINDS`."""

    kind: str
    message: str
    stage: ClassVar[str] = STAGE_ERROR

    def __post_init__(self) -> None:
        if self.kind not in ERROR_KINDS:
            object.__setattr__(self, "kind", "internal")

    @classmethod
    def from_error(cls, exc: LandcoverError) -> ErrorEvent:
        return cls(exc.kind, str(exc))

    def to_error(self, details: str = "") -> LandcoverError:
        return error_for_kind(self.kind, self.message, details)


Event = Union[ProgressEvent, WarningEvent, InfoEvent, DoneEvent, ErrorEvent]  # noqa: UP007 - a runtime alias
_MESSAGE_EVENTS: dict[str, type] = {STAGE_WARNING: WarningEvent, STAGE_INFO: InfoEvent}


def encode_event(event: Event) -> str:
    """One protocol line (no newline): a JSON object whose ``stage`` comes first."""
    body = asdict(event)
    body.pop("stage", None)
    if isinstance(event, DoneEvent):
        body["warnings"] = list(event.warnings)
    return json.dumps({"stage": event.stage, **body})


def decode_event(line: str) -> Event | None:
    """Parse one stdout line; None for lines that are not protocol JSON (e.g. stray library output)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("stage"), str):
        return None
    stage = obj["stage"]
    try:
        if stage == STAGE_DONE:
            known = {f.name for f in fields(DoneEvent)}
            values = {k: v for k, v in obj.items() if k in known}
            values["warnings"] = tuple(str(w) for w in values.get("warnings") or ())
            values["areas"] = dict(values.get("areas") or {})
            return DoneEvent(**values)
        if stage == STAGE_ERROR:
            return ErrorEvent(str(obj.get("kind") or "internal"), str(obj.get("message") or ""))
        if stage in _MESSAGE_EVENTS:
            return _MESSAGE_EVENTS[stage](str(obj.get("message") or ""))
        done, total = int(obj.get("done") or 0), int(obj.get("total") or 0)
        return ProgressEvent(stage, done, total, str(obj.get("message") or ""))
    except (TypeError, ValueError):
        return None

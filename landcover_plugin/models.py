"""Model bundles as the plugin sees them: read straight from their JSON, no backend import.

Importing ``backend`` here would pull numpy-heavy code into QGIS for no gain; the JSON holds all
the dialog needs (classes, colours, resolution, defaults). The worker validates bundles fully.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LandcoverPluginError
from .runner import PLUGIN_DIR, backend_parent

UNTRAINED_PREFIX = "untrained:"
DEFAULT_MODEL = "default"

#: LandCover.ai v1 classes, used for untrained models and when a raster carries no names.
LANDCOVER_CLASSES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (0, "background", (222, 214, 182)),
    (1, "building", (220, 40, 40)),
    (2, "woodland", (38, 115, 0)),
    (3, "water", (0, 150, 255)),
    (4, "road", (120, 120, 120)),
)


@dataclass(frozen=True)
class ClassInfo:
    """One output class: id, name and RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]


def default_classes() -> list[ClassInfo]:
    """The LandCover.ai classes."""
    return [ClassInfo(i, n, c) for i, n, c in LANDCOVER_CLASSES]


@dataclass
class ModelInfo:
    """What the plugin needs to know about a model."""

    name: str
    spec: str  # what is passed to ``--model``: a bundle path or ``untrained:ARCH:BACKBONE``
    classes: list[ClassInfo] = field(default_factory=default_classes)
    gsd_m: float | None = 0.25
    tile_size: int = 256
    input_bands: int = 3
    default_overlap: int | None = None
    default_batch_size: int = 8
    origin: str = ""
    path: Path | None = None

    @property
    def overlap(self) -> int:
        """Default tile overlap: the bundle's, else an eighth of a tile (as the backend does)."""
        return self.default_overlap if self.default_overlap is not None else self.tile_size // 8

    def describe(self) -> str:
        """One or two lines for the dialog."""
        gsd = f"{self.gsd_m:g} m/pixel" if self.gsd_m else "unknown resolution"
        classes = ", ".join(c.name for c in self.classes)
        return f"{gsd}, {self.input_bands} bands, tile {self.tile_size} px\nclasses: {classes}"


def user_models_dir(env: dict[str, str] | None = None) -> Path:
    """The user's model folder: ``$LANDCOVER_MODELS_DIR`` or ``~/.local/share/landcover/models``."""
    env = os.environ if env is None else env
    if env.get("LANDCOVER_MODELS_DIR"):
        return Path(env["LANDCOVER_MODELS_DIR"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "landcover" / "models"


def bundled_models_dir(plugin_dir: Path = PLUGIN_DIR) -> Path | None:
    """``backend/bundles`` next to the plugin (source tree) or inside it (packaged zip)."""
    try:
        return backend_parent(plugin_dir) / "backend" / "bundles"
    except LandcoverPluginError:
        return None


def load_model_info(path: str | Path, origin: str = "file") -> ModelInfo:
    """Read a bundle JSON.

    Raises:
        LandcoverPluginError: the file is missing or not a bundle.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LandcoverPluginError(
            f"model bundle {path} does not exist; choose a bundle .json in the dialog (Browse...) or train one with "
            "'make train'"
        )
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        classes = [ClassInfo(int(c["id"]), str(c["name"]), tuple(int(v) for v in c["color"])) for c in data["classes"]]
        gsd = data.get("gsd_m")
        return ModelInfo(
            name=str(data.get("name") or path.stem),
            spec=str(path.resolve()),
            classes=classes,
            gsd_m=None if gsd is None else float(gsd),
            tile_size=int(data.get("tile_size", 256)),
            input_bands=int(data.get("input_bands", 3)),
            default_overlap=None if data.get("default_overlap") is None else int(data["default_overlap"]),
            default_batch_size=int(data.get("default_batch_size") or 8),
            origin=origin,
            path=path.resolve(),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LandcoverPluginError(
            f"{path} is not a Landcover model bundle ({exc}); choose the .json exported by the training"
        ) from exc


def untrained_model(spec: str) -> ModelInfo:
    """An ``untrained:ARCH:BACKBONE`` model: random weights, LandCover.ai classes (installation checks only)."""
    parts = spec[len(UNTRAINED_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise LandcoverPluginError(f"{spec!r} is not of the form untrained:ARCH:BACKBONE, e.g. untrained:Unet:resnet18")
    return ModelInfo(name=f"untrained-{parts[0].lower()}-{parts[1]}", spec=spec, origin="untrained")


def list_models(plugin_dir: Path = PLUGIN_DIR, env: dict[str, str] | None = None) -> list[ModelInfo]:
    """Readable bundles in the plugin's and the user's model folders (``<dir>/<key>/*.json`` or ``<dir>/*.json``)."""
    found: list[ModelInfo] = []
    for origin, root in (("bundled", bundled_models_dir(plugin_dir)), ("user", user_models_dir(env))):
        if root is None or not root.is_dir():
            continue
        for path in sorted([*root.glob("*.json"), *root.glob("*/*.json")]):
            try:
                found.append(load_model_info(path, origin))
            except LandcoverPluginError:
                continue  # not a bundle (or broken): the dialog lists only usable models
    return found


def resolve_model(spec: str | None, plugin_dir: Path = PLUGIN_DIR, env: dict[str, str] | None = None) -> ModelInfo:
    """A model by bundle path, by key/name in the model folders, ``untrained:...``, or the default.

    Raises:
        LandcoverPluginError: nothing matches.
    """
    spec = (spec or "").strip() or DEFAULT_MODEL
    if spec.startswith(UNTRAINED_PREFIX):
        return untrained_model(spec)
    if spec.endswith(".json") or os.sep in spec or Path(spec).expanduser().exists():
        return load_model_info(spec)
    for info in list_models(plugin_dir, env):
        assert info.path is not None
        if spec in (info.name, info.path.parent.name, info.path.stem):
            return info
    if spec == DEFAULT_MODEL:
        raise LandcoverPluginError(
            "no default model is installed; train one with 'make train', choose a bundle .json (Browse...), "
            "or use untrained:Unet:resnet18 to check the installation"
        )
    raise LandcoverPluginError(
        f"no model named {spec!r} in {bundled_models_dir(plugin_dir)} or {user_models_dir(env)}; "
        "pass the bundle's .json path instead"
    )

"""Everything the plugin remembers, as one typed object with defaults.

One QgsSettings key per field, ``landcover/<field name>``; nothing else in the plugin spells a
settings key. The dialog, the Processing algorithms and the job all read the same object, so a
Worker Python chosen in the dialog is what Processing, batch mode and ``qgis_process`` use too.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import QgsApplication, QgsSettings

from .contract import ENV_MODELS_DIR, model_dirs, worker_env


@dataclass
class Settings:
    """The plugin's remembered choices."""

    worker_python: str = ""  # empty: $LANDCOVER_PYTHON, the managed runtime, the source tree's .venv (runner)
    runtime_dir: str = ""  # where the managed runtime lives; empty: <profile>/landcover/runtime
    models_dir: str = ""  # the user's model folder; empty: $LANDCOVER_MODELS_DIR or ~/.local/share/landcover/models
    model: str = ""  # spec of the model used last
    extra_models: list[str] = field(default_factory=list)  # bundle JSONs added with Browse…
    browse_dir: str = ""  # where Browse… opens
    area: int = 0  # 0 whole layer, 1 map extent, 2 polygon features
    selected_only: bool = False
    resample: bool = False
    confidence: bool = False
    polygons: bool = False
    add_to_map: bool = True
    bands: str = ""
    precision: str = "auto"  # segment --precision: contract PRECISIONS
    tta: str = "none"  # segment --tta: contract TTA_MODES

    PREFIX: ClassVar[str] = "landcover/"

    def runtime_root(self) -> Path:
        """The managed runtime's folder (see :mod:`landcover_plugin.runtime_setup`)."""
        if self.runtime_dir:
            return Path(self.runtime_dir).expanduser()
        return Path(QgsApplication.qgisSettingsDirPath()) / "landcover" / "runtime"

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The process environment with the models folder setting applied (what model lookups read)."""
        env = dict(os.environ if base is None else base)
        if self.models_dir:
            env[ENV_MODELS_DIR] = self.models_dir
        return env

    def model_dirs(self) -> list[tuple[str, Path]]:
        """Where models are looked up by name, with this models folder."""
        return model_dirs(self.environ())

    def find_worker_python(self, override: str | None = None) -> str:
        """The worker Python these settings lead to (``override`` instead of the Worker Python field when given):
        see :func:`landcover_plugin.runner.find_python` for the order.

        Raises:
            DependencyError: none usable; the message offers setting up the managed runtime.
        """
        from .runner import find_python

        return find_python(self.worker_python if override is None else override, runtime_root=self.runtime_root())

    def worker_env(self) -> dict[str, str]:
        """The worker's environment: the contract's, plus this models folder."""
        return worker_env(self.environ())

    @classmethod
    def key(cls, name: str) -> str:
        """The QgsSettings key of field ``name``."""
        if name not in {f.name for f in fields(cls)}:
            raise KeyError(f"no Landcover setting {name!r}")
        return cls.PREFIX + name

    @classmethod
    def load(cls, store: QgsSettings | None = None) -> Settings:
        """The saved values, each with its field's type; missing or unreadable ones take the default."""
        store = store or QgsSettings()
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = f.default_factory() if f.default is MISSING else f.default
            try:
                value = store.value(cls.key(f.name), default, type(default))
            except TypeError:  # a value of another type saved by hand
                value = default
            values[f.name] = list(value or []) if isinstance(default, list) else value
        return cls(**values)

    def save(self, store: QgsSettings | None = None) -> None:
        store = store or QgsSettings()
        for f in fields(self):
            store.setValue(self.key(f.name), getattr(self, f.name))

    @classmethod
    def clear(cls, store: QgsSettings | None = None) -> None:
        """Forget everything (tests, and a user resetting the plugin)."""
        (store or QgsSettings()).remove(cls.PREFIX.rstrip("/"))

"""Everything the plugin remembers, as one typed object with defaults.

One QgsSettings key per field, ``landcover/<field name>``; nothing else in the plugin spells a
settings key. The dialog, the Processing algorithms and the job all read the same object, so a
Worker Python chosen in the dialog is what Processing, batch mode and ``qgis_process`` use too.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from qgis.core import QgsSettings


@dataclass
class Settings:
    """The plugin's remembered choices."""

    worker_python: str = ""  # empty: $LANDCOVER_PYTHON, then the source tree's .venv (see runner.find_python)
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

    PREFIX: ClassVar[str] = "landcover/"

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

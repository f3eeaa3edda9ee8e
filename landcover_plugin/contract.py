"""The plugin-backend contract as the plugin sees it: ``backend/contract.py``, loaded by file path.

Every rule both sides rely on (classes, errors and their kinds, bundle JSON and model lookup,
sidecar names, worker environment, ``segment`` arguments, progress protocol, tolerances) lives
once, in that standard-library-only file. Inside QGIS the plugin must not import the top-level
package ``backend``: the name is generic enough to collide with another plugin's package, and it
sits inside the plugin folder in the zip but beside it in the source tree. So this module runs that
file under its own name, ``landcover_plugin.contract``, and replaces itself with the result:
``from .contract import output_files`` works as for any module, and nothing else is imported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PLUGIN_DIR = Path(__file__).resolve().parent


def contract_file(plugin_dir: Path = _PLUGIN_DIR) -> Path:
    """``backend/contract.py`` inside the plugin (packaged zip) or beside it (source tree)."""
    for base in (plugin_dir, plugin_dir.parent):
        path = base / "backend" / "contract.py"
        if path.is_file():
            return path
    raise ImportError(
        f"the Landcover backend is missing: neither {plugin_dir / 'backend'} nor {plugin_dir.parent / 'backend'} "
        "holds contract.py; reinstall the plugin from its zip (make package)"
    )


def _load() -> None:
    spec = importlib.util.spec_from_file_location(__name__, contract_file())
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)


_load()

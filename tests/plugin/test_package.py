"""The packaged zip installs into a fresh QGIS profile, loads with qgis.utils and runs headless (qgis_process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.plugin.helpers import REPO, UNTRAINED

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "landcover_plugin.zip"
    # The repository rules are test_zip_rules.py's job; here the zip only has to install and run.
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"), "--no-check", str(out)], check=True,
                   capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def profile(package: Path, tmp_path_factory) -> Path:
    """A fresh QGIS settings root with the zip unpacked in its plugins folder (like Install from ZIP)."""
    root = tmp_path_factory.mktemp("qgis_config")
    plugins = root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(package) as zf:
        zf.extractall(plugins)
    return root


@pytest.fixture(scope="module")
def enabled(profile: Path) -> Path:
    """The profile with the plugin enabled for qgis_process (what ticking it in the Plugin Manager does)."""
    run = subprocess.run([QGIS_PROCESS, "plugins", "enable", "landcover_plugin"], env=_env(profile), cwd=profile,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return profile


def _env(profile: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QGIS_PLUGINPATH")}
    env.update({"QGIS_CUSTOM_CONFIG_PATH": str(profile), "QT_QPA_PLATFORM": "offscreen",
                "LANDCOVER_PYTHON": str(REPO / ".venv" / "bin" / "python")})
    return env


def test_zip_layout(package: Path) -> None:
    names = zipfile.ZipFile(package).namelist()
    assert all(n.startswith("landcover_plugin/") for n in names)
    for required in ("__init__.py", "metadata.txt", "icon.png", "plugin.py", "processing_provider/algorithms.py",
                     "backend/__init__.py", "backend/cli.py", "backend/requirements/runtime.txt", "LICENSE"):
        assert f"landcover_plugin/{required}" in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    bundles = REPO / "backend" / "bundles" / "default"
    if bundles.is_dir():
        assert any(n.startswith("landcover_plugin/backend/bundles/default/") for n in names)


def test_loads_with_qgis_utils(profile: Path) -> None:
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(plugins)!r})
        from qgis.core import QgsApplication
        app = QgsApplication([], False)
        app.initQgis()
        import qgis.utils
        assert qgis.utils.loadPlugin("landcover_plugin")
        assert qgis.utils.startProcessingPlugin("landcover_plugin")
        import landcover_plugin
        from landcover_plugin import contract
        provider = QgsApplication.processingRegistry().providerById("landcover")
        print(landcover_plugin.__file__, contract.BACKEND_PARENT, sorted(a.id() for a in provider.algorithms()))
        assert "tensorflow" not in sys.modules and "backend" not in sys.modules
        qgis.utils.unloadPlugin("landcover_plugin")
    """)
    out = subprocess.run([sys.executable, "-c", code], env=_env(profile), cwd=profile, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    file, backend, algs = out.stdout.split(" ", 2)
    assert file.startswith(str(plugins)) and backend == str(plugins / "landcover_plugin")
    assert "landcover:segment" in algs and "landcover:vectorize" in algs


@pytest.mark.slow
def test_qgis_process_runs_the_installed_plugin(enabled: Path, crops: dict[str, Path], tmp_path: Path) -> None:
    env = _env(enabled)
    out = tmp_path / "classes.tif"
    run = subprocess.run(
        [QGIS_PROCESS, "--json", "run", "landcover:segment", "--", f"INPUT={crops['rgb']}", f"MODEL={UNTRAINED}",
         f"OUTPUT={out}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert results["OUTPUT"] == str(out) and out.is_file()
    assert Path(results["AREAS"]).is_file()


@pytest.mark.slow
def test_qgis_process_reports_parameter_errors(enabled: Path, crops: dict[str, Path], tmp_path: Path) -> None:
    env = _env(enabled)
    run = subprocess.run(
        [QGIS_PROCESS, "run", "landcover:segment", "--", f"INPUT={crops['gray']}", f"MODEL={UNTRAINED}",
         f"OUTPUT={tmp_path / 'x.tif'}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0
    assert "has 1 band(s)" in run.stdout + run.stderr

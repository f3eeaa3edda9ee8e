"""From the plugin zip to a land-cover map with no terminal, headless, as a new analyst's machine has it.

The zip built by the packager is unpacked into the default QGIS profile of a temporary HOME; no
LANDCOVER_PYTHON, no PYTHONPATH, no source tree .venv beside the plugin. ``qgis_process`` then runs
``landcover:setup_runtime`` (pip from the package index, with pip's own configuration) and
``landcover:segment`` on a real raster.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.plugin.helpers import REPO, python_without_ensurepip

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
pytestmark = pytest.mark.slow


def _home(root: Path, package: Path) -> Path:
    """A HOME whose default QGIS profile has the zip installed and the plugin enabled."""
    home = root / "home"
    plugins = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(package) as zf:
        zf.extractall(plugins)
    assert not (plugins / ".venv").exists() and not (plugins.parent / ".venv").exists()
    run = _qgis_process(home, "plugins", "enable", "landcover_plugin")
    assert run.returncode == 0, run.stdout + run.stderr
    return home


def _profile(home: Path) -> Path:
    return home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"


def _env(home: Path, **extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "QGIS_PLUGINPATH", "QGIS_CUSTOM_CONFIG_PATH", "LANDCOVER_PYTHON", "VIRTUAL_ENV",
            "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"HOME": str(home), "QT_QPA_PLATFORM": "offscreen", **extra})
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def _qgis_process(home: Path, *args: str, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS_PROCESS, *args], env=_env(home, **extra), cwd=home, capture_output=True, text=True,
                          timeout=timeout)


def _results(run: subprocess.CompletedProcess) -> dict:
    return json.loads(run.stdout[run.stdout.index("{"):])["results"]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "landcover_plugin.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"), "--no-check", str(out)], check=True,
                   capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def home(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh analyst's HOME with the runtime set up through Processing, as `qgis_process` users do it."""
    home = _home(tmp_path_factory.mktemp("analyst"), package)
    run = _qgis_process(home, "--json", "run", "landcover:setup_runtime")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = _results(run)
    runtime = _profile(home) / "landcover" / "runtime"
    assert results["RUNTIME_DIR"] == str(runtime)
    assert results["PYTHON"].startswith(str(runtime / "envs")) and Path(results["PYTHON"]).exists()
    return home


def test_setup_then_segment_a_real_raster(home: Path, real_dir: Path, tmp_path: Path) -> None:
    import rasterio

    source = real_dir / "naip_rgbn_epsg26914.tif"
    out = tmp_path / "landcover.tif"
    run = _qgis_process(home, "--json", "run", "landcover:segment", "--", f"INPUT={source}", "MODEL=default",
                        "BANDS=1,2,3", f"OUTPUT={out}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert _results(run)["OUTPUT"] == str(out)
    with rasterio.open(out) as dst, rasterio.open(source) as src:
        assert dst.crs == src.crs and dst.shape == src.shape
        classes = set(dst.read(1).ravel().tolist())
    assert classes <= {0, 1, 2, 3, 4, 255} and len(classes - {255}) >= 2
    areas = json.loads(out.with_suffix(".areas.json").read_text())
    assert [c["name"] for c in areas["classes"]] == ["background", "building", "woodland", "water", "road"]
    record = json.loads((_profile(home) / "landcover" / "runtime" / "runtime.json").read_text())
    assert {"numpy", "rasterio", "onnxruntime"} <= set(record["packages"]) and record["size_mb"] < 400
    assert not any(name.lower().startswith("tensorflow") for name in record["packages"])


def test_second_setup_keeps_the_working_runtime(home: Path) -> None:
    before = (_profile(home) / "landcover" / "runtime" / "runtime.json").read_text()
    run = _qgis_process(home, "run", "landcover:setup_runtime")
    assert run.returncode == 0 and "nothing to do" in run.stdout
    assert (_profile(home) / "landcover" / "runtime" / "runtime.json").read_text() == before


def test_processing_uses_the_worker_python_saved_in_the_settings(home: Path, real_dir: Path, tmp_path: Path) -> None:
    """What the dialog saves (QgsSettings landcover/worker_python) is what qgis_process runs."""
    runtime_python = _results(_qgis_process(home, "--json", "run", "landcover:setup_runtime"))["PYTHON"]
    marker = tmp_path / "used"
    wrapper = tmp_path / "my-python"
    wrapper.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexec {runtime_python} \"$@\"\n")
    wrapper.chmod(0o755)
    ini = _profile(home) / "QGIS" / "QGIS3.ini"
    config = configparser.ConfigParser(interpolation=None, strict=False)
    config.optionxform = str
    config.read(ini)
    if not config.has_section("landcover"):
        config.add_section("landcover")
    config.set("landcover", "worker_python", str(wrapper))
    with ini.open("w") as f:
        config.write(f, space_around_delimiters=False)
    try:
        out = tmp_path / "classes.tif"
        run = _qgis_process(home, "run", "landcover:segment", "--", f"INPUT={real_dir / 'naip_rgbn_epsg26914.tif'}",
                            "BANDS=1,2,3", f"OUTPUT={out}")
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        assert out.is_file() and "segment" in marker.read_text()
    finally:
        config.remove_option("landcover", "worker_python")
        with ini.open("w") as f:
            config.write(f, space_around_delimiters=False)


def test_python_without_venv_support_gets_the_apt_line(package: Path, tmp_path: Path) -> None:
    home = _home(tmp_path, package)
    base = python_without_ensurepip(tmp_path)
    run = _qgis_process(home, "run", "landcover:setup_runtime", LANDCOVER_BASE_PYTHON=str(base))
    major_minor = "{}.{}".format(*sys.version_info[:2])
    assert run.returncode != 0
    assert f"sudo apt install python{major_minor}-venv" in run.stdout + run.stderr
    runtime = _profile(home) / "landcover" / "runtime"
    assert not (runtime / "runtime.json").exists() and not list((runtime / "envs").iterdir())
    segment = _qgis_process(home, "run", "landcover:segment", "--", f"INPUT={REPO / 'demo' / 'orthophoto.tif'}",
                            f"OUTPUT={tmp_path / 'x.tif'}")
    assert segment.returncode != 0 and "not set up yet" in segment.stdout + segment.stderr

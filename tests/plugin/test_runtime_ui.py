"""The managed runtime from the GUI: the dialog's offer, the menu entries, progress, Cancel and the result bar."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QPushButton

import landcover_plugin
from landcover_plugin import runner
from landcover_plugin.dialog import LandcoverDialog
from landcover_plugin.runtime_setup import runtime_status
from landcover_plugin.settings import Settings
from tests.plugin.helpers import bar_texts, wait_for_task
from tests.plugin.test_runtime_setup import _offline_env, _SlowIndex

pytestmark = pytest.mark.usefixtures("clean_settings")


@pytest.fixture
def fresh_install(tmp_path: Path, monkeypatch) -> Path:
    """As after installing the zip: no LANDCOVER_PYTHON, no source-tree .venv, no runtime; its folder returned."""
    monkeypatch.delenv("LANDCOVER_PYTHON", raising=False)
    plugin_dir = tmp_path / "profile" / "python" / "plugins" / "landcover_plugin"
    plugin_dir.mkdir(parents=True)
    monkeypatch.setattr(runner, "PLUGIN_DIR", plugin_dir)
    root = tmp_path / "profile" / "landcover" / "runtime"
    Settings(runtime_dir=str(root)).save()
    return root


def test_dialog_offers_the_setup_when_no_worker_exists(qgis_iface, fresh_install: Path) -> None:
    dlg = LandcoverDialog(qgis_iface)
    dlg.show()
    assert dlg.check_worker() is False
    button = dlg.bar.findChild(QPushButton, "landcoverSetupRuntime")
    assert button is not None and "Set up the Landcover runtime — about 80 MB to download" == button.text()
    assert any("no worker runtime yet" in t for t in bar_texts(dlg.bar, Qgis.Warning))
    assert dlg.bar.findChild(QPushButton, "landcoverDetails") is not None  # the whole story, never clipped
    assert str(fresh_install) in button.toolTip()
    asked = []
    dlg.runtime.confirm = lambda request, status: asked.append(request) or False  # the user says no
    button.click()
    assert [r.root for r in asked] == [fresh_install] and dlg.runtime.task is None
    assert runtime_status(fresh_install).state == "missing"


def test_an_explicit_worker_python_needs_no_offer(qgis_iface, fresh_install: Path) -> None:
    Settings(runtime_dir=str(fresh_install), worker_python="/usr/bin/python3").save()
    dlg = LandcoverDialog(qgis_iface)
    dlg.show()
    assert dlg.check_worker() is True and dlg.bar.findChild(QPushButton, "landcoverSetupRuntime") is None


@pytest.mark.slow
def test_setup_from_the_dialog_then_the_worker_is_found(qgis_iface, fresh_install: Path) -> None:
    dlg = LandcoverDialog(qgis_iface)
    dlg.show()
    dlg.runtime.confirm = lambda request, status: True
    dlg.bar.findChild(QPushButton, "landcoverSetupRuntime").click()
    task = dlg.runtime.task
    assert task is not None
    wait_for_task(task, timeout=900)
    assert task.outcome is not None and task.outcome.ready, task.error
    assert any("runtime ready" in t for t in bar_texts(qgis_iface.messageBar(), Qgis.Success))
    assert dlg.bar.findChild(QPushButton, "landcoverSetupRuntime") is None  # the offer is gone
    assert runner.find_python(None, runtime_root=fresh_install) == task.outcome.python
    assert dlg.check_worker() is True


@pytest.mark.slow
def test_cancel_from_the_task_bar_changes_nothing(qgis_iface, fresh_install: Path, monkeypatch) -> None:
    index = _SlowIndex()
    for name in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(name)
    for name, value in _offline_env(index.port).items():
        if name.startswith("PIP_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIP_TIMEOUT", "60")
    plugin = landcover_plugin.classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.runtime.confirm = lambda request, status: True
        menu = {a.objectName(): a for a in plugin.menu_actions}
        menu["landcoverSetupRuntime"].trigger()
        task = plugin.runtime.task
        assert task is not None
        assert index.connected.wait(120), "pip never reached the index"
        task.cancel()
        wait_for_task(task, timeout=120)
    finally:
        plugin.unload()
        index.close()
    assert task.canceled and task.outcome is None
    assert any("cancelled; nothing was changed" in t for t in bar_texts(qgis_iface.messageBar(), Qgis.Info))
    assert runtime_status(fresh_install).state == "missing" and not list((fresh_install / "envs").iterdir())


def test_runtime_and_models_folders_are_settings_everyone_reads(qgis_iface, fresh_install: Path,
                                                               tmp_path: Path) -> None:
    from landcover_plugin.contract import resolve_model
    from landcover_plugin.runtime_setup import RuntimeRequest
    from tests.plugin.helpers import write_bundle
    from tests.plugin.test_runtime_setup import _fake_runtime

    elsewhere = tmp_path / "big disk" / "runtime"
    python = _fake_runtime(elsewhere, RuntimeRequest(elsewhere))
    dlg = LandcoverDialog(qgis_iface)
    dlg.show()
    assert dlg.check_worker() is False  # the default folder has no runtime
    dlg.runtime_widget.setFilePath(str(elsewhere))
    assert dlg.check_worker() is True
    write_bundle(tmp_path / "my models" / "tiny", name="my-tiny")
    dlg.models_widget.setFilePath(str(tmp_path / "my models"))
    labels = [dlg.model_combo.itemText(i) for i in range(dlg.model_combo.count())]
    assert "my-tiny (user)" in labels
    dlg._save_settings()
    settings = Settings.load()  # what Processing and the job read
    assert runner.find_python(None, runtime_root=settings.runtime_root()) == str(python)
    assert resolve_model("my-tiny", settings.model_dirs()).name == "my-tiny"

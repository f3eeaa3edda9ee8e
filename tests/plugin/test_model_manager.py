"""The model manager: installed models listed with their cards, Deepness ONNX files added and removed."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest
from qgis.core import Qgis

from landcover_plugin.contract import list_models
from landcover_plugin.model_manager import AddRequest, ModelManagerDialog
from landcover_plugin.settings import Settings
from tests.plugin.helpers import REPO, bar_texts, wait_for_task, write_bundle

DEEPNESS = REPO / "tests" / "data" / "deepness"
pytestmark = pytest.mark.usefixtures("clean_settings")


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    Settings(models_dir=str(folder)).save()
    return folder


def _rows(dlg: ModelManagerDialog) -> dict[str, list[str]]:
    return {dlg.table.item(r, 0).text(): [dlg.table.item(r, c).text() for c in range(dlg.table.columnCount())]
            for r in range(dlg.table.rowCount())}


def _select(dlg: ModelManagerDialog, name: str) -> None:
    row = list(_rows(dlg)).index(name)
    dlg.table.selectRow(row)


def test_add_request_is_the_backend_command() -> None:
    argv = AddRequest("m.onnx", name="trees", classes=("bg", "tree"), gsd_m=0.5, output=1, tile_size=512,
                      sha256="ab" * 32).argv("py")
    assert argv[:8] == ["py", "-m", "backend", "models", "add", "m.onnx", "--progress", "json"]
    assert argv[8:] == ["--name", "trees", "--classes", "bg,tree", "--gsd-m", "0.5", "--output", "1",
                        "--tile-size", "512", "--sha256", "ab" * 32]
    assert AddRequest("m.onnx").argv("py")[8:] == []  # nothing given: the model's metadata decides


def test_lists_models_and_only_user_models_can_be_removed(qgis_iface, models_dir: Path) -> None:
    write_bundle(models_dir / "tiny", name="my-tiny", gsd=0.5)
    dlg = ModelManagerDialog()
    rows = _rows(dlg)
    assert rows["my-tiny"][1:4] == ["user", "background, building, woodland, water, road", "0.5 m"]
    assert rows["landcover-unet-resnet18-synthetic"][1] == "bundled"
    assert "mIoU" in rows["landcover-unet-resnet18-synthetic"][4]  # the model card's metric
    _select(dlg, "landcover-unet-resnet18-synthetic")
    assert not dlg.remove_button.isEnabled()
    _select(dlg, "my-tiny")
    assert dlg.remove_button.isEnabled()


@pytest.mark.slow
def test_add_a_deepness_model_then_remove_it(qgis_iface, models_dir: Path) -> None:
    from landcover_plugin.dialog import LandcoverDialog

    main = LandcoverDialog(qgis_iface)
    dlg = main.open_models()  # the dialog's Models… button
    assert main.models_button.text() == "Models…"
    dlg.source_edit.setText(str(DEEPNESS / "dummy_model.onnx"))
    dlg.name_edit.setText("colours")
    dlg.classes_edit.setText("red, green, blue")
    dlg.gsd_spin.setValue(0.5)
    task = dlg.add()
    assert task is not None
    wait_for_task(task, timeout=300)
    assert task.added is not None, task.error
    assert Path(task.added).parent.parent == models_dir and Path(task.added).is_file()
    assert main.current_model().name == "colours"  # the run dialog lists and selects it at once
    assert any("added 'colours': red, green, blue, 0.5 m/px" in t for t in bar_texts(dlg.bar, Qgis.Success))
    assert _rows(dlg)["colours"][1:4] == ["user", "red, green, blue", "0.5 m"]
    assert [m.info.name for m in list_models(Settings.load().model_dirs()) if m.origin == "user"] == ["colours"]
    _select(dlg, "colours")
    assert dlg.remove_selected() is True
    assert "colours" not in _rows(dlg)
    assert not any(m.origin == "user" for m in list_models(Settings.load().model_dirs()))


@pytest.mark.slow
def test_what_the_model_lacks_is_asked_for_and_nothing_is_added(qgis_iface, models_dir: Path) -> None:
    dlg = ModelManagerDialog()
    dlg.source_edit.setText(str(DEEPNESS / "dummy_model.onnx"))  # no class_names, no resolution in its metadata
    task = dlg.add()
    wait_for_task(task, timeout=300)
    assert task.added is None and task.error is not None and task.error.kind == "model"
    assert "class" in str(task.error).lower()
    assert dlg.last_error is task.error
    assert not any(m.origin == "user" for m in list_models(Settings.load().model_dirs()))


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces a large model and sends it a few bytes at a time."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Length", str(50_000_000))
        self.end_headers()
        try:
            for _ in range(600):
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_cancelled_download_adds_nothing(qgis_iface, models_dir: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dlg = ModelManagerDialog()
        dlg.source_edit.setText(f"http://127.0.0.1:{server.server_port}/big.onnx")
        dlg.classes_edit.setText("a,b")
        dlg.gsd_spin.setValue(1.0)
        task = dlg.add()
        deadline = time.monotonic() + 60
        while task.progress() <= 0 and time.monotonic() < deadline:
            from qgis.PyQt.QtCore import QCoreApplication

            QCoreApplication.processEvents()
            time.sleep(0.05)
        assert task.progress() > 0, "the download never reported progress"
        dlg.cancel()
        wait_for_task(task, timeout=60)
    finally:
        server.shutdown()
    assert task.canceled and task.added is None
    assert not any(m.origin == "user" for m in list_models(Settings.load().model_dirs()))
    leftovers = [p for p in models_dir.rglob("*") if p.is_file()] if models_dir.exists() else []
    assert leftovers == []

"""The user models folder: add from a path or URL (progress, checksum, errors, cancel), replace, remove, CLI."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from backend.contract import list_models
from backend.deepness import ImportOptions
from backend.errors import InputError, ModelError
from backend.model_store import STAGING, AddRequest, add_model, remove_model
from backend.progress import Progress
from tests.conftest import REPO
from tests.data.rasters import write_raster

DATA = Path(__file__).resolve().parent.parent / "data" / "deepness"
DUMMY = DATA / "dummy_model.onnx"
RGB = ImportOptions(classes=("red", "green", "blue"), gsd_m=0.5)


class Recorder(Progress):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, stage, total, message=""):
        self.events.append(("start", stage, total))

    def advance(self, done):
        self.events.append(("advance", done))


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("LANDCOVER_MODELS_DIR", str(root))
    return root


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; files named ``slow-*`` trickle out."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

        def copyfile(self, source, outputfile):
            if "slow-" not in self.path:
                return super().copyfile(source, outputfile)
            try:
                while chunk := source.read(1 << 16):
                    outputfile.write(chunk)
                    outputfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def user_keys(root: Path) -> list[str]:
    return [m.key for m in list_models([("user", root)])]


def staging_empty(root: Path) -> bool:
    return not (root / STAGING).exists() or not any((root / STAGING).iterdir())


def test_add_from_a_path_writes_a_bundle_folder_and_refuses_taken_names(models_dir):
    added = add_model(AddRequest(str(DUMMY), RGB))
    assert added.key == "dummy_model"
    assert sorted(p.name for p in (models_dir / "dummy_model").iterdir()) == ["dummy_model.json", "dummy_model.onnx"]
    prov = added.bundle.provenance
    assert prov["source"] == str(DUMMY) and prov["source_sha256"] == hashlib.sha256(DUMMY.read_bytes()).hexdigest()
    assert user_keys(models_dir) == ["dummy_model"]
    with pytest.raises(InputError, match="already exists.*--replace"):
        add_model(AddRequest(str(DUMMY), RGB))
    again = add_model(AddRequest(str(DUMMY), ImportOptions(classes=("r", "g", "b"), gsd_m=0.25), replace=True))
    assert again.replaced and again.bundle.class_names == ["r", "g", "b"]
    assert user_keys(models_dir) == ["dummy_model"] and staging_empty(models_dir)
    with pytest.raises(InputError, match="bundled model"):
        add_model(AddRequest(str(DUMMY), ImportOptions(name="default", classes=("r", "g", "b"), gsd_m=0.5)))


def test_a_failed_import_leaves_nothing(models_dir):
    with pytest.raises(ModelError, match="--classes"):
        add_model(AddRequest(str(DUMMY), ImportOptions(gsd_m=0.5)))
    assert user_keys(models_dir) == [] and staging_empty(models_dir)
    with pytest.raises(InputError, match="SHA-256"):
        add_model(AddRequest(str(DUMMY), RGB, sha256="0" * 64))
    assert user_keys(models_dir) == [] and staging_empty(models_dir)


def test_download_with_progress_and_checksum(models_dir, server):
    www, url = server
    shutil.copy(DUMMY, www / "model.onnx")
    sha = hashlib.sha256(DUMMY.read_bytes()).hexdigest()
    progress = Recorder()
    added = add_model(AddRequest(f"{url}/model.onnx", RGB, sha256=sha.upper()), progress)
    assert added.key == "model" and added.bundle.provenance["source"] == f"{url}/model.onnx"
    assert ("start", "download", DUMMY.stat().st_size) in progress.events
    assert progress.events[-1] == ("advance", DUMMY.stat().st_size)
    assert user_keys(models_dir) == ["model"] and staging_empty(models_dir)


def test_checksum_mismatch_keeps_nothing(models_dir, server):
    www, url = server
    shutil.copy(DUMMY, www / "model.onnx")
    with pytest.raises(InputError, match="not the expected"):
        add_model(AddRequest(f"{url}/model.onnx", RGB, sha256="ab" * 32))
    assert user_keys(models_dir) == [] and staging_empty(models_dir)


def test_download_errors_are_clear(models_dir, server):
    www, url = server
    with pytest.raises(InputError, match="not found \\(HTTP 404\\)"):
        add_model(AddRequest(f"{url}/missing.onnx", RGB))
    (www / "page.onnx").write_text("<html><body>Please log in</body></html>")
    with pytest.raises(ModelError, match="not an ONNX model.*web page"):
        add_model(AddRequest(f"{url}/page.onnx", RGB))
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="cannot reach 127.0.0.1"):
        add_model(AddRequest(f"http://127.0.0.1:{port}/m.onnx", RGB))
    with pytest.raises(InputError, match="no such file"):
        add_model(AddRequest((models_dir.parent / "nope.onnx").as_uri(), RGB))
    assert user_keys(models_dir) == [] and staging_empty(models_dir)


def test_file_url_and_bundle_json_copies(models_dir, server, tmp_path):
    first = add_model(AddRequest(DUMMY.as_uri(), RGB))
    assert first.key == "dummy_model"
    bundle_json = models_dir / "dummy_model" / "dummy_model.json"
    copy = add_model(AddRequest(str(bundle_json), ImportOptions(name="copy")))
    assert copy.key == "copy" and copy.bundle.onnx.file == (models_dir / "copy" / "dummy_model.onnx").resolve()
    www, url = server
    shutil.copytree(models_dir / "dummy_model", www / "b")
    remote = add_model(AddRequest(f"{url}/b/dummy_model.json", ImportOptions(name="remote")))
    assert remote.bundle.class_names == ["red", "green", "blue"] and remote.bundle.onnx.file.is_file()
    assert user_keys(models_dir) == ["copy", "dummy_model", "remote"]


def test_remove_user_models_only(models_dir):
    add_model(AddRequest(str(DUMMY), RGB))
    with pytest.raises(InputError, match="bundled model.*only models in the user models folder"):
        remove_model("default")
    with pytest.raises(InputError, match="no user model named 'nope'"):
        remove_model("nope")
    assert remove_model("dummy_model").key == "dummy_model"
    assert user_keys(models_dir) == [] and not (models_dir / "dummy_model").exists()


def test_staging_contents_are_never_listed(models_dir):
    fake = models_dir / STAGING / "123-abcd" / "half"
    fake.mkdir(parents=True)
    (fake / "half.json").write_text("{}")
    (models_dir / STAGING / "123-abcd" / "download.part").write_bytes(b"\x08\x07")
    assert user_keys(models_dir) == []


# ---------------------------------------------------------------------------------------- CLI

def cli(*args: str, env_dir: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANDCOVER_MODELS_DIR": str(env_dir)}
    return subprocess.run([sys.executable, "-m", "backend", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300, **kw)


@pytest.mark.slow
def test_cli_add_list_segment_remove_round_trip(tmp_path):
    root = tmp_path / "models"
    result = cli("models", "add", str(DUMMY), "--name", "Dominant colour", env_dir=root)
    assert result.returncode == 2 and "--classes a,b,c" in result.stderr and "Traceback" not in result.stderr
    result = cli("models", "add", str(DUMMY), "--name", "Dominant colour", "--classes", "red,green,blue",
                 "--gsd-m", "0.5", "--progress", "json", env_dir=root)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["stage"] == "done" and lines[-1]["output"].endswith("dominant-colour.json")
    listed = json.loads(cli("models", "list", "--json", env_dir=root).stdout)
    mine = [m for m in listed if m["origin"] == "user"]
    assert [m["key"] for m in mine] == ["dominant-colour"]
    assert mine[0]["card"]["classes"] == ["red", "green", "blue"] and mine[0]["card"]["gsd_m"] == 0.5
    assert "imported from" in mine[0]["card"]["provenance"]
    assert json.loads(cli("models", "--json", env_dir=root).stdout) == listed  # the old spelling still works
    text = cli("models", env_dir=root).stdout
    assert "dominant-colour  [user]  Dominant colour" in text and "classes:    red, green, blue" in text

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 120, (3, 600, 640)).astype(np.uint8)
    truth = rng.integers(0, 3, (600, 640))
    for c in range(3):
        rgb[c][truth == c] = 200
    src = write_raster(tmp_path / "in.tif", rgb, pixel_size=0.5)
    out = tmp_path / "out.tif"
    result = cli("segment", str(src), str(out), "--model", "Dominant colour", "--progress", "none", env_dir=root)
    assert result.returncode == 0, result.stderr
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), truth)

    result = cli("models", "remove", "default", env_dir=root)
    assert result.returncode == 2 and "bundled" in result.stderr
    result = cli("models", "remove", "dominant-colour", env_dir=root)
    assert result.returncode == 0 and not (root / "dominant-colour").exists()
    result = cli("segment", str(src), str(out), "--model", "dominant-colour", env_dir=root)
    assert result.returncode == 2 and "no model named" in result.stderr


@pytest.mark.parametrize("cmd", [["models", "list"], ["models", "add"], ["models", "remove"]])
def test_models_subcommands_have_help(cmd, tmp_path):
    result = cli(*cmd, "--help", env_dir=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout


@pytest.mark.slow
def test_cancelling_a_download_leaves_nothing_listed(tmp_path, server):
    www, url = server
    (www / "slow-model.onnx").write_bytes(DUMMY.read_bytes() + bytes(4 << 20))  # ~65 chunks at 20 per second
    root = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANDCOVER_MODELS_DIR": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "backend", "models", "add", f"{url}/slow-model.onnx",
                             "--classes", "r,g,b", "--gsd-m", "0.5", "--progress", "json"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:  # wait until bytes are flowing, then cancel as the plugin would
        event = json.loads(line)
        seen.append(event)
        if event["stage"] == "download" and event["done"] > 0:
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert seen[-1]["done"] < seen[-1]["total"]
    assert json.loads(rest.splitlines()[-1])["kind"] == "cancelled"
    assert user_keys(root) == [] and staging_empty(root)

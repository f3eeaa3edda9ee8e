"""The managed worker runtime: what it installs, when it counts as usable, and how each failure is reported.

The failure tests run the real tools (Debian's venv, pip) in conditions a user meets: a Python whose
ensurepip part is missing, a package index that does not answer, a Cancel in the middle of pip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from landcover_plugin import runner
from landcover_plugin.contract import (
    ENV_PYTHON,
    REQUIREMENTS_DIR,
    CancelledError,
    DependencyError,
    InternalError,
    OutputError,
)
from landcover_plugin.runtime_setup import (
    RECORD_NAME,
    RuntimeRecord,
    RuntimeRequest,
    _failure,
    _Stages,
    env_python,
    find_base_python,
    pip_install_argvs,
    runtime_status,
    satisfies,
    setup_runtime,
)
from tests.plugin.helpers import python_without_ensurepip

VERSION = tuple(sys.version_info[:2])
MAJOR_MINOR = f"{VERSION[0]}.{VERSION[1]}"


def _requirements(tmp_path: Path, runtime: str = "numpy==1.26.4\n") -> Path:
    """A copy of the plugin's requirement lists whose runtime list can be changed."""
    d = tmp_path / "requirements"
    d.mkdir()
    for src in REQUIREMENTS_DIR.glob("*.txt"):
        (d / src.name).write_text(src.read_text())
    (d / "runtime.txt").write_text(runtime)
    return d


def _fake_runtime(root: Path, request: RuntimeRequest, fingerprint: str | None = None) -> Path:
    """A complete runtime as a finished setup leaves it: a real venv (without pip, for speed) and its record."""
    env_dir = root / "envs" / "previous"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, capture_output=True)
    RuntimeRecord(env="previous", python_version=MAJOR_MINOR, fingerprint=fingerprint or request.fingerprint,
                  tensorflow=request.tensorflow).write(root)
    return env_python(env_dir)


# ---------------------------------------------------------------------------------- the request


def test_request_lists_the_pinned_files_in_install_order(tmp_path: Path) -> None:
    onnx = RuntimeRequest(tmp_path / "rt")
    assert [(p.name, nodeps) for p, nodeps in onnx.requirement_files] == [("runtime.txt", False)]
    tf = RuntimeRequest(tmp_path / "rt", tensorflow=True)
    assert [(p.name, nodeps) for p, nodeps in tf.requirement_files] == [
        ("runtime.txt", False), ("tensorflow.txt", False), ("tensorflow-nodeps.txt", True)]
    assert tf.download_mb > onnx.download_mb and tf.disk_mb > onnx.disk_mb
    argvs = pip_install_argvs("/rt/bin/python", tf)
    assert all(a[:4] == ["/rt/bin/python", "-m", "pip", "install"] for a in argvs)  # never another Python's pip
    assert ["--no-deps" in a for a in argvs] == [False, False, True]


def test_runtime_list_is_lean() -> None:
    """The zip's runtime is what the ONNX path imports, not TensorFlow or development tools."""
    names = {line.split("==")[0].strip().lower() for line in (REQUIREMENTS_DIR / "runtime.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert names == {"numpy", "rasterio", "onnxruntime", "dask", "distributed"}  # segment, and batch on Dask


def test_fingerprint_follows_what_would_be_installed(tmp_path: Path) -> None:
    reqs = _requirements(tmp_path)
    before = RuntimeRequest(tmp_path / "rt", requirements_dir=reqs).fingerprint
    assert before == RuntimeRequest(tmp_path / "other", requirements_dir=reqs).fingerprint
    assert before != RuntimeRequest(tmp_path / "rt", tensorflow=True, requirements_dir=reqs).fingerprint
    (reqs / "runtime.txt").write_text("numpy==1.26.3\n")  # a plugin update that changes a pin
    assert before != RuntimeRequest(tmp_path / "rt", requirements_dir=reqs).fingerprint


def test_missing_requirement_list_is_reported(tmp_path: Path) -> None:
    with pytest.raises(InternalError, match="runtime.txt is missing; reinstall the Landcover plugin"):
        RuntimeRequest(tmp_path / "rt", requirements_dir=tmp_path)


# ----------------------------------------------------------------------------------- its state


def test_status_missing_ready_broken_outdated(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    reqs = _requirements(tmp_path)
    request = RuntimeRequest(root, requirements_dir=reqs)
    assert runtime_status(root, reqs).state == "missing"
    python = _fake_runtime(root, request)
    status = runtime_status(root, reqs)
    assert status.state == "ready" and status.python == str(python) and satisfies(status, request)
    assert not satisfies(status, RuntimeRequest(root, tensorflow=True, requirements_dir=reqs))
    (reqs / "runtime.txt").write_text("numpy==1.26.3\n")
    outdated = runtime_status(root, reqs)
    assert outdated.state == "outdated" and outdated.python is None and "another plugin version" in outdated.message
    python.unlink()
    assert runtime_status(root, reqs).state == "broken"


def test_torn_record_is_not_a_runtime(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    root.mkdir()
    (root / RECORD_NAME).write_text('{"env": "x", "python_ver')  # a write cut short
    assert runtime_status(root).state == "missing"


def test_find_python_order_setting_env_runtime_venv(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    plugin_dir = tmp_path / "src" / "landcover_plugin"
    (plugin_dir.parent / ".venv" / "bin").mkdir(parents=True)
    venv = plugin_dir.parent / ".venv" / "bin" / "python"
    venv.write_text("#!/bin/sh\n")
    venv.chmod(0o755)
    assert runner.find_python(None, {}, plugin_dir, root) == str(venv)  # no managed runtime yet
    managed = _fake_runtime(root, RuntimeRequest(root))
    assert runner.find_python(None, {}, plugin_dir, root) == str(managed)  # the runtime before the .venv
    assert runner.find_python(None, {ENV_PYTHON: sys.executable}, plugin_dir, root) == sys.executable
    assert runner.find_python(str(venv), {ENV_PYTHON: sys.executable}, plugin_dir, root) == str(venv)


def test_find_python_offers_setup_or_repair(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    plugin_dir = tmp_path / "zip" / "landcover_plugin"  # installed from the zip: no .venv beside it
    plugin_dir.mkdir(parents=True)
    with pytest.raises(DependencyError, match=r"not set up yet.*about \d+ MB.*Set up runtime"):
        runner.find_python(None, {}, plugin_dir, root)
    _fake_runtime(root, RuntimeRequest(root), fingerprint="0" * 64)  # set up by an older plugin version
    with pytest.raises(DependencyError, match="another plugin version.*Repair / reinstall"):
        runner.find_python(None, {}, plugin_dir, root)


# ------------------------------------------------------------------------------------ building


def test_base_python_matches_qgis_version() -> None:
    python = find_base_python(VERSION)
    out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    assert out.stdout.strip() == str(VERSION)
    with pytest.raises(DependencyError, match=r"no Python 3\.99 .*apt install python3\.99-venv"):
        find_base_python((3, 99), {})


def test_pip_output_becomes_rising_progress() -> None:
    seen: list[tuple[float, str]] = []
    stages = _Stages(lambda p, m: seen.append((p, m)))
    stages.venv("creating")
    for line in ("Collecting numpy==1.26.4 (from -r runtime.txt (line 1))", "  Downloading numpy-1.26.4.whl (18 MB)",
                 "Collecting click!=8.2.*,>=4.0", "Installing collected packages: numpy, click",
                 "Successfully installed click-8.5.1 numpy-1.26.4"):
        stages.pip_line(line)
    stages.verify()
    stages.done()
    percents = [p for p, _ in seen]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert [m for _, m in seen][1:3] == ["downloading numpy", "downloading click"]


def test_python_without_venv_support_names_the_apt_package(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    request = RuntimeRequest(root, base_python=str(python_without_ensurepip(tmp_path)))
    with pytest.raises(DependencyError, match=rf"sudo apt install python{MAJOR_MINOR}-venv") as info:
        setup_runtime(request)
    assert "ensurepip" in info.value.details
    assert runtime_status(root).state == "missing" and not list((root / "envs").iterdir())


def _offline_env(port: int) -> dict[str, str]:
    """pip pointed at a package index on 127.0.0.1 that refuses connections, with no local wheels either."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": f"http://127.0.0.1:{port}/simple/",
                "PIP_RETRIES": "0", "PIP_TIMEOUT": "5", "PIP_NO_CACHE_DIR": "1"})
    return env


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_index_keeps_the_previous_runtime(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    reqs = _requirements(tmp_path)
    previous = _fake_runtime(root, RuntimeRequest(root, requirements_dir=reqs))
    request = RuntimeRequest(root, requirements_dir=reqs)
    with pytest.raises(DependencyError, match="could not download the runtime packages.*check the network") as info:
        setup_runtime(request, env=_offline_env(_closed_port()))
    assert "numpy" in info.value.details  # pip's own log, for the Details button
    status = runtime_status(root, reqs)
    assert status.ready and status.python == str(previous)  # nothing lost: the old runtime still works
    assert [p.name for p in (root / "envs").iterdir()] == ["previous"]


class _SlowIndex:
    """A package index on 127.0.0.1 that accepts connections and never answers: pip hangs until cancelled."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connected = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.connected.set()

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def test_cancel_during_pip_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    reqs = _requirements(tmp_path)
    index = _SlowIndex()
    env = _offline_env(index.port)
    env["PIP_TIMEOUT"] = "60"
    try:
        with pytest.raises(CancelledError, match="nothing was changed"):
            setup_runtime(RuntimeRequest(root, requirements_dir=reqs), env=env, is_canceled=index.connected.is_set)
    finally:
        index.close()
    assert runtime_status(root, reqs).state == "missing"
    assert not list((root / "envs").iterdir())


def test_not_enough_disk_space_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    from landcover_plugin import runtime_setup

    monkeypatch.setitem(runtime_setup.RUNTIME_DISK_MB, "onnx", 10**9)  # a runtime bigger than any disk here
    root = tmp_path / "rt"
    with pytest.raises(OutputError, match=r"only \d+ MB are free on the disk holding .*; free some space"):
        setup_runtime(RuntimeRequest(root))
    assert runtime_status(root).state == "missing" and not (root / "envs").exists()


@pytest.mark.parametrize(("stage", "line", "kind", "text"), [
    ("pip", "OSError: [Errno 28] No space left on device", OutputError, "disk holding .* is full"),
    ("pip", "ProxyError('Cannot connect to proxy.', OSError('Tunnel connection failed: 407'))", DependencyError,
     "proxy"),
    ("verify", "ModuleNotFoundError: No module named 'rasterio'", InternalError, "Repair / reinstall"),
])
def test_each_failure_names_its_fix(tmp_path: Path, stage: str, line: str, kind: type, text: str) -> None:
    error = _failure(stage, ["Collecting numpy", line], RuntimeRequest(tmp_path / "rt"), "/usr/bin/python3")
    assert isinstance(error, kind)
    assert pytest.raises(kind, lambda: (_ for _ in ()).throw(error)).match(text)
    assert line in error.details


@pytest.mark.slow
def test_setup_installs_and_verifies_a_working_runtime(tmp_path: Path, real_dir: Path) -> None:
    """From the package index (pip's own configuration), then the backend segments a real raster in it."""
    root = tmp_path / "rt"
    old = _fake_runtime(root, RuntimeRequest(root), fingerprint="0" * 64)  # left by an older plugin version
    assert runtime_status(root).state == "outdated"
    seen: list[float] = []
    status = setup_runtime(RuntimeRequest(root), progress=lambda p, m: seen.append(p))
    assert status.ready and seen[-1] == 100.0
    assert not old.exists() and [p.name for p in (root / "envs").iterdir()] == [status.record.env]  # rebuilt
    assert {"numpy", "rasterio", "onnxruntime"} <= set(status.record.packages)
    assert "tensorflow" not in {n.lower() for n in status.record.packages}
    assert 0 < status.record.size_mb < 400
    out = tmp_path / "classes.tif"
    code = textwrap.dedent(f"""
        import rasterio, sys
        from backend.inference import segment
        from backend.bundle import resolve_model
        segment({str(real_dir / 'naip_rgbn_epsg26914.tif')!r}, {str(out)!r}, resolve_model('default'),
                runtime='onnx', bands=(1, 2, 3))
        with rasterio.open({str(out)!r}) as src:
            print(src.crs.to_epsg(), sorted(set(src.read(1).ravel().tolist())))
    """)
    run = subprocess.run([status.python, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**{k: v for k, v in os.environ.items() if k != ENV_PYTHON},
                              "PYTHONPATH": str(REQUIREMENTS_DIR.parent.parent)}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    epsg, classes = run.stdout.split(" ", 1)
    assert epsg == "26914" and len(eval(classes)) >= 2  # noqa: S307 - our own printed list

"""The worker runner: finding Python, protocol events, typed errors, cancel and clean-up (fake workers, fast)."""

from __future__ import annotations

import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from landcover_plugin import runner
from landcover_plugin.contract import ENV_PYTHON, ProgressEvent, encode_event, output_files, temp_path
from landcover_plugin.errors import CancelledError, DependencyError, InputError, InternalError


def _exe(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_python_order(tmp_path: Path) -> None:
    setting, env_py = _exe(tmp_path / "setting-python"), _exe(tmp_path / "env-python")
    plugin_dir = tmp_path / "repo" / "landcover_plugin"
    plugin_dir.mkdir(parents=True)
    venv = tmp_path / "repo" / ".venv" / "bin"
    venv.mkdir(parents=True)
    _exe(venv / "python")
    env = {ENV_PYTHON: str(env_py)}
    assert runner.find_python(str(setting), env, plugin_dir) == str(setting)
    assert runner.find_python(None, env, plugin_dir) == str(env_py)
    assert runner.find_python("", {}, plugin_dir) == str(venv / "python")


def test_find_python_errors_are_dependency_errors_that_say_how_to_fix(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "installed" / "landcover_plugin"
    plugin_dir.mkdir(parents=True)
    with pytest.raises(DependencyError, match="Set up runtime.*setup_runtime.*Worker Python.*LANDCOVER_PYTHON"):
        runner.find_python(None, {}, plugin_dir)
    with pytest.raises(DependencyError, match="LANDCOVER_PYTHON does not exist"):
        runner.find_python(None, {ENV_PYTHON: str(tmp_path / "nope")}, plugin_dir)


def _fake_worker(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_worker.py"
    script.write_text("import json, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_run_worker_reports_progress_and_result(tmp_path: Path) -> None:
    argv = _fake_worker(tmp_path, """
        print("noise from a library")
        for i in range(3):
            print(json.dumps({"stage": "predict", "done": i + 1, "total": 3, "message": ""}), flush=True)
        print(json.dumps({"stage": "warning", "message": "pixel size far from the model's"}), flush=True)
        print(json.dumps({"stage": "done", "output": "/x.tif", "areas": {"classes": [{"id": 1}]}}), flush=True)
    """)
    events = []
    result = runner.run_worker(argv, {}, on_event=events.append)
    assert [e.percent for e in events if isinstance(e, ProgressEvent)] == pytest.approx([100 / 3, 200 / 3, 100])
    assert result.done is not None and result.done.output == "/x.tif"
    assert result.done.areas["classes"] == [{"id": 1}]
    assert result.warnings == ["pixel size far from the model's"]
    assert "noise from a library" in result.log


def test_run_worker_raises_the_error_kind_the_worker_reported(tmp_path: Path) -> None:
    argv = _fake_worker(tmp_path, """
        line = {"stage": "error", "kind": "input", "message": "band 4 does not exist; use --bands 1,2,3"}
        print(json.dumps(line), flush=True)
        print("error: band 4 does not exist; use --bands 1,2,3", file=sys.stderr)
        sys.exit(2)
    """)
    with pytest.raises(InputError, match="band 4 does not exist; use --bands 1,2,3") as info:
        runner.run_worker(argv, {})
    assert info.value.kind == "input" and "band 4" in info.value.details


def test_a_worker_that_dies_without_an_error_event_is_internal(tmp_path: Path) -> None:
    argv = _fake_worker(tmp_path, """
        print("Traceback ...\\nRuntimeError: boom", file=sys.stderr)
        sys.exit(1)
    """)
    with pytest.raises(InternalError, match="exited with code 1.*RuntimeError: boom"):
        runner.run_worker(argv, {})


def test_a_worker_python_that_cannot_start_is_a_dependency_error(tmp_path: Path) -> None:
    with pytest.raises(DependencyError, match="could not start the worker Python"):
        runner.run_worker([str(tmp_path / "no-python"), "-c", "pass"], {})


def test_cancel_terminates_worker_and_removes_only_new_outputs(tmp_path: Path) -> None:
    out = tmp_path / "landcover.2024.tif"
    files = output_files(out)
    keep = tmp_path / "landcover.2023.qml"  # a neighbour's style that existed before: must survive
    keep.write_text("x")
    argv = _fake_worker(tmp_path, f"""
        open({str(temp_path(out, 4242))!r}, "w").write("partial")
        open({str(files.areas_json)!r}, "w").write("{{}}")
        print(json.dumps({{"stage": "predict", "done": 0, "total": 100, "message": ""}}), flush=True)
        time.sleep(60)
    """)
    started = threading.Event()
    cancel_at: list[float] = []

    def is_canceled() -> bool:
        if started.is_set() and not cancel_at:
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    t0 = time.monotonic()
    with pytest.raises(CancelledError):
        runner.run_worker(argv, {}, on_event=lambda e: started.set(), is_canceled=is_canceled,
                          cleanup=runner.OutputGuard(files.all()))
    assert time.monotonic() - t0 < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake_worker.py", keep.name]


def test_check_runtime_reports_the_workers_dependency_error() -> None:
    python = "/usr/bin/python3"  # Debian's system Python: no onnxruntime, no TensorFlow
    runner._RUNTIME_OK.pop(python, None)
    with pytest.raises(DependencyError) as info:
        runner.check_runtime(python)
    assert python in str(info.value) and info.value.kind == "dependency"


def test_check_runtime_accepts_onnxruntime_without_tensorflow(tmp_path: Path) -> None:
    # A worker Python with numpy, rasterio and onnxruntime but no TensorFlow can run ONNX bundles.
    fake = tmp_path / "site"
    for name in ("numpy", "rasterio", "onnxruntime"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("def set_default_logger_severity(level):\n    pass\n")
    python = tmp_path / "python"  # the system Python, with the fake packages after the backend on its path
    python.write_text(f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{fake}" exec /usr/bin/python3 "$@"\n')
    python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin"}
    runner.check_runtime(str(python), env)  # no exception
    runner._RUNTIME_OK.pop(str(python), None)
    shutil.rmtree(fake / "onnxruntime")
    with pytest.raises(DependencyError, match="neither onnxruntime nor TensorFlow"):
        runner.check_runtime(str(python), env)


def test_protocol_lines_from_the_contract_reach_the_runner(tmp_path: Path) -> None:
    line = encode_event(ProgressEvent("predict", 5, 10, "tiles"))
    argv = _fake_worker(tmp_path, f"print({line!r}, flush=True)\n")
    events = []
    runner.run_worker(argv, {}, on_event=events.append)
    assert events == [ProgressEvent("predict", 5, 10, "tiles")]

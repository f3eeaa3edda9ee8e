"""The worker runner: finding Python, argv, JSON progress, errors, cancel and clean-up (fake workers, fast)."""

from __future__ import annotations

import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from landcover_plugin import runner
from landcover_plugin.errors import LandcoverPluginError


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
    env = {runner.ENV_PYTHON: str(env_py)}
    assert runner.find_python(str(setting), env, plugin_dir) == str(setting)
    assert runner.find_python(None, env, plugin_dir) == str(env_py)
    assert runner.find_python("", {}, plugin_dir) == str(venv / "python")


def test_find_python_errors_say_how_to_fix(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "installed" / "landcover_plugin"
    plugin_dir.mkdir(parents=True)
    with pytest.raises(LandcoverPluginError, match="make setup.*LANDCOVER_PYTHON"):
        runner.find_python(None, {}, plugin_dir)
    with pytest.raises(LandcoverPluginError, match="LANDCOVER_PYTHON does not exist"):
        runner.find_python(None, {runner.ENV_PYTHON: str(tmp_path / "nope")}, plugin_dir)


def test_backend_found_in_source_tree_and_inside_plugin(tmp_path: Path) -> None:
    assert (runner.backend_parent() / "backend" / "__init__.py").is_file()
    packaged = tmp_path / "landcover_plugin"
    (packaged / "backend").mkdir(parents=True)
    (packaged / "backend" / "__init__.py").write_text("")
    assert runner.backend_parent(packaged) == packaged
    with pytest.raises(LandcoverPluginError, match="backend is missing"):
        runner.backend_parent(tmp_path / "x" / "landcover_plugin")


def test_worker_env_makes_backend_importable() -> None:
    env = runner.worker_env("/usr/bin/python3", {"PYTHONHOME": "/qgis", "PATH": "/bin"})
    assert env["PYTHONPATH"] == str(runner.backend_parent())
    assert env["SM_FRAMEWORK"] == "tf.keras" and env["TF_USE_LEGACY_KERAS"] == "1"
    assert "PYTHONHOME" not in env


def test_build_argv() -> None:
    args = runner.SegmentArgs("in.tif", "out.tif", model="m.json", overlap=16, batch_size=2, bands=[1, 2, 3],
                              resample=True, confidence="c.tif", window=(10, 20, 30, 40))
    assert runner.build_segment_argv("py", args) == [
        "py", "-m", "backend", "segment", "in.tif", "out.tif", "--model", "m.json", "--overlap", "16",
        "--batch-size", "2", "--bands", "1,2,3", "--resample", "--confidence", "c.tif", "--window", "10,20,30,40",
        "--progress", "json",
    ]
    assert runner.build_segment_argv("py", runner.SegmentArgs("a", "b"))[-2:] == ["--progress", "json"]


def test_parse_progress_lines() -> None:
    ev = runner.parse_progress_line('{"stage": "predict", "done": 3, "total": 12, "message": ""}\n')
    assert ev is not None and ev.stage == "predict" and ev.percent == 25.0
    done = runner.parse_progress_line('{"stage": "done", "output": "/o.tif", "areas": {"classes": []}}')
    assert done is not None and done.data["output"] == "/o.tif" and done.percent is None
    for junk in ("Segmentation Models: using tf.keras", "{not json", '{"no": "stage"}', "", "[1]"):
        assert runner.parse_progress_line(junk) is None


def _fake_worker(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_worker.py"
    script.write_text("import json, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(script), "-", "-", "-", str(tmp_path / "out.tif")]


def test_run_worker_reports_progress_and_result(tmp_path: Path) -> None:
    argv = _fake_worker(tmp_path, """
        print("noise from a library")
        for i in range(3):
            print(json.dumps({"stage": "predict", "done": i + 1, "total": 3, "message": ""}), flush=True)
        print(json.dumps({"stage": "warning", "message": "pixel size far from the model's"}), flush=True)
        print(json.dumps({"stage": "done", "output": "/x.tif", "areas": {"classes": [{"id": 1}]}}), flush=True)
    """)
    events: list[runner.ProgressEvent] = []
    result = runner.run_worker(argv, {}, on_event=events.append)
    assert [e.percent for e in events if e.stage == "predict"] == pytest.approx([100 / 3, 200 / 3, 100])
    assert result.output == "/x.tif" and result.areas["classes"] == [{"id": 1}]
    assert result.warnings == ["pixel size far from the model's"]
    assert "noise from a library" in result.log


def test_run_worker_error_messages(tmp_path: Path) -> None:
    argv = _fake_worker(tmp_path, """
        print(json.dumps({"stage": "error", "message": "band 4 does not exist; use --bands 1,2,3"}), flush=True)
        print("error: band 4 does not exist; use --bands 1,2,3", file=sys.stderr)
        sys.exit(2)
    """)
    with pytest.raises(LandcoverPluginError, match="band 4 does not exist; use --bands 1,2,3") as info:
        runner.run_worker(argv, {})
    assert "band 4" in info.value.details
    argv = _fake_worker(tmp_path, """
        print("Traceback ...\\nRuntimeError: boom", file=sys.stderr)
        sys.exit(1)
    """)
    with pytest.raises(LandcoverPluginError, match="RuntimeError: boom"):
        runner.run_worker(argv, {})


def test_cancel_terminates_worker_and_removes_only_new_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    keep = tmp_path / "out_previous_run.txt"  # same prefix, but existed before: must survive
    keep.write_text("x")
    argv = _fake_worker(tmp_path, f"""
        open({str(out) + '.part'!r}, "w").write("partial")
        open({str(tmp_path / 'out.areas.json')!r}, "w").write("{{}}")
        print(json.dumps({{"stage": "predict", "done": 0, "total": 100, "message": ""}}), flush=True)
        time.sleep(60)
    """)
    started = threading.Event()
    cancel_at: list[float] = []

    def on_event(event: runner.ProgressEvent) -> None:
        started.set()

    def is_canceled() -> bool:
        if started.is_set() and not cancel_at:
            cancel_at.append(time.monotonic())
        return bool(cancel_at)

    t0 = time.monotonic()
    with pytest.raises(runner.WorkerCanceled):
        runner.run_worker(argv, {}, on_event=on_event, is_canceled=is_canceled, cleanup=runner.OutputGuard([out]))
    assert time.monotonic() - t0 < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake_worker.py", keep.name]


def test_check_runtime_without_tensorflow_names_the_fix() -> None:
    python = "/usr/bin/python3"  # Debian's system Python has no TensorFlow
    with pytest.raises(LandcoverPluginError) as info:
        runner.check_runtime(python)
    message = str(info.value)
    assert "cannot import ONNX Runtime nor TensorFlow" in message
    assert f"{python} -m pip install -r " in message and "requirements.txt" in message


def test_check_runtime_accepts_onnxruntime_without_tensorflow(tmp_path) -> None:
    # A worker Python that has numpy, rasterio and onnxruntime but no TensorFlow can run ONNX bundles.
    fake = tmp_path / "site"
    for name in ("numpy", "rasterio", "onnxruntime"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("")
    python = "/usr/bin/python3"
    env = {"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin"}
    runner._RUNTIME_OK.pop(python, None)
    runner.check_runtime(python, env)  # no exception
    runner._RUNTIME_OK.pop(python, None)
    shutil.rmtree(fake / "onnxruntime")
    with pytest.raises(LandcoverPluginError, match="neither onnxruntime nor TensorFlow"):
        runner.check_runtime(python, env)

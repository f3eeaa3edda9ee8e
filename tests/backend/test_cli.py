"""The CLI contract the plugin and users rely on: help, exit codes, one-line errors, JSON lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.contract import output_files
from tests.conftest import REPO
from tests.data.rasters import random_rgb, write_raster

UNTRAINED = "untrained:Unet:resnet18"


def run_cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "backend", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout, **kw)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("cmd", [[], ["segment"], ["models"], ["info"], ["preview"]])
def test_help_works_without_tensorflow(cmd):
    result = run_cli(*cmd, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


@pytest.fixture
def small_rgb(tmp_path) -> Path:
    return write_raster(tmp_path / "small.tif", random_rgb(100, 120))


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing_input", "does not exist"),
        ("one_band", "needs 3"),
        ("corrupt", "cannot read"),
        ("missing_model", "no model named"),
        ("bad_overlap", "--overlap"),
        ("bad_window", "COL_OFF"),
        ("bad_output", "must be a GeoTIFF"),
        ("usage", "required"),
    ],
)
def test_user_mistakes_exit_2_with_one_line_and_no_output(tmp_path, small_rgb, case, message):
    out = tmp_path / "out" / "classes.tif"
    args = {
        "missing_input": ["segment", str(tmp_path / "nope.tif"), str(out), "--model", UNTRAINED],
        "one_band": ["segment", str(write_raster(tmp_path / "g.tif", random_rgb(10, 10)[:1])), str(out),
                     "--model", UNTRAINED],
        "corrupt": ["segment", str(tmp_path / "bad.tif"), str(out), "--model", UNTRAINED],
        "missing_model": ["segment", str(small_rgb), str(out), "--model", "no-such-model"],
        "bad_overlap": ["segment", str(small_rgb), str(out), "--model", UNTRAINED, "--overlap", "500"],
        "bad_window": ["segment", str(small_rgb), str(out), "--model", UNTRAINED, "--window", "1,2"],
        "bad_output": ["segment", str(small_rgb), str(tmp_path / "out.jpg"), "--model", UNTRAINED],
        "usage": ["segment"],
    }[case]
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last
    assert not out.exists()


def test_error_is_also_a_json_line_in_json_mode(tmp_path):
    result = run_cli("segment", str(tmp_path / "nope.tif"), str(tmp_path / "o.tif"), "--progress", "json",
                     "--model", UNTRAINED)
    assert result.returncode == 2
    last = json_lines(result.stdout)[-1]
    assert last["stage"] == "error" and "does not exist" in last["message"]


def test_models_and_info(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDCOVER_MODELS_DIR", str(tmp_path))
    result = run_cli("models", "--json")
    assert result.returncode == 0
    assert isinstance(json.loads(result.stdout), list)
    result = run_cli("info", "nothing-here")
    assert result.returncode == 2 and "no model named" in result.stderr


@pytest.mark.slow
def test_json_protocol_end_to_end_with_a_real_network(tmp_path):
    rgb = random_rgb(300, 280)
    src = write_raster(tmp_path / "in.tif", rgb)
    out = tmp_path / "classes.tif"
    result = run_cli("segment", str(src), str(out), "--model", UNTRAINED, "--progress", "json", "--batch-size", "2",
                     "--confidence", str(tmp_path / "conf.tif"))
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)  # every stdout line is JSON: nothing else may pollute the protocol
    predict = [line for line in lines if line["stage"] == "predict"]
    assert predict[0]["done"] == 0 and predict[-1]["done"] == predict[-1]["total"] == 4
    assert [p["done"] for p in predict] == sorted(p["done"] for p in predict)
    assert any(line["stage"] == "warning" and "RANDOM weights" in line["message"] for line in lines)
    done = lines[-1]
    assert done["stage"] == "done" and done["output"] == str(out)
    assert sum(c["pixels"] for c in done["areas"]["classes"]) == 300 * 280
    files = output_files(done["output"])  # the sidecars' names follow from the output (the contract's rule)
    assert all(p.is_file() for p in files.all()) and done["confidence"] == str(tmp_path / "conf.tif")
    assert (tmp_path / "conf.tif").is_file()


@pytest.mark.slow
def test_bar_mode_prints_the_area_table(tmp_path):
    src = write_raster(tmp_path / "in.tif", random_rgb(64, 64))
    result = run_cli("segment", str(src), str(tmp_path / "o.tif"), "--model", UNTRAINED)
    assert result.returncode == 0
    assert "woodland" in result.stdout and "area m2" in result.stdout
    assert "wrote" in result.stderr


@pytest.mark.slow
def test_terminating_the_worker_leaves_nothing_that_looks_finished(tmp_path):
    src = write_raster(tmp_path / "big.tif", np.tile(random_rgb(256, 256), (1, 8, 8)))
    out_dir = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "segment", str(src), str(out_dir / "c.tif"), "--model", UNTRAINED,
         "--progress", "json", "--batch-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    deadline = time.time() + 120
    for line in proc.stdout:
        msg = json.loads(line)
        if msg["stage"] == "predict" and msg["done"] >= 2 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(out_dir.iterdir()) == []


def test_doctor_checks_the_runtime_asked_for(monkeypatch, capsys):
    """The plugin's runtime setup verifies with 'doctor --runtime onnx'; a missing package names the fix."""
    from backend.cli import main

    assert main(["doctor", "--runtime", "onnx", "--progress", "json"]) == 0
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["stage"] == "info" and "onnx runtime" in event["message"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as in a Python without onnxruntime
    assert main(["doctor", "--runtime", "onnx", "--progress", "json"]) == 2
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["kind"] == "dependency" and "Set up runtime" in event["message"]


def test_doctor_without_tensorflow_names_the_tensorflow_runtime(monkeypatch, capsys):
    from backend.cli import main

    for name in ("tensorflow", "segmentation_models"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["doctor", "--runtime", "auto"]) == 0  # ONNX Runtime is enough for bundles with an export
    capsys.readouterr()
    assert main(["doctor", "--runtime", "tensorflow", "--progress", "json"]) == 2
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["kind"] == "dependency" and "Add TensorFlow runtime" in event["message"]

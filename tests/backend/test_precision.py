"""Which ONNX export runs (``--precision auto|fp32|int8``): CPU features, installed files, the JSON and the CLI."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio

from backend.bundle import BUNDLED_DIR, ModelBundle, OnnxExport, load_bundle
from backend.contract import PRECISIONS
from backend.errors import InputError, ModelError
from backend.inference import segment
from backend.precision import INT8_FEATURES, PrecisionChoice, choose_precision, cpu_features, fast_int8
from tests.backend.conftest import IdentityRuntime
from tests.conftest import REPO
from tests.data.rasters import random_rgb, write_raster

VNNI = frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"sse4_2", "avx2", "fma"})
ARM_DOTPROD = frozenset({"fp", "asimd", "asimddp"})


def make_bundle(folder: Path, *, fp32: bool = True, int8: bool = True, int8_entry: bool = True) -> ModelBundle:
    """A bundle naming a float export and (``int8_entry``) an INT8 one; ``fp32``/``int8``: which files exist."""
    fp32_file, int8_file = folder / "m.onnx", folder / "m.int8.onnx"
    for path, present in ((fp32_file, fp32), (int8_file, int8)):
        if present:
            path.touch()
    return ModelBundle(
        name="m", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25,
        onnx=OnnxExport(file=fp32_file, sha256="0" * 64, layout="NCHW"),
        onnx_int8=OnnxExport(file=int8_file, sha256="1" * 64, layout="NCHW") if int8_entry else None,
    )


# ------------------------------------------------------------------------------ CPU features

@pytest.mark.parametrize("features,found", [
    (VNNI, "avx512_vnni"),
    (frozenset({"avx_vnni"}), "avx_vnni"),
    (frozenset({"amx_int8", "avx2"}), "amx_int8"),
    (ARM_DOTPROD, "asimddp"),
    (AVX2, None),
    (frozenset({"asimd"}), None),
    (frozenset(), None),
])
def test_fast_int8_names_the_feature_that_makes_int8_fast(features, found):
    assert fast_int8(features) == found


def test_cpu_features_are_a_frozenset_of_lower_case_names():
    features = cpu_features()
    assert isinstance(features, frozenset)
    assert all(isinstance(f, str) and f == f.lower() and f.strip() == f and f for f in features)
    assert fast_int8() in (None, *INT8_FEATURES)


# ------------------------------------------------------------------------------ choose_precision

def test_auto_runs_int8_on_a_vnni_cpu_when_both_exports_are_installed(tmp_path):
    choice = choose_precision(make_bundle(tmp_path), "auto", "auto", features=VNNI)
    assert choice.precision == "int8" and "avx512_vnni" in choice.reason


def test_auto_runs_float_on_a_cpu_without_vnni(tmp_path):
    choice = choose_precision(make_bundle(tmp_path), "auto", "onnx", features=AVX2)
    assert choice.precision == "fp32" and "VNNI" in choice.reason


def test_auto_runs_int8_on_arm_with_the_dot_product_extension(tmp_path):
    choice = choose_precision(make_bundle(tmp_path), features=ARM_DOTPROD)
    assert choice.precision == "int8" and "asimddp" in choice.reason


@pytest.mark.parametrize("requested", ["fp32", "int8"])
@pytest.mark.parametrize("features", [VNNI, AVX2])
def test_an_explicit_precision_is_honoured_on_any_cpu(tmp_path, requested, features):
    choice = choose_precision(make_bundle(tmp_path), requested, "auto", features=features)
    assert choice == PrecisionChoice(requested, f"--precision {requested}")


def test_tensorflow_runs_the_float_model_only(tmp_path):
    bundle = make_bundle(tmp_path)
    with pytest.raises(InputError, match="--precision int8 runs on ONNX Runtime only"):
        choose_precision(bundle, "int8", "tensorflow", features=VNNI)
    assert choose_precision(bundle, "auto", "tensorflow", features=VNNI).precision == "fp32"
    assert choose_precision(bundle, "fp32", "tensorflow", features=VNNI).precision == "fp32"


def test_a_bundle_without_an_int8_export_runs_float(tmp_path):
    choice = choose_precision(make_bundle(tmp_path, int8=False, int8_entry=False), "auto", features=VNNI)
    assert choice.precision == "fp32" and "no INT8 export" in choice.reason


def test_int8_asked_of_a_bundle_without_an_int8_export_names_the_export_command(tmp_path):
    bundle = make_bundle(tmp_path, int8=False, int8_entry=False)
    with pytest.raises(ModelError, match="no INT8 export") as caught:
        choose_precision(bundle, "int8", features=VNNI)
    assert "export-onnx" in str(caught.value) and "--int8" in str(caught.value)
    assert "--precision fp32" in str(caught.value)


def test_only_the_int8_file_installed_as_in_the_plugin_zip(tmp_path):
    bundle = make_bundle(tmp_path, fp32=False, int8=True)
    choice = choose_precision(bundle, "auto", "auto", features=AVX2)
    assert choice.precision == "int8" and "only export installed" in choice.reason
    assert choose_precision(bundle, "auto", features=VNNI).precision == "int8"
    with pytest.raises(ModelError, match="choose precision int8 or auto") as caught:
        choose_precision(bundle, "fp32", features=VNNI)
    assert "m.onnx" in str(caught.value) and "not installed" in str(caught.value)


def test_only_the_float_file_installed_runs_float_and_says_why(tmp_path):
    bundle = make_bundle(tmp_path, fp32=True, int8=False)
    choice = choose_precision(bundle, "auto", features=VNNI)
    assert choice.precision == "fp32" and "not installed" in choice.reason and "m.int8.onnx" in choice.reason
    with pytest.raises(ModelError, match="choose precision fp32 or auto"):
        choose_precision(bundle, "int8", features=VNNI)


def test_unknown_precision_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="auto, fp32, int8"):
        choose_precision(make_bundle(tmp_path), "fp16", features=VNNI)
    with pytest.raises(InputError):
        PrecisionChoice("auto", "a run's precision is resolved")
    assert PRECISIONS == ("auto", "fp32", "int8")


def test_with_precision_swaps_in_the_int8_export(tmp_path):
    bundle = make_bundle(tmp_path)
    assert bundle.with_precision("fp32") is bundle
    assert bundle.with_precision("int8").onnx == bundle.onnx_int8
    assert bundle.export_for("fp32") == bundle.onnx and bundle.export_for("int8") == bundle.onnx_int8
    assert bundle.has_export("fp32") and bundle.has_export("int8")
    (tmp_path / "m.int8.onnx").unlink()
    assert not bundle.has_export("int8") and bundle.export_for("int8") is not None


def test_segment_refuses_int8_on_tensorflow_before_any_output(tmp_path):
    src = write_raster(tmp_path / "in.tif", random_rgb(40, 40))
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match="ONNX Runtime only"):
        segment(src, out_dir / "out.tif", make_bundle(tmp_path), runtime="tensorflow", precision="int8")
    assert not out_dir.exists()


def test_a_runtime_object_reports_no_precision(tmp_path, bundle):
    src = write_raster(tmp_path / "in.tif", random_rgb(40, 40))
    result = segment(src, tmp_path / "out.tif", bundle, runtime=IdentityRuntime())
    assert result.precision == "" and result.done_event().precision == ""


# ------------------------------------------------------------------------------ the bundle JSON

def _bundle_json(folder: Path, **entries) -> Path:
    data = ModelBundle(name="m", architecture="Unet", backbone="resnet18").to_dict()
    data["weights"] = None
    data.update(entries)
    path = folder / "m.json"
    path.write_text(json.dumps(data))
    return path


def test_both_exports_round_trip_through_the_json(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"f")
    (tmp_path / "m.int8.onnx").write_bytes(b"q")
    fp32 = {"file": "m.onnx", "sha256": "a" * 64, "opset": 17, "layout": "NCHW", "deepness": True,
            "weights_sha256": "c" * 64}
    int8 = {**fp32, "file": "m.int8.onnx", "sha256": "b" * 64}
    bundle = load_bundle(_bundle_json(tmp_path, onnx=fp32, onnx_int8=int8))
    assert bundle.onnx.file == (tmp_path / "m.onnx").resolve() and bundle.onnx.sha256 == "a" * 64
    assert bundle.onnx_int8.file == (tmp_path / "m.int8.onnx").resolve() and bundle.onnx_int8.sha256 == "b" * 64
    written = bundle.to_dict()
    assert written["onnx"] == fp32 and written["onnx_int8"] == int8
    again = load_bundle(bundle.save(tmp_path / "copy.json"))
    assert again.onnx == bundle.onnx and again.onnx_int8 == bundle.onnx_int8
    assert "onnx int8:    m.int8.onnx" in bundle.summary()


def test_a_bundle_with_only_the_int8_file_installed_loads(tmp_path):
    (tmp_path / "m.int8.onnx").write_bytes(b"q")
    entry = {"file": "m.onnx", "sha256": "a" * 64}
    bundle = load_bundle(_bundle_json(tmp_path, onnx=entry, onnx_int8={**entry, "file": "m.int8.onnx"}))
    assert not bundle.has_export("fp32") and bundle.has_export("int8")
    assert "file not installed" not in bundle.summary()


def test_an_int8_entry_without_a_float_entry_is_refused(tmp_path):
    (tmp_path / "m.int8.onnx").write_bytes(b"q")
    path = _bundle_json(tmp_path, onnx_int8={"file": "m.int8.onnx", "sha256": "b" * 64})
    with pytest.raises(ModelError, match="\"onnx_int8\" entry but no \"onnx\""):
        load_bundle(path)


# ------------------------------------------------------------------------------ the CLI

@pytest.fixture
def cli(capsys):
    """backend.cli.main, with the SIGTERM handler it installs put back afterwards."""
    from backend.cli import main

    previous = signal.getsignal(signal.SIGTERM)
    yield main
    signal.signal(signal.SIGTERM, previous)


def test_segment_help_lists_precision_and_tta(cli, capsys):
    with pytest.raises(SystemExit) as exited:
        cli(["segment", "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--precision {auto,fp32,int8}" in out and "--tta {none,flip,d4}" in out


@pytest.mark.parametrize("option", ["--precision", "--tta"])
def test_a_bogus_choice_exits_2_with_one_line(cli, capsys, tmp_path, option):
    with pytest.raises(SystemExit) as exited:
        cli(["segment", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), option, "bogus"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "bogus" in lines[0]
    assert captured.out == ""
    assert not (tmp_path / "out.tif").exists()


# ------------------------------------------------------------------------------ the real default model

DEMO = REPO / "demo" / "orthophoto.tif"
WINDOW = "0,1024,512,512"  # all five classes of demo/truth.tif are in this part of the scene


def _run_default(cli, capsys, src: Path, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    code = cli(["segment", str(src), str(out), "--progress", "json", *extra])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 0, lines[-1]
    assert lines[-1]["stage"] == "done"
    return lines[-1], lines


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    default = load_bundle(BUNDLED_DIR / "default" / "landcover.json")
    if not (default.has_export("fp32") and default.has_export("int8")):
        pytest.skip("the default bundle's float and INT8 ONNX files are not both installed")
    return Path(shutil.copyfile(DEMO, tmp_path / "ortho.tif"))


@pytest.mark.slow
def test_default_model_int8_and_fp32_agree_on_the_demo(cli, capsys, tmp_path, demo_copy):
    events = {}
    for precision in ("int8", "fp32"):
        done, lines = _run_default(cli, capsys, demo_copy, tmp_path / f"{precision}.tif", "--window", WINDOW,
                                   "--precision", precision, "--runtime", "onnx",
                                   "--confidence", str(tmp_path / f"{precision}.conf.tif"))
        assert done["precision"] == precision and done["runtime"] == "onnx" and done["tta"] == "none"
        assert (done["width"], done["height"]) == (512, 512)
        assert any(e["stage"] == "info" and e["message"] == f"precision: --precision {precision}" for e in lines)
        events[precision] = done
    with rasterio.open(tmp_path / "int8.tif") as a, rasterio.open(tmp_path / "fp32.tif") as b:
        int8, fp32 = a.read(1), b.read(1)
    assert len(np.unique(fp32)) >= 4  # a real mix of classes, not one class everywhere
    agreement = float((int8 == fp32).mean())
    assert agreement >= 0.99, agreement
    with rasterio.open(tmp_path / "int8.conf.tif") as a, rasterio.open(tmp_path / "fp32.conf.tif") as b:
        assert not np.array_equal(a.read(1), b.read(1))  # two different networks really ran
    for precision, done in events.items():
        counts = [c["pixels"] for c in done["areas"]["classes"]]
        raster = int8 if precision == "int8" else fp32
        assert counts == np.bincount(raster.ravel(), minlength=5).tolist()


@pytest.mark.slow
@pytest.mark.parametrize("features,expected", [(AVX2, "fp32"), (VNNI, "int8")])
def test_auto_follows_the_cpu_on_the_default_model(cli, capsys, tmp_path, demo_copy, monkeypatch, features, expected):
    monkeypatch.setattr("backend.precision.cpu_features", lambda: features)
    done, lines = _run_default(cli, capsys, demo_copy, tmp_path / "out.tif", "--window", "0,1024,256,256",
                               "--runtime", "onnx")
    assert done["precision"] == expected
    infos = [e["message"] for e in lines if e["stage"] == "info" and e["message"].startswith("precision: ")]
    assert len(infos) == 1 and ("avx512_vnni" in infos[0]) == (expected == "int8")


@pytest.mark.slow
def test_int8_asked_for_never_falls_back_to_the_float_tensorflow_model(cli, capsys, tmp_path, demo_copy, monkeypatch):
    """``--runtime auto`` goes to TensorFlow when onnxruntime is missing; an explicit INT8 request must not."""
    monkeypatch.setattr("backend.onnx_runtime.onnxruntime_available", lambda: False)
    monkeypatch.setattr("backend.runtime.TensorFlowRuntime",
                        lambda bundle: pytest.fail("--precision int8 fell back to TensorFlow"))
    done, _ = _run_default(cli, capsys, demo_copy, tmp_path / "out.tif", "--window", "0,1024,256,256",
                           "--precision", "int8")
    assert done["precision"] == "int8" and done["runtime"] == "onnx"

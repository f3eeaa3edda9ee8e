"""INT8 export: ``python -m backend export-onnx MODEL --int8 --calibration DIR|RASTER`` (backend/quantize.py).

The float models are tiny pixel-wise ONNX graphs built here, so the right class of every pixel is known:
one keeps a wide margin between its class scores (its INT8 export must classify exactly like it), the
other decides by a difference far below its activations' int8 step (its INT8 export must be refused).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import rasterio
from onnx import TensorProto, helper, numpy_helper

from backend.bundle import load_bundle
from backend.cli import main
from backend.contract import decode_event
from backend.deepness import ImportOptions, write_deepness_bundle
from backend.errors import InputError, ModelError
from backend.onnx_runtime import file_sha256, verified_onnx_path
from backend.quantize import (
    METADATA_KEY,
    CalibrationTiles,
    QuantSettings,
    is_quantized,
    quantize_export,
    raster_calibration_tiles,
)
from tests.backend.test_deepness import dominant_rgb
from tests.data.rasters import write_raster

REPO = Path(__file__).resolve().parents[2]
TILE = 64


def conv_model(path: Path, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> Path:
    """x -> Conv1x1(w1, b1) -> Relu -> Conv1x1(w2, b2) -> Softmax, NCHW, 64 px tiles, Deepness metadata."""
    inits = [numpy_helper.from_array(a.astype(np.float32), name) for a, name in
             ((w1[:, :, None, None], "w1"), (b1, "b1"), (w2[:, :, None, None], "w2"), (b2, "b2"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["logits"], name="head"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1, name="softmax"),
    ]
    classes = w2.shape[0]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, TILE, TILE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes, TILE, TILE])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_type": "Segmentor", "class_names": {str(i): f"c{i}" for i in range(classes)},
                       "resolution": 25}.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dominant_model(path: Path) -> Path:
    """Class = the dominant colour, with scores 4x the channel values: a wide margin on dominant_rgb images."""
    eye = np.eye(3)
    return conv_model(path, 4 * eye, np.zeros(3), eye, np.zeros(3))


def fragile_model(path: Path) -> Path:
    """Class 0 where green > 0.5, decided as (1000 r + g) - 1000 r: int8 cannot hold that difference."""
    w1 = np.array([[1000.0, 1.0, 0.0], [1000.0, 0.0, 0.0]])
    w2 = np.array([[1.0, -1.0], [0.0, 0.0]])
    return conv_model(path, w1, np.zeros(2), w2, np.array([-0.5, 0.0]))


def bundle_of(tmp_path: Path, model: Path, key: str) -> Path:
    return write_deepness_bundle(model, tmp_path / "models" / key, key, ImportOptions(gsd_m=0.25),
                                 {"source": str(model)})


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    rgb, _ = dominant_rgb(300, 260, seed=5)
    return write_raster(tmp_path / "calibration.tif", rgb)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def done_line(out: str):
    events = [decode_event(line) for line in out.splitlines()]
    return [e for e in events if e is not None and e.stage == "done"][-1]


def test_int8_export_is_recorded_beside_the_float_one_and_classifies_like_it(tmp_path, calibration, capsys) -> None:
    bundle_json = bundle_of(tmp_path, dominant_model(tmp_path / "dominant.onnx"), "dom")
    before = json.loads(bundle_json.read_text())
    assert main(["export-onnx", str(bundle_json), "--int8", "--calibration", str(calibration), "--tiles", "12"]) == 0
    out = capsys.readouterr().out
    assert "using the float export" in out and "% of pixels keep the float model's class" in out

    data = json.loads(bundle_json.read_text())
    assert data["onnx"] == before["onnx"]  # the float export stays, unchanged
    int8_file = bundle_json.parent / data["onnx_int8"]["file"]
    assert int8_file.name == "dom.int8.onnx" and data["onnx_int8"]["sha256"] == file_sha256(int8_file)
    record = data["provenance"]["onnx_quantization"]
    assert record["calibration"]["tiles"] == 12 and str(calibration) in record["calibration"]["source"]
    assert record["agreement_with_fp32"]["calibration_tiles"] >= 0.995
    assert record["fp32_sha256"] == before["onnx"]["sha256"]
    proto = onnx.load(str(int8_file))
    assert is_quantized(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"]) == {"0": "c0", "1": "c1", "2": "c2"} and METADATA_KEY in meta
    assert not list(bundle_json.parent.glob(".*part*"))

    rgb, truth = dominant_rgb(190, 230, seed=9)  # not the calibration image
    src = write_raster(tmp_path / "scene.tif", rgb)
    for precision in ("int8", "fp32"):
        out_tif = tmp_path / f"{precision}.tif"
        code = main(["segment", str(src), str(out_tif), "--model", str(bundle_json), "--precision", precision,
                     "--progress", "json"])
        assert code == 0
        assert done_line(capsys.readouterr().out).precision == precision
        np.testing.assert_array_equal(read(out_tif), truth)


def test_an_int8_export_that_loses_classes_is_refused_and_nothing_changes(tmp_path, calibration, capsys) -> None:
    bundle_json = bundle_of(tmp_path, fragile_model(tmp_path / "fragile.onnx"), "frag")
    before = bundle_json.read_bytes()
    files = sorted(p.name for p in bundle_json.parent.iterdir())
    code = main(["export-onnx", str(bundle_json), "--int8", "--calibration", str(calibration), "--tiles", "8"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "keeps the float model's class on only" in err and "minimum 99.50 %" in err and "unchanged" in err
    agreement = float(err.split("on only ")[1].split(" %")[0])
    assert agreement < 99.5
    assert bundle_json.read_bytes() == before
    assert sorted(p.name for p in bundle_json.parent.iterdir()) == files


@pytest.mark.parametrize("argv, message", [
    (["--int8"], "--int8 needs --calibration"),
    (["--calibration", "x.tif"], "--calibration and --tiles go with --int8"),
    (["--int8", "--calibration", "missing.tif"], "does not exist"),
    (["--int8", "--calibration", "EMPTY"], "no rasters"),
    (["--int8", "--calibration", "CAL", "--tiles", "0"], "--tiles must be 1.."),
])
def test_int8_option_mistakes_are_one_line_errors(tmp_path, calibration, capsys, argv, message) -> None:
    bundle_json = bundle_of(tmp_path, dominant_model(tmp_path / "dominant.onnx"), "dom")
    (tmp_path / "empty").mkdir()
    argv = [{"EMPTY": str(tmp_path / "empty"), "CAL": str(calibration)}.get(a, a) for a in argv]
    assert main(["export-onnx", str(bundle_json), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert "onnx_int8" not in json.loads(bundle_json.read_text())


def test_calibration_tiles_come_from_valid_pixels_of_every_raster(tmp_path) -> None:
    bundle = load_bundle(bundle_of(tmp_path, dominant_model(tmp_path / "dominant.onnx"), "dom"))
    folder = tmp_path / "cal"
    folder.mkdir()
    left = np.full((3, 200, 200), 10, np.uint8)
    left[:, :, 100:] = 0  # nodata on the right half
    write_raster(folder / "a.tif", left, nodata=0)
    write_raster(folder / "b.tif", np.full((3, 200, 200), 200, np.uint8))
    cal = raster_calibration_tiles(bundle, folder, count=40, seed=3)
    assert cal.tiles.shape[1:] == (TILE, TILE, 3) and 30 <= len(cal.tiles) <= 40
    values = {round(float(v) * 255) for v in np.unique(cal.tiles)}
    assert {10, 200} <= values <= {0, 10, 200}  # both rasters
    nodata_share = (cal.tiles == 0).all(axis=-1).mean(axis=(1, 2))
    assert nodata_share.max() <= 0.1  # tiles are >= 90 % valid pixels (as the engine would feed them)
    again = raster_calibration_tiles(bundle, folder, count=40, seed=3)
    np.testing.assert_array_equal(cal.tiles, again.tiles)
    assert "2 raster(s)" in cal.source
    with pytest.raises(InputError, match="valid pixels"):
        raster_calibration_tiles(bundle, write_raster(tmp_path / "blank.tif", np.zeros((3, 80, 80), np.uint8),
                                                      nodata=0), count=4)


def test_an_already_quantized_float_entry_is_refused(tmp_path, calibration) -> None:
    bundle_json = bundle_of(tmp_path, dominant_model(tmp_path / "dominant.onnx"), "dom")
    bundle = load_bundle(bundle_json)
    cal = raster_calibration_tiles(bundle, calibration, count=4)
    quantize_export(bundle, cal)
    int8 = load_bundle(bundle_json).with_precision("int8")
    with pytest.raises(ModelError, match="already quantized"):
        quantize_export(int8, CalibrationTiles(cal.tiles, "again"), QuantSettings())


def test_the_default_bundle_ships_a_checked_int8_export_beside_its_float_one() -> None:
    bundle = load_bundle(REPO / "backend" / "bundles" / "default" / "landcover.json")
    assert bundle.onnx is not None and bundle.onnx_int8 is not None
    verified_onnx_path(bundle.with_precision("int8"))  # file present and its checksum matches the JSON
    record = bundle.provenance["onnx_quantization"]
    assert record["fp32_sha256"] == bundle.onnx.sha256
    assert min(record["agreement_with_fp32"]["orthophotos"].values()) >= 0.995
    assert record["activations"].startswith("uint8")

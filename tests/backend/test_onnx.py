"""ONNX export and the ONNX Runtime path (issue 5).

Two small exports are made once per module (U-Net-ResNet18 at 64 px tiles, random weights): a float32
one (NHWC) and a float16-weights Deepness one (NCHW). Everything else copies or reads them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from backend.bundle import ModelBundle, OnnxExport, Preprocessing, bundle_from_dict, load_bundle, with_weights
from backend.errors import LandcoverError
from tests.conftest import REPO
from tests.data.rasters import write_raster

TILE = 64


def _make_bundle(folder: Path, dtype: str) -> Path:
    """A saved random-weights U-Net-ResNet18 bundle (export needs a weights file)."""
    from backend.bundle import untrained_bundle
    from backend.models import build_from_bundle, save_weights

    folder.mkdir(parents=True)
    untrained = untrained_bundle("untrained:Unet:resnet18", tile_size=TILE)
    weights = save_weights(build_from_bundle(untrained), folder / "landcover.weights.h5", dtype=dtype)
    return replace(untrained, name="onnx-test", weights=weights).save(folder / "landcover.json")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(json path, export report) of a float32-weights NHWC export."""
    from backend.onnx_export import export_onnx

    json_path = _make_bundle(tmp_path_factory.mktemp("f32") / "bundle", "float32")
    return json_path, export_onnx(load_bundle(json_path))


@pytest.fixture(scope="module")
def exported_deepness(tmp_path_factory):
    """(json path, export report) of a float16-weights Deepness (NCHW) export."""
    from backend.onnx_export import export_onnx

    json_path = _make_bundle(tmp_path_factory.mktemp("f16") / "bundle", "float16")
    return json_path, export_onnx(load_bundle(json_path), deepness=True)


def _tiles(n: int = 4, seed: int = 1) -> np.ndarray:
    """Smooth synthetic RGB tiles (n, TILE, TILE, 3) in 0..255."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, TILE // 8, TILE // 8, 3)) * 255
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.float32)


def _copy_bundle(json_path: Path, dest: Path) -> Path:
    shutil.copytree(json_path.parent, dest)
    return dest / json_path.name


# ---- export round trip ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_records_the_onnx_file_in_the_bundle(exported):
    json_path, report = exported
    entry = json.loads(json_path.read_text())["onnx"]
    assert entry["file"] == "landcover.onnx"
    assert entry["opset"] == 17 and entry["layout"] == "NHWC" and entry["deepness"] is False
    assert len(entry["sha256"]) == 64
    bundle = load_bundle(json_path)
    assert bundle.onnx is not None and bundle.onnx.file == json_path.with_suffix(".onnx")
    assert report.float16_tensors == 0  # random float32 weights: float16 would not be lossless
    assert not list(json_path.parent.glob("*.part*"))
    assert "onnx:" in bundle.summary()


@pytest.mark.slow
def test_export_uses_the_fast_equivalent_upsampling(exported):
    import onnx

    model = onnx.load(str(load_bundle(exported[0]).onnx.file))
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 5  # U-Net decoder stages
    for node in resizes:
        attrs = {a.name: a.s for a in node.attribute if a.type == onnx.AttributeProto.STRING}
        assert attrs["coordinate_transformation_mode"] == b"asymmetric" and attrs["nearest_mode"] == b"floor"


@pytest.mark.slow
def test_onnx_matches_tensorflow_on_tiles(exported):
    from backend.runtime import TensorFlowRuntime, make_runtime

    bundle = load_bundle(exported[0])
    x = bundle.preprocessing.apply(_tiles())
    onnx_rt = make_runtime(bundle, "auto")
    assert onnx_rt.name == "onnx"
    expected = TensorFlowRuntime(bundle).predict(x)
    got = onnx_rt.predict(x)
    assert got.shape == expected.shape == (4, TILE, TILE, 5) and got.dtype == np.float32
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.999
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.slow
def test_segment_gives_the_same_classes_with_both_runtimes(exported, tmp_path):
    from backend.inference import segment

    bundle = load_bundle(exported[0])
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (3, 20, 18)).astype(np.uint8)
    image = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :150, :130]
    src = write_raster(tmp_path / "in.tif", np.ascontiguousarray(image))
    rasters = {}
    for kind in ("onnx", "tensorflow"):
        result = segment(src, tmp_path / f"{kind}.tif", bundle, runtime=kind, batch_size=3)
        assert result.runtime == kind
        with rasterio.open(result.output) as ds:
            rasters[kind] = ds.read(1)
    assert rasters["onnx"].shape == (150, 130)
    assert (rasters["onnx"] == rasters["tensorflow"]).mean() >= 0.999


@pytest.mark.slow
def test_onnx_path_never_imports_tensorflow(exported, tmp_path):
    src = write_raster(tmp_path / "in.tif", np.random.default_rng(0).integers(0, 256, (3, 70, 90)).astype(np.uint8))
    code = (
        "import sys\n"
        "from backend.bundle import load_bundle\n"
        "from backend.inference import segment\n"
        f"r = segment({str(src)!r}, {str(tmp_path / 'out.tif')!r}, load_bundle({str(exported[0])!r}), runtime='onnx')\n"
        "assert r.runtime == 'onnx'\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'segmentation_models')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---- float16 weights and Deepness -------------------------------------------------------------------------------


@pytest.mark.slow
def test_float16_bundle_exports_float16_weights_losslessly(exported_deepness):
    json_path, report = exported_deepness
    assert report.float16_tensors >= 20  # every conv kernel: the bundle's weights are float16 already
    assert report.argmax_agreement >= 0.999 and report.max_prob_diff <= 1e-4
    weights_mb = load_bundle(json_path).weights.stat().st_size / 1e6
    assert report.size_bytes / 1e6 < 1.3 * weights_mb + 1  # about the float16 weights file, not twice it


@pytest.mark.slow
def test_deepness_metadata_and_layout(exported_deepness):
    import onnx

    json_path, _ = exported_deepness
    bundle = load_bundle(json_path)
    assert bundle.onnx.layout == "NCHW" and bundle.onnx.deepness
    model = onnx.load(str(bundle.onnx.file))
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}  # Deepness json.loads every value
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == {"0": "background", "1": "building", "2": "woodland", "3": "water", "4": "road"}
    assert meta["resolution"] == pytest.approx(25.0)  # cm per pixel
    assert meta["tiles_size"] == TILE and meta["tile_size"] == TILE
    assert meta["tiles_overlap"] == round(100 * bundle.overlap / TILE)  # percent
    assert meta["standardization_mean"] == [0.0, 0.0, 0.0] and meta["standardization_std"] == [1.0, 1.0, 1.0]

    def dims(value):
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    assert dims(model.graph.input[0]) == ["batch", 3, TILE, TILE]
    assert dims(model.graph.output[0]) == ["batch", 5, TILE, TILE]


@pytest.mark.slow
def test_deepness_export_runs_as_deepness_feeds_it(exported_deepness):
    """Deepness: NCHW float32 of pixel/255, standardised with the metadata; output NCHW probabilities."""
    from backend.onnx_runtime import import_onnxruntime
    from backend.runtime import TensorFlowRuntime, make_runtime

    bundle = load_bundle(exported_deepness[0])
    ort = import_onnxruntime()
    session = ort.InferenceSession(str(bundle.onnx.file), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    pixels = _tiles(2)
    x = (pixels / 255.0 - np.array(meta["standardization_mean"])) / np.array(meta["standardization_std"])
    nchw = session.run(None, {session.get_inputs()[0].name: x.transpose(0, 3, 1, 2).astype(np.float32)})[0]
    assert nchw.shape == (2, 5, TILE, TILE)
    np.testing.assert_allclose(nchw.sum(axis=1), 1.0, atol=1e-4)
    # The backend runs the same file through its NHWC interface, transposing as needed.
    backend_probs = make_runtime(bundle, "onnx").predict(bundle.preprocessing.apply(pixels))
    np.testing.assert_allclose(backend_probs, nchw.transpose(0, 2, 3, 1), atol=1e-6)
    expected = TensorFlowRuntime(bundle).predict(bundle.preprocessing.apply(pixels))
    assert np.abs(backend_probs - expected).max() <= 1e-4


def test_deepness_metadata_folds_the_pixel_scale_into_standardisation():
    from backend.onnx_export import deepness_metadata

    pre = Preprocessing(scale=1.0, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    bundle = ModelBundle(name="m", architecture="Unet", backbone="resnet18", tile_size=256, default_overlap=64,
                         gsd_m=0.5, preprocessing=pre)
    meta = deepness_metadata(bundle)
    # (p/255 - mean') / std' must equal (p/1 - mean) / std for every pixel value p.
    p = np.array([0.0, 17.0, 255.0])[:, None]
    deepness = (p / 255 - np.array(meta["standardization_mean"])) / np.array(meta["standardization_std"])
    np.testing.assert_allclose(deepness, bundle.preprocessing.apply(p * np.ones((1, 3))), rtol=1e-5)
    assert meta["resolution"] == 50.0 and meta["tiles_overlap"] == 25
    assert json.loads(json.dumps(meta)) == meta  # every value survives the JSON text Deepness parses


# ---- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_checksum_mismatch_is_a_clear_error(exported, tmp_path):
    import onnx

    from backend.runtime import make_runtime

    json_path = _copy_bundle(exported[0], tmp_path / "copy")
    model = onnx.load(str(json_path.with_suffix(".onnx")))
    model.doc_string = "edited"  # still a whole, valid ONNX model, but not the one the bundle names
    onnx.save(model, str(json_path.with_suffix(".onnx")))
    bundle = load_bundle(json_path)  # loading only checks the file exists (cheap for 'models' listings)
    for kind in ("onnx", "auto"):
        with pytest.raises(LandcoverError, match="does not match the checksum.*export-onnx"):
            make_runtime(bundle, kind)
    with open(json_path.with_suffix(".onnx"), "ab") as f:
        f.write(b"tampered")  # bytes that make it no ONNX model at all
    with pytest.raises(LandcoverError, match="truncated or corrupt.*re-copy"):
        make_runtime(bundle, "onnx")


@pytest.mark.slow
def test_stale_export_after_retraining_is_a_clear_error(exported, tmp_path):
    from backend.runtime import make_runtime

    json_path = _copy_bundle(exported[0], tmp_path / "copy")
    weights = load_bundle(json_path).weights
    with open(weights, "ab") as f:  # stands in for new weights written over the old file
        f.write(b"\0")
    with pytest.raises(LandcoverError, match="exported from other weights.*export-onnx"):
        make_runtime(load_bundle(json_path), "onnx")


@pytest.mark.slow
def test_missing_onnx_file(exported, tmp_path):
    from backend.onnx_export import export_onnx
    from backend.runtime import TensorFlowRuntime, make_runtime

    json_path = _copy_bundle(exported[0], tmp_path / "copy")
    json_path.with_suffix(".onnx").unlink()
    bundle = load_bundle(json_path)  # still loads: TensorFlow can run it
    with pytest.raises(LandcoverError, match="ONNX file .* is missing; re-export it with .*export-onnx"):
        make_runtime(bundle, "onnx")
    assert isinstance(make_runtime(bundle, "auto"), TensorFlowRuntime)
    export_onnx(bundle, check_tiles=1)  # the advised fix works
    assert make_runtime(load_bundle(json_path), "onnx").name == "onnx"


@pytest.mark.slow
def test_missing_onnxruntime(exported, tmp_path, monkeypatch, capsys):
    from backend.cli import main
    from backend.runtime import TensorFlowRuntime, make_runtime

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes 'import onnxruntime' raise ImportError
    bundle = load_bundle(exported[0])
    with pytest.raises(LandcoverError, match="onnxruntime is not installed.*Set up runtime.*make setup"):
        make_runtime(bundle, "onnx")
    assert isinstance(make_runtime(bundle, "auto"), TensorFlowRuntime)  # auto falls back
    src = write_raster(tmp_path / "in.tif", np.zeros((3, 40, 40), np.uint8))
    code = main(["segment", str(src), str(tmp_path / "out.tif"), "--model", str(exported[0]), "--runtime", "onnx",
                 "--progress", "none"])
    assert code == 2
    assert "onnxruntime is not installed" in capsys.readouterr().err
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.slow
def test_onnx_only_bundle_as_the_plugin_zip_ships_it(exported, tmp_path, monkeypatch):
    """The zip ships the bundle JSON and its ONNX file, not the TensorFlow weights the JSON names."""
    from backend.runtime import make_runtime

    json_path = _copy_bundle(exported[0], tmp_path / "zip")
    bundle = load_bundle(json_path)
    bundle.weights.unlink()
    bundle = load_bundle(json_path)
    assert not bundle.has_weights and not bundle.is_untrained
    assert "not installed (ONNX export only" in bundle.summary()
    assert make_runtime(bundle, "auto").name == "onnx"
    with pytest.raises(LandcoverError, match="no TensorFlow weights in this installation.*ONNX runtime"):
        make_runtime(bundle, "tensorflow")
    data = json.loads(json_path.read_text())
    del data["weights"]  # an ONNX-only bundle need not name weights at all
    assert bundle_from_dict(data, json_path).weights is None
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(LandcoverError, match="onnxruntime is not installed.*Set up runtime") as info:
        make_runtime(bundle, "auto")  # not TensorFlow, which has no weights here: the error names the real fix
    assert info.value.kind == "dependency"
    json_path.with_name(bundle.onnx.file.name).unlink()
    with pytest.raises(LandcoverError, match="names no weights file and no ONNX export"):
        bundle_from_dict(data, json_path)


def test_runtime_onnx_without_an_export_is_a_clear_error():
    from backend.bundle import untrained_bundle
    from backend.runtime import RUNTIMES, make_runtime

    assert RUNTIMES == ("auto", "onnx", "tensorflow")
    untrained = untrained_bundle("untrained:Unet:resnet18")
    with pytest.raises(LandcoverError, match="untrained .* has no ONNX export; use --runtime tensorflow"):
        make_runtime(untrained, "onnx")
    saved = replace(untrained, weights=Path("w.weights.h5"), source=Path("/models/m.json"))
    with pytest.raises(LandcoverError, match="has no ONNX export; create it with 'python -m backend export-onnx"):
        make_runtime(saved, "onnx")


def test_exporting_an_untrained_model_is_refused():
    from backend.bundle import untrained_bundle
    from backend.onnx_export import export_onnx

    with pytest.raises(LandcoverError, match="not a saved bundle"):
        export_onnx(untrained_bundle("untrained:Unet:resnet18"))


# ---- bundle JSON entry -------------------------------------------------------------------------------------------


def _bundle_dict(tmp_path: Path, onnx_entry) -> tuple[dict, Path]:
    (tmp_path / "w.weights.h5").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"y")
    data = ModelBundle(name="m", architecture="Unet", backbone="resnet18", weights=tmp_path / "w.weights.h5").to_dict()
    data["onnx"] = onnx_entry
    return data, tmp_path / "m.json"


def test_onnx_entry_round_trips_through_the_json(tmp_path):
    entry = {"file": "m.onnx", "sha256": "a" * 64, "opset": 17, "layout": "NCHW", "deepness": True,
             "weights_sha256": "b" * 64}
    data, source = _bundle_dict(tmp_path, entry)
    bundle = bundle_from_dict(data, source)
    assert bundle.onnx == OnnxExport(tmp_path / "m.onnx", "a" * 64, 17, "NCHW", True, "b" * 64)
    assert bundle.to_dict()["onnx"] == entry
    data.pop("onnx")
    assert bundle_from_dict(data, source).onnx is None and "onnx" not in bundle_from_dict(data, source).to_dict()


@pytest.mark.parametrize("entry,message", [
    ({"file": "m.onnx"}, "needs \"file\" and \"sha256\""),
    ({"file": "m.onnx", "sha256": "xyz"}, "not a 64-digit"),
    ({"file": "m.onnx", "sha256": "a" * 64, "layout": "NWHC"}, "layout"),
    ("m.onnx", "needs \"file\""),
])
def test_malformed_onnx_entry_is_a_clear_error(tmp_path, entry, message):
    data, source = _bundle_dict(tmp_path, entry)
    with pytest.raises(LandcoverError, match=message):
        bundle_from_dict(data, source)


def test_new_weights_drop_the_old_onnx_export(tmp_path):
    data, source = _bundle_dict(tmp_path, {"file": "m.onnx", "sha256": "a" * 64})
    bundle = bundle_from_dict(data, source)
    assert with_weights(bundle, tmp_path / "w.weights.h5").onnx is None


def test_thread_count_comes_from_the_environment(monkeypatch):
    from backend.onnx_runtime import inference_threads

    monkeypatch.setenv("LANDCOVER_THREADS", "3")
    assert inference_threads() == 3
    monkeypatch.setenv("LANDCOVER_THREADS", "lots")
    with pytest.raises(LandcoverError, match="LANDCOVER_THREADS"):
        inference_threads()
    monkeypatch.delenv("LANDCOVER_THREADS")
    assert inference_threads() >= 1

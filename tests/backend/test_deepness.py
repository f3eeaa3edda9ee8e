"""Deepness ONNX import: metadata, graph shapes, asking for what is missing, and exact segmentation results.

The fixtures in tests/data/deepness/ come from the Deepness plugin's tests; the other models are built
here with the ``onnx`` helper API. Every model is pixel-wise (or a pure crop), so the right class of
every pixel is known from the input alone: any error in tiling, context, blending or readout shows up.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rasterio
from onnx import TensorProto, helper

from backend.bundle import load_bundle
from backend.contract import LANDCOVER_CLASSES, output_files
from backend.deepness import ImportOptions, class_infos, parse_metadata, write_deepness_bundle
from backend.errors import InputError, ModelError
from backend.inference import segment
from tests.data.rasters import write_raster

DATA = Path(__file__).resolve().parent.parent / "data" / "deepness"


# ------------------------------------------------------------------------------------ helpers

def dominant_rgb(height: int, width: int, seed: int = 0, block: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image whose dominant channel follows blocks of random classes (never a tie), and that class map.

    Blocks are smaller than a tile but the pattern covers many tiles, so seams would show.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 3, (height // block + 1, width // block + 1))
    classes = np.repeat(np.repeat(coarse, block, 0), block, 1)[:height, :width]
    classes = np.where(rng.random((height, width)) < 0.05, rng.integers(0, 3, (height, width)), classes)
    rgb = rng.integers(0, 120, (3, height, width)).astype(np.uint8)
    top = rng.integers(150, 256, (height, width)).astype(np.uint8)
    for c in range(3):
        rgb[c][classes == c] = top[classes == c]
    return rgb, classes.astype(np.uint8)


def add(tmp_path: Path, model: Path, key: str = "m", **options) -> Path:
    """Import ``model`` as a bundle in a fresh folder; returns the bundle JSON."""
    folder = tmp_path / "models" / key
    return write_deepness_bundle(model, folder, key, ImportOptions(**options), {"source": str(model)})


def run(tmp_path: Path, bundle_json: Path, rgb: np.ndarray, **kw) -> tuple[np.ndarray, dict]:
    src = write_raster(tmp_path / "in.tif", rgb, pixel_size=0.5)
    out = tmp_path / "out.tif"
    segment(src, out, load_bundle(bundle_json), runtime="onnx", **kw)
    with rasterio.open(out) as ds:
        classes = ds.read(1)
    return classes, json.loads(output_files(out).areas_json.read_text())


def pixelwise(model: Path, rgb: np.ndarray, output: int = 0) -> np.ndarray:
    """Run a pixel-wise model on every pixel at once (packed into its own tiles): the oracle for it."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    side = inp.shape[-1]
    flat = rgb.reshape(3, -1).astype(np.float32) / 255
    n = -(-flat.shape[1] // (side * side))
    packed = np.zeros((3, n * side * side), np.float32)
    packed[:, : flat.shape[1]] = flat
    tiles = packed.reshape(3, n, side, side).transpose(1, 0, 2, 3)
    outs = [session.run(None, {inp.name: tiles[i : i + 1]})[output] for i in range(n)]
    res = np.concatenate(outs)  # (n, C, side, side)
    return res.transpose(1, 0, 2, 3).reshape(res.shape[1], -1)[:, : flat.shape[1]].reshape(-1, *rgb.shape[1:])


def build_model(path: Path, nodes, out_shape, *, in_shape=("N", 3, 64, 64), out_type=TensorProto.FLOAT,
                metadata: dict | None = None, outputs=None) -> Path:
    """A small ONNX model from ``nodes`` (input ``x``, output ``y``)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        outputs or [helper.make_tensor_value_info("y", out_type, list(out_shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def identity_model(path: Path, **kw) -> Path:
    """Scores = the input channels (argmax = dominant colour)."""
    return build_model(path, [helper.make_node("Identity", ["x"], ["y"])], kw.pop("out_shape", ("N", 3, 64, 64)),
                       **kw)


# ----------------------------------------------------------------------- the Deepness fixtures

def test_dummy_model_segments_exactly_the_dominant_colour(tmp_path):
    """The exact oracle: each class is its pixel's dominant colour, across 512 px tiles, overlaps and edges."""
    json_path = add(tmp_path, DATA / "dummy_model.onnx", classes=("red", "green", "blue"), gsd_m=0.5)
    bundle = load_bundle(json_path)
    assert bundle.onnx.fixed_batch == 1 and bundle.tile_size == 512 and bundle.class_names == ["red", "green", "blue"]
    rgb, truth = dominant_rgb(700, 1100)
    assert (np.sort(rgb, axis=0)[-1] > np.sort(rgb, axis=0)[-2]).all()  # no ties anywhere
    classes, areas = run(tmp_path, json_path, rgb, overlap=96, batch_size=3)
    np.testing.assert_array_equal(classes, truth)
    assert [c["name"] for c in areas["classes"]] == ["red", "green", "blue"]
    assert [c["pixels"] for c in areas["classes"]] == np.bincount(truth.ravel(), minlength=3).tolist()


def test_sigmoid_fixture_thresholds_one_class_against_background(tmp_path):
    model = DATA / "one_output_sigmoid_bsx1x512x512.onnx"
    json_path = add(tmp_path, model, gsd_m=0.5)  # class names come from the metadata
    bundle = load_bundle(json_path)
    assert bundle.class_names == ["background", "Coffee"] and bundle.onnx.output_kind == "sigmoid"
    rgb = np.random.default_rng(1).integers(0, 256, (3, 600, 530)).astype(np.uint8)
    p = pixelwise(model, rgb)[0]
    classes, areas = run(tmp_path, json_path, rgb)
    sure = np.abs(p - 0.5) > 1e-4
    np.testing.assert_array_equal(classes[sure], (p > 0.5)[sure].astype(np.uint8))
    assert [c["name"] for c in areas["classes"]] == ["background", "Coffee"]
    # This network's probabilities stay below 0.5 on any RGB: a threshold at their median splits the pixels,
    # which shows the bundle's threshold is what decides (as seg_thresh from the metadata would).
    t = round(float(np.median(p)), 4)
    data = json.loads(json_path.read_text())
    data["onnx"]["threshold"] = t
    json_path.write_text(json.dumps(data))
    classes, areas = run(tmp_path, json_path, rgb)
    sure = np.abs(p - t) > 1e-4
    assert 0.3 < (p > t).mean() < 0.7
    np.testing.assert_array_equal(classes[sure], (p > t)[sure].astype(np.uint8))
    assert areas["classes"][1]["pixels"] == int((classes == 1).sum()) > 0


def test_softmax_fixture_needs_two_names_and_takes_the_argmax(tmp_path):
    model = DATA / "one_output_softmax_bsx2x512x512.onnx"
    with pytest.raises(ModelError, match="--classes a,b,c"):
        add(tmp_path, model, gsd_m=0.5)
    with pytest.raises(ModelError, match="has 2 classes but 3 names"):
        add(tmp_path, model, gsd_m=0.5, classes=("a", "b", "c"))
    json_path = add(tmp_path, model, gsd_m=0.5, classes=("field", "crop"))
    rgb = np.random.default_rng(2).integers(0, 256, (3, 530, 600)).astype(np.uint8)
    p = pixelwise(model, rgb)
    classes, areas = run(tmp_path, json_path, rgb)
    sure = np.abs(p[0] - p[1]) > 1e-4
    np.testing.assert_array_equal(classes[sure], p.argmax(0)[sure])
    assert [c["name"] for c in areas["classes"]] == ["field", "crop"]


def test_two_outputs_choose_one_with_output(tmp_path):
    model = DATA / "two_outputs_sigmoid_bsx1x512x512.onnx"
    first = load_bundle(add(tmp_path, model, "a", gsd_m=0.5))
    assert first.class_names == ["background", "Coffee"] and first.onnx.output == 0
    json_path = add(tmp_path, model, "b", gsd_m=0.5, output=1)
    bundle = load_bundle(json_path)
    assert bundle.class_names == ["background", "Juice"] and bundle.onnx.output == 1
    with pytest.raises(InputError, match="outputs are 0: output .* 1: output2"):
        add(tmp_path, model, "c", gsd_m=0.5, output=2)
    rgb = np.random.default_rng(3).integers(0, 256, (3, 520, 560)).astype(np.uint8)
    p = pixelwise(model, rgb, output=1)[0]
    classes, areas = run(tmp_path, json_path, rgb)
    sure = np.abs(p - 0.5) > 1e-4
    np.testing.assert_array_equal(classes[sure], (p > 0.5)[sure].astype(np.uint8))
    assert [c["name"] for c in areas["classes"]] == ["background", "Juice"]


def test_missing_metadata_is_asked_for_by_option_name(tmp_path):
    with pytest.raises(ModelError, match=r"no class_names; give them with --classes a,b,c \(in QGIS: the model "):
        add(tmp_path, DATA / "dummy_model.onnx", gsd_m=0.5)
    with pytest.raises(ModelError, match="--gsd-m"):
        add(tmp_path, DATA / "dummy_model.onnx", classes=("r", "g", "b"))
    dynamic = identity_model(tmp_path / "dyn.onnx", in_shape=("N", 3, "H", "W"), out_shape=("N", 3, "H", "W"))
    with pytest.raises(ModelError, match="--tile-size"):
        add(tmp_path, dynamic, classes=("r", "g", "b"), gsd_m=0.5)
    bundle = load_bundle(add(tmp_path, dynamic, classes=("r", "g", "b"), gsd_m=0.5, tile_size=96))
    assert bundle.tile_size == 96 and bundle.onnx.fixed_batch is None


# ------------------------------------------------------------------------- models built here

@pytest.mark.parametrize("batch", ["N", 1, 2])
def test_dynamic_and_fixed_batch(tmp_path, batch):
    model = identity_model(tmp_path / "id.onnx", in_shape=(batch, 3, 64, 64), out_shape=(batch, 3, 64, 64))
    json_path = add(tmp_path, model, classes=("red", "green", "blue"), gsd_m=0.5)
    assert load_bundle(json_path).onnx.fixed_batch == (None if batch == "N" else batch)
    rgb, truth = dominant_rgb(150, 230, seed=4, block=13)
    classes, _ = run(tmp_path, json_path, rgb, overlap=16, batch_size=3)  # 3 tiles per call: fixed 2 pads
    np.testing.assert_array_equal(classes, truth)


def test_output_without_class_axis_as_class_ids(tmp_path):
    model = build_model(tmp_path / "argmax.onnx", [helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)],
                        ("N", 64, 64), out_type=TensorProto.INT64)
    json_path = add(tmp_path, model, classes=("red", "green", "blue"), gsd_m=0.5)
    bundle = load_bundle(json_path)
    assert bundle.onnx.output_kind == "labels" and not bundle.onnx.class_axis
    rgb, truth = dominant_rgb(170, 140, seed=5, block=11)
    classes, areas = run(tmp_path, json_path, rgb, overlap=32)
    np.testing.assert_array_equal(classes, truth)
    assert [c["pixels"] for c in areas["classes"]] == np.bincount(truth.ravel(), minlength=3).tolist()


def test_output_without_class_axis_as_one_class_probability_with_seg_thresh(tmp_path):
    """A float N x H x W output is one class's probability; seg_thresh from the metadata decides."""
    starts = helper.make_tensor("s", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("e", TensorProto.INT64, [1], [1])
    axes = helper.make_tensor("a", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Constant", [], ["s"], value=starts), helper.make_node("Constant", [], ["e"], value=ends),
             helper.make_node("Constant", [], ["a"], value=axes),
             helper.make_node("Slice", ["x", "s", "e", "a"], ["r"]),
             helper.make_node("Squeeze", ["r", "a"], ["y"])]
    meta = {"model_type": "Segmentor", "class_names": {"0": "bright"}, "resolution": 50, "seg_thresh": 0.7}
    model = build_model(tmp_path / "red.onnx", nodes, ("N", 64, 64), metadata=meta)
    bundle = load_bundle(add(tmp_path, model))
    assert bundle.gsd_m == 0.5 and bundle.onnx.threshold == 0.7 and bundle.class_names == ["background", "bright"]
    rgb = np.random.default_rng(6).integers(0, 256, (3, 130, 150)).astype(np.uint8)
    red = rgb[0].astype(np.float32) / 255
    classes, _ = run(tmp_path, bundle.source, rgb, overlap=16)
    sure = np.abs(red - 0.7) > 1e-4
    np.testing.assert_array_equal(classes[sure], (red > 0.7)[sure].astype(np.uint8))


@pytest.mark.parametrize("overlap", [0, 16])
def test_output_smaller_than_input_covers_the_centre(tmp_path, overlap):
    """Output = the input's centre (a crop by 8 px): the engine feeds context so every pixel is exact."""
    m = 8
    starts = helper.make_tensor("s", TensorProto.INT64, [2], [m, m])
    ends = helper.make_tensor("e", TensorProto.INT64, [2], [64 - m, 64 - m])
    axes = helper.make_tensor("a", TensorProto.INT64, [2], [2, 3])
    nodes = [helper.make_node("Constant", [], ["s"], value=starts), helper.make_node("Constant", [], ["e"], value=ends),
             helper.make_node("Constant", [], ["a"], value=axes),
             helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])]
    model = build_model(tmp_path / "crop.onnx", nodes, ("N", 3, 48, 48), metadata={"tiles_overlap": 25})
    json_path = add(tmp_path, model, classes=("red", "green", "blue"), gsd_m=0.5)
    bundle = load_bundle(json_path)
    assert bundle.onnx.context_margin == m and bundle.tile_size == 48 and bundle.input_tile == 64
    assert bundle.default_overlap == 16  # 25 % of the 64 px input, within half the 48 px output
    rgb, truth = dominant_rgb(123, 171, seed=7, block=5)  # 5 px blocks: a shift of one pixel shows
    classes, _ = run(tmp_path, json_path, rgb, overlap=overlap)
    np.testing.assert_array_equal(classes, truth)


def test_more_than_five_classes_get_distinct_stable_colours():
    names = ["tree", "water", "roof", "grass", "background", "car", "pool", "solar", "road", "dirt"]
    classes = class_infos(names)
    landcover = {c.name: c.color for c in LANDCOVER_CLASSES}
    assert classes[1].color == landcover["water"] and classes[4].color == landcover["background"]
    assert classes[8].color == landcover["road"]
    colors = [c.color for c in classes]
    assert len(set(colors)) == len(colors)
    assert class_infos(names) == classes  # stable
    many = class_infos([f"c{i}" for i in range(60)])
    assert len({c.color for c in many}) == 60


def test_labels_model_with_many_classes_imports_with_distinct_colours(tmp_path):
    model = build_model(tmp_path / "argmax.onnx", [helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)],
                        ("N", 64, 64), out_type=TensorProto.INT64)
    names = ("red", "green", "blue", "building", "x4", "x5", "x6")
    bundle = load_bundle(add(tmp_path, model, classes=names, gsd_m=0.5))
    assert bundle.class_names == list(names) and len({c.color for c in bundle.classes}) == 7
    assert bundle.classes[3].color == LANDCOVER_CLASSES[1].color


def test_detectors_and_other_inputs_are_refused(tmp_path):
    det = identity_model(tmp_path / "det.onnx", metadata={"model_type": "Detector", "class_names": {"0": "car"}})
    with pytest.raises(ModelError, match="'Detector' model; Landcover runs only segmentation"):
        add(tmp_path, det, gsd_m=0.5)
    four = identity_model(tmp_path / "four.onnx", in_shape=("N", 4, 64, 64), out_shape=("N", 4, 64, 64))
    with pytest.raises(ModelError, match="takes 4 channels"):
        add(tmp_path, four, classes=("a", "b", "c", "d"), gsd_m=0.5)
    nhwc = identity_model(tmp_path / "nhwc.onnx", in_shape=("N", 64, 64, 3), out_shape=("N", 64, 64, 3))
    with pytest.raises(ModelError, match="channels last"):
        add(tmp_path, nhwc, classes=("a", "b", "c"), gsd_m=0.5)
    junk = tmp_path / "junk.onnx"
    junk.write_text("<!DOCTYPE html><html>login</html>")
    with pytest.raises(ModelError, match="not an ONNX model.*web page"):
        add(tmp_path, junk, classes=("a", "b"), gsd_m=0.5)


def test_metadata_parsing():
    meta = parse_metadata({"model_type": '"Segmentor"', "class_names": '{"0": "a", "1": "b"}', "resolution": "20",
                           "tiles_size": "256", "tiles_overlap": "15", "standardization_mean": "[0.1, 0.2, 0.3]",
                           "standardization_std": "0.5", "seg_thresh": "0.3"})
    assert meta.class_names == ({0: "a", 1: "b"},) and meta.resolution_cm == 20 and meta.tiles_size == 256
    assert meta.mean == (0.1, 0.2, 0.3) and meta.std == (0.5, 0.5, 0.5) and meta.seg_thresh == 0.3
    with pytest.raises(ModelError, match="seg_thresh"):
        parse_metadata({"seg_thresh": "1.5"})
    with pytest.raises(ModelError, match="malformed"):
        parse_metadata({"class_names": '"just text"'})


def test_standardisation_is_applied_to_pixel_over_255(tmp_path):
    """mean/std from the metadata: with mean 0.5, std 0.25 the identity scores are (x - 0.5) * 4: same argmax."""
    meta = {"standardization_mean": [0.5, 0.5, 0.5], "standardization_std": [0.25, 0.25, 0.25],
            "class_names": {"0": "r", "1": "g", "2": "b"}, "resolution": 50}
    model = identity_model(tmp_path / "std.onnx", metadata=meta)
    bundle = load_bundle(add(tmp_path, model))
    x = bundle.preprocessing.apply(np.array([[[255, 128, 0]]], np.uint8))
    np.testing.assert_allclose(x[0, 0], [2.0, (128 / 255 - 0.5) * 4, -2.0], atol=1e-6)


def test_dummy_model_on_a_real_orthophoto_through_the_cli(tmp_path, monkeypatch, real_fixtures):
    """Added with the CLI, run with 'segment --model NAME' on a real JPEG-compressed aerial crop: the exact oracle
    holds on real pixels, the CRS is kept, and the legend has the given names in distinct colours."""
    from rasterio.windows import Window

    from backend.cli import main

    monkeypatch.setenv("LANDCOVER_MODELS_DIR", str(tmp_path / "models"))
    assert main(["models", "add", str(DATA / "dummy_model.onnx"), "--name", "colours", "--classes", "red,green,blue",
                 "--gsd-m", "0.1", "--progress", "none"]) == 0
    with rasterio.open(real_fixtures / "riverfront_rgb_jpeg_epsg3395.tif") as src:
        window = Window(1200, 200, 700, 600)  # more than one 512 px tile each way; all three classes occur
        rgb = src.read((1, 2, 3), window=window)
        profile = {**src.profile, "width": window.width, "height": window.height,
                   "transform": src.window_transform(window), "compress": "deflate", "photometric": "rgb"}
        crs = src.crs
    crop = tmp_path / "river.tif"
    with rasterio.open(crop, "w", **profile) as dst:
        dst.write(rgb)
    out = tmp_path / "classes.tif"
    assert main(["segment", str(crop), str(out), "--model", "colours", "--progress", "none"]) == 0
    with rasterio.open(out) as ds:
        classes = ds.read(1)
        assert ds.crs == crs
        legend = json.loads(ds.tags()["LANDCOVER_CLASSES"])  # what QGIS styles the layer from
    ordered = np.sort(rgb.astype(np.int16), axis=0)
    sure = ordered[-1] > ordered[-2]  # real pixels can tie; those may go either way
    assert sure.mean() > 0.8
    np.testing.assert_array_equal(classes[sure], np.argmax(rgb, axis=0)[sure])
    assert min(np.bincount(classes.ravel(), minlength=3)) > 1000  # every class really occurs here
    areas = json.loads(output_files(out).areas_json.read_text())
    assert [c["name"] for c in areas["classes"]] == ["red", "green", "blue"]
    assert [c["name"] for c in legend] == ["red", "green", "blue"] and len({tuple(c["color"]) for c in legend}) == 3

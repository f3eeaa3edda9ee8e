"""Static INT8 quantization of a bundle's ONNX export (training/quantize.py and ``python -m training quantize``).

Most tests use a tiny float ONNX network built here (three Convs and a Softmax, NCHW like the Deepness
export) inside a real bundle whose provenance describes three small synthetic training scenes, so the
whole step runs in seconds: rebuilding the training patches, calibration, quantization, the comparison
through ``backend.inference.segment`` and the JSON update. The slow test does the same for the shipped
default model's weights, exported to ONNX with the backend's own exporter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.cli import main
from training.errors import TrainingError
from training.quantize import (
    METADATA_KEY,
    Comparison,
    EvalImage,
    QuantizeParams,
    default_output,
    float_head,
    is_quantized,
    quantize_bundle,
)

REPO = Path(__file__).resolve().parents[2]
TILE = 64
# Tiny-model calibration and check: small enough to run in a few seconds.
TINY = QuantizeParams(calibration_tiles=4, held_out_scenes=1, held_out_size=192, min_agreement=0.9)
# The tiny network has random weights (biases set so every class wins somewhere), so its logit gaps are
# far smaller than a trained model's and int8 flips more close calls: measured 97.7-99.3 % equal classes
# on synthetic tiles for weight seeds 0-3 with 4 calibration tiles. A broken quantization (wrong scales,
# layout or class order) lands near chance or below (< 1 % with the class order rotated), so 95 % keeps
# a margin for other CPUs' kernels and still catches real breakage.
TINY_MIN_AGREEMENT = 0.95
# The shipped model must keep at least this share of the float model's classes (the CLI's default gate;
# it measures 99.94-99.97 %): ten times the disagreement it shows, still 1 pixel in 200 at most.
REAL_MIN_AGREEMENT = 0.995


PREPROCESSING = {"scale": 255.0, "mean": [0.45, 0.45, 0.45], "std": [0.25, 0.25, 0.25]}


def tiny_onnx(path: Path, seed: int = 0) -> None:
    """A float NCHW segmentation network: Conv-ReLU-Conv-ReLU-Conv(1x1)-Softmax, with Deepness-like metadata.

    The weights are random, but the classifier's biases are set so that every class wins on a fair
    share of synthetic imagery: a network that paints everything one class would agree with any
    quantization of itself and prove nothing.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {"w1": rng.normal(0, 0.5, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
               "w2": rng.normal(0, 0.3, (8, 8, 3, 3)), "b2": rng.normal(0, 0.1, 8),
               "w3": rng.normal(0, 1.0, (5, 8, 1, 1)), "b3": np.zeros(5)}

    def build() -> onnx.ModelProto:
        nodes = [
            helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
            helper.make_node("Conv", ["r2", "w3", "b3"], ["logits"], name="final_conv"),
            helper.make_node("Softmax", ["logits"], ["softmax"], name="softmax", axis=1),
        ]
        graph = helper.make_graph(
            nodes, "tiny",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, TILE, TILE])],
            [helper.make_tensor_value_info("softmax", TensorProto.FLOAT, ["batch", 5, TILE, TILE])],
            [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    # Centre each class's mean log-probability on synthetic tiles (another seed than any used below).
    pixels = synthetic_tiles(16, seed=99).astype(np.float32) / 255
    mean, std = (np.asarray(PREPROCESSING[k], np.float32) for k in ("mean", "std"))
    x = ((pixels - mean) / std).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(build().SerializeToString(), providers=["CPUExecutionProvider"])
    log_p = np.log(session.run(None, {"input": np.ascontiguousarray(x)})[0] + 1e-12)
    weights["b3"] = -log_p.mean(axis=(0, 2, 3))
    model = build()
    for key, value in {"model_type": "Segmentor", "class_names": {"0": "background", "1": "building"},
                       "resolution": 25.0, "tile_size": TILE}.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def tiny_bundle(folder: Path) -> Path:
    """A bundle around :func:`tiny_onnx` whose provenance says it was trained on 3 synthetic 128 px scenes."""
    from backend.contract import LANDCOVER_CLASSES
    from backend.onnx_runtime import file_sha256

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "tiny.weights.h5"
    weights.write_bytes(b"placeholder: the ONNX runtime never reads the weights file")
    tiny_onnx(folder / "tiny.onnx")
    data = {
        "format": 1, "name": "tiny", "architecture": "Unet", "backbone": "resnet18", "tile_size": TILE,
        "input_bands": 3, "preprocessing": PREPROCESSING, "gsd_m": 0.25,
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in LANDCOVER_CLASSES],
        "weights": weights.name, "default_overlap": None, "default_batch_size": 4,
        "provenance": {
            "data": "test", "extra": {"kept": True},
            "config": {"data": {"synthetic": {"orthophotos": 3, "size": 128, "seed": 5}}, "patch": {"size": TILE},
                       "filter": {"threshold": 0.05, "keep_background": 0.5},
                       "split": {"train": 0.4, "val": 0.3, "eval": 0.3}},
        },
        "onnx": {"file": "tiny.onnx", "sha256": file_sha256(folder / "tiny.onnx"), "opset": 17, "layout": "NCHW",
                 "deepness": True, "weights_sha256": file_sha256(weights)},
    }
    path = folder / "tiny.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def synthetic_tiles(n: int, tile: int = TILE, seed: int = 1) -> np.ndarray:
    """``(n, tile, tile, 3)`` uint8 crops of a synthetic scene (a seed no bundle here trains or calibrates on)."""
    from training.synthetic import ClassShares, generate_scene, scene_rng

    image, _ = generate_scene(scene_rng(seed, 0), tile * 4, ClassShares())
    return np.stack([image[(i // 4) * tile:(i // 4 + 1) * tile, (i % 4) * tile:(i % 4 + 1) * tile] for i in range(n)])


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The tiny bundle before (JSON text, float file) and after quantization, and the report."""
    json_path = tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")
    before = json_path.read_text()
    report = quantize_bundle(json_path, TINY, say=lambda _m: None)
    return json_path, before, report


# ---- parameters -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"calibration_tiles": 0}, {"calibration_tiles": 5000}, {"activations": "int4"}, {"held_out_scenes": 0},
    {"held_out_size": 32}, {"min_agreement": 0.0}, {"min_agreement": 1.5}, {"decided": 1.0}, {"decided": -0.1},
    {"max_accuracy_loss": -0.01},
])
def test_params_are_validated(bad) -> None:
    with pytest.raises(TrainingError):
        QuantizeParams(**bad)


def test_default_params_are_valid_and_output_sits_beside_the_bundle() -> None:
    p = QuantizeParams()
    assert p.calibration_tiles is None  # the whole train split (capped)
    assert p.activations == "uint8" and not p.symmetric_activations and 0 < p.min_agreement <= 1
    assert default_output(Path("b/landcover.json")) == Path("b/landcover.int8.onnx")


# ---- the tiny model, end to end ----------------------------------------------------------------------------------


def test_float_head_is_the_classifier_and_softmax(tmp_path) -> None:
    import onnx

    tiny_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert float_head(model) == ["softmax", "final_conv"]
    assert not is_quantized(model)


def test_quantized_file_is_int8_valid_and_keeps_metadata(quantized) -> None:
    import onnx

    json_path, _, report = quantized
    assert report.path == json_path.with_name("tiny.int8.onnx") and report.path.is_file()
    assert not list(json_path.parent.glob("*.part*"))
    model = onnx.load(str(report.path))
    onnx.checker.check_model(model)
    assert is_quantized(model)
    # Conv weights are stored as int8 (per output channel); the head stays float.
    int8_inits = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert any(name.startswith("w1") for name in int8_inits) and any(name.startswith("w2") for name in int8_inits)
    final = next(n for n in model.graph.node if n.name == "final_conv")
    assert final.input[1] == "w3"
    float_model = onnx.load(str(report.fp32_path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert {p.key: p.value for p in float_model.metadata_props}.items() <= meta.items()
    assert json.loads(meta[METADATA_KEY])["format"] == "QDQ"


def test_bundle_json_names_the_int8_file_beside_the_float_one(quantized) -> None:
    from backend.bundle import load_bundle
    from backend.onnx_runtime import file_sha256

    json_path, before, report = quantized
    old, new = json.loads(before), json.loads(json_path.read_text())
    assert new["onnx"] == old["onnx"]  # the float export stays what --precision fp32 runs
    assert new["onnx_int8"]["file"] == "tiny.int8.onnx"
    assert new["onnx_int8"]["sha256"] == file_sha256(report.path)
    for key in ("opset", "layout", "deepness", "weights_sha256"):
        assert new["onnx_int8"][key] == old["onnx"][key]
    # Everything else is as it was, plus the quantization record.
    q = new["provenance"].pop("onnx_quantization")
    assert new["provenance"] == old["provenance"]
    assert {k: v for k, v in new.items() if k != "onnx_int8"} == old
    assert q["fp32_sha256"] == old["onnx"]["sha256"] and q["fp32_file"] == "tiny.onnx"
    assert q["calibration"]["tiles"] == TINY.calibration_tiles and "train-split" in q["calibration"]["source"]
    assert q["onnxruntime"] and q["date"] and q["int8_bytes"] == report.path.stat().st_size
    assert q["agreement_with_fp32"]["all"] >= TINY_MIN_AGREEMENT
    assert load_bundle(json_path).onnx_int8.file == report.path.resolve()
    assert load_bundle(json_path).onnx.file == (json_path.parent / "tiny.onnx").resolve()
    assert (json_path.parent / "tiny.onnx").is_file()  # the float file is kept


def test_quantized_bundle_runs_and_agrees_with_the_float_model(quantized) -> None:
    from backend.bundle import load_bundle
    from backend.onnx_runtime import OnnxRuntime

    json_path, _, report = quantized
    bundle = load_bundle(json_path)
    x = bundle.preprocessing.apply(synthetic_tiles(8))
    int8 = OnnxRuntime(bundle.with_precision("int8")).predict(x)
    fp32 = OnnxRuntime(bundle.with_precision("fp32")).predict(x)
    assert int8.shape == fp32.shape == (8, TILE, TILE, 5) and int8.dtype == np.float32
    np.testing.assert_allclose(int8.sum(-1), 1.0, atol=1e-4)  # the float Softmax still gives probabilities
    agreement = float((int8.argmax(-1) == fp32.argmax(-1)).mean())
    assert agreement >= TINY_MIN_AGREEMENT, agreement
    assert all(c.agreement >= TINY_MIN_AGREEMENT and c.pixels == 192 * 192 for c in report.comparisons)
    assert report.comparisons[0].int8_scores is not None  # held-out scenes come with their truth mask


def test_calibration_uses_only_the_rebuilt_train_split(quantized) -> None:
    from backend.bundle import load_bundle
    from training.config import build_config
    from training.filter import select
    from training.patch import PatchRecord, grid_shape, patch_name
    from training.split import split_names
    from training.synthetic import generate_scene, scene_rng

    json_path, _, report = quantized
    config = build_config(json.loads(json_path.read_text())["provenance"]["config"])
    s = config.data.synthetic
    records, images = [], {}
    for i in range(s.orthophotos):
        name = f"{s.prefix}_{s.seed}_{i:03d}"
        images[name], mask = generate_scene(scene_rng(s.seed, i), s.size, s.shares, s.jitter)
        rows, cols = grid_shape(s.size, s.size, config.patch)
        for r in range(rows):
            for c in range(cols):
                counts = np.bincount(mask[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE].ravel(), minlength=5)
                records.append(PatchRecord(patch_name(name, r, c), name, r, c, tuple(counts.tolist())))
    kept = select(records, config.filter)
    parts = split_names([r.patch for r in kept], [r.source for r in kept], config.split)
    by_name = {r.patch: r for r in kept}

    def pixels(name: str) -> np.ndarray:
        rec = by_name[name]
        return images[rec.source][rec.row * TILE:(rec.row + 1) * TILE, rec.col * TILE:(rec.col + 1) * TILE]

    normalise = load_bundle(json_path).preprocessing.apply
    train = [normalise(pixels(n)) for n in parts["train"]]
    others = [normalise(pixels(n)) for n in parts["val"] + parts["eval"]]
    assert train and others
    assert report.calibration.train_patches == len(parts["train"])
    for tile in report.calibration.tiles:
        assert any(np.array_equal(tile, t) for t in train)
        assert not any(np.array_equal(tile, t) for t in others)


def test_default_calibration_takes_the_whole_train_split(tmp_path) -> None:
    from backend.bundle import load_bundle
    from training.quantize import training_calibration_tiles

    bundle = load_bundle(tiny_bundle(tmp_path / "b"))
    every = training_calibration_tiles(bundle, None)
    assert len(every.tiles) == every.train_patches > 1
    some = training_calibration_tiles(bundle, 1)
    assert len(some.tiles) == 1 and any(np.array_equal(some.tiles[0], t) for t in every.tiles)


def test_an_already_quantized_export_is_refused(quantized, tmp_path) -> None:
    json_path, _, _ = quantized
    copy = tmp_path / "bundle"
    shutil.copytree(json_path.parent, copy)
    json_path = copy / json_path.name
    data = json.loads(json_path.read_text())
    data["onnx"] = data["onnx_int8"]  # a bundle whose "float" entry names a quantized file
    json_path.write_text(json.dumps(data))
    text = json_path.read_text()
    with pytest.raises(TrainingError, match="already quantized"):
        quantize_bundle(json_path, TINY, say=lambda _m: None)
    assert json_path.read_text() == text


def test_too_low_agreement_leaves_the_bundle_unchanged(tmp_path, monkeypatch) -> None:
    import training.quantize as q

    json_path = tiny_bundle(tmp_path / "b")
    text = json_path.read_text()
    monkeypatch.setattr(q, "compare_models", lambda *a, **k: [Comparison("x", 100, 0.5, decided_agreement=0.5)])
    with pytest.raises(TrainingError, match="left unchanged"):
        quantize_bundle(json_path, TINY, say=lambda _m: None)
    assert json_path.read_text() == text
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["tiny.json", "tiny.onnx", "tiny.weights.h5"]


def test_the_gate_counts_what_the_float_model_is_decided_on_and_the_score_against_truth() -> None:
    """A near-tie falling the other way is no loss; a changed decided pixel or a lower accuracy is."""
    from training.quantize import check_comparisons

    params = QuantizeParams()
    ties = Comparison("hard scene", 1000, 0.97, decided_agreement=0.999, decided_share=0.9,
                      fp32_scores={"accuracy": 0.787}, int8_scores={"accuracy": 0.796})
    check_comparisons([ties], params)  # 3 % of classes changed, all of them near ties, and more accurate
    with pytest.raises(TrainingError, match=r"99\.000 % of the pixels of changed where the float model is decided"):
        check_comparisons([ties, Comparison("changed", 1000, 0.99, decided_agreement=0.99)], params)
    worse = Comparison("worse", 1000, 0.999, decided_agreement=0.999, fp32_scores={"accuracy": 0.95},
                       int8_scores={"accuracy": 0.94})
    with pytest.raises(TrainingError, match="accuracy on worse is 0.9400, the float model's 0.9500"):
        check_comparisons([worse], params)
    check_comparisons([worse], QuantizeParams(max_accuracy_loss=0.02))


def test_output_outside_the_bundle_folder_and_missing_inputs_are_refused(tmp_path) -> None:
    json_path = tiny_bundle(tmp_path / "b")
    with pytest.raises(TrainingError, match="bundle's folder"):
        quantize_bundle(json_path, TINY, out=tmp_path / "elsewhere.onnx", say=lambda _m: None)
    with pytest.raises(TrainingError, match="float model itself"):
        quantize_bundle(json_path, TINY, out=json_path.with_name("tiny.onnx"), say=lambda _m: None)
    with pytest.raises(TrainingError, match="does not exist"):
        quantize_bundle(json_path, TINY, evaluate=[EvalImage(tmp_path / "nope.tif")], say=lambda _m: None)
    with pytest.raises(TrainingError, match="train-split|training patches"):
        quantize_bundle(json_path, QuantizeParams(calibration_tiles=4000, held_out_scenes=1), say=lambda _m: None)
    with pytest.raises(TrainingError, match="trained on scenes of seed 5: they are not held out"):
        quantize_bundle(json_path, QuantizeParams(held_out_seed=5), say=lambda _m: None)


# ---- command line ----------------------------------------------------------------------------------------------


def test_cli_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--calibration-tiles" in out and "--bundle" in out and "--out" in out


@pytest.mark.parametrize("argv", [
    ["--calibration-tiles", "x"], [], ["--bundle"], ["--bundle", "b", "--activations", "fp4"],
])
def test_cli_argument_errors_are_one_line(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["quantize", *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "usage" not in err


@pytest.mark.parametrize("argv", [
    ["--bundle", "no/such/bundle.json"],
    ["--bundle", "BUNDLE", "--calibration-tiles", "0"],
    ["--bundle", "BUNDLE", "--evaluate", "a.tif", "b.tif", "c.tif"],
    ["--bundle", "BUNDLE", "--out", "/tmp/elsewhere.onnx"],
])
def test_cli_user_mistakes_give_one_line_and_exit_2(argv, tmp_path, capsys) -> None:
    json_path = tiny_bundle(tmp_path / "b")
    text = json_path.read_text()
    code = main(["quantize", *[str(json_path) if a == "BUNDLE" else a for a in argv]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert json_path.read_text() == text


def test_cli_quantizes_and_reports(tmp_path, capsys) -> None:
    json_path = tiny_bundle(tmp_path / "b")
    report = tmp_path / "m.json"
    code = main(["quantize", "--bundle", str(json_path), "--calibration-tiles", "4", "--held-out", "1",
                 "--held-out-size", "128", "--min-agreement", "0.9", "--latency-runs", "2", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(json_path.read_text())["onnx_int8"]["file"] == "tiny.int8.onnx"
    data = json.loads(report.read_text())
    latency = data["latency_ms_per_tile"]
    assert set(latency) == {"fp32", "int8"} and all(v > 0 for v in latency.values())
    assert "keep the float model's class" in out and "per tile:" in out


# ---- the real default model -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_weights_quantize_with_high_agreement(tmp_path) -> None:
    """Export the shipped weights to a float Deepness ONNX, quantize it as shipped, check it."""
    from backend.bundle import load_bundle
    from backend.onnx_export import export_onnx
    from backend.onnx_runtime import OnnxRuntime

    src = REPO / "backend" / "bundles" / "default"
    folder = tmp_path / "default"
    folder.mkdir()
    shutil.copy(src / "landcover.weights.h5", folder)
    data = json.loads((src / "landcover.json").read_text())
    data.pop("onnx", None)
    data.pop("onnx_int8", None)
    data["provenance"].pop("onnx_quantization", None)
    (folder / "landcover.json").write_text(json.dumps(data))
    export_onnx(load_bundle(folder / "landcover.json"), deepness=True)

    params = QuantizeParams(calibration_tiles=16, held_out_scenes=1, held_out_size=1024,
                            min_agreement=REAL_MIN_AGREEMENT)
    report = quantize_bundle(folder / "landcover.json", params, say=lambda _m: None)
    # The rebuilt split is the one the model was trained on: same number of train patches as recorded.
    assert report.calibration.train_patches == data["provenance"]["training"]["train_patches"]
    assert report.int8_bytes < 0.6 * report.fp32_bytes
    assert report.comparisons[0].decided_agreement >= REAL_MIN_AGREEMENT
    bundle = load_bundle(folder / "landcover.json")
    assert bundle.onnx_int8.file.name == "landcover.int8.onnx" and bundle.onnx.file.name == "landcover.onnx"
    assert bundle.onnx_int8.layout == "NCHW" and bundle.onnx_int8.deepness
    tiles = bundle.preprocessing.apply(synthetic_tiles(2, tile=256, seed=11))
    probs = OnnxRuntime(bundle.with_precision("int8")).predict(tiles)
    assert probs.shape == (2, 256, 256, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)

"""The whole pipeline from a config: model card, re-running from a later step."""

from __future__ import annotations

import numpy as np
import pytest

from training.pipeline import run_pipeline

pytestmark = pytest.mark.slow


def test_model_card_and_rerun_from_evaluate(tiny_run) -> None:
    config, work, _ = tiny_run
    card = (work / "card.md").read_text()
    assert "# Model card: landcover-smoke-test" in card and "not for real maps" in card and "| building |" in card
    history = (work / "model" / "history.csv").read_text()
    summary = run_pipeline(config, start="evaluate", say=lambda _m: None)
    assert (work / "model" / "history.csv").read_text() == history  # no retraining
    assert "train" not in summary["timings_s"] and summary["orthophotos_miou"] is not None


def test_export_step_can_write_a_checked_int8_export(tiny_run, tmp_path) -> None:
    """``export.params.int8: true``: the float ONNX export, then its INT8 export calibrated on the train patches."""
    from dataclasses import replace

    import onnx

    from backend.bundle import load_bundle
    from backend.onnx_runtime import OnnxRuntime, file_sha256
    from backend.quantize import is_quantized
    from training.split import read_split

    config, work, _ = tiny_run
    # The smoke model is barely trained (2 steps): its class scores are close, so the gate is lowered here.
    params = replace(config.export.params, onnx=True, deepness=True, int8=True, int8_tiles=6, int8_min_agreement=0.5)
    out = tmp_path / "bundle" / "landcover.json"
    run_pipeline(replace(config, export=replace(config.export, out=str(out), model_card=None, params=params)),
                 start="export", say=lambda _m: None)
    bundle = load_bundle(out)
    assert bundle.onnx is not None and bundle.onnx_int8 is not None
    assert bundle.onnx_int8.sha256 == file_sha256(bundle.onnx_int8.file)
    assert is_quantized(onnx.load(str(bundle.onnx_int8.file))) and not is_quantized(onnx.load(str(bundle.onnx.file)))
    record = bundle.provenance["onnx_quantization"]
    train = read_split(work / "split", "train")
    assert record["calibration"]["tiles"] == min(6, len(train)) and "images" in record["calibration"]["source"]
    probs = OnnxRuntime(bundle.with_precision("int8")).predict(
        bundle.preprocessing.apply(np.zeros((1, bundle.tile_size, bundle.tile_size, 3), np.uint8)))
    assert probs.shape == (1, bundle.tile_size, bundle.tile_size, bundle.num_classes)


def test_int8_export_without_the_float_export_is_a_config_error() -> None:
    from training.errors import TrainingError
    from training.export import ExportParams

    with pytest.raises(TrainingError, match="int8: true needs onnx: true"):
        ExportParams(int8=True)


def test_a_refused_int8_export_leaves_the_float_bundle_and_says_why(tiny_run, tmp_path, monkeypatch) -> None:
    from dataclasses import replace

    from backend.bundle import load_bundle

    config, _, _ = tiny_run
    monkeypatch.setattr("backend.quantize.tile_agreement", lambda *a, **k: 0.9)  # as a badly quantizing model
    params = replace(config.export.params, onnx=True, int8=True, int8_tiles=4)
    out = tmp_path / "bundle" / "landcover.json"
    said: list[str] = []
    run_pipeline(replace(config, export=replace(config.export, out=str(out), model_card=None, params=params)),
                 start="export", say=said.append)
    bundle = load_bundle(out)
    assert bundle.onnx_int8 is None and bundle.onnx.file.is_file()
    assert not [p for p in out.parent.iterdir() if "int8" in p.name]
    notes = [m for m in said if "INT8 export" in m]
    assert len(notes) == 1 and "not written" in notes[0] and "on only 90.000 %" in notes[0]


def test_export_step_scores_fresh_scenes_per_style_and_real_scenes_into_the_model_card(tiny_run, tmp_path) -> None:
    """``evaluate.held_out_scenes`` and ``evaluate.sanity``: the exported bundle is checked and the card shows it."""
    import json
    from dataclasses import replace

    from tests.data.rasters import write_raster

    config, _, _ = tiny_run
    rgb = np.full((3, 96, 96), 120, np.uint8)
    write_raster(tmp_path / "field.tif", rgb, pixel_size=0.25)
    expectations = tmp_path / "expectations.json"
    expectations.write_text(json.dumps([{"raster": "field.tif", "note": "a flat grey field", "absent": ["water"]}]))
    card = tmp_path / "card.md"
    run_pipeline(replace(config, evaluate=replace(config.evaluate, held_out_scenes=1, sanity=str(expectations)),
                         export=replace(config.export, out=str(tmp_path / "b" / "landcover.json"),
                                        model_card=str(card))),
                 start="export", say=lambda _m: None)
    text = card.read_text()
    assert "## Fresh synthetic scenes per style (float export)" in text and "seed 7919" in text
    assert "| v1 | 1 × 1024 px |" in text and "| v2 | 1 × 1024 px |" in text
    assert "## Real-scene sanity suite (float export)" in text and "| field.tif |" in text
    assert "of 1 scenes pass." in text

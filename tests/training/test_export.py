"""Export -> backend load_bundle + build_from_bundle round trip."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from training.export import ExportParams, export_bundle

pytestmark = pytest.mark.slow


def test_export_round_trips_through_the_backend(tiny_run, tmp_path) -> None:
    from backend.bundle import load_bundle
    from backend.models import build_from_bundle, build_model, load_weights

    _, work, summary = tiny_run
    report = json.loads((work / "eval" / "report.json").read_text())
    out = export_bundle(work / "model", tmp_path / "b" / "landcover.json", ExportParams(name="t", tile_size=64),
                        report=report, config={"k": 1})
    bundle = load_bundle(out)
    assert bundle.name == "t" and bundle.tile_size == 64 and bundle.gsd_m == 0.25
    assert bundle.weights == (tmp_path / "b" / "landcover.weights.h5").resolve()
    metrics = bundle.provenance["metrics"]
    assert metrics["miou"] == report["orthophotos"]["miou"]
    assert set(metrics["per_class_iou"]) == {"background", "building", "woodland", "water", "road"}
    assert bundle.provenance["config"] == {"k": 1} and bundle.provenance["trained"]
    with h5py.File(bundle.weights) as f:
        assert {f["weights"][k].dtype for k in f["weights"]} == {np.dtype("float16")}
    exported = build_from_bundle(bundle)
    original = build_model("Unet", "resnet18", 5, 3)
    load_weights(original, work / "model" / "best.weights.h5")
    x = np.random.default_rng(0).random((1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(exported.predict_on_batch(x), original.predict_on_batch(x), atol=0.02)
    # The pipeline's own export went to WORKDIR/bundle and loads too.
    assert load_bundle(summary["bundle"]).provenance["metrics"]["miou"] == pytest.approx(metrics["miou"])


def test_export_with_onnx(tiny_run, tmp_path) -> None:
    from backend.bundle import load_bundle

    _, work, _ = tiny_run
    out = export_bundle(work / "model", tmp_path / "landcover.json", ExportParams(name="o", tile_size=64, onnx=True))
    bundle = load_bundle(out)
    assert bundle.onnx is not None and bundle.onnx.file == (tmp_path / "landcover.onnx").resolve()
    assert bundle.onnx.file.stat().st_size > 1_000_000

"""A 2-epoch x 1-step training on 64 px patches, then resume, evaluate and export round trips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from training.config import EvaluateParams, load_config
from training.errors import TrainingError
from training.evaluate import evaluate
from training.export import ExportParams, export_bundle
from training.pipeline import run_pipeline
from training.train import TrainParams, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The smoke config, shrunk further, run through every step."""
    work = tmp_path_factory.mktemp("run")
    config = load_config(
        Path(__file__).resolve().parents[2] / "training" / "configs" / "smoke.yaml",
        [
            f"workdir={work}",
            "export.out=null",
            f"export.model_card={work}/card.md",
            "data.synthetic.orthophotos=3",
            "data.synthetic.size=128",
            "split.train=0.4",
            "split.val=0.3",
            "split.eval=0.3",
            "train.batch_size=2",
            "train.steps_per_epoch=1",
            "train.epochs=2",
        ],
    )
    summary = run_pipeline(config, say=lambda _m: None)
    return config, work, summary


def test_training_writes_checkpoint_history_and_curves(tiny_run) -> None:
    _, work, summary = tiny_run
    model = work / "model"
    for name in ("best.weights.h5", "history.csv", "loss.png", "iou.png", "train.json", "state.json", "config.yaml"):
        assert (model / name).is_file(), name
    rows = list(csv.DictReader(open(model / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["val_miou"]) <= 1.0 and np.isfinite(float(r["loss"])) for r in rows)
    state = json.loads((model / "state.json").read_text())
    best = max(float(r["val_miou"]) for r in rows)
    assert state["epoch"] == 2 and state["best_miou"] == pytest.approx(best, abs=1e-6)
    assert summary["best_val_miou"] == state["best_miou"]


def test_resume_continues_from_the_checkpoint(tiny_run) -> None:
    config, work, _ = tiny_run
    params = TrainParams(**{**config.train.__dict__, "epochs": 3})
    result = train(work / "patches", work / "split", work / "model", params, resume=True)
    rows = list(csv.DictReader(open(work / "model" / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and result.epochs_done == 3
    with pytest.raises(TrainingError, match="already finished"):
        train(work / "patches", work / "split", work / "model", params, resume=True)


def test_resume_without_a_run_is_an_error(tiny_run, tmp_path) -> None:
    config, work, _ = tiny_run
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(work / "patches", work / "split", tmp_path / "fresh", config.train, resume=True)


def test_evaluation_reports(tiny_run) -> None:
    _, work, _ = tiny_run
    report = json.loads((work / "eval" / "report.json").read_text())
    for scope in ("patches", "orthophotos"):
        cm = np.asarray(report[scope]["confusion"])
        assert cm.shape == (5, 5) and cm.sum() == report[scope]["pixels"] > 0
        assert report[scope]["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    # One held-out 128 px orthophoto, every pixel evaluated through the backend.
    assert report["orthophotos"]["pixels"] == 128 * 128
    for name in ("report.md", "metrics.csv", "confusion_patches.csv", "confusion_patches.png", "examples.png"):
        assert (work / "eval" / name).is_file(), name
    assert "| road |" in (work / "eval" / "report.md").read_text()


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


def test_evaluate_without_data_skips_orthophotos(tiny_run, tmp_path) -> None:
    _, work, _ = tiny_run
    report = evaluate(work / "model", work / "patches", work / "split", tmp_path, EvaluateParams(examples=0))
    assert "orthophotos" not in report and "no data folder" in report["orthophotos_skipped"]
    assert report["patches"]["pixels"] > 0


def test_model_card_and_rerun_from_evaluate(tiny_run) -> None:
    config, work, _ = tiny_run
    card = (work / "card.md").read_text()
    assert "# Model card: landcover-smoke-test" in card and "not for real maps" in card and "| building |" in card
    history = (work / "model" / "history.csv").read_text()
    summary = run_pipeline(config, start="evaluate", say=lambda _m: None)
    assert (work / "model" / "history.csv").read_text() == history  # no retraining
    assert "train" not in summary["timings_s"] and summary["orthophotos_miou"] is not None

"""Training: a 2-epoch x 1-step run on 64 px patches (the session fixture ``tiny_run``), resume."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from training.errors import TrainingError
from training.train import TrainParams, train

pytestmark = pytest.mark.slow


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


def test_resume_continues_from_the_checkpoint(tiny_run, tmp_path) -> None:
    config, work, _ = tiny_run
    model = tmp_path / "model"
    shutil.copytree(work / "model", model)  # leave the shared run untouched
    params = TrainParams(**{**config.train.__dict__, "epochs": 3})
    result = train(work / "patches", work / "split", model, params, resume=True)
    rows = list(csv.DictReader(open(model / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and result.epochs_done == 3
    assert json.loads((model / "state.json").read_text())["epoch"] == 3
    with pytest.raises(TrainingError, match="already finished"):
        train(work / "patches", work / "split", model, params, resume=True)


def test_resume_without_a_run_is_an_error(tiny_run, tmp_path) -> None:
    config, work, _ = tiny_run
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(work / "patches", work / "split", tmp_path / "fresh", config.train, resume=True)

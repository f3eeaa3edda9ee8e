"""Evaluation reports of the tiny run: patches and whole orthophotos through the backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.config import EvaluateParams
from training.evaluate import evaluate

pytestmark = pytest.mark.slow


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


def test_evaluate_without_data_skips_orthophotos(tiny_run, tmp_path) -> None:
    _, work, _ = tiny_run
    report = evaluate(work / "model", work / "patches", work / "split", tmp_path, EvaluateParams(examples=0))
    assert "orthophotos" not in report and "no data folder" in report["orthophotos_skipped"]
    assert report["patches"]["pixels"] > 0

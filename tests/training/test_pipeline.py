"""The whole pipeline from a config: model card, re-running from a later step."""

from __future__ import annotations

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

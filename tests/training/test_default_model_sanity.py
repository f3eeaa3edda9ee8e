"""The shipped default model on the real-scene sanity suite (training/sanity.py), as a user would run it.

The issue's bar is a default model that passes every scene; the shipped one does not yet (1 of 9). Until it does,
``make test`` keeps its report honest: ``training/reports/default_model_sanity.md`` (quoted in the README) must
state what the shipped model does on each scene, for both exports the bundle carries: which scenes pass, which
classes fail, and every class share within half a point. A retrained model or a changed suite fails this test
until the report is regenerated (the command is in the report).
"""

from __future__ import annotations

import re

import pytest

from backend.bundle import resolve_model
from tests.conftest import REPO
from training.sanity import run_suite

pytestmark = pytest.mark.slow

EXPECTATIONS = REPO / "tests" / "data" / "real" / "expectations.json"
REPORT = REPO / "training" / "reports" / "default_model_sanity.md"


def recorded_rows(precision: str) -> dict[str, tuple[list[float], str]]:
    """Scene -> (class shares in %, verdict) from the report's section for ``precision``."""
    section = REPORT.read_text().split(f"## {precision} export", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].endswith(".tif"):
            shares = [float(c.rstrip(" %")) for c in cells[1:6]]
            rows[cells[0]] = (shares, cells[-1])
    return rows


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_sanity_report_states_what_the_shipped_model_does(precision):
    bundle = resolve_model(None)
    assert bundle.has_export(precision), f"the default bundle lacks its {precision} export"
    results = run_suite(bundle, EXPECTATIONS, precision=precision)
    recorded = recorded_rows(precision)
    assert sorted(recorded) == sorted(r.scene.raster for r in results)
    for r in results:
        shares, verdict = recorded[r.scene.raster]
        assert r.passed == (verdict == "pass"), (r.scene.raster, r.failures, verdict)
        failing = {f.split(" covers ")[0] for f in r.failures}
        assert failing == set(re.findall(r"(\w+) covers", verdict)), (r.scene.raster, r.failures, verdict)
        measured = [100 * r.shares[c.name] for c in bundle.classes]
        assert measured == pytest.approx(shares, abs=0.5), r.scene.raster

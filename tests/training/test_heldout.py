"""The held-out synthetic benchmark (training/heldout.py): fresh scenes per style through the backend."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from training.errors import TrainingError
from training.heldout import HELD_OUT_SEED, HeldOutParams, held_out_benchmark, markdown
from training.synthetic import STYLES

DEFAULT = REPO / "backend" / "bundles" / "default" / "landcover.json"


@pytest.mark.parametrize("kwargs, message", [
    ({"scenes": 0}, "1..64"), ({"size": 128}, ">= 256"), ({"styles": ("mixed",)}, "a scene has one style"),
    ({"styles": ()}, "got none"),
])
def test_bad_parameters_name_the_fix(kwargs, message):
    with pytest.raises(TrainingError, match=message):
        HeldOutParams(**kwargs)


def test_scenes_a_model_was_trained_on_are_refused(tmp_path):
    data = json.loads(DEFAULT.read_text())
    data["provenance"]["config"]["data"]["synthetic"]["seed"] = HELD_OUT_SEED
    for key in ("weights",):
        data[key] = str(DEFAULT.parent / data[key])
    for key in ("onnx", "onnx_int8"):
        data[key]["file"] = str(DEFAULT.parent / data[key]["file"])
    bundle = tmp_path / "b.json"
    bundle.write_text(json.dumps(data))
    with pytest.raises(TrainingError, match=f"trained on scenes of seed {HELD_OUT_SEED}"):
        held_out_benchmark(bundle, HeldOutParams(scenes=1, size=256))


@pytest.mark.slow
def test_the_default_model_is_scored_per_style_on_the_same_fresh_scenes():
    params = HeldOutParams(scenes=2, size=256)
    results = held_out_benchmark(DEFAULT, params, precision="int8")
    assert list(results) == list(STYLES) and STYLES[:4] == ("v1", "v2", "v3", "v4")  # every style, in order
    for r in results.values():
        assert r["pixels"] == 2 * 256 ** 2 and len(r["per_orthophoto"]) == 2 and 0 <= r["miou"] <= 1
    assert results["v1"]["per_class"] != results["v2"]["per_class"] != results["v3"]["per_class"]  # one set each
    assert held_out_benchmark(DEFAULT, params, precision="int8")["v2"]["miou"] == results["v2"]["miou"]
    table = markdown(results)
    assert "| v1 | 2 × 256 px |" in table and "| v3 | 2 × 256 px |" in table and "IoU road" in table

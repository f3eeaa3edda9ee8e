"""Model bundle metadata: validation, lookup, round trip."""

from __future__ import annotations

import json

import pytest

from backend.bundle import (
    ModelBundle,
    list_models,
    load_bundle,
    resolve_model,
    untrained_bundle,
)
from backend.errors import LandcoverError


def _bundle_dir(tmp_path, **changes):
    folder = tmp_path / "mymodel"
    folder.mkdir(exist_ok=True)
    (folder / "w.weights.h5").write_bytes(b"placeholder")
    b = ModelBundle(name="my-model", architecture="FPN", backbone="resnet50", weights=folder / "w.weights.h5",
                    provenance={"metrics": {"miou": 0.5}})
    data = b.to_dict()
    data.update(changes)
    (folder / "landcover.json").write_text(json.dumps(data))
    return folder / "landcover.json"


def test_round_trip_keeps_every_field(tmp_path):
    path = _bundle_dir(tmp_path)
    b = load_bundle(path)
    assert (b.name, b.architecture, b.backbone, b.tile_size, b.gsd_m) == ("my-model", "FPN", "resnet50", 256, 0.25)
    assert b.class_names == ["background", "building", "woodland", "water", "road"]
    assert b.weights == path.parent / "w.weights.h5"
    assert b.overlap == 32 and b.provenance["metrics"]["miou"] == 0.5
    assert load_bundle(path.parent) == b  # a folder with one JSON works too


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"architecture": "SegFormer"}, "unknown architecture"),
        ({"format": 7}, "format 7"),
        ({"tile_size": 100}, "multiple of 32"),
        ({"weights": "missing.h5"}, "is missing"),
        ({"classes": [{"id": 0, "name": "a", "color": [1, 2, 3]}]}, "at least 2 classes"),
        ({"classes": [{"id": 0, "name": "a", "color": [1, 2, 3]}, {"id": 2, "name": "b", "color": [1, 2, 3]}]},
         "ids"),
        ({"classes": [{"id": 0, "name": "a", "color": [1, 2]}, {"id": 1, "name": "b", "color": [1, 2, 3]}]},
         "colour"),
        ({"preprocessing": {"scale": 255, "mean": [0, 0], "std": [1, 1]}}, "one value per band"),
        ({"gsd_m": -1}, "gsd_m"),
    ],
)
def test_invalid_metadata_is_refused_with_a_message(tmp_path, changes, message):
    path = _bundle_dir(tmp_path, **changes)
    with pytest.raises(LandcoverError, match=message):
        load_bundle(path)


def test_broken_json_and_missing_bundle(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LandcoverError, match="not valid JSON"):
        load_bundle(bad)
    with pytest.raises(LandcoverError, match="does not exist"):
        load_bundle(tmp_path / "nothing.json")


def test_untrained_spec():
    b = untrained_bundle("untrained:fpn:resnet18", seed=3)
    assert (b.architecture, b.backbone, b.seed, b.is_untrained) == ("FPN", "resnet18", 3, True)
    for spec in ("untrained:Unet", "untrained:Transformer:resnet18"):
        with pytest.raises(LandcoverError):
            untrained_bundle(spec)


def test_models_are_found_by_key_name_and_path_in_the_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDCOVER_MODELS_DIR", str(tmp_path))
    path = _bundle_dir(tmp_path)
    keys = {m.key: m for m in list_models()}
    assert keys["mymodel"].origin == "user" and keys["mymodel"].info.name == "my-model"
    assert resolve_model("mymodel").source == path
    assert resolve_model("my-model").source == path
    assert resolve_model(str(path)).source == path
    with pytest.raises(LandcoverError, match="no model named"):
        resolve_model("other")


def test_unreadable_user_bundle_is_listed_with_its_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDCOVER_MODELS_DIR", str(tmp_path))
    _bundle_dir(tmp_path, architecture="Nope")
    listed = [m for m in list_models() if m.origin == "user"]
    assert listed[0].info is None and "unknown architecture" in listed[0].error
    with pytest.raises(LandcoverError, match="unknown architecture"):
        resolve_model("mymodel")

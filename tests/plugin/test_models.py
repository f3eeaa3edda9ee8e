"""Model bundles as the plugin reads them (JSON only, no backend import)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from landcover_plugin import models
from landcover_plugin.errors import LandcoverPluginError


def write_bundle(folder: Path, name: str = "tiny", gsd: float = 0.5, overlap: int | None = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.weights.h5").write_bytes(b"")
    path = folder / f"{name}.json"
    path.write_text(json.dumps({
        "format": 1, "name": name, "architecture": "Unet", "backbone": "resnet18", "tile_size": 128,
        "input_bands": 3, "gsd_m": gsd, "default_overlap": overlap, "default_batch_size": 4,
        "classes": [{"id": i, "name": n, "color": list(c)} for i, n, c in models.LANDCOVER_CLASSES],
        "weights": "tiny.weights.h5",
    }))
    return path


def test_load_bundle_json(tmp_path: Path) -> None:
    info = models.load_model_info(write_bundle(tmp_path))
    assert info.name == "tiny" and info.gsd_m == 0.5 and info.tile_size == 128
    assert [c.name for c in info.classes] == ["background", "building", "woodland", "water", "road"]
    assert info.classes[1].color == (220, 40, 40)
    assert (info.overlap, info.default_batch_size) == (16, 4)
    assert "0.5 m/pixel" in info.describe() and "woodland" in info.describe()


def test_overlap_defaults_to_an_eighth_of_a_tile(tmp_path: Path) -> None:
    assert models.load_model_info(write_bundle(tmp_path, overlap=None)).overlap == 16


def test_list_and_resolve_user_models(tmp_path: Path) -> None:
    env = {"LANDCOVER_MODELS_DIR": str(tmp_path / "models")}
    write_bundle(tmp_path / "models" / "mykey", name="my-model")
    (tmp_path / "models" / "broken").mkdir()
    (tmp_path / "models" / "broken" / "x.json").write_text("{not json")
    listed = [m for m in models.list_models(env=env) if m.origin == "user"]
    assert [m.name for m in listed] == ["my-model"]
    assert models.resolve_model("mykey", env=env).name == "my-model"
    assert models.resolve_model("my-model", env=env).name == "my-model"


def test_untrained_and_missing_models(tmp_path: Path) -> None:
    info = models.resolve_model("untrained:Unet:resnet18")
    assert info.spec == "untrained:Unet:resnet18" and len(info.classes) == 5
    with pytest.raises(LandcoverPluginError, match="does not exist.*Browse"):
        models.resolve_model(str(tmp_path / "missing.json"))
    with pytest.raises(LandcoverPluginError, match="no model named 'nothing'"):
        models.resolve_model("nothing", env={"LANDCOVER_MODELS_DIR": str(tmp_path)})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 1}))
    with pytest.raises(LandcoverPluginError, match="not a Landcover model bundle"):
        models.load_model_info(bad)

"""``python -m training average``: weighted means of bundle weights (fast tests on tiny weight files, no TensorFlow;
one slow test averages the shipped model with itself through a real ONNX export)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from backend.bundle import ModelBundle, load_bundle
from backend.errors import LandcoverError
from backend.models import WEIGHTS_LAYOUT
from tests.conftest import REPO
from training.average import Ingredient, average_bundles
from training.cli import main
from training.errors import TrainingError

SHAPES = {"00000": (3,), "00001": (2, 2, 3, 4), "00002": (4,)}


def tiny_bundle(folder: Path, seed: int, backbone: str = "resnet18", shapes: dict | None = None) -> Path:
    """A bundle JSON beside a small weights file in the bundle layout (random float16 arrays)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    weights = folder / "landcover.weights.h5"
    with h5py.File(weights, "w") as f:
        f.attrs["layout"] = WEIGHTS_LAYOUT
        group = f.create_group("weights")
        for key, shape in (shapes or SHAPES).items():
            group.create_dataset(key, data=rng.normal(size=shape).astype(np.float16)).attrs["name"] = f"var{key}:0"
    bundle = ModelBundle(name=f"tiny-{seed}", architecture="Unet", backbone=backbone, weights=weights,
                         provenance={"data": "tiny test arrays"})
    return bundle.save(folder / "landcover.json")


def arrays(json_path: Path) -> dict[str, np.ndarray]:
    with h5py.File(load_bundle(json_path).weights, "r") as f:
        return {k: f["weights"][k][()] for k in f["weights"]}


def test_weighted_mean_of_every_array(tmp_path: Path) -> None:
    a, b = tiny_bundle(tmp_path / "a", 1), tiny_bundle(tmp_path / "b", 2)
    out = average_bundles([Ingredient(a, 1), Ingredient(b, 3)], tmp_path / "soup" / "m.json", onnx=False)
    got, wa, wb = arrays(out), arrays(a), arrays(b)
    assert sorted(got) == sorted(SHAPES)
    for key in SHAPES:
        want = 0.25 * wa[key].astype(np.float64) + 0.75 * wb[key].astype(np.float64)
        assert got[key].dtype == np.float16
        np.testing.assert_allclose(got[key], want, rtol=2e-3, atol=2e-3)
    with h5py.File(load_bundle(out).weights, "r") as f:
        assert f.attrs["layout"] == WEIGHTS_LAYOUT and f["weights"]["00001"].attrs["name"] == "var00001:0"
    bundle = load_bundle(out)
    assert bundle.name == "tiny-1-average" and bundle.backbone == "resnet18" and bundle.onnx is None
    assert [(Path(i["bundle"]), i["share"]) for i in bundle.provenance["averaged"]] == [(a, 0.25), (b, 0.75)]
    assert not list((tmp_path / "soup").glob("*.part*"))


def test_averaging_a_bundle_with_itself_changes_nothing(tmp_path: Path) -> None:
    a = tiny_bundle(tmp_path / "a", 1)
    out = average_bundles([Ingredient(a, 0.3), Ingredient(a, 0.7)], tmp_path / "m.json", name="same", onnx=False)
    assert all(np.array_equal(arrays(out)[k], arrays(a)[k]) for k in SHAPES)
    assert load_bundle(out).name == "same"


@pytest.mark.parametrize(("other", "message"), [
    (dict(backbone="resnet50"), "differ in backbone"),
    (dict(shapes={**SHAPES, "00002": (5,)}), "array 00002 differs"),
    (dict(shapes={"00000": (3,)}), "not the same network"),
])
def test_different_networks_are_refused(tmp_path: Path, other: dict, message: str) -> None:
    a, b = tiny_bundle(tmp_path / "a", 1), tiny_bundle(tmp_path / "b", 2, **other)
    with pytest.raises(TrainingError, match=message):
        average_bundles([Ingredient(a), Ingredient(b)], tmp_path / "m.json", onnx=False)
    assert not (tmp_path / "m.weights.h5").exists() and not (tmp_path / "m.json").exists()


def test_a_bundle_without_weights_or_the_output_over_an_input_is_refused(tmp_path: Path) -> None:
    a, b = tiny_bundle(tmp_path / "a", 1), tiny_bundle(tmp_path / "b", 2)
    with pytest.raises(TrainingError, match="would overwrite the weights of"):
        average_bundles([Ingredient(a), Ingredient(b)], a, onnx=False)
    (tmp_path / "b" / "landcover.weights.h5").unlink()
    with pytest.raises(LandcoverError, match="landcover.weights.h5 named by the model bundle .* is missing"):
        average_bundles([Ingredient(a), Ingredient(b)], tmp_path / "m.json", onnx=False)


def test_ingredients_parse_path_and_share() -> None:
    assert Ingredient.parse("runs/a/landcover.json=0.25") == Ingredient(Path("runs/a/landcover.json"), 0.25)
    assert Ingredient.parse("b.json") == Ingredient(Path("b.json"), 1.0)
    with pytest.raises(TrainingError, match="must be a number"):
        Ingredient.parse("b.json=half")
    with pytest.raises(TrainingError, match="must be > 0"):
        Ingredient.parse("b.json=0")


def test_cli_writes_the_bundle_and_refuses_one_model(tmp_path: Path, capsys) -> None:
    a, b = tiny_bundle(tmp_path / "a", 1), tiny_bundle(tmp_path / "b", 2)
    out = tmp_path / "soup.json"
    assert main(["average", str(out), f"{a}=0.5", f"{b}=0.5", "--no-onnx"]) == 0
    assert json.loads(out.read_text())["provenance"]["averaged"][1]["share"] == 0.5
    assert main(["average", str(tmp_path / "one.json"), str(a), "--no-onnx"]) == 2
    assert "at least two bundles" in capsys.readouterr().err


@pytest.mark.slow
def test_the_shipped_model_averaged_with_itself_segments_as_it_does(tmp_path: Path) -> None:
    """The average is a complete bundle: its ONNX export runs, and the mean of a model with itself is that model."""
    import rasterio

    from backend.inference import segment

    shipped = REPO / "backend" / "bundles" / "default" / "landcover.json"
    out = average_bundles([Ingredient(shipped), Ingredient(shipped)], tmp_path / "avg" / "landcover.json")
    bundle = load_bundle(out)
    assert bundle.onnx is not None and bundle.onnx.file.is_file()
    crop = tmp_path / "crop.tif"
    with rasterio.open(REPO / "demo" / "orthophoto.tif") as src:
        window = rasterio.windows.Window(0, 0, 512, 512)
        profile = {**src.profile, "width": 512, "height": 512, "transform": src.window_transform(window)}
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
    classes = []
    for model, name in ((load_bundle(shipped), "a.tif"), (bundle, "b.tif")):
        segment(crop, tmp_path / name, model.with_precision("fp32"), runtime="onnx")
        with rasterio.open(tmp_path / name) as src:
            classes.append(src.read(1))
    assert (classes[0] == classes[1]).mean() > 0.999

"""The real-scene sanity suite (training/sanity.py): expectations, judging, and running a model on a scene."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from backend.bundle import ModelBundle
from tests.backend.conftest import IdentityRuntime
from tests.conftest import REPO
from tests.data.rasters import write_raster
from training.errors import TrainingError
from training.sanity import MAX_ABSENT, MIN_PRESENT, Scene, judge, load_scenes, report, run_scene

NAMES = ("background", "building", "woodland", "water", "road")


def shares(**values: float) -> dict[str, float]:
    return {n: values.get(n, 0.0) for n in NAMES}


def test_the_shipped_expectations_name_real_rasters_and_real_classes():
    path = REPO / "tests" / "data" / "real" / "expectations.json"
    scenes = load_scenes(path)
    assert len(scenes) >= 3
    for scene in scenes:
        assert (path.parent / scene.raster).is_file() and len(scene.note) > 40
        assert set(scene.absent) | set(scene.present) | set(scene.covers) <= set(NAMES)


def test_absent_classes_must_stay_below_and_present_ones_reach_their_thresholds():
    scene = Scene("x.tif", "a field", absent=("water", "building"), present=("background",))
    assert judge(scene, shares(background=0.9, water=MAX_ABSENT / 2, building=0.0)).passed
    failed = judge(scene, shares(background=MIN_PRESENT / 2, building=0.125))
    assert not failed.passed and len(failed.failures) == 2
    assert "building covers 12.5 % (certainly absent" in failed.failures[0]
    assert "background covers 0.25 % (certainly present" in failed.failures[1]
    text = report([failed], "m")
    assert "FAIL: building covers 12.5 %" in text and "0 of 1 scenes pass." in text


def test_an_estimated_share_fails_a_model_that_finds_only_stray_patches_of_the_forest(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps([{"raster": "x.tif", "note": "a forest", "absent": ["water"], "present": ["woodland"],
                                 "covers": {"woodland": [30, 100], "background": [0, 60]}}]))
    scene = load_scenes(path)[0]
    assert scene.covers == {"woodland": (30.0, 100.0), "background": (0.0, 60.0)}
    assert judge(scene, shares(woodland=0.7, background=0.3)).passed
    stray = judge(scene, shares(woodland=0.044, background=0.956))  # "present" (>= 0.5 %), yet the forest is missed
    assert stray.failures == ["woodland covers 4.4 % (a person sees 30-100 %)",
                              "background covers 95.6 % (a person sees 0-60 %)"]
    text = report([stray], "m")
    assert "| woodland 30-100 %, background 0-60 % | FAIL: woodland covers 4.4 %" in text


@pytest.mark.parametrize("covers, message", [({"woodland": (40, 20)}, "low < high"), ({"water": (5, 50)}, "absent"),
                                             ({"woodland": (0, 120)}, "low < high")])
def test_an_estimate_must_be_a_range_of_per_cents_and_agree_with_the_absent_classes(covers, message):
    with pytest.raises(TrainingError, match=message):
        Scene("x.tif", "note", absent=("water",), covers=covers)


@pytest.mark.parametrize("bad", [{"absent": ["water"], "present": ["water"]}, {}])
def test_a_scene_says_something_and_never_both(bad):
    with pytest.raises(TrainingError):
        Scene("x.tif", "note", absent=tuple(bad.get("absent", ())), present=tuple(bad.get("present", ())))


def test_an_unknown_class_is_an_error(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps([{"raster": "x.tif", "note": "n", "absent": ["lava"]}]))
    with pytest.raises(TrainingError, match="no class 'lava'"):
        judge(load_scenes(path)[0], shares(background=1.0))


def test_a_scene_runs_through_segment_with_resampling(tmp_path):
    """Identity model: class = red value mod 5; red 3 everywhere but a 10 % strip of red 1 ('building')."""
    rgb = np.full((3, 200, 200), 3, np.uint8)
    rgb[0, :, :20] = 1
    write_raster(tmp_path / "scene.tif", rgb, pixel_size=0.5)  # the model is at 0.25 m: resampled 2x
    scene = Scene("scene.tif", "water with a strip of roofs", absent=("road",), present=("water", "building"))
    bundle = ModelBundle(name="identity", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25)
    (tmp_path / "out").mkdir()
    result = run_scene(bundle, scene, tmp_path, tmp_path / "out", runtime=IdentityRuntime())
    assert result.passed and result.shares["water"] == pytest.approx(0.9, abs=0.01)
    assert result.shares["building"] == pytest.approx(0.1, abs=0.01)


def test_a_no_imagery_value_the_file_does_not_flag_is_left_out(tmp_path):
    """A black collar (value 0, read as class 0 by the identity model) counts only until the scene flags it."""
    rgb = np.full((3, 200, 200), 3, np.uint8)
    rgb[:, :60, :] = 0  # 30 % black, not flagged in the file
    write_raster(tmp_path / "scene.tif", rgb, pixel_size=0.25)
    bundle = ModelBundle(name="identity", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25)
    (tmp_path / "out").mkdir()
    unflagged = Scene("scene.tif", "water with a black collar", absent=("background",))
    result = run_scene(bundle, unflagged, tmp_path, tmp_path / "out", runtime=IdentityRuntime())
    assert not result.passed and result.shares["background"] == pytest.approx(0.3, abs=0.01)
    flagged = Scene("scene.tif", "water with a black collar", absent=("background",), nodata=0)
    result = run_scene(bundle, flagged, tmp_path, tmp_path / "out", runtime=IdentityRuntime())
    assert result.passed and result.shares["water"] == pytest.approx(1.0)
    with rasterio.open(tmp_path / "scene.tif") as ds:
        assert ds.nodata is None  # the user's file is not touched


def test_a_figure_shows_the_scene_beside_its_classes_in_the_models_colours(tmp_path):
    """The identity model's classes of a 100 px scene at 0.5 m: 200 px at 0.25 m, enlarged 2x to 400 px."""
    from PIL import Image

    from backend.contract import ClassInfo

    rgb = np.full((3, 100, 100), 3, np.uint8)
    rgb[0, :, :10] = 1
    write_raster(tmp_path / "scene.tif", rgb, pixel_size=0.5)
    colours = [(0, 0, 0), (255, 0, 0), (0, 128, 0), (0, 0, 255), (128, 128, 128)]
    bundle = ModelBundle(name="identity", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25,
                         classes=tuple(ClassInfo(i, n, c) for i, (n, c) in enumerate(zip(NAMES, colours, strict=True))))
    (tmp_path / "out").mkdir()
    run_scene(bundle, Scene("scene.tif", "water, roofs", absent=("road",)), tmp_path, tmp_path / "out",
              runtime=IdentityRuntime(), figures=tmp_path / "figs")
    image = np.asarray(Image.open(tmp_path / "figs" / "scene.png"))
    assert image.shape == (400, 800, 3) and not list((tmp_path / "figs").glob("*.part*"))
    left, right = image[:, :400], image[:, 400:]
    assert (left[200, 200] == 3).all()  # the scene itself, averaged onto the class grid
    assert tuple(right[200, 10]) == (255, 0, 0) and tuple(right[200, 300]) == (0, 0, 255)  # building | water

"""The three seed-model configs for the real LandCover.ai, run end to end on the imitation (tiny steps).

Each writes a bundle the plugin can load (with its ONNX export) and a model card that puts its figures beside
the seed notebook's; the 50 cm sheets are resampled to 25 cm while patching, as the bundle's gsd_m says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio

from tests.conftest import REPO
from training.model_card import SEED_RESULTS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("name", "architecture", "backbone"), [
    ("unet_resnet18", "Unet", "resnet18"), ("unet_resnet50", "Unet", "resnet50"), ("fpn_resnet18", "FPN", "resnet18"),
])
def test_config_runs_end_to_end_on_the_imitation(name, architecture, backbone, fake_dir: Path, tmp_path: Path) -> None:
    from backend.bundle import load_bundle
    from training.config import load_config
    from training.patch import read_index
    from training.pipeline import run_pipeline

    # What 'make train CONFIG=training/configs/landcoverai_NAME.yaml DATA=...' runs, with tiny steps.
    config = load_config(REPO / "training" / "configs" / f"landcoverai_{name}.yaml", [
        f"data.dir={fake_dir}", f"workdir={tmp_path}", f"export.out={tmp_path}/bundle/landcover.json",
        f"export.model_card={tmp_path}/card.md", "train.batch_size=2", "train.steps_per_epoch=1", "train.epochs=1",
        "train.val_batches=1", "evaluate.examples=2",
        # One training step leaves class scores too close for the 99.5 % INT8 gate; the export is still made.
        "export.params.int8_min_agreement=0.5"])
    run_pipeline(config, say=lambda _m: None)
    bundle = load_bundle(tmp_path / "bundle" / "landcover.json")
    assert (bundle.architecture, bundle.backbone, bundle.tile_size, bundle.gsd_m) == (architecture, backbone, 256, 0.25)
    assert bundle.has_weights and bundle.onnx is not None and bundle.onnx.file.is_file() and bundle.onnx.deepness
    assert bundle.onnx_int8 is not None and bundle.onnx_int8.file.is_file()
    import json

    precision = json.loads((tmp_path / "model" / "train.json").read_text())["precision"]
    assert precision["asked"] and precision["policy"] == "float32" and "no GPU" in precision["why"]  # a CPU here
    card = (tmp_path / "card.md").read_text()
    accuracy, macro_f1 = SEED_RESULTS[(architecture, backbone)]
    assert "## Compared with the seed notebook" in card
    assert f"| seed notebook | {accuracy:.3f} | {macro_f1:.3f} |" in card
    assert "Synthetic scenes" not in card  # real-data runs are not called demo models
    per_source: dict[str, int] = {}
    for record in read_index(tmp_path / "patches"):
        per_source[record.source] = per_source.get(record.source, 0) + 1
    for image in sorted((fake_dir / "images").glob("*.tif")):
        with rasterio.open(image) as src:
            rows, cols = round(src.height * src.res[1] / 0.25), round(src.width * src.res[0] / 0.25)
        assert per_source[image.stem] == (rows // 256) * (cols // 256), image.name  # patched at 25 cm

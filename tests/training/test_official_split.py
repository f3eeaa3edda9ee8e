"""``split.mode: official``: LandCover.ai's own tile lists mapped onto the pipeline's patches, without leakage.

The proof is in the pixels: the masks of a dataset made here carry, in every 512 px official tile, the code of
the list that names the tile (1 train, 2 val, 3 test, 4 for the partial edge tiles no list names). Patches are
cut through the real patch step (with the 50 cm sheet resampled to 25 cm) and split by the real split step;
then every patch's mask must be one code, the code of its own split. A patch holding pixels of two lists, or
of an unlisted tile, would show two codes or code 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rasterio.transform import from_origin

from training.errors import TrainingError
from training.filter import KEPT_NAME
from training.patch import PatchParams, patch_dataset, read_index
from training.split import OFFICIAL_TILE, NativeGrid, SplitParams, split_patches
from training.synthetic import write_geotiff

CODES = {"train": 1, "val": 2, "test": 3}
UNLISTED = 4
PIPELINE = {"train": "train", "val": "val", "eval": "test"}  # pipeline split -> official list


def coded_dataset(root: Path) -> dict[str, str]:
    """Two orthophotos (25 cm, 1300 x 1100; 50 cm, 1100 x 1300) whose masks code their tiles' lists."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    lists: dict[str, list[str]] = {s: [] for s in CODES}
    order = ["train", "val", "train", "test", "train"]
    n = 0
    for name, (h, w), gsd in (("M-33-20-D-c-4-2", (1300, 1100), 0.25), ("N-34-97-D-c-2-4", (1100, 1300), 0.5)):
        rows, cols = -(-h // OFFICIAL_TILE), -(-w // OFFICIAL_TILE)
        mask = np.full((h, w), UNLISTED, np.uint8)
        for r in range(rows):
            for c in range(cols):
                if (r + 1) * OFFICIAL_TILE <= h and (c + 1) * OFFICIAL_TILE <= w:  # split.py writes full tiles only
                    split = order[n % len(order)]
                    n += 1
                    lists[split].append(f"{name}_{r * cols + c}")
                    mask[r * OFFICIAL_TILE:(r + 1) * OFFICIAL_TILE, c * OFFICIAL_TILE:(c + 1) * OFFICIAL_TILE] = \
                        CODES[split]
        image = np.random.default_rng(n).integers(0, 256, (h, w, 3)).astype(np.uint8)
        transform = from_origin(500_000, 400_000, gsd, gsd)
        write_geotiff(root / "images" / f"{name}.tif", image, transform)
        write_geotiff(root / "masks" / f"{name}.tif", mask, transform)
    for split, names in lists.items():
        (root / f"{split}.txt").write_text("".join(f"{t}\n" for t in names))
    return {t: s for s, names in lists.items() for t in names}


def split_coded(tmp_path: Path, patch: PatchParams) -> tuple[Path, Path, dict]:
    data, patches, out = tmp_path / "data", tmp_path / "patches", tmp_path / "split"
    coded_dataset(data)
    patch_dataset(data, patches, patch)
    (patches / KEPT_NAME).write_text("".join(f"{r.patch}\n" for r in read_index(patches)))  # keep every patch
    info = split_patches(patches, SplitParams(mode="official"), out, data_dir=data, patch=patch)
    return patches, out, info


def mask_codes(patches: Path, name: str) -> set[int]:
    return set(np.unique(np.asarray(Image.open(patches / "masks" / f"{name}.png"))).tolist())


@pytest.mark.parametrize("size,stride", [(256, None), (384, None), (256, 192)])
def test_every_patch_holds_pixels_of_its_own_list_only(tmp_path, size, stride):
    patch = PatchParams(size, stride, gsd_m=0.25)
    patches, out, info = split_coded(tmp_path, patch)
    for split in ("train", "val", "eval"):
        names = (out / f"{split}.txt").read_text().split()
        # Aligned patches find room in every list; 384 px ones fit wholly in few 512 px tiles.
        assert names or (size, stride) != (256, None), split
        for name in names:
            assert mask_codes(patches, name) == {CODES[PIPELINE[split]]}, (split, name)
    # And exactly those: a patch is in a split if and only if its pixels are all of one listed tile code.
    where = {name: split for split in ("train", "val", "eval") for name in (out / f"{split}.txt").read_text().split()}
    for record in read_index(patches):
        codes = mask_codes(patches, record.patch)
        if len(codes) == 1 and UNLISTED not in codes:
            assert CODES[PIPELINE[where.get(record.patch, "train")]] == codes.pop() and record.patch in where
        else:
            assert record.patch not in where, record.patch
    total = len(read_index(patches))
    left = info["official"]["patches_left_out"]
    assert sum(info["counts"].values()) + left["straddling"] + left["unlisted"] == total
    assert left["unlisted"] > 0  # the partial edge tiles are in no list
    if size == 384 or stride == 192:
        assert left["straddling"] > 0  # patches across a tile border between two lists are left out
    assert info["params"]["mode"] == "official" and info["official"]["leaking_patches"] == 0
    written = json.loads((out / "split.json").read_text())["official"]
    assert written["tiles"] == info["official"]["tiles"] and written["tiles"]["eval"] > 0


def test_the_50_cm_sheet_maps_through_the_resampling():
    """Resampled to 25 cm a 50 cm sheet has twice the pixels: patch (row 2, col 5) of 256 px is native tile k=1."""
    grid = NativeGrid(scale_y=2.0, scale_x=2.0, height=700, width=600)
    assert grid.tile_cols == 2
    assert grid.tiles_of_patch(2, 5, 256, 256) == [1]
    assert grid.tiles_of_patch(3, 3, 256, 256) == [0]  # ends exactly on the tile border: does not reach across
    # 384 px patches at patched 768..1152 are native 384..576: across the border at 512 both ways.
    assert grid.tiles_of_patch(2, 2, 384, 384) == [0, 1, 2, 3]
    assert grid.tile_is_full(0) and not grid.tile_is_full(1)


def test_official_mode_needs_the_lists(tmp_path, synthetic_dir):
    patches = tmp_path / "patches"
    patch = PatchParams(128)
    patch_dataset(synthetic_dir, patches, patch)
    (patches / KEPT_NAME).write_text("".join(f"{r.patch}\n" for r in read_index(patches)))
    with pytest.raises(TrainingError, match=r"needs LandCover.ai's train.txt, val.txt, test.txt .* use split.mode"):
        split_patches(patches, SplitParams(mode="official"), tmp_path / "s", data_dir=synthetic_dir, patch=patch)
    with pytest.raises(TrainingError, match="split mode must be one of grouped, random, official"):
        SplitParams(mode="papers")


@pytest.mark.slow
def test_a_seed_config_runs_on_the_official_split_of_the_imitation(fake_dir: Path, tmp_path: Path) -> None:
    """``make train CONFIG=training/configs/landcoverai_unet_resnet18.yaml`` with ``split.mode=official``."""
    from backend.bundle import load_bundle
    from tests.conftest import REPO
    from training.config import load_config
    from training.pipeline import run_pipeline

    config = load_config(REPO / "training" / "configs" / "landcoverai_unet_resnet18.yaml", [
        f"data.dir={fake_dir}", f"workdir={tmp_path}", f"export.out={tmp_path}/bundle/landcover.json",
        f"export.model_card={tmp_path}/card.md", "split.mode=official", "train.batch_size=2",
        "train.steps_per_epoch=1", "train.epochs=1", "train.val_batches=1", "evaluate.examples=2",
        "export.params.int8=false"])
    said: list[str] = []
    run_pipeline(config, say=said.append)
    info = json.loads((tmp_path / "split" / "split.json").read_text())
    assert info["params"]["mode"] == "official" and all(info["counts"].values())
    assert any("official lists" in m and "no patch leaks" in m for m in said)
    assert "official train/val/test tile lists" in (tmp_path / "card.md").read_text()
    assert load_bundle(tmp_path / "bundle" / "landcover.json").provenance["config"]["split"]["mode"] == "official"


# ------------------------------------------------------------------ the bundle's pixel size is what was trained


def test_the_bundle_gsd_follows_the_patch_resampling_or_the_data(fake_dir, synthetic_dir):
    from training.export import trained_gsd

    assert trained_gsd(0.3, fake_dir) == 0.3  # patches resampled to 0.3 m: the model learnt 0.3 m
    assert trained_gsd(None, synthetic_dir) == 0.25  # native pixels, all 0.25 m
    with pytest.raises(TrainingError, match=r"different pixel sizes \(0.25 to 0.5 m\) and patch.gsd_m is null"):
        trained_gsd(None, fake_dir)  # LandCover.ai mixes 25 and 50 cm: no single size to declare


def test_a_declared_gsd_that_contradicts_the_patches_is_a_config_error():
    from tests.conftest import REPO
    from training.config import load_config

    config = REPO / "training" / "configs" / "landcoverai_unet_resnet18.yaml"
    assert load_config(config, ["data.dir=/data/landcover.ai"]).export.params.gsd_m is None  # follows patch.gsd_m
    with pytest.raises(TrainingError, match="export.params.gsd_m 0.5 contradicts patch.gsd_m 0.25"):
        load_config(config, ["data.dir=/data/landcover.ai", "export.params.gsd_m=0.5"])

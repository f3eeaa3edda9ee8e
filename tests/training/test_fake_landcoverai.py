"""The fake LandCover.ai v1 download: the official layout, names, georeferencing, pixel sizes and split lists."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.training.conftest import FAKE
from training.errors import TrainingError
from training.fake_landcoverai import FakeParams, full_tiles

# The real names are Polish 1:5000 map sheets, e.g. M-33-20-D-c-4-2, N-34-97-D-c-2-4.
SHEET = re.compile(r"^[MN]-3[34]-\d{1,3}-[A-D]-[a-d]-[1-4]-[1-4]$")


def official_tiles(height: int, width: int, size: int = 512) -> list[int]:
    """The official split.py loop, verbatim in logic: k counts every grid step, only full tiles are written."""
    written, k = [], 0
    for y in range(0, height, size):
        for x in range(0, width, size):
            if min(size, height - y) == size and min(size, width - x) == size:
                written.append(k)
            k += 1
    return written


def read_lists(root: Path) -> dict[str, list[str]]:
    return {s: (root / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}


def test_layout_is_the_official_one(fake_dir: Path) -> None:
    assert sorted(p.name for p in fake_dir.iterdir()) == ["images", "masks", "test.txt", "train.txt", "val.txt"]
    images = sorted(p.name for p in (fake_dir / "images").iterdir())
    masks = sorted(p.name for p in (fake_dir / "masks").iterdir())
    assert images == masks and len(images) == FAKE.orthophotos
    assert all(name.endswith(".tif") and SHEET.match(name[:-4]) for name in images), images


def test_georeferencing_bands_and_pixel_sizes(fake_dir: Path) -> None:
    gsds, classes = set(), set()
    for image_path in sorted((fake_dir / "images").glob("*.tif")):
        with rasterio.open(image_path) as img, rasterio.open(fake_dir / "masks" / image_path.name) as msk:
            assert img.crs.to_epsg() == 2180 and msk.crs == img.crs and msk.transform == img.transform
            assert img.count == 3 and img.dtypes == ("uint8",) * 3
            assert msk.count == 1 and msk.dtypes == ("uint8",) and (msk.height, msk.width) == (img.height, img.width)
            gsd = img.transform.a
            assert gsd == -img.transform.e
            gsds.add(gsd)
            # A 50 cm orthophoto covers the ground of a 25 cm one: size..1.5*size px at 25 cm.
            assert FAKE.size * 0.25 - 1 <= img.width * gsd <= FAKE.size * 1.5 * 0.25 + 1
            mask = msk.read(1)
            assert mask.max() <= 4
            classes |= set(np.unique(mask).tolist())
            assert img.read().std() > 5  # drawn content, not a flat fill
    assert gsds == {0.25, 0.5}
    assert {0, 2}.issubset(classes) and len(classes) >= 3  # background, woodland, and more to learn from


def test_split_lists_follow_split_py(fake_dir: Path) -> None:
    lists = read_lists(fake_dir)
    assert all(lists.values()) and len(lists["train"]) > len(lists["val"])
    listed = [t for tiles in lists.values() for t in tiles]
    assert len(listed) == len(set(listed)), "a tile is in two lists (or twice in one)"
    expected = set()
    for mask_path in (fake_dir / "masks").glob("*.tif"):
        with rasterio.open(mask_path) as src:
            expected |= {f"{mask_path.stem}_{k}" for k in official_tiles(src.height, src.width)}
    assert set(listed) == expected  # every full tile once, nothing else


def test_full_tiles_matches_split_py_numbering() -> None:
    # 1100 x 1600: a 3 x 4 grid, the last row and column partial -> k 3, 7, 8..11 are never written.
    assert full_tiles(1100, 1600) == [0, 1, 2, 4, 5, 6]
    for h, w in [(512, 512), (1023, 1024), (1536, 1537), (2048, 700)]:
        assert full_tiles(h, w) == official_tiles(h, w)


@pytest.mark.parametrize("kwargs, match", [({"orthophotos": 1}, "orthophotos"), ({"size": 600}, "--size")])
def test_params_are_validated(kwargs, match) -> None:
    with pytest.raises(TrainingError, match=match):
        FakeParams(**kwargs)


def test_the_patch_step_reads_it(fake_dir: Path, tmp_path: Path) -> None:
    from training.patch import PatchParams, patch_dataset

    summary = patch_dataset(fake_dir, tmp_path / "patches", PatchParams(size=256))
    assert summary.orthophotos == FAKE.orthophotos and summary.patches >= 4 * len(read_lists(fake_dir)["train"])


@pytest.mark.slow
def test_cli_is_deterministic_per_seed(fake_dir: Path, tmp_path: Path) -> None:
    from training.cli import main

    args = ["--orthophotos", str(FAKE.orthophotos), "--size", str(FAKE.size)]
    assert main(["fake-landcoverai", str(tmp_path / "same"), "--seed", str(FAKE.seed), *args]) == 0
    assert read_lists(tmp_path / "same") == read_lists(fake_dir)
    for mask_path in (fake_dir / "masks").glob("*.tif"):
        with rasterio.open(mask_path) as a, rasterio.open(tmp_path / "same" / "masks" / mask_path.name) as b:
            assert np.array_equal(a.read(), b.read()) and a.transform == b.transform
    assert main(["fake-landcoverai", str(tmp_path / "other"), "--seed", str(FAKE.seed + 1), *args]) == 0
    assert read_lists(tmp_path / "other") != read_lists(fake_dir)

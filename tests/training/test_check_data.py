"""check-data: the imitation passes; each kind of broken copy is caught with a message naming the file and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from tests.training.conftest import FAKE
from training.check_data import check_data
from training.cli import main
from training.errors import TrainingError
from training.synthetic import write_geotiff


@pytest.fixture
def copy(fake_dir: Path, tmp_path: Path) -> Path:  # noqa: F811
    """A private copy of the imitation to break."""
    return Path(shutil.copytree(fake_dir, tmp_path / "lc"))


def first(root: Path) -> str:
    return sorted(p.stem for p in (root / "images").glob("*.tif"))[0]


def read(path: Path) -> tuple[np.ndarray, object, int, int]:
    with rasterio.open(path) as src:
        return src.read(), src.transform, src.height, src.width


def test_imitation_passes(fake_dir: Path, capsys) -> None:  # noqa: F811
    report = check_data(fake_dir)
    assert report.ok, report.problems
    assert report.pairs == report.images == report.masks == FAKE.orthophotos
    assert set(report.pixel_sizes) == {"25 cm", "50 cm"} and sum(report.pixel_sizes.values()) == FAKE.orthophotos
    lines = {s: len((fake_dir / f"{s}.txt").read_text().split()) for s in ("train", "val", "test")}
    assert report.split_sizes == lines
    assert len(report.warnings) == 1 and "41" in report.warnings[0]  # only the orthophoto count differs
    assert main(["check-data", str(fake_dir)]) == 0
    out = capsys.readouterr().out
    assert f"{FAKE.orthophotos} pairs" in out and "at 25 cm" in out and "at 50 cm" in out
    assert f"train {lines['train']}" in out and "result: usable" in out


def _missing_mask(root: Path, name: str) -> None:
    (root / "masks" / f"{name}.tif").unlink()


def _mask_other_size(root: Path, name: str) -> None:
    data, transform, _, _ = read(root / "masks" / f"{name}.tif")
    write_geotiff(root / "masks" / f"{name}.tif", data[0, :-16], transform)


def _mask_value_7(root: Path, name: str) -> None:
    data, transform, h, w = read(root / "masks" / f"{name}.tif")
    data[0, h - 1, w - 1] = 7  # one pixel, in the last strip
    write_geotiff(root / "masks" / f"{name}.tif", data[0], transform)


def _four_bands(root: Path, name: str) -> None:
    data, transform, _, _ = read(root / "images" / f"{name}.tif")
    rgba = np.concatenate([np.moveaxis(data, 0, 2), np.full(data.shape[1:] + (1,), 255, np.uint8)], axis=2)
    write_geotiff(root / "images" / f"{name}.tif", rgba, transform)


def _wrong_crs(root: Path, name: str) -> None:
    for sub in ("images", "masks"):  # both, so only the CRS is wrong, not the pair's agreement
        with rasterio.open(root / sub / f"{name}.tif", "r+") as dst:
            dst.crs = CRS.from_epsg(32634)


def _missing_orthophoto(root: Path, name: str) -> None:
    with (root / "val.txt").open("a") as f:
        f.write("M-33-99-A-a-1-1_0\n")


def _out_of_range(root: Path, name: str) -> None:
    with (root / "val.txt").open("a") as f:
        f.write(f"{name}_999\n")


def _partial_edge_tile(root: Path, name: str) -> None:
    _, _, h, w = read(root / "masks" / f"{name}.tif")
    cols = -(-w // 512)
    assert w % 512, "the imitation's widths are not multiples of 512"
    with (root / "test.txt").open("a") as f:
        f.write(f"{name}_{cols - 1}\n")  # last column of the first row: a partial tile split.py never writes


def _in_two_lists(root: Path, name: str) -> None:
    tile = (root / "train.txt").read_text().split()[0]
    with (root / "test.txt").open("a") as f:
        f.write(f"{tile}\n")


BROKEN = {
    "missing mask": (_missing_mask, ["masks/{name}.tif is missing", "re-extract"]),
    "mask of another size": (_mask_other_size, ["masks/{name}.tif", "pixel for pixel"]),
    "mask value 7": (_mask_value_7, ["masks/{name}.tif: class values 7 outside 0..4", "remap"]),
    "4-band image": (_four_bands, ["images/{name}.tif: 4 band(s)", "convert it to RGB uint8"]),
    "wrong CRS": (_wrong_crs, ["images/{name}.tif: CRS EPSG:32634, expected EPSG:2180", "do not reproject"]),
    "missing orthophoto": (_missing_orthophoto, ["val.txt line", "M-33-99-A-a-1-1", "add images/M-33-99-A-a-1-1.tif"]),
    "out-of-range tile": (_out_of_range, ["val.txt line", "'{name}_999' is outside", "does not match"]),
    "partial edge tile": (_partial_edge_tile, ["test.txt line", "edge tiles excluded"]),
    "tile in two lists": (_in_two_lists, ["test.txt line", "is also in train.txt", "one list only"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_copy_is_caught(case: str, copy: Path, capsys) -> None:
    name = first(copy)
    breaker, needles = BROKEN[case]
    breaker(copy, name)
    report = check_data(copy)
    assert not report.ok
    needles = [n.format(name=name) for n in needles]
    assert any(all(n in p for n in needles) for p in report.problems), report.problems
    assert main(["check-data", str(copy)]) == 2
    captured = capsys.readouterr()
    assert "result: NOT usable" in captured.out and any(needles[0] in line for line in captured.out.splitlines())
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not usable" in err[0]


def test_missing_folders_and_empty_lists(tmp_path: Path) -> None:
    report = check_data(tmp_path)
    assert not report.ok and report.pairs == 0
    assert any("images does not exist" in p and "unzip" in p for p in report.problems)
    assert any("masks does not exist" in p for p in report.problems)


def test_unusual_but_usable_data_only_warns(copy: Path) -> None:
    name = first(copy)
    for sub in ("images", "masks"):
        data, transform, _, _ = read(copy / sub / f"{name}.tif")
        arr = data[0] if sub == "masks" else np.moveaxis(data, 0, 2)
        write_geotiff(copy / sub / f"{name}.tif", arr, transform * transform.scale(1.2))  # 0.3 or 0.6 m
    for s in ("train", "val", "test"):
        (copy / f"{s}.txt").unlink()
    report = check_data(copy)
    assert report.ok, report.problems
    assert report.split_sizes == {}
    assert any(f"images/{name}.tif: pixel size" in w for w in report.warnings)
    assert any("no official split lists" in w for w in report.warnings)
    assert sum(report.pixel_sizes.values()) == FAKE.orthophotos and len(report.pixel_sizes) >= 2


def test_pipeline_stops_on_a_bad_data_dir(copy: Path, tmp_path: Path) -> None:
    from training.config import build_config
    from training.pipeline import run_pipeline

    _mask_value_7(copy, first(copy))
    config = build_config({"workdir": str(tmp_path / "work"), "data": {"dir": str(copy)}})
    with pytest.raises(TrainingError, match="class values 7"):
        run_pipeline(config, say=lambda _m: None)
    assert not (tmp_path / "work" / "patches").exists()  # stopped before patching

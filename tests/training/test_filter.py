from __future__ import annotations

import json

import pytest

from training.errors import TrainingError
from training.filter import FilterParams, class_counts, filter_patches, read_lines, select
from training.patch import PatchParams, PatchRecord, patch_dataset


def rec(name: str, background: int, other: int, cls: int = 2) -> PatchRecord:
    pixels = [background, 0, 0, 0, 0]
    pixels[cls] += other
    return PatchRecord(name, "src", 0, 0, tuple(pixels))


def test_threshold_is_exclusive() -> None:
    records = [rec("at", 95, 5), rec("above", 94, 6), rec("below", 96, 4), rec("all_fg", 0, 100)]
    kept = [r.patch for r in select(records, FilterParams(threshold=0.05))]
    assert kept == ["above", "all_fg"]


def test_zero_threshold_keeps_any_foreground() -> None:
    records = [rec("empty", 100, 0), rec("one", 99, 1)]
    assert [r.patch for r in select(records, FilterParams(threshold=0.0))] == ["one"]


def test_keep_background_fraction_is_seeded() -> None:
    records = [rec(f"bg{i}", 100, 0) for i in range(20)] + [rec("fg", 50, 50)]
    a = [r.patch for r in select(records, FilterParams(keep_background=0.25, seed=1))]
    b = [r.patch for r in select(records, FilterParams(keep_background=0.25, seed=1))]
    assert a == b and len(a) == 1 + 5 and "fg" in a
    assert len(select(records, FilterParams(keep_background=1.0))) == 21


def test_class_counts() -> None:
    counts = class_counts([rec("a", 90, 10, cls=1), rec("b", 60, 40, cls=3)])
    assert counts["background"] == {"patches": 2, "pixels": 150}
    assert counts["building"] == {"patches": 1, "pixels": 10}
    assert counts["water"] == {"patches": 1, "pixels": 40}
    assert counts["road"] == {"patches": 0, "pixels": 0}


def test_filter_writes_kept_list_and_report(synthetic_dir, tmp_path) -> None:
    patch_dataset(synthetic_dir, tmp_path / "p", PatchParams(size=64))
    report = filter_patches(tmp_path / "p", FilterParams(threshold=0.3))
    kept = read_lines(tmp_path / "p" / "kept.txt")
    assert len(kept) == report["patches_after"] < report["patches_before"] == 64
    assert json.loads((tmp_path / "p" / "filter_report.json").read_text())["patches_after"] == len(kept)
    before, after = report["before"], report["after"]
    assert after["background"]["pixels"] / sum(v["pixels"] for v in after.values()) < before["background"][
        "pixels"
    ] / sum(v["pixels"] for v in before.values())


def test_nothing_kept_is_an_error(synthetic_dir, tmp_path) -> None:
    patch_dataset(synthetic_dir, tmp_path / "p", PatchParams(size=64))
    with pytest.raises(TrainingError, match="lower --threshold"):
        filter_patches(tmp_path / "p", FilterParams(threshold=0.999999))


@pytest.mark.parametrize("kwargs", [{"threshold": 1.0}, {"threshold": -0.1}, {"keep_background": 1.5}])
def test_bad_parameters(kwargs) -> None:
    with pytest.raises(TrainingError):
        FilterParams(**kwargs)

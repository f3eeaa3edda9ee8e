from __future__ import annotations

import json

import pytest

from training.errors import TrainingError
from training.filter import FilterParams, filter_patches
from training.patch import PatchParams, patch_dataset
from training.split import SPLITS, SplitParams, read_split, split_names, split_patches


def dataset(n_sources: int, per_source: int) -> tuple[list[str], list[str]]:
    names = [f"s{s:02d}_r000_c{c:03d}" for s in range(n_sources) for c in range(per_source)]
    return names, [n.split("_")[0] for n in names]


def test_grouped_split_never_shares_an_orthophoto() -> None:
    names, sources = dataset(20, 10)
    parts = split_names(names, sources, SplitParams(seed=3))
    source_of = dict(zip(names, sources, strict=True))
    groups = {s: {source_of[n] for n in parts[s]} for s in SPLITS}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["eval"]
    assert not groups["val"] & groups["eval"]
    assert sorted(sum(parts.values(), [])) == sorted(names)
    assert [len(parts[s]) for s in SPLITS] == [140, 40, 20]


def test_split_is_deterministic_per_seed() -> None:
    names, sources = dataset(12, 5)
    a = split_names(names, sources, SplitParams(seed=1))
    assert a == split_names(names, sources, SplitParams(seed=1))
    assert any(a != split_names(names, sources, SplitParams(seed=s)) for s in range(2, 6))


def test_small_dataset_still_gets_every_split() -> None:
    names, sources = dataset(3, 4)
    parts = split_names(names, sources, SplitParams())
    assert all(len(parts[s]) == 4 for s in SPLITS)


def test_too_few_orthophotos_for_grouping() -> None:
    names, sources = dataset(2, 4)
    with pytest.raises(TrainingError, match="--random"):
        split_names(names, sources, SplitParams())


def test_random_split_matches_fractions_and_mixes_sources() -> None:
    names, sources = dataset(4, 50)
    parts = split_names(names, sources, SplitParams(mode="random", seed=0))
    assert [len(parts[s]) for s in SPLITS] == [140, 40, 20]
    assert len({n.split("_")[0] for n in parts["eval"]}) > 1
    assert parts == split_names(names, sources, SplitParams(mode="random", seed=0))


def test_split_patches_writes_lists(synthetic_dir, tmp_path) -> None:
    patch_dataset(synthetic_dir, tmp_path / "p", PatchParams(size=64))
    filter_patches(tmp_path / "p", FilterParams(threshold=0.0))
    info = split_patches(tmp_path / "p", SplitParams(0.5, 0.25, 0.25), tmp_path / "split")
    assert sum(info["counts"].values()) == len((tmp_path / "p" / "kept.txt").read_text().split())
    stored = json.loads((tmp_path / "split" / "split.json").read_text())
    assert len(stored["orthophotos"]["eval"]) == 1
    assert all(n.startswith(stored["orthophotos"]["eval"][0]) for n in read_split(tmp_path / "split", "eval"))


@pytest.mark.parametrize("kwargs", [{"train": 0.5}, {"train": 0.0, "val": 0.9, "eval": 0.1}, {"mode": "spatial"}])
def test_bad_parameters(kwargs) -> None:
    with pytest.raises(TrainingError):
        SplitParams(**kwargs)

"""Split the kept patches into train / val / eval lists.

Default: grouped by source orthophoto, so neighbouring (correlated) patches never land in two
splits and whole held-out orthophotos remain for the end-to-end evaluation. ``random`` mode
reproduces the seed notebook's patch-level random split. Both are deterministic from the seed.
``official`` mode uses LandCover.ai's own lists (``train.txt``, ``val.txt``, ``test.txt`` of 512 px tiles
``NAME_k`` in the orthophoto's native pixels, numbered row by row over every grid position as the dataset's
``split.py`` does): each patch is mapped back to the native pixels it covers (through the patch step's
resampling) and takes the split of the tiles it lies in; a patch reaching into tiles of two splits, or into
a tile no list names (the partial edge tiles), is left out, so no pixel is in train and test at once.
Writes ``train.txt``, ``val.txt``, ``eval.txt`` and ``split.json`` (counts, orthophotos per split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import write_text_atomic
from training.errors import TrainingError
from training.filter import KEPT_NAME, read_lines, write_lines
from training.patch import read_index

SPLITS = ("train", "val", "eval")
SPLIT_JSON = "split.json"
SPLIT_MODES = ("grouped", "random", "official")
#: LandCover.ai's list files and the pipeline split each one feeds (its "test" is the pipeline's held-out "eval").
OFFICIAL_LISTS = {"train": "train.txt", "val": "val.txt", "eval": "test.txt"}
OFFICIAL_TILE = 512


@dataclass(frozen=True)
class SplitParams:
    """Fractions of patches per split, grouping mode and seed."""

    train: float = 0.7
    val: float = 0.2
    eval: float = 0.1
    mode: str = "grouped"
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = (self.train, self.val, self.eval)
        if any(f < 0 for f in fractions) or not abs(sum(fractions) - 1.0) < 1e-6:
            raise TrainingError(f"split fractions must be >= 0 and add up to 1, got {fractions}")
        if self.train <= 0:
            raise TrainingError("the train fraction must be > 0")
        if self.mode not in SPLIT_MODES:
            raise TrainingError(f"split mode must be one of {', '.join(SPLIT_MODES)}, got {self.mode!r}")

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "eval": self.eval}


def split_names(names: list[str], sources: list[str], params: SplitParams) -> dict[str, list[str]]:
    """Assign every patch name to a split; ``sources[i]`` is the orthophoto of ``names[i]``."""
    rng = np.random.default_rng(params.seed)
    if params.mode == "random":
        order = rng.permutation(len(names))
        n_val = int(round(params.val * len(names)))
        n_eval = int(round(params.eval * len(names)))
        parts = {
            "val": order[:n_val],
            "eval": order[n_val:n_val + n_eval],
            "train": order[n_val + n_eval:],
        }
        return {s: sorted(names[i] for i in parts[s]) for s in SPLITS}
    groups: dict[str, list[str]] = {}
    for name, source in zip(names, sources, strict=False):
        groups.setdefault(source, []).append(name)
    keys = sorted(groups)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    total = len(names)
    assigned: dict[str, list[str]] = {s: [] for s in SPLITS}
    wanted = [s for s in ("eval", "val", "train") if params.fractions[s] > 0]
    if len(keys) < len(wanted):
        raise TrainingError(
            f"only {len(keys)} orthophoto(s) for {len(wanted)} grouped splits; add orthophotos or use --random"
        )
    # One orthophoto for each non-empty split first, so small datasets still get every split...
    for split, key in zip(wanted, keys, strict=False):
        assigned[split].extend(groups[key])
    # ...then each next orthophoto goes to the split furthest below its target patch count.
    for key in keys[len(wanted):]:
        deficit = {s: params.fractions[s] * total - len(assigned[s]) for s in wanted}
        assigned[max(wanted, key=lambda s: (deficit[s], s == "train"))].extend(groups[key])
    return {s: sorted(v) for s, v in assigned.items()}


@dataclass(frozen=True)
class NativeGrid:
    """How an orthophoto's patches map to its native pixels: patch pixels per native pixel, and its tile grid."""

    scale_y: float
    scale_x: float
    height: int  # native pixels
    width: int

    @property
    def tile_cols(self) -> int:
        """Columns of the official grid, partial edge tiles counted (as ``split.py`` numbers ``k``)."""
        return -(-self.width // OFFICIAL_TILE)

    def tiles_of_patch(self, row: int, col: int, size: int, step: int) -> list[int]:
        """``k`` of every official tile the patch at ``(row, col)`` covers (in native pixels)."""
        y0, y1 = row * step / self.scale_y, (row * step + size) / self.scale_y
        x0, x1 = col * step / self.scale_x, (col * step + size) / self.scale_x
        eps = 1e-9  # a patch ending exactly on a tile border does not reach into the next tile
        rows = range(int(y0 // OFFICIAL_TILE), int(np.ceil(y1 / OFFICIAL_TILE - eps)))
        cols = range(int(x0 // OFFICIAL_TILE), int(np.ceil(x1 / OFFICIAL_TILE - eps)))
        return [r * self.tile_cols + c for r in rows for c in cols]

    def tile_is_full(self, k: int) -> bool:
        r, c = divmod(k, self.tile_cols)
        return (r + 1) * OFFICIAL_TILE <= self.height and (c + 1) * OFFICIAL_TILE <= self.width


def native_grids(data_dir: Path, gsd_m: float | None) -> dict[str, NativeGrid]:
    """Per orthophoto of ``data_dir``: the scale the patch step applied (``patch.gsd_m``) and the native size."""
    import rasterio

    from training.dataset import list_orthophotos

    grids = {}
    for ortho in list_orthophotos(data_dir):
        with rasterio.open(ortho.image) as src:
            px_x, px_y = abs(src.transform.a), abs(src.transform.e)
            # The same rule and rounding as the patch step's resampling (training.patch._at_gsd).
            if gsd_m is None or abs(px_x / gsd_m - 1) <= 0.01:
                sy = sx = 1.0
            else:
                sx = max(1, round(src.width * px_x / gsd_m)) / src.width
                sy = max(1, round(src.height * px_y / gsd_m)) / src.height
            grids[ortho.name] = NativeGrid(sy, sx, src.height, src.width)
    return grids


def read_official_lists(data_dir: Path) -> dict[str, str]:
    """Official tile name (``NAME_k``) -> pipeline split, from the dataset's three list files."""
    tiles: dict[str, str] = {}
    missing = [f for f in OFFICIAL_LISTS.values() if not (Path(data_dir) / f).is_file()]
    if missing:
        raise TrainingError(f"split.mode official needs LandCover.ai's {', '.join(OFFICIAL_LISTS.values())} in "
                            f"{data_dir} ({', '.join(missing)} missing); copy them from the dataset archive or use "
                            "split.mode grouped")
    for split, filename in OFFICIAL_LISTS.items():
        for line in (Path(data_dir) / filename).read_text().splitlines():
            name = line.strip()
            if name:
                if tiles.get(name, split) != split:
                    raise TrainingError(f"tile {name} is in two of the official lists; run "
                                        f"'python -m training check-data {data_dir}'")
                tiles[name] = split
    return tiles


def official_split(records: list[Any], tiles: dict[str, str], grids: dict[str, NativeGrid], size: int,
                   step: int) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Assign patches to the split of the official tiles they cover; returns the parts and what was left out."""
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    dropped = {"straddling": 0, "unlisted": 0}
    for rec in records:
        grid = grids.get(rec.source)
        if grid is None:
            raise TrainingError(f"patch {rec.patch} comes from {rec.source}, which is not in the data folder")
        splits = {tiles.get(f"{rec.source}_{k}") for k in grid.tiles_of_patch(rec.row, rec.col, size, step)}
        if None in splits:
            dropped["unlisted"] += 1  # reaches a partial edge tile or one the lists leave out
        elif len(splits) > 1:
            dropped["straddling"] += 1  # would put pixels of two splits in one patch
        else:
            parts[splits.pop()].append(rec.patch)
    return {s: sorted(v) for s, v in parts.items()}, dropped


def leaking_patches(parts: dict[str, list[str]], records: dict[str, Any], tiles: dict[str, str],
                    grids: dict[str, NativeGrid], size: int, step: int) -> list[str]:
    """Patches whose pixels lie in an official tile of another split than their own (must be none)."""
    leaks = []
    for split, names in parts.items():
        for name in names:
            rec = records[name]
            ks = grids[rec.source].tiles_of_patch(rec.row, rec.col, size, step)
            if any(tiles.get(f"{rec.source}_{k}") != split for k in ks):
                leaks.append(name)
    return leaks


def split_patches(patch_dir: Path, params: SplitParams, out_dir: Path, kept: Path | None = None,
                  data_dir: Path | None = None, patch: Any = None) -> dict[str, Any]:
    """Split the kept patches of ``patch_dir`` (``kept.txt`` by default); write the lists into ``out_dir``.

    ``official`` mode also needs ``data_dir`` (the dataset with its list files) and ``patch`` (the
    :class:`~training.patch.PatchParams` the patches were cut with).
    """
    patch_dir, out_dir = Path(patch_dir), Path(out_dir)
    index = {r.patch: r for r in read_index(patch_dir)}
    source_of = {name: r.source for name, r in index.items()}
    names = read_lines(Path(kept) if kept else patch_dir / KEPT_NAME)
    unknown = [n for n in names if n not in source_of]
    if unknown:
        raise TrainingError(f"{len(unknown)} kept patch(es) such as {unknown[0]} are not in {patch_dir}/index.csv")
    official: dict[str, Any] = {}
    if params.mode == "official":
        if data_dir is None or patch is None:
            raise TrainingError("split.mode official needs the dataset folder and the patch settings (run it from "
                                "'python -m training run')")
        tiles = read_official_lists(data_dir)
        grids = native_grids(data_dir, patch.gsd_m)
        parts, dropped = official_split([index[n] for n in names], tiles, grids, patch.size, patch.step)
        leaks = leaking_patches(parts, index, tiles, grids, patch.size, patch.step)
        if leaks:  # pragma: no cover - official_split assigns by the same rule; this guards the rule itself
            raise TrainingError(f"{len(leaks)} patch(es) such as {leaks[0]} cover tiles of another split")
        if not parts["train"]:
            raise TrainingError(f"no kept patch lies wholly in the official train tiles of {data_dir}; check the "
                                "list files against the orthophotos ('python -m training check-data')")
        official = {"tiles": {s: sum(1 for v in tiles.values() if v == s) for s in SPLITS},
                    "patches_left_out": dropped, "leaking_patches": 0,
                    "lists": {s: f for s, f in OFFICIAL_LISTS.items()}}
    else:
        parts = split_names(names, [source_of[n] for n in names], params)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_lines(out_dir / f"{split}.txt", parts[split])
    orthos = {s: sorted({source_of[n] for n in parts[s]}) for s in SPLITS}
    info = {
        "params": {**params.fractions, "mode": params.mode, "seed": params.seed},
        "counts": {s: len(parts[s]) for s in SPLITS},
        # Only in grouped mode is an orthophoto wholly unseen in training.
        "orthophotos": orthos if params.mode == "grouped" else {},
    }
    if official:
        info["official"] = official
    write_text_atomic(out_dir / SPLIT_JSON, json.dumps(info, indent=2) + "\n")
    return info


def read_split(split_dir: Path, split: str) -> list[str]:
    """The patch names of one split."""
    if split not in SPLITS:
        raise TrainingError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    names = read_lines(Path(split_dir) / f"{split}.txt")
    if not names:
        raise TrainingError(f"the {split} split in {split_dir} is empty; use more data or other split fractions")
    return names

"""Split the kept patches into train / val / eval lists.

Default: grouped by source orthophoto, so neighbouring (correlated) patches never land in two
splits and whole held-out orthophotos remain for the end-to-end evaluation. ``random`` mode
reproduces the seed notebook's patch-level random split. Both are deterministic from the seed.
Writes ``train.txt``, ``val.txt``, ``eval.txt`` and ``split.json`` (counts, orthophotos per split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import TrainingError
from training.filter import KEPT_NAME, read_lines, write_lines, write_text
from training.patch import read_index

SPLITS = ("train", "val", "eval")
SPLIT_JSON = "split.json"


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
        if self.mode not in ("grouped", "random"):
            raise TrainingError(f"split mode must be 'grouped' or 'random', got {self.mode!r}")

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


def split_patches(patch_dir: Path, params: SplitParams, out_dir: Path, kept: Path | None = None) -> dict[str, Any]:
    """Split the kept patches of ``patch_dir`` (``kept.txt`` by default); write the lists into ``out_dir``."""
    patch_dir, out_dir = Path(patch_dir), Path(out_dir)
    source_of = {r.patch: r.source for r in read_index(patch_dir)}
    names = read_lines(Path(kept) if kept else patch_dir / KEPT_NAME)
    unknown = [n for n in names if n not in source_of]
    if unknown:
        raise TrainingError(f"{len(unknown)} kept patch(es) such as {unknown[0]} are not in {patch_dir}/index.csv")
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
    write_text(out_dir / SPLIT_JSON, json.dumps(info, indent=2) + "\n")
    return info


def read_split(split_dir: Path, split: str) -> list[str]:
    """The patch names of one split."""
    if split not in SPLITS:
        raise TrainingError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    names = read_lines(Path(split_dir) / f"{split}.txt")
    if not names:
        raise TrainingError(f"the {split} split in {split_dir} is empty; use more data or other split fractions")
    return names

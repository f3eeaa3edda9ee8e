"""Keep the patches with enough non-background pixels (the seed kept those above 5 %).

Reads ``index.csv`` from the patch step; writes ``kept.txt`` (one patch name a line) and
``filter_report.json`` (patch and pixel counts per class before and after).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import write_text_atomic
from training import CLASS_NAMES
from training.errors import TrainingError
from training.patch import PatchRecord, read_index

KEPT_NAME = "kept.txt"
REPORT_NAME = "filter_report.json"


@dataclass(frozen=True)
class FilterParams:
    """Keep a patch when its non-background share is strictly above ``threshold``.

    ``keep_background`` is the fraction of the other (mostly background) patches kept anyway,
    chosen at random from ``seed``, so the model still sees plain fields.
    """

    threshold: float = 0.05
    keep_background: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise TrainingError(f"filter threshold must be in 0..1 (a share of pixels), got {self.threshold}")
        if not 0.0 <= self.keep_background <= 1.0:
            raise TrainingError(f"keep_background must be in 0..1, got {self.keep_background}")


def select(records: list[PatchRecord], params: FilterParams) -> list[PatchRecord]:
    """The records kept, in input order."""
    passes = np.array([r.foreground_share > params.threshold for r in records], bool)
    if params.keep_background > 0:
        rest = np.flatnonzero(~passes)
        rng = np.random.default_rng(params.seed)
        n = int(round(params.keep_background * rest.size))
        passes[rng.choice(rest, size=n, replace=False)] = True
    return [r for r, keep in zip(records, passes, strict=False) if keep]


def class_counts(records: list[PatchRecord]) -> dict[str, dict[str, int]]:
    """Per class: how many patches contain it and how many pixels it covers."""
    pixels = np.array([r.pixels for r in records], np.int64).reshape(-1, len(CLASS_NAMES))
    return {
        name: {"patches": int((pixels[:, i] > 0).sum()), "pixels": int(pixels[:, i].sum())}
        for i, name in enumerate(CLASS_NAMES)
    }


def filter_patches(patch_dir: Path, params: FilterParams, out_dir: Path | None = None) -> dict[str, Any]:
    """Select patches, write ``kept.txt`` and ``filter_report.json``; return the report."""
    patch_dir = Path(patch_dir)
    out_dir = Path(out_dir) if out_dir else patch_dir
    records = read_index(patch_dir)
    kept = select(records, params)
    if not kept:
        raise TrainingError(
            f"no patch has more than {params.threshold:.0%} non-background pixels; lower --threshold "
            "or check that the masks hold class ids 0..4"
        )
    report = {
        "params": {"threshold": params.threshold, "keep_background": params.keep_background, "seed": params.seed},
        "patches_before": len(records),
        "patches_after": len(kept),
        "before": class_counts(records),
        "after": class_counts(kept),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_lines(out_dir / KEPT_NAME, [r.patch for r in kept])
    write_text_atomic(out_dir / REPORT_NAME, json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    """A small table of the counts before and after."""
    lines = [f"patches: {report['patches_before']} -> {report['patches_after']}"]
    lines.append(f"{'class':<12}{'patches before':>16}{'after':>10}{'pixel share before':>20}{'after':>10}")
    total_b = sum(v["pixels"] for v in report["before"].values()) or 1
    total_a = sum(v["pixels"] for v in report["after"].values()) or 1
    for name in CLASS_NAMES:
        b, a = report["before"][name], report["after"][name]
        share_b, share_a = b["pixels"] / total_b, a["pixels"] / total_a
        lines.append(f"{name:<12}{b['patches']:>16}{a['patches']:>10}{share_b:>20.2%}{share_a:>10.2%}")
    return "\n".join(lines)


def write_lines(path: Path, lines: list[str]) -> None:
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a list file."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path} does not exist; run the step that writes it first")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

"""Held-out synthetic benchmark: a model on fresh synthetic scenes of each style (``python -m training heldout``).

A run's own evaluation uses the few orthophotos its grouped split held out (4 or 5 of 48), in whatever mix of
styles the run trained on. This benchmark instead paints new scenes with a seed no training run uses
(:data:`HELD_OUT_SEED`), the same number per style, so models trained on different styles are compared on the same
scenes, and the easy style (``v1``) cannot hide the hard one (``v2``). Scenes go through the backend's tiled
inference, as a user's orthophoto would.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.synthetic import STYLES

HELD_OUT_SEED = 7919  # never a training seed (a run whose scenes used it is refused)
BENCHMARK_STYLES = STYLES  # every style a scene can be painted in


@dataclass(frozen=True)
class HeldOutParams:
    """How many fresh scenes, how large, and of which styles."""

    scenes: int = 8  # per style
    size: int = 1024
    seed: int = HELD_OUT_SEED
    styles: tuple[str, ...] = BENCHMARK_STYLES

    def __post_init__(self) -> None:
        if not 1 <= self.scenes <= 64:
            raise TrainingError(f"held-out scenes must be 1..64 per style, got {self.scenes}")
        if self.size < 256:
            raise TrainingError(f"held-out scene size must be >= 256 pixels (one tile), got {self.size}")
        bad = [s for s in self.styles if s not in BENCHMARK_STYLES]
        if bad or not self.styles:
            raise TrainingError(f"held-out styles must be among {', '.join(BENCHMARK_STYLES)} (a scene has one "
                                f"style), got {', '.join(self.styles) or 'none'}")


def refuse_training_seed(bundle: Any, seed: int) -> None:
    """Raise when ``seed`` painted the scenes ``bundle`` was trained on: they would not be held out."""
    synthetic = (((bundle.provenance or {}).get("config") or {}).get("data") or {}).get("synthetic") or {}
    if synthetic.get("seed") == seed:
        raise TrainingError(f"model {bundle.name!r} was trained on scenes of seed {seed}: they are not held out; "
                            "use another seed")


def held_out_benchmark(bundle_json: Path, params: HeldOutParams = HeldOutParams(), precision: str = "auto",
                       say: Callable[[str], None] = lambda _m: None) -> dict[str, dict[str, Any]]:
    """Score ``bundle_json`` on ``params.scenes`` new scenes per style.

    Returns:
        Per style: the :func:`training.metrics.scores` of all its scenes together, plus ``per_orthophoto``.
    """
    from backend.bundle import load_bundle
    from training.config import EvaluateParams
    from training.evaluate import evaluate_orthophotos
    from training.metrics import scores
    from training.synthetic import SyntheticParams, generate_dataset

    bundle = load_bundle(bundle_json)
    refuse_training_seed(bundle, params.seed)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="landcover-heldout-") as tmp:
        for style in params.styles:
            data = Path(tmp) / style
            names = generate_dataset(data, SyntheticParams(orthophotos=params.scenes, size=params.size,
                                                           seed=params.seed, prefix="heldout", style=style))
            say(f"{style}: {len(names)} scenes of {params.size} px")
            cm, per = evaluate_orthophotos(Path(bundle_json), data, names, data / "out", EvaluateParams(),
                                           precision=precision)
            results[style] = {**scores(cm), "per_orthophoto": per, "scenes": len(names), "size": params.size,
                              "seed": params.seed}
            say(f"{style}: mIoU {results[style]['miou']:.4f}")
    return results


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """One row per style: mIoU, accuracy and each class's IoU."""
    if not results:
        return ""
    classes = list(next(iter(results.values()))["per_class"])
    lines = ["| style | scenes | mIoU | accuracy | " + " | ".join(f"IoU {c}" for c in classes) + " |",
             "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in classes) + " |"]
    for style, r in results.items():
        ious = [r["per_class"][c]["iou"] for c in classes]
        cells = " | ".join("—" if v is None else f"{v:.3f}" for v in ious)
        lines.append(f"| {style} | {r['scenes']} × {r['size']} px | {r['miou']:.3f} | {r['accuracy']:.3f} | {cells} |")
    return "\n".join(lines) + "\n"

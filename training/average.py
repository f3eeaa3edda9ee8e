"""Average the weights of bundles of one network: interpolate a fine-tuning with its start, or a "model soup".

Fine-tunings that start from one model stay close to it in weight space, so a weighted mean of their weights is
itself a working model (Wortsman et al., "Robust fine-tuning of zero-shot models", 2022, and "Model soups",
2022). ``python -m training average OUT.json A.json=0.5 B.json=0.5`` writes such a bundle: its metadata is the
first model's, its provenance names every ingredient and its weight, and it gets a float ONNX export when the
first model has one. Nothing here imports TensorFlow except that export.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import TrainingError

#: Bundle fields that must be equal for weights to mean the same thing.
SAME_NETWORK = ("architecture", "backbone", "input_bands", "classes", "preprocessing")


@dataclass(frozen=True)
class Ingredient:
    """One bundle and its share of the average (any positive number; the shares are normalised)."""

    bundle: Path
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise TrainingError(f"the weight of {self.bundle} must be > 0, got {self.weight}")

    @classmethod
    def parse(cls, text: str) -> Ingredient:
        """``PATH`` or ``PATH=WEIGHT``."""
        path, sep, weight = text.rpartition("=")
        if not sep:
            return cls(Path(text))
        try:
            return cls(Path(path), float(weight))
        except ValueError:
            raise TrainingError(f"{text!r}: the weight after '=' must be a number, e.g. {path}=0.5") from None


def average_bundles(ingredients: Sequence[Ingredient], out_json: Path, name: str | None = None,
                    onnx: bool = True) -> Path:
    """Write ``out_json`` and its float16 weights: the weighted mean of the ingredients' weights.

    Raises:
        TrainingError: fewer than two ingredients, or ingredients that are not the same network.
    """
    from backend.bundle import load_bundle, with_weights
    from training.export import weights_path_for

    if len(ingredients) < 2:
        raise TrainingError("averaging needs at least two bundles")
    bundles = [load_bundle(i.bundle) for i in ingredients]
    first = bundles[0]
    for ingredient, bundle in zip(ingredients[1:], bundles[1:], strict=True):
        for key in SAME_NETWORK:
            if getattr(bundle, key) != getattr(first, key):
                raise TrainingError(f"{ingredient.bundle} and {ingredients[0].bundle} differ in {key}; only bundles "
                                    "of one network (fine-tunings from one start) can be averaged")
    out_json = Path(out_json)
    out_weights = weights_path_for(out_json)
    for ingredient, bundle in zip(ingredients, bundles, strict=True):
        if bundle.weights is None or not bundle.weights.is_file():
            raise TrainingError(f"{ingredient.bundle} has no weights file (an ONNX-only or untrained model); "
                                "averaging needs each bundle's .weights.h5")
        if bundle.weights.resolve() == out_weights.resolve():
            raise TrainingError(f"{out_json} would overwrite the weights of {ingredient.bundle}; write the average "
                                "to a new file")
    shares = np.array([i.weight for i in ingredients], np.float64)
    shares /= shares.sum()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    weights = _write_mean(ingredients, [b.weights for b in bundles], shares, out_weights)
    provenance = {
        "data": first.provenance.get("data", ""),
        "trained": _dt.date.today().isoformat(),
        "averaged": [{"bundle": str(i.bundle), "name": b.name, "share": round(float(s), 6)}
                     for i, b, s in zip(ingredients, bundles, shares, strict=True)],
    }
    bundle = with_weights(first, weights, name=name or f"{first.name}-average", provenance=provenance)
    bundle.save(out_json)
    if onnx and first.onnx is not None:
        from backend.onnx_export import export_onnx

        export_onnx(load_bundle(out_json), deepness=first.onnx.deepness)
    return out_json


def _write_mean(ingredients: Sequence[Ingredient], files: Sequence[Path], shares: np.ndarray, out: Path) -> Path:
    """The weighted mean of every array, in the layout :func:`backend.models.save_weights` writes (atomically)."""
    import h5py

    from backend.models import WEIGHTS_LAYOUT, write_weights_file

    handles = [h5py.File(f, "r") for f in files]
    try:
        for ingredient, h in zip(ingredients, handles, strict=True):
            if h.attrs.get("layout") != WEIGHTS_LAYOUT:
                raise TrainingError(f"{ingredient.bundle}: its weights file is not in the bundle layout; export it "
                                    "with 'python -m training export' first")
        groups = [h["weights"] for h in handles]
        keys = sorted(groups[0].keys())
        for ingredient, g in zip(ingredients[1:], groups[1:], strict=True):
            if sorted(g.keys()) != keys:
                raise TrainingError(f"{ingredient.bundle} holds {len(g)} arrays, {ingredients[0].bundle} "
                                    f"{len(keys)}; they are not the same network")

        def means():  # one array at a time: the bundles are never all in memory
            for key in keys:
                arrays = [g[key] for g in groups]
                if len({a.attrs.get("name") for a in arrays}) != 1 or len({a.shape for a in arrays}) != 1:
                    raise TrainingError(f"array {key} differs between the bundles; they are not the same network")
                mean = sum(s * a[()].astype(np.float64) for s, a in zip(shares, arrays, strict=True))
                yield arrays[0].attrs["name"], mean.astype(arrays[0].dtype)

        write_weights_file(out, means())
    finally:
        for h in handles:
            h.close()
    return out

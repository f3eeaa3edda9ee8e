"""Export a trained model as a backend model bundle (JSON metadata + float16 weights, optionally ONNX).

The JSON's ``provenance`` carries what the model was trained on, when, the training config and the
evaluation metrics (``{"data", "trained", "config", "training", "metrics": {"miou", "per_class_iou",
"accuracy", ...}}``), so ``python -m backend models`` and the plugin can show them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import TrainingError
from training.train import BEST_WEIGHTS, read_train_json

SYNTHETIC_DATA = "synthetic LandCover.ai-like scenes (python -m training synthetic); not for real maps"


@dataclass(frozen=True)
class ExportParams:
    """Bundle metadata not determined by training."""

    name: str = "landcover-unet-resnet18-synthetic"
    tile_size: int = 256
    gsd_m: float | None = None  # None: the pixel size trained at (patch.gsd_m, else the data's; see trained_gsd)
    data: str = SYNTHETIC_DATA
    default_overlap: int | None = None
    default_batch_size: int = 8
    onnx: bool = False  # also write the backend's ONNX export beside the weights (python -m backend export-onnx)
    deepness: bool = False  # ONNX in the Deepness plugin's layout (NCHW + metadata)
    int8: bool = False  # also a static INT8 export (backend/quantize.py), calibrated on train-split patches
    int8_tiles: int = 256  # calibration tiles (train patches) for it
    int8_min_agreement: float = 0.995  # refuse the INT8 export below this class agreement with the float one

    def __post_init__(self) -> None:
        if not self.name:
            raise TrainingError("export needs a bundle name")
        if self.tile_size < 32 or self.tile_size % 32:
            raise TrainingError(f"export tile_size must be a multiple of 32, got {self.tile_size}")
        if self.gsd_m is not None and not self.gsd_m > 0:
            raise TrainingError(f"export gsd_m must be > 0 (or null: the pixel size trained at), got {self.gsd_m}")
        if self.int8 and not self.onnx:
            raise TrainingError("export int8: true needs onnx: true (the INT8 export is quantized from the float one)")
        if not 1 <= self.int8_tiles <= 4096:
            raise TrainingError(f"export int8_tiles must be 1..4096, got {self.int8_tiles}")
        if not 0 < self.int8_min_agreement <= 1:
            raise TrainingError(f"export int8_min_agreement must be in (0, 1], got {self.int8_min_agreement}")


def bundle_stem(json_path: Path) -> str:
    """``landcover.json`` -> ``landcover``: the name the bundle's files (``STEM.weights.h5``, ``STEM.onnx``) share."""
    return Path(json_path).name.removesuffix(".json")


def weights_path_for(json_path: Path) -> Path:
    """``landcover.json`` -> ``landcover.weights.h5`` beside it."""
    return Path(json_path).with_name(f"{bundle_stem(json_path)}.weights.h5")


def metrics_for_provenance(report: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics of an evaluation report: whole orthophotos when evaluated, else patches."""
    primary = report.get("orthophotos") or report.get("patches")
    if not primary:
        return {}
    out = {
        "evaluated_on": primary.get("evaluated_on", ""),
        "miou": primary["miou"],
        "accuracy": primary["accuracy"],
        "macro_f1": primary["macro_f1"],
        "per_class_iou": {k: v["iou"] for k, v in primary["per_class"].items()},
        "per_class": primary["per_class"],
    }
    if report.get("orthophotos") and report.get("patches"):
        p = report["patches"]
        out["patches"] = {"miou": p["miou"], "accuracy": p["accuracy"], "macro_f1": p["macro_f1"]}
    return out


DEFAULT_GSD_M = 0.25  # LandCover.ai's and the synthetic scenes' pixel size, when nothing else says


def trained_gsd(patch_gsd_m: float | None, data_dir: Path | None) -> float:
    """The pixel size a model was trained at: ``patch.gsd_m`` when patches were resampled to it, else the
    median native pixel size of the training orthophotos (then they must agree within 1 %, or the run is told to
    resample: a model trained on mixed scales has no single pixel size to declare)."""
    if patch_gsd_m is not None:
        return patch_gsd_m
    if data_dir is None:
        return DEFAULT_GSD_M
    import rasterio

    from training.dataset import list_orthophotos

    sizes = []
    for ortho in list_orthophotos(data_dir):
        with rasterio.open(ortho.image) as src:
            sizes.append(abs(src.transform.a))
    gsd = float(np.median(sizes))
    odd = [s for s in sizes if abs(s / gsd - 1) > 0.01]
    if odd:
        raise TrainingError(f"the orthophotos in {data_dir} have different pixel sizes ({min(sizes):g} to "
                            f"{max(sizes):g} m) and patch.gsd_m is null; set patch.gsd_m (e.g. 0.25) so patches are "
                            "resampled to one size the bundle can declare, or set export.params.gsd_m yourself")
    return round(gsd, 6)


def _export_int8(json_path: Path, params: ExportParams, calibration: Sequence[Path],
                 say: Callable[[str], None]) -> None:
    """Add the INT8 export; one that loses too many classes is left out with a note (the float bundle is complete)."""
    from backend.bundle import load_bundle
    from backend.errors import ModelError
    from backend.quantize import QuantSettings, quantize_export, raster_calibration_tiles

    if not calibration:
        raise TrainingError("export int8: true needs calibration images (the train split's patches); run the "
                            "export step from 'python -m training run'")
    bundle = load_bundle(json_path)
    tiles = raster_calibration_tiles(bundle, list(calibration), min(params.int8_tiles, len(calibration)))
    try:
        report = quantize_export(bundle, tiles, QuantSettings(min_agreement=params.int8_min_agreement))
    except ModelError as exc:
        say(f"INT8 export not written: {exc}")
        return
    say(f"INT8 export {report.path.name}: {100 * report.agreement:.3f} % of calibration pixels keep the float class")


def export_bundle(
    model_dir: Path,
    json_path: Path,
    params: ExportParams,
    report: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    weights: Path | None = None,
    calibration: Sequence[Path] = (),
    say: Callable[[str], None] = print,
) -> Path:
    """Write ``json_path`` and its ``.weights.h5`` (float16) from ``model_dir``'s best checkpoint.

    With ``params.onnx`` the float ONNX export follows, and with ``params.int8`` its INT8 export,
    calibrated on the ``calibration`` images (the train split's patches, from the pipeline).
    """
    from backend.bundle import ModelBundle, Preprocessing
    from backend.errors import LandcoverError
    from backend.models import build_model, load_weights, save_weights

    model_dir, json_path = Path(model_dir), Path(json_path)
    info = read_train_json(model_dir)
    source = Path(weights) if weights else model_dir / BEST_WEIGHTS
    if not source.is_file():
        raise TrainingError(f"{source} does not exist; the training run saved no checkpoint yet")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    weights_out = weights_path_for(json_path)
    try:
        model = build_model(info["architecture"], info["backbone"], info["num_classes"], info["input_bands"])
        load_weights(model, source)
        save_weights(model, weights_out, dtype="float16")
        pre = info["preprocessing"]
        provenance: dict[str, Any] = {
            "data": params.data,
            "trained": _dt.date.today().isoformat(),
            "config": config if config is not None else info.get("params", {}),
            "training": {
                "epochs": info.get("epochs_done"),
                "seconds": info.get("seconds"),
                "best_val_miou": (info.get("best") or {}).get("val_miou"),
                "train_patches": info["data"]["train"],
                "val_patches": info["data"]["val"],
            },
        }
        if report:
            provenance["metrics"] = metrics_for_provenance(report)
        bundle = ModelBundle(
            name=params.name,
            architecture=info["architecture"],
            backbone=info["backbone"],
            tile_size=params.tile_size,
            input_bands=info["input_bands"],
            preprocessing=Preprocessing(pre["scale"], tuple(pre["mean"]), tuple(pre["std"])),
            gsd_m=params.gsd_m if params.gsd_m is not None else DEFAULT_GSD_M,
            weights=weights_out,
            provenance=provenance,
            default_overlap=params.default_overlap,
            default_batch_size=params.default_batch_size,
        )
        bundle.save(json_path)
        if params.onnx:
            from backend.bundle import load_bundle
            from backend.onnx_export import export_onnx

            export_onnx(load_bundle(json_path), deepness=params.deepness)
            if params.int8:
                _export_int8(json_path, params, calibration, say)
        return json_path
    except LandcoverError as exc:
        raise type(exc)(f"export failed: {exc}") from exc

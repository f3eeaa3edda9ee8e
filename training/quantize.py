"""Static INT8 quantization of a bundle's ONNX export, and how closely it keeps the float model's classes.

``quantize_bundle`` turns the bundle's float ONNX export (``python -m backend export-onnx``) into a QDQ
model with ONNX Runtime's ``quantize_static``: int8 weights (symmetric, per output channel) and int8
activations (per tensor, ranges calibrated with MinMax). The classifier head (the last Conv and the
Softmax) stays float: quantizing the logits is what flips close argmax decisions, and the head is
one small convolution. The result is written beside the bundle JSON (atomically), checked against the
float model on whole orthophotos, and only then named in the JSON's ``onnx_int8`` entry (the float
``onnx`` entry stays; ``segment --precision`` chooses), with the details under
``provenance["onnx_quantization"]``. The quantizer itself is :mod:`backend.quantize`, which
``python -m backend export-onnx --int8`` uses with tiles from any raster; this step adds calibration on
the model's own training patches and the check on whole held-out orthophotos.

Calibration tiles are training patches: the synthetic scenes, patch grid, filter and grouped split
recorded in the bundle's ``provenance["config"]`` are regenerated in memory (every step is
deterministic), and tiles are drawn from the train split only. The orthophotos the quantized model is
checked on are new synthetic scenes from another seed, plus any files given (e.g. ``demo/orthophoto.tif``),
so neither overlaps the calibration data.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import atomic_path
from backend.quantize import (  # noqa: F401 - re-exported: the quantizer itself lives in the backend
    ACTIVATION_TYPES,
    METADATA_KEY,
    QUANTIZED_SUFFIX,
    QuantSettings,
    default_output,
    float_head,
    import_quantization,
    int8_provenance,
    is_quantized,
    quantize_onnx,
    record_int8,
    with_onnx_file,
)
from training.errors import TrainingError
from training.heldout import HELD_OUT_SEED, refuse_training_seed

MAX_DEFAULT_CALIBRATION_TILES = 512  # bounds time and memory (1 MB per tile) on large real datasets


@dataclass(frozen=True)
class QuantizeParams:
    """How to quantize and how to check the result.

    Attributes:
        calibration_tiles: training patches whose activations set the int8 ranges; None: every patch of
            the train split, at most ``MAX_DEFAULT_CALIBRATION_TILES`` (MinMax ranges from more patches
            kept more of the float model's classes: see training/reports/default_model_int8.md).
        activations: ``uint8`` (native on VNNI/dot-product CPUs, where ``--precision auto`` runs INT8) or
            ``int8`` (see the report).
        symmetric_activations: symmetric ranges (zero point 0); asymmetric keeps more resolution for
            the mostly non-negative ReLU outputs of this network.
        held_out_scenes: new synthetic scenes (never trained or calibrated on) the result is checked on.
        held_out_size: side of those scenes in pixels.
        held_out_seed: their seed; must differ from the training scenes' seed.
        min_agreement: the result is refused when, on any checked orthophoto, a smaller fraction of the
            pixels the float model is decided on keeps its class.
        decided: the float model is decided on a pixel when its top class probability is at least this; below,
            its class is near a tie, and which side a tie falls says nothing of the INT8 model's quality
            (0: count every pixel).
        max_accuracy_loss: on orthophotos with a truth mask, the INT8 model's accuracy may be at most this much
            lower than the float model's.
        seed: which training patches are drawn for calibration.
    """

    calibration_tiles: int | None = None
    activations: str = "uint8"
    symmetric_activations: bool = False
    held_out_scenes: int = 4
    held_out_size: int = 2048
    held_out_seed: int = HELD_OUT_SEED
    min_agreement: float = 0.995
    decided: float = 0.6
    max_accuracy_loss: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decided < 1.0:
            raise TrainingError(f"--decided must be in [0, 1), got {self.decided}")
        if not 0.0 <= self.max_accuracy_loss <= 1.0:
            raise TrainingError(f"the accuracy loss allowed must be in [0, 1], got {self.max_accuracy_loss}")
        if self.calibration_tiles is not None and not 1 <= self.calibration_tiles <= 4096:
            raise TrainingError(f"--calibration-tiles must be 1..4096, got {self.calibration_tiles}")
        if self.activations not in ACTIVATION_TYPES:
            raise TrainingError(f"--activations must be one of {', '.join(ACTIVATION_TYPES)}, got {self.activations!r}")
        if not 1 <= self.held_out_scenes <= 64:
            raise TrainingError(f"--held-out must be 1..64 scenes, got {self.held_out_scenes}")
        if self.held_out_size < 64:
            raise TrainingError(f"held-out scene size must be >= 64 pixels, got {self.held_out_size}")
        if not 0.0 < self.min_agreement <= 1.0:
            raise TrainingError(f"--min-agreement must be in (0, 1], got {self.min_agreement}")


@dataclass(frozen=True)
class EvalImage:
    """An orthophoto to compare the two models on, with its class mask when there is one."""

    image: Path
    truth: Path | None = None
    name: str | None = None  # how reports call it (default: the file's stem)


@dataclass(frozen=True)
class Comparison:
    """Float vs quantized model on one orthophoto, both run through ``backend.inference.segment``."""

    name: str
    pixels: int
    agreement: float  # fraction of pixels whose class equals the float model's
    decided_agreement: float = 1.0  # the same, over the pixels the float model is decided on
    decided_share: float = 1.0  # fraction of pixels the float model is decided on
    fp32_scores: dict[str, Any] | None = None  # training.metrics.scores against the truth mask
    int8_scores: dict[str, Any] | None = None


@dataclass(frozen=True)
class CalibrationTiles:
    """Normalised model input for calibration, and where it came from."""

    tiles: np.ndarray  # (n, tile, tile, bands) float32, the bundle's preprocessing applied
    source: str
    train_patches: int


@dataclass
class QuantizeReport:
    """What :func:`quantize_bundle` wrote and measured."""

    path: Path
    fp32_path: Path
    fp32_bytes: int
    int8_bytes: int
    calibration: CalibrationTiles
    comparisons: list[Comparison]
    provenance: dict[str, Any]
    latency_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"wrote {self.path} ({self.int8_bytes / 1e6:.1f} MB; float model {self.fp32_bytes / 1e6:.1f} MB)",
            f"calibrated on {len(self.calibration.tiles)} tiles: {self.calibration.source}",
        ]
        for c in self.comparisons:
            line = (f"{c.name}: {100 * c.agreement:.3f} % of {c.pixels:,} pixels keep the float model's class, "
                    f"{100 * c.decided_agreement:.3f} % of the {100 * c.decided_share:.1f} % it is decided on")
            if c.fp32_scores and c.int8_scores:
                line += f"; mIoU vs truth fp32 {c.fp32_scores['miou']:.4f}, int8 {c.int8_scores['miou']:.4f}"
            lines.append(line)
        if self.latency_ms:
            lines.append("per tile: " + ", ".join(f"{k} {v:.1f} ms" for k, v in self.latency_ms.items()))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- calibration


def training_config(bundle: Any) -> Any:
    """The :class:`~training.config.PipelineConfig` the bundle was trained with, which must use synthetic scenes."""
    from training.config import build_config

    config_dict = (bundle.provenance or {}).get("config")
    if not config_dict or not (config_dict.get("data") or {}).get("synthetic"):
        raise TrainingError(
            f"model {bundle.name!r} records no synthetic training data in provenance.config, so its training "
            "patches cannot be rebuilt for calibration; quantize a bundle written by 'python -m training run'"
        )
    return build_config(config_dict)


def training_calibration_tiles(bundle: Any, count: int | None, seed: int = 0) -> CalibrationTiles:
    """``count`` tiles drawn from the train split of the synthetic scenes the bundle was trained on.

    ``None`` takes every train patch, or ``MAX_DEFAULT_CALIBRATION_TILES`` of them when there are more.

    Rebuilds the training data from ``bundle.provenance["config"]`` (scenes, patch grid, filter, grouped
    split) in memory. Scenes are generated twice (once for the split, once for the drawn patches) so
    memory stays at one scene, not the whole dataset.
    """
    from training.filter import select
    from training.patch import PatchRecord, grid_shape, patch_name
    from training.split import split_names
    from training.synthetic import generate_scene, scene_rng, scene_style

    config = training_config(bundle)
    synth, patch = config.data.synthetic, config.patch
    rows, cols = grid_shape(synth.size, synth.size, patch)
    if synth.size < bundle.tile_size:
        raise TrainingError(f"training scenes ({synth.size} px) are smaller than the model's tile ({bundle.tile_size})")

    def scene(i: int) -> tuple[np.ndarray, np.ndarray]:
        return generate_scene(scene_rng(synth.seed, i), synth.size, synth.shares, synth.jitter,
                              scene_style(synth.style, i))

    names = [f"{synth.prefix}_{synth.seed}_{i:03d}" for i in range(synth.orthophotos)]  # sorted like the files
    records = []
    for i, name in enumerate(names):
        mask = scene(i)[1]
        for r in range(rows):
            for c in range(cols):
                window = mask[r * patch.step:r * patch.step + patch.size, c * patch.step:c * patch.step + patch.size]
                counts = tuple(np.bincount(window.ravel(), minlength=len(bundle.classes)).tolist())
                records.append(PatchRecord(patch_name(name, r, c), name, r, c, counts))
    kept = select(records, config.filter)
    train = split_names([r.patch for r in kept], [r.source for r in kept], config.split)["train"]
    if count is None:
        count = min(len(train), MAX_DEFAULT_CALIBRATION_TILES)
    elif count > len(train):
        raise TrainingError(f"--calibration-tiles {count} exceeds the {len(train)} training patches; use fewer")
    by_name = {r.patch: r for r in kept}
    chosen = sorted(np.random.default_rng(seed).choice(len(train), size=count, replace=False))
    wanted: dict[str, list[Any]] = {}
    for k in chosen:
        rec = by_name[train[k]]
        wanted.setdefault(rec.source, []).append(rec)
    t, half = bundle.tile_size, bundle.tile_size // 2
    tiles = []
    for source, recs in sorted(wanted.items()):
        image = scene(names.index(source))[0]
        for rec in recs:
            # A tile-sized window centred on the patch (the same pixels when patch and tile sizes agree).
            cy = rec.row * patch.step + patch.size // 2
            cx = rec.col * patch.step + patch.size // 2
            y0, x0 = (int(np.clip(v - half, 0, synth.size - t)) for v in (cy, cx))
            tiles.append(image[y0:y0 + t, x0:x0 + t, :bundle.input_bands])
    expected = (bundle.provenance.get("training") or {}).get("train_patches")
    note = "" if expected in (None, len(train)) else f"; NOTE: the bundle recorded {expected} train patches"
    return CalibrationTiles(
        tiles=bundle.preprocessing.apply(np.stack(tiles)),
        source=(f"{count} of the {len(train)} train-split patches of the model's {synth.orthophotos} synthetic "
                f"training scenes ({synth.size} px, seed {synth.seed}; rebuilt from provenance.config){note}"),
        train_patches=len(train),
    )


# ------------------------------------------------------------------------------------------- measuring


def compare_models(bundle: Any, fp32_path: Path, int8_path: Path, images: Sequence[EvalImage],
                   workdir: Path, say: Callable[[str], None] = print,
                   decided: float = QuantizeParams.decided) -> list[Comparison]:
    """Segment every image with both ONNX models through the tiled engine; compare classes and truth.

    Agreement counts the pixels the float model classified (nodata excluded) whose class the quantized
    model reproduces; decided agreement only those where the float model's top probability is at least
    ``decided``. With a truth mask, both are also scored against it (per-class IoU, mIoU).
    """
    import rasterio

    from backend.inference import segment
    from backend.onnx_runtime import OnnxRuntime
    from backend.outputs import NODATA
    from training.metrics import confusion_matrix, scores

    fp32_bundle, int8_bundle = with_onnx_file(bundle, fp32_path), with_onnx_file(bundle, int8_path)
    runtimes = {"fp32": (fp32_bundle, OnnxRuntime(fp32_bundle)), "int8": (int8_bundle, OnnxRuntime(int8_bundle))}
    names = [c.name for c in bundle.classes]
    out = []
    for k, item in enumerate(images):
        preds = {}
        confidence_path = Path(workdir) / f"{k}_fp32_confidence.tif"
        for key, (b, runtime) in runtimes.items():
            path = Path(workdir) / f"{k}_{key}.tif"
            segment(item.image, path, b, runtime=runtime, confidence_path=confidence_path if key == "fp32" else None)
            with rasterio.open(path) as src:
                preds[key] = src.read(1)
        with rasterio.open(confidence_path) as src:
            confidence = src.read(1)
        valid = preds["fp32"] != NODATA
        sure = valid & (confidence >= decided)
        same = preds["int8"] == preds["fp32"]
        comparison = Comparison(
            name=item.name or Path(item.image).stem,
            pixels=int(valid.sum()),
            agreement=float(same[valid].mean()) if valid.any() else 1.0,
            decided_agreement=float(same[sure].mean()) if sure.any() else 1.0,
            decided_share=float(sure.sum() / max(valid.sum(), 1)),
        )
        if item.truth is not None:
            with rasterio.open(item.truth) as src:
                truth = src.read(1)
            if truth.shape != valid.shape:
                raise TrainingError(f"truth mask {item.truth} is {truth.shape}, the orthophoto {valid.shape}")
            comparison = replace(comparison, **{
                f"{key}_scores": scores(confusion_matrix(truth, preds[key], len(names)), names) for key in preds
            })
        say(f"  {comparison.name}: {100 * comparison.agreement:.3f} % equal classes, "
            f"{100 * comparison.decided_agreement:.3f} % where the float model is decided "
            f"({100 * comparison.decided_share:.1f} % of the pixels)")
        out.append(comparison)
    return out


def check_comparisons(comparisons: Sequence[Comparison], params: QuantizeParams) -> None:
    """Refuse the INT8 model if it changes what the float model is sure of, or scores worse against a truth mask.

    Raises:
        TrainingError: naming the orthophoto and the figure.
    """
    worst = min(comparisons, key=lambda c: c.decided_agreement)
    if worst.decided_agreement < params.min_agreement:
        raise TrainingError(
            f"the INT8 model keeps the float model's class on only {100 * worst.decided_agreement:.3f} % of the "
            f"pixels of {worst.name} where the float model is decided (top probability >= {params.decided:g}; "
            f"minimum {100 * params.min_agreement:.2f} %); the bundle was left unchanged; try more "
            "--calibration-tiles or --activations uint8"
        )
    for c in comparisons:
        if c.fp32_scores and c.int8_scores and \
                c.int8_scores["accuracy"] < c.fp32_scores["accuracy"] - params.max_accuracy_loss:
            raise TrainingError(
                f"the INT8 model's accuracy on {c.name} is {c.int8_scores['accuracy']:.4f}, the float model's "
                f"{c.fp32_scores['accuracy']:.4f} (at most {params.max_accuracy_loss:g} lower allowed); the bundle "
                "was left unchanged"
            )


def tile_latency_ms(bundle: Any, models: dict[str, Path], batch: int = 8, runs: int = 7,
                    seed: int = 0) -> dict[str, float]:
    """Median milliseconds per tile of each ONNX model, one batch of ``batch`` tiles per call.

    Models are timed alternately, run after run, so a load change on the machine hits them equally.
    """
    from backend.onnx_runtime import OnnxRuntime

    if batch < 1 or runs < 1:
        raise TrainingError(f"latency batch and runs must be >= 1, got {batch} and {runs}")
    runtimes = {key: OnnxRuntime(with_onnx_file(bundle, path)) for key, path in models.items()}
    rng = np.random.default_rng(seed)
    t = bundle.tile_size
    x = bundle.preprocessing.apply(rng.integers(0, 256, (batch, t, t, bundle.input_bands)))
    times: dict[str, list[float]] = {key: [] for key in runtimes}
    for runtime in runtimes.values():
        runtime.predict(x)  # warm-up: first calls allocate buffers and pick kernels
    for _ in range(runs):
        for key, runtime in runtimes.items():
            start = time.perf_counter()
            runtime.predict(x)
            times[key].append(time.perf_counter() - start)
    return {key: 1000 * float(np.median(v)) / batch for key, v in times.items()}


# ------------------------------------------------------------------------------------------- the step


def held_out_scenes(bundle: Any, params: QuantizeParams, out_dir: Path) -> list[EvalImage]:
    """Write new synthetic scenes (seed ``params.held_out_seed``) with their masks into ``out_dir``."""
    from training.synthetic import SyntheticParams, generate_dataset

    train = training_config(bundle).data.synthetic
    refuse_training_seed(bundle, params.held_out_seed)
    synth = SyntheticParams(orthophotos=params.held_out_scenes, size=params.held_out_size, seed=params.held_out_seed,
                            shares=train.shares, jitter=train.jitter, prefix="heldout", style=train.style)
    names = generate_dataset(out_dir, synth)
    return [EvalImage(out_dir / "images" / f"{n}.tif", out_dir / "masks" / f"{n}.tif") for n in names]


def quantize_bundle(bundle_json: Path, params: QuantizeParams, out: Path | None = None,
                    evaluate: Sequence[EvalImage] = (), say: Callable[[str], None] = print) -> QuantizeReport:
    """Quantize the bundle's float ONNX export, check it, and make the bundle JSON point at it.

    Args:
        bundle_json: a bundle whose ``onnx`` entry is a float export (``python -m backend export-onnx``).
        params: quantization and check settings.
        out: the INT8 file (default ``<stem>.int8.onnx``); must sit beside the JSON, which names it relative
            to itself.
        evaluate: further orthophotos (and truth masks) to compare on, e.g. the demo.
        say: progress lines.

    Returns:
        The report (the bundle JSON is already rewritten).

    Raises:
        LandcoverError: a missing or already quantized export, bad options, or too low an agreement.
    """
    from backend.bundle import load_bundle
    from backend.onnx_runtime import verified_onnx_path

    bundle_json = Path(bundle_json)
    bundle = load_bundle(bundle_json)
    if bundle.onnx is None:
        raise TrainingError(f"model {bundle.name!r} has no ONNX export; run "
                            f"'python -m backend export-onnx {bundle_json} --deepness' first")
    fp32_path = verified_onnx_path(bundle)
    onnx, _ = import_quantization()
    if is_quantized(onnx.load(str(fp32_path), load_external_data=False)):
        raise TrainingError(
            f"{fp32_path.name} named by {bundle_json} is already quantized; re-export the float model with "
            f"'python -m backend export-onnx {bundle_json} --deepness' and quantize that"
        )
    training_config(bundle)  # fails early when the training scenes cannot be rebuilt
    refuse_training_seed(bundle, params.held_out_seed)
    out = Path(out) if out is not None else default_output(bundle_json)
    if out.suffix != ".onnx":
        raise TrainingError(f"--out {out} must end with .onnx")
    if out.resolve().parent != bundle_json.resolve().parent:
        raise TrainingError(f"--out {out} must be in the bundle's folder {bundle_json.parent} (the JSON names it "
                            "relative to itself)")
    if out.resolve() == fp32_path.resolve():
        raise TrainingError(f"--out {out} is the float model itself; choose another name")
    for item in evaluate:
        for path in (item.image, item.truth):
            if path is not None and not Path(path).is_file():
                raise TrainingError(f"{path} does not exist")

    say(f"rebuilding the training patches of {bundle.name} for calibration")
    calibration = training_calibration_tiles(bundle, params.calibration_tiles, params.seed)
    say(f"calibrating and quantizing on {len(calibration.tiles)} tiles")
    with atomic_path(out) as part:
        settings = quantize_onnx(fp32_path, part, calibration.tiles, bundle.onnx.layout,
                                 QuantSettings(params.activations, params.symmetric_activations, params.min_agreement),
                                 producer="landcover training")
        with tempfile.TemporaryDirectory(prefix="landcover-quant-check-") as tmp:
            images = held_out_scenes(bundle, params, Path(tmp) / "scenes") + list(evaluate)
            say(f"comparing with the float model on {len(images)} orthophoto(s) through backend.inference.segment")
            comparisons = compare_models(bundle, fp32_path, part, images, Path(tmp), say, params.decided)
        check_comparisons(comparisons, params)

    pixels = sum(c.pixels for c in comparisons)
    provenance = int8_provenance(bundle, out, settings, calibration, {
        "all": round(sum(c.agreement * c.pixels for c in comparisons) / max(pixels, 1), 6),
        "pixels": pixels,
        "orthophotos": {c.name: round(c.agreement, 6) for c in comparisons},
        "decided": {"threshold": params.decided,
                    "orthophotos": {c.name: {"agreement": round(c.decided_agreement, 6),
                                             "share": round(c.decided_share, 6)} for c in comparisons}},
        "how": "share of pixels with the float model's class, both through backend.inference.segment; decided: "
               "over the pixels whose float top-class probability is at least the threshold",
    })
    updated = record_int8(bundle, out, provenance)
    assert updated.onnx_int8 is not None
    say(f"{bundle_json} now names {out.name} as its \"onnx_int8\" export (sha256 {updated.onnx_int8.sha256[:16]}...)")
    return QuantizeReport(out, fp32_path, fp32_path.stat().st_size, out.stat().st_size, calibration,
                          comparisons, provenance)

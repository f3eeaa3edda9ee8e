"""Evaluate a trained model: on the eval patches, and on whole held-out orthophotos through the backend.

The orthophoto evaluation exports a temporary bundle (float16 weights, as shipped) and runs
``backend.inference.segment`` on every orthophoto of the eval split, so its numbers are what a
user of the bundle gets, tiling and blending included.

Report folder: ``report.json`` (everything), ``metrics.csv`` (one row per scope and class),
``report.md``, ``confusion_<scope>.csv`` / ``.png``, ``examples.png`` and ``orthophotos/*.tif``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import write_text_atomic
from training import CLASS_NAMES, NUM_CLASSES
from training.config import EvaluateParams
from training.errors import TrainingError
from training.metrics import confusion_matrix, scores
from training.split import SPLIT_JSON, read_split
from training.train import BEST_WEIGHTS, read_train_json

REPORT_JSON = "report.json"


def _load_model(model_dir: Path, weights: Path | None) -> Any:
    from backend.models import build_model, load_weights

    info = read_train_json(model_dir)
    model = build_model(info["architecture"], info["backbone"], info["num_classes"], info["input_bands"])
    source = Path(weights) if weights else Path(model_dir) / BEST_WEIGHTS
    if not source.is_file():
        raise TrainingError(f"{source} does not exist; train the model first")
    load_weights(model, source)
    return model, info


def evaluate_patches(
    model: Any, patch_dir: Path, names: list[str], batch_size: int, scale: float, examples: int
) -> tuple[np.ndarray, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
    """Confusion matrix over the patches, plus a few (name, image, truth, prediction) examples."""
    from training.data import check_patches_exist, load_patch

    check_patches_exist(patch_dir, names)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    chosen = set(np.linspace(0, len(names) - 1, examples).astype(int).tolist()) if examples else set()
    picked = []
    for start in range(0, len(names), batch_size):
        batch = names[start:start + batch_size]
        pairs = [load_patch(patch_dir, n) for n in batch]
        x = np.stack([p[0] for p in pairs]).astype(np.float32) / np.float32(scale)
        pred = np.argmax(model.predict_on_batch(x), axis=-1).astype(np.uint8)
        for i, (name, (image, mask)) in enumerate(zip(batch, pairs, strict=False)):
            cm += confusion_matrix(mask, pred[i], NUM_CLASSES)
            if start + i in chosen:
                picked.append((name, image, mask, pred[i]))
    return cm, picked


def evaluate_orthophotos(
    bundle_json: Path,
    data_dir: Path,
    names: list[str],
    out_dir: Path,
    params: EvaluateParams,
    progress: Callable[[str], None] | None = None,
    precision: str = "auto",
) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Segment each orthophoto with the bundle through the backend and compare with its mask."""
    import rasterio

    from backend.bundle import load_bundle
    from backend.errors import LandcoverError
    from backend.inference import segment

    bundle = load_bundle(bundle_json)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    per = {}
    for name in names:
        image, mask_path = Path(data_dir) / "images" / f"{name}.tif", Path(data_dir) / "masks" / f"{name}.tif"
        if not image.is_file() or not mask_path.is_file():
            raise TrainingError(f"held-out orthophoto {name} is not in {data_dir}; pass the data folder it came from")
        out = out_dir / f"{name}.tif"
        try:
            result = segment(image, out, bundle, overlap=params.overlap, batch_size=params.batch_size,
                             precision=precision)
        except LandcoverError as exc:
            raise type(exc)(f"backend segmentation of {name} failed: {exc}") from exc
        with rasterio.open(result.output) as src:
            pred = src.read(1)
        with rasterio.open(mask_path) as src:
            truth = src.read(1)
        if pred.shape != truth.shape:
            raise TrainingError(f"{name}: backend output {pred.shape} does not match the mask {truth.shape}")
        # Nodata (255) in the prediction counts as wrong: it is what the user would get there.
        pred = np.where(pred >= NUM_CLASSES, (truth.astype(np.int64) + 1) % NUM_CLASSES, pred)
        cm = confusion_matrix(truth, pred, NUM_CLASSES)
        total += cm
        s = scores(cm)
        per[name] = {"miou": s["miou"], "accuracy": s["accuracy"], "seconds": round(result.seconds, 2)}
        if progress:
            progress(f"{name}: mIoU {s['miou']:.4f}, accuracy {s['accuracy']:.4f} ({result.seconds:.1f} s)")
    return total, per


def evaluate(
    model_dir: Path,
    patch_dir: Path,
    split_dir: Path,
    out_dir: Path,
    params: EvaluateParams,
    data_dir: Path | None = None,
    weights: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run both evaluations and write the report folder; return the report."""
    from training.export import ExportParams, export_bundle
    from training.plots import plot_examples

    say = progress or (lambda _msg: None)
    model_dir, patch_dir, split_dir, out_dir = Path(model_dir), Path(patch_dir), Path(split_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, info = _load_model(model_dir, weights)
    names = read_split(split_dir, "eval")
    say(f"evaluating {len(names)} eval patches")
    cm, examples = evaluate_patches(
        model, patch_dir, names, params.batch_size, info["preprocessing"]["scale"], params.examples
    )
    report: dict[str, Any] = {"model_dir": str(model_dir), "architecture": info["architecture"],
                              "backbone": info["backbone"]}
    report["patches"] = {**scores(cm), "evaluated_on": f"{len(names)} eval patches", "confusion": cm.tolist()}
    if examples:
        plot_examples(examples, out_dir / "examples.png")

    held_out = _held_out_orthophotos(split_dir)
    if params.orthophotos and data_dir is not None and held_out:
        if params.max_orthophotos:
            held_out = held_out[: params.max_orthophotos]
        say(f"segmenting {len(held_out)} held-out orthophoto(s) through the backend")
        bundle_json = out_dir / "bundle" / "landcover.json"
        export_bundle(model_dir, bundle_json, ExportParams(name="evaluation"), weights=weights)
        ocm, per = evaluate_orthophotos(bundle_json, Path(data_dir), held_out, out_dir / "orthophotos", params, say)
        report["orthophotos"] = {
            **scores(ocm),
            "evaluated_on": f"{len(held_out)} held-out orthophoto(s) through backend.inference.segment",
            "confusion": ocm.tolist(),
            "per_orthophoto": per,
        }
    elif params.orthophotos:
        report["orthophotos_skipped"] = (
            "no data folder given" if data_dir is None
            else "no wholly held-out orthophotos (random split); use the grouped split"
        )
    _write_reports(report, out_dir)
    return report


def _held_out_orthophotos(split_dir: Path) -> list[str]:
    path = split_dir / SPLIT_JSON
    if not path.is_file():
        return []
    orthos = json.loads(path.read_text()).get("orthophotos") or {}
    return list(orthos.get("eval", []))


def _write_reports(report: dict[str, Any], out_dir: Path) -> None:
    from training.plots import plot_confusion

    for scope in ("patches", "orthophotos"):
        if scope not in report:
            continue
        cm = np.asarray(report[scope]["confusion"])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["truth \\ predicted", *CLASS_NAMES])
        for name, row in zip(CLASS_NAMES, cm.tolist(), strict=False):
            writer.writerow([name, *row])
        write_text_atomic(out_dir / f"confusion_{scope}.csv", buf.getvalue())
        plot_confusion(cm, list(CLASS_NAMES), out_dir / f"confusion_{scope}.png")
    write_text_atomic(out_dir / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_dir / "metrics.csv", metrics_csv(report))
    write_text_atomic(out_dir / "report.md", markdown_report(report))


def metrics_csv(report: dict[str, Any]) -> str:
    """One row per scope and class (plus an 'all' row with accuracy, mIoU, macro F1)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scope", "class", "precision", "recall", "f1", "iou", "support", "accuracy", "miou", "macro_f1"])
    for scope in ("patches", "orthophotos"):
        s = report.get(scope)
        if not s:
            continue
        for name, c in s["per_class"].items():
            writer.writerow([scope, name, *(_fmt(c[k]) for k in ("precision", "recall", "f1", "iou")), c["support"],
                             "", "", ""])
        writer.writerow([scope, "all", "", "", "", "", s["pixels"], _fmt(s["accuracy"]), _fmt(s["miou"]),
                         _fmt(s["macro_f1"])])
    return buf.getvalue()


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def markdown_table(s: dict[str, Any]) -> str:
    """Per-class table of one scope, with a summary row."""
    lines = ["| class | precision | recall | F1 | IoU | pixels |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, c in s["per_class"].items():
        cells = " | ".join(_fmt(c[k]) or "n/a" for k in ("precision", "recall", "f1", "iou"))
        lines.append(f"| {name} | {cells} | {c['support']:,} |")
    lines.append(
        f"| **all** | | | macro {_fmt(s['macro_f1'])} | **mIoU {_fmt(s['miou'])}** | accuracy {_fmt(s['accuracy'])} |"
    )
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    parts = [f"# Evaluation: {report['architecture']} / {report['backbone']}", ""]
    titles = {"orthophotos": "Whole held-out orthophotos (backend tiled inference)", "patches": "Eval patches"}
    for scope in ("orthophotos", "patches"):
        s = report.get(scope)
        if not s:
            continue
        parts += [f"## {titles[scope]}", "", f"Evaluated on {s['evaluated_on']}.", "", markdown_table(s), ""]
        if scope == "orthophotos":
            parts += ["| orthophoto | mIoU | accuracy |", "| --- | ---: | ---: |"]
            for name, v in s["per_orthophoto"].items():
                parts.append(f"| {name} | {_fmt(v['miou'])} | {_fmt(v['accuracy'])} |")
            parts.append("")
    if "orthophotos_skipped" in report:
        parts += [f"Whole-orthophoto evaluation skipped: {report['orthophotos_skipped']}.", ""]
    return "\n".join(parts)

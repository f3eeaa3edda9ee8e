"""Segmentation metrics from a confusion matrix (rows: truth, columns: prediction)."""

from __future__ import annotations

from typing import Any

import numpy as np

from training import CLASS_NAMES


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int | None = None) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts; pixels whose truth equals ``ignore`` are skipped."""
    truth = np.asarray(truth).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.shape} vs {pred.shape}")
    keep = (truth >= 0) & (truth < num_classes) & (pred >= 0) & (pred < num_classes)
    if ignore is not None:
        keep &= truth != ignore
    return np.bincount(truth[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def scores(cm: np.ndarray, class_names: tuple[str, ...] | list[str] = CLASS_NAMES) -> dict[str, Any]:
    """Per-class precision, recall, F1, IoU and support; overall accuracy, mIoU, macro F1.

    A class absent from both truth and prediction has undefined (None) scores and is left out
    of the means, so a patch set without water is not penalised for "missing" water.
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    iou = _ratio(tp, tp + fp + fn)
    total = cm.sum()

    def clean(v: float) -> float | None:
        return None if np.isnan(v) else float(v)

    per_class = {
        name: {
            "precision": clean(precision[i]),
            "recall": clean(recall[i]),
            "f1": clean(f1[i]),
            "iou": clean(iou[i]),
            "support": int(cm[i].sum()),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": float(tp.sum() / total) if total else None,
        "miou": clean(np.nanmean(iou)) if not np.all(np.isnan(iou)) else None,
        "macro_f1": clean(np.nanmean(f1)) if not np.all(np.isnan(f1)) else None,
        "per_class": per_class,
        "pixels": int(total),
    }

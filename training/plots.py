"""Figures: training curves, confusion matrix, example predictions (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import LANDCOVER_CLASSES, atomic_path


def _pyplot() -> Any:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # Debian's system matplotlib (visible through --system-site-packages) makes Axes3D warn; we never use it.
        warnings.simplefilter("ignore", UserWarning)
        import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), dpi=100, bbox_inches="tight")
    return path


def plot_history(history_csv: Path, out_dir: Path) -> list[Path]:
    """``loss.png`` and ``iou.png`` from the training history CSV."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in rows]
    written = []
    for fname, keys, ylabel in (
        ("loss.png", ("loss", "val_loss"), "focal + Jaccard loss"),
        ("iou.png", ("iou_score", "val_miou"), "IoU"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            values = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
            ax.plot(epochs, values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, Path(out_dir) / fname))
        plt.close(fig)
    return written


def plot_confusion(cm: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix with counts."""
    plt = _pyplot()
    cm = np.asarray(cm, np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, label="share of true pixels")
    path = _save(fig, path)
    plt.close(fig)
    return path


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class ids to the bundle's class colours (unknown ids black)."""
    palette = np.zeros((256, 3), np.uint8)
    for c in LANDCOVER_CLASSES:
        palette[c.id] = c.color
    return palette[np.asarray(mask, np.uint8)]


def plot_examples(examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> Path:
    """Rows of image | truth | prediction for ``(name, image, truth, pred)`` examples."""
    plt = _pyplot()
    n = max(len(examples), 1)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for row, (name, image, truth, pred) in enumerate(examples):
        panels = (("image", image), ("truth", colorize(truth)), ("prediction", colorize(pred)))
        for col, (title, arr) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(arr, interpolation="nearest")
            ax.set_title(f"{name}: {title}" if col == 0 else title, fontsize=8)
            ax.axis("off")
    path = _save(fig, path)
    plt.close(fig)
    return path

"""Compare the demo's class raster with the demo's truth mask: ``python demo/score.py PRED TRUTH``."""

from __future__ import annotations

import sys

import rasterio

from training.metrics import confusion_matrix, scores


def main(pred_path: str, truth_path: str) -> int:
    with rasterio.open(pred_path) as p, rasterio.open(truth_path) as t:
        pred, truth = p.read(1), t.read(1)
    s = scores(confusion_matrix(truth, pred, 5))
    print(f"agreement with demo/truth.tif: accuracy {s['accuracy']:.3f}, mIoU {s['miou']:.3f}")
    print("IoU per class: " + ", ".join(f"{name} {v['iou']:.3f}" for name, v in s["per_class"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

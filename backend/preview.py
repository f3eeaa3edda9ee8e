"""A PNG preview: orthophoto | land cover with a legend, side by side."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from backend.contract import TAG_CLASSES, atomic_path, classes_from_dicts
from backend.errors import InputError, LandcoverError
from backend.outputs import NODATA


def _read_decimated(path: Path, max_size: int, bands: list[int] | None = None, nearest: bool = False) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    try:
        with rasterio.open(path) as src:
            scale = max(1.0, max(src.width, src.height) / max_size)
            shape = (max(1, int(src.height / scale)), max(1, int(src.width / scale)))
            idx = bands or list(range(1, min(3, src.count) + 1))
            data = src.read(idx, out_shape=(len(idx), *shape),
                            resampling=Resampling.nearest if nearest else Resampling.average)
            tags = src.tags()
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read {path} ({exc}); check the path") from exc
    return data, tags


def render_preview(image: Path, classes: Path, output: Path, max_size: int = 1024) -> Path:
    """Render ``image`` and the class raster ``classes`` (written by ``segment``) side by side to ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's mpl_toolkits beside the venv's matplotlib warns about Axes3D
        warnings.simplefilter("ignore")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

    rgb, _ = _read_decimated(image, max_size)
    cls, tags = _read_decimated(classes, max_size, bands=[1], nearest=True)
    try:
        class_list = classes_from_dicts(json.loads(tags[TAG_CLASSES]))
    except (KeyError, json.JSONDecodeError, LandcoverError):
        raise InputError(f"{classes} carries no class metadata; pass a class raster written by 'segment'") from None
    rgb = np.moveaxis(rgb, 0, -1)
    if rgb.dtype != np.uint8:
        lo, hi = np.percentile(rgb, [2, 98])
        rgb = np.clip((rgb - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    cls = cls[0]
    lut = np.full((256, 4), 0, np.uint8)
    for c in class_list:
        lut[c.id] = (*c.color, 255)
    coloured = lut[cls]
    valid = cls != NODATA
    total = max(1, int(valid.sum()))

    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4), dpi=110)
    axes[0].imshow(rgb)
    axes[0].set_title(f"orthophoto: {image.name}")
    axes[1].imshow(coloured)
    axes[1].set_title(f"land cover: {classes.name}")
    for ax in axes:
        ax.set_axis_off()
    handles = [
        Patch(facecolor=np.array(c.color) / 255, edgecolor="black",
              label=f"{c.name} ({100 * np.count_nonzero(cls == c.id) / total:.1f} %)")
        for c in class_list
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(output) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return output

"""Cut orthophotos and masks into square patches (``patchify``), written as PNGs.

Output (``OUT``): ``images/NAME_rRRR_cCCC.png`` (RGB), ``masks/NAME_rRRR_cCCC.png`` (uint8 class ids)
and ``index.csv`` (patch, source, row, col and the pixel count of every class, which the filter
uses without re-reading masks). Row/column are patch indices within the source orthophoto.
Each orthophoto is read one strip of patch rows at a time, so memory stays bounded by one strip.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import CLASS_NAMES, NUM_CLASSES
from training.dataset import Orthophoto, check_mask_values, check_pair, list_orthophotos
from training.errors import TrainingError

INDEX_NAME = "index.csv"
INDEX_FIELDS = ["patch", "source", "row", "col"] + [f"px_{name}" for name in CLASS_NAMES]


@dataclass(frozen=True)
class PatchParams:
    """Patch size and stride in pixels (stride None: non-overlapping, the seed's choice).

    ``gsd_m``: resample every orthophoto whose pixel size differs from it by more than 1 % to this size first
    (images bilinear, masks nearest neighbour), so that one model sees one scale (LandCover.ai mixes 25 and
    50 cm sheets); None keeps every orthophoto at its native pixels.
    """

    size: int = 256
    stride: int | None = None
    gsd_m: float | None = None

    def __post_init__(self) -> None:
        if self.gsd_m is not None and not self.gsd_m > 0:
            raise TrainingError(f"patch gsd_m must be a positive number of metres (or null: native), got {self.gsd_m}")
        if self.size < 32 or self.size % 32:
            raise TrainingError(f"patch size must be a multiple of 32 and >= 32, got {self.size}")
        if self.stride is not None and not 1 <= self.stride <= self.size:
            raise TrainingError(f"patch stride must be in 1..{self.size}, got {self.stride}")

    @property
    def step(self) -> int:
        return self.stride or self.size


@dataclass
class PatchSummary:
    """What :func:`patch_dataset` wrote."""

    out_dir: Path
    orthophotos: int = 0
    patches: int = 0
    per_source: dict[str, int] = field(default_factory=dict)


def patch_name(source: str, row: int, col: int) -> str:
    """``NAME_r003_c007``: the source orthophoto and the patch's row and column."""
    return f"{source}_r{row:03d}_c{col:03d}"


def grid_shape(height: int, width: int, params: PatchParams) -> tuple[int, int]:
    """Patch rows and columns after cropping the image to whole patches."""
    if height < params.size or width < params.size:
        return 0, 0
    return (height - params.size) // params.step + 1, (width - params.size) // params.step + 1


def patch_dataset(
    data_dir: Path, out_dir: Path, params: PatchParams, progress: Callable[[int, int, str], None] | None = None
) -> PatchSummary:
    """Patch every orthophoto of ``data_dir`` into ``out_dir`` (replaced when complete)."""
    orthophotos = list_orthophotos(data_dir)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir(parents=True)
    summary = PatchSummary(out_dir)
    try:
        with open(tmp / INDEX_NAME, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(INDEX_FIELDS)
            for i, ortho in enumerate(orthophotos):
                n = _patch_one(ortho, tmp, params, writer)
                summary.per_source[ortho.name] = n
                summary.patches += n
                summary.orthophotos += 1
                if progress:
                    progress(i + 1, len(orthophotos), ortho.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return summary


def _patch_one(ortho: Orthophoto, out: Path, params: PatchParams, writer: csv._writer) -> int:
    import rasterio
    from patchify import patchify
    from rasterio.windows import Window

    try:
        img_src, mask_src = rasterio.open(ortho.image), rasterio.open(ortho.mask)
    except rasterio.errors.RasterioIOError as exc:
        raise TrainingError(f"cannot read {ortho.name} ({exc}); is it a valid GeoTIFF?") from exc
    with img_src, mask_src:
        check_pair(ortho, (img_src.height, img_src.width), (mask_src.height, mask_src.width), img_src.count)
        img_src, mask_src = _at_gsd(img_src, params.gsd_m, "bilinear"), _at_gsd(mask_src, params.gsd_m, "nearest")
        rows, cols = grid_shape(img_src.height, img_src.width, params)
        size, step = params.size, params.step
        crop_w = (cols - 1) * step + size if cols else 0
        count = 0
        for r in range(rows):
            window = Window(0, r * step, crop_w, size)
            img = np.moveaxis(img_src.read((1, 2, 3), window=window), 0, 2)
            mask = mask_src.read(1, window=window)
            check_mask_values(mask, f"{ortho.mask} (rows {r * step}..{r * step + size})")
            # patchify returns (1, cols, 1, size, size, 3) for a strip one patch high.
            img_patches = patchify(img, (size, size, 3), step=step).reshape(cols, size, size, 3)
            mask_patches = patchify(mask, (size, size), step=step).reshape(cols, size, size)
            for c in range(cols):
                name = patch_name(ortho.name, r, c)
                _write_png(out / "images" / f"{name}.png", img_patches[c])
                _write_png(out / "masks" / f"{name}.png", mask_patches[c])
                counts = np.bincount(mask_patches[c].ravel(), minlength=NUM_CLASSES)
                writer.writerow([name, ortho.name, r, c, *counts.tolist()])
                count += 1
    return count


def _at_gsd(src, gsd_m: float | None, resampling: str):
    """``src`` itself, or a virtual copy of it at ``gsd_m`` metres per pixel (same extent) when it differs by >1 %."""
    if gsd_m is None:
        return src
    px = abs(src.transform.a)
    if abs(px / gsd_m - 1) <= 0.01:
        return src
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    width, height = max(1, round(src.width * px / gsd_m)), max(1, round(src.height * abs(src.transform.e) / gsd_m))
    transform = src.transform * Affine.scale(src.width / width, src.height / height)
    return WarpedVRT(src, crs=src.crs, transform=transform, width=width, height=height,
                     resampling=getattr(Resampling, resampling))


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array)).save(path, compress_level=1)


@dataclass(frozen=True)
class PatchRecord:
    """One row of ``index.csv``."""

    patch: str
    source: str
    row: int
    col: int
    pixels: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.pixels)

    @property
    def foreground_share(self) -> float:
        # (total - background) / total, not 1 - share: 1 - 95/100 is 0.050000000000000044 > 0.05.
        return (self.total - self.pixels[0]) / self.total if self.total else 0.0


def read_index(patch_dir: Path) -> list[PatchRecord]:
    """Read ``index.csv`` written by :func:`patch_dataset`."""
    path = Path(patch_dir) / INDEX_NAME
    if not path.is_file():
        raise TrainingError(f"{path} does not exist; run 'python -m training patch DATA {patch_dir}' first")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise TrainingError(f"{path} lists no patches; are the orthophotos smaller than one patch?")
    return [
        PatchRecord(
            r["patch"], r["source"], int(r["row"]), int(r["col"]), tuple(int(r[f"px_{n}"]) for n in CLASS_NAMES)
        )
        for r in rows
    ]

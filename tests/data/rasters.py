"""Tiny georeferenced rasters written on demand by the tests (the only binary test data: the rasters in real/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

PL_CRS = "EPSG:2180"  # LandCover.ai's CRS
ORIGIN = (500_000.0, 600_000.0)


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = PL_CRS,
    pixel_size: float = 0.25,
    nodata: float | None = None,
    alpha: bool = False,
    transform=None,
) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF; the last band is alpha when ``alpha``."""
    bands, height, width = data.shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": data.dtype.name,
        "nodata": nodata,
    }
    if bands >= 4 and not alpha:
        profile["photometric"] = "minisblack"  # else GDAL takes a 4th uint8 band for alpha
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = transform or from_origin(*ORIGIN, pixel_size, pixel_size)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if alpha:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha][-bands:]
    return path


def random_rgb(height: int, width: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """Random 3-band image (bands, rows, cols)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (3, height, width)).astype(dtype)

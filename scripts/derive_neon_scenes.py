"""Write the NEON scenes of the real-scene sanity suite from the DeepForest wheel's package data.

How ``tests/data/real/neon_*.tif`` were made (they are committed; this records the derivation)::

    pip download deepforest==2.1.0 --no-deps -d /tmp/dl
    python scripts/derive_neon_scenes.py /tmp/dl/deepforest-2.1.0-py3-none-any.whl tests/data/real

The images are crops of NEON's 0.1 m RGB camera mosaics (data product DP3.30010.001, CC0) that DeepForest (MIT)
ships as test data. Only ``OSBS_029.tif`` is georeferenced. The PNG crops get their site's UTM zone, the product's
0.1 m pixel, and an approximate origin: the 1 km tile named in the file, or the site's location for SOAP (a crop's
offset is not recorded). Positions are therefore approximate; the pixel size, which the suite relies on, is not.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

# name in the wheel -> (output name, EPSG code, tile origin easting, tile top northing)
SCENES = {
    "2019_YELL_2_541000_4977000_image_crop.png": ("neon_yell_road_epsg32612.tif", 32612, 541000.0, 4978000.0),
    "2019_YELL_2_528000_4978000_image_crop2.png": ("neon_yell_meadow_epsg32612.tif", 32612, 528000.0, 4979000.0),
    "SOAP_061.png": ("neon_soap_forest_epsg32611.tif", 32611, 298000.0, 4101000.0),
    "SOAP_031.png": ("neon_soap_snags_epsg32611.tif", 32611, 298000.0, 4101000.0),
}
GEOTIFF = "OSBS_029.tif"  # already georeferenced (EPSG:32617, 0.1 m)
GSD_M = 0.1


def write(path: Path, rgb: np.ndarray, crs: str, transform: object) -> None:
    """RGB uint8 as a tiled, JPEG-compressed GeoTIFF (how such mosaics are usually delivered)."""
    profile = {"driver": "GTiff", "height": rgb.shape[0], "width": rgb.shape[1], "count": 3, "dtype": "uint8",
               "crs": crs, "transform": transform, "compress": "jpeg", "jpeg_quality": 90, "photometric": "ycbcr",
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(rgb, 2, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel", type=Path, help="deepforest-2.1.0-py3-none-any.whl")
    parser.add_argument("out", type=Path, help="folder to write into (tests/data/real)")
    args = parser.parse_args()
    Image.MAX_IMAGE_PIXELS = None
    with zipfile.ZipFile(args.wheel) as wheel:
        for name, (out, epsg, east, north) in SCENES.items():
            rgb = np.asarray(Image.open(io.BytesIO(wheel.read(f"deepforest/data/{name}"))).convert("RGB"))
            write(args.out / out, rgb, f"EPSG:{epsg}", from_origin(east, north, GSD_M, GSD_M))
            print(f"{out}: {rgb.shape[1]} x {rgb.shape[0]} px")
        with rasterio.MemoryFile(wheel.read(f"deepforest/data/{GEOTIFF}")) as mem, mem.open() as src:
            rgb = np.moveaxis(src.read([1, 2, 3]), 0, 2)
            write(args.out / "neon_osbs_pines_epsg32617.tif", rgb, src.crs, src.transform)
            print(f"neon_osbs_pines_epsg32617.tif: {src.width} x {src.height} px, {src.res[0]:.2f} m")


if __name__ == "__main__":
    main()

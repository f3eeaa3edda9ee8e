"""scripts/derive_neon_scenes.py: the NEON sanity scenes are written from a DeepForest wheel as georeferenced GeoTIFFs.

The real wheel is not needed: a small zip with the same member names stands in for it.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import rasterio
from PIL import Image

from tests.conftest import REPO
from tests.data.rasters import write_raster

SCRIPT = REPO / "scripts" / "derive_neon_scenes.py"


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_the_crops_get_the_products_pixel_and_their_sites_zone_and_the_geotiff_keeps_its_own(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import derive_neon_scenes as derive
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(0)
    wheel = tmp_path / "deepforest-2.1.0-py3-none-any.whl"
    crops = {}  # smooth like photos (JPEG keeps them close); each crop a different size
    for i, name in enumerate(derive.SCENES):
        yy, xx = np.mgrid[0:48 + 8 * i, 0:64]
        crops[name] = np.stack([60 + 2 * yy, 80 + 2 * xx, 120 + yy + xx], axis=-1).astype(np.uint8)
    write_raster(tmp_path / "osbs.tif", rng.integers(0, 255, (3, 40, 40), dtype=np.uint8), crs="EPSG:32617",
                 pixel_size=0.1)
    with zipfile.ZipFile(wheel, "w") as z:
        for name, rgb in crops.items():
            z.writestr(f"deepforest/data/{name}", _png(rgb))
        z.write(tmp_path / "osbs.tif", f"deepforest/data/{derive.GEOTIFF}")
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([sys.executable, str(SCRIPT), str(wheel), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for name, (tif, epsg, east, north) in derive.SCENES.items():
        with rasterio.open(out / tif) as ds:
            assert ds.crs.to_epsg() == epsg and ds.res == (0.1, 0.1) and ds.bounds.left == east
            assert ds.bounds.top == north and ds.shape == crops[name].shape[:2] and ds.count == 3
            # JPEG-compressed, as delivered: close to the PNG, not equal
            assert np.abs(np.moveaxis(ds.read(), 0, 2).astype(int) - crops[name]).mean() < 8
    with rasterio.open(out / "neon_osbs_pines_epsg32617.tif") as ds, rasterio.open(tmp_path / "osbs.tif") as src:
        assert ds.crs == src.crs and ds.transform == src.transform


def test_the_committed_scenes_are_what_the_expectations_name():
    import json

    folder = REPO / "tests" / "data" / "real"
    named = {e["raster"] for e in json.loads((folder / "expectations.json").read_text())}
    for path in folder.glob("neon_*.tif"):
        assert path.name in named
        with rasterio.open(path) as ds:
            assert ds.res == (0.1, 0.1) and ds.crs.is_projected and ds.count == 3

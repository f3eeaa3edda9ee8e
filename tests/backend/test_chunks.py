"""``segment(..., chunk=Window)``: a window of a raster classified on the whole raster's tile grid.

The fake network here decides by the pixel *and* its position inside the tile, so a chunk tiled on its
own grid (or blended with other neighbours) would differ; on the shared grid every chunk must equal that
part of one run over the whole raster, pixel for pixel, which is what lets a mosaic be split into tasks.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from backend.errors import InputError
from backend.inference import segment
from backend.raster_io import Window
from tests.data.rasters import random_rgb, write_raster


class PositionRuntime:
    """Class scores from the red value and the pixel's row and column inside its tile (not shift-equivariant)."""

    name = "position"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        red = np.rint(batch[..., 0] * 255)
        rows, cols = np.mgrid[0:h, 0:w]
        scores = [np.sin(red / 40.0 + c + rows / 9.0 + c * cols / 13.0) for c in range(5)]
        return np.stack(scores, axis=-1).astype(np.float32)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs


@pytest.fixture
def raster(tmp_path):
    return write_raster(tmp_path / "mosaic.tif", random_rgb(410, 530, seed=3))


@pytest.mark.parametrize("overlap", [0, 32])
def test_chunks_tile_the_whole_run_exactly(tmp_path, raster, bundle, overlap):
    whole, transform, crs = read(segment(raster, tmp_path / "whole.tif", bundle, overlap=overlap, batch_size=3,
                                         runtime=PositionRuntime()).output)
    assert len(np.unique(whole)) == 5
    # Chunks of odd sizes and offsets, crossing tile borders; each is a separate GeoTIFF on the right spot.
    cuts_y, cuts_x = [0, 150, 256, 410], [0, 77, 300, 530]
    for i in range(3):
        for j in range(3):
            chunk = Window(cuts_x[j], cuts_y[i], cuts_x[j + 1] - cuts_x[j], cuts_y[i + 1] - cuts_y[i])
            result = segment(raster, tmp_path / f"c{i}{j}.tif", bundle, overlap=overlap, batch_size=4,
                             runtime=PositionRuntime(), chunk=chunk, max_block_width=128)
            part, part_transform, part_crs = read(result.output)
            np.testing.assert_array_equal(part, whole[cuts_y[i]:cuts_y[i + 1], cuts_x[j]:cuts_x[j + 1]])
            assert part_crs == crs and part_transform == transform * transform.translation(cuts_x[j], cuts_y[i])
            assert (result.width, result.height) == (chunk.width, chunk.height)
            assert sum(result.areas.counts) == chunk.width * chunk.height


def test_a_chunk_alone_differs_from_the_same_window_as_its_own_raster(tmp_path, raster, bundle):
    """The reason chunks exist: ``window=`` tiles the window on its own grid, so its pixels can differ."""
    window = Window(77, 150, 223, 106)
    on_grid = read(segment(raster, tmp_path / "a.tif", bundle, runtime=PositionRuntime(), chunk=window).output)[0]
    own_grid = read(segment(raster, tmp_path / "b.tif", bundle, runtime=PositionRuntime(), window=window).output)[0]
    assert on_grid.shape == own_grid.shape and not np.array_equal(on_grid, own_grid)


def test_a_chunk_in_nodata_is_no_error_but_a_whole_nodata_raster_is(tmp_path, bundle):
    rgb = random_rgb(200, 300, seed=1)
    rgb[:, :, 150:] = 0
    src = write_raster(tmp_path / "half.tif", rgb, nodata=0)
    result = segment(src, tmp_path / "c.tif", bundle, runtime=PositionRuntime(), chunk=Window(160, 0, 140, 200))
    assert sum(result.areas.counts) == 0 and result.areas.nodata_pixels == 140 * 200
    assert (read(result.output)[0] == 255).all()
    with pytest.raises(InputError, match="no valid pixels"):
        segment(src, tmp_path / "w.tif", bundle, runtime=PositionRuntime(), window=Window(160, 0, 140, 200))


def test_a_chunk_outside_the_raster_is_refused_before_writing(tmp_path, raster, bundle):
    with pytest.raises(InputError, match="reaches beyond the 530 x 410 px raster"):
        segment(raster, tmp_path / "x.tif", bundle, runtime=PositionRuntime(), chunk=Window(500, 0, 100, 10))
    assert not (tmp_path / "x.tif").exists()

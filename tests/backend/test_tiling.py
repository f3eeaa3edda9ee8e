"""Tile geometry: coverage, blend weights, reflection, column blocks."""

from __future__ import annotations

import numpy as np
import pytest

from backend.tiling import OUTPUT_BLOCK, AxisTiling, TileGrid, reflect_indices, weight_ramp


@pytest.mark.parametrize("tile,overlap", [(256, 0), (256, 32), (256, 64), (256, 128), (64, 7), (32, 16)])
def test_weight_ramp_is_symmetric_positive_and_one_in_the_middle(tile, overlap):
    w = weight_ramp(tile, overlap)
    assert w.shape == (tile,)
    assert np.allclose(w, w[::-1])
    assert (w > 0).all() and (w <= 1).all()
    assert np.all(w[overlap : tile - overlap] == 1)


@pytest.mark.parametrize("tile,overlap", [(256, 32), (256, 64), (64, 7), (32, 16)])
def test_neighbouring_ramps_sum_to_one(tile, overlap):
    w = weight_ramp(tile, overlap)
    stride = tile - overlap
    overlap_sum = w[stride:] + w[:overlap]
    np.testing.assert_allclose(overlap_sum, 1.0, atol=1e-6)


@pytest.mark.parametrize("length", [1, 2, 31, 64, 65, 200, 257, 1000])
@pytest.mark.parametrize("tile,overlap", [(64, 0), (64, 8), (64, 32), (32, 5)])
def test_axis_tiles_cover_every_pixel(length, tile, overlap):
    axis = AxisTiling(length, tile, overlap)
    covered = np.zeros(length, int)
    for i in range(axis.count):
        a = max(0, axis.start(i))
        b = min(length, axis.start(i) + tile)
        covered[a:b] += 1
    assert (covered >= 1).all()
    assert axis.start(0) == -(overlap // 2)  # align=1: pad by half the overlap
    assert axis.start(axis.count - 1) + tile >= length
    # no superfluous tile: dropping the last one would leave pixels uncovered
    if axis.count > 1:
        assert axis.start(axis.count - 2) + tile < length
    assert axis.pad_before + length + axis.pad_after == axis.padded_length


def test_weight_sum_matches_a_brute_force_sum_and_is_positive():
    axis = AxisTiling(300, 64, 16)
    brute = np.zeros(300)
    for i in range(axis.count):
        for k in range(64):
            x = axis.start(i) + k
            if 0 <= x < 300:
                brute[x] += axis.weights[k]
    np.testing.assert_allclose(axis.weight_sum, brute, rtol=1e-6)
    assert (axis.weight_sum > 0).all()
    # interior pixels see weights that sum to exactly 1 (partition of unity)
    np.testing.assert_allclose(axis.weight_sum[64:-64], 1.0, atol=1e-6)


def test_grid_weights_are_the_outer_product_and_weight_sum_is_separable():
    grid = TileGrid(130, 90, 32, 8)
    np.testing.assert_allclose(grid.weights, np.outer(grid.rows.weights, grid.cols.weights))
    ws = grid.weight_sum(0, 130, 0, 90)
    assert ws.shape == (130, 90)
    brute = np.zeros((130, 90))
    for r in range(grid.rows.count):
        for c in range(grid.cols.count):
            y, x = grid.tile_window(r, c)
            for dy in range(32):
                if 0 <= y + dy < 130:
                    xs = np.arange(x, x + 32)
                    ok = (xs >= 0) & (xs < 90)
                    brute[y + dy, xs[ok]] += grid.weights[dy, ok]
    np.testing.assert_allclose(ws, brute, rtol=1e-5)


@pytest.mark.parametrize("start,size,length", [(-5, 20, 10), (-40, 64, 10), (0, 7, 1), (5, 30, 12), (-3, 3, 2)])
def test_reflect_indices_match_numpy_pad(start, size, length):
    src = np.arange(length)
    pad = 200
    padded = np.pad(src, pad, mode="reflect") if length > 1 else np.full(length + 2 * pad, 0)
    expected = padded[pad + start : pad + start + size]
    np.testing.assert_array_equal(reflect_indices(start, size, length), expected)


@pytest.mark.parametrize("a,b", [(0, 1), (0, 300), (100, 101), (250, 300), (63, 65)])
def test_tiles_touching_are_exactly_the_overlapping_tiles(a, b):
    axis = AxisTiling(300, 64, 16)
    brute = [i for i in range(axis.count) if axis.start(i) < b and axis.start(i) + 64 > a]
    assert list(axis.tiles_touching(a, b)) == brute


@pytest.mark.parametrize("width,max_width", [(5000, 1024), (1000, 16384), (4097, 2048), (700, 256)])
def test_column_blocks_partition_the_columns_on_block_borders(width, max_width):
    grid = TileGrid(10, width, 64, 16)
    blocks = grid.column_blocks(max_width)
    assert blocks[0].x0 == 0 and blocks[-1].x1 == width
    for left, right in zip(blocks, blocks[1:], strict=False):
        assert left.x1 == right.x0
        assert left.x1 % OUTPUT_BLOCK == 0
    for b in blocks:
        assert b.x1 - b.x0 <= max(max_width, OUTPUT_BLOCK)
        # every tile touching an owned column is in the block, and the accumulator spans them
        assert list(b.tiles) == list(grid.cols.tiles_touching(b.x0, b.x1))
        assert b.acc_x0 <= b.x0 and b.acc_x0 + b.acc_width >= b.x1


def test_final_before_is_monotonic_and_ends_at_the_length():
    axis = AxisTiling(1000, 64, 16)
    finals = [axis.final_before(i) for i in range(axis.count)]
    assert finals == sorted(finals)
    assert finals[-1] == 1000
    # rows before final_before(i) are never touched by later tiles
    for i in range(axis.count - 1):
        assert axis.start(i + 1) >= finals[i]


@pytest.mark.parametrize("kwargs", [{"length": 0, "tile": 64, "overlap": 0}, {"length": 9, "tile": 64, "overlap": 33}])
def test_invalid_axis_is_rejected(kwargs):
    with pytest.raises(ValueError):
        AxisTiling(**kwargs)


@pytest.mark.parametrize("overlap,pad", [(0, 0), (32, 0), (64, 32), (96, 32), (128, 64)])
def test_aligned_tiles_start_on_the_network_stride(overlap, pad):
    axis = AxisTiling(2000, 256, overlap, align=32)
    assert axis.pad_before == pad
    assert all(axis.start(i) % 32 == 0 for i in range(axis.count))
    covered = np.zeros(2000, int)
    for i in range(axis.count):
        covered[max(0, axis.start(i)) : axis.start(i) + 256] += 1
    assert (covered >= 1).all()

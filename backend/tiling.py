"""Tile geometry for streaming, blended inference: pure numpy, no IO, no model.

Along each axis, tiles of the model's size advance by ``stride = tile - overlap``. The raster is
conceptually reflect-padded by ``overlap // 2`` (rounded down to a multiple of ``align``) before its
first pixel, so edge pixels are not at a tile border, and by whatever the last tile needs after it.
Encoder-decoder networks downsample by 32, so they are only shift-equivariant for shifts that are
multiples of 32: with ``align=32`` and an overlap that is a multiple of 32, every tile origin lies
on that grid, so tiles see pixels in the same phase as one pass over the whole image (they still
lack context near their borders, which the blend window down-weights).

Each tile's probabilities are multiplied by a separable weight window that is 1 in the middle and
falls off as sin^2 over the ``overlap`` pixels at each border; neighbouring ramps sum to exactly 1,
and the window is never 0, so every pixel, including the raster's edge, has a positive total weight.
With overlap 0 the window is all ones and the tiling is the plain non-overlapping grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

OUTPUT_BLOCK = 256  # block size of the written GeoTIFF; column blocks align to it


def weight_ramp(tile: int, overlap: int) -> np.ndarray:
    """1-D blend window of length ``tile``: sin^2 ramps over ``overlap`` px at both ends, 1 elsewhere.

    For ``0 < overlap <= tile // 2`` the ramps of two tiles ``tile - overlap`` apart sum to 1.
    """
    w = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        d = np.minimum(np.arange(tile), np.arange(tile)[::-1])  # distance to the nearest border
        ramp = d < overlap
        w[ramp] = np.sin(0.5 * np.pi * (d[ramp] + 0.5) / overlap) ** 2
    return w.astype(np.float32)


def reflect_indices(start: int, size: int, length: int) -> np.ndarray:
    """Source indices for coordinates ``start .. start+size-1`` of an axis of ``length``, reflected at
    both ends like ``numpy.pad(mode="reflect")`` (edge pixel not repeated), for any distance outside."""
    idx = np.arange(start, start + size)
    if length == 1:
        return np.zeros(size, dtype=np.int64)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx).astype(np.int64)


@dataclass(frozen=True)
class AxisTiling:
    """Tiling of one axis of ``length`` pixels by tiles of ``tile`` pixels overlapping by ``overlap``."""

    length: int
    tile: int
    overlap: int
    align: int = 1

    def __post_init__(self) -> None:
        if self.align < 1:
            raise ValueError(f"align must be >= 1, got {self.align}")
        if self.length < 1:
            raise ValueError(f"axis length must be >= 1, got {self.length}")
        if self.tile < 1:
            raise ValueError(f"tile size must be >= 1, got {self.tile}")
        if not 0 <= self.overlap <= self.tile // 2:
            raise ValueError(f"overlap must be between 0 and half the tile ({self.tile // 2}), got {self.overlap}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def pad_before(self) -> int:
        return (self.overlap // 2) // self.align * self.align

    @property
    def count(self) -> int:
        """Number of tiles so that padded raster ``[-pad_before, length)`` is covered."""
        need = self.pad_before + self.length
        return max(1, math.ceil((need - self.tile) / self.stride) + 1)

    @property
    def padded_length(self) -> int:
        return (self.count - 1) * self.stride + self.tile

    @property
    def pad_after(self) -> int:
        return self.padded_length - self.pad_before - self.length

    def start(self, i: int) -> int:
        """Raster coordinate of tile ``i``'s first pixel (negative in the leading padding)."""
        return i * self.stride - self.pad_before

    def final_before(self, i: int) -> int:
        """Once tiles ``0..i`` are accumulated, every raster coordinate below this is final."""
        return self.start(i + 1) if i + 1 < self.count else self.length

    def tiles_touching(self, a: int, b: int) -> range:
        """Indices of the tiles overlapping raster coordinates ``[a, b)``."""
        first = max(0, math.floor((a + self.pad_before - self.tile) / self.stride) + 1)
        last = min(self.count - 1, math.floor((b - 1 + self.pad_before) / self.stride))
        return range(first, last + 1)

    @cached_property
    def weights(self) -> np.ndarray:
        return weight_ramp(self.tile, self.overlap)

    @cached_property
    def weight_sum(self) -> np.ndarray:
        """Total blend weight each raster coordinate receives (all > 0)."""
        total = np.zeros(self.padded_length, dtype=np.float64)
        for i in range(self.count):
            total[i * self.stride : i * self.stride + self.tile] += self.weights
        return total[self.pad_before : self.pad_before + self.length].astype(np.float32)


@dataclass(frozen=True)
class ColumnBlock:
    """A vertical band of the raster processed on its own, so memory does not grow with width.

    The block owns raster columns ``[x0, x1)``; it predicts every tile column overlapping them
    (``tiles``), whose pixels span ``[acc_x0, acc_x0 + acc_width)``. Tiles at a block border are
    predicted by both neighbours, and each keeps only the columns it owns, so the result is the
    same as processing the whole width at once.
    """

    x0: int
    x1: int
    tiles: range
    acc_x0: int
    acc_width: int


@dataclass(frozen=True)
class TileGrid:
    """2-D tiling of a ``height x width`` raster (separable: rows and columns tile independently)."""

    height: int
    width: int
    tile: int
    overlap: int
    align: int = 1

    @cached_property
    def rows(self) -> AxisTiling:
        return AxisTiling(self.height, self.tile, self.overlap, self.align)

    @cached_property
    def cols(self) -> AxisTiling:
        return AxisTiling(self.width, self.tile, self.overlap, self.align)

    @property
    def tile_count(self) -> int:
        return self.rows.count * self.cols.count

    @cached_property
    def weights(self) -> np.ndarray:
        """2-D blend window ``(tile, tile)``: the outer product of the axis windows."""
        return np.outer(self.rows.weights, self.cols.weights).astype(np.float32)

    def weight_sum(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Total weight of raster pixels ``[y0:y1, x0:x1]`` (separable, so computed from the axes)."""
        return np.outer(self.rows.weight_sum[y0:y1], self.cols.weight_sum[x0:x1])

    def column_blocks(self, max_width: int, start: int = 0, stop: int | None = None) -> list[ColumnBlock]:
        """Split columns ``[start, stop)`` (default: all) into blocks of at most about ``max_width`` owned columns.

        Borders fall on multiples of :data:`OUTPUT_BLOCK` from ``start`` so that no output block is shared.
        """
        if max_width < self.tile:
            raise ValueError(f"max_width {max_width} must be at least one tile ({self.tile})")
        stop = self.width if stop is None else stop
        if not 0 <= start < stop <= self.width:
            raise ValueError(f"columns [{start}, {stop}) are not within the raster's {self.width}")
        n = max(1, math.ceil((stop - start) / max_width))
        owned = math.ceil(math.ceil((stop - start) / n) / OUTPUT_BLOCK) * OUTPUT_BLOCK
        blocks = []
        for x0 in range(start, stop, owned):
            x1 = min(stop, x0 + owned)
            tiles = self.cols.tiles_touching(x0, x1)
            acc_x0 = self.cols.start(tiles.start)
            acc_width = self.cols.start(tiles.stop - 1) + self.tile - acc_x0
            blocks.append(ColumnBlock(x0, x1, tiles, acc_x0, acc_width))
        return blocks

    def tile_window(self, row: int, col: int) -> tuple[int, int]:
        """Raster ``(y, x)`` of tile ``(row, col)``'s top-left pixel (may be negative)."""
        return self.rows.start(row), self.cols.start(col)

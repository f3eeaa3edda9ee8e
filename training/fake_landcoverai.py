"""A small fake LandCover.ai v1 download, in the exact official layout, for proving the pipeline without the data.

Layout written (as the official archive unpacks)::

    OUT/images/M-33-20-D-c-4-2.tif   RGB uint8, EPSG:2180, 0.25 m or 0.5 m per pixel
    OUT/masks/M-33-20-D-c-4-2.tif    1 band uint8, class ids 0..4 (same size and georeferencing)
    OUT/train.txt, val.txt, test.txt 512 px tile names ``NAME_k``, one a line

Names are Polish 1:5000 map-sheet names like the real ones (``M-33-20-D-c-4-2``, ``N-34-97-D-c-2-4``).
Tile numbering follows the official ``split.py``: each orthophoto is walked in 512 px steps row by row,
``k`` counts *every* grid position (partial tiles at the right and bottom edges too), and only full
512 x 512 tiles are written, so the lists name only full tiles but their ``k`` can skip numbers.
The real release has 41 orthophotos (33 at 25 cm, ca. 9000 x 9500 px; 8 at 50 cm, ca. 4200 x 4700 px)
and splits tiles at random about 70/15/15; this imitation keeps those proportions at a small size.
Content is drawn by :mod:`training.synthetic` at 0.25 m/px; 50 cm orthophotos are drawn at twice the
size and downsampled, so objects keep their real-world size, and cover the same ground as a 25 cm one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import TrainingError
from training.synthetic import ClassShares, generate_scene, write_geotiff

TILE = 512
SPLITS = ("train", "val", "test")
SPLIT_SHARES = (0.7, 0.15, 0.15)
NAME_PATTERN = r"^[MN]-3[3-5]-\d{1,3}-[A-D]-[a-d]-[1-4]-[1-4]$"


@dataclass(frozen=True)
class FakeParams:
    """How many orthophotos, their base side in pixels (25 cm ones are ``size``..1.5 x ``size``), the seed."""

    orthophotos: int = 4
    size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.orthophotos < 2:
            raise TrainingError(f"--orthophotos must be >= 2 (one at 25 cm, one at 50 cm), got {self.orthophotos}")
        if self.size < 2 * TILE:
            raise TrainingError(f"--size must be >= {2 * TILE} pixels (a 50 cm orthophoto is half as wide and "
                                f"needs one {TILE} px tile), got {self.size}")


def tile_grid(height: int, width: int, tile: int = TILE) -> tuple[int, int]:
    """Rows and columns of the official ``split.py`` grid (partial edge tiles counted)."""
    return math.ceil(height / tile), math.ceil(width / tile)


def full_tiles(height: int, width: int, tile: int = TILE) -> list[int]:
    """The ``k`` of every full tile the official ``split.py`` writes, in its order."""
    rows, cols = tile_grid(height, width, tile)
    return [r * cols + c for r in range(rows) for c in range(cols)
            if (r + 1) * tile <= height and (c + 1) * tile <= width]


def sheet_name(rng: np.random.Generator) -> str:
    """A random Polish 1:5000 map-sheet name, e.g. ``N-34-97-D-c-2-4``."""
    return (f"{rng.choice(['M', 'N'])}-{rng.choice([33, 34])}-{rng.integers(1, 145)}-{rng.choice(list('ABCD'))}-"
            f"{rng.choice(list('abcd'))}-{rng.integers(1, 5)}-{rng.integers(1, 5)}")


def _downsample(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Halve the resolution: 2 x 2 mean for the image, the top-left pixel for the mask (no new classes)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    img = image[:h, :w].astype(np.uint16).reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    return np.round(img).astype(np.uint8), np.ascontiguousarray(mask[:h:2, :w:2])


def generate_fake_landcoverai(
    out_dir: Path, params: FakeParams, progress: Callable[[int, int, str], None] | None = None
) -> dict[str, list[str]]:
    """Write the fake download into ``out_dir``; return the split lists (``{"train": [NAME_k, ...], ...}``)."""
    from rasterio.transform import from_origin

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([params.seed, 41])
    names: list[str] = []
    while len(names) < params.orthophotos:
        name = sheet_name(rng)
        if name not in names:
            names.append(name)
    # Real ratio 33:8 of 25 cm to 50 cm; at least one of each.
    n50 = max(1, round(params.orthophotos * 8 / 41))
    gsds = [0.5 if i < n50 else 0.25 for i in range(params.orthophotos)]
    rng.shuffle(gsds)
    tiles: list[str] = []
    for i, (name, gsd) in enumerate(zip(names, gsds, strict=True)):
        scene_rng = np.random.default_rng([params.seed, 41, i])
        # Ground size of a 25 cm orthophoto of size..1.5*size px; a 50 cm one covers it with half the pixels.
        h25, w25 = (int(v) for v in scene_rng.integers(params.size, params.size * 3 // 2 + 1, 2))
        image, mask = generate_scene(scene_rng, max(h25, w25), ClassShares())
        image, mask = image[:h25, :w25], mask[:h25, :w25]
        if gsd == 0.5:
            image, mask = _downsample(image, mask)
        # PL-1992 (EPSG:2180) coordinates inside Poland, snapped to whole metres.
        x0, y0 = float(scene_rng.integers(200_000, 850_000)), float(scene_rng.integers(150_000, 770_000))
        transform = from_origin(x0, y0, gsd, gsd)
        write_geotiff(out_dir / "images" / f"{name}.tif", np.ascontiguousarray(image), transform)
        write_geotiff(out_dir / "masks" / f"{name}.tif", mask, transform)
        tiles += [f"{name}_{k}" for k in full_tiles(*mask.shape)]
        if progress:
            progress(i + 1, params.orthophotos, name)
    order = rng.permutation(len(tiles))
    n_val = max(1, round(len(tiles) * SPLIT_SHARES[1]))
    n_test = max(1, round(len(tiles) * SPLIT_SHARES[2]))
    if len(tiles) < n_val + n_test + 1:
        raise TrainingError(f"only {len(tiles)} tiles of {TILE} px; use a larger --size")
    chosen = [tiles[j] for j in order]
    lists = {"val": chosen[:n_val], "test": chosen[n_val:n_val + n_test], "train": chosen[n_val + n_test:]}
    for split in SPLITS:
        (out_dir / f"{split}.txt").write_text("".join(f"{t}\n" for t in lists[split]))
    return {split: lists[split] for split in SPLITS}

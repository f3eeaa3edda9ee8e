"""The input layout (LandCover.ai v1): ``DATA/images/NAME.tif`` beside ``DATA/masks/NAME.tif``.

Checks that fail here do so with a :class:`TrainingError` naming the file and the fix, before any
long-running step starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import NUM_CLASSES
from training.errors import TrainingError

IMAGE_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Orthophoto:
    """One orthophoto and its mask."""

    name: str
    image: Path
    mask: Path


def list_orthophotos(data_dir: Path) -> list[Orthophoto]:
    """Pair ``images/*.tif`` with ``masks/*.tif`` by file name, sorted by name."""
    data_dir = Path(data_dir)
    images_dir, masks_dir = data_dir / "images", data_dir / "masks"
    if not images_dir.is_dir():
        raise TrainingError(
            f"{images_dir} does not exist; the data folder must hold images/*.tif and masks/*.tif "
            "(the LandCover.ai layout, or make one with 'python -m training synthetic DIR')"
        )
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise TrainingError(f"no .tif orthophotos in {images_dir}; put the orthophotos there as GeoTIFFs")
    pairs = []
    for image in images:
        mask = masks_dir / image.name
        if not mask.is_file():
            raise TrainingError(f"orthophoto {image.name} has no mask {mask}; add it or remove the orthophoto")
        pairs.append(Orthophoto(image.stem, image, mask))
    return pairs


def check_pair(ortho: Orthophoto, image_shape: tuple[int, int], mask_shape: tuple[int, int], bands: int) -> None:
    """Raise when image and mask do not match or the image has too few bands."""
    if image_shape != mask_shape:
        raise TrainingError(
            f"{ortho.name}: image is {image_shape[1]}x{image_shape[0]} px but its mask is "
            f"{mask_shape[1]}x{mask_shape[0]} px; image and mask must cover the same pixel grid"
        )
    if bands < 3:
        raise TrainingError(f"{ortho.image} has {bands} band(s); the models take RGB orthophotos (3 bands)")


def check_mask_values(mask: np.ndarray, where: str) -> None:
    """Raise when a mask holds class ids outside ``0..NUM_CLASSES-1``."""
    top = int(mask.max()) if mask.size else 0
    if top >= NUM_CLASSES:
        bad = np.unique(mask[mask >= NUM_CLASSES])[:5].tolist()
        raise TrainingError(
            f"{where}: mask values {bad} are outside 0..{NUM_CLASSES - 1} (background, building, woodland, "
            "water, road); remap the mask to the LandCover.ai class ids"
        )

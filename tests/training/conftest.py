"""Training test fixtures: tiny synthetic datasets made on the fly (no TensorFlow imported here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from training.fake_landcoverai import FakeParams, generate_fake_landcoverai
from training.synthetic import SyntheticParams, generate_dataset, write_geotiff

FAKE = FakeParams(orthophotos=3, size=1024, seed=5)

REPO = Path(__file__).resolve().parents[2]


def write_pair(root: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write one orthophoto + mask pair in the LandCover.ai layout."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    transform = from_origin(500_000, 400_000, 0.25, 0.25)
    write_geotiff(root / "images" / f"{name}.tif", image, transform)
    write_geotiff(root / "masks" / f"{name}.tif", mask, transform)


def coded_pair(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random image and mask whose red band encodes the row and green band the column (mod 256)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows % 256, cols % 256, rng.integers(0, 256, (height, width))], axis=-1).astype(np.uint8)
    mask = rng.integers(0, 5, (height, width)).astype(np.uint8)
    return image, mask


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 256 px synthetic scenes."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, SyntheticParams(orthophotos=4, size=256, seed=3))
    return root


@pytest.fixture
def coded_dir(tmp_path: Path) -> Path:
    """Two 200 x 300 px orthophotos (not a multiple of the patch size) with coded pixels."""
    for i, name in enumerate(("alpha", "beta")):
        write_pair(tmp_path / "data", name, *coded_pair(200, 300, seed=i))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The smoke config, shrunk further, run through every step (TensorFlow imported lazily here)."""
    from training.config import load_config
    from training.pipeline import run_pipeline

    work = tmp_path_factory.mktemp("run")
    config = load_config(
        REPO / "training" / "configs" / "smoke.yaml",
        [
            f"workdir={work}",
            "export.out=null",
            f"export.model_card={work}/card.md",
            "data.synthetic.orthophotos=3",
            "data.synthetic.size=128",
            "split.train=0.4",
            "split.val=0.3",
            "split.eval=0.3",
            "train.batch_size=2",
            "train.steps_per_epoch=1",
            "train.epochs=2",
        ],
    )
    summary = run_pipeline(config, say=lambda _m: None)
    return config, work, summary


@pytest.fixture(scope="session")
def fake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small imitation of the LandCover.ai v1 download (official layout, names, both pixel sizes, split lists)."""
    root = tmp_path_factory.mktemp("fake_landcoverai")
    generate_fake_landcoverai(root, FAKE)
    return root

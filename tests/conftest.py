"""Fixtures shared by every test package (no TensorFlow or QGIS imports here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the repo (CI copies it there) or ``$LANDCOVER_SHARED``."""
    env = os.environ.get("LANDCOVER_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """Folder of the real GeoTIFFs described in shared/fixtures/real/README.md."""
    path = shared_dir() / "fixtures" / "real"
    if not (path / "README.md").is_file():
        pytest.fail(f"real raster fixtures not found at {path}; put the project's shared/ folder beside the repo "
                    "or set LANDCOVER_SHARED")
    return path

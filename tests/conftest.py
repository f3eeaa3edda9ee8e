"""Fixtures shared by every test package (no TensorFlow or QGIS imports here)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DIR = REPO / "tests" / "data" / "real"  # the real GeoTIFFs, in the repository (see its README.md)


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """Folder of the real GeoTIFFs described in tests/data/real/README.md."""
    if not (REAL_DIR / "README.md").is_file():
        pytest.fail(f"real raster fixtures not found at {REAL_DIR}; they are part of the repository")
    return REAL_DIR

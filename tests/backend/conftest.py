"""Backend test fixtures: an exact identity model and small rasters."""

from __future__ import annotations

import numpy as np
import pytest

from backend.bundle import ModelBundle


class IdentityRuntime:
    """A fake network whose output depends only on each pixel: class = red value mod classes.

    Every tile that sees a pixel predicts the same one-hot vector for it, so any error in window
    placement, padding, blending or writing shows up as a wrong class.
    """

    name = "identity"

    def __init__(self, num_classes: int = 5) -> None:
        self.num_classes = num_classes
        self.calls: list[int] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        red = np.rint(batch[..., 0] * 255).astype(np.int64)
        return np.eye(self.num_classes, dtype=np.float32)[red % self.num_classes]


def expected_classes(rgb: np.ndarray, num_classes: int = 5) -> np.ndarray:
    return (rgb[0].astype(np.int64) % num_classes).astype(np.uint8)


@pytest.fixture
def identity() -> IdentityRuntime:
    return IdentityRuntime()


@pytest.fixture
def bundle() -> ModelBundle:
    """LandCover.ai-style metadata (weights unused: tests pass the identity runtime)."""
    return ModelBundle(name="test-model", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25)

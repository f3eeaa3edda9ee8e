"""Test-time augmentation: a runtime whose prediction is the mean over transformed copies of each tile.

Each copy is transformed (mirrored and/or rotated), run through the network, and its class scores are
transformed back before averaging, so the result is aligned with the input tile and blends into the
overlapping-tile accumulator like any other prediction. A model that is equivariant to the transforms
(e.g. one deciding pixel by pixel) gives exactly its plain prediction; a real network gives a smoother,
usually more accurate one, at ``TTA_PASSES[mode]`` times the network's cost.
"""

from __future__ import annotations

import numpy as np

from backend.contract import TTA_MODES, TTA_PASSES
from backend.errors import InputError
from backend.runtime import Runtime

#: The dihedral group's elements as (quarter turns, mirrored first), per mode.
TRANSFORMS = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "d4": tuple((k, m) for m in (False, True) for k in range(4)),
}
assert {m: len(t) for m, t in TRANSFORMS.items()} == TTA_PASSES


def forward(batch: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """Mirror left-right (if asked), then rotate by ``turns`` quarter turns: ``(n, h, w, c)`` tiles."""
    x = batch[:, :, ::-1] if mirror else batch
    return np.rot90(x, turns, axes=(1, 2)) if turns else x


def inverse(batch: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """Undo :func:`forward` on the network's output."""
    y = np.rot90(batch, -turns, axes=(1, 2)) if turns else batch
    return y[:, :, ::-1] if mirror else y


def check_tta(mode: str) -> str:
    """``mode`` if it is one of :data:`~backend.contract.TTA_MODES`, else an :class:`InputError`."""
    if mode not in TTA_MODES:
        raise InputError(f"unknown test-time augmentation {mode!r}; use one of {', '.join(TTA_MODES)}")
    return mode


class TtaRuntime:
    """Wraps a runtime; ``predict`` averages its class scores over the mode's transforms."""

    def __init__(self, runtime: Runtime, mode: str) -> None:
        self.runtime, self.mode = runtime, check_tta(mode)
        self.transforms = TRANSFORMS[mode]
        self.name = getattr(runtime, "name", type(runtime).__name__)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[1] != batch.shape[2]:
            raise InputError(f"test-time augmentation needs square tiles, got {batch.shape[1]} x {batch.shape[2]}")
        total = None
        for turns, mirror in self.transforms:
            scores = inverse(self.runtime.predict(np.ascontiguousarray(forward(batch, turns, mirror))), turns, mirror)
            total = scores.astype(np.float32, copy=True) if total is None else np.add(total, scores, out=total)
        assert total is not None
        if len(self.transforms) > 1:
            total *= np.float32(1.0 / len(self.transforms))
        return total


def with_tta(runtime: Runtime, mode: str) -> Runtime:
    """``runtime`` itself for ``none``, else wrapped in :class:`TtaRuntime`."""
    return runtime if check_tta(mode) == "none" else TtaRuntime(runtime, mode)

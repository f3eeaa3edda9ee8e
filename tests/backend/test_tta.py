"""Test-time augmentation: exact inverse transforms, averaging over the transformed copies, and whole runs."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from backend.bundle import ModelBundle, OnnxExport
from backend.contract import TTA_MODES, TTA_PASSES
from backend.errors import InputError
from backend.inference import segment
from backend.tta import TRANSFORMS, TtaRuntime, check_tta, forward, inverse, with_tta
from tests.backend.conftest import IdentityRuntime, expected_classes
from tests.data.rasters import random_rgb, write_raster


def _tiles(n: int = 3, side: int = 16, channels: int = 4, seed: int = 0) -> np.ndarray:
    """Random float tiles: no symmetry, so every transform gives a different array."""
    return np.random.default_rng(seed).random((n, side, side, channels)).astype(np.float32)


def _pixels(n: int = 2, side: int = 32, seed: int = 1) -> np.ndarray:
    """Model input as the engine feeds it: 0..255 pixel values / 255."""
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3)).astype(np.float32) / np.float32(255)


class ColumnRuntime:
    """A fake network that is NOT equivariant: its scores depend on the column inside the tile."""

    name = "column"

    def __init__(self, num_classes: int = 5) -> None:
        self.num_classes = num_classes

    def predict(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        col = np.arange(w, dtype=np.float32)[None, None, :, None] / w
        k = np.arange(self.num_classes, dtype=np.float32)[None, None, None, :]
        return (batch[..., :1] * (k + 1) + col * (k - 2) ** 2).astype(np.float32)


class Counting:
    """Counts a runtime's predict calls and the tiles each one got."""

    def __init__(self, runtime) -> None:
        self.runtime, self.calls = runtime, []
        self.name = runtime.name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape)
        return self.runtime.predict(batch)


class CentreRuntime(IdentityRuntime):
    """The identity network whose output covers only the input's centre (``margin`` px less on each side)."""

    def __init__(self, margin: int) -> None:
        super().__init__()
        self.margin = margin

    def predict(self, batch: np.ndarray) -> np.ndarray:
        m = self.margin
        return super().predict(batch)[:, m:-m, m:-m]


# ------------------------------------------------------------------------------ the transforms

@pytest.mark.parametrize("mode", TTA_MODES)
def test_inverse_undoes_forward_for_every_transform(mode):
    x = _tiles()
    for turns, mirror in TRANSFORMS[mode]:
        y = forward(x, turns, mirror)
        assert y.shape == x.shape
        np.testing.assert_array_equal(inverse(y, turns, mirror), x)


def test_the_eight_d4_transforms_of_an_asymmetric_tile_are_distinct():
    x = _tiles(n=1)
    images = [forward(x, turns, mirror) for turns, mirror in TRANSFORMS["d4"]]
    assert len(images) == 8
    for i in range(8):
        for j in range(i + 1, 8):
            assert not np.array_equal(images[i], images[j]), (TRANSFORMS["d4"][i], TRANSFORMS["d4"][j])
    assert len(set(TRANSFORMS["d4"])) == 8


def test_forward_is_mirror_then_rotation_of_the_tile_axes():
    """Only the two spatial axes move: the batch order and the channels stay where they are."""
    x = _tiles(n=2)
    np.testing.assert_array_equal(forward(x, 0, True), x[:, :, ::-1, :])
    np.testing.assert_array_equal(forward(x, 1, False), np.stack([np.rot90(t) for t in x]))
    np.testing.assert_array_equal(forward(x, 3, True), np.stack([np.rot90(t[:, ::-1], 3) for t in x]))


def test_transform_counts_match_the_contract():
    assert {mode: len(t) for mode, t in TRANSFORMS.items()} == TTA_PASSES
    assert set(TRANSFORMS) == set(TTA_MODES)
    assert TRANSFORMS["none"] == ((0, False),)


def test_unknown_mode_is_an_input_error_naming_the_choices():
    with pytest.raises(InputError, match="none, flip, d4"):
        check_tta("bogus")
    with pytest.raises(InputError):
        TtaRuntime(IdentityRuntime(), "d8")


# ------------------------------------------------------------------------------ the runtime wrapper

@pytest.mark.parametrize("mode", ["flip", "d4"])
def test_an_equivariant_network_gives_exactly_its_plain_prediction(mode):
    """A pixel-wise network does not care about the transforms: a wrong inverse would rotate or mirror it."""
    batch = _pixels()
    plain = IdentityRuntime().predict(batch)
    tta = TtaRuntime(IdentityRuntime(), mode)
    out = tta.predict(batch)
    assert out.dtype == np.float32 and out.shape == plain.shape
    np.testing.assert_array_equal(out, plain)
    assert tta.name == "identity"


def test_flip_averages_the_plain_and_the_unmirrored_mirror_prediction():
    net = ColumnRuntime()
    batch = _pixels()
    plain = net.predict(batch)
    mirrored_back = net.predict(np.ascontiguousarray(batch[:, :, ::-1]))[:, :, ::-1]
    assert not np.allclose(plain, mirrored_back)  # the fake network really is position dependent
    out = TtaRuntime(net, "flip").predict(batch)
    np.testing.assert_allclose(out, (plain + mirrored_back) / 2, rtol=1e-6, atol=1e-6)
    assert not np.allclose(out, plain)


def test_d4_averages_all_eight_predictions_transformed_back():
    net = ColumnRuntime()
    batch = _pixels(n=1, side=16)
    expected = np.zeros((1, 16, 16, 5), np.float64)
    for mirror in (False, True):
        for turns in range(4):
            x = batch[:, :, ::-1] if mirror else batch
            x = np.stack([np.rot90(t, turns) for t in x])
            y = np.stack([np.rot90(t, -turns) for t in net.predict(np.ascontiguousarray(x))])
            expected += y[:, :, ::-1] if mirror else y
    np.testing.assert_allclose(TtaRuntime(net, "d4").predict(batch), expected / 8, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", TTA_MODES)
def test_each_mode_calls_the_network_once_per_transform_with_the_whole_batch(mode):
    inner = Counting(IdentityRuntime())
    runtime = with_tta(inner, mode)
    batch = _pixels(n=3)
    runtime.predict(batch)
    runtime.predict(batch[:1])
    assert inner.calls == [batch.shape] * TTA_PASSES[mode] + [batch[:1].shape] * TTA_PASSES[mode]


def test_none_is_the_runtime_itself():
    runtime = IdentityRuntime()
    assert with_tta(runtime, "none") is runtime
    assert isinstance(with_tta(runtime, "flip"), TtaRuntime)


def test_non_square_tiles_are_refused():
    with pytest.raises(InputError, match="square"):
        TtaRuntime(IdentityRuntime(), "flip").predict(np.zeros((1, 32, 16, 3), np.float32))


# ------------------------------------------------------------------------------ whole runs

@pytest.mark.parametrize("mode", ["flip", "d4"])
def test_segment_with_tta_reproduces_the_input_exactly(tmp_path, bundle, mode):
    rgb = random_rgb(131, 97, seed=5)
    src = write_raster(tmp_path / "in.tif", rgb)
    inner = Counting(IdentityRuntime())
    result = segment(src, tmp_path / "out.tif", bundle, overlap=16, batch_size=3, runtime=inner, tta=mode)
    with rasterio.open(result.output) as ds:
        np.testing.assert_array_equal(ds.read(1), expected_classes(rgb))
    assert result.tta == mode and result.done_event().tta == mode
    assert result.runtime == "identity"
    assert sum(shape[0] for shape in inner.calls) == TTA_PASSES[mode] * result.tiles_total


def test_unknown_tta_is_refused_before_any_output_exists(tmp_path, bundle):
    src = write_raster(tmp_path / "in.tif", random_rgb(40, 40))
    out_dir = tmp_path / "out"
    runtime = IdentityRuntime()
    with pytest.raises(InputError, match="test-time augmentation"):
        segment(src, out_dir / "out.tif", bundle, runtime=runtime, tta="bogus")
    assert not out_dir.exists()
    assert runtime.calls == []


@pytest.mark.parametrize("overlap", [0, 16])
def test_tta_with_context_margin_is_exact(tmp_path, overlap):
    """A network whose output is the input's centre: rotating the context-padded input rotates the centre."""
    margin = 8
    bundle = ModelBundle(name="centre", architecture="Unet", backbone="resnet18", tile_size=64, gsd_m=0.25,
                         onnx=OnnxExport(file=tmp_path / "unused.onnx", sha256="0" * 64, context_margin=margin))
    assert bundle.input_tile == 80
    rgb = random_rgb(113, 151, seed=9)
    src = write_raster(tmp_path / "in.tif", rgb)
    inner = Counting(CentreRuntime(margin))
    result = segment(src, tmp_path / "out.tif", bundle, overlap=overlap, batch_size=4, runtime=inner, tta="d4")
    with rasterio.open(result.output) as ds:
        np.testing.assert_array_equal(ds.read(1), expected_classes(rgb))
    assert {shape[1:3] for shape in inner.calls} == {(80, 80)}  # every tile with its context
    assert sum(shape[0] for shape in inner.calls) == 8 * result.tiles_total

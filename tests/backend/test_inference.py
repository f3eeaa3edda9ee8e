"""The streaming engine, proved exact with an identity model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from backend.errors import LandcoverError
from backend.inference import segment
from backend.outputs import NODATA
from backend.raster_io import Window
from tests.backend.conftest import IdentityRuntime, expected_classes
from tests.data.rasters import random_rgb, write_raster


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.profile, src


@pytest.mark.parametrize(
    "height,width,overlap,batch,block",
    [
        (200, 333, 8, 4, 16384),   # non-square, edge tiles on both axes
        (40, 25, 8, 4, 16384),     # smaller than one tile
        (1, 1, 0, 1, 16384),       # a single pixel
        (256, 256, 0, 3, 16384),   # exact multiple, no overlap
        (190, 600, 32, 5, 256),    # maximal overlap, several column blocks
        (300, 70, 16, 9, 16384),   # narrow: one batch spans several tile rows
    ],
)
def test_identity_model_reproduces_the_input_exactly(tmp_path, bundle, height, width, overlap, batch, block):
    rgb = random_rgb(height, width, seed=height + width)
    src = write_raster(tmp_path / "in.tif", rgb)
    result = segment(src, tmp_path / "out.tif", bundle, overlap=overlap, batch_size=batch,
                     runtime=IdentityRuntime(), max_block_width=block)
    out, profile, _ = _read(result.output)
    assert out.shape == (height, width)
    np.testing.assert_array_equal(out, expected_classes(rgb))
    assert result.tiles_predicted == result.tiles_total


def test_batches_are_full_except_the_last(tmp_path, bundle):
    src = write_raster(tmp_path / "in.tif", random_rgb(300, 300))
    runtime = IdentityRuntime()
    result = segment(src, tmp_path / "out.tif", bundle, overlap=8, batch_size=4, runtime=runtime)
    assert sum(runtime.calls) == result.tiles_total
    assert all(n == 4 for n in runtime.calls[:-1])


def test_output_keeps_grid_and_carries_style_and_areas(tmp_path, bundle):
    rgb = random_rgb(100, 120)
    src = write_raster(tmp_path / "in.tif", rgb, pixel_size=0.5)
    result = segment(src, tmp_path / "out.tif", bundle, runtime=IdentityRuntime())
    with rasterio.open(src) as a, rasterio.open(result.output) as b:
        assert b.crs == a.crs and b.transform == a.transform
        assert b.nodata == NODATA and b.dtypes[0] == "uint8"
        assert b.colormap(1)[2] == (38, 115, 0, 255)
        assert b.tags(1)["CLASS_2"] == "woodland"
        assert b.compression.name.lower() == "deflate"
    qml = (tmp_path / "out.qml").read_text()
    assert 'label="woodland"' in qml and 'type="paletted"' in qml
    areas = json.loads((tmp_path / "out.areas.json").read_text())
    counts = np.bincount(expected_classes(rgb).ravel(), minlength=5)
    assert [c["pixels"] for c in areas["classes"]] == counts.tolist()
    assert areas["pixel_area_m2"] == pytest.approx(0.25)
    assert areas["classes"][1]["area_m2"] == pytest.approx(counts[1] * 0.25)
    assert sum(c["percent"] for c in areas["classes"]) == pytest.approx(100, abs=0.01)
    csv_lines = (tmp_path / "out.areas.csv").read_text().splitlines()
    assert csv_lines[0] == "id,name,pixels,area_m2,percent" and len(csv_lines) == 6
    assert "woodland" in (tmp_path / "out.tif.aux.xml").read_text()


def test_nodata_and_alpha_become_output_nodata(tmp_path, bundle):
    rgb = random_rgb(150, 170)
    rgb[:, :30, :] = 0  # top band of nodata
    src = write_raster(tmp_path / "nd.tif", rgb, nodata=0)
    result = segment(src, tmp_path / "nd_out.tif", bundle, runtime=IdentityRuntime())
    out, _, _ = _read(result.output)
    assert (out[:30] == NODATA).all()
    valid = ~(rgb == 0).all(axis=0)
    np.testing.assert_array_equal(out[valid], expected_classes(rgb)[valid])
    assert result.areas.nodata_pixels == int((~valid).sum())

    alpha = np.full((1, 150, 170), 255, np.uint8)
    alpha[0, :, 100:] = 0
    src = write_raster(tmp_path / "rgba.tif", np.concatenate([random_rgb(150, 170), alpha]), alpha=True)
    out, _, _ = _read(segment(src, tmp_path / "rgba_out.tif", bundle, runtime=IdentityRuntime()).output)
    assert (out[:, 100:] == NODATA).all() and (out[:, :100] != NODATA).all()


def test_fully_masked_tiles_are_not_predicted(tmp_path, bundle):
    rgb = random_rgb(64, 640)
    rgb[:, :, 200:] = 0
    src = write_raster(tmp_path / "in.tif", rgb, nodata=0)
    result = segment(src, tmp_path / "out.tif", bundle, overlap=0, runtime=IdentityRuntime())
    assert result.tiles_total == 10 and result.tiles_predicted == 4


def test_confidence_raster_is_the_blended_top_probability(tmp_path, bundle):
    class Soft(IdentityRuntime):
        def predict(self, batch):
            p = super().predict(batch) * 0.6 + 0.4 / self.num_classes
            return p.astype(np.float32)

    src = write_raster(tmp_path / "in.tif", random_rgb(120, 90))
    result = segment(src, tmp_path / "out.tif", bundle, overlap=16, runtime=Soft(),
                     confidence_path=tmp_path / "conf.tif")
    conf, profile, _ = _read(result.confidence)
    np.testing.assert_allclose(conf, 0.6 + 0.4 / 5, atol=1e-5)
    assert profile["dtype"] == "float32"


def test_window_segments_only_that_area_on_the_windows_grid(tmp_path, bundle):
    rgb = random_rgb(200, 200)
    src = write_raster(tmp_path / "in.tif", rgb)
    result = segment(src, tmp_path / "out.tif", bundle, window=Window(50, 20, 100, 70), runtime=IdentityRuntime())
    out, _, dst = _read(result.output)
    assert out.shape == (70, 100)
    np.testing.assert_array_equal(out, expected_classes(rgb)[20:90, 50:150])
    with rasterio.open(src) as s:
        assert dst.transform.c == pytest.approx(s.transform.c + 50 * 0.25)
        assert dst.transform.f == pytest.approx(s.transform.f - 20 * 0.25)


class _Boom(IdentityRuntime):
    def __init__(self, after: int, exc: BaseException) -> None:
        super().__init__()
        self.after, self.exc = after, exc

    def predict(self, batch):
        if len(self.calls) >= self.after:
            raise self.exc
        return super().predict(batch)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("worker died")])
def test_an_interrupted_run_leaves_no_output_at_all(tmp_path, bundle, exc):
    src = write_raster(tmp_path / "in.tif", random_rgb(300, 300))
    out_dir = tmp_path / "out"
    with pytest.raises(type(exc)):
        segment(src, out_dir / "out.tif", bundle, batch_size=2, runtime=_Boom(3, exc),
                confidence_path=out_dir / "conf.tif")
    assert list(out_dir.iterdir()) == []


def test_an_interrupted_run_keeps_a_previous_result(tmp_path, bundle):
    src = write_raster(tmp_path / "in.tif", random_rgb(200, 200))
    segment(src, tmp_path / "out.tif", bundle, runtime=IdentityRuntime())
    before = (tmp_path / "out.tif").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        segment(src, tmp_path / "out.tif", bundle, batch_size=1, runtime=_Boom(2, KeyboardInterrupt()))
    assert (tmp_path / "out.tif").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.tif", "out.tif", "out.qml", "out.areas.csv", "out.areas.json", "out.tif.aux.xml"]
    )


def test_a_raster_without_valid_pixels_is_refused_and_writes_nothing(tmp_path, bundle):
    src = write_raster(tmp_path / "in.tif", np.zeros((3, 50, 50), np.uint8), nodata=0)
    with pytest.raises(LandcoverError, match="no valid pixels"):
        segment(src, tmp_path / "out" / "out.tif", bundle, runtime=IdentityRuntime())
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "kwargs,message",
    [({"overlap": 40}, "overlap"), ({"overlap": -1}, "overlap"), ({"batch_size": 0}, "batch-size")],
)
def test_bad_parameters_are_refused_before_any_work(tmp_path, bundle, kwargs, message):
    src = write_raster(tmp_path / "in.tif", random_rgb(10, 10))
    with pytest.raises(LandcoverError, match=message):
        segment(src, tmp_path / "out.tif", bundle, runtime=IdentityRuntime(), **kwargs)
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("name,message", [("out.png", "must be a GeoTIFF"), ("in.tif", "overwrite the input")])
def test_bad_output_names_are_refused(tmp_path, bundle, name, message):
    src = write_raster(tmp_path / "in.tif", random_rgb(10, 10))
    with pytest.raises(LandcoverError, match=message):
        segment(src, tmp_path / name, bundle, runtime=IdentityRuntime())


def test_a_full_disk_gives_a_clear_error_and_leaves_nothing(tmp_path, bundle, monkeypatch):
    import errno

    from backend import inference

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inference._AlignedWriter, "_write", full)
    src = write_raster(tmp_path / "in.tif", random_rgb(300, 300))
    out_dir = tmp_path / "out"
    with pytest.raises(LandcoverError, match="no space left on the disk while writing .*out.tif; free space"):
        segment(src, out_dir / "out.tif", bundle, runtime=IdentityRuntime())
    assert list(out_dir.iterdir()) == []

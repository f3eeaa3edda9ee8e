"""Building networks and the weights file format (TensorFlow: a few seconds each)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.bundle import ModelBundle
from backend.errors import LandcoverError
from backend.models import build_from_bundle, build_model, load_encoder_weights, load_weights, save_weights


@pytest.fixture(scope="module")
def unet():
    return build_model("Unet", "resnet18", 5)


@pytest.mark.slow
def test_float16_weights_round_trip_predicts_the_same_classes(tmp_path, unet):
    path = save_weights(unet, tmp_path / "w.weights.h5")
    bundle = ModelBundle(name="t", architecture="Unet", backbone="resnet18", weights=path)
    again = build_from_bundle(bundle)
    x = np.random.default_rng(0).random((1, 64, 64, 3), np.float32)
    a, b = unet(x).numpy(), again(x).numpy()
    assert np.abs(a - b).max() < 1e-2
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.99
    assert not list(tmp_path.glob("*.part*"))


@pytest.mark.slow
def test_float32_weights_round_trip_is_exact(tmp_path, unet):
    path = save_weights(unet, tmp_path / "w.h5", dtype="float32")
    other = build_model("Unet", "resnet18", 5)
    load_weights(other, path)
    for v1, v2 in zip(unet.weights, other.weights, strict=False):
        np.testing.assert_array_equal(v1.numpy(), v2.numpy())


@pytest.mark.slow
def test_weights_of_another_class_count_are_refused_naming_the_cause(tmp_path, unet):
    path = save_weights(unet, tmp_path / "w.h5")
    with pytest.raises(LandcoverError, match="5 outputs but the metadata lists 6 classes"):
        load_weights(build_model("Unet", "resnet18", 6), path)


@pytest.mark.slow
def test_weights_of_another_architecture_are_refused(tmp_path, unet):
    path = save_weights(unet, tmp_path / "w.h5")
    with pytest.raises(LandcoverError, match="does not match"):
        load_weights(build_model("Linknet", "resnet18", 5), path)


@pytest.mark.slow
def test_corrupt_weights_file_is_refused(tmp_path, unet):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n" + b"0" * 100)
    with pytest.raises(LandcoverError, match="truncated or corrupt .*not a weights file.*re-copy"):
        load_weights(unet, bad)


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(LandcoverError, match="unknown backbone 'resnet9'.*resnet18"):
        build_model("Unet", "resnet9", 5)


@pytest.mark.slow
def test_local_encoder_weights_are_loaded_into_the_encoder(tmp_path, unet):
    # A classification-style weights file: the encoder's layers saved by name (like ImageNet no-top files).
    from backend.tf_import import import_keras

    keras = import_keras()
    encoder = keras.Model(unet.input, unet.get_layer("relu1").output)
    path = tmp_path / "resnet18_encoder.h5"
    encoder.save_weights(str(path))
    fresh = build_model("Unet", "resnet18", 5, encoder_weights=path)
    np.testing.assert_array_equal(fresh.get_layer("conv0").get_weights()[0], unet.get_layer("conv0").get_weights()[0])
    assert not np.array_equal(fresh.get_layer("final_conv").get_weights()[0],
                              unet.get_layer("final_conv").get_weights()[0])
    with pytest.raises(LandcoverError, match="does not exist"):
        build_model("Unet", "resnet18", 5, encoder_weights=tmp_path / "nope.h5")
    with pytest.raises(LandcoverError, match="no layer of the model matched"):
        load_encoder_weights(build_model("Unet", "efficientnetb0", 5), path)


def test_imagenet_weights_without_network_give_an_actionable_message(monkeypatch, tmp_path):
    from backend.tf_import import import_keras

    keras = import_keras()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache: the download must be attempted

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(LandcoverError, match="no internet: pass a local encoder weights file"):
        build_model("Unet", "resnet18", 5, encoder_weights="imagenet")

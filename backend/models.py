"""Building segmentation-models networks and reading/writing their weights.

Weights are stored in a small HDF5 layout of our own (one dataset per model variable, in order,
with its name and shape), optionally as float16 to halve the bundle size. Loading checks every
shape against the network the metadata describes, so a bundle whose JSON does not match its
weights fails with a message instead of producing garbage. Plain Keras ``.h5`` weight files
(``model.save_weights``) are accepted too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from backend.bundle import ARCHITECTURES, ModelBundle, damage_report
from backend.contract import atomic_path
from backend.errors import ModelError
from backend.tf_import import import_segmentation_models, import_tensorflow

WEIGHTS_LAYOUT = "landcover-weights-1"


def available_backbones() -> list[str]:
    """Backbone names segmentation-models knows."""
    sm = import_segmentation_models()
    return sorted(sm.get_available_backbone_names())


def build_model(
    architecture: str,
    backbone: str,
    num_classes: int,
    input_bands: int = 3,
    encoder_weights: str | Path | None = None,
    tile_size: int | None = None,
) -> Any:
    """Build a softmax segmentation network with segmentation-models.

    Args:
        architecture: ``Unet``, ``FPN`` or ``Linknet``.
        backbone: any segmentation-models backbone, e.g. ``resnet18``.
        num_classes: number of output classes.
        input_bands: number of input channels.
        encoder_weights: None (random), ``"imagenet"`` (only if Keras already cached the file, since
            this machine cannot download), or a path to a local encoder ``.h5`` weights file.
        tile_size: fixed input size, or None for a fully convolutional ``(None, None, bands)`` input.
            FPN needs a fixed size divisible by 32 only when given.
    """
    sm = import_segmentation_models()
    if architecture not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}")
    names = sm.get_available_backbone_names()
    if backbone not in names:
        raise ModelError(f"unknown backbone {backbone!r}; use one of: {', '.join(sorted(names))}")
    local_weights: Path | None = None
    sm_weights: str | None = None
    if encoder_weights in (None, "", "none", "None"):
        sm_weights = None
    elif str(encoder_weights) == "imagenet":
        sm_weights = "imagenet"
    else:
        local_weights = Path(encoder_weights).expanduser()
        if not local_weights.is_file():
            raise ModelError(f"encoder weights file {local_weights} does not exist; pass an existing .h5 file")
    shape = (tile_size, tile_size, input_bands) if tile_size else (None, None, input_bands)
    cls = getattr(sm, architecture)
    kwargs: dict[str, Any] = {
        "classes": num_classes,
        "activation": "softmax",
        "encoder_weights": sm_weights,
        "input_shape": shape,
    }
    if sm_weights == "imagenet" and input_bands != 3:
        raise ModelError("ImageNet encoder weights need 3 input bands; use encoder_weights none for other counts")
    try:
        model = cls(backbone, **kwargs)
    except Exception as exc:  # sm/keras raise bare Exceptions for download failures
        if sm_weights == "imagenet":
            raise ModelError(
                f"ImageNet weights for {backbone} could not be downloaded ({type(exc).__name__}); this machine has no "
                "internet: pass a local encoder weights file (e.g. --encoder-weights resnet18_imagenet_1000_no_top.h5) "
                "or use encoder weights 'none'"
            ) from exc
        raise
    if local_weights is not None:
        load_encoder_weights(model, local_weights)
    return model


def load_encoder_weights(model: Any, path: Path) -> int:
    """Load a classification-model ``.h5`` (e.g. ImageNet ResNet without top) into the encoder by layer name.

    Returns the number of layers whose weights were set; raises when none matched.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            layer_names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("layer_names", [])]
            by_layer = {}
            for lname in layer_names:
                g = group[lname]
                wnames = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
                by_layer[lname] = [np.asarray(g[w]) for w in wnames]
    except (OSError, KeyError) as exc:
        raise ModelError(f"encoder weights file {path} is not a Keras .h5 weights file ({exc})") from exc
    matched = 0
    for layer in model.layers:
        values = by_layer.get(layer.name)
        if not values:
            continue
        current = layer.get_weights()
        if len(current) == len(values) and all(a.shape == b.shape for a, b in zip(current, values, strict=False)):
            layer.set_weights(values)
            matched += 1
    if matched == 0:
        raise ModelError(
            f"no layer of the model matched the encoder weights in {path}; is it for the same backbone?"
        )
    return matched


def save_weights(model: Any, path: Path, dtype: str = "float16") -> Path:
    """Write every model variable to ``path`` (HDF5), atomically, as ``dtype``."""
    return write_weights_file(path, ((var.name, np.asarray(var.numpy()).astype(dtype)) for var in model.weights))


def write_weights_file(path: Path, arrays: Iterable[tuple[str, np.ndarray]]) -> Path:
    """Write ``(variable name, array)`` pairs, in the model's variable order, in the layout :func:`load_weights`
    reads (HDF5, atomically). ``arrays`` may be a generator: each array is written as it comes, and an error it
    raises leaves no file behind."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["layout"] = WEIGHTS_LAYOUT
        group = f.create_group("weights")
        for i, (name, value) in enumerate(arrays):
            ds = group.create_dataset(f"{i:05d}", data=value, compression="gzip", compression_opts=4)
            ds.attrs["name"] = name
    return path


def load_weights(model: Any, path: Path) -> None:
    """Load weights written by :func:`save_weights` (or Keras ``save_weights`` .h5) and check every shape."""
    import h5py

    path = Path(path)
    damage = damage_report(path) if path.is_file() else None
    if damage:
        raise ModelError(f"weights file {path} is truncated or corrupt ({damage}); re-copy it from where the "
                         "model came from")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ModelError(
            f"weights file {path} cannot be read ({exc}); it is missing or corrupt, re-export it"
        ) from exc
    with f:
        if f.attrs.get("layout") != WEIGHTS_LAYOUT:
            f.close()
            _load_keras_weights(model, path)
            return
        group = f["weights"]
        keys = sorted(group.keys())
        variables = model.weights
        if len(keys) != len(variables):
            raise ModelError(
                f"weights file {path} holds {len(keys)} arrays but the model described by the bundle has "
                f"{len(variables)}; the metadata (architecture/backbone) does not match the weights"
            )
        values = []
        for key, var in zip(keys, variables, strict=False):
            arr = np.asarray(group[key])
            if tuple(arr.shape) != tuple(var.shape):
                raise ModelError(_shape_mismatch_message(path, group[key].attrs.get("name", key), arr.shape, var))
            values.append(arr.astype(var.dtype.as_numpy_dtype if hasattr(var.dtype, "as_numpy_dtype") else np.float32))
    model.set_weights(values)


def _shape_mismatch_message(path: Path, name: str, shape: tuple, var: Any) -> str:
    last = tuple(var.shape)
    hint = "the metadata (architecture, backbone, classes, input bands) does not match the weights"
    if len(last) == 4 and len(shape) == 4 and last[:3] == tuple(shape[:3]):
        hint = f"the weights have {shape[-1]} outputs but the metadata lists {last[-1]} classes"
    elif len(last) == 4 and len(shape) == 4 and last[2] != shape[2] and last[3] == shape[3]:
        hint = f"the weights take {shape[2]} input bands but the metadata says {last[2]}"
    return f"weights file {path}: array {name} has shape {tuple(shape)}, the model expects {last}; {hint}"


def _load_keras_weights(model: Any, path: Path) -> None:
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise ModelError(
            f"weights file {path} does not fit the model described by the bundle ({exc}); "
            "check architecture, backbone, classes and input bands"
        ) from exc


def build_from_bundle(bundle: ModelBundle) -> Any:
    """The network a bundle describes, with its weights loaded (or seeded random weights if untrained)."""
    tf = import_tensorflow()
    if bundle.is_untrained:
        tf.keras.utils.set_random_seed(bundle.seed)
    model = build_model(bundle.architecture, bundle.backbone, bundle.num_classes, bundle.input_bands)
    if bundle.weights is not None or bundle.onnx is not None:
        if not bundle.has_weights:
            raise ModelError(
                f"model {bundle.name!r} has no TensorFlow weights in this installation (only its ONNX export: the "
                "plugin zip ships that alone); run it with the ONNX runtime (--runtime onnx or auto), or copy "
                f"{bundle.weights.name if bundle.weights else 'the .weights.h5 file'} beside {bundle.source}"
            )
        load_weights(model, bundle.weights)
    return model

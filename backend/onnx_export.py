"""Exporting a model bundle's Keras network to ONNX, stored inside the bundle.

``export_onnx`` converts with tf2onnx (opset 17) from the same tf-keras model the TensorFlow runtime
builds, writes ``<bundle dir>/<json stem>.onnx`` atomically, checks it against TensorFlow on a few
synthetic tiles, and records file, SHA-256, opset and layout in the bundle JSON.

Size: a U-Net-ResNet18 has 14.3 M parameters, 57 MB as float32. Bundles store their weights as
float16 (see :func:`backend.models.save_weights`), so by default (``weights_dtype="auto"``) every
weight tensor that float16 represents exactly is stored as float16 followed by a Cast to float32:
lossless, half the size, and ONNX Runtime folds the Casts away when it loads the model (the
optimised graph is identical, so speed is too). For that to stay lossless tf2onnx must not fold
BatchNormalization into the preceding convolution's weights (folded weights are no longer float16
values), so that one rewrite is switched off during conversion; ONNX Runtime does the same fusion in
float32 at load time. ``"float16"`` rounds every large weight (lossy: about 1e-3 in probability),
``"float32"`` stores everything as float32.

Deepness (``deepness=True``): the QGIS plugin feeds ``[N, bands, H, W]`` float32 tiles holding
``pixel / 255`` and then standardises them with ``standardization_mean``/``_std`` from the metadata;
it expects ``[N, classes, H, W]`` probabilities. The export therefore uses NCHW tensors (tf2onnx
inserts the transposes and cancels them against its own) and folds the bundle's preprocessing,
``(pixel / scale - mean) / std``, into those two metadata lists, so the network's input is exactly
the bundle's normalised input in both tools. Keys follow Deepness's "Adding metadata to ONNX model"
documentation: every value is JSON text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.bundle import ModelBundle, OnnxExport
from backend.contract import atomic_path, write_text_atomic
from backend.errors import DependencyError, InputError, ModelError
from backend.onnx_runtime import OnnxRuntime, file_sha256

DEFAULT_OPSET = 17
WEIGHTS_DTYPES = ("auto", "float16", "float32")
INPUT_NAME = "input"
# Tensors smaller than this stay float32: Casts for biases and BatchNorm vectors would save nothing.
_MIN_FP16_ELEMENTS = 1024
# Export is refused when ONNX and TensorFlow disagree on more pixels than this (issue 5: >= 99.9 % equal).
MIN_ARGMAX_AGREEMENT = 0.999


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote and how well it matches TensorFlow."""

    bundle: ModelBundle
    path: Path
    size_bytes: int
    float16_tensors: int
    float32_tensors: int
    max_prob_diff: float
    argmax_agreement: float

    def summary(self) -> str:
        assert self.bundle.onnx is not None
        return (
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB, opset {self.bundle.onnx.opset}, "
            f"{self.bundle.onnx.layout}{', Deepness metadata' if self.bundle.onnx.deepness else ''}; "
            f"weights: {self.float16_tensors} tensors float16, {self.float32_tensors} float32)\n"
            f"checked against TensorFlow: argmax agreement {100 * self.argmax_agreement:.3f} %, "
            f"largest probability difference {self.max_prob_diff:.1e}\n"
            f"recorded in {self.bundle.source} (sha256 {self.bundle.onnx.sha256[:16]}...)"
        )


def export_onnx(
    bundle: ModelBundle,
    *,
    deepness: bool = False,
    opset: int = DEFAULT_OPSET,
    weights_dtype: str = "auto",
    check_tiles: int = 2,
) -> ExportReport:
    """Convert ``bundle``'s network to ONNX inside the bundle and record it in the bundle JSON.

    Args:
        bundle: a saved bundle (JSON + weights file); untrained models cannot be exported.
        deepness: NCHW tensors plus the metadata the Deepness QGIS plugin reads.
        opset: ONNX opset (17 is what ONNX Runtime 1.31 and Deepness are tested with here).
        weights_dtype: ``auto`` (float16 where lossless), ``float16`` or ``float32``; see the module docstring.
        check_tiles: synthetic tiles run through both TensorFlow and ONNX Runtime after export.

    Returns:
        The updated bundle (already saved) and the check's figures.
    """
    if bundle.source is None or bundle.weights is None:
        raise ModelError(
            f"model {bundle.name!r} is not a saved bundle (untrained models have no weights file); "
            "export a bundle .json with a weights file, e.g. one written by 'make train'"
        )
    if weights_dtype not in WEIGHTS_DTYPES:
        raise InputError(f"--weights-dtype {weights_dtype!r} is not one of {', '.join(WEIGHTS_DTYPES)}")
    if not 13 <= opset <= 20:
        raise InputError(f"--opset {opset} is outside 13..20 (tf2onnx 1.17 and ONNX Runtime 1.31); use 17")
    onnx, tf2onnx = _import_converters()
    from backend.models import build_from_bundle
    from backend.tf_import import import_tensorflow

    tf = import_tensorflow()
    model = build_from_bundle(bundle)
    t = bundle.tile_size
    spec = (tf.TensorSpec([None, t, t, bundle.input_bands], tf.float32, name=INPUT_NAME),)
    nchw = {"inputs_as_nchw": [INPUT_NAME], "outputs_as_nchw": list(model.output_names)} if deepness else {}
    with _keep_batchnorm_unfolded(enabled=weights_dtype == "auto"):
        try:
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, **nchw)
        except Exception as exc:  # tf2onnx raises assorted errors for unsupported graphs
            raise ModelError(
                f"tf2onnx could not convert {bundle.architecture}/{bundle.backbone} ({type(exc).__name__}: "
                f"{str(exc)[:200]}); use --runtime tensorflow for this model"
            ) from exc
    _name_batch_dimension(proto)
    _use_asymmetric_nearest_resize(proto)
    n16, n32 = _store_weights(proto, onnx, weights_dtype)
    proto.producer_name = "landcover backend (tf2onnx)"
    _set_metadata(proto, {"landcover_bundle": bundle.name, "landcover_layout": "NCHW" if deepness else "NHWC"})
    if deepness:
        _set_metadata(proto, deepness_metadata(bundle))
    onnx.checker.check_model(proto)

    path = bundle.source.with_suffix(".onnx")
    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        info = OnnxExport(
            file=tmp,
            sha256=file_sha256(tmp),
            opset=opset,
            layout="NCHW" if deepness else "NHWC",
            deepness=deepness,
            weights_sha256=file_sha256(bundle.weights),
        )
        # Check the file before it replaces a working export.
        diff, agreement = _compare_with_tensorflow(model, OnnxRuntime(replace(bundle, onnx=info)), bundle, check_tiles)
        if agreement < MIN_ARGMAX_AGREEMENT:
            raise ModelError(
                f"the ONNX export disagrees with TensorFlow on {100 * (1 - agreement):.2f} % of pixels "
                f"(largest probability difference {diff:.1e}); export with --weights-dtype float32"
            )
    updated = replace(bundle, onnx=replace(info, file=path))
    _record_in_json(bundle.source, updated.onnx)
    return ExportReport(updated, path, path.stat().st_size, n16, n32, diff, agreement)


def _record_in_json(json_path: Path, info: OnnxExport | None) -> None:
    """Set the ``onnx`` entry of the bundle JSON, keeping every other key as written (atomic replace)."""
    assert info is not None
    data = json.loads(json_path.read_text())
    data["onnx"] = info.to_dict()
    write_text_atomic(json_path, json.dumps(data, indent=2) + "\n")


def deepness_metadata(bundle: ModelBundle) -> dict[str, Any]:
    """The ONNX metadata Deepness reads, as Python values (each is stored as JSON text).

    Deepness computes ``(pixel / 255 - standardization_mean) / standardization_std``; the bundle's
    model wants ``(pixel / scale - mean) / std``. Equal when mean' = mean * scale / 255 and
    std' = std * scale / 255 (identity for the usual scale 255).
    """
    k = bundle.preprocessing.scale / 255.0
    overlap_percent = int(round(100 * bundle.overlap / bundle.tile_size))
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(c.id): c.name for c in bundle.classes},
        "tiles_size": bundle.tile_size,
        # Deepness's documentation says "tiles_size"; its model loader reads "tile_size". Write both.
        "tile_size": bundle.tile_size,
        "tiles_overlap": overlap_percent,
        "standardization_mean": [m * k for m in bundle.preprocessing.mean],
        "standardization_std": [s * k for s in bundle.preprocessing.std],
    }
    if bundle.gsd_m is not None:
        meta["resolution"] = round(bundle.gsd_m * 100.0, 6)  # centimetres per pixel
    return meta


def _import_converters() -> tuple[Any, Any]:
    from backend.tf_import import import_tensorflow

    import_tensorflow()  # tf2onnx imports TensorFlow: configure it for tf-keras first
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise DependencyError(
            f"ONNX export needs tf2onnx and onnx ({exc}); install them with "
            "'.venv/bin/pip install tf2onnx==1.17.0 onnx==1.23.2' (or 'make setup')"
        ) from exc
    return onnx, tf2onnx


@contextlib.contextmanager
def _keep_batchnorm_unfolded(enabled: bool) -> Iterator[None]:
    """Switch off tf2onnx's Conv+BatchNormalization folding for one conversion (see the module docstring).

    tf2onnx has no option for it, so the rewrite is taken out of its registry and put back after.
    If tf2onnx's internals change the export still works, it just stores fewer tensors as float16.
    """
    registry: dict | None = None
    key = ("Conv", "BatchNormalization")
    if enabled:
        with contextlib.suppress(ImportError, AttributeError):
            from tf2onnx.optimizer import back_to_back_optimizer

            registry = back_to_back_optimizer._func_map
    handler = registry.pop(key, None) if registry is not None else None
    try:
        yield
    finally:
        if registry is not None and handler is not None:
            registry[key] = handler


def _name_batch_dimension(proto: Any) -> None:
    """Call the free batch dimension "batch" instead of tf2onnx's generated name (tools display it)."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _use_asymmetric_nearest_resize(proto: Any) -> int:
    """Rewrite tf2onnx's nearest-neighbour upsampling to the equivalent form ONNX Runtime runs fastest.

    Keras ``UpSampling2D`` becomes Resize(nearest, floor, ``tf_half_pixel_for_nn``). For integer scale
    factors s, floor((x + 0.5) / s) == floor(x / s), so ``asymmetric`` gives bit-identical output; but
    ONNX Runtime only keeps ``asymmetric`` resizes in its blocked (NCHWc) layout, and otherwise converts
    every decoder stage out of and back into that layout (measured ~20 % of a U-Net's time). The old
    mode is also deprecated and makes ONNX Runtime print a warning per node. Returns the nodes changed.
    """
    from onnx import numpy_helper

    constants = {init.name: init for init in proto.graph.initializer}
    changed = 0
    for node in proto.graph.node:
        if node.op_type != "Resize" or len(node.input) < 3 or node.input[2] not in constants:
            continue
        attrs = {a.name: a for a in node.attribute}
        if (
            attrs.get("mode") is None or attrs["mode"].s != b"nearest"
            or attrs.get("nearest_mode") is None or attrs["nearest_mode"].s != b"floor"
            or attrs.get("coordinate_transformation_mode") is None
            or attrs["coordinate_transformation_mode"].s != b"tf_half_pixel_for_nn"
        ):
            continue
        scales = numpy_helper.to_array(constants[node.input[2]])
        if scales.size and np.all(scales >= 1) and np.all(scales == np.round(scales)):
            attrs["coordinate_transformation_mode"].s = b"asymmetric"
            changed += 1
    return changed


def _store_weights(proto: Any, onnx: Any, weights_dtype: str) -> tuple[int, int]:
    """Store large float32 initializers as float16 + Cast where ``weights_dtype`` says so.

    Returns the number of tensors stored as float16 and as float32.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts, converted, kept = [], 0, 0
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        value = numpy_helper.to_array(init)
        half = value.astype(np.float16)
        lossless = np.array_equal(half.astype(np.float32), value)
        if weights_dtype == "float32" or value.size < _MIN_FP16_ELEMENTS or (weights_dtype == "auto" and not lossless):
            kept += 1
            continue
        stored = numpy_helper.from_array(half, init.name + "_fp16")
        graph.initializer.remove(init)
        graph.initializer.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_to_float32"))
        converted += 1
    if casts:
        nodes = casts + list(graph.node)  # Casts first keeps the node list topologically sorted
        del graph.node[:]
        graph.node.extend(nodes)
    return converted, kept


def _set_metadata(proto: Any, values: dict[str, Any]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        prop = existing.get(key) or proto.metadata_props.add()
        prop.key = key
        prop.value = json.dumps(value)


def _compare_with_tensorflow(model: Any, runtime: OnnxRuntime, bundle: ModelBundle, tiles: int) -> tuple[float, float]:
    """Largest probability difference and argmax agreement on smooth synthetic tiles."""
    if tiles < 1:
        return 0.0, 1.0
    rng = np.random.default_rng(0)
    t = bundle.tile_size
    # Low-frequency noise looks more like imagery than white noise (regions, edges) and is deterministic.
    coarse = rng.random((tiles, t // 16, t // 16, bundle.input_bands)) * 255
    pixels = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2) + rng.normal(0, 8, (tiles, t, t, bundle.input_bands))
    x = bundle.preprocessing.apply(np.clip(pixels, 0, 255))
    expected = model(x, training=False).numpy()
    got = runtime.predict(x)
    return float(np.abs(expected - got).max()), float((expected.argmax(-1) == got.argmax(-1)).mean())

"""Inference runtimes: "a batch of normalised tiles in, class probabilities out".

The engine (:mod:`backend.inference`) does all tiling, blending and IO; a runtime only runs the
network. Keeping this seam narrow lets tests use an exact identity model and lets other runtimes
(e.g. ONNX Runtime) share every other line of code.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from backend.bundle import ModelBundle
from backend.contract import ONNX_ARCHITECTURE, RUNTIMES
from backend.errors import InputError


class Runtime(Protocol):
    """Runs a segmentation network on a batch of tiles."""

    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``(n, tile, tile, bands)`` float32 normalised input -> ``(n, tile, tile, classes)`` float32 probabilities.

        For a model with a context margin ``m`` (:attr:`ModelBundle.context_margin`) the input tiles are
        ``tile + 2m`` wide and the output covers their centre ``tile`` pixels.
        """
        ...


class TensorFlowRuntime:
    """The bundle's Keras model, called through one traced ``tf.function`` (no per-call predict() set-up)."""

    name = "tensorflow"

    def __init__(self, bundle: ModelBundle) -> None:
        from backend.models import build_from_bundle
        from backend.tf_import import import_tensorflow

        tf = import_tensorflow()
        _set_tensorflow_threads(tf)
        self.model = build_from_bundle(bundle)
        spec = tf.TensorSpec([None, bundle.tile_size, bundle.tile_size, bundle.input_bands], tf.float32)
        self._call = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._call(batch).numpy()


def _set_tensorflow_threads(tf) -> None:
    """Match TensorFlow's intra-op pool to the ONNX path's (see :class:`backend.onnx_runtime.OnnxRuntime`)."""
    from backend.onnx_runtime import inference_threads

    try:
        tf.config.threading.set_intra_op_parallelism_threads(inference_threads())
    except RuntimeError:
        pass  # TensorFlow already ran something in this process: its pool is fixed by now


def make_runtime(bundle: ModelBundle, kind: str = "auto") -> Runtime:
    """The runtime to use for ``bundle``.

    ``auto`` picks ONNX Runtime when the bundle's ONNX file is there and onnxruntime imports, else
    TensorFlow; ``onnx`` insists on ONNX Runtime and explains what is missing. A present but changed
    ONNX file is an error either way (it no longer matches the bundle).
    """
    if kind not in RUNTIMES:
        raise InputError(f"unknown runtime {kind!r}; use one of {', '.join(RUNTIMES)}")
    from backend.onnx_runtime import OnnxRuntime, onnxruntime_available

    if bundle.architecture == ONNX_ARCHITECTURE:
        # An imported ONNX model has no Keras network to build: ONNX Runtime or nothing.
        if kind == "tensorflow":
            raise InputError(f"model {bundle.name!r} is an imported ONNX model and runs only on ONNX Runtime; "
                             "use --runtime onnx or auto")
        return OnnxRuntime(bundle)
    has_onnx = bundle.onnx is not None and bundle.onnx.file.is_file()
    # An ONNX-only install (the plugin zip) goes to ONNX Runtime even without onnxruntime: its error names the fix.
    if kind == "onnx" or (kind == "auto" and has_onnx and (onnxruntime_available() or not bundle.has_weights)):
        return OnnxRuntime(bundle)
    return TensorFlowRuntime(bundle)

"""ONNX Runtime inference: the fast path, needing only onnxruntime and numpy (never TensorFlow).

The ONNX file sits in the bundle folder and is named, with its SHA-256, by the bundle JSON's ``onnx``
entry (written by :mod:`backend.onnx_export`). It takes the same normalised input as the Keras model;
its layout is NHWC, or NCHW for Deepness-compatible exports, and :class:`OnnxRuntime` transposes as
needed so the engine always sees NHWC.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

import numpy as np

from backend.bundle import ModelBundle
from backend.contract import ENV_THREADS, SETUP_HINT
from backend.errors import DependencyError, InputError, ModelError

_INSTALL_HINT = f"{SETUP_HINT}; or use --runtime tensorflow"


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime quietly, or explain how to install it."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DependencyError(f"onnxruntime is not installed ({exc}); {_INSTALL_HINT}") from exc
    # ORT logs warnings about harmless details of converted graphs on every session; errors still raise.
    ort.set_default_logger_severity(3)
    return ort


def onnxruntime_available() -> bool:
    """True when onnxruntime imports (used by ``--runtime auto``)."""
    try:
        import_onnxruntime()
    except DependencyError:
        return False
    return True


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inference_threads() -> int:
    """Threads for one inference call: ``$LANDCOVER_THREADS``, else the CPUs this process may run on."""
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InputError(f"LANDCOVER_THREADS={env!r} is not a whole number; set e.g. 4 or unset it") from None
        if n < 1:
            raise InputError(f"LANDCOVER_THREADS={n} must be at least 1; set it to e.g. 4 or unset it")
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def verified_onnx_path(bundle: ModelBundle) -> Path:
    """The bundle's ONNX file after checking it exists and matches the checksums in the bundle JSON."""
    fix = f"re-export it with 'python -m backend export-onnx {_model_arg(bundle)}' or use --runtime tensorflow"
    if bundle.onnx is None and bundle.is_untrained:
        raise ModelError(f"model {bundle.name!r} is untrained (random weights) and has no ONNX export; "
                             "use --runtime tensorflow or auto")
    if bundle.onnx is None:
        raise ModelError(f"model {bundle.name!r} has no ONNX export; create it with "
                             f"'python -m backend export-onnx {_model_arg(bundle)}' or use --runtime tensorflow")
    path = bundle.onnx.file
    if not path.is_file():
        raise ModelError(f"ONNX file {path} of model {bundle.name!r} is missing; {fix}")
    actual = file_sha256(path)
    if actual != bundle.onnx.sha256:
        raise ModelError(
            f"ONNX file {path} does not match the checksum in the bundle JSON (sha256 {actual[:12]}..., "
            f"expected {bundle.onnx.sha256[:12]}...): it was changed or corrupted; {fix}"
        )
    if bundle.onnx.weights_sha256 and bundle.weights is not None and bundle.weights.is_file():
        if file_sha256(bundle.weights) != bundle.onnx.weights_sha256:
            raise ModelError(
                f"ONNX file {path} was exported from other weights than {bundle.weights.name} (retrained?); {fix}"
            )
    return path


def _model_arg(bundle: ModelBundle) -> str:
    return str(bundle.source) if bundle.source else bundle.name


class OnnxRuntime:
    """The bundle's ONNX export run by ONNX Runtime on the CPU.

    Threading is set on purpose rather than left to defaults: intra-op threads = the usable cores
    (``$LANDCOVER_THREADS`` overrides, e.g. to leave cores for QGIS), because one convolution at a time
    is split across all cores; inter-op threads = 1 and sequential execution, because a U-Net/FPN is
    one chain of large ops with nothing useful to run beside it (extra pools only oversubscribe the
    cores); worker threads sleep instead of spinning between ops, because each op takes milliseconds
    (waking costs nothing measurable) while spinning threads steal the cores from QGIS, GDAL decoding
    and any other process, and a parallel op stalls whenever one of its spinning threads is descheduled
    (measured 1.2-1.6x slower per call while another process used one of 2 cores, and no faster on an
    idle machine); graph optimisation level "all" (constant
    folding, Conv+BatchNorm+ReLU fusion, AVX2/AVX-512 blocked layouts), done once at session creation.
    """

    name = "onnx"

    def __init__(self, bundle: ModelBundle, threads: int | None = None, spinning: bool = False) -> None:
        ort = import_onnxruntime()
        path = verified_onnx_path(bundle)
        assert bundle.onnx is not None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or inference_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelError(
                f"ONNX file {path} cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}); re-export it with "
                f"'python -m backend export-onnx {_model_arg(bundle)}' or use --runtime tensorflow"
            ) from exc
        self.layout = bundle.onnx.layout
        self.threads = options.intra_op_num_threads
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(self.session.get_outputs()) != 1:
            raise ModelError(f"ONNX file {path} must have one input and one output; re-export it")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        bands_dim = shape[1] if self.layout == "NCHW" else shape[-1]
        if len(shape) != 4 or bands_dim != bundle.input_bands:
            raise ModelError(
                f"ONNX file {path} takes input {shape} ({self.layout}) but the bundle describes "
                f"{bundle.input_bands} bands; re-export it with 'python -m backend export-onnx {_model_arg(bundle)}'"
            )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``(n, tile, tile, bands)`` float32 normalised input -> ``(n, tile, tile, classes)`` probabilities."""
        x = np.asarray(batch, dtype=np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
        if self.layout == "NCHW":
            out = out.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(out, dtype=np.float32)

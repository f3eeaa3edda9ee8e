"""ONNX Runtime inference: the fast path, needing only onnxruntime and numpy (never TensorFlow).

The ONNX file sits in the bundle folder and is named, with its SHA-256, by the bundle JSON's ``onnx``
entry (written by :mod:`backend.onnx_export`, or by :mod:`backend.deepness` for imported models). It
takes the same normalised input as the Keras model; its layout is NHWC, or NCHW for Deepness-compatible
exports, and :class:`OnnxRuntime` transposes as needed so the engine always sees NHWC. Imported models
may encode their classes differently (sigmoid, class ids, several outputs, a fixed batch, an output
covering only the tile's centre): :class:`OutputReadout` turns each into per-class scores.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from backend.bundle import OUTPUT_KINDS, ModelBundle, damage_report
from backend.contract import ENV_THREADS, ONNX_ARCHITECTURE, SETUP_HINT
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
    if bundle.architecture == ONNX_ARCHITECTURE:
        fix = f"add the model again with 'python -m backend models add SOURCE --name {bundle.name} --replace'"
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
        damage = damage_report(path)
        if damage:
            raise ModelError(f"ONNX file {path} of model {bundle.name!r} is truncated or corrupt ({damage}); "
                             f"re-copy it (or {fix})")
        raise ModelError(
            f"ONNX file {path} does not match the checksum in the bundle JSON (sha256 {actual[:12]}..., "
            f"expected {bundle.onnx.sha256[:12]}...): it was changed or corrupted; {fix}"
        )
    if bundle.onnx.weights_sha256 and bundle.weights is not None and bundle.weights.is_file():
        if file_sha256(bundle.weights) != bundle.onnx.weights_sha256:
            damage = damage_report(bundle.weights)
            if damage:
                raise ModelError(f"weights file {bundle.weights} of model {bundle.name!r} is truncated or corrupt "
                                 f"({damage}); re-copy it from where the model came from")
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
        self.readout = OutputReadout.for_bundle(bundle)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"ONNX file {path} has {len(inputs)} inputs; Landcover feeds one image tensor")
        if bundle.onnx.output >= len(outputs):
            names = ", ".join(f"{i}: {o.name} {o.shape}" for i, o in enumerate(outputs))
            raise ModelError(f"ONNX file {path} has no output #{bundle.onnx.output} (its outputs are {names}); "
                             f"re-add the model with --output 0..{len(outputs) - 1}")
        self.input_name = inputs[0].name
        self.output_name = outputs[bundle.onnx.output].name
        self.fixed_batch = bundle.onnx.fixed_batch
        shape = inputs[0].shape
        bands_dim = shape[1] if self.layout == "NCHW" else shape[-1]
        if len(shape) != 4 or bands_dim != bundle.input_bands:
            raise ModelError(
                f"ONNX file {path} takes input {shape} ({self.layout}) but the bundle describes "
                f"{bundle.input_bands} bands; re-export it with 'python -m backend export-onnx {_model_arg(bundle)}'"
            )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``(n, in, in, bands)`` float32 normalised input -> ``(n, out, out, classes)`` class scores.

        ``in`` is the bundle's input tile, ``out`` its tile size (smaller by the context margins).
        A graph with a fixed batch size is fed exactly that many tiles per call.
        """
        x = np.asarray(batch, dtype=np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        if not self.fixed_batch:
            raw = self._run(x)
        else:
            raw = np.concatenate([self._run(chunk)[: len(x) - i] for i, chunk in self._fixed_chunks(x)])
        return self.readout.scores(raw, self.layout)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0])

    def _fixed_chunks(self, x: np.ndarray):
        """``(start, chunk)`` of exactly ``fixed_batch`` tiles; the last is padded with copies of its last tile."""
        k = int(self.fixed_batch or 1)
        for i in range(0, len(x), k):
            chunk = x[i : i + k]
            if len(chunk) < k:  # the graph accepts no other batch size: repeat a tile, drop its output later
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], k - len(chunk), axis=0)])
            yield i, chunk


@dataclass(frozen=True)
class OutputReadout:
    """Turns the chosen ONNX output into the per-class scores ``(N, H, W, C)`` the engine blends.

    The engine adds the scores of overlapping tiles with positive weights and takes the argmax, so
    each kind is mapped to scores whose blended argmax is the right class:

    - ``softmax``: the per-class channels as they are (probabilities, or any scores whose argmax is
      the class, as Deepness itself takes the argmax).
    - ``sigmoid``: the class probability ``p`` becomes ``(2t - p, p)``: class wins exactly when
      ``p > t`` (ties go to background), also after blending, because blending is linear. For the
      usual ``t = 0.5`` that is ``(1 - p, p)``, true probabilities.
    - ``labels``: class ids become one-hot vectors (blending is then a weighted vote).
    """

    kind: str
    class_axis: bool
    threshold: float
    num_classes: int

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ModelError(f"unknown ONNX output kind {self.kind!r}; use one of {', '.join(OUTPUT_KINDS)}")
        if self.kind == "sigmoid" and self.num_classes != 2:
            raise ModelError(f"a sigmoid output gives 2 classes, not {self.num_classes}")

    @classmethod
    def for_bundle(cls, bundle: ModelBundle) -> OutputReadout:
        assert bundle.onnx is not None
        o = bundle.onnx
        return cls(o.output_kind, o.class_axis, o.threshold, bundle.num_classes)

    def scores(self, raw: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        """Scores ``(N, H, W, C)`` float32 from the raw output (``N x C x H x W``/NHWC, or ``N x H x W``)."""
        if self.class_axis:
            if raw.ndim != 4:
                raise ModelError(f"the model returned shape {raw.shape}, expected 4 dimensions with a class axis; "
                                 "re-add the model so its output is inspected again")
            if layout == "NCHW":
                raw = raw.transpose(0, 2, 3, 1)
        elif raw.ndim != 3:
            raise ModelError(f"the model returned shape {raw.shape}, expected N x H x W (no class axis)")
        if self.kind == "softmax":
            # A view when the model gives float32 (an NCHW output stays strided): the engine's blending reads
            # it once while weighting, so a contiguous copy here would only add a pass over every batch.
            return raw if raw.dtype == np.float32 else raw.astype(np.float32)
        values = raw[..., 0] if self.class_axis else raw
        if self.kind == "sigmoid":
            p = values.astype(np.float32)
            return np.stack([np.float32(2 * self.threshold) - p, p], axis=-1)
        ids = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise ModelError(f"the model returned class ids {int(ids.min())}..{int(ids.max())} but the bundle lists "
                             f"{self.num_classes} classes; re-add it with --classes naming every class")
        return np.eye(self.num_classes, dtype=np.float32)[ids]

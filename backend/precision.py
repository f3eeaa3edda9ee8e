"""Which of a bundle's ONNX exports to run: float (fp32) or static INT8.

INT8 pays off where the CPU has integer dot-product instructions: on x86 AVX-512 VNNI, AVX-VNNI or AMX,
on ARM the dot-product extension. Without them ONNX Runtime emulates the int8 products with wider
instructions, and an INT8 model is barely faster than float (and on AVX2 without VNNI its u8 x s8 products
can saturate). ``auto`` therefore runs the INT8 export only on such CPUs, and the float export elsewhere.

Files decide too: the plugin zip ships one export per bundle (the INT8 one when there is one, to stay
under the plugin repository's 25 MB), so ``auto`` falls back to whichever export is installed, saying so.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from backend.bundle import ModelBundle
from backend.contract import PRECISIONS
from backend.errors import InputError, ModelError

#: CPU features (lower-case, as in /proc/cpuinfo, or numpy's names) that make INT8 convolutions fast.
INT8_FEATURES = ("avx512_vnni", "avx512vnni", "avx_vnni", "avxvnni", "amx_int8", "asimddp", "dotprod")


@dataclass(frozen=True)
class PrecisionChoice:
    """The export to run and why (the reason is shown to the user when it is not the obvious one)."""

    precision: str  # fp32 | int8
    reason: str

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise InputError(f"a run's precision is fp32 or int8, not {self.precision!r}")


def cpu_features() -> frozenset[str]:
    """Lower-case instruction-set features of this CPU (from /proc/cpuinfo on Linux, else numpy's dispatch list)."""
    found: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                found.update(value.split())
                break
    except OSError:
        pass
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as numpy_features  # numpy >= 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as numpy_features
        except ImportError:
            numpy_features = {}
    found.update(name.lower() for name, present in numpy_features.items() if present)
    return frozenset(found)


def fast_int8(features: frozenset[str] | None = None) -> str | None:
    """The feature that makes INT8 fast here (e.g. ``avx512_vnni``), or None."""
    features = cpu_features() if features is None else features
    return next((f for f in INT8_FEATURES if f in features), None)


def choose_precision(bundle: ModelBundle, requested: str = "auto", runtime: str = "auto",
                     features: frozenset[str] | None = None) -> PrecisionChoice:
    """Pick the export for a run.

    Args:
        bundle: the model.
        requested: ``auto``, ``fp32`` or ``int8`` (``--precision``).
        runtime: the requested runtime; TensorFlow runs the float Keras model only.
        features: CPU features (default: this machine's).

    Raises:
        InputError: INT8 asked of the TensorFlow runtime.
        ModelError: the asked export is not in the bundle or its file is not installed.
    """
    if requested not in PRECISIONS:
        raise InputError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    if runtime == "tensorflow":
        if requested == "int8":
            raise InputError("--precision int8 runs on ONNX Runtime only; use --runtime onnx or auto")
        return PrecisionChoice("fp32", "TensorFlow runs the float model")
    if requested != "auto":
        if requested == "int8":
            bundle.with_precision("int8")  # names the fix when there is no INT8 export
        export = bundle.export_for(requested)
        if export is not None and not export.file.is_file() and bundle.onnx is not None:
            other = "fp32" if requested == "int8" else "int8"
            if bundle.has_export(other):
                raise ModelError(
                    f"the {requested} export {export.file.name} of model {bundle.name!r} is not installed (the "
                    f"plugin zip ships only the {other} one); choose precision {other} or auto (--precision; "
                    "Precision in the QGIS dialog and Processing), or install the full bundle from the source tree"
                )
        return PrecisionChoice(requested, f"--precision {requested}")
    if bundle.onnx_int8 is None:
        return PrecisionChoice("fp32", "the model has no INT8 export")
    feature = fast_int8(features)
    has_fp32, has_int8 = bundle.has_export("fp32"), bundle.has_export("int8")
    if feature:
        if has_int8:
            return PrecisionChoice("int8", f"INT8: this CPU has {feature}")
        return PrecisionChoice("fp32", f"the INT8 export {bundle.onnx_int8.file.name} is not installed")
    if has_fp32 or not has_int8:
        return PrecisionChoice("fp32", f"float: this {platform.machine() or 'CPU'} has no VNNI/AMX/dot-product "
                                       "instructions, which INT8 needs to be fast")
    return PrecisionChoice("int8", "INT8: the only export installed (this CPU lacks VNNI/AMX, so it gains little "
                                   "over float)")

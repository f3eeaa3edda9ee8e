"""Drive the backend CLI in a separate worker process.

Pure Python (no QGIS imports) so it is unit-testable anywhere. TensorFlow and QGIS segfault when
loaded into one process, so the model always runs in a child ``python -m backend segment``; this
module finds that Python, builds its command line, reads its ``--progress json`` lines and handles
cancellation and clean-up.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LandcoverPluginError

ENV_PYTHON = "LANDCOVER_PYTHON"
SETTING_PYTHON = "landcover/python"
PLUGIN_DIR = Path(__file__).resolve().parent

#: Environment the backend and TensorFlow read at import time (see backend/tf_import.py).
WORKER_ENV = {
    "SM_FRAMEWORK": "tf.keras",
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONUNBUFFERED": "1",
}

_RUNTIME_OK: dict[str, bool] = {}


def backend_parent(plugin_dir: Path = PLUGIN_DIR) -> Path:
    """Folder that contains the ``backend`` package.

    Packaged plugins ship ``backend/`` inside the plugin folder; in the source tree it sits beside
    ``landcover_plugin/`` at the repository root.
    """
    for candidate in (plugin_dir, plugin_dir.parent):
        if (candidate / "backend" / "__init__.py").is_file():
            return candidate
    raise LandcoverPluginError(
        f"the Landcover backend is missing: neither {plugin_dir / 'backend'} nor {plugin_dir.parent / 'backend'} "
        "exists; reinstall the plugin from the packaged zip (make package)"
    )


def find_python(setting: str | None = None, env: dict[str, str] | None = None, plugin_dir: Path = PLUGIN_DIR) -> str:
    """Python interpreter for the worker: plugin setting, then ``$LANDCOVER_PYTHON``, then the source tree's .venv.

    Raises:
        LandcoverPluginError: none configured, or the configured one does not exist.
    """
    env = os.environ if env is None else env
    for origin, value in (
        (f"the plugin setting '{SETTING_PYTHON}'", setting),
        (f"the environment variable {ENV_PYTHON}", env.get(ENV_PYTHON)),
    ):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise LandcoverPluginError(
                    f"the worker Python {path} set by {origin} does not exist or is not executable; "
                    "fix it in the Landcover dialog's 'Worker Python' field or unset it"
                )
            return str(path)
    venv_dir = plugin_dir.parent / ".venv"
    for venv in (venv_dir / "bin" / "python", venv_dir / "Scripts" / "python.exe"):
        if venv.is_file():
            return str(venv)
    raise LandcoverPluginError(
        "no Python with TensorFlow is configured for the Landcover worker; run 'make setup' in the Landcover "
        f"source tree, or set {ENV_PYTHON} (or the dialog's 'Worker Python') to a Python that has the "
        "requirements installed"
    )


def worker_env(python: str, base: dict[str, str] | None = None, plugin_dir: Path = PLUGIN_DIR) -> dict[str, str]:
    """Environment for the worker: ``backend`` importable, TensorFlow configured, QGIS's Python setup removed."""
    env = dict(os.environ if base is None else base)
    # QGIS bundles (Windows/macOS) set PYTHONHOME/PYTHONPATH for their own Python; the worker must not inherit them.
    env.pop("PYTHONHOME", None)
    parent = str(backend_parent(plugin_dir))
    env["PYTHONPATH"] = parent
    env.update(WORKER_ENV)
    return env


def install_hint(python: str, plugin_dir: Path = PLUGIN_DIR) -> str:
    """The exact command that installs the worker's requirements into ``python``."""
    for folder in (plugin_dir, plugin_dir.parent):
        req = folder / "requirements.txt"
        if req.is_file():
            cmd = f"{python} -m pip install -r {req}"
            nodeps = folder / "requirements-nodeps.txt"
            if nodeps.is_file():
                # tf-keras must not pull a second TensorFlow build
                cmd += f" && {python} -m pip install --no-deps -r {nodeps}"
            return cmd
    return f"{python} -m pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 segmentation-models==1.0.1 rasterio"


# The worker needs numpy + rasterio and one runtime: ONNX Runtime (fast to import, runs bundles with an
# ONNX export) or TensorFlow + segmentation-models (runs every bundle). ONNX Runtime is tried first so the
# check costs a fraction of a second where it is installed, instead of TensorFlow's few seconds.
_RUNTIME_PROBE = """
import importlib, sys

def load(*names):
    for name in names:
        importlib.import_module(name)

try:
    load("numpy", "rasterio")
except ImportError as exc:
    sys.exit(f"missing {exc.name}")
try:
    load("onnxruntime")
except ImportError:
    try:
        load("tensorflow", "segmentation_models")
    except ImportError as exc:
        sys.exit(f"neither onnxruntime nor TensorFlow/segmentation-models: {exc}")
"""


def check_runtime(python: str, env: dict[str, str] | None = None, plugin_dir: Path = PLUGIN_DIR) -> None:
    """Make sure the worker Python can import numpy, rasterio and a runtime (cached per interpreter).

    Raises:
        LandcoverPluginError: with the exact command that fixes it.
    """
    if _RUNTIME_OK.get(python):
        return
    env = worker_env(python, env, plugin_dir) if env is None else env
    try:
        proc = subprocess.run(
            [python, "-c", _RUNTIME_PROBE], env=env, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LandcoverPluginError(f"could not start the worker Python {python} ({exc})") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise LandcoverPluginError(
            f"the worker Python {python} cannot import ONNX Runtime nor TensorFlow/segmentation-models ({last}); "
            f"install them with: {install_hint(python, plugin_dir)}  (or run 'make setup' in the source tree and "
            f"point {ENV_PYTHON} at .venv/bin/python)"
        )
    _RUNTIME_OK[python] = True


@dataclass
class SegmentArgs:
    """Arguments of ``python -m backend segment``."""

    input: str
    output: str
    model: str | None = None
    overlap: int | None = None
    batch_size: int | None = None
    bands: Sequence[int] | None = None
    resample: bool = False
    confidence: str | None = None
    window: tuple[int, int, int, int] | None = None


def build_segment_argv(python: str, args: SegmentArgs) -> list[str]:
    """Command line for one segmentation run with JSON progress on stdout."""
    argv = [python, "-m", "backend", "segment", str(args.input), str(args.output)]
    if args.model:
        argv += ["--model", str(args.model)]
    if args.overlap is not None:
        argv += ["--overlap", str(int(args.overlap))]
    if args.batch_size is not None:
        argv += ["--batch-size", str(int(args.batch_size))]
    if args.bands:
        argv += ["--bands", ",".join(str(int(b)) for b in args.bands)]
    if args.resample:
        argv.append("--resample")
    if args.confidence:
        argv += ["--confidence", str(args.confidence)]
    if args.window is not None:
        argv += ["--window", ",".join(str(int(v)) for v in args.window)]
    argv += ["--progress", "json"]
    return argv


@dataclass
class ProgressEvent:
    """One ``--progress json`` line."""

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def percent(self) -> float | None:
        """Progress of this stage in 0..100, when known."""
        return 100.0 * self.done / self.total if self.total else None


def parse_progress_line(line: str) -> ProgressEvent | None:
    """Parse one stdout line; None for lines that are not progress JSON (e.g. stray library output)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "stage" not in obj:
        return None
    try:
        done, total = int(obj.get("done") or 0), int(obj.get("total") or 0)
    except (TypeError, ValueError):
        done, total = 0, 0
    return ProgressEvent(str(obj["stage"]), done, total, str(obj.get("message") or ""), obj)


def sidecar_paths(output: str | Path) -> list[Path]:
    """Files the backend writes for OUTPUT: the raster, its style and area summaries."""
    out = Path(output)
    stem = out.with_suffix("") if out.suffix.lower() in (".tif", ".tiff") else out
    return [out, Path(f"{stem}.qml"), Path(f"{stem}.areas.json"), Path(f"{stem}.areas.csv"), Path(f"{out}.aux.xml")]


class OutputGuard:
    """Remembers which files existed before a run so a cancelled or failed run removes only what it created."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._dirs = {p.parent for p in self.paths}
        self._before = {d: set(d.iterdir()) if d.is_dir() else set() for d in self._dirs}
        self._prefixes = {p.with_suffix("").name for p in self.paths}

    def cleanup(self) -> list[Path]:
        """Delete new files named like the outputs (including the backend's temporary names)."""
        removed = []
        for d in self._dirs:
            if not d.is_dir():
                continue
            for f in d.iterdir():
                if f in self._before[d] or not f.is_file():
                    continue
                if any(f.name.startswith(prefix) for prefix in self._prefixes):
                    try:
                        f.unlink()
                        removed.append(f)
                    except OSError:
                        pass
        return removed


@dataclass
class WorkerResult:
    """What a finished worker run produced."""

    output: str
    areas: dict[str, Any]
    warnings: list[str]
    log: list[str]


class WorkerCanceled(Exception):  # noqa: N818 - a cancellation, not an error
    """The run was cancelled by the user; partial outputs have been removed."""


def run_worker(
    argv: list[str],
    env: dict[str, str],
    cwd: str | None = None,
    on_event: Callable[[ProgressEvent], None] | None = None,
    is_canceled: Callable[[], bool] = lambda: False,
    cleanup: OutputGuard | None = None,
    poll_s: float = 0.1,
) -> WorkerResult:
    """Run the worker to completion, forwarding progress events; blocking (call it from a background thread).

    Raises:
        WorkerCanceled: ``is_canceled()`` became true; the process was terminated and outputs removed.
        LandcoverPluginError: the worker reported an error or exited abnormally.
    """
    try:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True,  # a terminal Ctrl-C in QGIS must not hit the worker, and vice versa
        )
    except OSError as exc:
        raise LandcoverPluginError(f"could not start the worker {argv[0]} ({exc})") from exc

    lines: queue.Queue[str | None] = queue.Queue()
    stderr_tail: list[str] = []

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for out_line in proc.stdout:
            lines.put(out_line)
        lines.put(None)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for err_line in proc.stderr:
            stderr_tail.append(err_line.rstrip())
            del stderr_tail[:-200]

    threads = [threading.Thread(target=f, daemon=True) for f in (pump_stdout, pump_stderr)]
    for t in threads:
        t.start()

    log: list[str] = []
    warnings: list[str] = []
    final: ProgressEvent | None = None
    eof = False
    while not eof:
        if is_canceled():
            _terminate(proc)
            if cleanup:
                cleanup.cleanup()
            raise WorkerCanceled("cancelled")
        try:
            raw = lines.get(timeout=poll_s)
        except queue.Empty:
            continue
        if raw is None:
            eof = True
            continue
        event = parse_progress_line(raw)
        if event is None:
            log.append(raw.rstrip())
            continue
        if event.stage == "warning":
            warnings.append(event.message)
        if event.stage in ("done", "error"):
            final = event
        if on_event:
            on_event(event)
    while proc.poll() is None:
        if is_canceled():
            _terminate(proc)
            if cleanup:
                cleanup.cleanup()
            raise WorkerCanceled("cancelled")
        time.sleep(poll_s)
    for t in threads:
        t.join(timeout=2)
    log.extend(stderr_tail)

    if proc.returncode == 0 and final is not None and final.stage == "done":
        output = str(final.data.get("output") or argv[5])
        return WorkerResult(output, dict(final.data.get("areas") or {}), warnings, log)
    if cleanup:
        cleanup.cleanup()
    if final is not None and final.stage == "error" and final.message:
        message = final.message
    elif stderr_tail:
        # Usage errors (exit 2) are one line naming problem and fix; tracebacks end with the exception line.
        message = next((s for s in reversed(stderr_tail) if s.strip()), "")
    else:
        message = f"the worker exited with code {proc.returncode} without a result"
    raise LandcoverPluginError(f"segmentation failed: {message}", details="\n".join(log))


def _terminate(proc: subprocess.Popen) -> None:
    """Stop the worker: SIGTERM, then SIGKILL if it does not exit promptly."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)

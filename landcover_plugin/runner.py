"""Drive the backend in a separate worker process.

Pure Python (no QGIS imports) so it is unit-testable anywhere. TensorFlow and QGIS segfault when
loaded into one process, so the model always runs in a child ``python -m backend``; this module
finds that Python, starts it, reads the protocol lines of :mod:`landcover_plugin.contract` and
handles cancellation and clean-up. Command lines, environment, events and file names all come
from the contract, which the backend uses too.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .contract import (
    BACKEND_PARENT,
    ENV_PYTHON,
    RUNTIME_DOWNLOAD_MB,
    WORKER_MODULE,
    CancelledError,
    DependencyError,
    DoneEvent,
    ErrorEvent,
    Event,
    InternalError,
    WarningEvent,
    decode_event,
    is_temp_of,
    worker_env,
)
from .runtime_setup import runtime_status

PLUGIN_DIR = Path(__file__).resolve().parent

_RUNTIME_OK: dict[str, bool] = {}


def find_python(setting: str | None = None, env: dict[str, str] | None = None, plugin_dir: Path | None = None,
                runtime_root: Path | None = None) -> str:
    """Python interpreter for the worker, first found of: the Worker Python setting, ``$LANDCOVER_PYTHON``, the
    plugin's managed runtime in ``runtime_root``, the source tree's .venv.

    Raises:
        DependencyError: none usable; the message offers setting up the managed runtime.
    """
    env = os.environ if env is None else env
    for origin, value in (("the dialog's Worker Python setting", setting),
                          (f"the environment variable {ENV_PYTHON}", env.get(ENV_PYTHON))):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise DependencyError(
                    f"the worker Python {path} set by {origin} does not exist or is not executable; "
                    "fix it in the Landcover dialog's 'Worker Python' field or unset it"
                )
            return str(path)
    status = runtime_status(runtime_root) if runtime_root is not None else None
    if status is not None and status.python:
        return status.python
    venv_dir = (plugin_dir or PLUGIN_DIR).parent / ".venv"
    for venv in (venv_dir / "bin" / "python", venv_dir / "Scripts" / "python.exe"):
        if venv.is_file():
            return str(venv)
    if status is not None and status.state != "missing":
        raise DependencyError(f"{status.message}: Raster > Landcover > Repair / reinstall runtime… (or "
                              "'qgis_process.bin run landcover:setup_runtime')")
    raise DependencyError(
        f"the Landcover worker runtime is not set up yet; set it up once (about {RUNTIME_DOWNLOAD_MB['onnx']} MB "
        "to download): Raster > Landcover > Set up runtime… or 'qgis_process.bin run landcover:setup_runtime'; "
        f"or set the dialog's Worker Python (or {ENV_PYTHON}) to a Python that has numpy, rasterio and onnxruntime"
    )


def forget_checks() -> None:
    """Check every worker Python again before its next run (after a runtime was set up or repaired)."""
    _RUNTIME_OK.clear()


def doctor_argv(python: str) -> list[str]:
    """The worker's self-check: imports what segmentation needs, reports a ``dependency`` error if not."""
    return [python, "-m", WORKER_MODULE, "doctor", "--progress", "json"]


def check_runtime(python: str, env: dict[str, str] | None = None) -> None:
    """Make sure the worker Python can run models (cached per interpreter), before any long export.

    Raises:
        DependencyError: what is missing, as the worker itself reported it.
        LandcoverError: the worker could not even start.
    """
    if _RUNTIME_OK.get(python):
        return
    run_worker(doctor_argv(python), worker_env(env), cwd=str(BACKEND_PARENT))
    _RUNTIME_OK[python] = True


class OutputGuard:
    """Remembers which files existed before a run so a cancelled or failed run removes only what it created."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._dirs = {p.parent for p in self.paths}
        self._before = {d: set(d.iterdir()) if d.is_dir() else set() for d in self._dirs}

    def _owned(self, f: Path) -> bool:
        """An output, its in-progress name, or a file its writer adds (``x.tif.aux.xml``, ``x.gpkg-wal``)."""
        return any(f.parent == p.parent and f.name.startswith(p.name) or is_temp_of(f, p) for p in self.paths)

    def cleanup(self) -> list[Path]:
        """Delete new files that belong to the outputs."""
        removed = []
        for d in self._dirs:
            if not d.is_dir():
                continue
            for f in d.iterdir():
                if f in self._before[d] or not f.is_file() or not self._owned(f):
                    continue
                try:
                    f.unlink()
                    removed.append(f)
                except OSError:
                    pass
        return removed


@dataclass
class WorkerResult:
    """What a finished worker run produced: its done event (None for commands without one), warnings, log."""

    done: DoneEvent | None
    warnings: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class _WorkerProcess:
    """A started worker whose stdout lines arrive on a queue and whose stderr tail is kept for the log."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
        try:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                start_new_session=True,  # a terminal Ctrl-C in QGIS must not hit the worker, and vice versa
            )
        except OSError as exc:
            raise DependencyError(f"could not start the worker Python {argv[0]} ({exc}); check the Worker Python "
                                  "setting") from exc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: list[str] = []
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._pump_stdout, self._pump_stderr)]
        for t in self.threads:
            t.start()

    def _pump_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip())
            del self.stderr_tail[:-200]

    def stdout_lines(self, is_canceled: Callable[[], bool], poll_s: float) -> Iterator[str]:
        """Lines until the worker exits.

        Raises:
            CancelledError: ``is_canceled()`` became true (the worker is then terminated).
        """
        while True:
            if is_canceled():
                self.terminate()
                raise CancelledError("cancelled; no output was kept")
            try:
                line = self.lines.get(timeout=poll_s)
            except queue.Empty:
                continue
            if line is None:
                break
            yield line
        while self.proc.poll() is None:
            if is_canceled():
                self.terminate()
                raise CancelledError("cancelled; no output was kept")
            time.sleep(poll_s)
        for t in self.threads:
            t.join(timeout=2)

    def terminate(self) -> None:
        """Stop the worker: SIGTERM (it removes its temporary files), then SIGKILL if it does not exit promptly."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def run_worker(
    argv: list[str],
    env: dict[str, str],
    cwd: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    is_canceled: Callable[[], bool] = lambda: False,
    cleanup: OutputGuard | None = None,
    poll_s: float = 0.1,
) -> WorkerResult:
    """Run the worker to completion, forwarding its events; blocking (call it from a background thread).

    Raises:
        CancelledError: ``is_canceled()`` became true; the process was terminated and outputs removed.
        LandcoverError: the worker's error event, of the kind it reported (details: the worker's log).
    """
    worker = _WorkerProcess(argv, env, cwd)
    result = WorkerResult(done=None)
    error: ErrorEvent | None = None
    try:
        for line in worker.stdout_lines(is_canceled, poll_s):
            event = decode_event(line)
            if event is None:
                result.log.append(line.rstrip())
                continue
            if isinstance(event, WarningEvent):
                result.warnings.append(event.message)
            elif isinstance(event, DoneEvent):
                result.done = event
            elif isinstance(event, ErrorEvent):
                error = event
            if on_event:
                on_event(event)
    except CancelledError:
        if cleanup:
            cleanup.cleanup()
        raise
    result.log.extend(worker.stderr_tail)
    code = worker.proc.returncode
    if code == 0 and error is None:
        return result
    if cleanup:
        cleanup.cleanup()
    details = "\n".join(result.log)
    if error is not None:
        raise error.to_error(details)
    # No error event: the worker could not start the backend at all (wrong Python, a crash).
    last = next((s for s in reversed(worker.stderr_tail) if s.strip()), "")
    raise InternalError(f"the worker exited with code {code} without a result{f': {last}' if last else ''}", details)

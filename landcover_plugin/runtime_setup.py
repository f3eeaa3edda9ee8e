"""The plugin's managed worker runtime: a private virtual environment the plugin builds and owns.

An analyst who installs the plugin zip has QGIS and its Python, nothing else; Debian refuses
``pip install`` into the system Python (PEP 668). So the plugin creates its own environment under
the QGIS profile (``<profile>/landcover/runtime/``) from a Python of QGIS's own major.minor, installs
the pinned lists of ``backend/requirements/`` there with pip, checks the result by running the
backend's ``doctor`` in it, and only then records it in ``runtime.json``. The record is the
commit point: an environment that is not named by a complete record (cancelled, failed, half
written) is never used and is deleted by the next setup.

Layout::

    <root>/runtime.json          the record (written last, atomically)
    <root>/envs/<name>/          virtual environments; the record names the current one

Pure Python, no QGIS: the dialog's task, the Processing algorithm and the tests all call
:func:`setup_runtime`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .contract import (
    BACKEND_PARENT,
    REQUIREMENTS_DIR,
    RUNTIME_DISK_MB,
    RUNTIME_DOWNLOAD_MB,
    RUNTIME_REQUIREMENTS,
    TENSORFLOW_NODEPS_REQUIREMENTS,
    TENSORFLOW_REQUIREMENTS,
    WORKER_MODULE,
    CancelledError,
    DependencyError,
    InternalError,
    LandcoverError,
    OutputError,
    worker_env,
    write_text_atomic,
)

RECORD_NAME = "runtime.json"
RECORD_FORMAT = 1
ENV_BASE_PYTHON = "LANDCOVER_BASE_PYTHON"  # a Python to build the runtime from, when the usual places have none
#: Variables that would send pip or the new environment somewhere else than the environment itself.
_FOREIGN_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT",
                "PIP_REQUIRE_VIRTUALENV", "CONDA_PREFIX", "__PYVENV_LAUNCHER__")

ProgressFn = Callable[[float, str], None]
LogFn = Callable[[str], None]


def _never() -> bool:
    return False


# ------------------------------------------------------------------------------ what to build


@dataclass(frozen=True)
class RuntimeRequest:
    """What to set up: where, with or without TensorFlow, from which Python and requirement lists."""

    root: Path
    tensorflow: bool = False
    base_python: str | None = None  # None: find_base_python()
    requirements_dir: Path = REQUIREMENTS_DIR
    python_version: tuple[int, int] = tuple(sys.version_info[:2])  # QGIS's own; the worker must match it

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())
        object.__setattr__(self, "requirements_dir", Path(self.requirements_dir))
        missing = [p for p, _ in self.requirement_files if not p.is_file()]
        if missing:
            raise InternalError(f"the plugin's requirement list {missing[0]} is missing; reinstall the Landcover "
                                "plugin from its zip")

    @property
    def kind(self) -> str:
        """``onnx`` or ``tensorflow``: the runtime this request makes available."""
        return "tensorflow" if self.tensorflow else "onnx"

    @property
    def requirement_files(self) -> list[tuple[Path, bool]]:
        """``(file, no_deps)`` in install order."""
        files = [(self.requirements_dir / n, False) for n in RUNTIME_REQUIREMENTS]
        if self.tensorflow:
            files += [(self.requirements_dir / n, False) for n in TENSORFLOW_REQUIREMENTS]
            files += [(self.requirements_dir / n, True) for n in TENSORFLOW_NODEPS_REQUIREMENTS]
        return files

    @property
    def fingerprint(self) -> str:
        """Changes whenever what would be installed changes (a plugin update with new pins, TensorFlow, Python)."""
        h = hashlib.sha256(f"{RECORD_FORMAT} py{self.python_version[0]}.{self.python_version[1]} {self.kind}".encode())
        for path, no_deps in self.requirement_files:
            h.update(f"\n{path.name} {no_deps}\n".encode())
            h.update(path.read_bytes())
        return h.hexdigest()

    @property
    def download_mb(self) -> int:
        return RUNTIME_DOWNLOAD_MB["onnx"] + (RUNTIME_DOWNLOAD_MB["tensorflow"] if self.tensorflow else 0)

    @property
    def disk_mb(self) -> int:
        return RUNTIME_DISK_MB["onnx"] + (RUNTIME_DISK_MB["tensorflow"] if self.tensorflow else 0)


@dataclass(frozen=True)
class RuntimeRecord:
    """What a completed setup installed; its presence in ``runtime.json`` is what makes a runtime usable."""

    env: str  # folder name under <root>/envs
    python_version: str
    fingerprint: str
    tensorflow: bool
    packages: dict[str, str] = field(default_factory=dict)
    size_mb: float = 0.0
    created: str = ""
    format: int = RECORD_FORMAT

    @staticmethod
    def read(root: Path) -> RuntimeRecord | None:
        """The record in ``root``, or None when there is none or it is unreadable (an interrupted write)."""
        try:
            data = json.loads((Path(root) / RECORD_NAME).read_text())
            return RuntimeRecord(**data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError):
            return None

    def write(self, root: Path) -> None:
        """Atomically: a crash leaves the old record or the new one, never a torn file."""
        write_text_atomic(Path(root) / RECORD_NAME, json.dumps(asdict(self), indent=2) + "\n")


def env_python(env_dir: Path) -> Path:
    """The interpreter inside a virtual environment."""
    if os.name == "nt":
        return env_dir / "Scripts" / "python.exe"
    return env_dir / "bin" / "python"


# ------------------------------------------------------------------------------ its state


@dataclass(frozen=True)
class RuntimeStatus:
    """Whether the managed runtime can be used: ``missing``, ``outdated``, ``broken`` or ``ready``."""

    state: str
    root: Path
    record: RuntimeRecord | None = None
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def python(self) -> str | None:
        """The runtime's interpreter when it is ready."""
        if not self.ready or self.record is None:
            return None
        return str(env_python(self.root / "envs" / self.record.env))

    @property
    def has_tensorflow(self) -> bool:
        return self.ready and self.record is not None and self.record.tensorflow


def satisfies(status: RuntimeStatus, request: RuntimeRequest) -> bool:
    """The ready runtime already provides what ``request`` asks for (one with TensorFlow serves ONNX too)."""
    return status.ready and (not request.tensorflow or status.has_tensorflow)


def runtime_status(root: Path, requirements_dir: Path = REQUIREMENTS_DIR) -> RuntimeStatus:
    """Inspect ``root`` without running anything (cheap enough for every dialog refresh)."""
    root = Path(root).expanduser()
    record = RuntimeRecord.read(root)
    if record is None:
        return RuntimeStatus("missing", root, None, f"the Landcover runtime is not set up yet ({root})")
    python = env_python(root / "envs" / record.env)
    if not python.exists():
        return RuntimeStatus("broken", root, record,
                             f"the Landcover runtime in {root} is damaged ({python} is gone); repair it")
    expected = RuntimeRequest(root, record.tensorflow, requirements_dir=requirements_dir).fingerprint
    if record.fingerprint != expected:
        return RuntimeStatus("outdated", root, record,
                             f"the Landcover runtime in {root} was set up by another plugin version; update it")
    return RuntimeStatus("ready", root, record, f"Landcover runtime ready ({root}, Python {record.python_version}"
                         f"{', with TensorFlow' if record.tensorflow else ''})")


# ------------------------------------------------------------------------------ building it


def _clean_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for venv and pip: the user's proxy and pip settings kept, a host Python's paths removed."""
    env = dict(os.environ if base is None else base)
    for name in _FOREIGN_ENV:
        env.pop(name, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _python_version(python: str, env: Mapping[str, str]) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], env=dict(env),
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.fullmatch(r"(\d+)\.(\d+)", out.stdout.strip())
    return (int(match[1]), int(match[2])) if out.returncode == 0 and match else None


def base_python_candidates(version: tuple[int, int], env: Mapping[str, str]) -> list[str]:
    """Where a Python of QGIS's own version usually is, most specific first."""
    major_minor = f"{version[0]}.{version[1]}"
    names = [env.get(ENV_BASE_PYTHON, "")]
    if os.name == "nt":  # OSGeo4W and the QGIS installers ship python.exe beside QGIS's own files
        names += [str(Path(sys.base_prefix) / "python.exe"), str(Path(sys.base_prefix) / "python3.exe")]
    else:
        names += [f"/usr/bin/python{major_minor}", str(Path(sys.base_prefix) / "bin" / f"python{major_minor}")]
        names += [shutil.which(f"python{major_minor}") or "", "/usr/bin/python3"]
    if Path(sys.executable).name.lower().startswith("python"):  # inside QGIS, sys.executable is often qgis itself
        names.append(sys.executable)
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def find_base_python(version: tuple[int, int], env: Mapping[str, str] | None = None) -> str:
    """A Python of ``version`` to build the runtime from (compiled packages must match QGIS's ABI).

    Raises:
        DependencyError: none found, naming the package to install.
    """
    env = _clean_env(env)
    for candidate in base_python_candidates(version, env):
        if Path(candidate).is_file() and _python_version(candidate, env) == version:
            return candidate
    major_minor = f"{version[0]}.{version[1]}"
    raise DependencyError(
        f"no Python {major_minor} was found to build the Landcover runtime from; install it (Debian/Ubuntu: "
        f"'sudo apt install python{major_minor}-venv') or set {ENV_BASE_PYTHON} to a Python {major_minor}"
    )


@dataclass
class _Stages:
    """Turns pip's output into a progress percentage and a short message."""

    progress: ProgressFn
    collected: int = 0
    expected: int = 16  # packages a runtime install usually resolves; only scales the bar

    def venv(self, message: str) -> None:
        self.progress(2.0, message)

    def pip_line(self, line: str) -> None:
        text = line.strip()
        if text.startswith("Collecting "):
            self.collected += 1
            name = re.split(r"[<>=!~\[;( ]", text.split()[1])[0]
            self.progress(5.0 + 55.0 * min(self.collected / self.expected, 1.0), f"downloading {name}")
        elif text.startswith("Installing collected packages"):
            self.progress(65.0, "installing packages (this takes a minute)")
        elif text.startswith("Successfully installed"):
            self.progress(85.0, "packages installed")

    def verify(self) -> None:
        self.progress(88.0, "checking the runtime")

    def done(self) -> None:
        self.progress(100.0, "done")


# pip's messages for each failure a user can act on (first match wins); the message names the fix.
_NETWORK = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
                      r"Name or service not known|ConnectTimeout|Read timed out|Max retries exceeded|"
                      r"Could not fetch URL|SSLError|No matching distribution found|"
                      r"Could not find a version that satisfies", re.I)
_PROXY = re.compile(r"ProxyError|Cannot connect to proxy|407 Proxy Authentication", re.I)
_DISK = re.compile(r"No space left on device|Errno 28|Disk quota exceeded", re.I)
_NO_VENV = re.compile(r"ensurepip is not available|No module named (ensurepip|venv)|"
                      r"virtual environment was not created successfully", re.I)


def _failure(stage: str, log: list[str], request: RuntimeRequest, python: str) -> LandcoverError:
    """The one actionable error for a failed ``stage`` (``venv``, ``pip`` or ``verify``), with the log attached."""
    text = "\n".join(log)
    details = f"{stage} failed; its output:\n{text}"
    last = next((s.strip() for s in reversed(log) if s.strip()), "no output")
    if _DISK.search(text):
        return OutputError(
            f"the disk holding {request.root} is full; free at least {request.disk_mb} MB there (or set the runtime "
            "folder in the Landcover settings to another disk) and set up the runtime again", details)
    if stage == "venv" and _NO_VENV.search(text):
        major_minor = ".".join(map(str, request.python_version))
        return DependencyError(
            f"{python} cannot create virtual environments: its venv/ensurepip part is not installed; on "
            f"Debian/Ubuntu run 'sudo apt install python{major_minor}-venv', then set up the runtime again", details)
    if stage == "pip" and _PROXY.search(text):
        return DependencyError(
            "pip could not get through the proxy to the package index; set the proxy for pip (HTTPS_PROXY, or "
            "'pip config set global.proxy http://user:password@host:port') and set up the runtime again; "
            "pip's log is in Details", details)
    if stage == "pip" and _NETWORK.search(text):
        return DependencyError(
            f"could not download the runtime packages from the package index ({last}); check the network "
            "connection (and pip's index or proxy settings, if you use any) and set up the runtime again; "
            "pip's log is in Details", details)
    if stage == "verify":
        return InternalError(f"the runtime was installed but the backend does not run in it ({last}); "
                             "use Repair / reinstall, and report it if it persists", details)
    return InternalError(f"setting up the Landcover runtime failed during {stage} ({last}); the log is in Details",
                         details)


class _Step:
    """One child process (venv, pip, doctor) whose output lines go to ``on_line``; cancellable."""

    def __init__(self, argv: list[str], env: Mapping[str, str], on_line: LogFn, cwd: str | None = None) -> None:
        self.argv = argv
        self.lines: list[str] = []
        self._on_line = on_line
        try:
            self.proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        except OSError as exc:
            self.proc = None
            self.lines.append(f"could not start {argv[0]}: {exc}")
            return
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            self.lines.append(line)
            self._on_line(line)

    def wait(self, is_canceled: Callable[[], bool], poll_s: float = 0.2) -> int:
        """The exit code; on cancel the process group is stopped and :class:`CancelledError` raised."""
        if self.proc is None:
            return 127
        while self.proc.poll() is None:
            if is_canceled():
                self.stop()
                raise CancelledError("runtime setup cancelled; nothing was changed")
            time.sleep(poll_s)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:  # pip may have its own children (build backends); stop the whole group
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, AttributeError):
            self.proc.kill()
            self.proc.wait(timeout=10)


def _dir_mb(path: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total / 1e6


def _check_free_space(request: RuntimeRequest) -> None:
    probe = request.root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free / 1e6
    need_mb = request.disk_mb * 1.2 + request.download_mb  # pip unpacks wheels beside its cache
    if free_mb < need_mb:
        raise OutputError(
            f"only {free_mb:.0f} MB are free on the disk holding {request.root}; the Landcover runtime needs about "
            f"{need_mb:.0f} MB; free some space (or set the runtime folder in the Landcover settings to another "
            "disk) and set up the runtime again")


def remove_stale_envs(root: Path) -> list[Path]:
    """Delete environments under ``root/envs`` that the record does not name (left by a cancelled or failed setup)."""
    record = RuntimeRecord.read(root)
    envs = Path(root) / "envs"
    removed = []
    if envs.is_dir():
        for env_dir in envs.iterdir():
            if record is None or env_dir.name != record.env:
                shutil.rmtree(env_dir, ignore_errors=True)
                removed.append(env_dir)
    return removed


def pip_install_argvs(python: str, request: RuntimeRequest) -> list[list[str]]:
    """The pip commands, one per requirement list, run inside the new environment (never another Python)."""
    argvs = []
    for path, no_deps in request.requirement_files:
        argv = [python, "-m", "pip", "install", "--no-input", "--progress-bar", "off", "-r", str(path)]
        if no_deps:
            argv.insert(4, "--no-deps")
        argvs.append(argv)
    return argvs


def doctor_argv(python: str, request: RuntimeRequest) -> list[str]:
    """The backend's self-check for the runtime ``request`` makes (must pass before it is recorded)."""
    return [python, "-m", WORKER_MODULE, "doctor", "--progress", "none", "--runtime", request.kind]


def _installed_packages(python: str, env: Mapping[str, str]) -> dict[str, str]:
    try:
        out = subprocess.run([python, "-m", "pip", "list", "--format", "json"], env=dict(env), capture_output=True,
                             text=True, timeout=120)
        return {p["name"]: p["version"] for p in json.loads(out.stdout)} if out.returncode == 0 else {}
    except (OSError, ValueError, subprocess.SubprocessError, KeyError, TypeError):
        return {}


def setup_runtime(
    request: RuntimeRequest,
    progress: ProgressFn = lambda p, m: None,
    log: LogFn = lambda line: None,
    is_canceled: Callable[[], bool] = _never,
    env: Mapping[str, str] | None = None,
) -> RuntimeStatus:
    """Build a fresh runtime for ``request``, verify it, then make it the current one (blocking).

    The previous runtime, if any, stays in use until the new one has passed its check; a cancelled or
    failed setup deletes what it built and leaves the record untouched.

    Raises:
        CancelledError: ``is_canceled()`` became true.
        LandcoverError: of the kind the user can act on (dependency: no venv support or no network; output:
            disk full), with pip's log as ``details``.
    """
    clean = _clean_env(env)
    request.root.mkdir(parents=True, exist_ok=True)
    remove_stale_envs(request.root)
    _check_free_space(request)
    base = request.base_python or find_base_python(request.python_version, clean)
    stages = _Stages(progress)
    name = f"py{request.python_version[0]}{request.python_version[1]}-{request.kind}-{time.strftime('%Y%m%d%H%M%S')}"
    env_dir = request.root / "envs" / name
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    python = str(env_python(env_dir))
    committed = False
    try:
        stages.venv(f"creating the environment with {base}")
        log(f"$ {base} -m venv {env_dir}")
        _run(request, "venv", [base, "-m", "venv", str(env_dir)], clean, log, is_canceled, base)
        for argv in pip_install_argvs(python, request):
            log("$ " + " ".join(argv))
            _run(request, "pip", argv, clean, lambda line: (log(line), stages.pip_line(line)), is_canceled, base)
        stages.verify()
        argv = doctor_argv(python, request)
        log("$ " + " ".join(argv))
        _run(request, "verify", argv, worker_env(clean), log, is_canceled, base, cwd=str(BACKEND_PARENT))
        record = RuntimeRecord(
            env=name, python_version=".".join(map(str, request.python_version)), fingerprint=request.fingerprint,
            tensorflow=request.tensorflow, packages=_installed_packages(python, clean),
            size_mb=round(_dir_mb(env_dir), 1), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if is_canceled():
            raise CancelledError("runtime setup cancelled; nothing was changed")
        record.write(request.root)
        committed = True
    except OSError as exc:
        raise _failure("setup", [str(exc)], request, base) from exc
    finally:
        if not committed:
            shutil.rmtree(env_dir, ignore_errors=True)
    remove_stale_envs(request.root)  # the previous runtime, now replaced
    stages.done()
    return runtime_status(request.root, request.requirements_dir)


def _run(request: RuntimeRequest, stage: str, argv: list[str], env: Mapping[str, str], on_line: LogFn,
         is_canceled: Callable[[], bool], base: str, cwd: str | None = None) -> None:
    step = _Step(argv, env, on_line, cwd)
    if step.wait(is_canceled) != 0:
        raise _failure(stage, step.lines, request, base)

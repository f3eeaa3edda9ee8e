"""GDAL and libtiff write failures as exceptions, raised at the write that failed.

GDAL never raises for a failed block write: libtiff's ``_tiffWriteProc`` prints ``No space left on
device.`` straight to the process's stderr (file descriptor 2, below Python) and GDAL reports
``TIFFAppendToStrip:Write error ...`` as a ``CE_Failure``, which rasterio 1.4 forwards to Python
logging (logger ``rasterio._err``, level INFO, so normally nothing sees it) and otherwise ignores.
A run on a full disk therefore used to "succeed" with a corrupt raster.

:class:`WriteGuard` closes both holes without GDAL's Python bindings (the plugin's worker runtime
has rasterio only):

- a :mod:`logging` handler on rasterio's error loggers records every GDAL failure while the guard
  is active; :meth:`WriteGuard.check` raises :class:`OutputError` naming the file being written
  and the fix as soon as one is recorded (called after every block write, every batch and close);
- file descriptor 2 is routed through a pipe whose reader thread forwards everything to the real
  stderr at once, except libtiff's write-error lines, which it keeps as the reason for the error.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import threading
from pathlib import Path

from backend.errors import OutputError

#: rasterio's loggers that carry GDAL's error handler output.
GDAL_LOGGERS = ("rasterio._err", "rasterio._env")

#: Start of the lines libtiff (and GDAL's TIFF layer) print to stderr when a write fails.
_LIBTIFF_LINE = re.compile(
    rb"^(?:ERROR \d+: )?(?:_tiffWriteProc|_tiffSeekProc|TIFFAppendToStrip|TIFFWrite\w*|TIFFFlush\w*|"
    rb"TIFFRewriteDirectory|TIFFFillStrip|TIFFFillTile|_TIFFVSI\w*|GTiff\w*|tif_\w+):"
)
_PREFIXES = (b"_tiff", b"TIFF", b"ERROR ", b"GTiff", b"_TIFF", b"tif_")

#: GDAL failure messages that mean "a write failed", wherever they are reported.
_WRITE_FAILURE = re.compile(r"write|No space|File too large|quota|flush|Cannot (?:create|open) .* for writ",
                            re.IGNORECASE)

#: strerror texts and what they mean for the user.
_REASONS = {
    "No space left on device": errno.ENOSPC,
    "File too large": errno.EFBIG,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Input/output error": errno.EIO,
    "Permission denied": errno.EACCES,
}


def fix_for(reason: str, path: Path) -> str:
    """The one-line fix for a write failure ``reason`` on ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    code = next((c for text, c in _REASONS.items() if text.lower() in reason.lower()), None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"free space on the disk holding {folder} (or your quota there) or choose another folder"
    if code == errno.EFBIG:
        return "the file system or a size limit (ulimit -f) does not allow a file this large; choose another folder"
    if code == errno.EROFS:
        return f"{folder} is read-only; choose another folder"
    if code == errno.EACCES:
        return "choose a folder you can write to"
    return f"free space on the disk holding {folder} or choose another folder"


def write_failure(path: Path, reason: str) -> OutputError:
    """The one-line :class:`OutputError` for a failed write of ``path``."""
    reason = " ".join(reason.split())[:160] or "write error"
    return OutputError(f"writing {path} failed ({reason}): {fix_for(reason, path)}; "
                       "no earlier result was replaced")


def disk_is_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path.parent if str(path.parent) else ".").free < (1 << 20)
    except OSError:
        return False


class _GdalErrorLog(logging.Handler):
    """Records the GDAL failures rasterio logs; passes everything else on as rasterio would."""

    def __init__(self, guard: WriteGuard) -> None:
        super().__init__(logging.DEBUG)
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        message = _gdal_message(record)
        failure = record.levelno >= logging.ERROR or record.getMessage().startswith("GDAL signalled an error")
        if failure:
            self.guard._gdal_failure(message)
            return
        if record.levelno >= self.guard._levels.get(record.name, logging.WARNING):
            parent = logging.getLogger("rasterio")
            parent.handle(record)


def _gdal_message(record: logging.LogRecord) -> str:
    args = record.args
    if isinstance(args, tuple) and len(args) == 2 and isinstance(args[1], str | bytes):
        text = args[1]
        return text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return record.getMessage()


class _StderrFilter:
    """Route fd 2 through a pipe; forward all of it to the real stderr except libtiff's write-error lines."""

    _MARK = b"\x00landcover-sync\x00\n"

    def __init__(self) -> None:
        self.dropped: list[str] = []
        self._active = False
        self._synced = threading.Event()

    def start(self) -> None:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            self._saved = os.dup(2)
        except OSError:
            return  # no stderr to filter (e.g. a GUI process): nothing can be printed anyway
        read_fd, write_fd = os.pipe()
        try:
            os.dup2(write_fd, 2)
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            os.close(self._saved)
            return
        os.close(write_fd)
        self._read_fd = read_fd
        self._thread = threading.Thread(target=self._pump, name="landcover-stderr", daemon=True)
        self._thread.start()
        self._active = True

    def stop(self) -> None:
        if not self._active:
            return
        self._active = False
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the pump reads EOF and ends
        self._thread.join(timeout=5)
        os.close(self._saved)

    def sync(self, timeout: float = 1.0) -> None:
        """Wait until everything written to stderr so far has been filtered."""
        if not self._active:
            return
        self._synced.clear()
        try:
            os.write(2, self._MARK)
        except OSError:
            return
        self._synced.wait(timeout)

    def _pump(self) -> None:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(self._read_fd, 65536)
                except InterruptedError:
                    continue
                if not chunk:
                    break
                pending = self._forward(pending + chunk)
            if pending:
                self._out(pending)
        except Exception:  # noqa: BLE001 - never leave writers blocked on a full pipe
            pending = b""
            try:
                while os.read(self._read_fd, 65536):
                    pass
            except OSError:
                pass
        finally:
            os.close(self._read_fd)

    def _forward(self, data: bytes) -> bytes:
        """Forward complete lines (``\\n`` or ``\\r``) of ``data``; return an unfinished tail worth holding."""
        out = []
        start = 0
        for m in re.finditer(rb"[^\r\n]*(?:\r\n|\r|\n)", data):
            line = m.group(0)
            start = m.end()
            if line == self._MARK:
                self._flush(out)
                self._synced.set()
            elif _LIBTIFF_LINE.match(line):
                self.dropped.append(line.decode("utf-8", "replace").strip())
            else:
                out.append(line)
        self._flush(out)
        tail = data[start:]
        if tail and not any(tail.startswith(p) or p.startswith(tail) for p in (*_PREFIXES, self._MARK[:1])):
            self._out(tail)  # e.g. a progress bar or prompt: show it now
            return b""
        return tail

    def _flush(self, lines: list[bytes]) -> None:
        if lines:
            self._out(b"".join(lines))
            lines.clear()

    def _out(self, data: bytes) -> None:
        while data:
            try:
                n = os.write(self._saved, data)
            except InterruptedError:
                continue
            except OSError:
                return
            data = data[n:]


class WriteGuard:
    """While active, a GDAL failure makes :meth:`check` raise :class:`OutputError` for the file being written.

    Use ``with WriteGuard() as guard:`` around the writing, :meth:`writing` around each GDAL call that
    may write (block writes, close), and :meth:`check` wherever the run may stop (every batch).
    """

    def __init__(self, filter_stderr: bool = True) -> None:
        self._failures: list[str] = []
        self._current: Path | None = None
        self._failed_path: Path | None = None
        self._default: Path | None = None
        self._stderr = _StderrFilter() if filter_stderr else None
        self._handler = _GdalErrorLog(self)
        self._levels: dict[str, int] = {}
        self._saved: dict[str, tuple[int, bool]] = {}

    def __enter__(self) -> WriteGuard:
        for name in GDAL_LOGGERS:
            logger = logging.getLogger(name)
            self._saved[name] = (logger.level, logger.propagate)
            self._levels[name] = logger.getEffectiveLevel()
            logger.setLevel(logging.DEBUG)  # rasterio logs GDAL's CE_Failure at INFO
            logger.propagate = False
            logger.addHandler(self._handler)
        if self._stderr is not None:
            self._stderr.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stderr is not None:
            self._stderr.stop()
        for name, (level, propagate) in self._saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self._handler)
            logger.setLevel(level)
            logger.propagate = propagate

    def watch(self, path: Path) -> None:
        """``path`` is the file GDAL writes when a failure is reported outside :meth:`writing`."""
        if self._default is None:
            self._default = Path(path)

    def writing(self, path: Path) -> _Writing:
        """Context around a GDAL call that writes ``path``: a failure reported inside it is ``path``'s."""
        return _Writing(self, Path(path))

    def _gdal_failure(self, message: str) -> None:
        if self._current is None and not _WRITE_FAILURE.search(message):
            return  # e.g. a failed optional lookup while reading the input: not an output problem
        if self._failed_path is None:
            self._failed_path = self._current or self._default
        self._failures.append(message)

    @property
    def failed(self) -> bool:
        return bool(self._failures)

    def check(self, path: Path | None = None, sync: bool = False) -> None:
        """Raise :class:`OutputError` if a write failed since the guard started.

        libtiff reports some failures (a short write while flushing the last strip or the directory at close)
        only as a line on stderr: a dropped libtiff line is a failure too. ``sync`` waits until everything
        written to stderr so far has been seen (after a close, whose lines would otherwise come too late).
        """
        if self._stderr is not None:
            if sync:
                self._stderr.sync()
            if self._stderr.dropped and not self._failures:
                self._failures.append(self._stderr.dropped[0])
                self._failed_path = self._failed_path or self._current or path or self._default
        if self._failures:
            raise self.error(path)

    def error(self, path: Path | None = None) -> OutputError:
        target = self._failed_path or path or self._default or Path("the output")
        if self._stderr is not None:
            self._stderr.sync()
        lines = list(self._stderr.dropped) if self._stderr is not None else []
        reason = ""
        for line in lines:
            text = line.split(":", 1)[-1].strip().rstrip(".")
            if any(r.lower() in text.lower() for r in _REASONS):
                reason = text
                break
        if not reason and disk_is_full(target):
            reason = "No space left on device"
        if not reason:
            reason = self._failures[0] if self._failures else "write error"
        error = write_failure(target, reason)
        error.details = "\n".join([*lines, *self._failures])
        return error


class _Writing:
    def __init__(self, guard: WriteGuard, path: Path) -> None:
        self.guard, self.path = guard, path

    def __enter__(self) -> None:
        self._outer = self.guard._current
        self.guard._current = self.path

    def __exit__(self, exc_type, exc, tb) -> bool:
        current, self.guard._current = self.guard._current, self._outer
        if exc is not None:
            if isinstance(exc, OutputError):
                return False
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            rasterio_error = type(exc).__module__.startswith("rasterio")
            if isinstance(exc, OSError) or (rasterio_error and (self.guard.failed or _WRITE_FAILURE.search(text))):
                if self.guard.failed:
                    raise self.guard.error(self.path) from exc
                raise write_failure(self.path, getattr(exc, "strerror", None) or text) from exc
            return False
        self.guard._current = current  # a libtiff line seen now was printed by this write
        try:
            self.guard.check(self.path, sync=True)
        finally:
            self.guard._current = self._outer
        return False

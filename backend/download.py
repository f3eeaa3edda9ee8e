"""Download a model file: streamed, with progress, cancellable, checked, never left half-written.

The caller names a temporary file (in the models folder's staging area, see :mod:`backend.model_store`),
so a download that fails, is cancelled (Ctrl-C, or SIGTERM which the CLI turns into KeyboardInterrupt)
or does not match ``--sha256`` is deleted and nothing that looks like a model is ever left behind.
Standard library only: the plugin's lean runtime has no ``requests``.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from backend import __version__
from backend.errors import InputError, OutputError
from backend.progress import BarProgress, Progress

URL_SCHEMES = ("http", "https", "file")
CHUNK = 1 << 16
TIMEOUT_S = 30.0  # per network operation (connect, each read), not for the whole download
STAGE = "download"


def is_url(text: str) -> bool:
    """Whether ``text`` is a URL this module downloads (http, https or file)."""
    return urllib.parse.urlsplit(text).scheme.lower() in URL_SCHEMES


def url_file_name(url: str) -> str:
    """The last path segment of ``url`` (``model.onnx``), or ``model`` when it has none."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name or "model"


def check_sha256(text: str | None) -> str | None:
    """``--sha256``: 64 hex digits (any case) -> lowercase; None stays None."""
    if text is None:
        return None
    value = text.strip().lower()
    if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
        raise InputError(f"--sha256 {text!r} is not a SHA-256 checksum (64 hexadecimal digits)")
    return value


@dataclass(frozen=True)
class Downloaded:
    """A finished download: where it is, its checksum and size, and what the server called its type."""

    path: Path
    sha256: str
    size: int
    content_type: str = ""

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"size {self.size} must be >= 0")


def download(url: str, dest: Path, progress: Progress | None = None, expected_sha256: str | None = None,
             timeout: float = TIMEOUT_S) -> Downloaded:
    """Stream ``url`` into ``dest`` (a temporary name the caller owns), reporting bytes as progress.

    Args:
        url: http(s) or file URL.
        dest: file to write; deleted again unless the download completes and matches the checksum.
        progress: reporter; stage ``download``, ``done``/``total`` in bytes (total 0 when unknown).
        expected_sha256: lowercase hex SHA-256 the file must have.
        timeout: seconds each network operation may take.

    Raises:
        InputError: the URL cannot be fetched (not found, unreachable host, timeout) or the checksum differs.
        OutputError: ``dest`` cannot be written.
        KeyboardInterrupt: cancelled; ``dest`` is removed first.
    """
    progress = progress or Progress()
    digest = hashlib.sha256()
    done = 0
    try:
        with _open(url, timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            content_type = response.headers.get_content_type() if response.headers else ""
            progress.start(STAGE, total, f"downloading {url}")
            step = max(total // 200, 1 << 18)  # at most ~200 progress lines, whatever the size
            last = 0
            try:
                with open(dest, "wb") as out:
                    while True:
                        chunk = _read(response, url, timeout)  # its network errors are InputErrors, not OSErrors
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if done - last >= step:
                            progress.advance(done)
                            last = done
            except OSError as exc:
                raise OutputError(f"cannot write the download to {dest.parent} ({exc.strerror or exc}); "
                                  "free some space or set LANDCOVER_MODELS_DIR to another folder") from None
            if total and done < total:
                raise InputError(f"the download of {url} ended after {done} of {total} bytes; try again")
            progress.advance(done)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        progress.close()
    actual = digest.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        dest.unlink(missing_ok=True)
        raise InputError(f"the file downloaded from {url} has SHA-256 {actual}, not the expected {expected_sha256} "
                         "given by --sha256: it was changed or corrupted; nothing was kept")
    return Downloaded(dest, actual, done, content_type)


def _open(url: str, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": f"landcover/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the schemes are checked
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise InputError(f"{url} was not found (HTTP 404); check the address") from None
        if exc.code in (401, 403):
            raise InputError(f"{url} refused access (HTTP {exc.code}); use a public download link") from None
        raise InputError(f"{url} answered HTTP {exc.code} ({exc.reason}); check the address or try later") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, FileNotFoundError | IsADirectoryError):
            raise InputError(f"{url}: no such file; check the path") from None
        if isinstance(reason, OSError) and not isinstance(reason, TimeoutError):
            host = urllib.parse.urlsplit(url).netloc or url
            raise InputError(f"cannot reach {host} ({reason.strerror or reason}); check the address and "
                             "your network connection") from None
        raise InputError(f"cannot download {url} ({reason}); check the address and your network") from None
    except TimeoutError:
        raise InputError(f"{url} did not answer within {timeout:g} s; try again later") from None
    except ValueError as exc:
        raise InputError(f"{url} is not a valid URL ({exc})") from None


def _read(response, url: str, timeout: float) -> bytes:
    try:
        return response.read(CHUNK)
    except TimeoutError:
        raise InputError(f"{url} stopped sending data for {timeout:g} s; try again later") from None
    except OSError as exc:
        raise InputError(f"the download of {url} failed ({exc}); try again") from None


class ByteBarProgress(BarProgress):
    """The CLI's bar, counting bytes instead of tiles."""

    def start(self, stage: str, total: int, message: str = "") -> None:
        self.close()
        try:
            from tqdm import tqdm
        except ModuleNotFoundError:  # the lean runtime has no tqdm: one line instead of a bar
            self._write(message or stage)
            return
        self._bar = tqdm(total=total or None, desc=stage, unit="B", unit_scale=True, unit_divisor=1024,
                         file=self.stream, dynamic_ncols=True)


def download_progress(kind: str) -> Progress:
    """``bar`` (bytes), ``json`` (the worker protocol) or ``none``."""
    from backend.progress import make_progress

    return ByteBarProgress() if kind == "bar" else make_progress(kind)

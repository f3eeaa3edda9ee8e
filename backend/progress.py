"""Progress reporting: a terminal bar, JSON lines for the QGIS worker protocol, or nothing."""

from __future__ import annotations

import sys
from typing import TextIO

from backend.contract import Event, InfoEvent, ProgressEvent, WarningEvent, encode_event


class Progress:
    """Silent reporter; the base of the others."""

    def start(self, stage: str, total: int, message: str = "") -> None:
        """Begin a stage of ``total`` steps."""

    def advance(self, done: int) -> None:
        """``done`` steps of the current stage are complete."""

    def warn(self, message: str) -> None:
        """Something the user should know but that does not stop the run."""

    def info(self, message: str) -> None:
        """A status line (e.g. which model was loaded)."""

    def close(self) -> None:
        """The run ended (successfully or not)."""


class JsonProgress(Progress):
    """One JSON object per line on ``stream``: the worker protocol (:mod:`backend.contract`) the plugin reads."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.stage = ""
        self.total = 0
        self._last = -1

    def emit(self, event: Event) -> None:
        self.stream.write(encode_event(event) + "\n")
        self.stream.flush()

    def start(self, stage: str, total: int, message: str = "") -> None:
        self.stage, self.total, self._last = stage, total, -1
        self.emit(ProgressEvent(stage, 0, total, message))

    def advance(self, done: int) -> None:
        if done != self._last:
            self._last = done
            self.emit(ProgressEvent(self.stage, done, self.total))

    def warn(self, message: str) -> None:
        self.emit(WarningEvent(message))

    def info(self, message: str) -> None:
        self.emit(InfoEvent(message))


class BarProgress(Progress):
    """tqdm bar on stderr; warnings and info printed above it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar = None

    #: What a stage counts (``predict``: tiles; ``batch``: sheets and chunks).
    UNITS = {"predict": "tile", "batch": "item"}

    def start(self, stage: str, total: int, message: str = "") -> None:
        self.close()
        unit = self.UNITS.get(stage, "step")
        try:
            from tqdm import tqdm
        except ModuleNotFoundError:  # the plugin's lean runtime has no tqdm: say what runs, without a bar
            self._write(f"{stage}: {total} {unit}s")
            return
        self._bar = tqdm(total=total, desc=stage, unit=unit, file=self.stream, dynamic_ncols=True)

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def warn(self, message: str) -> None:
        self._write(f"warning: {message}")

    def info(self, message: str) -> None:
        self._write(message)

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_progress(kind: str) -> Progress:
    """``bar``, ``json`` or ``none``."""
    return {"bar": BarProgress, "json": JsonProgress, "none": Progress}[kind]()

"""QgsTask that sets up the managed worker runtime (venv + pip) off the main thread, with progress and Cancel."""

from __future__ import annotations

import traceback
from collections.abc import Callable

from qgis.core import Qgis, QgsMessageLog, QgsTask

from ..errors import CancelledError, InternalError, LandcoverError
from ..feedback import LOG_TAG
from ..runtime_setup import RuntimeRequest, RuntimeStatus, setup_runtime


class RuntimeSetupTask(QgsTask):
    """Runs :func:`setup_runtime`; ``on_done(task)`` is called on the main thread when it ends.

    After it ends exactly one of ``outcome`` (success), ``error`` or ``canceled`` is set. pip's output goes
    to the Log Messages panel (tab Landcover) as it arrives, so a slow download is visible.
    """

    def __init__(self, request: RuntimeRequest, on_done: Callable[[RuntimeSetupTask], None] | None = None) -> None:
        what = "with TensorFlow " if request.tensorflow else ""
        super().__init__(f"Landcover: setting up the runtime {what}(about {request.download_mb} MB to download)",
                         QgsTask.CanCancel)
        self.request = request
        self.on_done = on_done
        self.outcome: RuntimeStatus | None = None
        self.error: LandcoverError | None = None
        self.canceled = False
        self.stage = ""

    def run(self) -> bool:  # background thread: QgsMessageLog is thread-safe, widgets are not
        def progress(percent: float, message: str) -> None:
            self.setProgress(percent)
            self.stage = message

        def log(line: str) -> None:
            QgsMessageLog.logMessage(line, LOG_TAG, Qgis.Info, notifyUser=False)

        try:
            self.outcome = setup_runtime(self.request, progress, log, self.isCanceled)
            return True
        except CancelledError:
            self.canceled = True
            return False
        except LandcoverError as exc:
            self.error = exc
            return False
        except Exception as exc:  # noqa: BLE001 - a task must never raise; report everything
            self.error = InternalError(f"unexpected error: {type(exc).__name__}: {exc}", traceback.format_exc())
            return False

    def finished(self, result: bool) -> None:  # main thread
        if not result and self.isCanceled():
            self.canceled = True
        if self.error is not None:
            QgsMessageLog.logMessage(f"{self.error} [{self.error.kind}]\n{self.error.details}".strip(), LOG_TAG,
                                     Qgis.Critical)
        if self.on_done is not None:
            self.on_done(self)

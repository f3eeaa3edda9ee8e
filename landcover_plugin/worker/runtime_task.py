"""QgsTask that sets up the managed worker runtime (venv + pip) off the main thread, with progress and Cancel."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import Qgis, QgsMessageLog, QgsTask

from ..errors import LandcoverError
from ..feedback import LOG_TAG
from ..runtime_setup import RuntimeRequest, RuntimeStatus, setup_runtime
from .outcome import run_guarded


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

        ended = run_guarded(lambda: setup_runtime(self.request, progress, log, self.isCanceled))
        self.outcome, self.error, self.canceled = ended.value, ended.error, ended.canceled
        return self.outcome is not None

    def finished(self, result: bool) -> None:  # main thread
        if not result and self.isCanceled():
            self.canceled = True
        if self.error is not None:
            QgsMessageLog.logMessage(f"{self.error} [{self.error.kind}]\n{self.error.details}".strip(), LOG_TAG,
                                     Qgis.Critical)
        if self.on_done is not None:
            self.on_done(self)

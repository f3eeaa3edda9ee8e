"""QgsTask that runs a prepared job off the main thread so QGIS stays responsive."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import Qgis, QgsFeedback, QgsMessageLog, QgsTask

from .. import job
from ..errors import LandcoverError
from ..feedback import LOG_TAG
from .outcome import run_guarded


class SegmentTask(QgsTask):
    """Runs :func:`job.execute`; ``on_done(task)`` is called on the main thread when it ends.

    After it ends exactly one of ``outcome`` (success), ``error`` (failure, of a kind the caller maps to an
    action) or ``canceled`` is set.
    """

    def __init__(self, plan: job.Plan, on_done: Callable[[SegmentTask], None] | None = None) -> None:
        super().__init__(f"Landcover: segmenting {plan.layer_name} with {plan.model.name}", QgsTask.CanCancel)
        self.plan = plan
        self.on_done = on_done
        self.outcome: job.Outcome | None = None
        self.error: LandcoverError | None = None
        self.canceled = False
        self.stage = ""
        self.feedback = QgsFeedback()  # lets Cancel interrupt a long export, not only the worker

    def cancel(self) -> None:
        self.feedback.cancel()
        super().cancel()

    def run(self) -> bool:  # background thread: no GUI calls here
        def progress(percent: float, message: str) -> None:
            if percent >= 0:
                self.setProgress(percent)
            if message:
                self.stage = message

        ended = run_guarded(lambda: job.execute(self.plan, progress, self.isCanceled, self.feedback))
        self.outcome, self.error, self.canceled = ended.value, ended.error, ended.canceled
        return self.outcome is not None

    def finished(self, result: bool) -> None:  # main thread
        if not result and self.isCanceled():
            self.canceled = True
        if self.outcome is not None:
            for line in self.outcome.warnings:
                QgsMessageLog.logMessage(f"worker warning: {line}", LOG_TAG, Qgis.Warning)
        if self.error is not None:
            text = f"{self.error} [{self.error.kind}]\n{self.error.details}".strip()
            QgsMessageLog.logMessage(text, LOG_TAG, Qgis.Critical)
        if self.on_done is not None:
            self.on_done(self)

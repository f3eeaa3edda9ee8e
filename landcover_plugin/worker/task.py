"""QgsTask that runs a prepared job off the main thread so QGIS stays responsive.

QGIS's own notice when a task ends ("Task complete" / "Task failed" with the task's description, shown by the
desktop for tasks that ran at least 5 s — the setting ``minTaskLengthForSystemNotification``) must not
contradict the plugin's message: from QGIS 3.26 the task is created with ``QgsTask.Silent``, which suppresses that
notice (the plugin's message bar entry says everything). QGIS 3.22 has no such flag, so there the task (a) ends
as *complete* when it was cancelled (a cancel is not a failure; only real errors end as *Task failed*) and (b)
sets its description to what happened — "… cancelled; nothing kept", "… done" — before QGIS reads it.
While it runs the description carries the current stage ("exporting …", "predict", "vectorising classes"), which
the task manager shows next to the progress bar (QgsTask has no separate progress text).
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import Qgis, QgsFeedback, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal, pyqtSlot

from .. import job
from ..errors import LandcoverError
from ..feedback import LOG_TAG
from .outcome import run_guarded

#: ``QgsTask.Silent`` (QGIS >= 3.26): no desktop notification when the task ends; None where it does not exist.
SILENT = getattr(QgsTask, "Silent", None)


class SegmentTask(QgsTask):
    """Runs :func:`job.execute`; ``on_done(task)`` is called on the main thread when it ends.

    After it ends exactly one of ``outcome`` (success), ``error`` (failure, of a kind the caller maps to an
    action) or ``canceled`` is set.
    """

    stageChanged = pyqtSignal(str)  # noqa: N815 - Qt signal naming

    def __init__(self, plan: job.Plan, on_done: Callable[[SegmentTask], None] | None = None) -> None:
        self.title = f"Landcover: segmenting {plan.layer_name} with {plan.model.name}"
        super().__init__(self.title, QgsTask.CanCancel | SILENT if SILENT else QgsTask.CanCancel)
        self.plan = plan
        self.on_done = on_done
        self.outcome: job.Outcome | None = None
        self.error: LandcoverError | None = None
        self.canceled = False
        self.stage = ""
        self.input_layer_id: str | None = None  # the segmented layer (results go above it); set by the dialog
        self.feedback = QgsFeedback()  # lets Cancel interrupt a long export, not only the worker
        self.stageChanged.connect(self._show_stage)  # queued: the slot runs on the main thread

    @pyqtSlot(str)
    def _show_stage(self, stage: str) -> None:
        if self.status() in (QgsTask.Queued, QgsTask.OnHold, QgsTask.Running):
            self.setDescription(f"{self.title} — {stage}")

    def cancel(self) -> None:
        self.feedback.cancel()
        super().cancel()

    def run(self) -> bool:  # background thread: no GUI calls here
        def progress(percent: float, message: str) -> None:
            if message and message != self.stage:
                self.stage = message
                self.stageChanged.emit(message)
            if percent >= 0:
                self.setProgress(percent)

        ended = run_guarded(lambda: job.execute(self.plan, progress, self.isCanceled, self.feedback))
        self.outcome, self.error, self.canceled = ended.value, ended.error, ended.canceled
        # A cancel ends the task as complete: it did what the user asked, and QGIS 3.22 would announce a
        # terminated task as "Task failed" (see the module docstring).
        return self.outcome is not None or self.canceled

    def finished(self, result: bool) -> None:  # main thread
        if self.outcome is None and self.error is None and self.isCanceled():
            self.canceled = True  # cancelled before run() started
        if self.outcome is not None:
            self.setDescription(f"Landcover: {self.plan.layer_name} segmented with {self.plan.model.name}")
            for line in self.outcome.warnings:
                QgsMessageLog.logMessage(f"worker warning: {line}", LOG_TAG, Qgis.Warning)
        elif self.canceled:
            self.setDescription(f"Landcover: segmenting {self.plan.layer_name} cancelled; nothing was kept")
        if self.error is not None:
            self.setDescription(f"Landcover: segmenting {self.plan.layer_name} failed ({self.error.kind})")
            text = f"{self.error} [{self.error.kind}]\n{self.error.details}".strip()
            QgsMessageLog.logMessage(text, LOG_TAG, Qgis.Critical)
        if self.on_done is not None:
            self.on_done(self)

"""Setting up the managed runtime from the GUI: the menu entries, the dialog's offer, one task at a time."""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtWidgets import QMessageBox

from . import runner
from .feedback import LOG_TAG, push_error
from .runtime_setup import RuntimeRequest, RuntimeStatus, runtime_status, satisfies
from .settings import Settings
from .worker.runtime_task import RuntimeSetupTask


def offer_label(tensorflow: bool = False) -> str:
    """The button text that offers the setup, with what it costs."""
    request_mb = RuntimeRequest(Settings.load().runtime_root(), tensorflow).download_mb
    what = "Add the TensorFlow runtime" if tensorflow else "Set up the Landcover runtime"
    return f"{what} — about {request_mb} MB to download"


def offer_tooltip() -> str:
    """What the setup does, for the offer button's tooltip."""
    request = RuntimeRequest(Settings.load().runtime_root())
    return (f"Creates a private Python environment in {request.root} and installs numpy, rasterio, ONNX Runtime and "
            f"Dask there with pip from the package index ({request.download_mb} MB download, {request.disk_mb} MB on "
            "disk). Nothing is installed into QGIS's Python or the system.")


class RuntimeManager:
    """Starts runtime setups (menu, dialog, error bars), asks first, and reports the result in the message bar.

    ``open_dialog(field)`` opens the Landcover dialog at a field, for errors whose fix is there.
    """

    def __init__(self, iface, open_dialog: Callable[[str], None] | None = None) -> None:
        self.iface = iface
        self.open_dialog = open_dialog
        self.task: RuntimeSetupTask | None = None
        self.on_ready: list[Callable[[RuntimeStatus], None]] = []  # e.g. the dialog clearing its offer

    def status(self) -> RuntimeStatus:
        return runtime_status(Settings.load().runtime_root())

    def confirm(self, request: RuntimeRequest, status: RuntimeStatus) -> bool:
        """Ask before downloading (tests replace this)."""
        extra = " and TensorFlow" if request.tensorflow else ""
        replace = "\n\nThe current runtime stays in use until the new one works." if status.state != "missing" else ""
        text = (
            f"Landcover will create its own Python environment in\n{request.root}\n\nand install numpy, rasterio, "
            f"ONNX Runtime, Dask{extra} there with pip from the package index: about {request.download_mb} MB to "
            f"download, {request.disk_mb} MB on disk. Nothing is installed into QGIS's Python or the system. pip's "
            f"index and proxy settings (pip.conf, HTTPS_PROXY) apply.{replace}\n\nIt runs in the background; Cancel "
            "in the task bar undoes it."
        )
        answer = QMessageBox.question(self.iface.mainWindow(), "Landcover runtime", text,
                                      QMessageBox.Ok | QMessageBox.Cancel, QMessageBox.Ok)
        return answer == QMessageBox.Ok

    def start(self, tensorflow: bool = False, reinstall: bool = False) -> RuntimeSetupTask | None:
        """Set the runtime up in the background; None if nothing needed doing, the user declined, or one runs."""
        bar = self.iface.messageBar()
        if self.task is not None:
            bar.pushMessage("Landcover", "the runtime is already being set up (see the task bar)", level=Qgis.Info,
                            duration=5)
            return None
        request = RuntimeRequest(Settings.load().runtime_root(), tensorflow)
        status = runtime_status(request.root)
        if satisfies(status, request) and not reinstall:
            bar.pushMessage("Landcover", f"{status.message}; use Repair / reinstall runtime… to rebuild it",
                            level=Qgis.Info, duration=8)
            return None
        if not self.confirm(request, status):
            return None
        self.task = RuntimeSetupTask(request, self._done)
        QgsApplication.taskManager().addTask(self.task)
        bar.pushMessage("Landcover", f"setting up the runtime in the background (about {request.download_mb} MB); "
                        "progress in the task bar, pip's output in Log Messages > Landcover", level=Qgis.Info,
                        duration=8)
        return self.task

    def _done(self, task: RuntimeSetupTask) -> None:
        self.task = None
        bar = self.iface.messageBar()
        if task.outcome is not None:
            runner.forget_checks()
            record = task.outcome.record
            QgsMessageLog.logMessage(f"{task.outcome.message}: {record.size_mb:.0f} MB, {record.packages}", LOG_TAG,
                                     Qgis.Success, notifyUser=False)
            bar.pushMessage("Landcover", f"runtime ready (Python {record.python_version}, {record.size_mb:.0f} MB). "
                            "Run the land-cover map again.", level=Qgis.Success, duration=15)
            for listener in list(self.on_ready):
                listener(task.outcome)
        elif task.canceled:
            bar.pushMessage("Landcover", "runtime setup cancelled; nothing was changed", level=Qgis.Info, duration=8)
        elif task.error is not None:
            push_error(bar, task.error, self.open_dialog, self.iface.mainWindow(),
                       setup_runtime=lambda: self.start(task.request.tensorflow, reinstall=True))

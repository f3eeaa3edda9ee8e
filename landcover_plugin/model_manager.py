"""The model manager: list the installed models, add a bundle or a Deepness ONNX file (path or URL), remove one.

Listing reads the bundle JSONs through the contract (no worker needed). Adding and removing run the
backend's ``models add`` / ``models remove`` in the worker Python, because reading an ONNX file's
metadata and graph needs onnxruntime, which QGIS's own Python does not have; the backend writes the
new model folder under a temporary name and renames it when complete, so a cancelled add leaves
nothing that is listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsTask
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from . import runner
from .contract import (
    BACKEND_PARENT,
    WORKER_MODULE,
    InternalError,
    LandcoverError,
    ListedModel,
    ProgressEvent,
    list_models,
    load_model_info,
    read_bundle_json,
)
from .feedback import push_error
from .settings import Settings
from .worker.outcome import run_guarded

COLUMNS = ("Name", "Origin", "Classes", "Pixel size", "Source and quality")


@dataclass(frozen=True)
class AddRequest:
    """What the user asked to add; empty fields mean "take it from the model's metadata"."""

    source: str
    name: str = ""
    classes: tuple[str, ...] = ()
    gsd_m: float = 0.0
    output: int = 0
    tile_size: int = 0
    sha256: str = ""

    def argv(self, python: str) -> list[str]:
        """The worker command (``python -m backend models add …``)."""
        argv = [python, "-m", WORKER_MODULE, "models", "add", self.source, "--progress", "json"]
        if self.name:
            argv += ["--name", self.name]
        if self.classes:
            argv += ["--classes", ",".join(self.classes)]
        if self.gsd_m > 0:
            argv += ["--gsd-m", f"{self.gsd_m:g}"]
        if self.output:
            argv += ["--output", str(self.output)]
        if self.tile_size:
            argv += ["--tile-size", str(self.tile_size)]
        if self.sha256:
            argv += ["--sha256", self.sha256]
        return argv


def describe_source(listed: ListedModel) -> str:
    """Provenance and quality in a few words: where the model comes from and its mIoU when the card has one."""
    try:
        _, data = read_bundle_json(listed.path)
    except Exception:  # noqa: BLE001 - a broken bundle already shows its error
        return listed.error or ""
    provenance = data.get("provenance") or {}
    parts = [str(provenance.get("data") or provenance.get("source") or "")]
    miou = (provenance.get("metrics") or {}).get("miou")
    if isinstance(miou, int | float):
        parts.append(f"mIoU {miou:.3f}")
    return "; ".join(p for p in parts if p)


class ModelAddTask(QgsTask):
    """Runs ``models add`` in the worker; ``on_done(task)`` on the main thread. Exactly one of
    ``added`` (the new bundle's JSON path), ``error`` or ``canceled`` is set when it ends."""

    def __init__(self, request: AddRequest, python: str, env: dict[str, str],
                 on_done: Callable[[ModelAddTask], None] | None = None) -> None:
        super().__init__(f"Landcover: adding model {request.source}", QgsTask.CanCancel)
        self.request, self.python, self.env, self.on_done = request, python, env, on_done
        self.added: str | None = None
        self.error = None
        self.canceled = False
        self.stage = ""

    def run(self) -> bool:
        def on_event(event) -> None:
            if isinstance(event, ProgressEvent) and event.percent is not None:
                self.setProgress(event.percent)
            if getattr(event, "message", ""):
                self.stage = event.message

        def work() -> str:
            result = runner.run_worker(self.request.argv(self.python), self.env, cwd=str(BACKEND_PARENT),
                                       on_event=on_event, is_canceled=self.isCanceled)
            if result.done is None:
                raise InternalError("the worker added no model and reported no error", "\n".join(result.log))
            return result.done.output

        ended = run_guarded(work)
        self.added, self.error, self.canceled = ended.value, ended.error, ended.canceled
        return self.added is not None

    def finished(self, result: bool) -> None:
        if not result and self.isCanceled():
            self.canceled = True
        if self.on_done is not None:
            self.on_done(self)


class ModelManagerDialog(QDialog):
    """Installed models, and the form to add one; ``on_changed(spec)`` runs after a model was added (its spec)
    or removed (None)."""

    def __init__(self, parent=None, on_changed: Callable[[str | None], None] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Landcover models")
        self.setObjectName("landcoverModelManager")
        self.on_changed = on_changed
        self.task: ModelAddTask | None = None
        self.listed: list[ListedModel] = []
        layout = QVBoxLayout(self)
        self.bar = QgsMessageBar(self)
        self.bar.setSizePolicy(QSizePolicy.Minimum, QSizePolicy.Fixed)
        layout.addWidget(self.bar)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        layout.addWidget(self.table)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setObjectName("landcoverRemoveModel")
        self.remove_button.clicked.connect(self.remove_selected)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.remove_button)
        layout.addLayout(row)
        layout.addWidget(self._build_add_box())
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(900, 560)
        self.refresh()

    def _build_add_box(self) -> QGroupBox:
        box = QGroupBox("Add a model: a Landcover bundle (.json) or a Deepness segmentation model (.onnx), file or URL")
        form = QFormLayout(box)
        self.source_edit = QLineEdit()
        self.source_edit.setObjectName("landcoverModelSource")
        self.source_edit.setPlaceholderText("/path/to/model.onnx, bundle .json, or https://…/model.onnx")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.source_edit)
        row.addWidget(browse)
        form.addRow("File or URL", row)
        self.name_edit = QLineEdit()
        self.name_edit.setObjectName("landcoverModelName")
        self.name_edit.setPlaceholderText("default: from the file name")
        form.addRow("Name", self.name_edit)
        self.classes_edit = QLineEdit()
        self.classes_edit.setObjectName("landcoverModelClasses")
        self.classes_edit.setPlaceholderText("comma-separated, in output order; default: the model's class_names")
        form.addRow("Class names", self.classes_edit)
        self.gsd_spin = QDoubleSpinBox()
        self.gsd_spin.setObjectName("landcoverModelPixelSize")
        self.gsd_spin.setRange(0.0, 1000.0)
        self.gsd_spin.setDecimals(3)
        self.gsd_spin.setSuffix(" m")
        self.gsd_spin.setSpecialValueText("from the model's resolution")
        form.addRow("Pixel size", self.gsd_spin)
        self.output_spin = QSpinBox()
        self.output_spin.setRange(0, 16)
        form.addRow("Output (models with several)", self.output_spin)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setSpecialValueText("from the model")
        form.addRow("Tile size", self.tile_spin)
        self.sha_edit = QLineEdit()
        self.sha_edit.setPlaceholderText("optional SHA-256 the file must have (recommended for URLs)")
        form.addRow("SHA-256", self.sha_edit)
        self.add_button = QPushButton("Add")
        self.add_button.setObjectName("landcoverAddModel")
        self.add_button.clicked.connect(self.add)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("landcoverCancelAdd")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        row = QHBoxLayout()
        row.addWidget(self.progress)
        row.addWidget(self.add_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        self._busy(False)
        return box

    # ------------------------------------------------------------------ list
    def refresh(self) -> None:
        """Fill the table from the model folders (the settings' models folder included)."""
        self.listed = list_models(Settings.load().model_dirs())
        self.table.setRowCount(len(self.listed))
        for r, listed in enumerate(self.listed):
            info = listed.info
            cells = (
                info.name if info else f"{listed.key} (unreadable)",
                listed.origin,
                ", ".join(c.name for c in info.classes) if info else "",
                f"{info.gsd_m:g} m" if info and info.gsd_m else "",
                describe_source(listed) if info else (listed.error or ""),
            )
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(listed.path))
                self.table.setItem(r, c, item)
        self._selection_changed()

    def selected(self) -> ListedModel | None:
        rows = {i.row() for i in self.table.selectedItems()}
        return self.listed[rows.pop()] if len(rows) == 1 else None

    def _selection_changed(self) -> None:
        listed = self.selected()
        self.remove_button.setEnabled(listed is not None and listed.origin == "user")

    def remove_selected(self) -> bool:
        """Remove the selected user model through the backend; True when it is gone."""
        listed = self.selected()
        if listed is None:
            return False
        settings = Settings.load()
        try:
            python = settings.find_worker_python()
            runner.run_worker([python, "-m", WORKER_MODULE, "models", "remove", listed.key, "--progress", "json"],
                              settings.worker_env(), cwd=str(BACKEND_PARENT))
        except Exception as exc:  # noqa: BLE001 - LandcoverError kinds, shown with their action
            self._show_error(exc)
            return False
        self.bar.pushMessage("Landcover", f"removed {listed.info.name if listed.info else listed.key}",
                             level=Qgis.Success, duration=5)
        self._changed()
        return True

    # ------------------------------------------------------------------- add
    def request(self) -> AddRequest:
        classes = tuple(c.strip() for c in self.classes_edit.text().split(",") if c.strip())
        return AddRequest(source=self.source_edit.text().strip(), name=self.name_edit.text().strip(),
                          classes=classes, gsd_m=self.gsd_spin.value(), output=self.output_spin.value(),
                          tile_size=self.tile_spin.value(), sha256=self.sha_edit.text().strip().lower())

    def add(self) -> ModelAddTask | None:
        """Start adding what the form says, in the background; None if it did not start."""
        from .errors import InputError

        request = self.request()
        settings = Settings.load()
        try:
            if not request.source:
                raise InputError("choose a model file or enter a URL first")
            python = settings.find_worker_python()
        except Exception as exc:  # noqa: BLE001 - shown with its kind's action
            self._show_error(exc)
            return None
        self.bar.clearWidgets()
        self.task = ModelAddTask(request, python, settings.worker_env(), self._added)
        self._busy(True)
        self.progress.setValue(0)
        self.task.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        QgsApplication.taskManager().addTask(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _added(self, task: ModelAddTask) -> None:
        self.task = None
        self._busy(False)
        if task.added is not None:
            try:
                info = load_model_info(task.added)
            except LandcoverError as exc:
                self._show_error(exc)
                return
            gsd = f", {info.gsd_m:g} m/px" if info.gsd_m else ""
            self.bar.pushMessage("Landcover", f"added {info.name!r}: {', '.join(c.name for c in info.classes)}{gsd}",
                                 level=Qgis.Success, duration=0)
            self.source_edit.clear()
            self._changed(info.spec)
        elif task.canceled:
            self.bar.pushMessage("Landcover", "adding the model was cancelled; nothing was added", level=Qgis.Info,
                                 duration=5)
        elif task.error is not None:
            self._show_error(task.error)

    # --------------------------------------------------------------- helpers
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model", Settings.load().browse_dir or str(Path.home()),
                                              "Models (*.onnx *.json)")
        if path:
            self.source_edit.setText(path)

    def _busy(self, busy: bool) -> None:
        self.add_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy)

    def _show_error(self, exc: Exception) -> None:
        error = exc if isinstance(exc, LandcoverError) else InternalError(str(exc))
        self.last_error = error
        self.bar.clearWidgets()
        push_error(self.bar, error, None, self)

    def _changed(self, select: str | None = None) -> None:
        self.refresh()
        if self.on_changed is not None:
            self.on_changed(select)


"""The Landcover dialog: choose layer, model, area and outputs, validate, start a background task."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsMessageLog,
    QgsRasterLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox, QgsMessageBar
from qgis.PyQt.QtCore import Qt, QTimer, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import export, job
from .contract import (
    ENV_PYTHON,
    ModelInfo,
    gsd_is_far,
    list_models,
    load_model_info,
    untrained_model,
    user_models_dir,
)
from .errors import DependencyError, InputError, LandcoverError, ModelError
from .feedback import LOG_TAG, clear_messages, push_error, push_message, push_result, push_setup_offer
from .results import add_results
from .runtime_setup import runtime_status
from .runtime_ui import RuntimeManager
from .settings import Settings
from .styling import areas_oneline, areas_summary, result_layer_name
from .worker.task import SILENT, SegmentTask

UNTRAINED_SPEC = "untrained:Unet:resnet18"
PLUGIN_DIR = Path(__file__).resolve().parent

#: Worker time per 256 x 256 px tile, end to end (read, predict, blend, write), ONNX Runtime on 2 cores:
#: U-Net-ResNet18 30.9 ms, FPN-ResNet18 107.6 ms (benchmarks/results/runtimes.md, 2048² raster, overlap 32,
#: batch 8). Other tile sizes scale with the tile's area; the estimate is for this kind of machine, and says so.
MS_PER_TILE_256 = {"Unet": 30.9, "Linknet": 30.9, "FPN": 107.6}
MEASURED_ON = "2 cores"
#: Resampling that multiplies the pixel count by more than this asks first, with the output size and time.
RESAMPLE_ASK_FACTOR = 4.0


@dataclass(frozen=True)
class ResampleEstimate:
    """What resampling an area to the model's resolution makes: size, growth and worker time."""

    layer_name: str
    from_m: float  # the layer's pixel size (m, geometric mean of both axes)
    to_m: float  # the model's
    width: int
    height: int
    factor: float  # output pixels / input pixels
    tiles: int
    seconds: float

    @property
    def class_mb(self) -> float:
        """The class raster, uncompressed (1 byte per pixel)."""
        return self.width * self.height / 1e6

    @property
    def input_mb(self) -> float:
        """The resampled RGB input the worker reads (a temporary file; at most 3 bytes per pixel)."""
        return 3 * self.width * self.height / 1e6

    def describe(self) -> str:
        """Two sentences for the question before a large resample."""
        text = (f"Resampling {self.layer_name!r} from {self.from_m:.3g} m to the model's {self.to_m:g} m pixels "
                f"multiplies the pixel count by {self.factor:,.0f}: the result is {self.width:,} x {self.height:,} px "
                f"(a {format_mb(self.class_mb)} class raster, up to {format_mb(self.input_mb)} of temporary input) "
                f"and takes {format_duration(self.seconds)} ({self.tiles:,} tiles at "
                f"{self.seconds / max(self.tiles, 1) * 1000:.0f} ms each as measured on {MEASURED_ON}; slower "
                "machines take longer).")
        if self.from_m / self.to_m > 4:
            text += (" Upsampling adds no detail: on imagery this much coarser than the model's, results stay "
                     "poor; imagery near the model's resolution works better.")
        return text


def format_mb(mb: float) -> str:
    return f"{mb / 1000:,.1f} GB" if mb >= 1000 else f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def format_duration(seconds: float) -> str:
    """``about 40 s``, ``about 12 min``, ``about 2 h 5 min``."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60} min"


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    """Tiles the worker predicts for a raster (tiles advance by ``tile - overlap``, as in backend/tiling.py)."""
    stride = max(1, tile - overlap)
    return math.prod(max(1, math.ceil(max(n - overlap, 1) / stride)) for n in (width, height))


def resample_estimate(layer: QgsRasterLayer, model: ModelInfo, area: export.Area | None = None,
                      overlap: int | None = None) -> ResampleEstimate | None:
    """Size and time of resampling ``area`` of ``layer`` to the model's resolution; None when the pixel sizes
    match (no resampling happens) or either is unknown.

    Raises:
        InputError: the area does not overlap the layer.
    """
    size = export.layer_pixel_size_m(layer)
    if not model.gsd_m or not gsd_is_far(size, model.gsd_m):
        return None
    rect = export.clip_to_layer(layer, area or export.Area())
    pixel = model.gsd_m / export.metres_per_unit(layer.crs(), rect)  # the export's pixel size (job.prepare)
    width, height = max(1, round(rect.width() / pixel)), max(1, round(rect.height() / pixel))
    native = (max(1.0, rect.width() / abs(layer.rasterUnitsPerPixelX()))
              * max(1.0, rect.height() / abs(layer.rasterUnitsPerPixelY())))
    tiles = tile_count(width, height, model.tile_size, model.overlap if overlap is None else overlap)
    ms = MS_PER_TILE_256.get(model.architecture, MS_PER_TILE_256["Unet"]) * (model.tile_size / 256) ** 2
    return ResampleEstimate(layer.name(), math.sqrt(size[0] * size[1]), model.gsd_m, width, height,
                            width * height / native, tiles, tiles * ms / 1000)


def help_target(plugin_dir: Path = PLUGIN_DIR) -> QUrl:
    """What the Help button opens: the plugin guide where it exists, else the README, else the homepage.

    The zip (scripts/package_plugin.py) ships ``docs/plugin.md`` and ``README.md`` inside the plugin folder;
    the source tree has them beside the plugin. A local file works offline and always matches the installed
    version; the homepage in metadata.txt is only the last resort.
    """
    for path in (plugin_dir / "docs" / "plugin.md", plugin_dir.parent / "docs" / "plugin.md",
                 plugin_dir / "README.md", plugin_dir.parent / "README.md"):
        if path.is_file():
            return QUrl.fromLocalFile(str(path))
    import configparser

    meta = configparser.ConfigParser()
    meta.read(plugin_dir / "metadata.txt", encoding="utf-8")
    return QUrl(meta.get("general", "homepage", fallback="https://plugins.qgis.org/"))


def _after_qgis_notice(push: Callable[[], object]) -> None:
    """Push a result message after QGIS's own end-of-task notice, so it is the one on top of the message bar.

    QGIS 3.22 announces a finished task ("Task complete", falling back to its message bar when the desktop has no
    notification service) right after the task's finished() handler, i.e. after our message, and would cover it.
    From 3.26 the task is silent and the message goes out at once.
    """
    if SILENT:
        push()
    else:
        QTimer.singleShot(0, push)


def report_task(iface, task: SegmentTask, add_to_map: bool = True, open_dialog=None, setup_runtime=None) -> None:
    """Show a finished task's result to the user: layers on the map, summary or error in the message bar.

    ``open_dialog(field)`` opens the dialog at the field that fixes an error (see :mod:`feedback`);
    ``setup_runtime()`` sets up the managed runtime (offered for dependency errors).
    """
    bar = iface.messageBar()
    if task.outcome is not None:
        outcome = task.outcome
        if add_to_map:
            try:
                add_results(outcome, input_layer_id=getattr(task, "input_layer_id", None))
            except LandcoverError as exc:
                push_error(bar, exc, open_dialog, iface.mainWindow())
                return
        summary = areas_summary(outcome.areas)
        how = f" ({outcome.how_run()})" if outcome.how_run() else ""  # e.g. " (INT8, TTA d4)"
        QgsMessageLog.logMessage(f"{outcome.layer_name} → {outcome.output}{how}\n{summary}\nareas: "
                                 f"{outcome.files.areas_csv}", LOG_TAG, Qgis.Info)
        name = result_layer_name(outcome.layer_name, outcome.model.name)

        def show_table():
            from .area_table import show_area_table

            return show_area_table(outcome.areas, name, outcome.files.areas_csv, iface.mainWindow())

        def push() -> None:
            for warning in outcome.warnings:  # below the result, which is what the user looks for first
                push_message(bar, "Landcover", warning, Qgis.Warning, 0)
            push_result(bar, "Landcover", f"{name}: {areas_oneline(outcome.areas)}", show_table)

        _after_qgis_notice(push)
    elif task.canceled:
        layer = task.plan.layer_name if getattr(task, "plan", None) is not None else "the layer"
        _after_qgis_notice(lambda: push_message(bar, "Landcover", f"segmenting {layer} was cancelled; no output "
                                                "was kept", Qgis.Info, 10))
    elif task.error is not None:
        _after_qgis_notice(lambda: push_error(bar, task.error, open_dialog, iface.mainWindow(), setup_runtime))


@dataclass(frozen=True)
class ModelEntry:
    """One line of the model list: a usable model, or a broken bundle shown with its error."""

    label: str
    info: ModelInfo | None
    error: str | None = None


class LandcoverDialog(QDialog):
    """Non-modal dialog; ``run()`` validates and starts a :class:`SegmentTask`."""

    def __init__(self, iface, parent: QWidget | None = None, runtime: RuntimeManager | None = None) -> None:
        super().__init__(parent or iface.mainWindow())
        self.iface = iface
        self.runtime = runtime or RuntimeManager(iface, self.focus_field)
        self.runtime.on_ready.append(lambda status: self.bar.clearWidgets())
        self.tasks: list[SegmentTask] = []
        self.last_error: LandcoverError | None = None
        self._entries: list[ModelEntry] = []
        self.setWindowTitle("Landcover: land-cover map from an orthophoto")
        self._build()
        self.refresh_models()
        self._load_settings()

    # ----------------------------------------------------------------- UI
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.bar = QgsMessageBar(self)
        self.bar.setSizePolicy(QSizePolicy.Minimum, QSizePolicy.Fixed)
        layout.addWidget(self.bar)
        # The sections scroll between the message bar and the buttons, so Run stays on screen on short
        # (laptop) screens; the dialog opens as tall as its content when the screen allows.
        content = QWidget()
        sections = QVBoxLayout(content)
        sections.setContentsMargins(0, 0, 0, 0)
        for build in (self._build_input, self._build_model, self._build_area, self._build_processing,
                      self._build_outputs):
            box = QGroupBox()
            build(box, QFormLayout(box))
            sections.addWidget(box)
        self.scroll = QScrollArea()
        self.scroll.setWidget(content)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setMinimumWidth(content.sizeHint().width() + self.scroll.verticalScrollBar().sizeHint().width())
        layout.addWidget(self.scroll, 1)
        # Only the inputs that matter for the current choices are editable.
        self.area_polygons.toggled.connect(self._update_enabled)
        self.confidence_check.toggled.connect(self._update_enabled)
        self.polygons_check.toggled.connect(self._update_enabled)
        self.layer_combo.layerChanged.connect(self._update_layer_info)
        self.resample_check.toggled.connect(self._update_layer_info)
        self._update_enabled()

        self.buttons = QDialogButtonBox(QDialogButtonBox.Close | QDialogButtonBox.Help)
        self.run_button = self.buttons.addButton("Run", QDialogButtonBox.AcceptRole)
        self.buttons.accepted.connect(self.run)
        self.buttons.rejected.connect(self.reject)
        self.buttons.helpRequested.connect(self.show_help)
        layout.addWidget(self.buttons)
        self._fit_to_screen(content)

    def _fit_to_screen(self, content: QWidget) -> None:
        """As tall as the sections need, but no taller than the screen's free area (then they scroll)."""
        screen = QApplication.primaryScreen()
        available = screen.availableGeometry().height() if screen is not None else 10**6
        chrome = self.bar.sizeHint().height() + self.buttons.sizeHint().height() + 60  # margins, title bar
        self.resize(self.scroll.minimumWidth() + 24, min(content.sizeHint().height() + chrome, int(available * 0.95)))

    def _build_input(self, box: QGroupBox, form: QFormLayout) -> None:
        box.setTitle("Input")
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        self.select_active_layer()
        form.addRow("Raster layer", self.layer_combo)
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText("default: the first bands (alpha skipped), e.g. 1,2,3")
        form.addRow("Bands", self.bands_edit)
        self.layer_label = QLabel()
        self.layer_label.setWordWrap(True)
        form.addRow("", self.layer_label)

    def _build_model(self, box: QGroupBox, form: QFormLayout) -> None:
        box.setTitle("Model")
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse_model)
        self.models_button = QPushButton("Models…")
        self.models_button.setObjectName("landcoverModelsButton")
        self.models_button.setToolTip("Add a Deepness ONNX model or a bundle (file or URL), or remove one")
        self.models_button.clicked.connect(self.open_models)
        row.addWidget(self.model_combo)
        row.addWidget(self.browse_button)
        row.addWidget(self.models_button)
        form.addRow("Model", row)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        form.addRow("", self.model_label)
        self.model_combo.currentIndexChanged.connect(self._model_changed)

    def _build_area(self, box: QGroupBox, form: QFormLayout) -> None:
        box.setTitle("Area")
        self.area_layer = QRadioButton("Whole layer")
        self.area_extent = QRadioButton("Current map extent")
        self.area_polygons = QRadioButton("Features of a polygon layer")
        self.area_group = QButtonGroup(self)
        for i, button in enumerate((self.area_layer, self.area_extent, self.area_polygons)):
            self.area_group.addButton(button, i)
            form.addRow(button)
        self.area_layer.setChecked(True)
        self.polygon_combo = QgsMapLayerComboBox()
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.selected_only = QCheckBox("Selected features only")
        form.addRow("Polygon layer", self.polygon_combo)
        form.addRow("", self.selected_only)

    def _build_processing(self, box: QGroupBox, form: QFormLayout) -> None:
        box.setTitle("Processing")
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setRange(0, 512)
        self.overlap_spin.setSuffix(" px")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.resample_check = QCheckBox("Resample to the model's resolution when the pixel size differs")
        self.precision_combo = self._choice_combo(job.PRECISION_CHOICES, job.PRECISION_HELP)
        self.tta_combo = self._choice_combo(job.TTA_CHOICES, job.TTA_HELP)
        self.python_widget = QgsFileWidget()
        self.python_widget.setStorageMode(QgsFileWidget.GetFile)
        self.python_widget.lineEdit().setPlaceholderText(
            f"default: ${ENV_PYTHON}, else the Landcover runtime (Raster > Landcover > Set up runtime…)")
        form.addRow("Tile overlap", self.overlap_spin)
        form.addRow("Batch size", self.batch_spin)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Test-time augmentation", self.tta_combo)
        form.addRow("", self.resample_check)
        form.addRow("Worker Python", self.python_widget)
        self.runtime_widget = self._folder_widget(str(Settings(runtime_dir="").runtime_root()))
        self.runtime_widget.setToolTip("Where Raster > Landcover > Set up runtime… puts the worker's Python")
        self.models_widget = self._folder_widget(str(user_models_dir()))
        self.models_widget.setToolTip("Your model bundles (.json), listed by name beside the bundled ones")
        self.models_widget.fileChanged.connect(lambda _: self._models_folder_changed())
        form.addRow("Runtime folder", self.runtime_widget)
        form.addRow("Models folder", self.models_widget)

    def _build_outputs(self, box: QGroupBox, form: QFormLayout) -> None:
        box.setTitle("Outputs")
        self.output_widget = self._save_widget("GeoTIFF (*.tif)", "[temporary file]")
        self.confidence_check = QCheckBox("Confidence raster")
        self.confidence_widget = self._save_widget("GeoTIFF (*.tif)", "[temporary file]")
        self.polygons_check = QCheckBox("Polygons per class")
        self.polygons_widget = self._save_widget("GeoPackage (*.gpkg)", "[temporary file]")
        self.add_to_map = QCheckBox("Add results to the map")
        self.add_to_map.setChecked(True)
        form.addRow("Class raster", self.output_widget)
        form.addRow(self.confidence_check, self.confidence_widget)
        form.addRow(self.polygons_check, self.polygons_widget)
        form.addRow("", self.add_to_map)

    def focus_field(self, name: str) -> None:
        """Show the dialog with the field ``name`` (layer, model, worker_python, output) focused."""
        widget = {"layer": self.layer_combo, "model": self.model_combo, "worker_python": self.python_widget,
                  "runtime_dir": self.runtime_widget, "output": self.output_widget}.get(name)
        self.show()
        self.raise_()
        self.activateWindow()
        if widget is not None:
            widget.setFocus(Qt.OtherFocusReason)

    def _update_enabled(self) -> None:
        polygons = self.area_polygons.isChecked()
        self.polygon_combo.setEnabled(polygons)
        self.selected_only.setEnabled(polygons)
        self.confidence_widget.setEnabled(self.confidence_check.isChecked())
        self.polygons_widget.setEnabled(self.polygons_check.isChecked())

    def select_active_layer(self) -> bool:
        """Select the map's active layer if it is a raster; whether it was."""
        active = self.iface.activeLayer()
        if isinstance(active, QgsRasterLayer):
            self.layer_combo.setLayer(active)
            return True
        return False

    def _update_layer_info(self) -> None:
        """Show the layer's bands and pixel size next to what the model expects, and what Run will do about it."""
        layer = self.layer_combo.currentLayer()
        model = self.current_model()
        if layer is None:
            self.layer_label.setText("")
            return
        size = export.layer_pixel_size_m(layer)
        text = f"{layer.bandCount()} band(s), " + (
            f"{export.describe_pixel_size(size)}/pixel" if size else export.describe_pixel_size(size))
        if model is not None and gsd_is_far(size, model.gsd_m):
            text += " — " + self.resample_hint(layer, model)
        self.layer_label.setText(text)

    def resample_hint(self, layer: QgsRasterLayer, model: ModelInfo) -> str:
        """What happens about a pixel size far from the model's, given whether Resample is ticked."""
        try:
            estimate = resample_estimate(layer, model)
        except LandcoverError:
            estimate = None
        if estimate is None:
            return f"the model expects {model.gsd_m:g} m"
        growth = (f"{estimate.factor:,.0f}x the pixels" if estimate.factor >= 1
                  else f"1/{1 / estimate.factor:,.0f} of the pixels")
        upsample = estimate.from_m / estimate.to_m
        if self.resample_check.isChecked():
            text = f"Run resamples it to the model's {model.gsd_m:g} m first ({growth} for the whole layer)"
            if estimate.factor > RESAMPLE_ASK_FACTOR:
                text += "; you will see the size and time before it starts"
            return text
        if upsample > 4:
            return (f"far coarser than the model's {model.gsd_m:g} m: results will be poor; resampling would make "
                    f"{growth} (slow) and adds no detail — imagery near {model.gsd_m:g} m works better")
        if upsample > 1:
            return (f"the model expects {model.gsd_m:g} m: tick Resample to run at its resolution ({growth}), or Run "
                    "asks")
        return (f"the model expects {model.gsd_m:g} m: tick Resample to run at its resolution ({growth}, faster and "
                "closer to what the model learned), or Run asks")

    @staticmethod
    def _choice_combo(choices, tooltip: str) -> QComboBox:
        """A combo of ``(value, label)`` choices: the labels shown, the values (the contract's) as item data."""
        combo = QComboBox()
        for value, label in choices:
            combo.addItem(label, value)
        combo.setToolTip(tooltip)
        return combo

    @staticmethod
    def _select_data(combo: QComboBox, value: str) -> None:
        """Select the item whose data is ``value``; an unknown value (saved by hand) keeps the current item."""
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    @staticmethod
    def _folder_widget(placeholder: str) -> QgsFileWidget:
        widget = QgsFileWidget()
        widget.setStorageMode(QgsFileWidget.GetDirectory)
        widget.lineEdit().setPlaceholderText(f"default: {placeholder}")
        return widget

    def _models_folder_changed(self) -> None:
        settings = Settings.load()
        settings.models_dir = self.models_widget.filePath().strip()
        settings.save()
        self.refresh_models()

    @staticmethod
    def _save_widget(file_filter: str, placeholder: str) -> QgsFileWidget:
        widget = QgsFileWidget()
        widget.setStorageMode(QgsFileWidget.SaveFile)
        widget.setFilter(file_filter)
        widget.lineEdit().setPlaceholderText(placeholder)
        return widget

    # ------------------------------------------------------------- models
    def open_models(self):
        """The model manager; what it adds is selected here when it closes the add."""
        from .model_manager import ModelManagerDialog

        self.model_manager = ModelManagerDialog(self, on_changed=self.refresh_models)
        self.model_manager.show()
        return self.model_manager

    def refresh_models(self, select: str | None = None) -> None:
        """Fill the model list: bundled and user bundles (broken ones disabled, with their error), remembered
        files, and the untrained check model."""
        settings = Settings.load()
        entries = [ModelEntry(f"{m.info.name} ({m.origin})", m.info) if m.info is not None else
                   ModelEntry(f"{m.key} ({m.origin}, unreadable)", None, m.error)
                   for m in list_models(settings.model_dirs())]
        known = {str(e.info.source) for e in entries if e.info is not None}
        for path in settings.extra_models:
            if path not in known and Path(path).is_file():
                try:
                    info = load_model_info(path)
                    entries.append(ModelEntry(f"{info.name} (file)", info))
                except LandcoverError as exc:
                    entries.append(ModelEntry(f"{Path(path).name} (file, unreadable)", None, str(exc)))
        check = untrained_model(UNTRAINED_SPEC)
        entries.append(ModelEntry(f"{check.name} (random weights: installation check only)", check))
        self._entries = entries
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for i, entry in enumerate(entries):
            self.model_combo.addItem(entry.label, entry.info.spec if entry.info else None)
            if entry.info is None:
                item = self.model_combo.model().item(i)
                item.setEnabled(False)  # listed so the user sees why it is not offered
                item.setToolTip(entry.error or "")
        usable = [i for i, e in enumerate(entries) if e.info is not None]
        self.model_combo.setCurrentIndex(usable[0] if usable else -1)
        self.model_combo.blockSignals(False)
        if select is not None:
            self.select_model(select)
        self._model_changed()

    def add_model_file(self, path: str) -> ModelInfo:
        """Add a bundle JSON to the list (and remember it) and select it.

        Raises:
            ModelError: it is not a readable bundle.
        """
        info = load_model_info(path)
        settings = Settings.load()
        if str(info.source) not in settings.extra_models:
            settings.extra_models.append(str(info.source))
            settings.save()
        self.refresh_models(select=info.spec)
        return info

    def select_model(self, spec: str) -> bool:
        """Select a listed model by spec (path or untrained:...) or name."""
        for i, entry in enumerate(self._entries):
            if entry.info is not None and spec in (entry.info.spec, entry.info.name):
                self.model_combo.setCurrentIndex(i)
                return True
        return False

    def current_model(self) -> ModelInfo | None:
        """The selected model, or None."""
        i = self.model_combo.currentIndex()
        return self._entries[i].info if 0 <= i < len(self._entries) else None

    def _browse_model(self) -> None:
        settings = Settings.load()
        start = settings.browse_dir or str(user_models_dir(settings.environ()))
        path, _ = QFileDialog.getOpenFileName(self, "Model bundle", start, "Landcover model (*.json)")
        if path:
            settings = Settings.load()
            settings.browse_dir = str(Path(path).parent)
            settings.save()
            try:
                self.add_model_file(path)
            except LandcoverError as exc:
                self.show_error(exc)

    def _model_changed(self) -> None:
        info = self.current_model()
        if info is None:
            self.model_label.setText("No model: add one with Models… (a Deepness ONNX or a bundle), or Browse… for a "
                                     "bundle .json")
            return
        self.model_label.setText(info.describe())
        self._update_layer_info()
        self.overlap_spin.setMaximum(max(0, info.tile_size // 2))
        self.overlap_spin.setValue(info.overlap)
        self.batch_spin.setValue(info.default_batch_size)

    # ------------------------------------------------------------ request
    def area(self, layer: QgsRasterLayer) -> export.Area:
        """The chosen area in the layer's CRS.

        Raises:
            InputError: polygon area without usable polygons.
        """
        if self.area_extent.isChecked():
            canvas = self.iface.mapCanvas()
            return export.extent_area(canvas.extent(), canvas.mapSettings().destinationCrs(), layer)
        if self.area_polygons.isChecked():
            return export.polygon_area(self.polygon_combo.currentLayer(), layer, self.selected_only.isChecked())
        return export.Area()

    def request(self) -> job.SegmentRequest:
        """The user's choices as a request.

        Raises:
            LandcoverError: something required is missing.
        """
        layer = self.layer_combo.currentLayer()
        if layer is None:
            raise InputError("no raster layer chosen; add an orthophoto to the map and select it as input")
        model = self.current_model()
        if model is None:
            raise ModelError("no model chosen; add one with Models… or Browse… for a bundle .json")
        out = self.output_widget.filePath().strip()
        if out and not out.lower().endswith((".tif", ".tiff")):
            out += ".tif"
        # "TEMP": the job writes a temporary file
        confidence = self.confidence_widget.filePath().strip() or "TEMP" if self.confidence_check.isChecked() else None
        polygons = self.polygons_widget.filePath().strip() or "TEMP" if self.polygons_check.isChecked() else None
        return job.SegmentRequest(
            layer=layer, model=model, area=self.area(layer), overlap=self.overlap_spin.value(),
            batch_size=self.batch_spin.value(), bands=job.parse_bands(self.bands_edit.text()),
            resample=self.resample_check.isChecked(), output=out or None, confidence=confidence, polygons=polygons,
            python=self.python_widget.filePath().strip() or None, precision=self.precision_combo.currentData(),
            tta=self.tta_combo.currentData(),
        )

    # ---------------------------------------------------------------- run
    def confirm(self, message: str) -> bool | None:
        """Ask about a warning: True resample, False run as is, None cancel (tests replace this)."""
        answer = QMessageBox.question(self, "Landcover", message,
                                      QMessageBox.Yes | QMessageBox.No | QMessageBox.Cancel, QMessageBox.Yes)
        return {QMessageBox.Yes: True, QMessageBox.No: False}.get(answer)

    def show_error(self, error: LandcoverError) -> None:
        """Show an error inside the dialog, with its kind's action (see :mod:`feedback`)."""
        self.last_error = error
        self.bar.clearWidgets()
        push_error(self.bar, error, self.focus_field, self, self.setup_runtime)

    def setup_runtime(self):
        """Set up the managed runtime (the offer's button) in the chosen runtime folder; the task, or None."""
        self._save_settings()
        return self.runtime.start()

    def check_worker(self) -> bool:
        """Offer the runtime setup in the dialog when no worker Python is usable yet; True if one is."""
        if self.python_widget.filePath().strip():
            return True  # an explicit choice is checked when Run is pressed
        chosen = Settings(runtime_dir=self.runtime_widget.filePath().strip())  # the folder field, maybe unsaved
        try:
            chosen.find_worker_python("")
            return True
        except DependencyError as exc:
            # Short enough for the bar beside the button (which says what it does); the whole story in Details.
            short = {"missing": "no worker runtime yet", "outdated": "the worker runtime needs an update",
                     "broken": "the worker runtime is damaged"}[runtime_status(chosen.runtime_root()).state]
            self.bar.clearWidgets()
            push_setup_offer(self.bar, short, self.setup_runtime, exc, self)
            return False

    def ask(self, message: str) -> bool:
        """A Yes/No question (the size and time of a large resample); tests replace this."""
        answer = QMessageBox.question(self, "Landcover", message, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def show_help(self) -> QUrl:
        """Open the plugin's guide (see :func:`help_target`); returns what was opened."""
        url = help_target()
        QDesktopServices.openUrl(url)
        return url

    def clear_errors(self) -> None:
        """Forget the errors shown in the dialog (they belong to an earlier attempt)."""
        self.last_error = None
        self.bar.clearWidgets()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API name
        super().showEvent(event)
        if event.spontaneous():
            return  # un-minimised by the window system, not opened again
        # Each open starts from the map: the active raster layer, and no errors from an earlier attempt.
        self.select_active_layer()
        self.clear_errors()
        self.check_worker()

    def run(self) -> SegmentTask | None:
        """Validate the choices and start the background task; None if it did not start."""
        self.clear_errors()
        try:
            request = self.request()
            asked_size = False
            for warning in job.validate(request):
                question = f"{warning}.\n\nResample the layer to the model's resolution first?"
                estimate = resample_estimate(request.layer, request.model, request.area, request.overlap)
                if estimate is not None and estimate.factor > RESAMPLE_ASK_FACTOR:
                    question += f"\n\n{estimate.describe()}"
                answer = self.confirm(question)
                if answer is None:
                    return None
                if answer:
                    request.resample = True
                    self.resample_check.setChecked(True)
                    asked_size = True  # the question showed the size and time
            if request.resample and not asked_size:
                estimate = resample_estimate(request.layer, request.model, request.area, request.overlap)
                if (estimate is not None and estimate.factor > RESAMPLE_ASK_FACTOR
                        and not self.ask(f"{estimate.describe()}\n\nContinue?")):
                    return None
            self._save_settings()  # the job reads the runtime and models folders from the settings
            plan = job.prepare(request)
        except LandcoverError as exc:
            self.show_error(exc)
            return None
        add_to_map = self.add_to_map.isChecked()

        def done(task: SegmentTask) -> None:
            report_task(self.iface, task, add_to_map, self.focus_field, self.setup_runtime)
            if task in self.tasks:
                self.tasks.remove(task)

        task = SegmentTask(plan, done)
        task.input_layer_id = request.layer.id()
        self.tasks.append(task)  # a QgsTask without a Python reference is garbage-collected mid-run
        bar = self.iface.messageBar()
        clear_messages(bar)  # a new run: the previous run's results, warnings and errors are history
        QgsApplication.taskManager().addTask(task)
        push_message(bar, "Landcover", f"segmenting {plan.layer_name} in the background (see the task bar; cancel "
                     "there)", Qgis.Info, 5)
        self.hide()  # the task runs on; QGIS stays usable
        return task

    # ----------------------------------------------------------- settings
    def _load_settings(self) -> None:
        settings = Settings.load()
        if settings.model:
            self.select_model(settings.model)
            self._model_changed()
        button = self.area_group.button(settings.area)
        if button is not None:
            button.setChecked(True)
        self.selected_only.setChecked(settings.selected_only)
        self.resample_check.setChecked(settings.resample)
        self.confidence_check.setChecked(settings.confidence)
        self.polygons_check.setChecked(settings.polygons)
        self.add_to_map.setChecked(settings.add_to_map)
        self.bands_edit.setText(settings.bands)
        self._select_data(self.precision_combo, settings.precision)
        self._select_data(self.tta_combo, settings.tta)
        self.python_widget.setFilePath(settings.worker_python)
        self.runtime_widget.setFilePath(settings.runtime_dir)
        self.models_widget.blockSignals(True)
        self.models_widget.setFilePath(settings.models_dir)
        self.models_widget.blockSignals(False)

    def _save_settings(self) -> None:
        settings = Settings.load()
        model = self.current_model()
        if model is not None:
            settings.model = model.spec
        settings.area = self.area_group.checkedId()
        settings.selected_only = self.selected_only.isChecked()
        settings.resample = self.resample_check.isChecked()
        settings.confidence = self.confidence_check.isChecked()
        settings.polygons = self.polygons_check.isChecked()
        settings.add_to_map = self.add_to_map.isChecked()
        settings.bands = self.bands_edit.text()
        settings.precision = self.precision_combo.currentData()
        settings.tta = self.tta_combo.currentData()
        settings.worker_python = self.python_widget.filePath().strip()
        settings.runtime_dir = self.runtime_widget.filePath().strip()
        settings.models_dir = self.models_widget.filePath().strip()
        settings.save()

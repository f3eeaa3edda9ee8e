"""The class-area table of a finished run: a small dialog an analyst can read and copy into a report.

Why a dialog and not the CSV opened as a layer: the table is read once, right after the run, and copied into a
report or spreadsheet; a CSV layer would add one more entry to the project per run (and QGIS reads CSV columns
as text unless told otherwise, so it would not even sort numerically). The dialog shows what the CSV holds —
pixels, m², ha and % per class — largest class first, with a total row, a **Copy** button (tab-separated: pastes
as columns into a spreadsheet) and the path of the ``.areas.csv`` beside the output for the record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QGuiApplication
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COLUMNS = ("Class", "Area (ha)", "Area (m²)", "%", "Pixels")


def table_rows(areas: dict[str, Any]) -> list[tuple[str, float | None, float | None, float, int]]:
    """``(class, ha, m², %, pixels)`` per class, largest first (ha/m² None without a CRS)."""
    rows = []
    for c in areas.get("classes", []):
        m2 = c.get("area_m2")
        rows.append((str(c.get("name", c.get("id"))), None if m2 is None else float(m2) / 10_000,
                     None if m2 is None else float(m2), float(c.get("percent") or 0), int(c.get("pixels") or 0)))
    rows.sort(key=lambda r: -r[3])
    return rows


def _number(text: str) -> QTableWidgetItem:
    """A right-aligned cell."""
    item = QTableWidgetItem(text)
    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
    return item


class AreaTableDialog(QDialog):
    """Class areas of one result: a table, Copy and Close."""

    def __init__(self, areas: dict[str, Any], title: str, csv_path: Path | str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("landcoverAreaTableDialog")
        self.setWindowTitle(f"Landcover areas — {title}")
        self.areas = areas
        layout = QVBoxLayout(self)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        rows = table_rows(areas)
        self.table.setRowCount(len(rows) + 1)
        for r, (name, ha, m2, percent, pixels) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(name))
            self.table.setItem(r, 1, _number("" if ha is None else f"{ha:,.4f}"))
            self.table.setItem(r, 2, _number("" if m2 is None else f"{m2:,.1f}"))
            self.table.setItem(r, 3, _number(f"{percent:.2f}"))
            self.table.setItem(r, 4, _number(f"{pixels:,}"))
        total_m2 = sum(m2 for _, _, m2, _, _ in rows if m2 is not None)
        has_m2 = any(m2 is not None for _, _, m2, _, _ in rows)
        total = len(rows)
        self.table.setItem(total, 0, QTableWidgetItem("total"))
        self.table.setItem(total, 1, _number(f"{total_m2 / 10_000:,.4f}" if has_m2 else ""))
        self.table.setItem(total, 2, _number(f"{total_m2:,.1f}" if has_m2 else ""))
        self.table.setItem(total, 3, _number(f"{sum(r[3] for r in rows):.2f}"))
        self.table.setItem(total, 4, _number(f"{sum(r[4] for r in rows):,}"))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.resizeRowsToContents()
        # Tall enough for every row and the total, so nothing hides behind a scroll bar.
        self.table.setMinimumHeight(header.height() + self.table.verticalHeader().length()
                                    + 2 * self.table.frameWidth() + 4)
        layout.addWidget(self.table)
        if not has_m2:
            layout.addWidget(QLabel("The input has no CRS: areas are given as shares of the classified pixels only."))
        if csv_path:
            label = QLabel(f"Saved as {csv_path}")
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            label.setWordWrap(True)
            layout.addWidget(label)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        self.copy_button = buttons.addButton("Copy", QDialogButtonBox.ActionRole)
        self.copy_button.setToolTip("Copy the table (tab-separated) to paste into a spreadsheet or report")
        self.copy_button.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(560, self.sizeHint().height())

    def text(self) -> str:
        """The table as tab-separated text, header first."""
        lines = ["\t".join(COLUMNS)]
        for r in range(self.table.rowCount()):
            lines.append("\t".join(self.table.item(r, c).text().replace(",", "") for c in range(len(COLUMNS))))
        return "\n".join(lines) + "\n"

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text())


def read_areas(path: Path | str) -> dict[str, Any]:
    """The ``areas`` object of an ``.areas.json`` file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


_open: list[AreaTableDialog] = []  # non-modal dialogs must outlive the button's click handler


def show_area_table(areas: dict[str, Any], title: str, csv_path: Path | str | None = None,
                    parent: QWidget | None = None) -> AreaTableDialog:
    """Open (non-modal) the area table of one result; returns the dialog."""
    dialog = AreaTableDialog(areas, title, csv_path, parent)
    dialog.setAttribute(Qt.WA_DeleteOnClose)
    _open.append(dialog)
    dialog.destroyed.connect(lambda *_: _open.remove(dialog) if dialog in _open else None)
    dialog.show()
    dialog.raise_()
    return dialog

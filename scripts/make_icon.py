"""Draw the plugin icon (landcover_plugin/icon.png) with Qt: a tiny land-cover map in the class colours.

Run: QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_icon.py
"""

from pathlib import Path

from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QGuiApplication, QImage, QPainter, QPainterPath, QPen, QPolygonF

OUT = Path(__file__).resolve().parents[1] / "landcover_plugin" / "icon.png"


def main() -> None:
    app = QGuiApplication([])  # noqa: F841 - QPainter on QImage needs an application for fonts/raster engine
    size = 64
    img = QImage(size, size, QImage.Format_ARGB32)
    img.fill(Qt.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.Antialiasing)
    clip = QPainterPath()
    clip.addRoundedRect(QRectF(2, 2, 60, 60), 10, 10)
    p.setClipPath(clip)
    p.fillRect(0, 0, size, size, QColor(222, 214, 182))  # background
    p.setPen(Qt.NoPen)
    p.setBrush(QColor(38, 115, 0))  # woodland
    p.drawPolygon(QPolygonF([QPointF(0, 0), QPointF(40, 0), QPointF(28, 22), QPointF(0, 30)]))
    p.setBrush(QColor(0, 150, 255))  # water
    p.drawPolygon(QPolygonF([QPointF(64, 34), QPointF(44, 44), QPointF(36, 64), QPointF(64, 64)]))
    p.setBrush(QColor(220, 40, 40))  # buildings
    p.drawRect(QRectF(42, 8, 14, 12))
    p.drawRect(QRectF(10, 42, 12, 12))
    p.setPen(QPen(QColor(120, 120, 120), 7))  # road
    p.drawLine(QPointF(-4, 38), QPointF(68, 24))
    p.setClipping(False)
    p.setPen(QPen(QColor(60, 60, 60), 2))
    p.setBrush(Qt.NoBrush)
    p.drawRoundedRect(QRectF(2, 2, 60, 60), 10, 10)
    p.end()
    img.save(str(OUT))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

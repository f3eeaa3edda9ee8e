"""Class styling and area summaries for result layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from .contract import NODATA, ClassInfo


def paletted_renderer(layer: QgsRasterLayer, classes: Sequence[ClassInfo]) -> QgsPalettedRasterRenderer:
    """A paletted renderer whose legend reads the class names in the model's colours."""
    entries = [QgsPalettedRasterRenderer.Class(c.id, QColor(*c.color), c.name) for c in classes]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)


def style_class_layer(layer: QgsRasterLayer, classes: Sequence[ClassInfo]) -> None:
    """Apply class names/colours; nodata (255) stays transparent."""
    provider = layer.dataProvider()
    provider.setUseSourceNoDataValue(1, True)
    if not provider.sourceHasNoDataValue(1):
        # The backend always writes nodata=255; older or foreign rasters may not declare it.
        from qgis.core import QgsRasterRange

        provider.setUserNoDataValue(1, [QgsRasterRange(NODATA, NODATA)])
    layer.setRenderer(paletted_renderer(layer, classes))
    layer.triggerRepaint()


def style_polygon_layer(layer: QgsVectorLayer, classes: Sequence[ClassInfo], field: str = "class_id") -> None:
    """Categorised fill by class id, same colours and names as the raster."""
    categories = []
    for c in classes:
        symbol = QgsFillSymbol.createSimple({"color": ",".join(map(str, c.color)), "outline_style": "no"})
        categories.append(QgsRendererCategory(c.id, symbol, c.name))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
    layer.triggerRepaint()


def result_layer_name(input_name: str, model_name: str, kind: str = "land cover") -> str:
    """``sjer_rgb — land cover (landcover-unet-resnet18-synthetic)``: what was segmented, what it is, with what.

    ``kind`` is ``land cover`` (the class raster), ``confidence`` or ``polygons``. Every result layer (dialog and
    Processing) is named this way so runs on different inputs, or with different models, can be told apart.
    """
    return f"{input_name} — {kind} ({model_name})" if input_name else f"{kind} ({model_name})"


def format_area(m2: float) -> str:
    """Human-readable area (m² or ha)."""
    return f"{m2 / 10_000:,.2f} ha" if m2 >= 100_000 else f"{m2:,.0f} m²"


def format_ha(m2: float) -> str:
    """An area in hectares with two decimals (four below 0.01 ha, so small areas do not read as zero)."""
    ha = m2 / 10_000
    return f"{ha:,.4f} ha" if 0 < ha < 0.01 else f"{ha:,.2f} ha"


def areas_summary(areas: dict[str, Any]) -> str:
    """One line per class: name, area, percent."""
    lines = []
    for c in areas.get("classes", []):
        lines.append(f"{c.get('name', c.get('id'))}: {format_area(float(c.get('area_m2') or 0))} "
                     f"({float(c.get('percent') or 0):.1f} %)")
    return "\n".join(lines)


def areas_oneline(areas: dict[str, Any]) -> str:
    """Compact summary for the message bar, largest classes first: ``woodland 1.20 ha (45.1 %), …``.

    Classes with no pixel are left out; without a CRS (no area in m²) only the percentages are given.
    """
    classes = sorted(areas.get("classes", []), key=lambda c: -float(c.get("percent") or 0))
    parts = []
    for c in classes:
        if not c.get("pixels") and not c.get("percent"):
            continue
        percent = f"{float(c.get('percent') or 0):.1f} %"
        area = c.get("area_m2")
        parts.append(f"{c.get('name')} {format_ha(float(area))} ({percent})" if area is not None
                     else f"{c.get('name')} {percent}")
    return ", ".join(parts) or "no classified pixels"

"""Render the README screenshot headless: orthophoto + land-cover result layer + legend, as QGIS shows them.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/render_screenshot.py [--model M] [--out docs/plugin_result.png]

Runs the plugin's own pipeline (``job.prepare``/``execute`` in the worker process, ``results.add_results`` for
the styled layer in the "Landcover" group) on a window of the demo orthophoto, then lays out map and legend
with a QgsPrintLayout and exports it to PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO / "demo" / "orthophoto.tif")
    parser.add_argument("--model", default="default", help="bundle .json, model name, or untrained:Unet:resnet18")
    parser.add_argument("--size", type=int, default=1024, help="side of the centred window to segment, in pixels")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "plugin_result.png")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # do not leave .aux.xml statistics beside the demo image
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    try:
        return _render(args)
    finally:
        app.exitQgis()


def _render(args: argparse.Namespace) -> int:
    import tempfile

    from qgis.core import (
        QgsLayoutExporter,
        QgsLayoutItemLabel,
        QgsLayoutItemLegend,
        QgsLayoutItemMap,
        QgsLayoutPoint,
        QgsLayoutSize,
        QgsLegendStyle,
        QgsMapLayerLegendUtils,
        QgsPrintLayout,
        QgsProject,
        QgsRasterLayer,
        QgsRectangle,
        QgsUnitTypes,
    )
    from qgis.PyQt.QtGui import QColor, QFont

    from landcover_plugin import export, job
    from landcover_plugin.contract import resolve_model
    from landcover_plugin.errors import LandcoverError
    from landcover_plugin.results import GROUP_NAME, add_results

    project = QgsProject.instance()
    ortho = QgsRasterLayer(str(args.image), "orthophoto", "gdal")
    if not ortho.isValid():
        print(f"error: cannot open {args.image}", file=sys.stderr)
        return 2
    try:
        model = resolve_model(args.model)
    except LandcoverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    e = ortho.extent()
    half = args.size * ortho.rasterUnitsPerPixelX() / 2
    c = e.center()
    rect = QgsRectangle(c.x() - half, c.y() - half, c.x() + half, c.y() + half).intersect(e)
    workdir = Path(tempfile.mkdtemp(prefix="landcover_shot_"))
    request = job.SegmentRequest(layer=ortho, model=model, area=export.Area(export.AREA_EXTENT, rect),
                                 output=str(workdir / f"{model.name}.tif"))
    try:
        job.validate(request)
        outcome = job.execute(job.prepare(request), lambda p, m: print(f"\r{p:5.1f} % {m[:60]:<60}", end=""))
    except LandcoverError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print()
    project.addMapLayer(ortho)
    added = add_results(outcome, project)
    added.classes.renderer().setOpacity(0.6)  # keep the orthophoto visible under the classes

    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    page.setPageSize(QgsLayoutSize(260, 180, QgsUnitTypes.LayoutMillimeters))

    title = QgsLayoutItemLabel(layout)
    title.setText(f"Landcover — {model.name} on {args.image.name}")
    title.setFont(QFont("DejaVu Sans", 14))
    layout.addLayoutItem(title)
    title.attemptMove(QgsLayoutPoint(6, 4, QgsUnitTypes.LayoutMillimeters))
    title.attemptResize(QgsLayoutSize(250, 10, QgsUnitTypes.LayoutMillimeters))

    map_item = QgsLayoutItemMap(layout)
    map_item.setLayers([added.classes, ortho])
    map_item.setCrs(ortho.crs())
    layout.addLayoutItem(map_item)
    map_item.attemptMove(QgsLayoutPoint(6, 16, QgsUnitTypes.LayoutMillimeters))
    map_item.attemptResize(QgsLayoutSize(160, 160, QgsUnitTypes.LayoutMillimeters))
    map_item.setExtent(added.classes.extent())
    map_item.setFrameEnabled(True)

    legend = QgsLayoutItemLegend(layout)
    legend.setTitle(GROUP_NAME)
    legend.setLinkedMap(map_item)
    legend.setAutoUpdateModel(False)
    root = legend.model().rootGroup()
    root.clear()
    node = root.addLayer(added.classes)
    # Keep just the class entries: drop the leading "Band 1: ..." text node of the paletted legend.
    count = len(added.classes.renderer().classes())
    QgsMapLayerLegendUtils.setLegendNodeOrder(node, list(range(1, count + 1)))
    legend.model().refreshLayerLegend(node)
    legend.setStyleFont(QgsLegendStyle.Title, QFont("DejaVu Sans", 13, QFont.Bold))
    legend.setStyleFont(QgsLegendStyle.Subgroup, QFont("DejaVu Sans", 11, QFont.Bold))
    legend.setStyleFont(QgsLegendStyle.SymbolLabel, QFont("DejaVu Sans", 11))
    legend.setBackgroundColor(QColor(255, 255, 255))
    layout.addLayoutItem(legend)
    legend.attemptMove(QgsLayoutPoint(172, 16, QgsUnitTypes.LayoutMillimeters))

    summary = QgsLayoutItemLabel(layout)
    lines = [f"{cl['name']}: {cl['percent']:.1f} %" for cl in outcome.areas.get("classes", [])]
    summary.setText("Class areas\n" + "\n".join(lines))
    summary.setFont(QFont("DejaVu Sans", 10))
    layout.addLayoutItem(summary)
    summary.attemptMove(QgsLayoutPoint(172, 100, QgsUnitTypes.LayoutMillimeters))
    summary.attemptResize(QgsLayoutSize(80, 50, QgsUnitTypes.LayoutMillimeters))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = args.dpi
    result = QgsLayoutExporter(layout).exportToImage(str(args.out), settings)
    if result != QgsLayoutExporter.Success:
        print(f"error: exporting the layout to {args.out} failed ({result})", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

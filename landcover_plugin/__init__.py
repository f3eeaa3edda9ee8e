"""Landcover QGIS plugin: land-cover maps from aerial orthophotos.

Everything heavy is imported lazily: loading the plugin touches only Qt/QGIS classes, never
TensorFlow (which would crash QGIS); the model runs in a separate worker process.
"""


def classFactory(iface):  # noqa: N802 - name fixed by QGIS
    """Create the plugin instance (called by QGIS)."""
    from landcover_plugin.plugin import LandcoverPlugin

    return LandcoverPlugin(iface)

"""Background execution of segmentation jobs inside QGIS."""

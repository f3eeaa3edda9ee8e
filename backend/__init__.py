"""Landcover backend: QGIS-free tiled land-cover segmentation of orthophotos.

Importing this package is cheap: TensorFlow and segmentation_models are imported lazily,
only when a model is actually built (see :mod:`backend.tf_import`).
"""

__version__ = "0.1.0"

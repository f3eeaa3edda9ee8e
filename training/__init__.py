"""Headless training pipeline: synthetic data, patch, filter, split, train, evaluate, export.

Importing this package is cheap: TensorFlow and segmentation_models are imported lazily inside
the functions that need them (through :mod:`backend.tf_import`).
"""

from backend.bundle import LANDCOVER_CLASSES

# One class table for the whole project: the backend's (ids, names, colours of LandCover.ai v1).
CLASS_NAMES: tuple[str, ...] = tuple(name for _, name, _ in LANDCOVER_CLASSES)
NUM_CLASSES = len(CLASS_NAMES)

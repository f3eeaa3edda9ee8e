"""Headless training pipeline: synthetic data, patch, filter, split, train, evaluate, export.

Importing this package is cheap: TensorFlow and segmentation_models are imported lazily inside
the functions that need them (through :mod:`backend.tf_import`).
"""

from backend.contract import LANDCOVER_CLASSES

# One class table for the whole project: the contract's (ids, names, colours of LandCover.ai v1).
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in LANDCOVER_CLASSES)
NUM_CLASSES = len(CLASS_NAMES)

"""Headless training pipeline: synthetic data, patch, filter, split, train, evaluate, export.

Importing this package is cheap: TensorFlow and segmentation_models are imported lazily inside
the functions that need them (through :mod:`backend.tf_import`).
"""

CLASS_NAMES: tuple[str, ...] = ("background", "building", "woodland", "water", "road")
NUM_CLASSES = len(CLASS_NAMES)

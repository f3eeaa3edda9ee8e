"""Lazy, correctly configured imports of TensorFlow and segmentation_models.

segmentation_models picks its Keras flavour from ``SM_FRAMEWORK`` at import time, and TensorFlow
2.16+ only uses tf-keras (Keras 2, which segmentation_models needs) when ``TF_USE_LEGACY_KERAS``
is set before TensorFlow is first imported. Every import of either goes through here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType

from backend.contract import TENSORFLOW_ENV, TENSORFLOW_HINT
from backend.errors import DependencyError

_INSTALL_HINT = TENSORFLOW_HINT


def configure_environment() -> None:
    """Set the variables TensorFlow and segmentation_models read at import time."""
    for name, value in TENSORFLOW_ENV.items():
        os.environ.setdefault(name, value)


def import_tensorflow() -> ModuleType:
    """Import TensorFlow configured for tf-keras, or explain how to install it."""
    configure_environment()
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise DependencyError(f"TensorFlow is not installed in this Python ({exc}); {_INSTALL_HINT}") from exc
    return tf


def import_keras() -> ModuleType:
    """Return the Keras 2 module (tf-keras) that segmentation_models builds with."""
    import_tensorflow()
    try:
        import tf_keras
    except ImportError as exc:
        raise DependencyError(f"tf-keras is not installed ({exc}); {_INSTALL_HINT}") from exc
    return tf_keras


def import_segmentation_models() -> ModuleType:
    """Import segmentation_models on tf.keras, or explain how to install it."""
    import_tensorflow()
    try:
        # segmentation_models prints a banner on stdout, which carries the worker's JSON protocol.
        with contextlib.redirect_stdout(sys.stderr):
            import segmentation_models as sm
    except ImportError as exc:
        raise DependencyError(f"segmentation-models is not installed ({exc}); {_INSTALL_HINT}") from exc
    return sm

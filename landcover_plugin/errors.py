"""The errors the plugin raises and shows: the contract's one root and its kinds.

The kinds are the ones the worker reports in its error event, so an error is handled the same
whether it arose in QGIS (a layer without CRS) or in the worker (a corrupt raster); see
:mod:`landcover_plugin.feedback` for what the user is offered for each.
"""

from .contract import (
    ERROR_KINDS,
    CancelledError,
    DependencyError,
    InputError,
    InternalError,
    LandcoverError,
    ModelError,
    OutputError,
    error_for_kind,
)

__all__ = [
    "ERROR_KINDS",
    "CancelledError",
    "DependencyError",
    "InputError",
    "InternalError",
    "LandcoverError",
    "ModelError",
    "OutputError",
    "error_for_kind",
]

"""The backend's errors: one root with kinds a caller can act on, defined in :mod:`backend.contract`.

Raise the kind that names what the user can do: :class:`InputError` (fix the input or an option),
:class:`ModelError` (choose or repair the model), :class:`DependencyError` (install a package),
:class:`OutputError` (another place, free space), :class:`CancelledError`; anything else is a bug.
The CLI prints these without a traceback and reports the kind in the protocol's error event.
"""

from backend.contract import (
    ERROR_KINDS,
    CancelledError,
    DependencyError,
    InputError,
    InternalError,
    LandcoverError,
    ModelError,
    OutputError,
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
]

"""The training layer's errors: kinds of the project's one error root (:mod:`backend.contract`).

A bad data layout, config value or missing file is a :class:`TrainingError`, i.e. an
:class:`~backend.errors.InputError`; a missing package is a :class:`~backend.errors.DependencyError`.
The CLI prints any of them as one line naming the fix and exits with the kind's code (2).
"""

from backend.errors import DependencyError, InputError, LandcoverError


class TrainingError(InputError):
    """A problem with the training data, configuration or files that the user can fix."""


__all__ = ["DependencyError", "InputError", "LandcoverError", "TrainingError"]

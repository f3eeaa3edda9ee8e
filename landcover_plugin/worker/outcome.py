"""How a background task's work ends: a value, a Landcover error of some kind, or a cancel — never an exception."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import CancelledError, InternalError, LandcoverError

T = TypeVar("T")


@dataclass(frozen=True)
class Ended(Generic[T]):
    """Exactly one of ``value`` (success), ``error`` or ``canceled`` is set."""

    value: T | None = None
    error: LandcoverError | None = None
    canceled: bool = False


def run_guarded(work: Callable[[], T]) -> Ended[T]:
    """Run ``work`` (in a task's thread); whatever it raises becomes the matching :class:`Ended`."""
    try:
        return Ended(value=work())
    except CancelledError:
        return Ended(canceled=True)
    except LandcoverError as exc:
        return Ended(error=exc)
    except Exception as exc:  # noqa: BLE001 - a task must never raise; report everything
        return Ended(error=InternalError(f"unexpected error: {type(exc).__name__}: {exc}", traceback.format_exc()))

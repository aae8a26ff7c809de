"""The rtkit exception hierarchy and warning class.

Every error rtkit raises on purpose derives from :class:`RTKitError`; each
subclass also derives from the builtin exception it refines, so callers that
catch ``ValueError`` or ``LookupError`` keep working.  Messages name the file,
ROI or plane concerned and say what to do about it.
"""

from __future__ import annotations

import logging
import warnings

__all__ = [
    "RTKitError",
    "DicomReadError",
    "GeometryError",
    "FrameOfReferenceError",
    "AmbiguousCaseError",
    "MetricError",
    "RegistrationError",
    "MissingDependencyError",
    "RTKitWarning",
]


class RTKitError(Exception):
    """Root of every exception raised deliberately by rtkit."""


class DicomReadError(RTKitError, ValueError):
    """A DICOM file cannot be read or lacks what the operation needs."""


class GeometryError(RTKitError, ValueError):
    """Inconsistent or invalid geometry (grid, slice positions, orientation)."""


class FrameOfReferenceError(GeometryError):
    """Objects that must share a frame of reference do not."""


class AmbiguousCaseError(RTKitError, LookupError):
    """A path holds several cases or series where exactly one was expected."""


class MetricError(RTKitError, ValueError):
    """A DVH metric string is not understood."""


class RegistrationError(RTKitError, RuntimeError):
    """An image registration failed."""


class MissingDependencyError(RTKitError, ImportError):
    """An optional dependency needed for this operation is not installed."""


class RTKitWarning(UserWarning):
    """Something was repaired, skipped or assumed; the message says what."""


def warn(message: str, logger: logging.Logger | None = None, stacklevel: int = 3) -> None:
    """Emit an :class:`RTKitWarning` and log it at WARNING level."""
    if logger is not None:
        logger.warning(message)
    warnings.warn(message, RTKitWarning, stacklevel=stacklevel)

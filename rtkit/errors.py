"""The rtkit exception hierarchy and warning class.

Every error rtkit raises on purpose derives from :class:`RTKitError`; each
subclass also derives from the builtin exception it refines, so callers that
catch ``ValueError`` or ``LookupError`` keep working.  Messages name the file,
ROI or plane concerned and say what to do about it.
"""

from __future__ import annotations

import logging
import sys
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
    "OutputExistsError",
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


class OutputExistsError(RTKitError, FileExistsError):
    """A writer's output file exists and ``overwrite=True`` was not given; nothing was written."""


class RTKitWarning(UserWarning):
    """Something was repaired, skipped or assumed; the message says what."""


def warn(message: str, logger: logging.Logger | None = None, stacklevel: int = 3) -> None:
    """Emit an :class:`RTKitWarning` and log it at WARNING level.

    Use this for information (a choice made among valid objects, a value kept
    as given); a standard violation or a repair goes through :func:`violation`.
    The warning is attributed to the first frame outside rtkit (the user's
    call), whatever ``stacklevel`` says; the parameter is kept for callers.
    """
    if logger is not None:
        logger.warning(message)
    warnings.warn(message, RTKitWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside rtkit, seen from :func:`warn`.

    Warnings point at the user's line that called rtkit, however many rtkit
    frames (decorators, helpers) lie in between.
    """
    frame = sys._getframe(2)  # warn's caller
    level = 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "rtkit":
        frame = frame.f_back
        level += 1
    return level


def violation(
    message: str,
    logger: logging.Logger | None = None,
    error: type[RTKitError] = DicomReadError,
    *,
    repair: str = "",
    strict_hint: bool = True,
    stacklevel: int = 4,
) -> None:
    """Report a standard violation that lenient reading repairs.

    Parameters
    ----------
    message : str
        What is wrong, naming the file, ROI or plane.
    logger : logging.Logger, optional
        Also logged there at WARNING level (lenient mode).
    error : type of RTKitError
        Raised in strict mode (``rtkit.config.strict = True``).
    repair : str
        What lenient reading does about it; appended to the warning text.
    strict_hint : bool
        Append a pointer to ``rtkit.config.strict`` to the error message.
    stacklevel : int
        Passed to :func:`warnings.warn`.

    Raises
    ------
    RTKitError
        ``error``, in strict mode.
    """
    from . import config  # late: config has no dependencies, but keep errors importable alone

    if config.strict:
        hint = " (rtkit.config.strict is True; in the default lenient mode this is repaired with a warning)"
        raise error(message + (hint if strict_hint else ""))
    warn(message + (f"; {repair}" if repair else ""), logger, stacklevel=stacklevel)

"""Run-time settings.

Attributes
----------
strict : bool
    ``False`` (default): lenient reading repairs what is safe and emits an
    :class:`rtkit.RTKitWarning` saying what was done.  ``True``: any standard
    violation or repair raises an :class:`rtkit.RTKitError` instead.
slice_tolerance_mm : float
    Largest deviation (mm) of a slice from a uniform pitch that is accepted
    as uniform without resampling.  Default 0.01 mm.
"""

from __future__ import annotations

strict: bool = False
slice_tolerance_mm: float = 0.01

"""Dose distributions (Gy) on a grid, and their sums."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import FrameOfReferenceError, RTKitError
from .geometry import Grid
from .image import Image

__all__ = ["Dose", "sum_doses"]

log = logging.getLogger(__name__)


class Dose(Image):
    """A dose distribution: an :class:`Image` whose values are Gy.

    Parameters
    ----------
    array : ndarray or callable
        Dose in Gy (DoseGridScaling applied), shape ``grid.shape``; a
        zero-argument callable makes it lazy.
    grid : Grid
    summation_type : str, optional
        DoseSummationType: ``"PLAN"``, ``"BEAM"``, ``"FRACTION"``, ``"MULTI_PLAN"``, ...
    referenced_plan_uid : str, optional
        SOPInstanceUID of the RT Plan the dose belongs to.
    referenced_beam_numbers : sequence of int, optional
        For BEAM doses: the plan's beam numbers the dose covers.
    units : str
        DoseUnits: ``"GY"``, or ``"RELATIVE"`` (values are then not Gy; see
        :attr:`is_relative`).
    dose_type : str, optional
        DoseType: ``"PHYSICAL"``, ``"EFFECTIVE"``, ``"ERROR"``.
    dvh_sequence : sequence, optional
        The file's DVHSequence items (pydicom Datasets), if any.
    """

    def __init__(
        self,
        array: ArrayLike | Callable[[], NDArray[Any]],
        grid: Grid,
        *,
        summation_type: str | None = None,
        referenced_plan_uid: str | None = None,
        referenced_beam_numbers: Sequence[int] = (),
        units: str = "GY",
        dose_type: str | None = None,
        dvh_sequence: Sequence[Any] = (),
        series_instance_uid: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(array, grid, "RTDOSE", series_instance_uid=series_instance_uid, meta=meta)
        self.summation_type = summation_type
        self.referenced_plan_uid = referenced_plan_uid
        self.referenced_beam_numbers = tuple(int(b) for b in referenced_beam_numbers)
        self.units = (units or "GY").upper()
        self.dose_type = dose_type
        self.dvh_sequence = list(dvh_sequence)

    @property
    def is_relative(self) -> bool:
        """True when DoseUnits is RELATIVE: values are not Gy."""
        return self.units != "GY"

    @property
    def max(self) -> float:
        """Maximum dose (Gy) over the grid."""
        return float(np.max(self.array))

    @property
    def default_fill(self) -> float:
        """Dose outside the grid is 0 Gy."""
        return 0.0

    def _like(self, array: NDArray[Any], grid: Grid) -> Dose:
        return Dose(
            array, grid, summation_type=self.summation_type, referenced_plan_uid=self.referenced_plan_uid,
            referenced_beam_numbers=self.referenced_beam_numbers, units=self.units,
            dose_type=self.dose_type, series_instance_uid=self.series_instance_uid, meta=self.meta,
        )

    def __repr__(self) -> str:
        kind = self.summation_type or "dose"
        rel = ", RELATIVE units" if self.is_relative else ""
        loaded = "" if self.is_loaded else ", not loaded"
        return f"Dose({kind}{rel}, {self.grid!r}{loaded})"


def sum_doses(doses: Sequence[Dose], grid: Grid | None = None) -> Dose:
    """The voxel-wise sum of several doses.

    Parameters
    ----------
    doses : sequence of Dose
        All in Gy and in one frame of reference.
    grid : Grid, optional
        The grid of the result; default the first dose's grid.  Doses on
        that grid are added as they are; others are trilinearly resampled
        onto it (0 Gy outside their own voxel box).

    Returns
    -------
    Dose
        float32 (float64 if any input is float64).  ``summation_type`` is
        ``"PLAN"`` when the inputs are BEAM doses of one plan, else
        ``"MULTI_PLAN"``; ``referenced_plan_uid`` is kept when shared.

    Raises
    ------
    FrameOfReferenceError
        Frames of reference differ (between doses, or with ``grid``).
    RTKitError
        No doses, or a dose in RELATIVE units.
    """
    doses = list(doses)
    if not doses:
        raise RTKitError("sum_doses needs at least one dose")
    target = grid if grid is not None else doses[0].grid
    frames = {d.grid.frame_of_reference_uid for d in doses} | {target.frame_of_reference_uid}
    frames.discard(None)
    if len(frames) > 1:
        raise FrameOfReferenceError(
            f"cannot sum doses in different frames of reference ({', '.join(sorted(frames))}); "
            "resample them into one frame first (Image.resample with a registration)"
        )
    for i, d in enumerate(doses):
        if d.is_relative:
            raise RTKitError(f"dose {i} is in {d.units} units, not Gy; a sum of relative doses has no meaning")
    dtype = np.result_type(np.float32, *(d.array.dtype for d in doses))
    total = np.zeros(target.shape, dtype=dtype)
    for d in doses:
        if d.grid.isclose(target, atol=1e-6):
            total += d.array
        else:
            total += d.resample(target, fill=0.0).array
    plans = {d.referenced_plan_uid for d in doses}
    kinds = {d.summation_type for d in doses}
    plan = plans.pop() if len(plans) == 1 else None
    kind = "PLAN" if kinds == {"BEAM"} and plan else ("PLAN" if kinds == {"PLAN"} and len(doses) == 1 else "MULTI_PLAN")
    beams = sorted({b for d in doses for b in d.referenced_beam_numbers})
    if len(doses) > 1:
        log.info("summed %d doses onto %r", len(doses), target)
    return Dose(total, Grid(target.shape, target.affine, target.frame_of_reference_uid or next(iter(frames), None)),
                summation_type=kind, referenced_plan_uid=plan, referenced_beam_numbers=beams,
                dose_type=doses[0].dose_type)


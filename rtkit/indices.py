"""Target quality indices: homogeneity, conformity and dose gradient.

Only indices with a precise published definition are implemented; each
function states its formula and reference.  Doses are in Gy, volumes in cm3.

* :func:`homogeneity_index`: ICRU Report 83 (2010) and RTOG (Shaw et al. 1993).
* :func:`paddick_ci`: Paddick (2000) conformity index.
* :func:`rtog_ci`: RTOG (Shaw et al. 1993) conformity index, PIV / TV.
* :func:`gradient_index`: Paddick & Lippitz (2006) gradient index.

References
----------
ICRU Report 83, "Prescribing, Recording, and Reporting Photon-Beam
Intensity-Modulated Radiation Therapy (IMRT)", J ICRU 10(1), 2010.

Shaw E, Kline R, Gillin M, et al. "Radiation Therapy Oncology Group:
radiosurgery quality assurance guidelines." Int J Radiat Oncol Biol Phys
27(5):1231-1239, 1993.

Paddick I. "A simple scoring ratio to index the conformity of radiosurgical
treatment plans. Technical note." J Neurosurg 93 (Suppl 3):219-222, 2000.

Paddick I, Lippitz B. "A simple dose gradient measurement tool to complement
the conformity index." J Neurosurg 105 (Suppl):194-201, 2006.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .dvh import DVH
from .dvh import dvh as _dvh
from .errors import MetricError

if TYPE_CHECKING:
    from .dose import Dose
    from .structures import Structure

__all__ = ["gradient_index", "homogeneity_index", "paddick_ci", "rtog_ci"]

HI_DEFINITIONS = ("icru83", "rtog")


def _label(h: DVH) -> str:
    return f"DVH {h.name!r}" if h.name else "the DVH"


def _check_prescription(prescription_gy: float | None, what: str) -> float:
    """The prescription as a float; MetricError unless finite and > 0."""
    if prescription_gy is None:
        raise MetricError(f"{what} needs the prescription dose (Gy); none was given")
    try:
        rx = float(prescription_gy)
    except (TypeError, ValueError):
        raise MetricError(f"{what}: the prescription must be a number of Gy, got {prescription_gy!r}") from None
    if not math.isfinite(rx) or rx <= 0:
        raise MetricError(f"{what}: the prescription must be a positive number of Gy, got {prescription_gy!r}")
    return rx


def homogeneity_index(dvh: DVH, *, definition: str = "icru83") -> float:
    """The homogeneity index of a target's dose.

    Two published definitions are available:

    ``"icru83"`` (default)
        ``HI = (D2% - D98%) / D50%`` (ICRU Report 83, 2010).  0 for a
        perfectly uniform dose; larger is less homogeneous.  ``D2%``,
        ``D98%`` and ``D50%`` are :meth:`DVH.dose_at` (Gy), interpolated on
        the cumulative curve.
    ``"rtog"``
        ``HI = Dmax / prescription`` (the maximum dose over the prescription
        dose; Shaw et al., Int J Radiat Oncol Biol Phys 27:1231-1239, 1993).
        1 when the maximum equals the prescription.  ``Dmax`` is
        :attr:`DVH.max` (Gy); the prescription is ``dvh.prescription_gy``.

    Parameters
    ----------
    dvh : DVH
        The cumulative DVH of the target (e.g. ``rtkit.dvh(dose, ptv,
        prescription_gy=60)``).
    definition : {"icru83", "rtog"}
        Case-insensitive.

    Returns
    -------
    float
        Dimensionless.

    Raises
    ------
    MetricError
        Unknown ``definition`` (the message lists the accepted ones); the DVH
        is empty (volume 0); ``D50%`` is 0 Gy (``"icru83"``); the DVH has no
        positive ``prescription_gy`` (``"rtog"``).
    """
    key = definition.lower() if isinstance(definition, str) else definition
    if key not in HI_DEFINITIONS:
        raise MetricError(f"unknown homogeneity index definition {definition!r}; "
                          f"accepted: {', '.join(repr(d) for d in HI_DEFINITIONS)}")
    label = _label(dvh)
    if dvh.is_empty:
        raise MetricError(f"homogeneity index of {label}: the DVH is empty (volume 0 cm3)")
    if key == "icru83":
        d2, d50, d98 = dvh.dose_at(2.0), dvh.dose_at(50.0), dvh.dose_at(98.0)
        if not d50 > 0:
            raise MetricError(f"ICRU 83 homogeneity index of {label}: D50% is {d50:g} Gy; "
                              "(D2% - D98%) / D50% is undefined")
        return float((d2 - d98) / d50)
    if not dvh.prescription_gy:
        raise MetricError(f"RTOG homogeneity index (Dmax / prescription) of {label} needs the "
                          "prescription dose, but DVH.prescription_gy is not set; pass "
                          "prescription_gy= to rtkit.dvh or DVH.from_samples")
    rx = _check_prescription(dvh.prescription_gy, f"RTOG homogeneity index of {label}")
    return float(dvh.max / rx)


def _isodose_volume_cc(dose: Dose, level_gy: float, body: Structure | None) -> float:
    """Volume (cm3) receiving at least ``level_gy`` Gy, in ``body`` or over the whole dose grid.

    Whole grid: the number of dose voxels whose value is >= ``level_gy`` times
    the voxel volume (each voxel counted whole, at its centre's dose).  With
    ``body``: ``rtkit.dvh(dose, body).volume_at(level_gy)``.
    """
    if body is not None:
        return _dvh(dose, body).volume_at(level_gy)
    return float(np.count_nonzero(dose.array >= level_gy)) * dose.grid.voxel_volume_cc


def _target_volumes(dose: Dose, target: Structure, rx: float, what: str) -> tuple[float, float]:
    """(TV, TV_PIV) in cm3 from the target's DVH."""
    h = _dvh(dose, target)
    if h.is_empty:
        raise MetricError(f"{what}: target {target.name!r} is empty (volume 0 cm3)")
    return h.volume_cc, h.volume_at(rx)


def paddick_ci(dose: Dose, target: Structure, prescription_gy: float, *,
               body: Structure | None = None) -> float:
    """The Paddick conformity index.

    ``CI = TV_PIV**2 / (TV * PIV)`` (Paddick, J Neurosurg 93 Suppl 3:219-222,
    2000), where

    * ``TV`` (cm3) is the target volume: ``rtkit.dvh(dose, target).volume_cc``
      (including any part outside the dose grid, counted at 0 Gy);
    * ``TV_PIV`` (cm3) is the target volume receiving at least the
      prescription: ``rtkit.dvh(dose, target).volume_at(prescription_gy)``;
    * ``PIV`` (cm3) is the prescription isodose volume.  Without ``body``:
      over the whole dose grid, counted per dose voxel (number of voxels
      whose dose is >= the prescription, times the voxel volume).  With
      ``body``: ``rtkit.dvh(dose, body).volume_at(prescription_gy)``.

    1 is perfect conformity; the index falls with under-coverage
    (``TV_PIV / TV``) and with spill outside the target (``TV_PIV / PIV``).

    Parameters
    ----------
    dose : Dose
        Dose in Gy, ``array`` of shape (slices, rows, columns).
    target : Structure
        The target, in the dose's frame of reference.
    prescription_gy : float
        The prescription isodose level (Gy), > 0.
    body : Structure, optional
        Restricts the prescription isodose volume to this structure (e.g. the
        EXTERNAL contour).  Default: the whole dose grid.

    Returns
    -------
    float
        Dimensionless, in [0, 1] up to the difference between the voxel
        count (``PIV`` without ``body``) and the DVH engine (``TV_PIV``).

    Raises
    ------
    MetricError
        The prescription is not a positive number; the target is empty; no
        dose reaches the prescription (``PIV`` is 0; check Gy vs cGy).
    FrameOfReferenceError
        ``target`` or ``body`` is in another frame of reference than ``dose``.

    Notes
    -----
    Without ``body`` the isodose volume is counted per dose voxel, whereas
    ``TV_PIV`` comes from the DVH engine (trilinear dose, exact partial
    volumes).  The two agree where the isodose surface lies on voxel
    boundaries; otherwise they differ by at most the volume of the voxels the
    isodose surface crosses.  Pass ``body`` to compute ``PIV`` with the DVH
    engine too.
    """
    what = "Paddick conformity index"
    rx = _check_prescription(prescription_gy, what)
    tv, tv_piv = _target_volumes(dose, target, rx, what)
    piv = _isodose_volume_cc(dose, rx, body)
    if not piv > 0:
        raise MetricError(f"{what}: no dose reaches the prescription {rx:g} Gy "
                          f"{'in ' + repr(body.name) if body is not None else 'on the dose grid'} "
                          f"(PIV = 0 cm3), so TV_PIV^2 / (TV * PIV) is undefined; is the "
                          "prescription in Gy?")
    return float(tv_piv * tv_piv / (tv * piv))


def rtog_ci(dose: Dose, target: Structure, prescription_gy: float, *,
            body: Structure | None = None) -> float:
    """The RTOG conformity index ``PIV / TV``.

    The ratio of the prescription isodose volume to the target volume (PITV;
    Shaw et al., Int J Radiat Oncol Biol Phys 27:1231-1239, 1993).  ``PIV``
    and ``TV`` (cm3) are computed as in :func:`paddick_ci`.  It ignores where
    the isodose lies: 1 does not imply that the target is covered.

    Parameters
    ----------
    dose : Dose
        Dose in Gy, ``array`` of shape (slices, rows, columns).
    target : Structure
    prescription_gy : float
        Prescription isodose level (Gy), > 0.
    body : Structure, optional
        Restricts the prescription isodose volume to this structure; default
        the whole dose grid, counted per dose voxel.

    Returns
    -------
    float
        Dimensionless, >= 0 (0 when no dose reaches the prescription).

    Raises
    ------
    MetricError
        The prescription is not a positive number, or the target is empty.
    FrameOfReferenceError
        ``target`` or ``body`` is in another frame of reference than ``dose``.
    """
    what = "RTOG conformity index"
    rx = _check_prescription(prescription_gy, what)
    tv, _ = _target_volumes(dose, target, rx, what)
    return float(_isodose_volume_cc(dose, rx, body) / tv)


def gradient_index(dose: Dose, prescription_gy: float, *, body: Structure | None = None) -> float:
    """The Paddick-Lippitz gradient index ``PIV_half / PIV``.

    The volume enclosed by half the prescription isodose over the volume
    enclosed by the prescription isodose (Paddick & Lippitz, J Neurosurg 105
    Suppl:194-201, 2006).  Both volumes (cm3) are computed as ``PIV`` in
    :func:`paddick_ci`: per dose voxel over the whole grid, or with the DVH
    engine within ``body``.  Lower is a steeper fall-off; always >= 1.

    Parameters
    ----------
    dose : Dose
        Dose in Gy, ``array`` of shape (slices, rows, columns).
    prescription_gy : float
        Prescription isodose level (Gy), > 0; ``PIV_half`` is taken at half of it.
    body : Structure, optional
        Restricts both isodose volumes to this structure; default the whole
        dose grid.

    Returns
    -------
    float
        Dimensionless.

    Raises
    ------
    MetricError
        The prescription is not a positive number, or no dose reaches it
        (``PIV`` is 0).
    FrameOfReferenceError
        ``body`` is in another frame of reference than ``dose``.
    """
    what = "gradient index"
    rx = _check_prescription(prescription_gy, what)
    if body is not None:
        h = _dvh(dose, body)
        piv, piv_half = h.volume_at(rx), h.volume_at(rx / 2.0)
    else:
        piv = _isodose_volume_cc(dose, rx, None)
        piv_half = _isodose_volume_cc(dose, rx / 2.0, None)
    if not piv > 0:
        raise MetricError(f"{what}: no dose reaches the prescription {rx:g} Gy "
                          f"{'in ' + repr(body.name) if body is not None else 'on the dose grid'} "
                          "(PIV = 0 cm3), so PIV_half / PIV is undefined; is the prescription in Gy?")
    return float(piv_half / piv)

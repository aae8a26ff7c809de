"""Target quality indices (rtkit.indices) on cases with closed-form answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rtkit
from rtkit import DVH, Contour, Dose, Grid, MetricError, Structure
from rtkit.indices import gradient_index, homogeneity_index, paddick_ci, rtog_ci

FOR = "1.2.826.0.1.3680043.8.498.5"


# ------------------------------------------------------------------ builders
def _box(name: str, x: tuple[float, float], y: tuple[float, float], z: tuple[float, float],
         spacing: float = 2.0, number: int = 1) -> Structure:
    """A rectangular ROI whose slab solid is exactly x * y * z (mm): planes every ``spacing`` mm
    from z0 + spacing/2 to z1 - spacing/2, so the end caps reach z0 and z1."""
    (x0, x1), (y0, y1), (z0, z1) = x, y, z
    planes = np.arange(z0 + spacing / 2, z1 - spacing / 2 + 1e-9, spacing)
    contours = [Contour(np.array([[x0, y0, zz], [x1, y0, zz], [x1, y1, zz], [x0, y1, zz]], float))
                for zz in planes]
    return Structure(name, number, contours, frame_of_reference_uid=FOR)


def _grid() -> Grid:
    """20^3 voxels of 2 mm, centres at 0, 2, ..., 38 mm on x, y, z: voxel boundaries at odd mm,
    voxel box [-1, 39] mm on each axis."""
    return Grid.from_spacing((20, 20, 20), (2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0), frame_of_reference_uid=FOR)


def _box_dose(rx: float) -> Dose:
    """1.6 rx Gy in voxels 5..14 on each axis (the box [9, 29] mm^3, 8 cm3), 0.4 rx elsewhere.

    Voxel count: exactly the 1000 voxels of the box reach rx.  Trilinear dose: along a single axis
    the dose falls linearly from 1.6 rx to 0.4 rx between the centres at 28 and 30 mm, so it
    crosses rx (the midpoint) exactly on the voxel boundary at 29 mm, away from the box's edges
    and corners (where two or three axes ramp at once and the trilinear isodose cuts the
    corners).  The low dose is not 0 so that no sample sits near 0 Gy.
    """
    arr = np.full((20, 20, 20), 0.4 * rx)
    arr[5:15, 5:15, 5:15] = 1.6 * rx
    return Dose(arr, _grid())


def _linear_dose() -> Dose:
    """Dose = 40 - x (Gy, x in mm): trilinear interpolation and the DVH engine's gradients are
    exact for it, so the volume above d Gy in a box is its cross-section times its length at
    x <= 40 - d."""
    return Dose(40.0 - _grid().centers()[..., 0], _grid())


# -------------------------------------------------------- homogeneity index
def _uniform_exact(a: float, b: float, volume: float = 10.0, **kwargs) -> DVH:
    """Dose uniform on [a, b] Gy: the cumulative curve is exactly linear from (a, V) to (b, 0)."""
    return DVH([0.0, a, b], [volume, volume, 0.0], **kwargs)


def test_icru83_uniform_distribution_closed_form():
    # uniform on [a, b]: Dp% = b - p/100 (b - a), so HI = 0.96 (b - a) / ((a + b) / 2)
    a, b = 57.0, 63.0
    assert homogeneity_index(_uniform_exact(a, b)) == pytest.approx(0.96 * (b - a) / ((a + b) / 2), rel=1e-12)
    assert homogeneity_index(_uniform_exact(a, b), definition="ICRU83") == pytest.approx(0.096, rel=1e-12)


def test_icru83_from_samples():
    # 60,001 equal samples spanning [57, 63] Gy, 6 cc: the same closed form to a 0.01 Gy bin
    doses = np.linspace(57.0, 63.0, 60001)
    h = DVH.from_samples(doses, np.full(doses.size, 6.0 / doses.size))
    assert homogeneity_index(h) == pytest.approx(0.096, abs=1e-5)
    # a uniform dose has HI 0
    assert homogeneity_index(DVH.from_samples(np.full(100, 60.0), np.full(100, 0.01))) == pytest.approx(0.0, abs=1e-12)


def test_rtog_homogeneity_is_dmax_over_prescription():
    assert homogeneity_index(_uniform_exact(57.0, 63.0, prescription_gy=60.0), definition="rtog") == \
        pytest.approx(1.05, rel=1e-12)
    doses = np.linspace(57.0, 63.0, 601)
    h = DVH.from_samples(doses, np.full(doses.size, 0.01), prescription_gy=60.0)
    assert homogeneity_index(h, definition="rtog") == pytest.approx(63.0 / 60.0, rel=1e-12)  # Dmax is exact


def test_homogeneity_errors():
    with pytest.raises(MetricError, match=r"needs the prescription.*prescription_gy"):
        homogeneity_index(_uniform_exact(57.0, 63.0, name="PTV"), definition="rtog")
    with pytest.raises(MetricError, match=r"'PTV'"):
        homogeneity_index(_uniform_exact(57.0, 63.0, name="PTV"), definition="rtog")
    with pytest.raises(MetricError, match=r"empty"):
        homogeneity_index(DVH.from_samples([], []))
    with pytest.raises(MetricError, match=r"empty"):
        homogeneity_index(DVH.from_samples([], [], prescription_gy=60.0), definition="rtog")
    with pytest.raises(MetricError, match=r"unknown homogeneity index definition 'd5_d95'; accepted: 'icru83', 'rtog'"):
        homogeneity_index(_uniform_exact(57.0, 63.0), definition="d5_d95")
    with pytest.raises(MetricError, match=r"D50% is 0 Gy"):
        homogeneity_index(DVH.from_samples([0.0], [1.0]))
    with pytest.raises(MetricError, match=r"positive"):
        homogeneity_index(_uniform_exact(57.0, 63.0, prescription_gy=-60.0), definition="rtog")


# --------------------------------------------------- conformity, whole grid
def test_paddick_ci_target_crossing_one_face_of_the_isodose_box():
    rx = 10.0
    dose = _box_dose(rx)
    # the target crosses only the isodose box's face at x = 29 mm (its y and z extents lie in the
    # flat 1.6 rx region), so the target volume at >= rx is exactly its part at x <= 29 mm
    target = _box("PTV", (19.0, 35.0), (13.0, 25.0), (13.0, 25.0))
    tv, tv_piv, piv = 16 * 12 * 12 / 1000, 10 * 12 * 12 / 1000, 20**3 / 1000  # cm3
    h = rtkit.dvh(dose, target)
    assert h.volume_cc == pytest.approx(tv, rel=1e-9)
    assert h.volume_at(rx) == pytest.approx(tv_piv, rel=1e-9)
    assert paddick_ci(dose, target, rx) == pytest.approx(tv_piv**2 / (tv * piv), rel=1e-9)  # 0.1125
    assert paddick_ci(dose, target, rx) == pytest.approx(0.1125, rel=1e-9)
    assert rtog_ci(dose, target, rx) == pytest.approx(piv / tv, rel=1e-9)


def test_paddick_ci_target_inside_the_isodose_box():
    rx = 10.0
    target = _box("PTV", (13.0, 25.0), (13.0, 25.0), (13.0, 25.0))  # 1.728 cm3, covered
    assert paddick_ci(_box_dose(rx), target, rx) == pytest.approx(1.728 / 8.0, rel=1e-9)  # TV / PIV


def test_whole_grid_isodose_volume_is_counted_per_dose_voxel():
    # dose 40 - x: voxel centres x = 0..20 mm (11 of the 20 columns) are >= 20 Gy, so the counted
    # PIV is 11 x 2 mm x 40 x 40 mm2 = 35.2 cm3, although the trilinear 20 Gy isodose encloses
    # x in [-1, 20] mm only (33.6 cm3): each voxel counts whole, at its centre's dose
    dose = _linear_dose()
    target = _box("PTV", (11.0, 31.0), (13.0, 25.0), (13.0, 25.0))  # 2.88 cm3
    assert rtog_ci(dose, target, 20.0) == pytest.approx(35.2 / 2.88, rel=1e-9)
    # half the prescription, 10 Gy: centres x = 0..30 mm, 16 columns
    assert gradient_index(dose, 20.0) == pytest.approx(16 / 11, rel=1e-12)


def test_gradient_index_whole_grid():
    rx = 10.0
    arr = np.zeros((20, 20, 20))
    arr[3:17, 3:17, 3:17] = 0.6 * rx   # >= rx / 2 only
    arr[5:15, 5:15, 5:15] = 2.0 * rx   # >= rx
    assert gradient_index(Dose(arr, _grid()), rx) == pytest.approx(14**3 / 10**3, rel=1e-12)


# --------------------------------------------------- conformity within a body
def test_indices_within_a_body_use_the_dvh_engine():
    dose = _linear_dose()
    rx = 20.0                                              # isodose plane x = 20 mm
    body = _box("BODY", (1.0, 37.0), (3.0, 35.0), (3.0, 35.0), number=2)
    target = _box("PTV", (11.0, 31.0), (13.0, 25.0), (13.0, 25.0))
    tv = 20 * 12 * 12 / 1000                               # 2.88 cm3
    tv_piv = (20 - 11) * 12 * 12 / 1000                    # x in [11, 20]: 1.296 cm3
    piv = (20 - 1) * 32 * 32 / 1000                        # x in [1, 20] within the body: 19.456 cm3
    piv_half = (30 - 1) * 32 * 32 / 1000                   # 10 Gy at x = 30 mm
    assert paddick_ci(dose, target, rx, body=body) == pytest.approx(tv_piv**2 / (tv * piv), rel=1e-9)
    assert rtog_ci(dose, target, rx, body=body) == pytest.approx(piv / tv, rel=1e-9)
    assert gradient_index(dose, rx, body=body) == pytest.approx(piv_half / piv, rel=1e-9)  # 29 / 19


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("rx", [0.0, -10.0, math.nan, math.inf, None, "ten"])
def test_bad_prescriptions(rx):
    dose = _box_dose(10.0)
    target = _box("PTV", (13.0, 25.0), (13.0, 25.0), (13.0, 25.0))
    for call in (lambda: paddick_ci(dose, target, rx), lambda: rtog_ci(dose, target, rx),
                 lambda: gradient_index(dose, rx)):
        with pytest.raises(MetricError, match=r"prescription"):
            call()


def test_no_dose_reaches_the_prescription():
    dose = _box_dose(10.0)                                 # max 16 Gy
    target = _box("PTV", (13.0, 25.0), (13.0, 25.0), (13.0, 25.0))
    with pytest.raises(MetricError, match=r"no dose reaches the prescription 2000 Gy on the dose grid"):
        paddick_ci(dose, target, 2000.0)
    with pytest.raises(MetricError, match=r"PIV = 0"):
        gradient_index(dose, 2000.0)
    body = _box("BODY", (1.0, 37.0), (1.0, 37.0), (1.0, 37.0), number=2)
    with pytest.raises(MetricError, match=r"in 'BODY'"):
        paddick_ci(dose, target, 2000.0, body=body)
    assert rtog_ci(dose, target, 2000.0) == 0.0             # PIV / TV is defined: 0


def test_empty_target_and_other_frame():
    dose = _box_dose(10.0)
    with pytest.raises(MetricError, match=r"target 'Empty' is empty"):
        paddick_ci(dose, Structure("Empty", 3, [], frame_of_reference_uid=FOR), 10.0)
    with pytest.raises(MetricError, match=r"empty"):
        rtog_ci(dose, Structure("Empty", 3, [], frame_of_reference_uid=FOR), 10.0)
    other = _box("PTV", (13.0, 25.0), (13.0, 25.0), (13.0, 25.0))
    other.frame_of_reference_uid = "9.9"
    with pytest.raises(rtkit.FrameOfReferenceError):
        paddick_ci(dose, other, 10.0)


def test_errors_are_rtkit_errors():
    with pytest.raises(rtkit.RTKitError):
        homogeneity_index(DVH.from_samples([], []))

"""DVH: metrics, interpolation, and the first DVH engine on analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

import rtkit
from rtkit import DVH, Contour, Dose, Grid, MetricError, Structure
from rtkit.dvh import parse_metric


# ------------------------------------------------------------- metric strings
@pytest.mark.parametrize(("metric", "expected"), [
    ("D95%", {"kind": "D", "volume": 95.0, "volume_unit": "%", "out": "Gy"}),
    ("D0.03cc", {"kind": "D", "volume": 0.03, "volume_unit": "cc", "out": "Gy"}),
    ("D2cc[cGy]", {"kind": "D", "volume": 2.0, "volume_unit": "cc", "out": "cGy"}),
    ("V20Gy", {"kind": "V", "dose": 20.0, "dose_unit": "Gy", "out": "cc"}),
    ("V20Gy[%]", {"kind": "V", "dose": 20.0, "dose_unit": "Gy", "out": "%"}),
    ("V1500cGy", {"kind": "V", "dose": 1500.0, "dose_unit": "cGy", "out": "cc"}),
    ("Dmean", {"kind": "stat", "stat": "mean", "out": "Gy"}),
    ("Dmax[%]", {"kind": "stat", "stat": "max", "out": "%"}),
])
def test_parse_metric(metric, expected):
    assert parse_metric(metric) == expected


@pytest.mark.parametrize("bad", ["D95", "V20", "Dmean[cc]", "V20Gy[Gy]", "D-5%", "mean", "", "D95%[mm]", 42])
def test_bad_metrics_list_the_accepted_forms(bad):
    with pytest.raises(MetricError, match="accepted forms") if not isinstance(bad, str) or bad in (
        "D95", "V20", "D-5%", "mean", "", "D95%[mm]") else pytest.raises(MetricError):
        parse_metric(bad)


# --------------------------------------------------------- curve arithmetic
def _uniform_dvh():
    """10 cc with doses uniform on [10, 20] Gy: V(d) = 10 (20 - d) / 10 between 10 and 20."""
    d = np.linspace(10, 20, 100001)
    return DVH.from_samples(d, np.full(d.size, 10.0 / d.size), bin_width=0.01, prescription_gy=20.0)


def test_uniform_distribution_metrics():
    h = _uniform_dvh()
    assert h.volume_cc == pytest.approx(10.0)
    assert h.mean == pytest.approx(15.0, abs=1e-6)
    assert h.min == pytest.approx(10.0) and h.max == pytest.approx(20.0)
    assert h.dose_at(95) == pytest.approx(10.5, abs=0.01)      # 95% receive >= 10.5 Gy
    assert h.dose_at(2, "cc") == pytest.approx(18.0, abs=0.01)
    assert h["D95%"] == pytest.approx(10.5, abs=0.01)
    assert h["D95%[cGy]"] == pytest.approx(1050, abs=1)
    assert h["D95%[%]"] == pytest.approx(52.5, abs=0.05)        # of the 20 Gy prescription
    assert h["V15Gy"] == pytest.approx(5.0, abs=0.01)
    assert h["V15Gy[%]"] == pytest.approx(50.0, abs=0.1)
    assert h["V75%"] == pytest.approx(5.0, abs=0.01)            # 75% of 20 Gy = 15 Gy
    assert h["Dmean"] == h.mean and h["Dmax"] == h.max and h["Dmin"] == h.min
    assert h.volume_at(5) == pytest.approx(10.0) and h.volume_at(25) == 0.0


def test_interpolation_between_bin_edges_not_nearest_bin():
    # two samples of 1 cc at 1 Gy and 3 Gy in 1 Gy bins: the curve is exact at bin edges
    h = DVH.from_samples([1.0, 3.0], [1.0, 1.0], bin_width=1.0)
    assert h.volume_at(0.5) == pytest.approx(2.0)
    assert h.volume_at(1.5) == pytest.approx(1.5)   # exact at bin edges (V(1) = 2, V(2) = 1), linear between
    assert h.volume_at(3.5) == pytest.approx(0.5)   # linear within the [3, 4] Gy bin


def test_prescription_needed_for_percent():
    h = DVH.from_samples([1.0], [1.0])
    with pytest.raises(MetricError, match="prescription"):
        h["D95%[%]"]


def test_empty_dvh():
    h = DVH.from_samples([], [])
    assert h.is_empty and h.volume_cc == 0 and math.isnan(h.dose_at(50))


# ---------------------------------------------------------------- the engine
FOR = "1.2.826.0.1.3680043.8.498.5"


def _cylinder(radius=10.0, z0=-10.0, z1=10.0, spacing=2.0, center=(0.0, 0.0), n=256, name="Cyl"):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    contours = [Contour(np.c_[center[0] + radius * np.cos(t), center[1] + radius * np.sin(t), np.full(n, z)])
                for z in np.arange(z0, z1 + 1e-9, spacing)]
    return Structure(name, 1, contours, frame_of_reference_uid=FOR)


def _linear_dose(grid, coef, const=0.0):
    return Dose(grid.centers() @ np.asarray(coef, float) + const, grid)


@pytest.mark.parametrize("direction", ["hfs", "ffs"])
def test_cylinder_in_a_lateral_gradient(direction):
    """Dose = 20 + x (Gy, x in mm): closed form for the slab cylinder (radius R, height H)."""
    d = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    if direction == "ffs":
        d = np.array([[0, 0, -1], [0, 1, 0], [-1, 0, 0]], float)
    origin = (-20.0, -20.0, -20.0) if direction == "hfs" else (20.0, -20.0, 20.0)
    grid = Grid.from_spacing((21, 21, 21), (2.0, 2.0, 2.0), origin=origin, direction=d, frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (1.0, 0.0, 0.0), 20.0)
    cyl = _cylinder()
    h = rtkit.dvh(dose, cyl, between_planes="slab")
    R, H = 10.0, 22.0  # 11 planes x 2 mm slabs
    n = 256
    area = 0.5 * n * R * R * math.sin(2 * math.pi / n)
    assert h.volume_cc == pytest.approx(area * H / 1000, rel=1e-6)
    assert h.mean == pytest.approx(20.0, abs=0.01)              # symmetric about x = 0
    assert h.min == pytest.approx(10.0, abs=0.01) and h.max == pytest.approx(30.0, abs=0.01)
    # V(20 + s) = H * (circular segment area beyond x = s)
    for s in (-5.0, 0.0, 5.0):
        seg = R * R * math.acos(s / R) - s * math.sqrt(R * R - s * s)
        assert h.volume_at(20 + s) == pytest.approx(seg * H / 1000, rel=0.01)


def test_sphere_in_an_oblique_linear_dose():
    """For a linear dose the mean over a centred symmetric solid is the dose at its centre, and the
    distribution is symmetric about it (D50 = mean); trilinear interpolation is exact here."""
    grid = Grid.from_spacing((25, 25, 25), (2.5, 2.5, 2.5), origin=(-30.0, -30.0, -30.0), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0.5, -0.3, 0.25), 30.0)
    r, n = 12.0, 180
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    zs = np.arange(-11.5, 11.51, 1.0)
    contours = [Contour(np.c_[math.sqrt(r * r - z * z) * np.cos(t), math.sqrt(r * r - z * z) * np.sin(t), np.full(n, z)])
                for z in zs]
    sph = Structure("Sphere", 2, contours, frame_of_reference_uid=FOR)
    h = rtkit.dvh(dose, sph, between_planes="slab")
    assert h.volume_cc == pytest.approx(sph.volume, rel=1e-6)
    assert h.mean == pytest.approx(30.0, abs=1e-3)
    assert h.dose_at(50) == pytest.approx(30.0, abs=0.02)
    assert h.dose_at(95) == pytest.approx(60.0 - h.dose_at(5), abs=0.03)


def test_partly_outside_volume_is_exact_and_counted_at_zero():
    grid = Grid.from_spacing((21, 21, 11), (2.0, 2.0, 2.0), origin=(-20.0, -20.0, -20.0), frame_of_reference_uid=FOR)
    # the grid's voxel box ends at x = -20 + 10 * 2 + 1 = 1 mm: the half of the cylinder beyond is outside
    dose = _linear_dose(grid, (0.0, 0.0, 0.0), 5.0)
    cyl = _cylinder(center=(1.0, 0.0))
    with pytest.warns(rtkit.RTKitWarning, match="outside the dose grid"):
        h = rtkit.dvh(dose, cyl)
    assert h.outside_volume_cc == pytest.approx(cyl.volume / 2, rel=1e-3)
    assert h.volume_cc == pytest.approx(cyl.volume, rel=1e-6)
    assert h.min == 0.0 and h.max == pytest.approx(5.0)
    assert h.mean == pytest.approx(2.5, rel=1e-3)
    assert h.volume_at(1.0) == pytest.approx(cyl.volume / 2, rel=1e-3)


def _circle_stack(radius_at, zs, n=360, name="S"):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return Structure(name, 3, [Contour(np.c_[radius_at(z) * np.cos(t), radius_at(z) * np.sin(t), np.full(n, z)])
                               for z in zs], frame_of_reference_uid=FOR)


@pytest.mark.parametrize("spacing", [3.0, 2.0])
def test_smooth_model_recovers_a_sphere_between_coarse_planes(spacing):
    """Contours of a sphere (R 12 mm, poles on the first and last planes, as in Nelms et al.) every
    2-3 mm: the smooth solid is the sphere (closed form) within 0.2%, several times closer than
    the slab solid (0.7-1.6% off); in a linear SI dose (1 Gy/mm) D99 sits in the polar cap: V(h) = pi (R h^2 - h^3/3)."""
    R = 12.0
    zs = np.arange(-R, R + 1e-9, spacing)
    sph = _circle_stack(lambda z: math.sqrt(max(R * R - z * z, 0.0)) or 0.05, zs)
    grid = Grid.from_spacing((21, 21, 21), (2.0, 2.0, 2.0), origin=(-20.0, -20.0, -20.0), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0.0, 0.0, 1.0), 30.0)  # 30 Gy + z
    smooth = rtkit.dvh(dose, sph)
    slab = rtkit.dvh(dose, sph, between_planes="slab")
    true_v = 4 / 3 * math.pi * R**3 / 1000
    assert smooth.volume_cc == pytest.approx(true_v, rel=2e-3)
    assert abs(smooth.volume_cc / true_v - 1) < abs(slab.volume_cc / true_v - 1) / 3
    assert smooth.mean == pytest.approx(30.0, abs=0.02)
    # D99: the height h above the lower pole holding 1% of the sphere
    h = float(brentq(lambda h: math.pi * (R * h * h - h**3 / 3) - 0.01 * true_v * 1000, 0, R))
    assert smooth.dose_at(99) == pytest.approx(30.0 - R + h, abs=0.1)
    assert smooth.min == pytest.approx(30.0 - R - spacing / 2, abs=0.05)  # the (tiny) end cap


def test_smooth_model_is_exact_for_a_cone_and_a_prism():
    """Linear radius (a cone frustum): the smooth solid is the frustum plus the end caps; a
    constant section (cylinder): smooth and slab solids are the same."""
    zs = np.arange(0.0, 12.01, 3.0)
    cone = _circle_stack(lambda z: 4.0 + 0.5 * z, zs)
    grid = Grid.from_spacing((21, 21, 21), (2.0, 2.0, 2.0), origin=(-20.0, -20.0, -10.0), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0.0, 0.0, 0.0), 2.0)
    poly = 0.5 * 360 * math.sin(2 * math.pi / 360)  # polygon area / r^2
    frustum = math.pi * 12 / 3 * (4**2 + 4 * 10 + 10**2) * poly / math.pi
    caps = 1.5 * poly * (4**2 + 10**2)
    assert rtkit.dvh(dose, cone).volume_cc == pytest.approx((frustum + caps) / 1000, rel=2e-3)
    cyl = _cylinder()
    assert rtkit.dvh(dose, cyl).volume_cc == pytest.approx(cyl.volume, rel=1e-9)


@pytest.mark.parametrize("mode", ["smooth", "slab"])
def test_without_end_caps_the_solid_stops_at_the_first_and_last_planes(mode):
    """Eclipse's convention: a prism of 11 planes 2 mm apart is 20 mm tall, not 22 mm."""
    grid = Grid.from_spacing((21, 21, 21), (2.0, 2.0, 2.0), origin=(-20.0, -20.0, -20.0), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0.0, 0.0, 1.0), 20.0)  # 20 Gy + z
    cyl = _cylinder()  # planes z = -10 .. 10
    with_caps = rtkit.dvh(dose, cyl, between_planes=mode)
    without = rtkit.dvh(dose, cyl, between_planes=mode, end_caps=False)
    assert without.volume_cc == pytest.approx(with_caps.volume_cc * 20 / 22, rel=1e-9)
    assert without.min == pytest.approx(10.0, abs=1e-6) and with_caps.min == pytest.approx(9.0, abs=1e-6)
    assert without.mean == pytest.approx(20.0, abs=1e-6)


def test_dmax_and_dmin_see_hot_and_cold_voxels_inside():
    grid = Grid.from_spacing((21, 21, 21), (2.0, 2.0, 2.0), origin=(-20.0, -20.0, -20.0), frame_of_reference_uid=FOR)
    arr = np.full(grid.shape, 40.0, np.float32)
    arr[10, 10, 10], arr[10, 11, 9] = 60.0, 20.0  # inside the cylinder
    cyl = _cylinder(radius=6.0)
    for mode in ("smooth", "slab"):
        h = rtkit.dvh(Dose(arr, grid), cyl, between_planes=mode)
        assert h.max == pytest.approx(60.0) and h.min == pytest.approx(20.0)


def test_empty_structure_and_frames():
    grid = Grid.from_spacing((3, 3, 3), (1, 1, 1), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0, 0, 0), 1.0)
    assert rtkit.dvh(dose, Structure("E", 1, [])).is_empty
    other = Structure("O", 1, _cylinder().contours, frame_of_reference_uid="9.9")
    with pytest.raises(rtkit.FrameOfReferenceError):
        rtkit.dvh(dose, other)


def test_dvhset_table_and_csv(tmp_path):
    case = rtkit.load(rtkit.datasets.synthetic_case(tmp_path / "c"))
    s = rtkit.dvhs(case.dose, case.structures, names=["PTV", "Spine"], prescription_gy=60.0)
    rows = s.table(["D95%", "Dmean", "V20Gy[%]"])
    assert [r["structure"] for r in rows] == ["PTV", "Spine"]
    # the analytical dose is >= 45 Gy over the PTV (its edge, r = 20 mm, sits on the falloff)
    ptv = s["PTV"]
    assert rows[0]["D95%"] == ptv.dose_at(95) and rows[0]["Dmean"] == ptv.mean
    assert ptv.min < rows[0]["D95%"] < rows[0]["Dmean"] < ptv.max <= 61.8 + 1e-3
    assert rows[0]["V20Gy[%]"] == pytest.approx(100.0)
    path = s.to_csv(tmp_path / "t.csv", ["D95%", "Dmean"])
    assert path.read_text().splitlines()[0] == "structure,D95%,Dmean"
    with pytest.raises(MetricError):
        s.table(["D95"])


# --------------------------------------------------------- DVHs stored in RT Dose
def test_stored_dvh_from_the_dicompyler_dose(data_dir):
    import pydicom

    path = data_dir / "dicompyler-core/rtdose.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    item = next(i for i in ds.DVHSequence if int(i.DVHReferencedROISequence[0].ReferencedROINumber) == 9)
    data = np.asarray([float(v) for v in item.DVHData])
    widths, cum = data[0::2] * float(item.DVHDoseScaling), data[1::2]
    edges = np.concatenate([[0], np.cumsum(widths)])
    diff = cum - np.concatenate([cum[1:], [0]])           # volume in each bin
    expected_mean = np.sum(diff * 0.5 * (edges[:-1] + edges[1:])) / cum[0]
    # The file's DVHMin/Max/MeanDose are % of 14 Gy although DoseUnits is GY: warned, not used.
    with pytest.warns(rtkit.RTKitWarning, match="curve's figure is used"):
        h = DVH.from_dicom(rtkit.read_dose(path), 9, name="Tumor Bed")
    assert h.volume_cc == pytest.approx(cum[0])
    assert h.mean == pytest.approx(expected_mean, rel=1e-9)
    # Eclipse's own figures (as % of the 14 Gy prescription) agree with the curve to one 0.01 Gy
    # bin: a cumulative curve only locates Dmin and Dmax within a bin.
    assert h.max == pytest.approx(float(item.DVHMaximumDose) / 100 * 14, abs=0.015)
    assert h.min == pytest.approx(float(item.DVHMinimumDose) / 100 * 14, abs=0.015)
    with pytest.warns(rtkit.RTKitWarning):
        same = DVH.from_dicom(path, 9)  # a path works too
    assert same.mean == h.mean
    with pytest.raises(KeyError, match="no stored DVH for ROI number 2"):
        DVH.from_dicom(ds, 2)  # Areola is empty: no DVH


def test_stored_differential_dvh():
    from pydicom.dataset import Dataset

    item = Dataset()
    ref = Dataset()
    ref.ReferencedROINumber = 3
    item.DVHReferencedROISequence = [ref]
    item.DVHType, item.DoseUnits, item.DVHVolumeUnits = "DIFFERENTIAL", "GY", "CM3"
    item.DVHDoseScaling = 0.5
    item.DVHData = [2, 1.0, 2, 3.0, 2, 0.0, 2, 2.0]  # bins of 1 Gy: [0,1) 1 cc, [1,2) 3 cc, [3,4) 2 cc
    ds = Dataset()
    ds.DVHSequence = [item]
    h = DVH.from_dicom(ds, 3)
    assert h.volume_cc == 6.0
    np.testing.assert_allclose(h.volumes, [6, 5, 2, 2, 0])
    assert h.mean == pytest.approx((0.5 * 1 + 1.5 * 3 + 3.5 * 2) / 6)
    assert h.volume_at(1.5) == pytest.approx(3.5)


def test_dvhs_on_threads_gives_the_same_dvhs(tmp_path):
    case = rtkit.load(rtkit.datasets.synthetic_case(tmp_path / "c"))
    names = [n for n in case.structures.names if not case.structures[n].is_empty]
    one = rtkit.dvhs(case.dose, case.structures, names=names)
    many = rtkit.dvhs(case.dose, case.structures, names=names, workers=0)
    assert list(one) == list(many) == names
    for n in names:
        np.testing.assert_array_equal(one[n].volumes, many[n].volumes)
        assert one[n].mean == many[n].mean and one[n].max == many[n].max


def _parts_case():
    """A dose grid and three structures: a sphere, a cylinder half outside the grid (warns), an
    empty structure (no contour)."""
    grid = Grid.from_spacing((33, 21, 21), (1.0, 2.0, 2.0), origin=(-20.0, -20.0, -16.0), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0.3, 0.2, 1.0), 30.0)
    R = 12.0
    sph = _circle_stack(lambda z: math.sqrt(max(R * R - z * z, 0.0)) or 0.05, np.arange(-R, R + 1e-9, 1.5))
    cyl = _cylinder(center=(14.0, 0.0), radius=8.0, z0=-8.0, z1=8.0)  # partly beyond the grid in x
    empty = Structure("Empty", 9, [], frame_of_reference_uid=FOR)
    return dose, {"Sphere": sph, "Cyl": cyl, "Empty": empty}


def _same_dvh(a, b, rel=1e-12):
    assert a.volume_cc == pytest.approx(b.volume_cc, rel=rel)
    assert a.outside_volume_cc == pytest.approx(b.outside_volume_cc, rel=rel, abs=1e-12)
    assert a.mean == pytest.approx(b.mean, rel=rel)
    assert (a.min, a.max) == pytest.approx((b.min, b.max), rel=rel)
    np.testing.assert_allclose(a.volumes, b.volumes, rtol=1e-9, atol=1e-12)


def test_parts_do_not_change_the_dvh(monkeypatch):
    """A large solid is sampled in parts (runs of gaps between planes) that are added in order:
    split into the most parts the DVH is the one computed in one part."""
    import importlib

    dvh_module = importlib.import_module("rtkit.dvh")

    dose, structures = _parts_case()
    sph = structures["Sphere"]
    monkeypatch.setattr(dvh_module, "PART_CELLS", 10**12)
    assert dvh_module._parts_for(dvh_module._part_cells(dose, sph), "smooth") == 1
    whole = rtkit.dvh(dose, sph)
    monkeypatch.setattr(dvh_module, "PART_CELLS", 1)
    assert dvh_module._parts_for(dvh_module._part_cells(dose, sph), "smooth") == dvh_module.MAX_PARTS
    split = rtkit.dvh(dose, sph)
    _same_dvh(split, whole)
    assert split.min < whole.mean < split.max  # the extremes (part 0) survive the merge


def _needs_fresh_interpreter(test_id):
    """True (after running it there) when this test of forked workers must run in a fresh
    interpreter: other tests left threads in this process, where rtkit rightly uses threads
    instead of forking.  Skips off Linux (no forked workers there)."""
    import importlib
    import os
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("forked DVH workers are used on Linux only")
    if importlib.import_module("rtkit.dvh")._can_fork():
        return False
    if os.environ.get("RTKIT_FRESH_FORK_TEST"):
        pytest.fail("forked DVH workers unavailable in a fresh interpreter")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{test_id}"],
                         env={**os.environ, "RTKIT_FRESH_FORK_TEST": "1"}, capture_output=True, text=True)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr
    return True


@pytest.mark.parametrize("fork", [True, False], ids=["processes", "threads"])
def test_dvhs_workers_give_the_dvhs_of_one_worker(monkeypatch, fork):
    """workers > 1 runs the parts on forked processes (threads where forking is unsafe); the DVHs,
    their order and their warnings (once per structure) are those of the sequential run."""
    import importlib
    import warnings

    dvh_module = importlib.import_module("rtkit.dvh")

    dose, structures = _parts_case()
    monkeypatch.setattr(dvh_module, "PART_CELLS", 2_000)  # several parts per structure
    if fork and _needs_fresh_interpreter("test_dvhs_workers_give_the_dvhs_of_one_worker[processes]"):
        return
    if not fork:
        monkeypatch.setattr(dvh_module, "_can_fork", lambda: False)
    with warnings.catch_warnings(record=True) as seq_warnings:
        warnings.simplefilter("always")
        one = rtkit.dvhs(dose, structures)
    with warnings.catch_warnings(record=True) as par_warnings:
        warnings.simplefilter("always")
        many = rtkit.dvhs(dose, structures, workers=2)
    assert list(one) == list(many) == ["Sphere", "Cyl", "Empty"]
    for n in ("Sphere", "Cyl"):  # the same parts, added in the same order: the same bits
        np.testing.assert_array_equal(many[n].volumes, one[n].volumes)
        np.testing.assert_array_equal(many[n].doses, one[n].doses)
        assert (many[n].mean, many[n].min, many[n].max, many[n].outside_volume_cc) == (
            one[n].mean, one[n].min, one[n].max, one[n].outside_volume_cc)
    assert many["Empty"].is_empty and many["Cyl"].outside_volume_cc > 0.05
    outside = [str(w.message) for w in par_warnings if "outside the dose grid" in str(w.message)]
    assert len(outside) == 1 and "'Cyl'" in outside[0]
    assert sorted(str(w.message) for w in par_warnings) == sorted(str(w.message) for w in seq_warnings)
    assert all(w.filename == __file__ for w in par_warnings if "outside the dose grid" in str(w.message))


def test_forked_workers_raise_a_workers_error_and_detect_a_dead_worker(monkeypatch):
    """An exception in any worker is raised by dvhs; a worker that dies gives an RTKitError
    saying so (never a hang, never a DVH missing a part)."""
    import importlib
    import os
    import time

    if _needs_fresh_interpreter("test_forked_workers_raise_a_workers_error_and_detect_a_dead_worker"):
        return
    dvh_module = importlib.import_module("rtkit.dvh")
    dose, structures = _parts_case()
    monkeypatch.setattr(dvh_module, "PART_CELLS", 2_000)
    sample = dvh_module._sample_part

    def failing(dose, structure, *args):
        if structure.name == "Cyl":
            raise rtkit.GeometryError("ROI 'Cyl': broken on purpose")
        return sample(dose, structure, *args)

    monkeypatch.setattr(dvh_module, "_sample_part", failing)
    with pytest.raises(rtkit.GeometryError, match="broken on purpose"):
        rtkit.dvhs(dose, structures, workers=2)
    monkeypatch.setattr(dvh_module, "_sample_part", sample)
    parent = os.getpid()
    task = dvh_module._part_task

    def dying(key, index):
        if os.getpid() != parent:
            os._exit(3)
        time.sleep(0.2)  # the parent works slowly: the child surely takes a task
        return task(key, index)

    monkeypatch.setattr(dvh_module, "_part_task", dying)
    with pytest.raises(rtkit.RTKitError, match="worker process died"):
        rtkit.dvhs(dose, structures, workers=2)
    monkeypatch.setattr(dvh_module, "_part_task", task)
    assert rtkit.dvhs(dose, structures, workers=2)["Sphere"].volume_cc > 0  # and it works again


def test_dvhs_rejects_unknown_options():
    dose, structures = _parts_case()
    with pytest.raises(TypeError, match="resolutoin"):
        rtkit.dvhs(dose, structures, resolutoin=0.5)
    with pytest.raises(ValueError, match="between_planes"):
        rtkit.dvhs(dose, structures, workers=2, between_planes="linear")


def test_chunking_does_not_change_the_dvh(monkeypatch):
    """The smooth engine splits its work (gap chunks sharing plane coverage and edge distances,
    edge trees per block of planes, wholly covered columns sampled a few slices at a time)
    only to bound memory: with every split forced small the DVH is the one computed in one go."""
    from rtkit import _dvh_engine as engine

    R = 12.0
    zs = np.arange(-R, R + 1e-9, 1.5)
    sph = _circle_stack(lambda z: math.sqrt(max(R * R - z * z, 0.0)) or 0.05, zs)
    grid = Grid.from_spacing((33, 21, 21), (1.0, 2.0, 2.0), origin=(-20.0, -20.0, -16.0), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0.3, 0.2, 1.0), 30.0)
    monkeypatch.setattr(engine, "GAP_CHUNK_CELLS", 10**9)
    monkeypatch.setattr(engine, "FULL_CHUNK_PIECES", 10**9)
    monkeypatch.setattr(engine._Boundaries, "BLOCK_POINTS", 10**9)
    whole = rtkit.dvh(dose, sph)
    monkeypatch.setattr(engine, "GAP_CHUNK_CELLS", 1)  # one gap per chunk
    monkeypatch.setattr(engine, "FULL_CHUNK_PIECES", 7)
    monkeypatch.setattr(engine._Boundaries, "BLOCK_POINTS", 50)  # about one plane per edge tree
    split = rtkit.dvh(dose, sph)
    assert split.volume_cc == pytest.approx(whole.volume_cc, rel=1e-12)
    assert split.mean == pytest.approx(whole.mean, rel=1e-12)
    assert (split.min, split.max) == pytest.approx((whole.min, whole.max), rel=1e-12)
    np.testing.assert_allclose(split.volumes, whole.volumes, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None)
@example([(39, -2.0, 16.0), (5, 0.3, 9.4), (5, 9.4, 1.0), (44, 2.0, 3.0)], True)  # NaN, off-grid, touching
@given(st.lists(st.tuples(st.integers(0, 59), st.floats(-3, 14), st.floats(0, 12)), min_size=1, max_size=25),
       st.booleans())
def test_whole_columns_are_the_depth_pieces_of_each_column(cols, holes):
    """The table-driven sampling of wholly covered columns gives the samples that splitting each
    column at the dose slices gives (_depth_samples, the general path): the same volume, dose x
    volume, extremes and cumulative histogram; columns beyond the grid and NaN doses included."""
    from rtkit import _dvh_engine as engine

    grid = Grid.from_spacing((12, 6, 10), (2.5, 2.0, 1.5), origin=(-7.0, -5.0, -3.0), frame_of_reference_uid=FOR)
    dose = _linear_dose(grid, (0.3, 0.2, 1.0), 5.0)
    arr = np.asarray(dose.array, dtype=np.float32).copy()
    arr += np.random.default_rng(len(cols)).uniform(0, 0.5, arr.shape).astype(np.float32)  # not linear
    if holes:
        arr[3, 2, 4] = np.nan  # a resampled dose outside its original grid
    stack = _circle_stack(lambda z: 4.0, np.array([0.0]))._stack
    fr = engine._Frame.of(grid, stack)
    lat = engine._Lattice(np.array([-1.5, -1.5]), np.array([1, 2]), (6, 10), fr.pixel_area / 2.0)  # some pixels off-grid
    # columns of one pixel must not overlap: keep the first of overlapping ones
    taken: dict[int, list[tuple[float, float]]] = {}
    pix, ka, kb = [], [], []
    for p, a, w in cols:
        if all(a + w <= lo or a >= hi for lo, hi in taken.get(p, [])):
            taken.setdefault(p, []).append((a, a + w))
            pix.append(p), ka.append(a), kb.append(a + w)
    pix, ka, kb = np.array(pix, dtype=np.intp), np.array(ka), np.array(kb)
    fast = engine.Histogram(0.01, 20.0)
    engine._whole_columns(arr, fr, lat, pix, ka, kb, fast)
    slow = engine.Histogram(0.01, 20.0)
    r, c = lat.to_rc((pix // 10).astype(np.float64), (pix % 10).astype(np.float64))
    slow.add(engine._depth_samples(arr, fr, r, c, np.full(len(pix), lat.pixel_area), ka, kb, lat.f))
    assert fast.total == pytest.approx(slow.total, rel=1e-12, abs=1e-15)
    assert fast.outside_cc == pytest.approx(slow.outside_cc, rel=1e-12, abs=1e-15)
    assert fast.dose_volume == pytest.approx(slow.dose_volume, rel=1e-12, abs=1e-15)
    assert (fast.dmin, fast.dmax) == (slow.dmin, slow.dmax)
    # round-off of the cumulative sums: a few ulps of the total per bin summed over
    np.testing.assert_allclose(fast.cum, slow.cum, rtol=1e-10, atol=1e-11 * slow.total)

"""RT Dose reading (rtkit.read_dose), Dose, sum_doses and Case.dose."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest
from builders import file_hashes, unchanged, write_rtdose

import rtkit
from rtkit import Dose, Grid


def _field(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 2.0, size=shape)


# --------------------------------------------------------------------- reading
@pytest.mark.parametrize("absolute", [False, True], ids=["relative_offsets", "absolute_offsets"])
@pytest.mark.parametrize("step", [2.5, -3.0])
@pytest.mark.parametrize("bits", [16, 32])
def test_grid_and_values_from_offset_vector(tmp_path, absolute, step, bits):
    gy = _field((6, 5, 7), seed=bits)
    t = write_rtdose(tmp_path / "rd.dcm", gy, origin=(-10.0, 20.0, 35.0), frame_step=step,
                     absolute_offsets=absolute, bits=bits)
    with unchanged(tmp_path):
        dose = rtkit.read_dose(t["path"])
        arr = dose.array
    assert arr.dtype == np.float32 and dose.units == "GY" and not dose.is_relative
    # grid slice j holds the file frame whose position is j-th along the normal
    order = np.argsort(np.arange(6) * step)
    np.testing.assert_allclose(arr, t["gy"][order], rtol=1e-6, atol=1e-7)
    k, r, c = np.meshgrid(np.arange(6), np.arange(5), np.arange(7), indexing="ij")
    truth = t["world"](order[k], r, c)
    np.testing.assert_allclose(dose.grid.index_to_world(np.stack([k, r, c], -1)), truth, atol=1e-9)
    assert dose.max == pytest.approx(float(t["gy"].max()), rel=1e-6)


def test_oblique_dose_grid(tmp_path):
    a = np.deg2rad(25)
    iop = (np.cos(a), np.sin(a), 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated
    gy = _field((4, 6, 5), seed=3)
    t = write_rtdose(tmp_path / "rd.dcm", gy, orientation=iop, origin=(5.0, -7.0, 12.0), frame_step=2.0)
    dose = rtkit.read_dose(t["path"])
    k, r, c = np.meshgrid(np.arange(4), np.arange(6), np.arange(5), indexing="ij")
    np.testing.assert_allclose(dose.grid.index_to_world(np.stack([k, r, c], -1)), t["world"](k, r, c), atol=1e-9)
    np.testing.assert_allclose(dose.array, t["gy"], rtol=1e-6, atol=1e-7)


def test_relative_units_are_flagged(tmp_path):
    t = write_rtdose(tmp_path / "rd.dcm", _field((2, 3, 3)), units="RELATIVE")
    with pytest.warns(rtkit.RTKitWarning, match="RELATIVE"):
        dose = rtkit.read_dose(t["path"])
    assert dose.is_relative and dose.units == "RELATIVE"
    with pytest.raises(rtkit.RTKitError, match="RELATIVE"):
        rtkit.sum_doses([dose])


def test_missing_dose_grid_scaling_is_an_error(tmp_path):
    t = write_rtdose(tmp_path / "rd.dcm", _field((2, 3, 3)))
    ds = pydicom.dcmread(t["path"])
    del ds.DoseGridScaling
    ds.save_as(tmp_path / "bad.dcm", enforce_file_format=True)
    with pytest.raises(rtkit.DicomReadError, match="DoseGridScaling"):
        rtkit.read_dose(tmp_path / "bad.dcm")


def test_not_a_dose(tmp_path):
    folder = rtkit.datasets.synthetic_case(tmp_path / "c")
    with pytest.raises(rtkit.DicomReadError, match="not an RT Dose"):
        rtkit.read_dose(folder / "RP.dcm")


def test_pydicom_variants_give_identical_arrays(data_dir):
    base = data_dir / "misc-rt-objects/pydicom-testfiles"
    with unchanged(base), warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        arrays = {n: rtkit.read_dose(base / n).array for n in ("rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm")}
        one = rtkit.read_dose(base / "rtdose_1frame.dcm")
    ref = pydicom.dcmread(base / "rtdose.dcm")
    expected = ref.pixel_array * float(ref.DoseGridScaling)  # offsets increase: file order = grid order
    for name, arr in arrays.items():
        np.testing.assert_allclose(arr, expected, rtol=1e-6, err_msg=name)
    assert one.grid.shape[0] == 1 and one.is_relative and one.summation_type == "BEAM"
    np.testing.assert_allclose(one.array[0], expected[0], rtol=1e-6)


def test_dicompyler_dose(data_dir):
    path = data_dir / "dicompyler-core/rtdose.dcm"
    dose = rtkit.read_dose(path)
    ds = pydicom.dcmread(path)
    assert dose.grid.shape == (98, 129, 194)
    np.testing.assert_allclose(dose.grid.spacing, [3.0, 2.5, 2.5])
    expected_max = float(ds.pixel_array.max()) * float(ds.DoseGridScaling)
    assert dose.max == pytest.approx(expected_max, rel=1e-6) and dose.max == pytest.approx(14.68, abs=0.01)
    ipp = np.asarray(ds.ImagePositionPatient, float)
    iop = np.asarray(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    offsets = np.asarray(ds.GridFrameOffsetVector, float)
    for k in (0, 1, 50, 97):
        np.testing.assert_allclose(dose.grid.index_to_world((k, 0, 0)), ipp + (offsets[k] - offsets[0]) * normal, atol=1e-6)
    assert dose.summation_type == "PLAN" and len(dose.dvh_sequence) == 9
    plan = pydicom.dcmread(data_dir / "dicompyler-core/rtplan.dcm", stop_before_pixels=True)
    assert dose.referenced_plan_uid == plan.SOPInstanceUID


# ------------------------------------------------------------------ arithmetic
GRID = Grid.from_spacing((8, 9, 10), (2.5, 2.0, 2.0), origin=(-10.0, -9.0, -10.0), frame_of_reference_uid="1.2.3")


def _linear(grid, coef, const):
    return Dose(grid.centers() @ np.asarray(coef) + const, grid, summation_type="BEAM", referenced_plan_uid="9.9")


def test_sum_on_one_grid_is_exact():
    parts = [_linear(GRID, (0.01, 0.02, -0.01), 1.0), _linear(GRID, (0.0, -0.01, 0.02), 0.5),
             _linear(GRID, (0.02, 0.0, 0.0), 0.8)]
    total = rtkit.sum_doses(parts)
    expected = GRID.centers() @ np.array([0.03, 0.01, 0.01]) + 2.3
    np.testing.assert_allclose(total.array, expected, atol=1e-6)
    assert total.summation_type == "PLAN" and total.referenced_plan_uid == "9.9"


def test_sum_with_a_shifted_grid_interpolates():
    """A linear dose is reproduced exactly by trilinear interpolation; only float32 rounding remains."""
    shifted = Grid.from_spacing((10, 11, 12), (2.5, 2.0, 2.0), origin=(-11.3, -10.1, -11.7), frame_of_reference_uid="1.2.3")
    a = _linear(GRID, (0.01, 0.02, -0.01), 1.0)
    b = _linear(shifted, (0.02, -0.01, 0.01), 0.5)
    total = rtkit.sum_doses([a, b])
    expected = GRID.centers() @ np.array([0.03, 0.01, 0.0]) + 1.5
    np.testing.assert_allclose(total.array, expected, atol=1e-5)
    # onto a given grid, with 0 Gy where a dose does not reach
    far = Grid.from_spacing((2, 2, 2), (1, 1, 1), origin=(500, 500, 500), frame_of_reference_uid="1.2.3")
    assert np.all(rtkit.sum_doses([a, b], grid=far).array == 0)


def test_sum_refuses_other_frames():
    other = Dose(np.ones(GRID.shape), Grid(GRID.shape, GRID.affine, "7.7.7"))
    with pytest.raises(rtkit.FrameOfReferenceError):
        rtkit.sum_doses([_linear(GRID, (0, 0, 0), 1.0), other])
    with pytest.raises(rtkit.RTKitError):
        rtkit.sum_doses([])


def test_dose_resample_is_a_dose_with_zero_outside():
    d = _linear(GRID, (0.01, 0.0, 0.0), 1.0)
    out = d.resample(Grid.from_spacing((3, 3, 3), (5, 5, 5), origin=(-20, -20, -20), frame_of_reference_uid="1.2.3"))
    assert isinstance(out, Dose) and out.summation_type == "BEAM"
    assert out.array[0, 0, 0] == 0.0


# ------------------------------------------------------------------ Case.dose
def _case_with_beam_doses(tmp_path, beams, with_plan_dose=False):
    """The synthetic case with its PLAN dose replaced by BEAM doses on the same grid."""
    src = rtkit.datasets.synthetic_case(tmp_path / "src")
    folder = tmp_path / "case"
    shutil.copytree(src, folder)
    plan = pydicom.dcmread(folder / "RP.dcm")
    rd = pydicom.dcmread(folder / "RD.dcm")
    if not with_plan_dose:
        (folder / "RD.dcm").unlink()
    ipp = [float(v) for v in rd.ImagePositionPatient]
    shape = (int(rd.NumberOfFrames), rd.Rows, rd.Columns)
    fields = {}
    for b in beams:
        gy = _field(shape, seed=b)
        fields[b] = write_rtdose(folder / f"RD_beam{b}.dcm", gy, origin=ipp, pixel_spacing=[float(v) for v in rd.PixelSpacing],
                                 frame_step=float(rd.GridFrameOffsetVector[1]), summation_type="BEAM",
                                 plan_uid=plan.SOPInstanceUID, beam_numbers=[b],
                                 frame_of_reference_uid=rd.FrameOfReferenceUID, patient_id=plan.PatientID)["gy"]
    return folder, fields


def test_case_dose_sums_the_beam_doses(tmp_path):
    folder, fields = _case_with_beam_doses(tmp_path, [1, 2, 3, 4])
    before = file_hashes(folder)
    case = rtkit.load(folder)
    assert len(case.doses) == 4
    np.testing.assert_allclose(case.dose.array, sum(fields.values()), atol=1e-5)
    assert case.dose.summation_type == "PLAN" and case.dose.referenced_beam_numbers == (1, 2, 3, 4)
    assert file_hashes(folder) == before


def test_case_dose_warns_about_missing_beams(tmp_path):
    folder, fields = _case_with_beam_doses(tmp_path, [1, 2, 3])
    case = rtkit.load(folder)
    with pytest.warns(rtkit.RTKitWarning, match=r"treatment beam\(s\) \[4\]"):
        dose = case.dose
    np.testing.assert_allclose(dose.array, sum(fields.values()), atol=1e-5)


def test_case_dose_prefers_the_plan_dose(tmp_path):
    folder, _ = _case_with_beam_doses(tmp_path, [1, 2], with_plan_dose=True)
    case = rtkit.load(folder)
    rd = pydicom.dcmread(folder / "RD.dcm")
    assert case.dose.summation_type == "PLAN" and case.dose.meta["sop_instance_uid"] == rd.SOPInstanceUID
    assert len(case.doses) == 3


def test_topas_dose_frame_differs_from_ct(data_dir):
    folder = data_dir / "misc-rt-objects/topas-dicom-interface/Abdomen"
    dose = rtkit.read_dose(folder / "rtdose.dcm")
    ct = rtkit.read_image([folder / f"{i}.dcm" for i in (1, 2, 3)])
    assert dose.grid.frame_of_reference_uid != ct.grid.frame_of_reference_uid
    with pytest.raises(rtkit.FrameOfReferenceError):
        dose.resample(ct.grid)
    with pytest.raises(rtkit.FrameOfReferenceError):
        rtkit.sum_doses([dose], grid=ct.grid)


def test_three_beams_on_one_grid_and_a_fourth_shifted():
    """The acceptance case: exact on the shared grid; the shifted one adds only trilinear error,
    which is zero for a linear dose (float32 rounding remains, < 1e-5 Gy here)."""
    shifted = Grid.from_spacing((9, 10, 11), (2.5, 2.0, 2.0), origin=(-10.9, -9.6, -10.3), frame_of_reference_uid="1.2.3")
    coefs = [(0.01, 0.02, -0.01), (0.0, -0.01, 0.02), (0.02, 0.0, 0.0), (-0.01, 0.01, 0.01)]
    consts = [1.0, 0.5, 0.8, 0.6]
    same = [_linear(GRID, c, k) for c, k in zip(coefs[:3], consts[:3], strict=True)]
    three = rtkit.sum_doses(same)
    np.testing.assert_allclose(three.array, GRID.centers() @ np.sum(coefs[:3], axis=0) + sum(consts[:3]), atol=1e-6)
    four = rtkit.sum_doses([*same, _linear(shifted, coefs[3], consts[3])])
    centers = GRID.centers()
    inside = shifted.contains(centers)  # the shifted dose covers part of GRID only; 0 Gy beyond
    expected = centers @ np.sum(coefs[:3], axis=0) + sum(consts[:3])
    expected = expected + np.where(inside, centers @ np.asarray(coefs[3]) + consts[3], 0.0)
    np.testing.assert_allclose(four.array, expected, atol=1e-5)

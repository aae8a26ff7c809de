"""Image series from the real data in ../shared/data (acceptance checks of the foundation issue)."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from builders import file_hashes

import rtkit


def _headers(folder):
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.rglob("*.dcm"))]


def _positions_along_normal(hs):
    """(ImageOrientationPatient, ImagePositionPatient of each slice sorted along the normal)."""
    iop = np.asarray(hs[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return iop, sorted((np.asarray(h.ImagePositionPatient, float) for h in hs), key=lambda p: p @ normal)


def test_mirp_cropped_ct(data_dir):
    folder = data_dir / "mirp-sts-ct-pet-mr/cropped/STS_001/CT"
    before = file_hashes(folder)
    img = rtkit.read_image(folder / "dicom/image")
    assert img.grid.shape[0] == 59
    np.testing.assert_allclose(img.grid.spacing[1:], [0.9766, 0.9766], atol=1e-4)
    hs = _headers(folder / "dicom/image")
    # HU: stored values times slope plus intercept, for one slice chosen by position.
    ds = min(hs, key=lambda h: float(h.ImagePositionPatient[2]))
    full = pydicom.dcmread(ds.filename)
    expected = full.pixel_array * float(full.RescaleSlope) + float(full.RescaleIntercept)
    k = int(np.argmin(np.abs(img.grid.world_to_index(np.asarray(full.ImagePositionPatient, float))[..., 0])))
    np.testing.assert_array_equal(img.array[k], expected)
    assert file_hashes(folder) == before


def test_oblique_raw_mr_slice_positions(data_dir):
    """index_to_world((k, 0, 0)) equals slice k's ImagePositionPatient within 1e-3 mm."""
    folder = data_dir / "mirp-sts-ct-pet-mr/raw/STS_001/MR_T1/image"
    img = rtkit.read_image(folder)
    hs = _headers(folder)
    iop, ipp = _positions_along_normal(hs)
    assert img.grid.shape == (len(hs), 512, 512)
    for k, p in enumerate(ipp):
        np.testing.assert_allclose(img.grid.index_to_world((k, 0, 0)), p, atol=1e-3)
    # In-plane axes follow ImageOrientationPatient exactly.
    np.testing.assert_allclose(img.grid.direction[:, 2], iop[:3] / np.linalg.norm(iop[:3]), atol=1e-9)
    np.testing.assert_allclose(img.grid.direction[:, 1], iop[3:] / np.linalg.norm(iop[3:]), atol=1e-9)
    np.testing.assert_allclose(img.grid.spacing[1:], [0.390625, 0.390625])


def test_raw_pet_with_non_uniform_pitch(data_dir):
    folder = data_dir / "mirp-sts-ct-pet-mr/raw/STS_001/FDG_PET/image"
    with pytest.warns(rtkit.RTKitWarning, match="non-uniform slice pitch") as rec:
        img = rtkit.read_image(folder)
    assert "deviation" in str(rec[0].message)
    hs = _headers(folder)
    z = np.sort([float(h.ImagePositionPatient[2]) for h in hs])
    assert img.grid.shape[0] == len(hs) == 267
    # First and last slices keep their exact positions; every slice lies on the uniform line.
    assert img.grid.index_to_world((0, 0, 0))[2] == pytest.approx(z[0], abs=1e-6)
    assert img.grid.index_to_world((266, 0, 0))[2] == pytest.approx(z[-1], abs=1e-6)
    # A resampled slice is the linear interpolation of its two neighbours (computed here).
    k = 133
    target = z[0] + k * (z[-1] - z[0]) / 266
    i = np.searchsorted(z, target) - 1
    lo, hi = (next(h for h in hs if float(h.ImagePositionPatient[2]) == z[j]) for j in (i, i + 1))
    a, b = (pydicom.dcmread(h.filename) for h in (lo, hi))
    va = a.pixel_array * float(a.RescaleSlope) + float(a.RescaleIntercept)
    vb = b.pixel_array * float(b.RescaleSlope) + float(b.RescaleIntercept)
    w = (target - z[i]) / (z[i + 1] - z[i])
    np.testing.assert_allclose(img.array[k], (1 - w) * va + w * vb, rtol=1e-5, atol=1e-3)


def test_raw_pet_strict_mode_refuses(data_dir, monkeypatch):
    monkeypatch.setattr(rtkit.config, "strict", True)
    with pytest.raises(rtkit.GeometryError, match="non-uniform"):
        rtkit.read_image(data_dir / "mirp-sts-ct-pet-mr/raw/STS_001/FDG_PET/image")


def test_nelms_ct_loads(data_dir):
    img = rtkit.read_image(data_dir / "nelms-analytical-dvh/DVH-Analysis-Data-Etc/CT")
    assert img.grid.shape == (20, 512, 512)
    np.testing.assert_allclose(img.grid.spacing, [3.0, 0.6, 0.6], atol=1e-6)


def test_oblique_non_square_mock_series(data_dir):
    """rt-utils' SimpleITK-written oblique series: 3 slices, 3.5 x 2.5 mm pixels, no FoR UID."""
    folder = data_dir / "rt-utils-mock/oriented_data"
    img = rtkit.read_image(folder)
    hs = _headers(folder)
    iop, ipp = _positions_along_normal(hs)
    ps = [float(v) for v in hs[0].PixelSpacing]
    for k, p in enumerate(ipp):
        for r, c in ((0, 0), (49, 99), (10, 20)):
            truth = p + r * ps[0] * iop[3:] + c * ps[1] * iop[:3]
            np.testing.assert_allclose(img.grid.index_to_world((k, r, c)), truth, atol=1e-4)
    assert img.grid.frame_of_reference_uid is None


def test_single_slice_ct_uses_slice_thickness(data_dir):
    img = rtkit.read_image(data_dir / "dicompyler-core/ct.0.dcm")
    ds = pydicom.dcmread(data_dir / "dicompyler-core/ct.0.dcm", stop_before_pixels=True)
    assert img.grid.shape == (1, 512, 512)
    assert img.grid.spacing[0] == pytest.approx(float(ds.SliceThickness))


def test_case_loading_on_real_data(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        case = rtkit.load(data_dir / "mirp-sts-ct-pet-mr/cropped/STS_001")
        structures = case.structures
    assert case.patient_id == "STS_001"
    assert [i.modality for i in case.images] == ["CT", "MR", "PT"]
    assert case.ct.grid.shape[0] == 59
    assert structures is not None  # linked by frame of reference despite stale series UIDs
    assert any("not the planning CT" in n for n in case.notes)

"""Masks -> RT Structure Set -> masks: StructureSet.from_masks / add / save."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from _dciodvfy import assert_valid
from builders import file_hashes

import rtkit
from rtkit import Grid, Image, StructureSet


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _phantom_masks(grid: Grid) -> dict[str, np.ndarray]:
    """Shapes defined on voxel centres (computed here with numpy, not rtkit)."""
    c = grid.centers()
    centre = grid.index_to_world((np.asarray(grid.shape) - 1) / 2)
    d = c - centre
    r_xy = np.hypot(d[..., 0], d[..., 1])
    r = np.linalg.norm(d, axis=-1)
    slab = np.abs(d[..., 2]) < 9
    return {
        "sphere": r < 12,
        "annulus": slab & (r_xy < 14) & (r_xy >= 7),
        "island_in_hole": slab & (((r_xy < 14) & (r_xy >= 9)) | (r_xy < 4)),
        "two_islands": slab & ((np.hypot(d[..., 0] - 9, d[..., 1]) < 4) | (np.hypot(d[..., 0] + 9, d[..., 1]) < 4)),
        "single_slice": (np.arange(grid.shape[0]) == 7)[:, None, None] & (r_xy < 10),
    }


# direction columns: unit LPS axes of (slice, row, column)
GRIDS = {
    "hfs": (np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float), (2.0, 0.9766, 0.9766)),
    "non_square": (np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float), (2.5, 0.8, 1.2)),
    "ffp": (np.array([[0, 0, 1], [0, -1, 0], [-1, 0, 0]], float), (3.0, 1.0, 1.0)),
}


@pytest.mark.parametrize("kind", list(GRIDS))
def test_synthetic_round_trip_is_exact(tmp_path, kind):
    direction, spacing = GRIDS[kind]
    grid = Grid.from_spacing((16, 40, 44), spacing, origin=(-20.3, 11.7, 40.2), direction=direction,
                             frame_of_reference_uid="1.2.826.0.1.3680043.8.498.1")
    ct = Image(np.zeros(grid.shape, np.int16), grid, "CT", series_instance_uid="1.2.826.0.1.3680043.8.498.2",
               meta={"sop_instance_uids": [f"1.2.826.0.1.3680043.8.498.3.{k}" for k in range(16)],
                     "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "study_instance_uid": "1.2.826.0.1.3680043.8.498.4",
                     "patient_id": "RT", "patient_name": "Round^Trip"})
    masks = _phantom_masks(grid)
    ss = StructureSet.from_masks(masks, ct)
    path = ss.save(tmp_path / "rs.dcm")
    assert_valid(path)
    back = rtkit.read_structures(path)
    assert back.names == list(masks)
    for name, m in masks.items():
        again = back[name].mask(grid)
        assert _dice(m, again) >= 0.99 and np.array_equal(m, again), name
        frac = back[name].mask(grid, fractional=True).sum(dtype=np.float64)
        assert abs(frac - m.sum()) / m.sum() < 0.01, name  # no systematic shrink or growth
    # holes are written as separate contours on the same plane (even-odd rule)
    z_planes = {}
    for c in back["annulus"].contours:
        z_planes.setdefault(round(float(np.asarray(c.points)[:, 2].mean()), 3), []).append(c)
    assert all(len(v) == 2 for v in z_planes.values())


def test_add_thresholds_fractional_masks_and_checks_frames():
    grid = Grid.from_spacing((3, 5, 5), (1, 1, 1), frame_of_reference_uid="1.2.3")
    ss = StructureSet(frame_of_reference_uid="1.2.3")
    frac = np.zeros(grid.shape, np.float32)
    frac[1, 1:4, 1:4] = 0.6
    frac[1, 0, 0] = 0.4
    roi = ss.add("A", frac, grid, color=(1, 2, 3), type="PTV")
    assert roi.number == 1 and roi.color == (1, 2, 3) and roi.type == "PTV"
    assert roi.mask(grid).sum() == 9 and not roi.mask(grid)[1, 0, 0]
    assert roi.volume == pytest.approx(9 * grid.voxel_volume_cc)  # single plane: slab = slice spacing
    assert ss.add("B", frac > 0.5, grid).number == 2
    other = Grid(grid.shape, grid.affine, "9.9.9")
    with pytest.raises(rtkit.FrameOfReferenceError):
        ss.add("C", frac, other)
    with pytest.raises(rtkit.GeometryError, match="shape"):
        ss.add("D", np.zeros((2, 2, 2)), grid)
    with pytest.raises(rtkit.GeometryError, match="reference"):
        ss.save("never.dcm")


def test_save_refuses_to_overwrite(tmp_path):
    case = rtkit.load(rtkit.datasets.synthetic_case(tmp_path / "case"))
    ss = StructureSet.from_masks({"PTV": case.structures["PTV"].mask(case.ct.grid)}, case.ct)
    p = ss.save(tmp_path / "out.dcm")
    before = p.read_bytes()
    with pytest.raises(rtkit.RTKitError, match="overwrite"):
        ss.save(p)
    assert p.read_bytes() == before
    ss.save(p, overwrite=True)


@pytest.mark.parametrize("patient", ["STS_001", "STS_002", "STS_003"])
def test_mirp_ct_gtv_round_trip(data_dir, tmp_path, patient):
    folder = data_dir / "mirp-sts-ct-pet-mr" / "cropped" / patient / "CT"
    before = file_hashes(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        case = rtkit.load(folder)
        ss = case.structures
    ct = case.ct
    (name,) = ss.names
    mask = ss[name].mask(ct.grid)
    assert mask.sum() > 100
    # These CTs carry a 17-character StudyID (SH allows 16): written cut, with a warning.
    with pytest.warns(rtkit.RTKitWarning, match="longer than its VR allows"):
        out = StructureSet.from_masks({name: mask}, ct).save(tmp_path / "rs.dcm")
    assert_valid(out)
    plain = pydicom.dcmread(out)
    assert plain.StructureSetROISequence[0].ROIName == name
    ref = plain.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == ct.grid.frame_of_reference_uid
    assert ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == ct.series_instance_uid
    again = rtkit.read_structures(out)[name]
    m2 = again.mask(ct.grid)
    assert _dice(mask, m2) >= 0.99
    assert abs(int(m2.sum()) - int(mask.sum())) / mask.sum() < 0.01
    assert abs(again.mask(ct.grid, fractional=True).sum() - mask.sum()) / mask.sum() < 0.01
    assert file_hashes(folder) == before

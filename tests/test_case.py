"""rtkit.load / Case: linking by UIDs, ambiguity, summaries."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from _cases import clone_case
from builders import file_hashes

import rtkit
from rtkit.datasets import PHANTOM


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return rtkit.datasets.synthetic_case(tmp_path_factory.mktemp("demo"))


def test_load_synthetic_case_links_every_object(demo):
    before = file_hashes(demo)
    case = rtkit.load(demo)
    assert case.patient_id == "RTKIT-DEMO-001"
    uids = {f.name: pydicom.dcmread(f).SOPInstanceUID for f in demo.iterdir() if not f.name.startswith("CT")}
    assert case.structures.sop_instance_uid == uids["RS.dcm"]
    assert case.structures.names == ["BODY", "Lung_L", "Lung_R", "Spine", "PTV"]
    assert case.plan.sop_instance_uid == uids["RP.dcm"] and case.plan.label == "DEMO_4F"
    assert case.dose.meta["sop_instance_uid"] == uids["RD.dcm"]
    assert [d.meta["sop_instance_uid"] for d in case.doses] == [uids["RD.dcm"]]
    assert case.dose is case.doses[0] and case.dose.summation_type == "PLAN"
    assert case.registrations == []
    assert case.notes == []
    assert file_hashes(demo) == before


def test_planning_ct_geometry_and_hu(demo):
    ct = rtkit.load(demo).ct
    assert ct.grid.shape == PHANTOM["shape"]
    np.testing.assert_allclose(ct.grid.spacing, (PHANTOM["slice_spacing"], *PHANTOM["pixel_spacing"]))
    np.testing.assert_allclose(ct.grid.origin, PHANTOM["origin"])
    assert not ct.is_loaded  # grid from headers, pixels on demand
    # HU at points whose tissue is known from the phantom definition.
    body_c = (*PHANTOM["body"]["center"], 0.0)
    lung = PHANTOM["lungs"]["Lung_L"]
    spine = PHANTOM["spine"]
    pts = np.array([[body_c[0] + 20, body_c[1] + 50, 1.5], [*lung["center"], 1.5], [*spine["center"], 1.5], [-124.0, -124.0, 1.5]])
    np.testing.assert_array_equal(ct.sample(pts, order=0), [0, lung["hu"], spine["hu"], PHANTOM["air_hu"]])
    assert ct.array.dtype == np.int16 and ct.modality == "CT" and ct.meta["units"] == "HU"


def test_file_names_and_layout_do_not_matter(tmp_path):
    a = clone_case(tmp_path / "a", random_names=True, seed=1)
    sub = a / "x" / "y"
    sub.mkdir(parents=True)
    for i, f in enumerate(sorted(p for p in a.iterdir() if p.is_file())):
        if i % 3 == 0:
            f.rename(sub / f.name)
    case = rtkit.load(a)
    assert case.ct.grid.shape == PHANTOM["shape"]
    assert case.structures is not None and case.plan is not None and case.dose is not None


def test_files_without_preamble_are_found(tmp_path):
    a = clone_case(tmp_path / "a")
    for f in (a / "RS.dcm", a / "RP.dcm"):
        ds = pydicom.dcmread(f)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(f, enforce_file_format=False, implicit_vr=True, little_endian=True)
        assert f.read_bytes()[128:132] != b"DICM"
    case = rtkit.load(a)
    assert case.structures is not None and case.plan is not None


def test_two_patients_are_ambiguous(tmp_path):
    root = tmp_path / "root"
    clone_case(root / "p1", patient_id="P1")
    clone_case(root / "p2", patient_id="P2")
    with pytest.raises(rtkit.AmbiguousCaseError) as err:
        rtkit.load(root)
    assert "P1" in str(err.value) and "P2" in str(err.value) and "2 cases" in str(err.value)
    assert isinstance(err.value, LookupError)
    cases = rtkit.scan(root).cases()
    assert sorted(c.patient_id for c in cases) == ["P1", "P2"]
    for c in cases:  # each case keeps its own objects
        assert c.plan.patient_id == c.patient_id == pydicom.dcmread(c.structures.path).PatientID


def test_two_cts_without_rt_objects_are_ambiguous(tmp_path):
    root = tmp_path / "root"
    clone_case(root / "ct1", patient_id="P", keep=("CT",))
    clone_case(root / "ct2", patient_id="P", keep=("CT",))
    with pytest.raises(rtkit.AmbiguousCaseError):
        rtkit.load(root)
    assert len(rtkit.scan(root).cases()) == 2


def test_structure_set_marks_the_planning_ct(tmp_path):
    """Two CTs of one patient; the RT Structure Set references one: that one is planned."""
    root = tmp_path / "root"
    mapping: dict[str, str] = {}
    clone_case(root / "plan", patient_id="P", mapping=mapping)
    rescan = clone_case(root / "rescan", patient_id="P", keep=("CT",))  # fresh UIDs, own frame
    case = rtkit.load(root)
    planned = pydicom.dcmread(root / "plan" / "CT001.dcm").SeriesInstanceUID
    assert case.ct_series.series_instance_uid == planned
    other = pydicom.dcmread(rescan / "CT001.dcm").SeriesInstanceUID
    assert other in {s.series_instance_uid for s in case.image_series}
    assert len(case.images) == 2 and case.images[0] is case.ct


def test_several_planning_cts_split_their_objects(tmp_path):
    root = tmp_path / "root"
    clone_case(root / "c1", patient_id="P")
    clone_case(root / "c2", patient_id="P")
    cases = rtkit.scan(root).cases()
    assert len(cases) == 2
    for c in cases:
        ct_series = c.ct_series.series_instance_uid
        assert c.structures.referenced_series_uid == ct_series
        assert c.plan.referenced_structure_set_uid == c.structures.sop_instance_uid
        assert c.dose.referenced_plan_uid == c.plan.sop_instance_uid


def test_frame_of_reference_mismatch_is_noted(tmp_path):
    def edit(name, ds):
        if name == "RS.dcm":
            ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4.5"
    a = clone_case(tmp_path / "a", edit=edit)
    case = rtkit.load(a)
    assert any("frame of reference" in n and "RTSTRUCT" in n for n in case.notes)
    assert "note:" in case.summary()


def test_summary_and_html(demo):
    case = rtkit.load(demo)
    text = case.summary()
    for piece in ("RTKIT-DEMO-001", "CT", "40 x 64 x 64", "RTSTRUCT", "RTPLAN", "RTDOSE", "PLAN"):
        assert piece in text
    html = case._repr_html_()
    assert html.startswith("<div>") and "<table>" in html and "RTPLAN" in html
    assert "RTKIT-DEMO-001" in repr(case)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(rtkit.AmbiguousCaseError, match="no case found"):
        rtkit.load(tmp_path)
    with pytest.raises(rtkit.DicomReadError, match="no such file"):
        rtkit.load(tmp_path / "nope")


def test_mr_in_its_own_frame_joins_the_case(tmp_path):
    a = clone_case(tmp_path / "a", patient_id="P")

    def to_mr(name, ds):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.Modality = "MR"

    clone_case(tmp_path / "a" / "mr", patient_id="P", keep=("CT",), edit=to_mr)
    case = rtkit.load(a)
    assert [i.modality for i in case.images] == ["CT", "MR"]
    assert case.images[1].grid.frame_of_reference_uid != case.ct.grid.frame_of_reference_uid


def test_load_accepts_a_list_of_files(demo):
    files = sorted(demo.iterdir())
    case = rtkit.load(files)
    assert case.ct.grid.shape == PHANTOM["shape"]


def test_copying_a_case_twice_does_not_double_it(tmp_path, demo):
    shutil.copytree(demo, tmp_path / "one")
    shutil.copytree(demo, tmp_path / "two")
    with pytest.warns(rtkit.RTKitWarning, match="repeats SOP instance"):
        case = rtkit.load(tmp_path)
        assert case.ct.grid.shape == PHANTOM["shape"]

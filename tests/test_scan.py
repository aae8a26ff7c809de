"""rtkit.scan: header-only indexing of any folder."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from _cases import clone_case
from builders import file_hashes

import rtkit


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return rtkit.datasets.synthetic_case(tmp_path_factory.mktemp("demo"))


def test_scan_groups_series_by_uid_and_modality(demo):
    idx = rtkit.scan(demo)
    assert Counter(s.modality for s in idx.series) == {"CT": 1, "RTSTRUCT": 1, "RTPLAN": 1, "RTDOSE": 1}
    ct = next(s for s in idx.series if s.modality == "CT")
    assert len(ct) == 40 and ct.description == "Planning CT"
    assert ct.series_instance_uid == pydicom.dcmread(demo / "CT001.dcm").SeriesInstanceUID
    assert sorted(p.name for p in ct.files) == [f"CT{i:03d}.dcm" for i in range(1, 41)]
    assert [p.patient_id for p in idx.patients] == ["RTKIT-DEMO-001"]
    assert len(idx.patients[0].studies) == 1
    rs = next(s for s in idx.series if s.modality == "RTSTRUCT")
    assert rs.referenced_series == {ct.series_instance_uid}
    assert rs.frame_of_reference_uid == ct.frame_of_reference_uid  # via ReferencedFrameOfReferenceSequence


def test_scan_reads_headers_only(demo, monkeypatch):
    seen = []
    real = pydicom.dcmread

    def spy(*a, **k):
        seen.append(k.get("stop_before_pixels"))
        return real(*a, **k)

    monkeypatch.setattr(pydicom, "dcmread", spy)
    rtkit.scan(demo)
    assert seen and all(seen)


def test_non_dicom_and_broken_files_are_counted_not_raised(tmp_path):
    root = clone_case(tmp_path / "c")
    (root / "notes.txt").write_text("hello")
    (root / "empty").write_bytes(b"")
    (root / "random.bin").write_bytes(os.urandom(5000))
    (root / "png.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    # Starts like DICOM (group 0x0008) but is garbage after that.
    (root / "fake").write_bytes(b"\x08\x00\x05\x00" + os.urandom(400))
    # A real file truncated inside its header.
    data = (root / "RP.dcm").read_bytes()
    (root / "cut.dcm").write_bytes(data[:300])
    before = file_hashes(root)
    idx = rtkit.scan(root)
    skipped = {p.name for p, _ in idx.skipped}
    unreadable = {p.name for p, _ in idx.unreadable}
    assert {"notes.txt", "empty", "random.bin", "png.dcm"} <= skipped
    assert "cut.dcm" in skipped | unreadable and "fake" in skipped | unreadable
    assert skipped.isdisjoint(unreadable)
    assert sum(len(s) for s in idx.series) == 43  # the case itself is intact
    assert file_hashes(root) == before


def test_unreadable_files_are_warned_about(tmp_path):
    root = clone_case(tmp_path / "c", keep=("RP",))
    data = (root / "RP.dcm").read_bytes()
    (root / "cut.dcm").write_bytes(data[:140])  # preamble + DICM + a few bytes
    with pytest.warns(rtkit.RTKitWarning, match="cannot be read"):
        idx = rtkit.scan(root)
    assert [p.name for p, _ in idx.unreadable] == ["cut.dcm"]


def test_modality_comes_from_the_sop_class(tmp_path):
    def edit(name, ds):
        if name == "RS.dcm":
            ds.Modality = "RTDOSE"  # as the OpenTPS writer does

    root = clone_case(tmp_path / "c", keep=("RS",), edit=edit)
    (s,) = rtkit.scan(root).series
    assert s.modality == "RTSTRUCT" and s.instances[0].modality_tag == "RTDOSE"
    assert "Modality tag says RTDOSE" in rtkit.scan(root).summary()


def test_scan_single_file_and_list(demo):
    assert len(rtkit.scan(demo / "RP.dcm").series) == 1
    idx = rtkit.scan([demo / "RP.dcm", demo / "RS.dcm"])
    assert {s.modality for s in idx.series} == {"RTPLAN", "RTSTRUCT"}


def test_progress_bar(demo, capsys):
    pytest.importorskip("tqdm")
    idx = rtkit.scan(demo, progress=True)
    assert len(idx.series) == 4


def test_missing_path_raises():
    with pytest.raises(rtkit.DicomReadError, match="no such file"):
        rtkit.scan(Path("/nonexistent/rtkit"))


def test_real_data_every_series_and_skipped_count(data_dir):
    """Against an independent pydicom walk of ../shared/data."""
    files = [Path(d) / f for d, _, fs in os.walk(data_dir) for f in fs]
    expected_series, non_dicom = set(), 0
    for f in files:
        # Every .dcm file in the shared data parses (its MANIFESTs say so); nothing else is DICOM.
        if f.suffix.lower() != ".dcm":
            non_dicom += 1
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        expected_series.add(str(ds.SeriesInstanceUID))
    idx = rtkit.scan(data_dir)
    assert len(idx.skipped) == non_dicom
    assert idx.unreadable == []
    assert {s.series_instance_uid for s in idx.series} == expected_series
    assert sum(len(s) for s in idx.series) == len(files) - non_dicom

"""Robustness: the bad-input corpus in lenient and strict mode, real-data oddities,
writers that never overwrite or leave partial files, and the input-hash guard.

The documented behaviour of every corpus entry is in docs/robustness.md; the
corpus itself is tests/badinput.py.
"""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from badinput import CORPUS, Defect, write_ct, write_rs
from builders import file_hashes, unchanged, write_image_series
from conftest import guard_reads

import rtkit
from rtkit.registration import Registration, SeriesRef

REPO = Path(__file__).resolve().parents[1]


def _rtkit_messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, rtkit.RTKitWarning)]


# ------------------------------------------------------------------ the corpus, both modes
@pytest.mark.both_modes
@pytest.mark.parametrize("defect", CORPUS, ids=[d.id for d in CORPUS])
def test_corpus_behaves_as_documented(defect: Defect, tmp_path: Path, reading_mode: str) -> None:
    root = tmp_path / "in"
    root.mkdir()
    target = defect.make(root)
    strict = reading_mode == "strict"
    raises = defect.error if defect.kind == "error" else defect.strict_error if (defect.kind == "repair" and strict) else None
    with unchanged(root):
        if raises is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rtkit.RTKitWarning)  # only the error is under test
                with pytest.raises(raises, match=defect.match) as exc:
                    defect.read(target)
            assert isinstance(exc.value, rtkit.RTKitError)
            if defect.names_input:
                assert str(root) in str(exc.value), str(exc.value)
            if strict and defect.kind == "repair":
                assert "rtkit.config.strict" in str(exc.value)
        elif defect.kind in ("repair", "info"):
            with pytest.warns(rtkit.RTKitWarning) as record:
                result = defect.read(target)
            msgs = [m for m in _rtkit_messages(record) if re.search(defect.match, m)]
            assert msgs, _rtkit_messages(record)
            if defect.names_input:
                assert any(str(root) in m for m in msgs), msgs
            if defect.check is not None:
                defect.check(result, target)
        else:  # quiet: read without any rtkit warning
            with warnings.catch_warnings():
                warnings.simplefilter("error", rtkit.RTKitWarning)
                result = defect.read(target)
            assert defect.check is not None
            defect.check(result, target)


def test_every_corpus_entry_is_documented() -> None:
    doc = (REPO / "docs" / "robustness.md").read_text()
    missing = [d.id for d in CORPUS if f"`{d.id}`" not in doc]
    assert not missing, f"docs/robustness.md lacks the corpus entries {missing}"


def test_corpus_ids_are_unique_and_kinds_known() -> None:
    ids = [d.id for d in CORPUS]
    assert len(ids) == len(set(ids))
    for d in CORPUS:
        assert d.kind in ("error", "repair", "info", "quiet"), d.id
        if d.kind == "error":
            assert d.error is not None and issubclass(d.error, rtkit.RTKitError), d.id
        if d.kind == "repair":
            assert d.strict_error is not None and issubclass(d.strict_error, rtkit.RTKitError), d.id


def test_scan_never_raises_on_the_corpus(tmp_path: Path) -> None:
    """scan indexes every corpus input (warning about the unreadable ones), never raising."""
    for d in CORPUS:
        root = tmp_path / d.id
        root.mkdir()
        d.make(root)
        with unchanged(root), warnings.catch_warnings():
            warnings.simplefilter("ignore", rtkit.RTKitWarning)
            index = rtkit.scan(root)
        assert len(index.instances) + len(index.unreadable) + len(index.skipped) >= 1, d.id


def test_scan_in_strict_mode_still_only_reports(tmp_path: Path, reading_mode: str) -> None:
    """Indexing is not reading: strict mode does not make scan raise for a bad file."""
    rtkit.config.strict = True
    write_ct(tmp_path / "ct")
    f = sorted((tmp_path / "ct").iterdir())[0]
    f.write_bytes(f.read_bytes()[:300])
    with pytest.warns(rtkit.RTKitWarning, match="cannot be read"):
        index = rtkit.scan(tmp_path)
    assert [p for p, _ in index.unreadable] == [f]


# ------------------------------------------------------------------ real data oddities
@pytest.mark.both_modes
def test_opentps_ct_with_empty_frame_of_reference(data_dir: Path, reading_mode: str) -> None:
    folder = data_dir / "opentps-phantom-ionplan"
    files = sorted(p for s in rtkit.scan(folder).series if s.modality == "CT" for p in s.files)
    assert all(pydicom.dcmread(f, stop_before_pixels=True).FrameOfReferenceUID == "" for f in files[:3])
    if reading_mode == "strict":
        with pytest.raises(rtkit.FrameOfReferenceError, match="FrameOfReferenceUID"):
            rtkit.read_image(files)
    else:
        with pytest.warns(rtkit.RTKitWarning, match="FrameOfReferenceUID is missing or empty"):
            img = rtkit.read_image(files)
        assert img.grid.frame_of_reference_uid is None
        assert img.grid.shape[0] == len(files)


@pytest.mark.both_modes
def test_opentps_structure_set_and_ion_plan_with_wrong_modality_tags(data_dir: Path, reading_mode: str) -> None:
    folder = data_dir / "opentps-phantom-ionplan"
    rs = next(p for p in (folder / "SimpleFantomWithStruct").iterdir() if p.name.startswith("RS"))
    rp = folder / "RP1.2.840.10008.5.1.4.1.1.481.8.dcm"
    assert pydicom.dcmread(rs, stop_before_pixels=True).Modality == "RTDOSE"
    for path, reader, tag in ((rs, rtkit.read_structures, "RTDOSE"), (rp, rtkit.read_plan, "RT Ion Plan IOD")):
        if reading_mode == "strict":
            with pytest.raises(rtkit.DicomReadError, match=f"Modality tag says '{tag}'"):
                reader(path)
        else:
            with pytest.warns(rtkit.RTKitWarning, match=f"Modality tag says '{tag}'"):
                obj = reader(path)
            assert len(obj) if isinstance(obj, rtkit.StructureSet) else len(obj.beams)


@pytest.mark.both_modes
def test_misc_rt_objects_oddities(data_dir: Path, reading_mode: str) -> None:
    misc = data_dir / "misc-rt-objects"
    # a REG stub without FrameOfReferenceUID, and a "REG" with a private SOP class: named errors
    with pytest.raises(rtkit.DicomReadError, match="no FrameOfReferenceUID"):
        rtkit.read_registration(misc / "onkodicom-reg-stub" / "spatial_reg.dcm")
    with pytest.raises(rtkit.DicomReadError, match="is not Spatial Registration"):
        rtkit.read_registration(misc / "onkodicom-reg-stub" / "transform.dcm")
    # pydicom's truncated plan: refused unless allow_truncated
    with pytest.raises(rtkit.DicomReadError, match="truncated"):
        rtkit.read_plan(misc / "pydicom-testfiles" / "rtplan_truncated.dcm")
    # an RTSTRUCT without file meta, with POINT contours: read silently in both modes
    with warnings.catch_warnings():
        warnings.simplefilter("error", rtkit.RTKitWarning)
        ss = rtkit.read_structures(misc / "pydicom-testfiles" / "rtstruct.dcm")
    ds = pydicom.dcmread(misc / "pydicom-testfiles" / "rtstruct.dcm", force=True)
    assert ss.names == [str(r.ROIName) for r in ds.StructureSetROISequence]


# ------------------------------------------------------------------ fixes kept as regression tests
def test_contour_coordinates_beyond_10_m_do_not_give_an_infinite_volume(tmp_path: Path) -> None:
    pts = np.array([[-1e300, -10, 0], [10, -10, 0], [10, 10, 0], [-10, 10, 0]], float)
    sq = np.array([[-10, -10, 2.5], [10, -10, 2.5], [10, 10, 2.5], [-10, 10, 2.5]], float)
    p = write_rs(tmp_path / "rs.dcm", [pts, sq, sq + [0, 0, 2.5]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        vol = rtkit.read_structures(p)["A"].volume
    assert np.isfinite(vol) and abs(vol - 2 * 400 * 2.5 / 1000) < 1e-9


def test_keyhole_contour_is_not_a_violation_in_strict_mode(reading_mode: str) -> None:
    rtkit.config.strict = True
    t = np.linspace(0, 2 * np.pi, 33)[:-1]
    outer = np.c_[10 * np.cos(t), 10 * np.sin(t)]
    inner = np.c_[4 * np.cos(t), 4 * np.sin(t)]
    ring = np.vstack([outer, outer[:1], inner[:1], inner[::-1], inner[:1]])
    contours = [rtkit.structures.Contour(np.c_[ring, np.full(len(ring), z)]) for z in (0.0, 2.0)]
    s = rtkit.Structure("Key", 1, contours)
    with pytest.warns(rtkit.RTKitWarning, match="keyhole"):
        vol = s.volume
    area = 0.5 * 32 * np.sin(2 * np.pi / 32) * (10**2 - 4**2)
    assert abs(vol - 2 * 2.0 * area / 1000) < 1e-9


def test_bow_tie_still_raises_in_strict_mode(reading_mode: str) -> None:
    rtkit.config.strict = True
    tie = np.array([[0, 0, 0], [10, 10, 0], [10, 0, 0], [0, 6, 0]], float)
    s = rtkit.Structure("Tie", 1, [rtkit.structures.Contour(tie), rtkit.structures.Contour(tie + [0, 0, 2])])
    with pytest.raises(rtkit.GeometryError, match="Tie.*self-intersecting"):
        s.volume  # noqa: B018


# ------------------------------------------------------------------ writers
@pytest.fixture(scope="module")
def small_case(tmp_path_factory: pytest.TempPathFactory):
    folder = rtkit.datasets.synthetic_case(tmp_path_factory.mktemp("case"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        case = rtkit.load(folder)
        ct = case.ct
        ct.array  # noqa: B018
    return folder, case, ct


def _writers(small_case, tmp_path: Path):
    """(name, write(path, overwrite)) for every rtkit writer."""
    folder, case, ct = small_case
    ss = rtkit.StructureSet.from_masks({"GTV": case.structures["PTV"].mask(ct.grid)}, reference=ct)
    other = write_image_series(tmp_path / "mr", shape=(4, 8, 10), modality="MR", random_names=False)
    mr = rtkit.read_image(other.folder)
    reg = Registration(np.eye(4), fixed=SeriesRef.of(ct), moving=SeriesRef.of(mr), meta=dict(ct.meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        table = rtkit.dvhs(case.dose, case.structures, names=["PTV"])
    return [
        ("rtstruct", lambda p, o: ss.save(p, reference=ct, overwrite=o)),
        ("reg", lambda p, o: reg.save(p, overwrite=o)),
        ("nifti", lambda p, o: rtkit.Image(np.zeros((2, 3, 4), np.float32), rtkit.Grid.from_spacing((2, 3, 4), (1, 1, 1)), "CT").to_nifti(p, overwrite=o)),
        ("csv", lambda p, o: table.to_csv(p, ["Dmean"], overwrite=o)),
    ]


_SUFFIX = {"rtstruct": ".dcm", "reg": ".dcm", "nifti": ".nii.gz", "csv": ".csv"}


def test_writers_refuse_to_overwrite_and_replace_when_asked(small_case, tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    for name, write in _writers(small_case, tmp_path):
        target = tmp_path / "out" / f"{name}{_SUFFIX[name]}"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(b"precious")
        with pytest.raises(rtkit.errors.OutputExistsError, match="already exists"):
            write(target, False)
        assert target.read_bytes() == b"precious", name
        write(target, True)
        assert target.read_bytes() != b"precious" and target.stat().st_size > 8, name
        leftovers = [p.name for p in target.parent.iterdir() if ".tmp" in p.name]
        assert not leftovers, (name, leftovers)
    assert issubclass(rtkit.errors.OutputExistsError, FileExistsError)


def test_writers_are_atomic_a_failed_write_leaves_nothing(small_case, tmp_path: Path, monkeypatch) -> None:
    """Make the final rename fail: the target must not exist, nor any temporary file."""
    pytest.importorskip("nibabel")
    import rtkit._atomic as atomic

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    writers = _writers(small_case, tmp_path)
    monkeypatch.setattr(atomic.os, "link", boom)
    monkeypatch.setattr(atomic.os, "replace", boom)
    out = tmp_path / "atomic"
    out.mkdir()
    for name, write in writers:
        target = out / f"{name}{_SUFFIX[name]}"
        with pytest.raises(OSError, match="simulated"):
            write(target, False)
        assert list(out.iterdir()) == [], (name, list(out.iterdir()))


def test_synthetic_case_never_clobbers_a_foreign_file(tmp_path: Path) -> None:
    folder = rtkit.datasets.synthetic_case(tmp_path / "c")
    before = file_hashes(folder)
    rtkit.datasets.synthetic_case(folder)  # same files again: left alone
    assert file_hashes(folder) == before
    (folder / "RS.dcm").write_bytes(b"mine")
    with pytest.raises(rtkit.errors.OutputExistsError, match="RS.dcm"):
        rtkit.datasets.synthetic_case(folder)
    assert (folder / "RS.dcm").read_bytes() == b"mine"
    rtkit.datasets.synthetic_case(folder, overwrite=True)
    assert file_hashes(folder) == before


def test_no_writer_bypasses_atomic_path() -> None:
    """Every module that writes files does it through rtkit._atomic.atomic_path."""
    writes = re.compile(r"\.save_as\(|dcmwrite\(|\.write_text\(|\.write_bytes\(|open\([^)]*['\"][wa]b?['\"]")
    offenders = []
    for path in sorted((REPO / "rtkit").rglob("*.py")):
        if path.name in ("cli.py", "cohort.py"):  # owned elsewhere; see docs/robustness.md
            continue
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if writes.search(line) and "atomic" not in text:
                offenders.append(f"{path.name}:{i}")
    assert not offenders, offenders


# ------------------------------------------------------------------ the input guard itself
@pytest.mark.no_input_guard
def test_input_guard_catches_a_reader_that_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_rs(tmp_path / "rs.dcm")
    real = pydicom.dcmread

    def sabotaged(fp, *args, **kwargs):
        ds = real(fp, *args, **kwargs)
        with open(p, "ab") as fh:  # a misbehaving reader appending to its input
            fh.write(b"\x00\x00")
        return ds

    modified = guard_reads(monkeypatch)
    monkeypatch.setattr(pydicom, "dcmread", sabotaged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        try:
            rtkit.read_structures(p)
        except rtkit.RTKitError:
            pass  # the appended bytes may also be reported as a defect; the guard is what matters
    assert modified == [str(p)]


def test_input_guard_is_quiet_for_honest_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_rs(tmp_path / "rs.dcm")
    modified = guard_reads(monkeypatch)
    rtkit.read_structures(p)
    assert modified == []


def test_warnings_point_at_the_callers_line(tmp_path):
    # readers are wrapped (guard_decoding) and warn from helpers several frames deep:
    # the RTKitWarning must still name this file and line, not an rtkit module
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    with pytest.warns(rtkit.RTKitWarning) as record:
        line = inspect.currentframe().f_lineno + 1
        rtkit.scan(tmp_path)
    assert record[0].filename == __file__ and record[0].lineno == line, (record[0].filename, record[0].lineno)

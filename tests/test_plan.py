"""RT Plans and RT Ion Plans (DESIGN §4): ``read_plan`` -> ``Plan``.

Every expected value is computed here, independently of rtkit, from the
files read with plain pydicom (attribute access, the test's own
carry-forward loop for values DICOM omits on later control points), or
from the test's own synthetic datasets.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from builders import file_hashes
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

import rtkit
from rtkit.io.rtplan import read_plan
from rtkit.plan import Beam, BeamType, Plan

MISC = "misc-rt-objects"
DICOMPYLER = "dicompyler-core/rtplan.dcm"
MV06 = f"{MISC}/pymedphys-rtplans/06MV_plan.dcm"
VMAT = f"{MISC}/pymedphys-rtplans/vmat_example.dcm"
MULTI_FG = f"{MISC}/pymedphys-rtplans/multi_fraction_groups_rtplan.dcm"
FFF = f"{MISC}/pymedphys-rtplans/FFF_example.dcm"
RECT = f"{MISC}/pymedphys-rtplans/24mm_x_20mm_rectangle.dcm"
FIF = f"{MISC}/aperturecomplexity/RP_FiF.dcm"
SLICER = f"{MISC}/slicerrt-eclipse-prostate-phantom/RP.1.2.246.352.71.5.2088656855.377401.20110920153647.dcm"
TOPAS = f"{MISC}/topas-dicom-interface/rtip_demo.dcm"
OPENTPS = "opentps-phantom-ionplan/RP1.2.840.10008.5.1.4.1.1.481.8.dcm"
PYDICOM_PLAN = f"{MISC}/pydicom-testfiles/rtplan.dcm"
TRUNCATED = f"{MISC}/pydicom-testfiles/rtplan_truncated.dcm"

#: Plans that read without any warning.
CLEAN = [DICOMPYLER, MV06, VMAT, MULTI_FG, FFF, RECT, FIF, SLICER, TOPAS, PYDICOM_PLAN]
ALL_PLANS = [*CLEAN, OPENTPS]
JAWS = {"X", "Y", "ASYMX", "ASYMY"}


# ============================================================== independent helpers


def dcm(path: Path) -> Dataset:
    return pydicom.dcmread(path, force=True)


def clean_read(path: Path) -> Plan:
    """read_plan, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_plan(path)


def beam_items(ds: Dataset) -> list[Dataset]:
    return list(ds.get("IonBeamSequence") or ds.get("BeamSequence") or [])


def cp_items(beam: Dataset) -> list[Dataset]:
    return list(beam.get("IonControlPointSequence") or beam.get("ControlPointSequence") or [])


def fval(item: Dataset, keyword: str) -> float | None:
    v = item.get(keyword)
    return None if v is None or v == "" else float(v)


def expected_control_points(beam: Dataset) -> list[dict]:
    """Effective per-control-point values: the file's, else the previous control point's."""
    out: list[dict] = []
    state: dict = {"devices": {}}
    for cp in cp_items(beam):
        for key, kw in (("gantry", "GantryAngle"), ("collimator", "BeamLimitingDeviceAngle"),
                        ("couch", "PatientSupportAngle"), ("energy", "NominalBeamEnergy")):
            v = fval(cp, kw)
            if v is not None:
                state[key] = v
        if cp.get("IsocenterPosition"):
            state["iso"] = [float(x) for x in cp.IsocenterPosition]
        devices = dict(state["devices"])
        for dev in cp.get("BeamLimitingDevicePositionSequence") or []:
            devices[dev.RTBeamLimitingDeviceType] = [float(x) for x in dev.LeafJawPositions]
        state["devices"] = devices
        out.append({**state, "weight": fval(cp, "CumulativeMetersetWeight")})
    return out


def meterset_by_beam(ds: Dataset) -> dict[int, float | None]:
    """BeamMeterset from the first fraction group listing each beam."""
    out: dict[int, float | None] = {}
    for fg in ds.FractionGroupSequence:
        for rb in fg.ReferencedBeamSequence:
            out.setdefault(int(rb.ReferencedBeamNumber), fval(rb, "BeamMeterset"))
    return out


def target_rx(ds: Dataset) -> float | None:
    doses = [
        float(d.TargetPrescriptionDose)
        for d in ds.get("DoseReferenceSequence") or []
        if d.get("DoseReferenceType") == "TARGET" and d.get("TargetPrescriptionDose") not in (None, "")
    ]
    return max(doses) if doses else None


# ============================================================== per-file checks


def test_dicompyler_plan(data_dir: Path) -> None:
    path = data_dir / DICOMPYLER
    ds = dcm(path)
    plan = clean_read(path)
    assert plan.label == ds.RTPlanLabel == "B1"
    assert plan.sop_instance_uid == ds.SOPInstanceUID
    assert plan.frame_of_reference_uid == ds.FrameOfReferenceUID
    assert plan.referenced_structure_set_uid == ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    assert plan.fractions == int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned) == 7
    assert plan.prescription_gy == pytest.approx(target_rx(ds))
    assert plan.prescription_gy == pytest.approx(14.0)
    assert plan.prescription_source == "TargetPrescriptionDose"
    assert len(plan.dose_references) == len(ds.DoseReferenceSequence)
    assert [d.type for d in plan.dose_references] == [d.DoseReferenceType for d in ds.DoseReferenceSequence]
    assert [b.number for b in plan.beams] == [int(b.BeamNumber) for b in ds.BeamSequence] == [1, 2, 3, 4]
    mus = meterset_by_beam(ds)
    assert [round(b.monitor_units) for b in plan.beams] == [round(mus[n]) for n in (1, 2, 3, 4)] == [97, 87, 89, 94]
    for b, item in zip(plan.beams, ds.BeamSequence, strict=True):
        assert b.name == item.BeamName
        assert b.type is BeamType(item.BeamType)
        assert b.radiation_type == item.RadiationType
        assert b.energy == float(item.ControlPointSequence[0].NominalBeamEnergy)
        assert b.gantry_angle == float(item.ControlPointSequence[0].GantryAngle)
        assert len(b.control_points) == int(item.NumberOfControlPoints)
        assert b.machine == item.TreatmentMachineName
        assert b.sad == float(item.SourceAxisDistance)
        assert not b.is_arc and b.arc is None
        assert not b.is_setup
        # dynamic IMRT: the gantry is written on the first control point only
        assert "GantryAngle" not in item.ControlPointSequence[1]
        assert all(cp.gantry_angle == b.gantry_angle for cp in b.control_points)
        assert b.cumulative_mu[-1] == pytest.approx(mus[b.number])
        pairs = {d.RTBeamLimitingDeviceType: int(d.NumberOfLeafJawPairs) for d in item.BeamLimitingDeviceSequence}
        assert all(cp.mlc["MLCX"].shape == (2 * pairs["MLCX"],) for cp in b.control_points)
        assert b.leaf_boundaries["MLCX"].shape == (pairs["MLCX"] + 1,)
    assert plan.beam(3).name == "5 LAO"
    with pytest.raises(KeyError, match="no beam number 9"):
        plan.beam(9)


@pytest.mark.parametrize("rel", [DICOMPYLER, MV06, VMAT, MULTI_FG, FIF, SLICER, PYDICOM_PLAN, TOPAS, OPENTPS])
def test_control_points_carry_forward(data_dir: Path, rel: str) -> None:
    ds = dcm(data_dir / rel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opentps: Modality tag
        plan = read_plan(data_dir / rel)
    for b, item in zip(plan.beams, beam_items(ds), strict=True):
        expected = expected_control_points(item)
        assert len(b.control_points) == len(expected)
        for i, (cp, exp) in enumerate(zip(b.control_points, expected, strict=True)):
            assert cp.index == i
            assert cp.cumulative_weight == exp["weight"]
            assert cp.gantry_angle == exp.get("gantry")
            assert cp.collimator_angle == exp.get("collimator")
            assert cp.couch_angle == exp.get("couch")
            assert cp.energy == exp.get("energy")
            if "iso" in exp:
                np.testing.assert_array_equal(cp.isocenter, exp["iso"])
            jaws = {k: v for k, v in exp["devices"].items() if k in JAWS}
            mlc = {k: v for k, v in exp["devices"].items() if k not in JAWS}
            assert set(cp.jaws) == set(jaws) and set(cp.mlc) == set(mlc)
            for k, v in jaws.items():
                np.testing.assert_array_equal(cp.jaws[k], v)
            for k, v in mlc.items():
                np.testing.assert_array_equal(cp.mlc[k], v)


def test_pymedphys_06mv_static_beams(data_dir: Path) -> None:
    path = data_dir / MV06
    ds = dcm(path)
    assert not getattr(ds, "file_meta", None)  # written without file meta
    plan = clean_read(path)
    assert len(plan.beams) == len(ds.BeamSequence) == 10
    assert all(b.type is BeamType.STATIC for b in plan.beams)
    assert [b.name for b in plan.beams] == [b.BeamName for b in ds.BeamSequence]
    mus = meterset_by_beam(ds)
    assert [b.monitor_units for b in plan.beams] == [mus[b.number] for b in plan.beams]
    assert plan.prescription_gy == pytest.approx(target_rx(ds))
    assert plan.fractions == int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned)
    assert "MLCX" in plan.beams[0].control_points[-1].mlc  # carried to the last control point


def test_vmat_arcs(data_dir: Path) -> None:
    path = data_dir / VMAT
    ds = dcm(path)
    plan = clean_read(path)
    assert [len(b.control_points) for b in plan.beams] == [len(b.ControlPointSequence) for b in ds.BeamSequence] == [32, 31]
    for b, item in zip(plan.beams, ds.BeamSequence, strict=True):
        cps = item.ControlPointSequence
        assert b.type is BeamType.DYNAMIC
        assert b.is_arc
        first, last = float(cps[0].GantryAngle), float(cps[-1].GantryAngle)
        direction = cps[0].GantryRotationDirection
        assert b.arc.start == first and b.arc.stop == last and b.arc.direction == direction
        travel = (last - first) % 360 if direction == "CW" else (first - last) % 360
        assert b.arc.extent == pytest.approx(travel)
        assert f"{b.arc}" in plan.summary()
        expected = expected_control_points(item)
        np.testing.assert_array_equal(b.gantry_angles, [e["gantry"] for e in expected])
        for cp, item_cp in zip(b.control_points, cps, strict=True):
            if "GantryAngle" in item_cp:
                assert cp.gantry_angle == float(item_cp.GantryAngle)
        assert b.monitor_units == pytest.approx(meterset_by_beam(ds)[b.number])


def test_multiple_fraction_groups(data_dir: Path) -> None:
    path = data_dir / MULTI_FG
    ds = dcm(path)
    plan = clean_read(path)
    fgs = ds.FractionGroupSequence
    assert [fg.fractions for fg in plan.fraction_groups] == [int(f.NumberOfFractionsPlanned) for f in fgs] == [16, 4]
    assert [len(fg.beams) for fg in plan.fraction_groups] == [len(f.ReferencedBeamSequence) for f in fgs] == [3, 3]
    assert plan.fractions == 16
    for fg, item in zip(plan.fraction_groups, fgs, strict=True):
        assert fg.number == int(item.FractionGroupNumber)
        assert fg.beam_numbers == [int(rb.ReferencedBeamNumber) for rb in item.ReferencedBeamSequence]
        for rb in item.ReferencedBeamSequence:
            beam = plan.beam(int(rb.ReferencedBeamNumber))
            assert beam.monitor_units == pytest.approx(float(rb.BeamMeterset))
            assert beam.beam_dose == pytest.approx(float(rb.BeamDose))
            assert beam.fraction_group == fg.number
            assert fg.monitor_units[beam.number] == pytest.approx(float(rb.BeamMeterset))
    assert len(plan.beams) == 6
    assert plan.prescription_gy == pytest.approx(target_rx(ds))
    summary = plan.summary()
    assert "fraction groups:" in summary
    assert re.search(r"1: 16 fx, beams 1, 2, 3", summary)
    assert re.search(r"2: 4 fx, beams 4, 5, 6", summary)


def test_field_in_field(data_dir: Path) -> None:
    path = data_dir / FIF
    ds = dcm(path)
    plan = clean_read(path)
    (beam,) = plan.beams
    item = ds.BeamSequence[0]
    assert len(beam.control_points) == len(item.ControlPointSequence) == 4
    assert beam.type is BeamType.STATIC and not beam.is_arc
    for cp, item_cp in zip(beam.control_points, item.ControlPointSequence, strict=True):
        mlc = [d for d in item_cp.BeamLimitingDevicePositionSequence if d.RTBeamLimitingDeviceType == "MLCX"]
        np.testing.assert_array_equal(cp.mlc["MLCX"], [float(x) for x in mlc[0].LeafJawPositions])
    assert not np.array_equal(beam.control_points[0].mlc["MLCX"], beam.control_points[3].mlc["MLCX"])
    # no TARGET dose reference with a prescription: BeamDose x fractions, with a note
    assert target_rx(ds) is None
    fg = ds.FractionGroupSequence[0]
    rx = sum(float(rb.BeamDose) for rb in fg.ReferencedBeamSequence) * int(fg.NumberOfFractionsPlanned)
    assert plan.prescription_gy == pytest.approx(rx)
    assert plan.prescription_source == "BeamDose"
    assert plan.notes and "BeamDose" in plan.notes[0]
    assert "BeamDose" in plan.summary()


def test_slicerrt_setup_field(data_dir: Path) -> None:
    path = data_dir / SLICER
    ds = dcm(path)
    plan = clean_read(path)
    assert plan.prescription_gy == pytest.approx(target_rx(ds)) and plan.prescription_gy == pytest.approx(46.0)
    assert plan.fractions == int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned) == 23
    mus = meterset_by_beam(ds)
    no_mu = {n for n, mu in mus.items() if not mu}
    names = {int(b.BeamNumber): b.BeamName for b in ds.BeamSequence}
    assert {names[n] for n in no_mu} == {"CBCT"}
    cbct = next(b for b in plan.beams if b.name == "CBCT")
    assert cbct.is_setup and cbct.monitor_units is None
    assert [b.is_setup for b in plan.beams] == [b.number in no_mu for b in plan.beams]
    assert cbct not in plan.treatment_beams
    assert plan.total_monitor_units == pytest.approx(sum(mu for mu in mus.values() if mu))
    line = next(x for x in plan.summary().splitlines() if "CBCT" in x)
    assert line.rstrip().endswith("setup")


def test_pydicom_plan(data_dir: Path) -> None:
    path = data_dir / PYDICOM_PLAN
    ds = dcm(path)
    plan = clean_read(path)
    (beam,) = plan.beams
    assert beam.type is BeamType.STATIC
    assert plan.fractions == int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned) == 30
    assert beam.monitor_units == pytest.approx(float(ds.FractionGroupSequence[0].ReferencedBeamSequence[0].BeamMeterset))
    assert plan.prescription_gy == pytest.approx(target_rx(ds))
    jaws = {d.RTBeamLimitingDeviceType: [float(x) for x in d.LeafJawPositions]
            for d in ds.BeamSequence[0].ControlPointSequence[0].BeamLimitingDevicePositionSequence}
    for cp in beam.control_points:  # jaws carried to the last control point
        assert {k: list(v) for k, v in cp.jaws.items()} == jaws


def test_truncated_plan_raises(data_dir: Path) -> None:
    path = data_dir / TRUNCATED
    # pydicom itself parses the cut file without complaint
    ds = dcm(path)
    assert int(ds.BeamSequence[0].NumberOfControlPoints) > len(ds.BeamSequence[0].ControlPointSequence)
    with pytest.raises(rtkit.DicomReadError, match="truncated") as info:
        read_plan(path)
    assert str(path) in str(info.value) and "allow_truncated" in str(info.value)


def test_truncated_plan_allowed(data_dir: Path) -> None:
    path = data_dir / TRUNCATED
    ds = dcm(path)
    with pytest.warns(rtkit.RTKitWarning) as record:
        plan = read_plan(path, allow_truncated=True)
    messages = [str(w.message) for w in record]
    assert any("truncated" in m and str(path) in m for m in messages)
    assert any("NumberOfControlPoints" in m for m in messages)
    assert len(plan.beams) == 1
    assert len(plan.beams[0].control_points) == len(ds.BeamSequence[0].ControlPointSequence)


def test_topas_ion_plan(data_dir: Path) -> None:
    path = data_dir / TOPAS
    ds = dcm(path)
    plan = clean_read(path)
    assert plan.is_ion
    (beam,) = plan.beams
    item = ds.IonBeamSequence[0]
    assert beam.is_ion and beam.radiation_type == item.RadiationType == "PROTON"
    cps = item.IonControlPointSequence
    assert len(beam.control_points) == len(cps) == 24
    assert len(beam.range_shifters) == int(item.NumberOfRangeShifters) == 1
    assert beam.range_shifters[0].id == item.RangeShifterSequence[0].RangeShifterID
    assert beam.range_shifters[0].type == item.RangeShifterSequence[0].RangeShifterType
    assert [s.id for s in beam.snouts] == [s.SnoutID for s in item.SnoutSequence]
    energies = [float(cp.NominalBeamEnergy) for cp in cps]
    np.testing.assert_array_equal(beam.energies, energies)
    layers = 1 + sum(a != b for a, b in zip(energies, energies[1:], strict=False))
    assert beam.number_of_energy_layers == layers
    for cp, item_cp in zip(beam.control_points, cps, strict=True):
        n = int(item_cp.NumberOfScanSpotPositions)
        assert cp.spot_positions.shape == (n, 2)
        assert cp.spot_weights.shape == (n,)
        np.testing.assert_allclose(cp.spot_positions.ravel(), [float(x) for x in item_cp.ScanSpotPositionMap])
        np.testing.assert_allclose(cp.spot_weights, [float(x) for x in item_cp.ScanSpotMetersetWeights])
        assert cp.scan_spot_tune_id == item_cp.ScanSpotTuneID
        assert cp.snout_position == pytest.approx(float(cps[0].SnoutPosition))  # carried forward
    assert beam.monitor_units == pytest.approx(meterset_by_beam(ds)[1])
    assert beam.primary_dosimeter_unit == item.PrimaryDosimeterUnit
    assert plan.fractions == int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned) == 14


def test_opentps_ion_plan(data_dir: Path) -> None:
    path = data_dir / OPENTPS
    ds = dcm(path)
    assert ds.Modality != "RTPLAN"
    with pytest.warns(rtkit.RTKitWarning, match="Modality tag") as record:
        plan = read_plan(path)
    assert len(record) == 1 and str(path) in str(record[0].message)
    assert plan.is_ion
    (beam,) = plan.beams
    item = ds.IonBeamSequence[0]
    assert beam.number == int(item.BeamNumber) == 0
    energies = [float(cp.NominalBeamEnergy) for cp in item.IonControlPointSequence]
    assert beam.number_of_energy_layers == len(set(energies)) == 8
    assert beam.monitor_units == pytest.approx(float(ds.FractionGroupSequence[0].ReferencedBeamSequence[0].BeamMeterset))
    assert beam.range_shifters == [] and int(item.NumberOfRangeShifters) == 0
    for cp, item_cp in zip(beam.control_points, item.IonControlPointSequence, strict=True):
        assert cp.spot_weights.size == int(item_cp.NumberOfScanSpotPositions)
    settings0 = item.IonControlPointSequence[0].RangeShifterSettingsSequence[0]
    assert beam.control_points[-1].range_shifter_settings[0].setting == settings0.RangeShifterSetting
    assert plan.prescription_gy is None  # TARGET without a dose, no BeamDose


def test_synthetic_case_plan(tmp_path: Path) -> None:
    folder = rtkit.datasets.synthetic_case(tmp_path / "case")
    path = folder / "RP.dcm"
    ds = dcm(path)
    plan = clean_read(path)
    angles = [float(b.ControlPointSequence[0].GantryAngle) for b in ds.BeamSequence]
    assert [b.gantry_angle for b in plan.beams] == angles == [0.0, 90.0, 180.0, 270.0]
    assert all(b.type is BeamType.STATIC for b in plan.beams)
    mus = meterset_by_beam(ds)
    assert [b.monitor_units for b in plan.beams] == [mus[n] for n in (1, 2, 3, 4)] == [52.5, 48.0, 51.0, 47.5]
    assert plan.prescription_gy == target_rx(ds) == 60.0
    assert plan.fractions == int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned) == 30
    assert plan.dose_per_fraction_gy == pytest.approx(2.0)
    assert plan.dose_references[0].roi_number == int(ds.DoseReferenceSequence[0].ReferencedROINumber)
    for b, item in zip(plan.beams, ds.BeamSequence, strict=True):
        iso = [float(x) for x in item.ControlPointSequence[0].IsocenterPosition]
        np.testing.assert_array_equal(b.control_points[1].isocenter, iso)  # carried forward
        assert b.control_points[1].gantry_angle == b.gantry_angle


# ============================================================== inputs and errors


def test_dataset_input(data_dir: Path) -> None:
    ds = dcm(data_dir / VMAT)
    plan = read_plan(ds)
    assert len(plan.beams) == 2
    assert plan.path == data_dir / VMAT
    bare = Dataset()
    bare.update(ds)
    assert read_plan(bare).path is None


@pytest.mark.parametrize("rel", [
    f"{MISC}/pydicom-testfiles/rtstruct.dcm", "dicompyler-core/ct.0.dcm",
    "dicompyler-core/rtdose.dcm", f"{MISC}/MANIFEST.txt",
])
def test_not_a_plan(data_dir: Path, rel: str) -> None:
    path = data_dir / rel
    with pytest.raises(rtkit.DicomReadError) as info:
        read_plan(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_plan_without_beams_or_fraction_groups(tmp_path: Path) -> None:
    ds = _plan_dataset([])
    del ds.FractionGroupSequence
    del ds.BeamSequence
    path = tmp_path / "empty.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(rtkit.DicomReadError, match="without BeamSequence"):
        read_plan(path)


def test_input_files_unchanged(data_dir: Path) -> None:
    folders = {data_dir / Path(rel).parent for rel in ALL_PLANS + [TRUNCATED]}
    before = {f: file_hashes(f) for f in folders}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rel in ALL_PLANS:
            read_plan(data_dir / rel).summary()
        read_plan(data_dir / TRUNCATED, allow_truncated=True)
    assert {f: file_hashes(f) for f in folders} == before


# ============================================================== summary and display


@pytest.mark.parametrize("rel", ALL_PLANS)
def test_summary_lists_every_beam(data_dir: Path, rel: str) -> None:
    ds = dcm(data_dir / rel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = read_plan(data_dir / rel)
    text = plan.summary()
    lines = text.splitlines()
    assert len(lines) <= 40
    for item in beam_items(ds):
        pattern = rf"^\s+{int(item.BeamNumber)}\s+{re.escape(str(item.get('BeamName', '')))}\s"
        assert any(re.match(pattern, line) for line in lines), (pattern, text)
    if ds.get("FractionGroupSequence"):
        fx = int(ds.FractionGroupSequence[0].NumberOfFractionsPlanned)
        assert f"{fx} fx" in lines[0]
    rx = target_rx(ds)
    if rx is not None:
        assert f"Rx {round(rx, 2):g} Gy" in lines[0]
    html_text = plan._repr_html_()
    assert html_text.count("<tr>") == len(beam_items(ds)) + 1
    assert repr(plan).startswith("Plan(")


def test_summary_content_dicompyler(data_dir: Path) -> None:
    plan = clean_read(data_dir / DICOMPYLER)
    text = plan.summary()
    assert "Rx 14 Gy in 7 fx" in text
    line = next(x for x in text.splitlines() if "3 RAO" in x)
    assert "DYNAMIC" in line and "10 MV" in line and "97.0" in line and "327" in line


# ============================================================== synthetic datasets


def _plan_dataset(beams: list[Dataset], mus: list[float | None] | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.Modality = "RTPLAN"
    ds.RTPlanLabel = "SYN"
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = 5
    fg.NumberOfBeams = len(beams)
    refs = []
    for i, b in enumerate(beams):
        rb = Dataset()
        rb.ReferencedBeamNumber = b.BeamNumber
        mu = 100.0 if mus is None else mus[i]
        if mu is not None:
            rb.BeamMeterset = mu
        refs.append(rb)
    fg.ReferencedBeamSequence = Sequence(refs)
    ds.FractionGroupSequence = Sequence([fg])
    ds.BeamSequence = Sequence(beams)
    return ds


def _arc_beam(number: int, gantry: list[float | None], direction: str, leaves: int = 2) -> Dataset:
    b = Dataset()
    b.BeamNumber = number
    b.BeamName = f"A{number}"
    b.BeamType = "DYNAMIC"
    b.RadiationType = "PHOTON"
    b.TreatmentDeliveryType = "TREATMENT"
    dev = Dataset()
    dev.RTBeamLimitingDeviceType = "MLCX"
    dev.NumberOfLeafJawPairs = leaves
    b.BeamLimitingDeviceSequence = Sequence([dev])
    b.FinalCumulativeMetersetWeight = 1.0
    b.NumberOfControlPoints = len(gantry)
    cps = []
    for i, g in enumerate(gantry):
        cp = Dataset()
        cp.ControlPointIndex = i
        cp.CumulativeMetersetWeight = i / max(1, len(gantry) - 1)
        if g is not None:
            cp.GantryAngle = g
        if i == 0:
            cp.GantryRotationDirection = direction
            cp.NominalBeamEnergy = 6
        cps.append(cp)
    b.ControlPointSequence = Sequence(cps)
    return b


def test_full_arc_through_zero() -> None:
    gantry = [181.0, 270.0, 0.0, 90.0, 179.0]
    plan = read_plan(_plan_dataset([_arc_beam(1, gantry, "CW")]))
    arc = plan.beams[0].arc
    assert (arc.start, arc.stop, arc.direction) == (181.0, 179.0, "CW")
    assert arc.extent == pytest.approx(358.0)


def test_omitted_gantry_and_wrong_leaf_count_warn() -> None:
    beam = _arc_beam(1, [10.0, None, 30.0], "CC", leaves=2)
    pos = Dataset()
    pos.RTBeamLimitingDeviceType = "MLCX"
    pos.LeafJawPositions = [-1.0, -2.0, 1.0]  # 3 values, 4 expected
    beam.ControlPointSequence[1].BeamLimitingDevicePositionSequence = Sequence([pos])
    with pytest.warns(rtkit.RTKitWarning, match="expected 4"):
        plan = read_plan(_plan_dataset([beam]))
    b = plan.beams[0]
    assert [cp.gantry_angle for cp in b.control_points] == [10.0, 10.0, 30.0]
    assert "MLCX" not in b.control_points[1].mlc
    assert b.arc.direction == "CC" and b.arc.extent == pytest.approx(340.0)


def test_fraction_group_references_missing_beam() -> None:
    ds = _plan_dataset([_arc_beam(1, [0.0, 0.0], "NONE")])
    extra = Dataset()
    extra.ReferencedBeamNumber = 7
    extra.BeamMeterset = 10.0
    ds.FractionGroupSequence[0].ReferencedBeamSequence.append(extra)
    with pytest.warns(rtkit.RTKitWarning) as record:
        plan = read_plan(ds)
    text = " ".join(str(w.message) for w in record)
    assert "[7]" in text and "NumberOfBeams" in text
    assert not plan.beams[0].is_arc


def test_setup_by_delivery_type_and_zero_meterset() -> None:
    b1 = _arc_beam(1, [0.0, 0.0], "NONE")
    b2 = _arc_beam(2, [0.0, 0.0], "NONE")
    b2.TreatmentDeliveryType = "SETUP"
    b3 = _arc_beam(3, [90.0, 90.0], "NONE")
    plan = read_plan(_plan_dataset([b1, b2, b3], mus=[100.0, 5.0, 0.0]))
    assert [b.is_setup for b in plan.beams] == [False, True, True]
    # without any meterset in the plan no beam is a set-up field by that rule
    plan = read_plan(_plan_dataset([b1, b3], mus=[None, None]))
    assert [b.is_setup for b in plan.beams] == [False, False]


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(0, 359.9, allow_nan=False),
    steps=st.lists(st.floats(0.5, 20.0, allow_nan=False), min_size=1, max_size=30),
    cw=st.booleans(),
)
def test_arc_extent_property(start: float, steps: list[float], cw: bool) -> None:
    sign = 1.0 if cw else -1.0
    gantry = [start]
    for s in steps:
        gantry.append(float(np.mod(gantry[-1] + sign * s, 360.0)))
    plan = read_plan(_plan_dataset([_arc_beam(1, gantry, "CW" if cw else "CC")]))
    beam: Beam = plan.beams[0]
    assert beam.is_arc
    assert beam.arc.direction == ("CW" if cw else "CC")
    # gantry angles written as DS are rounded to 16 characters
    assert beam.arc.extent == pytest.approx(sum(steps), abs=1e-6 * len(steps) + 1e-9)

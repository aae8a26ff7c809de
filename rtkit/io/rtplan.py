"""Reading RT Plans and RT Ion Plans into :class:`rtkit.Plan`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ..errors import DicomReadError, violation, warn
from ..plan import (
    JAW_TYPES,
    MLC_TYPES,
    Beam,
    BeamType,
    ControlPoint,
    DoseReference,
    FractionGroup,
    Plan,
    RangeShifter,
    RangeShifterSetting,
    ReferencedBeam,
    Snout,
)
from ._dicom import (
    _SLOW,
    ION_PLAN_SOP,
    _float,
    _floats,
    _get,
    _has,
    _int,
    _raw,
    _seq,
    _str,
    guard_decoding,
    read_object,
    resolve_modality,
    truncation_problems,
)

__all__ = ["read_plan", "plan_from_dataset"]

log = logging.getLogger("rtkit.io")



# ------------------------------------------------------------------ low-level values
def _array(item: Dataset, keyword: str) -> np.ndarray | None:
    """A multi-valued numeric element (DS text or binary FL/FD) as a float64 array, or None."""
    v = _raw(item, keyword)
    if v is _SLOW:
        v = _get(item, keyword)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        if isinstance(v, str):
            arr = np.array([float(x) for x in v.split("\\")], dtype=np.float64)
        elif isinstance(v, (bytes, bytearray)):
            return None
        elif hasattr(v, "__len__"):
            arr = np.array([float(x) for x in v], dtype=np.float64)
        else:
            arr = np.array([float(v)], dtype=np.float64)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not np.all(np.isfinite(arr)):
        return None
    return arr


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# ------------------------------------------------------------------ pieces
def _dose_reference(item: Dataset) -> DoseReference:
    point = _floats(item, "DoseReferencePointCoordinates", 3)
    dtype = _str(item, "DoseReferenceType")
    stype = _str(item, "DoseReferenceStructureType")
    return DoseReference(
        number=_int(item, "DoseReferenceNumber"),
        structure_type=stype.upper() if stype else None,
        description=_str(item, "DoseReferenceDescription"),
        type=dtype.upper() if dtype else None,
        target_prescription_gy=_float(item, "TargetPrescriptionDose"),
        delivery_max_gy=_float(item, "DeliveryMaximumDose"),
        roi_number=_int(item, "ReferencedROINumber"),
        point=None if point is None else np.asarray(point, dtype=np.float64),
        organ_at_risk_max_gy=_float(item, "OrganAtRiskMaximumDose"),
    )


def _fraction_group(item: Dataset, where: str) -> FractionGroup:
    number = _int(item, "FractionGroupNumber")
    refs = []
    for rb in _seq(item, "ReferencedBeamSequence"):
        n = _int(rb, "ReferencedBeamNumber")
        if n is None:
            violation(f"{where}: fraction group {number} lists a beam without ReferencedBeamNumber; ignored", log)
            continue
        refs.append(ReferencedBeam(n, _float(rb, "BeamMeterset"), _float(rb, "BeamDose")))
    declared = _int(item, "NumberOfBeams")
    if declared is not None and declared != len(refs):
        violation(f"{where}: fraction group {number} declares NumberOfBeams {declared} but lists "
             f"{len(refs)} beams; the listed beams are used", log)
    return FractionGroup(
        number=number,
        fractions=_int(item, "NumberOfFractionsPlanned"),
        beams=refs,
        description=_str(item, "FractionGroupDescription"),
    )


def _carry(value, prev: ControlPoint | None, attr: str):
    """``value``, or the previous control point's ``attr`` when the file omits it."""
    if value is not None or prev is None:
        return value
    return getattr(prev, attr)


def _control_points(
    items: list[Dataset], pairs: dict[str, int], ion: bool, where: str
) -> list[ControlPoint]:
    """Control points with omitted values carried forward from the previous one."""
    out: list[ControlPoint] = []
    prev: ControlPoint | None = None
    bad_devices: set[str] = set()
    for i, cp in enumerate(items):
        index = _int(cp, "ControlPointIndex")
        jaws = dict(prev.jaws) if prev else {}
        mlc = dict(prev.mlc) if prev else {}
        for dev in _seq(cp, "BeamLimitingDevicePositionSequence"):
            kind = (_str(dev, "RTBeamLimitingDeviceType") or "").upper()
            pos = _array(dev, "LeafJawPositions")
            if not kind or pos is None:
                continue
            expected = 2 if kind in JAW_TYPES else 2 * pairs[kind] if kind in pairs else None
            if expected is not None and pos.size != expected:
                if kind not in bad_devices:
                    violation(f"{where}: control point {i} gives {pos.size} {kind} positions, "
                         f"expected {expected} (NumberOfLeafJawPairs); those positions are ignored", log)
                    bad_devices.add(kind)
                continue
            (mlc if kind in MLC_TYPES or (kind not in JAW_TYPES and pos.size > 2) else jaws)[kind] = _frozen(pos)

        iso = _floats(cp, "IsocenterPosition", 3)
        rot = _str(cp, "GantryRotationDirection")
        point = ControlPoint(
            index=index if index is not None else i,
            cumulative_weight=_float(cp, "CumulativeMetersetWeight"),
            gantry_angle=_carry(_float(cp, "GantryAngle"), prev, "gantry_angle"),
            gantry_rotation=_carry(rot.upper() if rot else None, prev, "gantry_rotation"),
            collimator_angle=_carry(_float(cp, "BeamLimitingDeviceAngle"), prev, "collimator_angle"),
            couch_angle=_carry(_float(cp, "PatientSupportAngle"), prev, "couch_angle"),
            energy=_carry(_float(cp, "NominalBeamEnergy"), prev, "energy"),
            dose_rate=_carry(_float(cp, "DoseRateSet"), prev, "dose_rate"),
            mlc=mlc,
            jaws=jaws,
            isocenter=_carry(None if iso is None else _frozen(np.asarray(iso, dtype=np.float64)), prev, "isocenter"),
        )
        if ion:
            point.snout_position = _carry(_float(cp, "SnoutPosition"), prev, "snout_position")
            point.scan_spot_tune_id = _carry(_str(cp, "ScanSpotTuneID"), prev, "scan_spot_tune_id")
            if _has(cp, "RangeShifterSettingsSequence"):
                point.range_shifter_settings = [
                    RangeShifterSetting(
                        _int(s, "ReferencedRangeShifterNumber"),
                        _str(s, "RangeShifterSetting"),
                        _float(s, "IsocenterToRangeShifterDistance"),
                        _float(s, "RangeShifterWaterEquivalentThickness"),
                    )
                    for s in _seq(cp, "RangeShifterSettingsSequence")
                ]
            elif prev is not None:
                point.range_shifter_settings = prev.range_shifter_settings
            _spots(cp, point, f"{where}: control point {i}")
        out.append(point)
        prev = point
    return out


def _spots(cp: Dataset, point: ControlPoint, where: str) -> None:
    """Scan spot positions (N, 2) and weights (N,) of one ion control point."""
    pos = _array(cp, "ScanSpotPositionMap")
    weights = _array(cp, "ScanSpotMetersetWeights")
    if pos is None and weights is None:
        return
    n = _int(cp, "NumberOfScanSpotPositions")
    if pos is None or weights is None or pos.size != 2 * weights.size or (n is not None and n != weights.size):
        violation(
            f"{where}: NumberOfScanSpotPositions {n}, ScanSpotPositionMap "
            f"{None if pos is None else pos.size} values and ScanSpotMetersetWeights "
            f"{None if weights is None else weights.size} values disagree; spots ignored", log)
        return
    point.spot_positions = pos.reshape(-1, 2)
    point.spot_weights = weights


def _beam(
    item: Dataset,
    position: int,
    ion: bool,
    refs: dict[int, tuple[ReferencedBeam, int | None]],
    plan_has_mu: bool,
    name: str,
) -> Beam:
    number = _int(item, "BeamNumber")
    beam_name = _str(item, "BeamName")
    if number is None:
        number = position + 1
        violation(f"{name}: beam '{beam_name}' has no BeamNumber; numbered {number} by its position", log)
    where = f"{name}: beam {number} ('{beam_name or ''}')"
    device_seq = "IonBeamLimitingDeviceSequence" if ion else "BeamLimitingDeviceSequence"
    pairs: dict[str, int] = {}
    boundaries: dict[str, np.ndarray] = {}
    for dev in _seq(item, device_seq):
        kind = (_str(dev, "RTBeamLimitingDeviceType") or "").upper()
        n = _int(dev, "NumberOfLeafJawPairs")
        if kind and n is not None:
            pairs[kind] = n
        b = _array(dev, "LeafPositionBoundaries")
        if kind and b is not None:
            boundaries[kind] = _frozen(b)
    cp_items = _seq(item, "IonControlPointSequence" if ion else "ControlPointSequence")
    cps = _control_points(cp_items, pairs, ion, where)
    declared = _int(item, "NumberOfControlPoints")
    if declared is not None and declared != len(cps):
        violation(f"{where}: NumberOfControlPoints is {declared} but the sequence holds {len(cps)} "
             "control points; the sequence may be cut short (the control points present are used)", log)
    if not cps:
        violation(f"{where}: no control points; angles and energy unknown", log)
    weights = np.array([np.nan if c.cumulative_weight is None else c.cumulative_weight for c in cps])
    finite = weights[np.isfinite(weights)]
    if finite.size > 1 and np.any(np.diff(finite) < -1e-9 * max(1.0, float(np.abs(finite).max()))):
        violation(f"{where}: CumulativeMetersetWeight decreases between control points", log)
    final = _float(item, "FinalCumulativeMetersetWeight")
    if final and weights.size and np.isfinite(weights[-1]) and not np.isclose(weights[-1], final, rtol=1e-3):
        violation(f"{where}: the last control point's CumulativeMetersetWeight {weights[-1]:g} differs from "
             f"FinalCumulativeMetersetWeight {final:g}", log)

    btype_text = (_str(item, "BeamType") or "").upper()
    try:
        btype = BeamType(btype_text)
    except ValueError:
        moving = len(cps) > 2 or any(
            (c.gantry_angle != cps[0].gantry_angle)
            or any(not np.array_equal(v, cps[0].mlc.get(k)) for k, v in c.mlc.items())
            for c in cps[1:]
        )
        btype = BeamType.DYNAMIC if moving else BeamType.STATIC
        violation(f"{where}: BeamType {btype_text or '(empty)'!r} is not STATIC or DYNAMIC; "
             f"read as {btype.value} from its control points", log)

    ref, fg_number = refs.get(number, (None, None))
    mu = ref.monitor_units if ref else None
    delivery = _str(item, "TreatmentDeliveryType")
    delivery = delivery.upper() if delivery else None
    is_setup = delivery == "SETUP" or (plan_has_mu and not mu)
    fluence = None
    for fm in _seq(item, "PrimaryFluenceModeSequence"):
        if (_str(fm, "FluenceMode") or "").upper() == "NON_STANDARD":
            fluence = _str(fm, "FluenceModeID") or "NON_STANDARD"
    first = cps[0] if cps else None
    rad = _str(item, "RadiationType")
    beam = Beam(
        number=number,
        name=beam_name,
        description=_str(item, "BeamDescription"),
        type=btype,
        radiation_type=rad.upper() if rad else None,
        energy=first.energy if first else None,
        monitor_units=mu,
        beam_dose=ref.beam_dose if ref else None,
        gantry_angle=first.gantry_angle if first else None,
        collimator_angle=first.collimator_angle if first else None,
        couch_angle=first.couch_angle if first else None,
        treatment_delivery_type=delivery,
        is_setup=is_setup,
        machine=_str(item, "TreatmentMachineName"),
        sad=_float(item, "SourceAxisDistance"),
        control_points=cps,
        final_cumulative_weight=final,
        primary_dosimeter_unit=_str(item, "PrimaryDosimeterUnit"),
        fraction_group=fg_number,
        is_ion=ion,
        fluence_mode=fluence,
        leaf_boundaries=boundaries,
    )
    if ion:
        beam.scan_mode = _str(item, "ScanMode")
        vsad = _floats(item, "VirtualSourceAxisDistances", 2)
        beam.virtual_sad = None if vsad is None else (vsad[0], vsad[1])
        beam.snouts = [
            Snout(_str(s, "SnoutID"), _str(s, "AccessoryCode")) for s in _seq(item, "SnoutSequence")
        ]
        beam.range_shifters = [
            RangeShifter(_int(r, "RangeShifterNumber"), _str(r, "RangeShifterID"),
                         _str(r, "RangeShifterType"), _str(r, "AccessoryCode"))
            for r in _seq(item, "RangeShifterSequence")
        ]
        declared_rs = _int(item, "NumberOfRangeShifters")
        if declared_rs is not None and declared_rs != len(beam.range_shifters):
            violation(f"{where}: NumberOfRangeShifters is {declared_rs} but RangeShifterSequence holds "
                 f"{len(beam.range_shifters)}", log)
    return beam


def _prescription(
    dose_refs: list[DoseReference], groups: list[FractionGroup], setup: set[int]
) -> tuple[float | None, str | None, list[str]]:
    targets = [
        d.target_prescription_gy for d in dose_refs
        if d.type == "TARGET" and d.target_prescription_gy is not None and d.target_prescription_gy > 0
    ]
    if targets:
        return max(targets), "TargetPrescriptionDose", []
    total, seen = 0.0, False
    for fg in groups:
        if not fg.fractions:
            continue
        for rb in fg.beams:
            if rb.beam_dose is not None and rb.number not in setup:
                total += rb.beam_dose * fg.fractions
                seen = True
    if seen and total > 0:
        note = (f"no TARGET dose reference with a TargetPrescriptionDose: prescription_gy "
                f"{total:.4g} Gy is the sum of BeamDose x fractions over the fraction groups "
                "(the dose at the beams' dose reference point)")
        return total, "BeamDose", [note]
    return None, None, []


# ------------------------------------------------------------------ public
def plan_from_dataset(
    ds: Dataset, path: Path | None = None, *, allow_truncated: bool = False
) -> Plan:
    """Build a :class:`Plan` from an RT (Ion) Plan dataset (see :func:`read_plan`)."""
    name = str(path) if path else "RT Plan"
    cut = truncation_problems(ds, path)
    if cut:
        msg = (f"{name}: the file is truncated ({'; '.join(cut)}): the plan is incomplete "
               "(beams, control points or references after the cut are missing).")
        if not allow_truncated:
            raise DicomReadError(
                msg + " Re-export the plan from the planning system, or read what is there with "
                "read_plan(path, allow_truncated=True)."
            )
        warn(msg + " Read as far as it goes (allow_truncated=True).", log)
    modality, tag = resolve_modality(ds)
    if modality != "RTPLAN":
        raise DicomReadError(
            f"{name}: not an RT Plan (the SOP Class/Modality says {modality}). "
            "read_plan reads RT Plan and RT Ion Plan files only."
        )
    sop = _str(ds, "SOPClassUID")
    if tag and tag != "RTPLAN":
        violation(f"{name}: Modality tag says {tag!r} but the SOP Class is "
             f"{'RT Ion Plan' if sop == ION_PLAN_SOP else 'RT Plan'}; read as one", log)

    has_ion_beams = _has(ds, "IonBeamSequence")
    ion = has_ion_beams or (sop == ION_PLAN_SOP and not _has(ds, "BeamSequence"))
    beam_items = _seq(ds, "IonBeamSequence" if has_ion_beams else "BeamSequence")
    fg_items = _seq(ds, "FractionGroupSequence")
    brachy = _has(ds, "ApplicationSetupSequence")
    if not beam_items and not fg_items and not brachy:
        raise DicomReadError(
            f"{name}: an RT Plan without BeamSequence/IonBeamSequence and without "
            "FractionGroupSequence: nothing to read. The file is probably truncated; re-export it."
        )
    if not beam_items:
        if brachy:
            warn(f"{name}: a brachytherapy plan; its application setups are not read (no beams)", log)
        else:
            warn(f"{name}: no {'IonBeamSequence' if ion else 'BeamSequence'}; the plan has no beams "
                 "(the file may be truncated)", log)
    if not fg_items:
        warn(f"{name}: no FractionGroupSequence; fractions and monitor units are unknown", log)

    groups = [_fraction_group(fg, name) for fg in fg_items]
    refs: dict[int, tuple[ReferencedBeam, int | None]] = {}
    for fg in groups:
        for rb in fg.beams:
            refs.setdefault(rb.number, (rb, fg.number))
    plan_has_mu = any(rb.monitor_units for fg in groups for rb in fg.beams)
    beams = [_beam(b, i, ion, refs, plan_has_mu, name) for i, b in enumerate(beam_items)]
    numbers = [b.number for b in beams]
    dup = sorted({n for n in numbers if numbers.count(n) > 1})
    if dup:
        violation(f"{name}: several beams share BeamNumber {dup}; Plan.beam(n) returns the first", log)
    missing = sorted(set(refs) - set(numbers))
    if missing and beams:
        violation(f"{name}: the fraction groups reference beam number(s) {missing}, which the plan does "
             "not hold", log)

    dose_refs = [_dose_reference(d) for d in _seq(ds, "DoseReferenceSequence")]
    setup = {b.number for b in beams if b.is_setup}
    rx, source, notes = _prescription(dose_refs, groups, setup)
    for n in notes:
        log.info("%s: %s", name, n)
    ss = _seq(ds, "ReferencedStructureSetSequence")
    return Plan(
        label=_str(ds, "RTPlanLabel"),
        name=_str(ds, "RTPlanName"),
        description=_str(ds, "RTPlanDescription"),
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        referenced_structure_set_uid=_str(ss[0], "ReferencedSOPInstanceUID") if ss else None,
        fractions=groups[0].fractions if groups else None,
        fraction_groups=groups,
        prescription_gy=rx,
        dose_references=dose_refs,
        beams=beams,
        is_ion=ion,
        path=path,
        prescription_source=source,
        patient_id=_str(ds, "PatientID"),
        approval_status=_str(ds, "ApprovalStatus"),
        notes=notes,
    )


@guard_decoding
def read_plan(path: str | os.PathLike[str] | Dataset, *, allow_truncated: bool = False) -> Plan:
    """Read an RT Plan or RT Ion Plan.

    Parameters
    ----------
    path : path-like or pydicom Dataset
        The RTPLAN file (with or without file meta and preamble), or a
        dataset already read.
    allow_truncated : bool, default False
        Read a truncated file as far as it goes (with a warning) instead of
        raising.

    Returns
    -------
    Plan
        Label, fraction groups, dose references and prescription, and every
        beam (BeamSequence or IonBeamSequence) with its control points.
        Values omitted on later control points are carried forward (see
        :mod:`rtkit.plan`); each beam's monitor units come from the first
        fraction group that lists it.

    Raises
    ------
    DicomReadError
        The file cannot be read, is not an RT (Ion) Plan, holds neither
        beams nor fraction groups, or is truncated (see below).

    Warns
    -----
    RTKitWarning
        The Modality tag disagrees with the SOP Class (the SOP Class wins);
        counts disagree with the sequences (NumberOfControlPoints,
        NumberOfBeams, NumberOfScanSpotPositions, NumberOfRangeShifters);
        BeamSequence or FractionGroupSequence is missing; a fraction group
        references an absent beam; a truncated file read with
        ``allow_truncated=True``.

    Notes
    -----
    **Truncated files.**  pydicom parses a file that ends inside an element
    without complaint, keeping what is there.  ``read_plan`` checks the
    dataset's top-level elements: when one declares more bytes than the file
    holds (e.g. a BeamSequence cut inside a control point) the plan is
    incomplete, and a :class:`~rtkit.DicomReadError` naming the file and
    the element is raised, because silently missing beams or control points
    would give wrong MU and geometry.  Pass ``allow_truncated=True`` to
    read the readable part with a warning instead.  A file cut exactly at
    an element boundary cannot be told from a complete one by its bytes; it
    is caught by its structure: no beams and no fraction groups raise, a
    missing BeamSequence or FractionGroupSequence or a short
    ControlPointSequence warn.

    **Set-up fields** (``Beam.is_setup``): TreatmentDeliveryType ``SETUP``,
    or a beam without meterset (absent or 0) in a plan whose other beams
    have one (e.g. an Eclipse CBCT field written as ``TREATMENT``).

    Examples
    --------
    >>> import rtkit
    >>> plan = rtkit.read_plan(rtkit.datasets.synthetic_case() / "RP.dcm")
    >>> plan.prescription_gy, plan.fractions, [b.monitor_units for b in plan.beams]
    (60.0, 30, [52.5, 48.0, 51.0, 47.5])
    """
    if isinstance(path, Dataset):
        filename = getattr(path, "filename", None)
        return plan_from_dataset(
            path, Path(filename) if isinstance(filename, (str, os.PathLike)) else None,
            allow_truncated=allow_truncated,
        )
    p = Path(path)
    ds = read_object(p, "an RT Plan", headers_only=False)
    return plan_from_dataset(ds, p, allow_truncated=allow_truncated)

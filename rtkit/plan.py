"""RT Plans: fraction groups, prescription, beams and control points (DESIGN §4).

A :class:`Plan` is read by :func:`rtkit.read_plan` from an RT Plan or RT Ion
Plan.  Units throughout: monitor units (MU, or the plan's
``PrimaryDosimeterUnit``, e.g. ``NP`` for ion plans), degrees, mm (IEC 61217
machine angles; positions in the patient frame, LPS), Gy, and MV (photons) or
MeV (electrons, ions) for nominal energies.

Control points
--------------
DICOM writes many control-point values only where they change (a static
field gives the gantry angle on the first control point only; an IMRT
segment repeats just the leaves).  Every :class:`ControlPoint` here holds
the *effective* value: the gantry, collimator and couch angles and their
rotation directions, energy, dose rate, isocentre, snout position, range
shifter settings, scan spot tune and every jaw and MLC bank are carried
forward from the previous control point when the file omits them.  Arrays
carried forward are shared between control points and read-only; copy one
before modifying it.  Spot maps (ion) belong to their own control point and
are never carried forward.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

__all__ = [
    "Arc",
    "Beam",
    "BeamType",
    "ControlPoint",
    "DoseReference",
    "FractionGroup",
    "Plan",
    "RangeShifter",
    "RangeShifterSetting",
    "ReferencedBeam",
    "Snout",
]

log = logging.getLogger(__name__)

#: Jaw types (one pair of jaws) among RTBeamLimitingDeviceType values.
JAW_TYPES = frozenset({"X", "Y", "ASYMX", "ASYMY"})
#: Multi-leaf collimator types among RTBeamLimitingDeviceType values.
MLC_TYPES = frozenset({"MLCX", "MLCY"})
_ANGLE_TOL = 1e-6  # degrees: gantry angles closer than this are "the same"


class BeamType(str, Enum):
    """DICOM BeamType: ``STATIC`` (no motion while on) or ``DYNAMIC``."""

    STATIC = "STATIC"
    DYNAMIC = "DYNAMIC"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Arc:
    """The gantry motion of an arc beam.

    Attributes
    ----------
    start, stop : float
        Gantry angle at the first and the last control point (degrees).
    direction : str
        ``"CW"`` or ``"CC"`` (IEC 61217: CW increases the gantry angle).
    extent : float
        Degrees travelled, summed over control points (up to 360 and more
        for a full or multiple rotation).
    """

    start: float
    stop: float
    direction: str
    extent: float

    def __str__(self) -> str:
        return f"{_fmt_angle(self.start)}->{_fmt_angle(self.stop)} {self.direction}"


@dataclass(frozen=True)
class RangeShifter:
    """One range shifter of an ion beam (RangeShifterSequence item)."""

    number: int | None
    id: str | None
    type: str | None  #: ``ANALOG`` or ``BINARY``
    accessory_code: str | None = None


@dataclass(frozen=True)
class RangeShifterSetting:
    """A range shifter's setting at a control point (RangeShifterSettingsSequence item).

    Attributes
    ----------
    range_shifter_number : int or None
        ReferencedRangeShifterNumber.
    setting : str or None
        RangeShifterSetting as written (e.g. ``IN``/``OUT``, or a thickness).
    isocenter_distance : float or None
        IsocenterToRangeShifterDistance, mm.
    water_equivalent_thickness : float or None
        RangeShifterWaterEquivalentThickness, mm.
    """

    range_shifter_number: int | None
    setting: str | None
    isocenter_distance: float | None = None
    water_equivalent_thickness: float | None = None


@dataclass(frozen=True)
class Snout:
    """One snout of an ion beam (SnoutSequence item)."""

    id: str | None
    accessory_code: str | None = None


@dataclass
class ControlPoint:
    """One control point of a beam, with omitted values carried forward.

    Attributes
    ----------
    index : int
        ControlPointIndex (position in the sequence if the file omits it).
    cumulative_weight : float or None
        CumulativeMetersetWeight (in the beam's FinalCumulativeMetersetWeight
        units; None where the file leaves it empty).
    gantry_angle : float or None
        Degrees (IEC 61217).
    gantry_rotation : str or None
        ``"CW"``, ``"CC"`` or ``"NONE"``: direction of gantry motion from
        this control point to the next.
    collimator_angle : float or None
        BeamLimitingDeviceAngle, degrees.
    couch_angle : float or None
        PatientSupportAngle, degrees.
    energy : float or None
        NominalBeamEnergy: MV for photons, MeV for electrons and ions.
    dose_rate : float or None
        DoseRateSet (MU/min).
    mlc : dict of str to ndarray
        Leaf positions by RTBeamLimitingDeviceType (``"MLCX"``, ``"MLCY"``):
        shape (2 * pairs,), mm at the isocentre plane, bank A (the first
        half) then bank B, as stored.
    jaws : dict of str to ndarray
        Jaw positions by type (``"ASYMX"``, ``"ASYMY"``, ``"X"``, ``"Y"``):
        shape (2,), mm.
    isocenter : ndarray, shape (3,), or None
        IsocenterPosition, LPS mm.
    spot_positions : ndarray, shape (N, 2), or None
        Ion plans: ScanSpotPositionMap, mm in the isocentre plane (this
        control point only; never carried forward).
    spot_weights : ndarray, shape (N,), or None
        Ion plans: ScanSpotMetersetWeights.
    snout_position : float or None
        Ion plans: SnoutPosition, mm.
    range_shifter_settings : list of RangeShifterSetting
        Ion plans: the range shifter settings in force.
    scan_spot_tune_id : str or None
        Ion plans: ScanSpotTuneID.
    """

    index: int
    cumulative_weight: float | None
    gantry_angle: float | None = None
    gantry_rotation: str | None = None
    collimator_angle: float | None = None
    couch_angle: float | None = None
    energy: float | None = None
    dose_rate: float | None = None
    mlc: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    jaws: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    isocenter: np.ndarray | None = field(default=None, repr=False)
    spot_positions: np.ndarray | None = field(default=None, repr=False)
    spot_weights: np.ndarray | None = field(default=None, repr=False)
    snout_position: float | None = None
    range_shifter_settings: list[RangeShifterSetting] = field(default_factory=list, repr=False)
    scan_spot_tune_id: str | None = None

    @property
    def number_of_spots(self) -> int:
        """Number of scan spots at this control point (0 when it has none)."""
        return 0 if self.spot_weights is None else int(self.spot_weights.size)


@dataclass
class Beam:
    """One beam (BeamSequence or IonBeamSequence item).

    Attributes
    ----------
    number : int
        BeamNumber.
    name, description : str or None
        BeamName, BeamDescription.
    type : BeamType
        ``STATIC`` or ``DYNAMIC``.
    radiation_type : str or None
        ``PHOTON``, ``ELECTRON``, ``PROTON``, ``ION``, ...
    energy : float or None
        Nominal energy of the first control point (MV or MeV).
    monitor_units : float or None
        BeamMeterset from the first fraction group that references the beam
        (in ``primary_dosimeter_unit``); None if absent.
    beam_dose : float or None
        BeamDose (Gy per fraction) from the same fraction group.
    fraction_group : int or None
        Number of that fraction group.
    gantry_angle, collimator_angle, couch_angle : float or None
        Of the first control point (degrees).
    treatment_delivery_type : str or None
        ``TREATMENT``, ``SETUP``, ``OPEN_PORTFILM``, ...
    is_setup : bool
        A set-up (imaging) field: TreatmentDeliveryType ``SETUP``, or a beam
        given no meterset (absent or 0) while other beams of the plan have
        one.
    machine : str or None
        TreatmentMachineName.
    sad : float or None
        SourceAxisDistance, mm (photon/electron beams).
    control_points : list of ControlPoint
    final_cumulative_weight : float or None
        FinalCumulativeMetersetWeight.
    primary_dosimeter_unit : str or None
        ``MU``, ``MINUTE``, ``NP`` (number of particles), ...
    is_ion : bool
        Read from IonBeamSequence.
    range_shifters : list of RangeShifter
    snouts : list of Snout
    scan_mode : str or None
        Ion beams: ``MODULATED``, ``UNIFORM``, ``NONE``.
    virtual_sad : tuple of float or None
        Ion beams: VirtualSourceAxisDistances (x, y), mm.
    fluence_mode : str or None
        FluenceModeID of a non-standard photon fluence (e.g. ``"FFF"``).
    leaf_boundaries : dict of str to ndarray
        LeafPositionBoundaries per MLC type, mm (pairs + 1 values).
    """

    number: int
    name: str | None
    description: str | None
    type: BeamType
    radiation_type: str | None
    energy: float | None
    monitor_units: float | None
    beam_dose: float | None
    gantry_angle: float | None
    collimator_angle: float | None
    couch_angle: float | None
    treatment_delivery_type: str | None
    is_setup: bool
    machine: str | None
    sad: float | None
    control_points: list[ControlPoint] = field(repr=False)
    final_cumulative_weight: float | None = None
    primary_dosimeter_unit: str | None = None
    fraction_group: int | None = None
    is_ion: bool = False
    range_shifters: list[RangeShifter] = field(default_factory=list, repr=False)
    snouts: list[Snout] = field(default_factory=list, repr=False)
    scan_mode: str | None = None
    virtual_sad: tuple[float, float] | None = None
    fluence_mode: str | None = None
    leaf_boundaries: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def gantry_angles(self) -> np.ndarray:
        """Gantry angle of every control point (degrees; NaN where unknown)."""
        return np.array(
            [np.nan if cp.gantry_angle is None else cp.gantry_angle for cp in self.control_points]
        )

    @property
    def is_arc(self) -> bool:
        """True when the gantry moves during the beam."""
        g = self.gantry_angles
        g = g[np.isfinite(g)]
        return bool(g.size > 1 and np.any(np.abs(_wrap(g - g[0])) > _ANGLE_TOL))

    @property
    def arc(self) -> Arc | None:
        """Start, stop, direction and extent of the gantry motion, or None for a fixed gantry."""
        if not self.is_arc:
            return None
        cps = [cp for cp in self.control_points if cp.gantry_angle is not None]
        directions = [cp.gantry_rotation for cp in cps if cp.gantry_rotation in ("CW", "CC")]
        g = np.array([cp.gantry_angle for cp in cps])
        steps = _wrap(np.diff(g))  # signed shortest steps, (-180, 180]
        if directions:
            direction = directions[0]
        else:  # no direction written: infer it from the motion
            direction = "CW" if steps.sum() >= 0 else "CC"
        sign = 1.0 if direction == "CW" else -1.0
        moves = np.mod(sign * np.diff(g), 360.0)
        moves[moves > 360.0 - 1e-3] = 0.0  # rounding noise against the direction
        extent = float(np.sum(moves))
        return Arc(float(g[0]), float(g[-1]), direction, extent)

    @property
    def number_of_control_points(self) -> int:
        return len(self.control_points)

    @property
    def energies(self) -> np.ndarray:
        """Nominal energy of every control point (NaN where unknown)."""
        return np.array([np.nan if cp.energy is None else cp.energy for cp in self.control_points])

    @property
    def number_of_energy_layers(self) -> int:
        """Runs of consecutive control points with the same nominal energy.

        An ion energy layer is usually written as two control points (spots
        on, then off) with one energy; both count as one layer.
        """
        e = self.energies
        if e.size == 0:
            return 0
        same = np.isclose(e[1:], e[:-1], rtol=0, atol=1e-6) | (np.isnan(e[1:]) & np.isnan(e[:-1]))
        return int(1 + np.count_nonzero(~same))

    @property
    def cumulative_weights(self) -> np.ndarray:
        """CumulativeMetersetWeight of every control point (NaN where empty)."""
        return np.array(
            [np.nan if cp.cumulative_weight is None else cp.cumulative_weight for cp in self.control_points]
        )

    @property
    def cumulative_mu(self) -> np.ndarray | None:
        """Monitor units delivered up to each control point, or None if MU or weights are unknown."""
        w = self.cumulative_weights
        final = self.final_cumulative_weight
        if self.monitor_units is None or not final or w.size == 0 or np.isnan(w).any():
            return None
        return w / final * self.monitor_units

    def _energy_text(self) -> str:
        if self.energy is None:
            return "-"
        if self.is_ion:
            e = self.energies
            e = e[np.isfinite(e)]
            lo, hi = float(e.min()), float(e.max())
            return f"{_num(hi)} MeV" if hi - lo < 1e-6 else f"{_num(lo)}-{_num(hi)} MeV"
        unit = "MV" if (self.radiation_type or "PHOTON") == "PHOTON" else "MeV"
        text = f"{_num(self.energy)} {unit}"
        return f"{text} {self.fluence_mode}" if self.fluence_mode else text

    def _mu_text(self) -> str:
        if self.monitor_units is None:
            return "-"
        mu = self.monitor_units
        text = f"{mu:.4g}" if abs(mu) >= 1e6 else f"{mu:.1f}"
        unit = self.primary_dosimeter_unit
        return f"{text} {unit}" if unit and unit != "MU" else text

    def _gantry_text(self) -> str:
        arc = self.arc
        if arc is not None:
            return str(arc)
        return _fmt_angle(self.gantry_angle)

    def __repr__(self) -> str:
        return (
            f"Beam({self.number}, {self.name!r}, {self.type.value}, {self.radiation_type}, "
            f"{self._energy_text()}, MU {self._mu_text()}, gantry {self._gantry_text()}, "
            f"{len(self.control_points)} CPs{', setup' if self.is_setup else ''})"
        )


@dataclass(frozen=True)
class ReferencedBeam:
    """A beam as listed by a fraction group (ReferencedBeamSequence item)."""

    number: int
    monitor_units: float | None  #: BeamMeterset
    beam_dose: float | None = None  #: BeamDose, Gy per fraction


@dataclass
class FractionGroup:
    """One fraction group (FractionGroupSequence item).

    Attributes
    ----------
    number : int or None
        FractionGroupNumber.
    fractions : int or None
        NumberOfFractionsPlanned.
    beams : list of ReferencedBeam
        The beams delivered in each fraction, with their meterset (MU) and
        dose per fraction.
    description : str or None
        FractionGroupDescription.
    """

    number: int | None
    fractions: int | None
    beams: list[ReferencedBeam] = field(default_factory=list)
    description: str | None = None

    @property
    def beam_numbers(self) -> list[int]:
        return [b.number for b in self.beams]

    @property
    def monitor_units(self) -> dict[int, float | None]:
        """BeamMeterset by beam number."""
        return {b.number: b.monitor_units for b in self.beams}


@dataclass
class DoseReference:
    """One dose reference (DoseReferenceSequence item).

    Attributes
    ----------
    number : int or None
        DoseReferenceNumber.
    structure_type : str or None
        ``POINT``, ``VOLUME``, ``COORDINATES``, ``SITE``.
    description : str or None
    type : str or None
        ``TARGET`` or ``ORGAN_AT_RISK``.
    target_prescription_gy : float or None
        TargetPrescriptionDose (over all fractions), Gy.
    delivery_max_gy : float or None
        DeliveryMaximumDose, Gy.
    roi_number : int or None
        ReferencedROINumber.
    point : ndarray, shape (3,), or None
        DoseReferencePointCoordinates, LPS mm.
    organ_at_risk_max_gy : float or None
        OrganAtRiskMaximumDose, Gy.
    """

    number: int | None
    structure_type: str | None
    description: str | None
    type: str | None
    target_prescription_gy: float | None = None
    delivery_max_gy: float | None = None
    roi_number: int | None = None
    point: np.ndarray | None = field(default=None, repr=False)
    organ_at_risk_max_gy: float | None = None


@dataclass
class Plan:
    """An RT Plan or RT Ion Plan (see :func:`rtkit.read_plan`).

    Attributes
    ----------
    label, name, description : str or None
        RTPlanLabel, RTPlanName, RTPlanDescription.
    sop_instance_uid, frame_of_reference_uid : str or None
    referenced_structure_set_uid : str or None
        ReferencedSOPInstanceUID of the first ReferencedStructureSetSequence item.
    fractions : int or None
        NumberOfFractionsPlanned of the first fraction group.
    fraction_groups : list of FractionGroup
    prescription_gy : float or None
        Total target prescription: the largest TargetPrescriptionDose among
        TARGET dose references.  Without one, the sum over fraction groups of
        BeamDose x fractions of their beams (``prescription_source`` is then
        ``"BeamDose"`` and ``notes`` says so); None when neither is known.
    prescription_source : str or None
        ``"TargetPrescriptionDose"``, ``"BeamDose"`` or None.
    dose_references : list of DoseReference
    beams : list of Beam
        Every beam of the plan (BeamSequence or IonBeamSequence), in file order.
    is_ion : bool
        An RT Ion Plan.
    path : Path or None
        The file read.
    notes : list of str
        Assumptions made while reading (no warning is issued for these).
    """

    label: str | None
    name: str | None
    description: str | None
    sop_instance_uid: str | None
    frame_of_reference_uid: str | None
    referenced_structure_set_uid: str | None
    fractions: int | None
    fraction_groups: list[FractionGroup]
    prescription_gy: float | None
    dose_references: list[DoseReference]
    beams: list[Beam]
    is_ion: bool = False
    path: Path | None = None
    prescription_source: str | None = None
    patient_id: str | None = None
    approval_status: str | None = None
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ access
    def beam(self, number: int) -> Beam:
        """The beam with BeamNumber ``number``.

        Raises
        ------
        KeyError
            No such beam; the message lists the beam numbers of the plan.
        """
        for b in self.beams:
            if b.number == number:
                return b
        raise KeyError(
            f"plan {self.label or self.name or ''!s} has no beam number {number}; "
            f"beams are {[b.number for b in self.beams]}"
        )

    @property
    def treatment_beams(self) -> list[Beam]:
        """Beams that are not set-up fields."""
        return [b for b in self.beams if not b.is_setup]

    @property
    def target_dose_references(self) -> list[DoseReference]:
        """TARGET dose references with a TargetPrescriptionDose."""
        return [
            d for d in self.dose_references
            if d.type == "TARGET" and d.target_prescription_gy is not None
        ]

    @property
    def dose_per_fraction_gy(self) -> float | None:
        """``prescription_gy / fractions`` (first fraction group), or None."""
        if self.prescription_gy is None or not self.fractions:
            return None
        return self.prescription_gy / self.fractions

    @property
    def total_monitor_units(self) -> float | None:
        """MU per fraction summed over treatment beams with a meterset (None if none has)."""
        mus = [b.monitor_units for b in self.treatment_beams if b.monitor_units is not None]
        return float(sum(mus)) if mus else None

    # ------------------------------------------------------------ display
    def _rx_text(self) -> str:
        if self.prescription_gy is None:
            text = "Rx unknown"
        else:
            text = f"Rx {_num(self.prescription_gy)} Gy"
            if self.fractions:
                text += f" in {self.fractions} fx ({_num(self.prescription_gy / self.fractions)} Gy/fx)"
            if self.prescription_source == "BeamDose":
                text += " [sum of BeamDose x fractions]"
        if self.prescription_gy is None and self.fractions:
            text += f", {self.fractions} fx"
        targets = self.target_dose_references
        if len(targets) > 1:
            text += "; targets: " + ", ".join(
                f"{d.description or d.number} {_num(d.target_prescription_gy)} Gy" for d in targets
            )
        return text

    def summary(self) -> str:
        """A one-screen text summary: label, Rx and fractions, one line per beam.

        Beam lines give number, name, type, energy, MU, gantry (``start->stop
        CW/CC`` for arcs), collimator, couch, number of control points, and
        ``setup`` for set-up fields; fraction groups are listed when there
        are several.
        """
        kind = "RT Ion Plan" if self.is_ion else "RT Plan"
        title = self.label or self.name or "(no label)"
        if self.name and self.name != title:
            title += f" ({self.name})"
        nb = len(self.beams)
        lines = [f"{kind} {title}: {nb} beam{'' if nb == 1 else 's'}, {self._rx_text()}"]
        cols = ("#", "name", "type", "radiation", "energy", "MU", "gantry", "coll", "couch", "CPs")
        right = {"#", "MU", "coll", "couch", "CPs"}
        rows = [self._beam_row(b) for b in self.beams]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]

        def fmt(cells: tuple[str, ...]) -> str:
            return "  " + "  ".join(
                c.rjust(w) if name in right else c.ljust(w)
                for c, w, name in zip(cells, widths, cols, strict=True)
            )

        lines.append(fmt(cols).rstrip())
        for b, r in zip(self.beams, rows, strict=True):
            lines.append((fmt(r) + ("  setup" if b.is_setup else "")).rstrip())
        total = self.total_monitor_units
        if total is not None and len(self.fraction_groups) <= 1:
            units = {b.primary_dosimeter_unit or "MU" for b in self.treatment_beams}
            unit = units.pop() if len(units) == 1 else "MU"
            lines.append(f"  total {_num(total)} {unit} per fraction (treatment beams)")
        if len(self.fraction_groups) > 1:
            lines.append("  fraction groups:")
            for fg in self.fraction_groups:
                mus = [b.monitor_units for b in fg.beams if b.monitor_units is not None]
                mu = f", {_num(sum(mus))} MU/fx" if mus else ""
                desc = f" {fg.description}" if fg.description else ""
                lines.append(
                    f"    {fg.number}:{desc} {fg.fractions if fg.fractions is not None else '?'} fx, "
                    f"beams {', '.join(str(n) for n in fg.beam_numbers) or '-'}{mu}"
                )
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)

    @staticmethod
    def _beam_row(b: Beam) -> tuple[str, ...]:
        return (
            str(b.number), (b.name or "")[:20], b.type.value, b.radiation_type or "-",
            b._energy_text(), b._mu_text(), b._gantry_text(), _fmt_angle(b.collimator_angle),
            _fmt_angle(b.couch_angle), str(len(b.control_points)),
        )

    def _repr_html_(self) -> str:
        cols = ("#", "name", "type", "radiation", "energy", "MU", "gantry", "coll", "couch", "CPs", "setup")
        rows = [self._beam_row(b) + ("yes" if b.is_setup else "",) for b in self.beams]
        head = "".join(f"<th>{c}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
        )
        title = html.escape(self.label or self.name or "")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            f"<div><b>rtkit {'RT Ion Plan' if self.is_ion else 'RT Plan'}</b> {title} "
            f"&mdash; {html.escape(self._rx_text())}"
            f"<table><tr>{head}</tr>{body}</table>" + (f"<ul>{notes}</ul>" if notes else "") + "</div>"
        )

    def __repr__(self) -> str:
        rx = f", Rx {_num(self.prescription_gy)} Gy" if self.prescription_gy is not None else ""
        fx = f", {self.fractions} fx" if self.fractions else ""
        return f"Plan({self.label or self.name!r}, {len(self.beams)} beams{fx}{rx})"


# ------------------------------------------------------------ helpers
def _wrap(d: np.ndarray) -> np.ndarray:
    """Angles (degrees) wrapped to (-180, 180]."""
    return 180.0 - np.mod(180.0 - np.asarray(d, dtype=float), 360.0)


def _num(x: float | None) -> str:
    """A number without trailing zeros (``14``, ``2.5``, ``97.33``)."""
    if x is None:
        return "-"
    if abs(x) >= 1e6:
        return f"{x:.4g}"
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _fmt_angle(a: float | None) -> str:
    return "-" if a is None else _num(a)

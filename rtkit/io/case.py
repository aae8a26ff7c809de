"""Cases: one patient's planning CT and every object linked to it.

Linking uses UIDs only, never file names:

* an RT Structure Set marks the planning CT through the series it references
  (RTReferencedSeriesSequence), else through its frame of reference;
* an RT Plan links to a structure set by ReferencedStructureSetSequence;
* an RT Dose links to a plan by ReferencedRTPlanSequence;
* a Spatial Registration links the frames of reference it lists;
* other image series (MR, PET, CBCT) join the case of the CT that shares
  their frame of reference, or that a registration links them to; images in
  a frame of their own with no registration join every case of the patient.

A patient gives one case per planning CT.  When several CTs exist and no RT
object marks one of them (by series, or failing that by a unique frame of
reference), each CT is a candidate case and :func:`load` reports the
ambiguity.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from pydicom.dataset import Dataset

from ..dose import Dose, sum_doses
from ..errors import AmbiguousCaseError, FrameOfReferenceError, RTKitError, warn
from ..image import Image
from ..plan import Plan
from ..registration import Registration
from ..structures import StructureSet
from ._dicom import Instance, guard_decoding, open_dataset
from .reg import registration_from_dataset
from .rtdose import dose_from_instance
from .rtplan import plan_from_dataset
from .rtstruct import structures_from_dataset
from .scan import Index, Patient, Series, scan
from .series import layout_frames, series_image

__all__ = ["Case", "load", "build_cases", "describe_index"]

log = logging.getLogger("rtkit.io")

_RT_KINDS = ("RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "RTIMAGE", "RTRECORD")


def short_uid(uid: str | None, n: int = 10) -> str:
    """The last ``n`` characters of a UID, for display."""
    if not uid:
        return "-"
    return uid if len(uid) <= n + 1 else "…" + uid[-n:]


class Case:
    """One patient's planning CT and the objects linked to it.

    Build cases with :func:`rtkit.load` or :meth:`rtkit.Index.cases`.
    Images and RT objects are read lazily, on first access.

    Attributes
    ----------
    patient_id : str or None
    patient_name : str or None
    ct_series : Series or None
        The planning CT series (None for a patient without a CT).
    image_series : list of Series
        Every image series of the case, the planning CT first.
    rt_instances : list of Instance
        RT objects (RTSTRUCT, RTPLAN, RTDOSE, REG, ...) of the case.
    notes : list of str
        Link problems found (a frame-of-reference mismatch, a reference to an
        object not in the folder, ...).
    """

    def __init__(
        self,
        index: Index,
        patient: Patient,
        ct_series: Series | None,
        image_series: list[Series],
        rt_instances: list[Instance],
    ) -> None:
        self.index = index
        self.patient_id = patient.patient_id
        self.patient_name = patient.patient_name
        self.ct_series = ct_series
        self.image_series = image_series
        self.rt_instances = rt_instances
        self._datasets: dict[Path, Dataset] = {}
        self.notes: list[str] = _check_links(self)

    # -------------------------------------------------------------- objects
    def _of(self, modality: str) -> list[Instance]:
        return [i for i in self.rt_instances if i.modality == modality]

    def _dataset(self, inst: Instance) -> Dataset:
        if inst.path not in self._datasets:
            self._datasets[inst.path] = open_dataset(inst.path, headers_only=False)
        return self._datasets[inst.path]

    @property
    def name(self) -> str:
        """A short label: patient ID and planning CT description."""
        ct = self.ct_series
        desc = (ct.description or short_uid(ct.series_instance_uid)) if ct else "no CT"
        return f"{self.patient_id or self.patient_name or '?'} / {desc}"

    @cached_property
    def ct(self) -> Image | None:
        """The planning CT in HU (grid from headers now, pixels on first ``.array``)."""
        return series_image(self.ct_series.instances) if self.ct_series else None

    @cached_property
    def images(self) -> list[Image]:
        """Every image series of the case (CT, MR, PT, NM), the planning CT first."""
        out = []
        for s in self.image_series:
            out.append(self.ct if s is self.ct_series else series_image(s.instances))
        return out

    def _choose(self, kind: str, candidates: list[Instance], preferred: list[Instance]) -> Instance | None:
        if not candidates:
            return None
        pool = preferred or candidates
        if len(pool) > 1:
            others = ", ".join(str(i.path) for i in pool[1:])
            warn(f"case {self.name}: {len(pool)} {kind} objects could serve; using {pool[0].path} "
                 f"(others: {others}). Read another with rtkit.read_* if needed.", log)
        return pool[0]

    @cached_property
    def _plan_instance(self) -> Instance | None:
        plans = self._of("RTPLAN")
        plan_doses = [d for d in self._of("RTDOSE") if d.dose_summation_type == "PLAN"]
        referenced = {u for d in plan_doses for u in d.referenced_instances}
        return self._choose("RT Plan", plans, [p for p in plans if p.sop_instance_uid in referenced])

    @cached_property
    def _structure_instance(self) -> Instance | None:
        structs = self._of("RTSTRUCT")
        plan = self._plan_instance
        pref = [s for s in structs if plan and s.sop_instance_uid in plan.referenced_instances]
        if not pref and self.ct_series is not None:
            pref = [s for s in structs if self.ct_series.series_instance_uid in s.referenced_series]
        return self._choose("RT Structure Set", structs, pref)

    @cached_property
    def structures(self) -> StructureSet | None:
        """The case's RT Structure Set (see :func:`rtkit.read_structures`), or None."""
        inst = self._structure_instance
        return structures_from_dataset(self._dataset(inst), inst.path) if inst else None

    @cached_property
    def plan(self) -> Plan | None:
        """The case's RT (Ion) Plan (see :func:`rtkit.read_plan`), or None."""
        inst = self._plan_instance
        return plan_from_dataset(self._dataset(inst), inst.path) if inst else None

    @cached_property
    def doses(self) -> list[Dose]:
        """Every RT Dose of the case, in Gy (pixels read on first ``.array``)."""
        out = []
        for inst in self._of("RTDOSE"):
            out.append(dose_from_instance(open_dataset(inst.path, headers_only=True), inst.path))
        return out

    def _plan_beam_numbers(self) -> set[int]:
        """Treatment beam numbers of the case's plan (setup fields excluded)."""
        plan = self.plan
        return set() if plan is None else {b.number for b in plan.treatment_beams}

    @cached_property
    def dose(self) -> Dose | None:
        """The plan dose.

        The PLAN-summed RT Dose that references the case's plan (else the
        only PLAN dose); failing that, the sum of the BEAM doses that
        reference the plan, with a warning when they do not cover every
        treatment beam of the plan.  None when there is neither.
        """
        plan = self._plan_instance
        by_inst = dict(zip((i.path for i in self._of("RTDOSE")), self.doses, strict=True))
        plan_doses = [i for i in self._of("RTDOSE") if i.dose_summation_type in ("PLAN", None)]
        pref = [i for i in plan_doses if plan and plan.sop_instance_uid in i.referenced_instances]
        inst = self._choose("plan RT Dose", plan_doses, pref)
        if inst is not None:
            return by_inst[inst.path]
        beams = [by_inst[i.path] for i in self._of("RTDOSE") if i.dose_summation_type == "BEAM"
                 and (plan is None or plan.sop_instance_uid in i.referenced_instances)]
        if not beams:
            return None
        covered = {b for d in beams for b in d.referenced_beam_numbers}
        missing = sorted(self._plan_beam_numbers() - covered)
        if missing:
            warn(f"case {self.name}: the BEAM doses cover beams {sorted(covered)} but the plan also has "
                 f"treatment beam(s) {missing}; the summed dose lacks them", log)
        counts = {}
        for d in beams:
            for b in d.referenced_beam_numbers:
                counts[b] = counts.get(b, 0) + 1
        twice = sorted(b for b, n in counts.items() if n > 1)
        if twice:
            warn(f"case {self.name}: several BEAM doses cover beam(s) {twice}; all are added", log)
        return sum_doses(beams)

    @cached_property
    def registrations(self) -> list[Registration]:
        """Every readable Spatial Registration of the case (rigid/affine REG objects).

        A REG that cannot be read (non-conformant, deformable) is left out with
        a warning naming the file.
        """
        out = []
        for inst in self._of("REG"):
            try:
                out.append(registration_from_dataset(self._dataset(inst), source=str(inst.path)))
            except RTKitError as exc:
                warn(f"case {self.name}: registration left out: {exc}", log)
        return out

    def registration_to_ct(self, image: Image) -> Registration | None:
        """The stored registration mapping ``image``'s frame of reference to the CT's.

        Returns None when the image is in the CT's frame (no transform needed).

        Raises
        ------
        FrameOfReferenceError
            No REG object of the case links the two frames.
        """
        if self.ct is None:
            raise FrameOfReferenceError(f"case {self.name} has no planning CT")
        ct_for, im_for = self.ct.grid.frame_of_reference_uid, image.grid.frame_of_reference_uid
        if not im_for or im_for == ct_for:
            return None
        for reg in self.registrations:
            if reg.moving.frame_of_reference_uid == im_for and reg.fixed.frame_of_reference_uid == ct_for:
                return reg
            if reg.fixed.frame_of_reference_uid == im_for and reg.moving.frame_of_reference_uid == ct_for:
                return reg.inverse()
        raise FrameOfReferenceError(
            f"case {self.name}: no Spatial Registration links the image's frame of reference {im_for} to the "
            f"CT's {ct_for}; register it (rtkit.register(case.ct, image)) and pass the result")

    def on_ct(self, image: Image, order: int = 1, registration: Registration | None = None) -> Image:
        """``image`` (MR, PET, ... of this case) resampled onto the planning CT grid.

        Parameters
        ----------
        image : Image
            Any image of the patient.
        order : int
            Interpolation order (1 trilinear).
        registration : Registration, optional
            Moving (the image) -> fixed (the CT); default: the case's stored REG
            linking the frames, or none when the image shares the CT's frame.

        Returns
        -------
        Image
            On ``case.ct.grid``, in the CT's frame of reference.
        """
        reg = registration if registration is not None else self.registration_to_ct(image)
        if self.ct is None:
            raise FrameOfReferenceError(f"case {self.name} has no planning CT")
        if reg is None:
            return image.resample(self.ct.grid, order=order)
        return reg.resample(image, order=order, grid=self.ct.grid)

    # -------------------------------------------------------------- display
    def _image_line(self, s: Series) -> str:
        try:
            g = layout_frames(s.instances, f"{s.modality} series").grid
            sp = " x ".join(f"{v:.3g}" for v in g.spacing)
            geo = f"{g.shape[0]} x {g.shape[1]} x {g.shape[2]} voxels, {sp} mm"
        except Exception as exc:  # noqa: BLE001 - summary must not fail on a bad series
            geo = f"{len(s)} files, geometry error: {exc}"
        return f"{s.modality:<8} {s.description or '':<24} {geo}, FoR {short_uid(s.frame_of_reference_uid)}"

    def summary(self) -> str:
        """A plain-text summary of the case and its links."""
        lines = [f"Case {self.name}", f"  patient  {self.patient_id or '-'} ({self.patient_name or '-'})"]
        if self.ct_series is None:
            lines.append("  (no planning CT)")
        for s in self.image_series:
            tag = " [planning CT]" if s is self.ct_series else ""
            lines.append("  " + self._image_line(s) + tag)
        for inst in sorted(self.rt_instances, key=lambda i: (_RT_KINDS.index(i.modality) if i.modality in _RT_KINDS else 9, str(i.path))):
            extra = f" {inst.dose_summation_type}" if inst.dose_summation_type else ""
            lines.append(f"  {inst.modality:<8} {inst.label or inst.series_description or '':<24}{extra} {inst.path.name}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for s in self.image_series:
            rows.append((s.modality, s.description or "", f"{len(s)} files", short_uid(s.frame_of_reference_uid)))
        for i in self.rt_instances:
            rows.append((i.modality, i.label or i.series_description or "", i.path.name, short_uid(i.frame_of_reference_uid)))
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            f"<div><b>rtkit Case</b> {html.escape(self.name)}"
            "<table><tr><th>modality</th><th>description</th><th>files</th><th>frame of reference</th></tr>"
            f"{body}</table>" + (f"<ul>{notes}</ul>" if notes else "") + "</div>"
        )

    def __repr__(self) -> str:
        kinds = ", ".join(sorted({i.modality for i in self.rt_instances}))
        return f"Case({self.name!r}, {len(self.image_series)} image series{', ' + kinds if kinds else ''})"


# ------------------------------------------------------------------ linking
def _check_links(case: Case) -> list[str]:
    notes = []
    ct = case.ct_series
    ct_for = ct.frame_of_reference_uid if ct else None
    sops = {i.sop_instance_uid: i for i in case.rt_instances if i.sop_instance_uid}
    for inst in case.rt_instances:
        label = f"{inst.modality} {inst.path.name}"
        if inst.modality in ("RTSTRUCT", "RTPLAN", "RTDOSE"):
            frames = {inst.frame_of_reference_uid} | inst.referenced_frames
            frames.discard(None)
            others = sorted(frames - {ct_for})
            if ct_for and others:
                notes.append(f"{label} is in frame of reference {short_uid(others[0], 20)}, "
                             f"not the planning CT's {short_uid(ct_for, 20)}")
            if not frames:
                notes.append(f"{label} names no frame of reference")
        if inst.modality == "RTSTRUCT" and ct and inst.referenced_series and ct.series_instance_uid not in inst.referenced_series:
            notes.append(f"{label} references series {', '.join(short_uid(u) for u in inst.referenced_series)}, "
                         "not the planning CT; linked by frame of reference")
        if inst.modality in ("RTPLAN", "RTDOSE"):
            missing = [u for u in inst.referenced_instances if u not in sops]
            if missing:
                notes.append(f"{label} references {len(missing)} object(s) not in the folder")
    return notes


def _planning_cts(series: list[Series], rts: list[Instance]) -> list[Series]:
    cts = [s for s in series if s.modality == "CT"]
    structs = [r for r in rts if r.modality == "RTSTRUCT"]
    marked = [ct for ct in cts if any(ct.series_instance_uid in r.referenced_series for r in structs)]
    if marked or len(cts) <= 1:
        return marked or cts
    rt_frames = {f for r in rts if r.modality in ("RTSTRUCT", "RTPLAN", "RTDOSE")
                 for f in ({r.frame_of_reference_uid} | r.referenced_frames) if f}
    by_frame = [ct for ct in cts if ct.frame_of_reference_uid in rt_frames]
    return by_frame if len(by_frame) == 1 else cts


def _assign(ct: Series, cts: list[Series], rts: list[Instance]) -> list[Instance]:
    """RT objects belonging to ``ct`` when the patient has several planning CTs."""
    def owner_by_frame(inst: Instance) -> Series | None:
        frames = ({inst.frame_of_reference_uid} | inst.referenced_frames) - {None}
        owners = [c for c in cts if c.frame_of_reference_uid in frames]
        return owners[0] if len(owners) == 1 else None

    mine: list[Instance] = []
    structs = [r for r in rts if r.modality == "RTSTRUCT"]
    for r in structs:
        owners = [c for c in cts if c.series_instance_uid in r.referenced_series]
        if (owners[0] if len(owners) == 1 else owner_by_frame(r)) is ct:
            mine.append(r)
    mine_sops = {r.sop_instance_uid for r in mine}
    for kind in ("RTPLAN", "RTDOSE", "RTRECORD"):
        for r in (x for x in rts if x.modality == kind):
            if r.referenced_instances & mine_sops or (not r.referenced_instances & {x.sop_instance_uid for x in rts} and owner_by_frame(r) is ct):
                mine.append(r)
                mine_sops.add(r.sop_instance_uid)
    for r in rts:
        if r.modality in ("REG", "RTIMAGE") and (ct.frame_of_reference_uid in r.referenced_frames or owner_by_frame(r) is ct):
            mine.append(r)
    return mine


def build_cases(index: Index) -> list[Case]:
    """Every case in ``index`` (see the module docstring for the rules)."""
    cases: list[Case] = []
    unlinked: list[Instance] = []
    for patient in index.patients:
        series = patient.series
        rts = [i for s in series if not s.is_image for i in s.instances]
        images = [s for s in series if s.is_image]
        planning = _planning_cts(series, rts)
        if len(planning) <= 1:
            ct = planning[0] if planning else None
            others = [s for s in images if s is not ct]
            if ct is None and not images and not rts:
                continue
            cases.append(Case(index, patient, ct, ([ct] if ct else []) + others, rts))
            continue
        used: set[int] = set()
        for ct in planning:
            mine = _assign(ct, planning, rts)
            used.update(id(r) for r in mine)
            reg_frames = {f for r in mine if r.modality == "REG" for f in r.referenced_frames}
            others = []
            for s in images:
                if s is ct or s in planning:
                    continue
                f = s.frame_of_reference_uid
                same = f == ct.frame_of_reference_uid or f in reg_frames
                claimed = any(f == c.frame_of_reference_uid for c in planning)
                if same or not claimed:
                    others.append(s)
            cases.append(Case(index, patient, ct, [ct, *others], mine))
        unlinked += [r for r in rts if id(r) not in used]
    if unlinked:
        warn(f"{len(unlinked)} RT object(s) could not be linked to one planning CT and belong to no "
             f"case: {', '.join(str(r.path) for r in unlinked[:5])}", log)
    return cases


@guard_decoding
def load(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, progress: bool = False) -> Case:
    """The one case found under ``path``.

    Parameters
    ----------
    path : path-like or sequence of path-like
        A folder (searched recursively) or a list of files.
    progress : bool
        Show a progress bar while scanning.

    Returns
    -------
    Case

    Raises
    ------
    AmbiguousCaseError
        No case, or several (several patients, or several CTs none of which an
        RT object marks as the planning CT); the message lists them and
        ``rtkit.scan(path).cases()`` returns them all.
    """
    index = scan(path, progress=progress)
    cases = index.cases()
    if len(cases) == 1:
        return cases[0]
    if not cases:
        raise AmbiguousCaseError(
            f"{path}: no case found ({len(index.skipped)} non-DICOM and {len(index.unreadable)} "
            "unreadable files). Point rtkit.load at a folder holding DICOM images or RT objects."
        )
    listing = "\n".join(f"  {i + 1}. {c.name}: {c!r}" for i, c in enumerate(cases))
    raise AmbiguousCaseError(
        f"{path} holds {len(cases)} cases:\n{listing}\n"
        "Load one folder per case, or use rtkit.scan(path).cases() to get them all."
    )


# ----------------------------------------------------------------- info tree
def describe_index(index: Index) -> str:
    """The text tree printed by ``rtkit info``."""
    by_sop = {i.sop_instance_uid: i for i in index.instances if i.sop_instance_uid}
    by_series = {s.series_instance_uid: s for s in index.series if s.series_instance_uid}
    n_files = sum(len(s) for s in index.series)
    roots = ", ".join(str(r) for r in index.root)
    lines = [
        f"{roots}: {n_files} DICOM files in {len(index.series)} series, {len(index.patients)} patient(s); "
        f"skipped {len(index.skipped)} non-DICOM file(s); {len(index.unreadable)} unreadable"
    ]
    for p in index.patients:
        lines.append(f"Patient {p.patient_id or '-'}  {p.patient_name or ''}".rstrip())
        for st in p.studies:
            lines.append(f"  Study {short_uid(st.study_instance_uid)}  {st.date or ''}  {st.description or ''}".rstrip())
            for s in st.series:
                lines.append(f"    {s.modality:<8} {len(s):>4} file(s)  {s.description or '':<28} "
                             f"series {short_uid(s.series_instance_uid)}  FoR {short_uid(s.frame_of_reference_uid)}")
                mods = {i.modality_tag for i in s.instances if i.modality_tag and i.modality_tag != s.modality}
                if mods:
                    lines.append(f"             Modality tag says {', '.join(sorted(mods))}; SOP Class says {s.modality}")
                for uid in sorted(s.referenced_series):
                    t = by_series.get(uid)
                    lines.append(f"             -> series {t.modality + ' ' + (t.description or '') if t else short_uid(uid) + ' (not in folder)'}")
                for uid in sorted(s.referenced_instances):
                    t = by_sop.get(uid)
                    lines.append(f"             -> {t.modality + ' ' + (t.label or t.path.name) if t else 'object ' + short_uid(uid) + ' (not in folder)'}")
    for _path, why in index.unreadable:
        lines.append(f"unreadable: {why}")
    return "\n".join(lines)

"""Reading RT Structure Sets into :class:`rtkit.StructureSet`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ..errors import DicomReadError, FrameOfReferenceError, violation, warn
from ..structures import CLOSED_TYPES, Contour, Structure, StructureSet, default_color
from ._dicom import (
    _SLOW,
    _int,
    _raw,
    _seq,
    _str,
    guard_decoding,
    read_object,
    resolve_modality,
    truncation_problems,
)

__all__ = ["read_structures"]

log = logging.getLogger("rtkit.io")

_GEOMETRIC_TYPES = frozenset({"POINT", "OPEN_PLANAR", "OPEN_NONPLANAR"}) | frozenset(CLOSED_TYPES)


def _contour_points(item: Dataset, where: str) -> np.ndarray | None:
    """ContourData as an (N, 3) float64 array (fast path from the raw DS text)."""
    v = _raw(item, "ContourData")
    try:
        if isinstance(v, str):
            arr = np.array(v.split("\\"), dtype=np.float64)
        elif v is _SLOW:
            arr = np.asarray([float(x) for x in item.get("ContourData") or []], dtype=np.float64)
        else:
            arr = np.empty(0)
    except (TypeError, ValueError) as exc:
        violation(f"{where}: ContourData cannot be read as numbers ({exc})", log, repair="contour skipped")
        return None
    if arr.size == 0:
        violation(f"{where}: a contour without ContourData (Type 1)", log, repair="contour skipped")
        return None
    if arr.size % 3:
        violation(f"{where}: ContourData holds {arr.size} values, not a multiple of 3", log,
                  repair="contour skipped")
        return None
    return arr.reshape(-1, 3)


def _color(item: Dataset, number: int) -> tuple[int, int, int]:
    v = item.get("ROIDisplayColor")
    try:
        rgb = tuple(int(float(x)) for x in v) if v is not None else ()
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3:
        return default_color(number)
    return tuple(min(255, max(0, c)) for c in rgb)  # type: ignore[return-value]


def structures_from_dataset(ds: Dataset, path: Path | None = None) -> StructureSet:
    """Build a :class:`StructureSet` from an RT Structure Set dataset (see :func:`read_structures`)."""
    name = str(path) if path else "RT Structure Set"
    cut = truncation_problems(ds, path)  # first: a cut file fails every later check for that reason
    if cut:
        raise DicomReadError(
            f"{name}: the file is truncated ({'; '.join(cut)}): ROIs or contours after the cut are "
            "missing. Re-export the structure set."
        )
    modality, tag = resolve_modality(ds)
    if modality != "RTSTRUCT":
        raise DicomReadError(f"{name}: not an RT Structure Set (SOP Class says {modality})")
    if tag and tag != "RTSTRUCT":
        violation(f"{name}: Modality tag says {tag!r} but the SOP Class is RT Structure Set", log,
                  repair="read as one")
    if not _seq(ds, "StructureSetROISequence"):
        violation(f"{name}: no StructureSetROISequence (Type 1): the structure set lists no ROI (or the file "
                  "is truncated)", log,
                  repair="read as an empty structure set")
    elif "ROIContourSequence" not in ds:
        # also what a file cut exactly between two top-level elements looks like
        violation(f"{name}: no ROIContourSequence (Type 1): no ROI has contours; the file may be "
                  "truncated", log, repair="every ROI read as empty")
    if "RTROIObservationsSequence" not in ds:
        violation(f"{name}: no RTROIObservationsSequence (Type 1); the file may be truncated", log,
                  repair="ROI interpreted types read as unknown")
    frames = [_str(f, "FrameOfReferenceUID") for f in _seq(ds, "ReferencedFrameOfReferenceSequence")]
    frames = [f for f in frames if f]
    if not frames:
        violation(f"{name}: ReferencedFrameOfReferenceSequence gives no FrameOfReferenceUID (Type 1)", log,
                  FrameOfReferenceError, repair="masks are made on any grid without a frame-of-reference check")
    series = [
        _str(se, "SeriesInstanceUID")
        for f in _seq(ds, "ReferencedFrameOfReferenceSequence")
        for st in _seq(f, "RTReferencedStudySequence")
        for se in _seq(st, "RTReferencedSeriesSequence")
    ]
    rois: dict[int, dict] = {}
    for item in _seq(ds, "StructureSetROISequence"):
        number = _int(item, "ROINumber")
        if number is None:
            violation(f"{name}: an ROI without a valid ROINumber ('{_str(item, 'ROIName')}')", log,
                      repair="ROI ignored")
            continue
        rois[number] = {
            "name": _str(item, "ROIName") or f"ROI {number}",
            "frame": _str(item, "ReferencedFrameOfReferenceUID"),
            "type": None,
            "color": None,
            "contours": [],
        }
    for obs in _seq(ds, "RTROIObservationsSequence"):
        number = _int(obs, "ReferencedROINumber")
        if number in rois:
            rois[number]["type"] = _str(obs, "RTROIInterpretedType")
    for rc in _seq(ds, "ROIContourSequence"):
        number = _int(rc, "ReferencedROINumber")
        if number not in rois:
            what = ("an ROIContourSequence item without a valid ReferencedROINumber" if number is None
                    else f"contours for ROI number {number}, which StructureSetROISequence does not list")
            violation(f"{name}: {what}", log, repair="ignored")
            continue
        roi = rois[number]
        roi["color"] = _color(rc, number)
        where = f"{name}: ROI '{roi['name']}' (number {number})"
        for c in _seq(rc, "ContourSequence"):
            pts = _contour_points(c, where)
            if pts is None:
                continue
            images = _seq(c, "ContourImageSequence")
            ref = _str(images[0], "ReferencedSOPInstanceUID") if images else None
            kind = (_str(c, "ContourGeometricType") or "").upper()
            if kind not in _GEOMETRIC_TYPES:
                violation(f"{where}: ContourGeometricType is {kind or 'missing'!r} (Type 1: POINT, "
                          "OPEN_PLANAR, OPEN_NONPLANAR or CLOSED_PLANAR)", log,
                          repair="read as CLOSED_PLANAR" if len(pts) >= 3 else "kept, not rasterised")
                kind = "CLOSED_PLANAR" if len(pts) >= 3 else "POINT" if len(pts) == 1 else "OPEN_PLANAR"
            roi["contours"].append(Contour(pts, kind, ref))
    default_frame = frames[0] if len(frames) == 1 else None
    structures = [
        Structure(r["name"], number, r["contours"], r["color"], r["type"], r["frame"] or default_frame)
        for number, r in rois.items()
    ]
    names = [s.name for s in structures]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        warn(f"{name}: several ROIs share the name(s) {', '.join(dups)}; look-up by name returns the "
             "first (all are in StructureSet.structures)", log)
    return StructureSet(
        structures,
        label=_str(ds, "StructureSetLabel"),
        frame_of_reference_uid=default_frame or next((s.frame_of_reference_uid for s in structures if s.frame_of_reference_uid), None),
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        referenced_series_uid=next((s for s in series if s), None),
        path=path,
    )


@guard_decoding
def read_structures(path: str | os.PathLike[str] | Dataset) -> StructureSet:
    """Read an RT Structure Set.

    Parameters
    ----------
    path : path-like or pydicom Dataset
        The RTSTRUCT file (with or without file meta), or a dataset already read.

    Returns
    -------
    StructureSet
        Every ROI of StructureSetROISequence with its name, number, colour
        (ROIDisplayColor, else a deterministic palette colour),
        RTROIInterpretedType and contours, matched by ReferencedROINumber.
        ROIs without contours are kept (``is_empty``).

    Raises
    ------
    DicomReadError
        The file cannot be read or is not an RT Structure Set.
    """
    if isinstance(path, Dataset):
        return structures_from_dataset(path, getattr(path, "filename", None) and Path(path.filename))
    p = Path(path)
    ds = read_object(p, "an RT Structure Set", headers_only=False)
    return structures_from_dataset(ds, p)

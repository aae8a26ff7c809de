"""Writing RT Structure Sets (RT Structure Set Storage, 1.2.840.10008.5.1.4.1.1.481.3).

:func:`build_rtstruct` makes a complete RT Structure Set dataset from ROI
contours in patient coordinates (LPS, mm) that references a CT (or any image
series read by rtkit) the way treatment planning systems do: same patient and
study, a new RTSTRUCT series, the image series and each of its slices in the
Referenced Frame of Reference Sequence, and, for every planar contour, the
image slice on whose plane it lies.  :func:`write_dataset` writes it
atomically.

Modules written (PS3.3 A.19): Patient, General Study, RT Series, Frame of
Reference, General Equipment, Structure Set, ROI Contour, RT ROI
Observations and SOP Common.  Coordinates are written as DS strings of at
most 16 characters with up to 6 decimals (at least 3, i.e. 0.001 mm, are
always kept: a coordinate too large for that is an error).  The file is
Explicit VR Little Endian unless a ContourData value is longer than the
65534 bytes an Explicit VR DS element can hold; then the whole file is
Implicit VR Little Endian (the DICOM default transfer syntax), as treatment
planning systems do, rather than pydicom's fallback of writing it as UN.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from .._atomic import atomic_path
from ..errors import FrameOfReferenceError, GeometryError, warn
from ..image import Image

__all__ = ["build_rtstruct", "write_dataset", "format_ds", "RTSTRUCT_SOP_CLASS_UID"]

log = logging.getLogger("rtkit.io")

#: RT Structure Set Storage.
RTSTRUCT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"
#: Detached Study Management (retired), the SOP class the RT Referenced Study Sequence names.
DETACHED_STUDY_MANAGEMENT_SOP_CLASS_UID = "1.2.840.10008.3.1.2.3.1"

#: ContourGeometricType enumerated values (PS3.3 C.8.8.6.1).
GEOMETRIC_TYPES = ("POINT", "OPEN_PLANAR", "OPEN_NONPLANAR", "CLOSED_PLANAR")

# Longest value an Explicit VR element with a 2-byte length field can hold (even length).
_MAX_EXPLICIT_LENGTH = 0xFFFE
_CONTOUR_DATA = Tag(0x3006, 0x0050)

# A contour is on a slice's plane when all its points are within this distance of it (mm).
_PLANE_TOL_MM = 0.01
_CS_RE = re.compile(r"^[A-Z0-9_ ]{0,16}$")


def format_ds(value: float) -> str:
    """Format a coordinate (mm) as a DICOM DS string of at most 16 characters.

    Up to 6 decimals are written, trailing zeros dropped; fewer decimals are
    used only when needed to fit 16 characters, and never fewer than 3
    (0.001 mm).

    Parameters
    ----------
    value : float

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``value`` is not finite, or needs more than 16 characters at
        0.001 mm precision (possible only when ``abs(value) >= 1e11``).

    Examples
    --------
    >>> format_ds(-125.5), format_ds(1e-7), format_ds(-0.0), format_ds(123456789.1234567)
    ('-125.5', '0', '0', '123456789.123457')
    """
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"cannot write {v} as a DICOM decimal string")
    for decimals in (6, 5, 4, 3):
        s = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
        if s == "-0":
            s = "0"
        if len(s) <= 16:
            return s
    raise ValueError(
        f"coordinate {v!r} mm does not fit a 16-character DICOM decimal string at 0.001 mm precision"
    )


def _format_many(values: NDArray[np.float64]) -> list[str]:
    """:func:`format_ds` of every value (fast path when all have 6 decimals in 16 characters)."""
    if values.size and float(np.max(np.abs(values))) < 1e8:  # '-99999999.999999' is 16 characters
        out = [f"{v:.6f}".rstrip("0").rstrip(".") for v in values.tolist()]
        return ["0" if s == "-0" else s for s in out]
    return [format_ds(v) for v in values.tolist()]


# Longest value each copied attribute's VR allows (PS3.5 table 6.2-1).
_MAX_LEN = {"patient_name": 64, "patient_id": 64, "patient_birth_date": 8, "patient_sex": 16,
            "study_date": 8, "study_time": 16, "referring_physician_name": 64, "study_id": 16,
            "accession_number": 16, "study_description": 64}


def _text(meta: Mapping[str, Any], key: str) -> str:
    """A value copied from the reference image, cut to its VR's maximum length (with a warning)."""
    v = meta.get(key)
    text = "" if v is None else str(v)
    limit = _MAX_LEN.get(key)
    if limit is not None and len(text) > limit:
        warn(f"the reference image's {key} {text!r} is longer than its VR allows ({limit}); "
             f"written cut to {text[:limit]!r}", log)
        text = text[:limit]
    return text


def _charset(values: Iterable[str]) -> str:
    """ISO_IR 100 (Latin-1) when every text fits it, else ISO_IR 192 (UTF-8)."""
    try:
        for v in values:
            v.encode("latin-1")
    except UnicodeEncodeError:
        return "ISO_IR 192"
    return "ISO_IR 100"


def _check_cs(value: str, what: str) -> str:
    if not _CS_RE.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid DICOM code string (A-Z, 0-9, '_' or space, at most 16)"
        )
    return value


def _check_rois(rois: Sequence[Mapping[str, Any]]) -> None:
    seen: set[int] = set()
    for i, roi in enumerate(rois):
        for key in ("number", "name"):
            if key not in roi:
                raise ValueError(f"ROI #{i} has no {key!r}")
        n = roi["number"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < int(n) < 2**31:
            raise ValueError(f"ROI {roi['name']!r}: number must be a positive integer, got {n!r}")
        if int(n) in seen:
            raise ValueError(f"ROI {roi['name']!r}: number {n} is used by another ROI")
        seen.add(int(n))
        name = str(roi["name"])
        if not name or len(name) > 64 or "\\" in name:
            raise ValueError(f"ROI name {name!r} must be 1 to 64 characters without a backslash")
        color = roi.get("color")
        if color is not None:
            c = np.asarray(color)
            if c.shape != (3,) or not np.all(np.isfinite(c)) or np.any((c < 0) | (c > 255)) or np.any(c != np.round(c)):
                raise ValueError(f"ROI {name!r}: color must be 3 integers 0..255, got {color!r}")
        _check_cs(str(roi.get("type") or ""), f"ROI {name!r}: RTROIInterpretedType")


def _contour_points(geometric_type: str, points: ArrayLike, roi: str, i: int) -> NDArray[np.float64]:
    if geometric_type not in GEOMETRIC_TYPES:
        raise ValueError(
            f"ROI {roi!r} contour {i}: geometric type {geometric_type!r} is not one of {GEOMETRIC_TYPES}"
        )
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"ROI {roi!r} contour {i}: points must have shape (N, 3) with N >= 1, got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"ROI {roi!r} contour {i}: points contain NaN or infinity")
    if geometric_type == "POINT" and len(pts) != 1:
        raise ValueError(f"ROI {roi!r} contour {i}: a POINT contour has 1 point, got {len(pts)}")
    return pts


def _slice_of(
    pts: NDArray[np.float64], reference: Image, given: int | None, roi: str, i: int
) -> int | None:
    """The grid slice whose plane holds every point of a contour, or None."""
    grid = reference.grid
    k_frac = grid.world_to_index(pts)[:, 0]
    step_mm = float(grid.spacing[0] * abs(grid.direction[:, 0] @ _normal(reference)))
    if given is not None:
        k = int(given)
        if k != given or not 0 <= k < grid.shape[0]:
            raise GeometryError(
                f"ROI {roi!r} contour {i}: referenced slice index {given!r} is not a slice of "
                f"the reference grid (0..{grid.shape[0] - 1})"
            )
        off = float(np.max(np.abs(k_frac - k))) * step_mm
        if off > _PLANE_TOL_MM:
            raise GeometryError(
                f"ROI {roi!r} contour {i}: points lie up to {off:.3f} mm from the plane of slice {k}; "
                "pass the index of the slice the contour lies on, or None to find it"
            )
        return k
    k = int(np.round(np.mean(k_frac)))
    if 0 <= k < grid.shape[0] and float(np.max(np.abs(k_frac - k))) * step_mm <= _PLANE_TOL_MM:
        return k
    return None


def _normal(reference: Image) -> NDArray[np.float64]:
    d = reference.grid.direction
    n = np.cross(d[:, 2], d[:, 1])  # row cosine x column cosine
    return n / np.linalg.norm(n)


def _now() -> tuple[str, str]:
    t = _dt.datetime.now()
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f")


def _image_ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def patient_and_study(ds: Dataset, meta: Mapping[str, Any], study_uid: str) -> None:
    """Fill the Patient and General Study modules from a reference image's ``meta``."""
    ds.PatientName = _text(meta, "patient_name")
    ds.PatientID = _text(meta, "patient_id")
    ds.PatientBirthDate = _text(meta, "patient_birth_date")
    ds.PatientSex = _text(meta, "patient_sex")
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = _text(meta, "study_date")
    ds.StudyTime = _text(meta, "study_time")
    ds.ReferringPhysicianName = _text(meta, "referring_physician_name")
    ds.StudyID = _text(meta, "study_id")
    ds.AccessionNumber = _text(meta, "accession_number")
    if meta.get("study_description"):
        ds.StudyDescription = _text(meta, "study_description")


def new_instance(sop_class_uid: str, modality: str, meta: Mapping[str, Any], study_uid: str,
                 texts: list[str], series_number: int | None, series_description: str) -> Dataset:
    """A new object in a new series of the reference image's study: file meta (Explicit VR Little
    Endian), SOP Common (character set fitting ``texts`` and the copied names), Patient, General
    Study and the common series attributes (dated now)."""
    date, time = _now()
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    copied = [_text(meta, k) for k in ("patient_name", "patient_id", "study_description", "referring_physician_name")]
    ds.SpecificCharacterSet = _charset(copied + list(texts))
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    patient_and_study(ds, meta, study_uid)
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = None if series_number is None else int(series_number)
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    return ds


def build_rtstruct(
    rois: Sequence[Mapping[str, Any]],
    reference: Image,
    *,
    label: str = "RTKIT",
    name: str | None = None,
    description: str | None = None,
    series_number: int | None = None,
) -> Dataset:
    """Build an RT Structure Set dataset that references an image series.

    Parameters
    ----------
    rois : sequence of mapping
        One mapping per ROI with keys

        - ``"number"`` (int > 0, unique): ROINumber;
        - ``"name"`` (str): ROIName;
        - ``"color"`` ((r, g, b) ints 0..255, optional): ROIDisplayColor;
        - ``"type"`` (str, optional): RTROIInterpretedType, e.g. ``"ORGAN"``,
          ``"PTV"``, ``"EXTERNAL"`` (empty when missing);
        - ``"contours"``: list of ``(geometric_type, points, slice_index)``
          where ``geometric_type`` is one of ``"CLOSED_PLANAR"``,
          ``"OPEN_PLANAR"``, ``"OPEN_NONPLANAR"``, ``"POINT"``; ``points`` is
          an (N, 3) float array of LPS coordinates in mm in the reference's
          frame of reference (closed contours do not repeat the first point);
          ``slice_index`` is the index along ``reference.grid``'s first axis
          of the slice the contour lies on, or None to find it from the
          geometry (a contour on no slice's plane gets no image reference);
        - optional ``"algorithm"`` (ROIGenerationAlgorithm: ``"AUTOMATIC"``,
          ``"SEMIAUTOMATIC"`` or ``"MANUAL"``, default empty) and
          ``"description"`` (ROIDescription).
    reference : Image
        The image series (normally the planning CT, as read by rtkit) the
        structures are drawn on.  Its ``grid.frame_of_reference_uid`` is
        required; ``series_instance_uid`` and ``meta`` (patient and study
        values, ``sop_class_uid`` and ``sop_instance_uids``, the
        SOPInstanceUID of each grid slice) give the references.  Without
        per-slice UIDs (e.g. a resampled image) the image references are
        left out; without a StudyInstanceUID a new study is made (with a
        warning).
    label : str
        StructureSetLabel (at most 16 characters).
    name : str, optional
        StructureSetName.
    description : str, optional
        StructureSetDescription.
    series_number : int, optional
        SeriesNumber of the new RTSTRUCT series (Type 2: empty by default).

    Returns
    -------
    pydicom.Dataset
        With ``file_meta``, new SOPInstanceUID and SeriesInstanceUID
        (:func:`pydicom.uid.generate_uid`), ready for :func:`write_dataset`.
        The transfer syntax is Explicit VR Little Endian, or Implicit VR
        Little Endian when a contour's ContourData exceeds the 65534 bytes an
        Explicit VR DS value can hold (about 2,500 points).  ContourData
        values are stored pre-encoded (pydicom decodes them on access).

    Raises
    ------
    FrameOfReferenceError
        If the reference grid has no FrameOfReferenceUID.
    GeometryError
        If a contour's given slice index is out of range or the contour does
        not lie on that slice's plane (0.01 mm tolerance).
    ValueError
        Invalid ROI numbers, names, colours, types, geometric types or points.
    """
    if not isinstance(reference, Image):
        raise TypeError(f"reference must be an rtkit.Image, got {type(reference).__name__}")
    frame_uid = reference.grid.frame_of_reference_uid
    if not frame_uid:
        raise FrameOfReferenceError(
            "the reference image has no FrameOfReferenceUID; an RT Structure Set needs the frame "
            "of reference of the image its contours are drawn on"
        )
    if not label or len(label) > 16 or "\\" in label:
        raise ValueError(f"StructureSetLabel {label!r} must be 1 to 16 characters without a backslash")
    _check_rois(rois)
    meta = reference.meta
    grid = reference.grid

    study_uid = _text(meta, "study_instance_uid")
    if not study_uid:
        study_uid = generate_uid()
        warn(
            "the reference image has no StudyInstanceUID; the RT Structure Set gets a new study "
            f"{study_uid}",
            log,
        )
    image_class = _text(meta, "sop_class_uid")
    slice_uids: list[str] | None = meta.get("sop_instance_uids")
    if slice_uids is not None and (len(slice_uids) != grid.shape[0] or not all(slice_uids) or not image_class):
        slice_uids = None
    if slice_uids is None or not reference.series_instance_uid:
        slice_uids = None
        warn(
            "the reference image carries no per-slice SOPInstanceUIDs (or no series UID); the RT "
            "Structure Set will not reference its image slices",
            log,
        )

    texts = [str(r["name"]) for r in rois] + [label, name or "", description or ""]
    texts += [str(r.get("description") or "") for r in rois]
    ds = new_instance(RTSTRUCT_SOP_CLASS_UID, "RTSTRUCT", meta, study_uid, texts, series_number,
                      (name or label)[:64])
    date, time = ds.SeriesDate, ds.SeriesTime
    # Frame of Reference
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    from .. import __version__

    ds.Manufacturer = "rtkit"
    ds.SoftwareVersions = __version__
    # Structure Set
    ds.StructureSetLabel = label
    if name:
        ds.StructureSetName = name
    if description:
        ds.StructureSetDescription = description
    ds.InstanceNumber = 1
    ds.StructureSetDate, ds.StructureSetTime = date, time

    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    if slice_uids is not None:
        series = Dataset()
        series.SeriesInstanceUID = reference.series_instance_uid
        series.ContourImageSequence = DicomSequence(
            [_image_ref(image_class, uid) for uid in slice_uids]
        )
        study = Dataset()
        study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT_SOP_CLASS_UID
        study.ReferencedSOPInstanceUID = study_uid
        study.RTReferencedSeriesSequence = DicomSequence([series])
        frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    roi_items, contour_items, observations = [], [], []
    contour_data: list[tuple[Dataset, bytes]] = []
    for obs_number, roi in enumerate(rois, start=1):
        number, roi_name = int(roi["number"]), str(roi["name"])
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = frame_uid
        item.ROIName = roi_name
        if roi.get("description"):
            item.ROIDescription = str(roi["description"])
        item.ROIGenerationAlgorithm = _check_cs(
            str(roi.get("algorithm") or ""), f"ROI {roi_name!r}: ROIGenerationAlgorithm"
        )
        roi_items.append(item)

        rc = Dataset()
        if roi.get("color") is not None:
            rc.ROIDisplayColor = [int(v) for v in roi["color"]]
        seq = []
        for i, contour in enumerate(roi.get("contours") or ()):
            try:
                geometric_type, points, given = contour
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"ROI {roi_name!r} contour {i}: expected (geometric_type, points, slice_index)"
                ) from exc
            pts = _contour_points(str(geometric_type), points, roi_name, i)
            k = _slice_of(pts, reference, given, roi_name, i)
            c = Dataset()
            c.ContourNumber = i + 1
            if k is not None and slice_uids is not None:
                c.ContourImageSequence = DicomSequence([_image_ref(image_class, slice_uids[k])])
            c.ContourGeometricType = str(geometric_type)
            c.NumberOfContourPoints = len(pts)
            data = "\\".join(_format_many(pts.ravel())).encode("ascii")
            if len(data) % 2:
                data += b" "
            seq.append(c)
            contour_data.append((c, data))
        if seq:
            rc.ContourSequence = DicomSequence(seq)
        rc.ReferencedROINumber = number
        contour_items.append(rc)

        obs = Dataset()
        obs.ObservationNumber = obs_number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = str(roi.get("type") or "")
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    # Explicit VR gives DS values a 2-byte length: a longer ContourData needs Implicit VR.
    implicit = any(len(data) > _MAX_EXPLICIT_LENGTH for _, data in contour_data)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        log.info("a ContourData value exceeds %d bytes; writing Implicit VR Little Endian",
                 _MAX_EXPLICIT_LENGTH)
    for item, data in contour_data:
        # The DS strings are already formatted: store them encoded, so pydicom neither
        # re-parses nor re-validates hundreds of thousands of values.  The items hold
        # ASCII only, so marking them as encoded like the output lets pydicom copy the bytes.
        item[_CONTOUR_DATA] = RawDataElement(_CONTOUR_DATA, "DS", len(data), data, 0, implicit, True)
        item.set_original_encoding(implicit, True, default_encoding)
    return ds


def write_dataset(ds: Dataset, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a dataset as a DICOM Part 10 file, atomically.

    The file is written to a temporary name beside ``path`` and renamed onto
    it, so a reader never sees a partial file.

    Parameters
    ----------
    ds : pydicom.Dataset
        With ``file_meta`` (as :func:`build_rtstruct` makes it).
    path : path-like
        The target file; parent folders are created.
    overwrite : bool
        Replace an existing file (default: refuse).

    Returns
    -------
    Path

    Raises
    ------
    RTKitError
        If ``path`` exists and ``overwrite`` is false.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)

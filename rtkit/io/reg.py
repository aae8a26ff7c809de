"""DICOM Spatial Registration objects (REG; PS3.3 A.39, C.20.2): build and read.

A Spatial Registration names a *registration* frame of reference (its own
FrameOfReferenceUID) and, per registered frame, the matrices that map that
frame's patient coordinates into the registration frame.  rtkit writes the
fixed image's frame as the registration frame: item 1 is the fixed frame
with the identity, item 2 the moving frame with ``Registration.matrix``
(moving -> fixed), which is the direction the standard uses.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds

from ..errors import DicomReadError, FrameOfReferenceError, violation, warn
from .rtstruct_write import _image_ref, _text, new_instance

__all__ = ["SPATIAL_REGISTRATION_SOP_CLASS_UID", "build_registration", "registration_from_dataset"]

log = logging.getLogger("rtkit.io")

SPATIAL_REGISTRATION_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_REGISTRATION_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.3"
_MATRIX_TYPES = ("RIGID", "RIGID_SCALE", "AFFINE")


def _ds(value: float) -> str:
    """A DS string of at most 16 characters, with as many digits as fit."""
    v = float(value)
    if v == 0.0:
        return "0"
    return str(format_number_as_ds(v))


def matrix_type(m: NDArray[np.float64], tol: float = 1e-6) -> str:
    """RIGID (rotation), RIGID_SCALE (rotation times a uniform scale) or AFFINE."""
    r = m[:3, :3]
    g = r.T @ r
    s = float(np.mean(np.diag(g)))
    if np.linalg.det(r) > 0 and np.allclose(g, np.eye(3), atol=tol):
        return "RIGID"
    if np.linalg.det(r) > 0 and s > 0 and np.allclose(g / s, np.eye(3), atol=tol):
        return "RIGID_SCALE"
    return "AFFINE"


def _matrix_item(frame_uid: str, m: NDArray[np.float64], images: list[Dataset] | None) -> Dataset:
    item = Dataset()
    if images:
        item.ReferencedImageSequence = DicomSequence(images)
    item.FrameOfReferenceUID = frame_uid
    mat = Dataset()
    mat.FrameOfReferenceTransformationMatrixType = matrix_type(m)
    mat.FrameOfReferenceTransformationMatrix = [_ds(v) for v in m.reshape(-1)]
    reg = Dataset()
    reg.MatrixSequence = DicomSequence([mat])
    reg.RegistrationTypeCodeSequence = DicomSequence([])  # Type 2; no code fits an optimiser's result
    item.MatrixRegistrationSequence = DicomSequence([reg])
    return item


def build_registration(reg: Any, *, label: str = "RTKIT", description: str | None = None,
                       series_number: int | None = None) -> Dataset:
    """A Spatial Registration dataset for a :class:`rtkit.Registration`.

    Parameters
    ----------
    reg : Registration
        With ``fixed`` and ``moving`` frames of reference (as made by
        :func:`rtkit.register`).  Patient and study values come from
        ``reg.meta`` (the fixed image's header values).
    label : str
        ContentLabel (a DICOM CS value: capitals, digits, underscore, space).
    description : str, optional
        ContentDescription.
    series_number : int, optional

    Returns
    -------
    pydicom.Dataset
        With file meta (Explicit VR Little Endian), new SOP Instance and
        Series UIDs, in the fixed image's study.

    Raises
    ------
    FrameOfReferenceError
        Either side has no FrameOfReferenceUID, or both have the same one
        and the matrix is not the identity.
    """
    fixed_uid, moving_uid = reg.fixed.frame_of_reference_uid, reg.moving.frame_of_reference_uid
    if not fixed_uid or not moving_uid:
        side = "fixed" if not fixed_uid else "moving"
        raise FrameOfReferenceError(
            f"cannot write a Spatial Registration: the {side} image has no FrameOfReferenceUID; "
            "register images read from DICOM (or set Registration.fixed/moving)")
    m = np.asarray(reg.matrix, dtype=np.float64)
    if fixed_uid == moving_uid and not np.allclose(m, np.eye(4), atol=1e-9):
        raise FrameOfReferenceError(
            f"both images are in frame of reference {fixed_uid}; a Spatial Registration cannot store a "
            "transform within one frame (it would contradict the shared frame)")
    meta = reg.meta or {}
    study_uid = _text(meta, "study_instance_uid") or reg.fixed.study_instance_uid or ""
    if not study_uid:
        study_uid = generate_uid()
        warn(f"the fixed image has no StudyInstanceUID; the registration gets a new study {study_uid}", log)
    ds = new_instance(SPATIAL_REGISTRATION_SOP_CLASS_UID, "REG", meta, study_uid, [description or ""], series_number,
                      "rtkit registration")
    date, time = ds.SeriesDate, ds.SeriesTime
    ds.Laterality = ""  # Type 2C in General Series: not a paired body part
    # Frame of Reference: the registration frame is the fixed image's
    ds.FrameOfReferenceUID = fixed_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    from .. import __version__

    ds.Manufacturer = "rtkit"
    ds.SoftwareVersions = __version__
    # Spatial Registration (Content Identification)
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceNumber = 1
    ds.ContentLabel = label
    ds.ContentDescription = description or f"{reg.method or 'rigid'} registration, moving frame -> fixed frame"
    ds.ContentCreatorName = ""
    # Registration items, with the image references when the series are known in full
    refs: dict[str, tuple[str, str, list[str]]] = {}  # side -> (study, series, sop uids)
    items = []
    for side, ref, mat in (("fixed", reg.fixed, np.eye(4)), ("moving", reg.moving, m)):
        images = None
        study = ref.study_instance_uid or (study_uid if side == "fixed" else None)
        if ref.series_instance_uid and ref.sop_class_uid and ref.sop_instance_uids and study:
            images = [_image_ref(ref.sop_class_uid, u) for u in ref.sop_instance_uids]
            refs[side] = (study, ref.series_instance_uid, list(ref.sop_instance_uids))
        items.append(_matrix_item(ref.frame_of_reference_uid, mat, images))
    ds.RegistrationSequence = DicomSequence(items)
    # Common Instance Reference
    same, other = [], []
    for side, (study, series, uids) in refs.items():
        ref = reg.fixed if side == "fixed" else reg.moving
        s = Dataset()
        s.SeriesInstanceUID = series
        s.ReferencedInstanceSequence = DicomSequence([_image_ref(ref.sop_class_uid, u) for u in uids])
        (same if study == study_uid else other).append((study, s))
    if same:
        ds.ReferencedSeriesSequence = DicomSequence([s for _, s in same])
    if other:
        studies = []
        for study in dict.fromkeys(st for st, _ in other):
            item = Dataset()
            item.StudyInstanceUID = study
            item.ReferencedSeriesSequence = DicomSequence([s for st, s in other if st == study])
            studies.append(item)
        ds.StudiesContainingOtherReferencedInstancesSequence = DicomSequence(studies)
    return ds


def _item_matrix(item: Dataset, where: str) -> NDArray[np.float64]:
    regs = item.get("MatrixRegistrationSequence") or []
    if len(regs) != 1:
        raise DicomReadError(f"{where}: expected one MatrixRegistrationSequence item, found {len(regs)}")
    mats = regs[0].get("MatrixSequence") or []
    if not mats:
        raise DicomReadError(f"{where}: no MatrixSequence")
    total = np.eye(4)
    for j, mi in enumerate(mats):
        values = mi.get("FrameOfReferenceTransformationMatrix")
        if values is None or len(values) != 16:
            raise DicomReadError(f"{where}, matrix {j + 1}: FrameOfReferenceTransformationMatrix must have 16 "
                                 f"values, found {0 if values is None else len(values)}")
        mat = np.array([float(v) for v in values], dtype=np.float64).reshape(4, 4)
        if not np.all(np.isfinite(mat)) or not np.allclose(mat[3], [0, 0, 0, 1], atol=1e-6):
            raise DicomReadError(f"{where}, matrix {j + 1}: not an affine matrix (last row {mat[3].tolist()})")
        kind = str(mi.get("FrameOfReferenceTransformationMatrixType") or "")
        if kind not in _MATRIX_TYPES:
            violation(f"{where}, matrix {j + 1}: FrameOfReferenceTransformationMatrixType {kind!r} is not one of "
                 f"{_MATRIX_TYPES}; the matrix is used as given", log)
        elif kind == "RIGID" and matrix_type(mat, tol=1e-4) != "RIGID":
            violation(f"{where}, matrix {j + 1}: typed RIGID but not orthonormal (to 1e-4); used as given", log)
        total = mat @ total  # the matrices apply in sequence order
    return total


def registration_from_dataset(ds: Dataset, *, source: str = "the REG object",
                              fixed_frame_of_reference_uid: str | None = None,
                              moving_frame_of_reference_uid: str | None = None) -> Any:
    """A :class:`rtkit.Registration` from a Spatial Registration dataset.

    Parameters
    ----------
    ds : pydicom.Dataset
    source : str
        Named in error messages (the file path).
    fixed_frame_of_reference_uid, moving_frame_of_reference_uid : str, optional
        Which registered frames to link when the object holds more than two;
        by default the fixed frame is the object's own FrameOfReferenceUID
        and the moving frame the other one registered.

    Returns
    -------
    Registration
        ``matrix`` maps the moving frame's patient coordinates to the fixed
        frame's; ``method`` is ``"dicom"``.

    Raises
    ------
    DicomReadError
        Not a (rigid/affine) Spatial Registration, or a non-conformant one:
        missing frames of reference, matrices or the like.
    """
    from ..registration import Registration, SeriesRef

    sop = str(ds.get("SOPClassUID") or "")
    if sop == DEFORMABLE_REGISTRATION_SOP_CLASS_UID:
        raise DicomReadError(f"{source}: a Deformable Spatial Registration; rtkit reads rigid/affine "
                             "Spatial Registrations (SOP class 1.2.840.10008.5.1.4.1.1.66.1) only")
    if sop != SPATIAL_REGISTRATION_SOP_CLASS_UID:
        raise DicomReadError(f"{source}: SOP class {sop or '(none)'} is not Spatial Registration "
                             f"({SPATIAL_REGISTRATION_SOP_CLASS_UID})")
    top = str(ds.get("FrameOfReferenceUID") or "")
    items = ds.get("RegistrationSequence") or []
    if not top:
        raise DicomReadError(
            f"{source}: non-conformant Spatial Registration: no FrameOfReferenceUID (Type 1), so the frame "
            "its matrices map into is unknown; re-export it from the registering software")
    if not items:
        raise DicomReadError(f"{source}: non-conformant Spatial Registration: empty RegistrationSequence")
    to_top: dict[str, NDArray[np.float64]] = {top: np.eye(4)}
    for i, item in enumerate(items, start=1):
        where = f"{source}, RegistrationSequence item {i}"
        uid = str(item.get("FrameOfReferenceUID") or "")
        if not uid:
            raise DicomReadError(f"{where}: no FrameOfReferenceUID; rtkit cannot tell which frame the "
                                 "matrix registers (non-conformant when no images are referenced either)")
        mat = _item_matrix(item, where)
        if uid == top and not np.allclose(mat, np.eye(4), atol=1e-6):
            violation(f"{where}: the registration's own frame {uid} has a non-identity matrix; used as given", log)
        to_top[uid] = mat
    fixed = fixed_frame_of_reference_uid or top
    others = [u for u in to_top if u != fixed]
    if moving_frame_of_reference_uid:
        moving = moving_frame_of_reference_uid
    elif len(others) == 1:
        moving = others[0]
    else:
        raise DicomReadError(f"{source}: registers frames {list(to_top)}; pass fixed_frame_of_reference_uid "
                             "and moving_frame_of_reference_uid to choose two")
    for name, uid in (("fixed", fixed), ("moving", moving)):
        if uid not in to_top:
            raise FrameOfReferenceError(f"{source}: the {name} frame {uid} is not among the registered frames "
                                        f"{list(to_top)}")
    matrix = np.linalg.inv(to_top[fixed]) @ to_top[moving]
    meta = {"patient_id": str(ds.get("PatientID") or "") or None,
            "patient_name": str(ds.get("PatientName") or "") or None,
            "study_instance_uid": str(ds.get("StudyInstanceUID") or "") or None,
            "sop_instance_uid": str(ds.get("SOPInstanceUID") or "") or None,
            "content_label": str(ds.get("ContentLabel") or "") or None}
    return Registration(matrix, fixed=SeriesRef(fixed), moving=SeriesRef(moving), method="dicom", meta=meta)

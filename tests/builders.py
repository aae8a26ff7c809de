"""Synthetic DICOM writers for tests, written with pydicom only (never rtkit).

Every writer returns a :class:`SeriesTruth` that records, for each slice
written, the exact header values as stored in the file (the decimal strings
parsed back to floats) and the stored pixel values.  Tests compute the
expected world position of every pixel from these with the DICOM image-plane
formula (PS3.3 C.7.6.2.1.1)::

    P(r, c) = ImagePositionPatient + r * PixelSpacing[0] * column_cosine
                                   + c * PixelSpacing[1] * row_cosine

where ``row_cosine`` is the first triplet of ImageOrientationPatient (the
direction of increasing column index ``c``) and ``column_cosine`` the second
(increasing row index ``r``).  :meth:`SliceTruth.world` implements it here,
independently of :mod:`rtkit.geometry`.

The default pixel values encode each slice's identity (see
:func:`default_values`) so a test can tell which file ended up in which grid
slice, and which pixel at which (row, column).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

__all__ = [
    "ORIENTATIONS",
    "SOP_CLASSES",
    "ENHANCED_CT_SOP",
    "MPEG2_MPML",
    "SliceTruth",
    "SeriesTruth",
    "default_values",
    "write_image_series",
    "write_multiframe_enhanced_ct",
    "write_unsupported_syntax_file",
    "write_non_dicom",
    "truncate",
    "file_hashes",
    "unchanged",
    "pixel_data_offset",
]

# --------------------------------------------------------------------------- constants
SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
}
ENHANCED_CT_SOP = "1.2.840.10008.5.1.4.1.1.2.1"
MPEG2_MPML = "1.2.840.10008.1.2.4.100"

_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def _rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _oblique() -> tuple[float, ...]:
    # HFS axes rotated 20 deg about x, then 10 deg about y: a proper rotation.
    rot = _rot_y(10.0) @ _rot_x(20.0)
    row, col = rot @ np.array([1.0, 0.0, 0.0]), rot @ np.array([0.0, 1.0, 0.0])
    return tuple(float(v) for v in (*row, *col))


#: ImageOrientationPatient (row cosine, column cosine) per patient position.
ORIENTATIONS: dict[str, tuple[float, ...]] = {
    "HFS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "FFS": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "HFP": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "FFP": (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "HFDL": (0.0, -1.0, 0.0, 1.0, 0.0, 0.0),
    "HFDR": (0.0, 1.0, 0.0, -1.0, 0.0, 0.0),
    "FFDL": (0.0, -1.0, 0.0, -1.0, 0.0, 0.0),
    "FFDR": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
    "OBLIQUE": _oblique(),
}

_NAME_EXTENSIONS = ("", "", ".dcm", ".DCM", ".ima", ".txt", ".1", ".bin")


# --------------------------------------------------------------------------- truth records
@dataclass
class SliceTruth:
    """What was written for one 2-D frame.

    Attributes
    ----------
    path : Path
        The file holding the frame.
    frame : int
        Frame index inside the file (0 for single-frame files).
    k : int
        The frame's index in the generated stack (the order of ``positions``),
        NOT necessarily its place in rtkit's grid.
    sop_instance_uid : str
    position, orientation, pixel_spacing : ndarray
        ImagePositionPatient, ImageOrientationPatient and PixelSpacing exactly
        as stored (the DS strings parsed as floats).
    stored : ndarray of int16, shape (rows, columns)
        Stored pixel values.
    slope, intercept : float
        RescaleSlope / RescaleIntercept as stored (1, 0 when absent).
    """

    path: Path
    frame: int
    k: int
    sop_instance_uid: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    stored: np.ndarray
    slope: float
    intercept: float

    @property
    def values(self) -> np.ndarray:
        """Rescaled values (float64): ``stored * slope + intercept``."""
        return self.stored.astype(np.float64) * self.slope + self.intercept

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, row cosine x column cosine."""
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)

    def world(self) -> np.ndarray:
        """World position (mm, LPS) of every pixel, shape (rows, columns, 3).

        The DICOM formula ``IPP + r * PixelSpacing[0] * colcos + c *
        PixelSpacing[1] * rowcos``, written out here independently of rtkit.
        """
        rows, cols = self.stored.shape
        row_cos = self.orientation[:3]
        col_cos = self.orientation[3:]
        r = np.arange(rows, dtype=np.float64)[:, None, None]
        c = np.arange(cols, dtype=np.float64)[None, :, None]
        return (
            self.position[None, None, :]
            + r * self.pixel_spacing[0] * col_cos[None, None, :]
            + c * self.pixel_spacing[1] * row_cos[None, None, :]
        )


@dataclass
class SeriesTruth:
    """Everything a writer wrote, for independent checks."""

    folder: Path
    modality: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    patient_id: str
    rows: int
    columns: int
    slices: list[SliceTruth] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """Distinct files written, in writing order."""
        seen: dict[Path, None] = {}
        for s in self.slices:
            seen.setdefault(s.path, None)
        return list(seen)

    @property
    def sop_instance_uids(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.slices:
            seen.setdefault(s.sop_instance_uid, None)
        return list(seen)

    @property
    def positions(self) -> np.ndarray:
        """(n, 3) ImagePositionPatient of every frame, in stack order ``k``."""
        return np.array([s.position for s in sorted(self.slices, key=lambda s: s.k)])

    def by_k(self) -> list[SliceTruth]:
        return sorted(self.slices, key=lambda s: s.k)


# --------------------------------------------------------------------------- helpers
def default_values(k: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Stored values that identify slice ``k`` and pixel ``(r, c)``.

    ``1000 * (k % 30) + 32 * (r % 30) + (c % 32)``: unique for up to 30
    slices, 30 rows and 32 columns, always within int16.
    """
    return 1000 * (k % 30) + 32 * (r % 30) + (c % 32)


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for ``value``."""
    s = format_number_as_ds(float(value))
    assert len(s) <= 16, s
    return s


def _ds_list(values: Sequence[float]) -> list[str]:
    return [_ds(v) for v in values]


def _floats(strings: Sequence[str]) -> np.ndarray:
    return np.array([float(s) for s in strings], dtype=np.float64)


def _file_name(rng: np.random.Generator, used: set[str], random_names: bool, k: int, prefix: str) -> str:
    if not random_names:
        name = f"{prefix}{k:04d}.dcm"
    else:
        while True:
            name = "".join(rng.choice(list("0123456789abcdef"), 12)) + str(
                rng.choice(_NAME_EXTENSIONS)
            )
            if name not in used:
                break
    used.add(name)
    return name


def _scrambled_instance_numbers(n: int, rng: np.random.Generator, shuffle: bool) -> list[int]:
    """InstanceNumbers 1..n; when shuffling, a permutation matching neither order."""
    if not shuffle or n < 3:
        return list(range(1, n + 1)) if not shuffle else list(range(n, 0, -1))
    while True:
        perm = rng.permutation(n)
        if not (np.array_equal(perm, np.arange(n)) or np.array_equal(perm, np.arange(n)[::-1])):
            return [int(p) + 1 for p in perm]


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _common_header(
    ds: Dataset,
    *,
    modality: str,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    series_description: str,
    series_number: int,
) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "rtkit synthetic study"
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "rtkit-tests"


def _pixel_module(ds: Dataset, rows: int, cols: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1


def _set_pixels(ds: Dataset, frames: np.ndarray, transfer_syntax: str) -> None:
    """Store ``frames`` (int16) in ``ds`` with ``transfer_syntax``."""
    ds.PixelData = np.ascontiguousarray(frames.astype("<i2")).tobytes()
    ds["PixelData"].VR = "OW"
    if transfer_syntax not in _UNCOMPRESSED:
        # pydicom encodes it (JPEG 2000 needs rows and columns >= 32).
        # lossless re-encoding of the same image: keep the SOP Instance UID
        ds.compress(transfer_syntax, generate_instance_uid=False)


def _save(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def _stored_array(
    values: Callable[..., np.ndarray] | np.ndarray | None, n: int, rows: int, cols: int
) -> np.ndarray:
    if values is None:
        values = default_values
    if callable(values):
        k, r, c = np.indices((n, rows, cols))
        arr = np.asarray(values(k, r, c))
        arr = np.broadcast_to(arr, (n, rows, cols))
    else:
        arr = np.asarray(values)
        if arr.shape != (n, rows, cols):
            raise ValueError(f"values has shape {arr.shape}, expected {(n, rows, cols)}")
    if arr.min() < -32768 or arr.max() > 32767:
        raise ValueError("stored values must fit in int16")
    return arr.astype(np.int16)


def _positions(
    n: int,
    orientation: Sequence[float],
    origin: Sequence[float],
    slice_step: float | Sequence[float],
) -> np.ndarray:
    iop = np.asarray(orientation, dtype=np.float64)
    step = np.asarray(slice_step, dtype=np.float64)
    if step.ndim == 0:
        normal = np.cross(iop[:3], iop[3:])
        step = normal / np.linalg.norm(normal) * float(step)
    return np.asarray(origin, dtype=np.float64)[None, :] + np.arange(n)[:, None] * step[None, :]


# --------------------------------------------------------------------------- writers
def write_image_series(
    folder: str | os.PathLike[str],
    *,
    shape: tuple[int, int, int] = (6, 10, 12),
    pixel_spacing: tuple[float, float] = (0.8, 1.2),
    orientation: Sequence[float] = ORIENTATIONS["HFS"],
    origin: Sequence[float] = (-100.25, -80.5, 40.0),
    slice_step: float | Sequence[float] = 2.5,
    modality: str = "CT",
    patient_id: str = "RTKIT-TEST-001",
    patient_name: str = "Test^Patient",
    frame_of_reference_uid: str | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    values: Callable[..., np.ndarray] | np.ndarray | None = None,
    rescale: tuple[float, float] | None = (1, -1024),
    per_slice_rescale: Sequence[tuple[float, float]] | Callable[[int], tuple[float, float]] | None = None,
    shuffle: bool = True,
    random_names: bool = True,
    rng: int | np.random.Generator | None = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    patient_position: str = "HFS",
    positions: Sequence[Sequence[float]] | None = None,
    skip_slices: Sequence[int] = (),
    slice_thickness: float | None = None,
    series_description: str | None = None,
    series_number: int = 1,
    name_prefix: str = "IM",
) -> SeriesTruth:
    """Write a single-frame image series and return what was written.

    Parameters
    ----------
    folder : path-like
        Created if needed; files are added to it.
    shape : (slices, rows, columns)
        ``slices`` is ignored when ``positions`` is given.
    pixel_spacing : (row spacing, column spacing) in mm
    orientation : 6 floats
        ImageOrientationPatient.
    origin : 3 floats
        ImagePositionPatient of generated slice 0.
    slice_step : float or 3 floats
        Step from slice k to k + 1: a signed distance along the normal
        (row cosine x column cosine) or a full vector (gantry tilt).
    values : callable (k, r, c) -> int array, or ndarray (slices, rows, columns)
        Stored values (int16); default :func:`default_values`.
    rescale : (slope, intercept) or None
        Written to every slice (None: no rescale attributes).
    per_slice_rescale : sequence of (slope, intercept) or callable k -> (slope, intercept)
        Overrides ``rescale`` per generated slice.
    shuffle : bool
        Write the files in random order with InstanceNumbers matching neither
        the geometric order nor its reverse.
    random_names : bool
        Random hex names with random (or no) extensions.
    rng : int or Generator
    transfer_syntax : UID
        Uncompressed syntaxes are written directly; others are encoded with
        ``Dataset.compress`` (needs an encoder).
    positions : list of 3 floats, optional
        Explicit ImagePositionPatient per slice (gaps, duplicates, uneven pitch).
    skip_slices : indices of generated slices not to write.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if modality not in SOP_CLASSES:
        raise ValueError(f"unsupported modality {modality}")
    _, rows, cols = shape
    if positions is None:
        pos = _positions(shape[0], orientation, origin, slice_step)
    else:
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    stored = _stored_array(values, n, rows, cols)
    step_len = float(np.linalg.norm(pos[1] - pos[0])) if n > 1 else abs(float(np.linalg.norm(slice_step)))
    thickness = slice_thickness if slice_thickness is not None else (step_len or 1.0)

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    truth = SeriesTruth(folder, modality, study_uid, series_uid, frame_uid, patient_id, rows, cols)

    iop_s = _ds_list(orientation)
    ps_s = _ds_list(pixel_spacing)
    iop = _floats(iop_s)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)

    ks = [k for k in range(n) if k not in set(skip_slices)]
    numbers = dict(zip(ks, _scrambled_instance_numbers(len(ks), gen, shuffle), strict=True))
    order = list(gen.permutation(ks)) if shuffle else ks
    used: set[str] = {p.name for p in folder.iterdir()}
    for k in order:
        k = int(k)
        sop_uid = generate_uid()
        sop_class = SOP_CLASSES[modality]
        ds = Dataset()
        # compressed syntaxes: written uncompressed first, then Dataset.compress sets the UID
        initial = transfer_syntax if transfer_syntax in _UNCOMPRESSED else ExplicitVRLittleEndian
        ds.file_meta = _file_meta(sop_class, sop_uid, initial)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        _common_header(
            ds,
            modality=modality,
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            series_uid=series_uid,
            frame_uid=frame_uid,
            series_description=series_description or f"synthetic {modality}",
            series_number=series_number,
        )
        ds.InstanceNumber = numbers[k]
        ds.AcquisitionNumber = 1
        ds.PatientPosition = patient_position
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ipp_s = _ds_list(pos[k])
        ds.ImagePositionPatient = ipp_s
        ds.ImageOrientationPatient = iop_s
        ds.PixelSpacing = ps_s
        ds.SliceThickness = _ds(thickness)
        ds.SliceLocation = _ds(float(_floats(ipp_s) @ normal))
        _pixel_module(ds, rows, cols)
        if per_slice_rescale is not None:
            sr = per_slice_rescale(k) if callable(per_slice_rescale) else per_slice_rescale[k]
        else:
            sr = rescale
        slope = intercept = None
        if sr is not None:
            ds.RescaleSlope = _ds(sr[0])
            ds.RescaleIntercept = _ds(sr[1])
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        if modality == "CT":
            ds.KVP = "120"
            if sr is not None:
                ds.RescaleType = "HU"
        elif modality == "MR":
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = "10"
            ds.RepetitionTime = "500"
            ds.EchoTrainLength = 1
        elif modality == "PT":
            ds.Units = "BQML"
            ds.DecayCorrection = "START"
            ds.CorrectedImage = ["ATTN", "DECY"]
            ds.SeriesType = ["STATIC", "IMAGE"]
            ds.ImageIndex = numbers[k]
            ds.NumberOfSlices = len(ks)
        _set_pixels(ds, stored[k], transfer_syntax)
        path = folder / _file_name(gen, used, random_names, k, name_prefix)
        _save(ds, path)
        truth.slices.append(
            SliceTruth(
                path=path,
                frame=0,
                k=k,
                sop_instance_uid=sop_uid,
                position=_floats(ipp_s),
                orientation=iop,
                pixel_spacing=_floats(ps_s),
                stored=stored[k].copy(),
                slope=1.0 if slope is None else slope,
                intercept=0.0 if intercept is None else intercept,
            )
        )
    return truth


def write_multiframe_enhanced_ct(
    folder: str | os.PathLike[str],
    *,
    shape: tuple[int, int, int] = (6, 10, 12),
    pixel_spacing: tuple[float, float] = (0.8, 1.2),
    orientation: Sequence[float] = ORIENTATIONS["HFS"],
    origin: Sequence[float] = (-100.25, -80.5, 40.0),
    slice_step: float | Sequence[float] = 2.5,
    patient_id: str = "RTKIT-TEST-001",
    patient_name: str = "Test^Patient",
    frame_of_reference_uid: str | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    values: Callable[..., np.ndarray] | np.ndarray | None = None,
    rescale: tuple[float, float] = (1, -1024),
    shuffle: bool = True,
    rng: int | np.random.Generator | None = 0,
    file_name: str | None = None,
) -> SeriesTruth:
    """Write one Enhanced CT Image (multi-frame) file, frames in shuffled order.

    Geometry sits in functional groups: PixelMeasuresSequence,
    PlaneOrientationSequence and PixelValueTransformationSequence are shared;
    PlanePositionSequence is per frame.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n, rows, cols = shape
    pos = _positions(n, orientation, origin, slice_step)
    stored = _stored_array(values, n, rows, cols)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    truth = SeriesTruth(folder, "CT", study_uid, series_uid, frame_uid, patient_id, rows, cols)

    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(ENHANCED_CT_SOP, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = ENHANCED_CT_SOP
    ds.SOPInstanceUID = sop_uid
    _common_header(
        ds,
        modality="CT",
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_uid=frame_uid,
        series_description="synthetic enhanced CT",
        series_number=1,
    )
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.ContentDate = "20240102"
    ds.ContentTime = "101500"
    ds.AcquisitionNumber = 1
    ds.PatientPosition = "HFS"
    ds.NumberOfFrames = n
    _pixel_module(ds, rows, cols)

    iop_s = _ds_list(orientation)
    ps_s = _ds_list(pixel_spacing)
    step_len = float(np.linalg.norm(pos[1] - pos[0])) if n > 1 else abs(float(np.linalg.norm(slice_step)))

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = ps_s
    measures.SliceThickness = _ds(step_len or 1.0)
    shared.PixelMeasuresSequence = DicomSequence([measures])
    plane_ori = Dataset()
    plane_ori.ImageOrientationPatient = iop_s
    shared.PlaneOrientationSequence = DicomSequence([plane_ori])
    pvt = Dataset()
    pvt.RescaleIntercept = _ds(rescale[1])
    pvt.RescaleSlope = _ds(rescale[0])
    pvt.RescaleType = "HU"
    shared.PixelValueTransformationSequence = DicomSequence([pvt])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    order = [int(k) for k in (gen.permutation(n) if shuffle else range(n))]
    path = folder / (file_name or "enhanced_ct")
    per_frame = []
    for f, k in enumerate(order):
        item = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, k + 1]
        item.FrameContentSequence = DicomSequence([content])
        plane_pos = Dataset()
        ipp_s = _ds_list(pos[k])
        plane_pos.ImagePositionPatient = ipp_s
        item.PlanePositionSequence = DicomSequence([plane_pos])
        per_frame.append(item)
        truth.slices.append(
            SliceTruth(
                path=path,
                frame=f,
                k=k,
                sop_instance_uid=sop_uid,
                position=_floats(ipp_s),
                orientation=_floats(iop_s),
                pixel_spacing=_floats(ps_s),
                stored=stored[k].copy(),
                slope=float(pvt.RescaleSlope),
                intercept=float(pvt.RescaleIntercept),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    _set_pixels(ds, stored[order], ExplicitVRLittleEndian)
    _save(ds, path)
    return truth


def write_unsupported_syntax_file(
    folder: str | os.PathLike[str],
    *,
    transfer_syntax: str = MPEG2_MPML,
    rows: int = 8,
    cols: int = 8,
    name: str = "mpeg2_slice",
) -> Path:
    """One CT slice whose pixel data are encapsulated garbage in ``transfer_syntax``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sop_uid = generate_uid()
    sop_class = SOP_CLASSES["CT"]
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid, transfer_syntax)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    _common_header(
        ds,
        modality="CT",
        patient_id="RTKIT-TEST-MPEG",
        patient_name="Test^Mpeg",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        frame_uid=generate_uid(),
        series_description="unsupported syntax",
        series_number=1,
    )
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["0", "0", "0"]
    ds.ImageOrientationPatient = _ds_list(ORIENTATIONS["HFS"])
    ds.PixelSpacing = ["1", "1"]
    ds.SliceThickness = "2"
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    _pixel_module(ds, rows, cols)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3 not really mpeg2 " * 4])
    ds["PixelData"].VR = "OB"
    path = folder / name
    _save(ds, path)
    return path


def write_non_dicom(folder: str | os.PathLike[str], name: str = "notes.txt") -> Path:
    """A plain-text file (with a misleading extension if you like)."""
    path = Path(folder) / name
    path.write_text("This is not a DICOM file.\nIt only lives next to some.\n" * 20)
    return path


def pixel_data_offset(path: str | os.PathLike[str]) -> int:
    """Byte offset of the (7FE0,0010) Pixel Data tag in a little-endian file."""
    data = Path(path).read_bytes()
    off = data.rfind(b"\xe0\x7f\x10\x00")
    if off < 0:
        raise ValueError(f"{path}: no Pixel Data tag")
    return off


def truncate(path: str | os.PathLike[str], size: int) -> Path:
    """Cut the file at ``path`` to its first ``size`` bytes."""
    p = Path(path)
    data = p.read_bytes()
    if size >= len(data):
        raise ValueError(f"{p} has only {len(data)} bytes")
    p.write_bytes(data[:size])
    return p


def file_hashes(folder: str | os.PathLike[str]) -> dict[Path, str]:
    """SHA-256 of every file under ``folder`` (recursively), for 'never modified' checks."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            out[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@contextmanager
def unchanged(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Assert that no file under ``folder`` is modified, added or removed by the block."""
    before = file_hashes(folder)
    yield
    after = file_hashes(folder)
    assert after == before, f"input files under {folder} were modified, added or removed"


# --------------------------------------------------------------------------- RT Structure Sets
RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"  # RT Structure Set Storage


@dataclass
class RoiTruth:
    """One ROI as written: contours are ContourData exactly as stored (DS parsed back)."""

    number: int
    name: str
    contours: list[np.ndarray]
    geometric_types: list[str]
    color: tuple[int, int, int] | None
    type: str | None
    in_contour_sequence: bool


@dataclass
class StructureSetTruth:
    path: Path
    sop_instance_uid: str
    frame_of_reference_uid: str
    rois: dict[int, RoiTruth]

    def by_name(self, name: str) -> RoiTruth:
        return next(r for r in self.rois.values() if r.name == name)


def write_rtstruct(
    path: str | os.PathLike[str],
    rois: Sequence[dict],
    frame_of_reference_uid: str,
    *,
    referenced_series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "RTKIT-TEST-001",
    patient_name: str = "Test^Patient",
    modality: str = "RTSTRUCT",
    file_meta: bool = True,
    shuffle_contour_sequence: bool = False,
    rng: int | np.random.Generator | None = 0,
    label: str = "synthetic",
) -> StructureSetTruth:
    """Write an RT Structure Set with pydicom from contour point arrays.

    Parameters
    ----------
    rois : sequence of dict
        One per ROI, in StructureSetROISequence order, with keys

        * ``name`` (str), ``number`` (int);
        * ``contours``: list of ``(N, 3)`` arrays (CLOSED_PLANAR) or of
          ``(array, geometric_type)`` pairs; ``None`` lists the ROI in
          StructureSetROISequence only (no ROIContourSequence item); ``[]``
          writes an item without ContourSequence;
        * ``color`` (optional RGB; absent or None: no ROIDisplayColor);
        * ``type`` (optional RTROIInterpretedType, default ``"ORGAN"``;
          None writes an empty value);
        * ``frame_of_reference_uid`` (optional per-ROI override).
    frame_of_reference_uid : str
        ReferencedFrameOfReferenceSequence and every ROI's frame.
    modality : str
        The Modality tag (the SOP Class is always RT Structure Set), e.g.
        ``"RTDOSE"`` to imitate a wrong header.
    file_meta : bool
        False writes the bare dataset (implicit VR little endian, no preamble,
        no file meta).
    shuffle_contour_sequence : bool
        Write ROIContourSequence in an order different from
        StructureSetROISequence (reversed, then rotated if that is the same).

    Returns
    -------
    StructureSetTruth
        The stored ContourData of every ROI, parsed back to floats.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    sop_uid = generate_uid()
    ds = Dataset()
    if file_meta:
        ds.file_meta = _file_meta(RTSTRUCT_SOP, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = RTSTRUCT_SOP
    ds.SOPInstanceUID = sop_uid
    _common_header(
        ds,
        modality=modality,
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid or generate_uid(),
        series_uid=generate_uid(),
        frame_uid=frame_of_reference_uid,
        series_description="synthetic RTSTRUCT",
        series_number=100,
    )
    del ds.FrameOfReferenceUID  # not part of the RT Structure Set IOD
    del ds.PositionReferenceIndicator
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label
    ds.StructureSetDate = "20240102"
    ds.StructureSetTime = "101500"

    ref_series = Dataset()
    ref_series.SeriesInstanceUID = referenced_series_uid or generate_uid()
    ref_series.ContourImageSequence = DicomSequence([])
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref_study.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    ref_study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = frame_of_reference_uid
    ref_frame.RTReferencedStudySequence = DicomSequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref_frame])

    truth = StructureSetTruth(path, sop_uid, frame_of_reference_uid, {})
    ss_items, rc_items, obs_items = [], [], []
    for i, roi in enumerate(rois):
        number = int(roi["number"])
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = roi.get("frame_of_reference_uid", frame_of_reference_uid)
        item.ROIName = roi["name"]
        item.ROIGenerationAlgorithm = "MANUAL"
        ss_items.append(item)

        obs = Dataset()
        obs.ObservationNumber = i + 1
        obs.ReferencedROINumber = number
        rtype = roi.get("type", "ORGAN")
        obs.RTROIInterpretedType = rtype or ""
        obs.ROIInterpreter = ""
        obs_items.append(obs)

        color = roi.get("color")
        contours = roi.get("contours")
        stored: list[np.ndarray] = []
        kinds: list[str] = []
        if contours is not None:
            rc = Dataset()
            if color is not None:
                rc.ROIDisplayColor = [int(v) for v in color]
            seq = []
            for c in contours:
                pts, kind = (c if isinstance(c, tuple) else (c, "CLOSED_PLANAR"))
                pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
                ci = Dataset()
                ci.ContourGeometricType = kind
                ci.NumberOfContourPoints = len(pts)
                values = _ds_list(pts.ravel())
                ci.ContourData = values
                seq.append(ci)
                stored.append(_floats(values).reshape(-1, 3))
                kinds.append(kind)
            if contours:
                rc.ContourSequence = DicomSequence(seq)
            rc.ReferencedROINumber = number
            rc_items.append(rc)
        truth.rois[number] = RoiTruth(
            number, roi["name"], stored, kinds,
            # ROIDisplayColor lives in ROIContourSequence: not written without an item there
            tuple(int(v) for v in color) if color is not None and contours is not None else None,
            rtype, contours is not None,
        )
    if shuffle_contour_sequence and len(rc_items) > 1:
        order = list(range(len(rc_items)))[::-1]
        perm = gen.permutation(len(rc_items))
        if not np.array_equal(perm, np.arange(len(rc_items))):
            order = [int(p) for p in perm]
        rc_items = [rc_items[k] for k in order]
    ds.StructureSetROISequence = DicomSequence(ss_items)
    ds.ROIContourSequence = DicomSequence(rc_items)
    ds.RTROIObservationsSequence = DicomSequence(obs_items)
    if file_meta:
        _save(ds, path)
    else:
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return truth


# ---------------------------------------------------------------------- RT Dose
RTDOSE_SOP = "1.2.840.10008.5.1.4.1.1.481.2"


def write_rtdose(
    path: str | os.PathLike[str],
    dose_gy: np.ndarray,
    *,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    pixel_spacing: Sequence[float] = (2.0, 2.0),
    frame_step: float = 2.5,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    absolute_offsets: bool = False,
    bits: int = 32,
    summation_type: str = "PLAN",
    units: str = "GY",
    plan_uid: str | None = None,
    beam_numbers: Sequence[int] = (),
    frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.77",
    patient_id: str = "DOSE",
    scaling: float | None = None,
    shuffle_frames: bool = False,
) -> dict:
    """Write an RT Dose of ``dose_gy`` (frames, rows, cols) and return its truth.

    Frame k lies ``k * frame_step`` mm along the normal from ``origin`` (negative
    steps allowed). GridFrameOffsetVector is written relative (first value 0) or
    absolute (first value = origin . normal). The returned dict holds
    ``world(k, r, c)`` (the DICOM formula) and ``stored * scaling`` in Gy.
    """
    dose_gy = np.asarray(dose_gy, dtype=np.float64)
    n, rows, cols = dose_gy.shape
    iop = np.asarray(orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    maxval = (1 << bits) - 1
    scaling = scaling or max(float(dose_gy.max()), 1e-6) / (maxval * 0.9)
    stored = np.round(dose_gy / scaling).astype(np.uint32 if bits == 32 else np.uint16)
    offsets = np.arange(n) * frame_step
    if absolute_offsets:
        offsets = offsets + float(np.asarray(origin, float) @ normal)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = RTDOSE_SOP
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTDOSE_SOP, sop, "RTDOSE"
    ds.PatientID, ds.PatientName = patient_id, "Dose^Test"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.78"
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.ImagePositionPatient = [float(v) for v in origin]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.GridFrameOffsetVector = [float(v) for v in offsets]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = units, "PHYSICAL", summation_type
    ds.DoseGridScaling = f"{scaling:.10g}"
    scaling = float(ds.DoseGridScaling)
    if plan_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
        ref.ReferencedSOPInstanceUID = plan_uid
        if beam_numbers:
            fg = Dataset()
            fg.ReferencedFractionGroupNumber = 1
            items = []
            for b in beam_numbers:
                item = Dataset()
                item.ReferencedBeamNumber = int(b)
                items.append(item)
            fg.ReferencedBeamSequence = items
            ref.ReferencedFractionGroupSequence = [fg]
        ds.ReferencedRTPlanSequence = [ref]
    ds.PixelData = stored.tobytes()
    _save(ds, Path(path))
    p0 = np.asarray(origin, float)
    ps = np.asarray(pixel_spacing, float)

    def world(k, r, c):
        return p0 + np.multiply.outer(k * frame_step, normal) + np.multiply.outer(r * ps[0], iop[3:]) + np.multiply.outer(c * ps[1], iop[:3])

    return {"path": Path(path), "gy": stored.astype(np.float64) * scaling, "scaling": scaling,
            "world": world, "sop_instance_uid": sop, "normal": normal}

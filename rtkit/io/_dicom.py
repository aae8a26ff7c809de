"""Low-level DICOM file access: sniffing, reading, and header records.

Everything that touches pydicom for reading goes through here, so that
error handling (a clear :class:`~rtkit.DicomReadError` naming the file) and
leniency rules live in one place.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, wraps
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..errors import DicomReadError, GeometryError, RTKitError, RTKitWarning, violation

log = logging.getLogger("rtkit.io")

# --------------------------------------------------------------------- SOP classes
_SOP_MODALITY = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",
    "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "CT",
    "1.2.840.10008.5.1.4.1.1.4": "MR",
    "1.2.840.10008.5.1.4.1.1.4.1": "MR",
    "1.2.840.10008.5.1.4.1.1.4.4": "MR",
    "1.2.840.10008.5.1.4.1.1.128": "PT",
    "1.2.840.10008.5.1.4.1.1.128.1": "PT",
    "1.2.840.10008.5.1.4.1.1.130": "PT",
    "1.2.840.10008.5.1.4.1.1.20": "NM",
    "1.2.840.10008.5.1.4.1.1.481.1": "RTIMAGE",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.4": "RTRECORD",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.66.1": "REG",
    "1.2.840.10008.5.1.4.1.1.66.3": "REG",
}
ION_PLAN_SOP = "1.2.840.10008.5.1.4.1.1.481.8"
DICOMDIR_SOP = "1.2.840.10008.1.3.10"

_HEADER_KEYWORDS = (
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "SliceThickness", "SpacingBetweenSlices", "Units", "DoseUnits", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
    "GridFrameOffsetVector", "PatientBirthDate", "PatientSex", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "Manufacturer",
)
_PIXEL_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "RTDOSE", "RTIMAGE"})
_HEADER_TAGS = tuple(int(tag_for_keyword(k)) for k in _HEADER_KEYWORDS)
#: Also kept for PET (modality PT) instances: what :func:`rtkit.suv` needs.
_PET_KEYWORDS = (
    "RadiopharmaceuticalInformationSequence", "DecayCorrection", "CorrectedImage", "DecayFactor",
    "FrameReferenceTime", "PatientWeight", "PatientSize", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "SUVType",
)
_PET_TAGS = _HEADER_TAGS + tuple(int(tag_for_keyword(k)) for k in _PET_KEYWORDS)
#: Modalities assembled into volumes.
IMAGE_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
#: Modalities handled as RT objects and linked to a planning CT.
RT_MODALITIES = frozenset({"RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "RTIMAGE", "RTRECORD"})


@contextmanager
def quiet_pydicom(what: object, messages: list[str] | None = None) -> Iterator[None]:
    """Turn pydicom's value-validation warnings into DEBUG log lines naming ``what``.

    When ``messages`` is given, pydicom's warning texts are appended to it.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, RTKitWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            log.debug("%s: pydicom: %s", what, w.message)
            if messages is not None:
                messages.append(str(w.message))


#: pydicom's warnings that mean the transfer syntax does not match how the data set is encoded.
_ENCODING_MISMATCH = ("Expected implicit VR, but found explicit VR",
                      "Expected explicit VR, but found implicit VR")


def _report_encoding(p: Path, ds: Dataset, messages: list[str]) -> None:
    """A transfer syntax that pydicom had to correct is a standard violation."""
    for m in messages:
        if m.startswith(_ENCODING_MISMATCH):
            ts = getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID")
            violation(
                f"{p}: the TransferSyntaxUID ({ts or 'missing'}) does not match how the data set is "
                f"encoded (pydicom: {m.rstrip('.')})",
                log,
                repair="read with the encoding found in the file",
            )
            return


class NotDicomError(Exception):
    """Internal: the file does not look like DICOM at all."""


def from_pydicom(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside pydicom (value conversion of a corrupt element, ...)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    name = last.tb_frame.f_globals.get("__name__", "")
    return name == "pydicom" or name.startswith("pydicom.") or type(exc).__module__.startswith("pydicom")


@contextmanager
def corrupt_data(what: object) -> Iterator[None]:
    """Turn an exception pydicom raises while converting a corrupt element into a DicomReadError.

    pydicom converts raw element values lazily, so a damaged element (an
    unknown VR, a length that is not a multiple of the value size, ...) can
    fail wherever rtkit first touches it; readers wrap their work in this.
    Exceptions not raised inside pydicom propagate unchanged.
    """
    try:
        yield
    except (NotDicomError, DicomReadError):
        raise
    except Exception as exc:
        if isinstance(exc, RTKitError) or not from_pydicom(exc):
            raise
        raise DicomReadError(
            f"{what}: a data element cannot be decoded ({type(exc).__name__}: {exc}). The file is "
            "corrupt or non-conformant; re-export it from the source system."
        ) from exc


_F = TypeVar("_F", bound=Callable[..., Any])


def guard_decoding(func: _F) -> _F:
    """Decorator: run a reader under :func:`corrupt_data`, naming its first argument.

    Used on the public readers and on lazy pixel loaders, so that an element
    pydicom cannot decode surfaces as a :class:`~rtkit.DicomReadError` that
    names the file (or folder) the caller passed.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        what = args[0] if args else next(iter(kwargs.values()), "the input")
        if isinstance(what, Dataset):
            what = getattr(what, "filename", None) or "the data set"
        elif isinstance(what, (list, tuple)):
            what = f"{what[0]} (and {len(what) - 1} more)" if len(what) > 1 else (what[0] if what else "the input")
        with corrupt_data(what):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _looks_like_dicom(head: bytes) -> bool | None:
    """True: DICM preamble; None: no preamble but a plausible first tag; False: not DICOM."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    if group_le in (0x0002, 0x0008) or group_be == 0x0008:
        return None
    return False


def open_dataset(
    path: str | os.PathLike[str], *, headers_only: bool, specific_tags: list[Any] | None = None
) -> Dataset:
    """Read one DICOM file, with or without a preamble.

    Parameters
    ----------
    path : path-like
    headers_only : bool
        Stop before the pixel data.
    specific_tags : list, optional
        Passed to :func:`pydicom.dcmread`.

    Raises
    ------
    NotDicomError
        The file is not DICOM (no preamble and no plausible first tag).
    DicomReadError
        The file looks like DICOM but cannot be parsed.
    """
    p = Path(path)
    messages: list[str] = []
    try:
        with open(p, "rb") as fp:
            head = fp.read(132)
            kind = _looks_like_dicom(head)
            if kind is False:
                if 0 < len(head) < 132 and not head.strip(b"\x00"):
                    raise DicomReadError(
                        f"{p}: {len(head)} zero bytes only: a DICOM file cut inside its 128-byte "
                        "preamble (truncated). Re-export it from the source system."
                    )
                raise NotDicomError(str(p))
            fp.seek(0)
            # force=True: the sniffing above already decided this is DICOM (and pydicom's
            # own preamble check is slower than ours).  pydicom's complaints become DEBUG lines;
            # the ones that mean a standard violation rtkit cares about are reported below.
            with quiet_pydicom(p, messages):
                ds = pydicom.dcmread(
                    fp, stop_before_pixels=headers_only, force=True, specific_tags=specific_tags
                )
            at_end = fp.tell() >= os.fstat(fp.fileno()).st_size
    except (NotDicomError, DicomReadError):
        raise
    except Exception as exc:
        if not (isinstance(exc, (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError,
                                 AttributeError, IndexError, OverflowError, NotImplementedError))
                or from_pydicom(exc)):
            raise
        raise DicomReadError(
            f"{p}: cannot be read as DICOM ({type(exc).__name__}: {exc}). "
            "The file may be truncated or corrupt; re-export it from the source system."
        ) from exc
    has_pixels = any(_has(ds, k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_pixels and at_end and specific_tags is None and (
        _SOP_MODALITY.get(str(ds.get("SOPClassUID", ""))) in _PIXEL_MODALITIES or "Rows" in ds
    ):
        # pydicom stops silently at the end of a file; an image without pixel data is cut short.
        raise DicomReadError(
            f"{p}: the file ends before its pixel data ({p.stat().st_size} bytes): it is "
            "truncated. Re-export it from the source system."
        )
    if not any(_has(ds, k) for k in ("SOPClassUID", "SOPInstanceUID", "Modality")):
        if kind is None:
            raise NotDicomError(str(p))
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        raise DicomReadError(
            f"{p}: holds no DICOM object (no SOPClassUID, SOPInstanceUID or Modality after the "
            f"file meta, transfer syntax {ts or 'missing'}). The file is probably truncated, or its "
            "TransferSyntaxUID does not match how the data set is encoded; re-export it."
        )
    if kind is None or messages:
        _report_encoding(p, ds, messages)
    return ds


def truncation_problems(ds: Dataset, path: str | os.PathLike[str] | None = None) -> list[str]:
    """Signs that a fully read file was cut short (empty list: none found).

    pydicom reads a defined-length value with one ``read(length)`` and keeps
    whatever the file still holds, and stops silently at a partial element
    header, so a file cut inside an element parses without an error.  Two
    checks: top-level elements whose declared length exceeds the bytes read,
    and bytes after the last complete element (``path`` needed).
    """
    out = []
    last_end = None
    for elem in getattr(ds, "_dict", {}).values():
        if type(elem) is not RawDataElement:
            continue
        if elem.length in (None, _UNDEFINED_LENGTH):
            last_end = None
            continue
        got = 0 if elem.value is None else len(elem.value)
        if got < elem.length:
            kw = keyword_for_tag(elem.tag) or str(elem.tag)
            out.append(f"{kw} declares {elem.length} bytes, only {got} are present")
        if elem.value_tell is not None:
            last_end = elem.value_tell + elem.length
    if not out and path is not None and last_end is not None:
        try:
            size = Path(path).stat().st_size
        except OSError:
            return out
        if 0 < size - last_end < 12:
            out.append(f"the file ends inside a data element header ({size - last_end} stray byte(s) "
                       "after the last complete element)")
    if not out and path is not None:
        unclosed = _unclosed_containers(ds, path)
        if unclosed:
            out.append(unclosed)
    return out


_LITTLE_ENDIAN = {"1.2.840.10008.1.2": False, "1.2.840.10008.1.2.1": True}  # UID -> explicit VR
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def _unclosed_containers(ds: Dataset, path: str | os.PathLike[str]) -> str | None:
    """Whether the file ends inside a sequence or item (a cut at an element boundary).

    pydicom ends an undefined-length sequence or item silently at the end of
    the file, so a file cut between two elements inside a sequence parses as
    a complete, shorter data set.  This walks the element structure of the
    data set (little endian transfer syntaxes; others are not checked) and
    reports containers left open at the end of the file, or defined-length
    ones that extend past it.
    """
    meta = getattr(ds, "file_meta", None)
    explicit = _LITTLE_ENDIAN.get(str(getattr(meta, "TransferSyntaxUID", "") or "")) if meta is not None else None
    if explicit is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    import struct

    pos = 132 if data[128:132] == b"DICM" else 0
    # skip the file meta group (always explicit VR little endian)
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    size = len(data)
    stack: list[int] = []  # end offset of each open container; -1: undefined length
    while pos < size:
        while stack and stack[-1] == pos:  # defined-length containers ending here
            stack.pop()
        if pos + 8 > size:
            return f"the file ends inside a data element header at byte {pos}"
        group, elem = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | elem
        if tag in (_ITEM, _ITEM_END, _SEQ_END):
            length = struct.unpack_from("<I", data, pos + 4)[0]
            pos += 8
            if tag == _ITEM:
                stack.append(-1 if length == _UNDEFINED_LENGTH else pos + length)
            elif stack and stack[-1] == -1:
                stack.pop()
            continue
        if explicit:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > size:
                    return f"the file ends inside a data element header at byte {pos}"
                length, head = struct.unpack_from("<I", data, pos + 8)[0], 12
            else:
                length, head = struct.unpack_from("<H", data, pos + 6)[0], 8
            is_sq = vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED_LENGTH)
        else:
            length, head = struct.unpack_from("<I", data, pos + 4)[0], 8
            is_sq = length == _UNDEFINED_LENGTH or dictionary_vr_or_none(tag) == "SQ"
        pos += head
        if is_sq:
            stack.append(-1 if length == _UNDEFINED_LENGTH else pos + length)
        elif length == _UNDEFINED_LENGTH:  # encapsulated pixel data: items up to a delimiter
            stack.append(-1)
        else:
            pos += length
            if pos > size:
                return f"{keyword_for_tag(tag) or hex(tag)} at byte {pos - length - head} runs past the end of the file"
    while stack and stack[-1] == size:
        stack.pop()
    if stack:
        return f"the file ends inside {len(stack)} open sequence(s) or item(s)"
    return None


def dictionary_vr_or_none(tag: int) -> str | None:
    """The data dictionary VR of ``tag``, or None for private/unknown tags."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


_UNDEFINED_LENGTH = 0xFFFFFFFF


def read_object(path: str | os.PathLike[str], what: str, *, headers_only: bool) -> Dataset:
    """Read one DICOM file that must be DICOM (``what`` names the expected object for messages).

    Raises
    ------
    DicomReadError
        The file is not DICOM, or cannot be parsed.
    """
    p = Path(path)
    if not p.is_file():
        raise DicomReadError(f"{p}: no such file")
    try:
        return open_dataset(p, headers_only=headers_only)
    except NotDicomError as exc:
        raise DicomReadError(f"{p}: not a DICOM file; expected {what}") from exc


# --------------------------------------------------------------------- records
# Header values are read straight from pydicom's raw (not yet converted) elements
# where they are plain ASCII text or a binary US; that avoids pydicom's per-value
# conversion and validation, which costs more than parsing the file itself.
# Anything unusual (other character sets, other VRs) goes through pydicom.
_TEXT_VRS = frozenset({"UI", "CS", "DS", "IS", "DA", "TM", "SH", "LO", "PN", "ST", "LT"})


@cache
def _tag_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - programming error
        raise KeyError(keyword)
    return tag, dictionary_VR(tag)


def _raw(ds: Dataset | dict, keyword: str) -> str | int | None | object:
    """The value as text (or int for US), or ``_SLOW`` when pydicom must convert it.

    ``ds`` is a Dataset or a plain ``{tag: element}`` dict (see :class:`Instance`).
    """
    tag, vr = _tag_vr(keyword)
    elem = (ds if isinstance(ds, dict) else getattr(ds, "_dict", {})).get(tag)
    if elem is None:
        return None
    if type(elem) is not RawDataElement:
        return _SLOW
    value = elem.value
    if value is None or value == b"":
        return None
    evr = elem.VR or vr
    if evr in _TEXT_VRS:
        try:
            return value.decode("ascii").strip(" \x00")
        except (UnicodeDecodeError, AttributeError):
            return _SLOW
    if evr == "US" and len(value) == 2:
        return int.from_bytes(value, "little" if elem.is_little_endian else "big")
    return _SLOW


_SLOW = object()


def _get(ds: Dataset | dict, keyword: str) -> object:
    """pydicom's converted value (the slow path), for a Dataset or a raw-element dict.

    pydicom's warnings about non-conformant values become DEBUG log lines.
    """
    with quiet_pydicom(keyword):
        if isinstance(ds, dict):
            elem = ds.get(_tag_vr(keyword)[0])
            if elem is None:
                return None
            tmp = Dataset()
            tmp[elem.tag] = elem
            return tmp.get(keyword)
        return ds.get(keyword)


def _str(ds: Dataset | dict, keyword: str) -> str | None:
    v = _raw(ds, keyword)
    if type(v) is str:  # fast path: already decoded and stripped
        return v or None
    if v is _SLOW:
        v = _get(ds, keyword)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _floats(ds: Dataset | dict, keyword: str, n: int) -> tuple[float, ...] | None:
    v = _raw(ds, keyword)
    if v is _SLOW:
        v = _get(ds, keyword)
    if v is None or v == "":
        return None
    try:
        if isinstance(v, str):
            vals = tuple(float(x) for x in v.split("\\"))
        elif isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
            vals = tuple(float(x) for x in v)
        else:
            vals = (float(v),)
    except (TypeError, ValueError):
        return None
    if len(vals) != n or not all(np.isfinite(vals)):
        return None
    return vals


def _float(ds: Dataset | dict, keyword: str) -> float | None:
    v = _floats(ds, keyword, 1)
    return None if v is None else v[0]


def _has(ds: Dataset | dict, keyword: str) -> bool:
    """Whether ``ds`` holds ``keyword`` (a dict lookup, no pydicom conversion)."""
    d = ds if isinstance(ds, dict) else getattr(ds, "_dict", None)
    return _tag_vr(keyword)[0] in d if d is not None else keyword in ds


def _seq(ds: Dataset | dict, keyword: str) -> list[Dataset]:
    if not _has(ds, keyword):
        return []
    v = _get(ds, keyword)
    return list(v) if v else []


@dataclass(frozen=True)
class FrameGeometry:
    """Geometry of one 2-D frame: position (mm, LPS), orientation, spacing."""

    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0


@dataclass
class Instance:
    """Header facts of one DICOM file (one SOP instance), read by :func:`rtkit.scan`.

    Attributes hold the raw DICOM values rtkit needs for indexing, linking and
    building a grid; the file's pixel data are not read.
    """

    path: Path
    sop_class_uid: str | None
    sop_instance_uid: str | None
    modality: str
    modality_tag: str | None
    patient_id: str | None
    patient_name: str | None
    study_instance_uid: str | None
    study_description: str | None
    study_date: str | None
    series_instance_uid: str | None
    series_description: str | None
    series_number: int | None
    frame_of_reference_uid: str | None
    instance_number: int | None = None
    acquisition_number: int | None = None
    transfer_syntax_uid: str | None = None
    label: str | None = None
    referenced_frames: set[str] = field(default_factory=set)
    referenced_series: set[str] = field(default_factory=set)
    referenced_instances: set[str] = field(default_factory=set)
    dose_summation_type: str | None = None
    #: Raw pixel-module and geometry elements ({tag: element}), parsed on demand.
    header: dict = field(default_factory=dict, repr=False)
    _frames: list[FrameGeometry] | None = field(default=None, repr=False)

    @property
    def rows(self) -> int | None:
        return _int(self.header, "Rows")

    @property
    def columns(self) -> int | None:
        return _int(self.header, "Columns")

    @property
    def number_of_frames(self) -> int:
        return _int(self.header, "NumberOfFrames") or 1

    @property
    def samples_per_pixel(self) -> int:
        return _int(self.header, "SamplesPerPixel") or 1

    @property
    def bits_stored(self) -> int | None:
        return _int(self.header, "BitsStored")

    @property
    def slice_thickness(self) -> float | None:
        return _float(self.header, "SliceThickness")

    @property
    def spacing_between_slices(self) -> float | None:
        return _float(self.header, "SpacingBetweenSlices")

    @property
    def units(self) -> str | None:
        return _str(self.header, "Units") or _str(self.header, "DoseUnits")

    def text(self, keyword: str) -> str | None:
        """A kept header value as text (one of the pixel-module, geometry or patient/study
        keywords read by :func:`make_instance`), or None."""
        return _str(self.header, keyword)

    @property
    def frames(self) -> list[FrameGeometry]:
        """Geometry of each frame (position, orientation, spacing, rescale)."""
        if self._frames is None:
            n = self.number_of_frames
            try:
                size = Path(self.path).stat().st_size
            except OSError:
                size = None
            # every frame needs at least 8 bytes (an encapsulated item header): a larger count is
            # corrupt, and a list of that many geometries would exhaust memory
            if size is not None and n > max(1, size // 8):
                raise GeometryError(  # as the later frame-count checks
                    f"{self.path}: NumberOfFrames is {n}, more frames than the file's {size} bytes can "
                    "hold; the header is corrupt. Re-export the object."
                )
            self._frames = _frame_geometries(self.header)
        return self._frames

    @property
    def is_image(self) -> bool:
        return self.modality in IMAGE_MODALITIES


def _int(ds: Dataset | dict, keyword: str) -> int | None:
    v = _raw(ds, keyword)
    if v is _SLOW:
        v = _get(ds, keyword)
    try:
        return None if v in (None, "") else int(v)
    except (TypeError, ValueError):
        try:
            return int(float(v))  # IS written as "3.0" by some writers
        except (TypeError, ValueError, OverflowError):  # "inf", "nan": not an integer
            return None


def _rescale(item: Dataset | dict) -> tuple[float, float]:
    """(slope, intercept); absent values default to (1, 0), present but invalid ones are NaN."""
    out = []
    for kw, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        v = _float(item, kw)
        if v is None:
            v = float("nan") if _raw(item, kw) is not None else default
        out.append(v)
    return out[0], out[1]


def _frame_geometries(ds: Dataset | dict) -> list[FrameGeometry]:
    """Per-frame geometry for single-frame, enhanced multi-frame and offset-vector images."""
    nframes = _int(ds, "NumberOfFrames") or 1
    shared = _seq(ds, "SharedFunctionalGroupsSequence")
    per_frame = _seq(ds, "PerFrameFunctionalGroupsSequence")
    if per_frame:
        sh = shared[0] if shared else Dataset()

        def pick(fg: Dataset, seq: str) -> Dataset | None:
            for src in (fg, sh):
                items = _seq(src, seq)
                if items:
                    return items[0]
            return None

        out = []
        for fg in per_frame:
            pos = pick(fg, "PlanePositionSequence")
            ori = pick(fg, "PlaneOrientationSequence")
            mea = pick(fg, "PixelMeasuresSequence")
            pvt = pick(fg, "PixelValueTransformationSequence")
            slope, intercept = _rescale(pvt) if pvt is not None else _rescale(ds)
            out.append(
                FrameGeometry(
                    _floats(pos, "ImagePositionPatient", 3) if pos is not None else None,
                    _floats(ori, "ImageOrientationPatient", 6) if ori is not None else None,
                    _floats(mea, "PixelSpacing", 2) if mea is not None else None,
                    slope,
                    intercept,
                )
            )
        return out
    pos = _floats(ds, "ImagePositionPatient", 3)
    ori = _floats(ds, "ImageOrientationPatient", 6)
    spacing = _floats(ds, "PixelSpacing", 2)
    slope, intercept = _rescale(ds)
    if nframes == 1:
        return [FrameGeometry(pos, ori, spacing, slope, intercept)]
    offsets = _floats(ds, "GridFrameOffsetVector", nframes)
    if offsets is not None and pos is not None and ori is not None:
        # Relative (first value 0) or absolute (first value = position along the normal):
        # in both forms frame k lies (o_k - o_0) mm along the normal from the first frame.
        o = np.asarray([float(x) for x in offsets])
        normal = np.cross(ori[:3], ori[3:])
        p0 = np.asarray(pos)
        return [
            FrameGeometry(tuple(p0 + (ok - o[0]) * normal), ori, spacing, slope, intercept)
            for ok in o
        ]
    return [FrameGeometry(None, ori, spacing, slope, intercept) for _ in range(nframes)]


def _references(ds: Dataset, modality: str) -> tuple[set[str], set[str], set[str]]:
    frames: set[str] = set()
    series: set[str] = set()
    instances: set[str] = set()

    def add(target: set[str], item: Dataset, keyword: str) -> None:
        v = _str(item, keyword)
        if v:
            target.add(v)

    if modality == "RTSTRUCT":
        for rf in _seq(ds, "ReferencedFrameOfReferenceSequence"):
            add(frames, rf, "FrameOfReferenceUID")
            for st in _seq(rf, "RTReferencedStudySequence"):
                for se in _seq(st, "RTReferencedSeriesSequence"):
                    add(series, se, "SeriesInstanceUID")
    elif modality in ("RTPLAN", "RTDOSE", "RTRECORD"):
        for kw in ("ReferencedStructureSetSequence", "ReferencedRTPlanSequence",
                   "ReferencedDoseSequence"):
            for item in _seq(ds, kw):
                add(instances, item, "ReferencedSOPInstanceUID")
    elif modality == "REG":
        for item in _seq(ds, "RegistrationSequence"):
            add(frames, item, "FrameOfReferenceUID")
        for item in _seq(ds, "DeformableRegistrationSequence"):
            add(frames, item, "SourceFrameOfReferenceUID")
        for item in _seq(ds, "ReferencedSeriesSequence"):
            add(series, item, "SeriesInstanceUID")
        for st in _seq(ds, "StudiesContainingOtherReferencedInstancesSequence"):
            for item in _seq(st, "ReferencedSeriesSequence"):
                add(series, item, "SeriesInstanceUID")
    return frames, series, instances


def sop_class_uid(ds: Dataset) -> str | None:
    """SOPClassUID as text (fast path, no pydicom conversion)."""
    return _str(ds, "SOPClassUID")


def resolve_modality(ds: Dataset) -> tuple[str, str | None]:
    """Modality from the SOP Class (authoritative), falling back on the Modality tag."""
    tag = _str(ds, "Modality")
    sop = _str(ds, "SOPClassUID")
    from_sop = _SOP_MODALITY.get(sop or "")
    return (from_sop or (tag or "OT").upper()), tag


def make_instance(ds: Dataset, path: Path) -> Instance:
    """Build an :class:`Instance` record from a (header-only) dataset."""
    modality, tag = resolve_modality(ds)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    frames, series, instances = _references(ds, modality)
    is_rt = modality in RT_MODALITIES
    inst = Instance(
        path=path,
        sop_class_uid=_str(ds, "SOPClassUID"),
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        modality=modality,
        modality_tag=tag,
        patient_id=_str(ds, "PatientID"),
        patient_name=_str(ds, "PatientName"),
        study_instance_uid=_str(ds, "StudyInstanceUID"),
        study_description=_str(ds, "StudyDescription"),
        study_date=_str(ds, "StudyDate"),
        series_instance_uid=_str(ds, "SeriesInstanceUID"),
        series_description=_str(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"),
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        instance_number=_int(ds, "InstanceNumber"),
        acquisition_number=_int(ds, "AcquisitionNumber"),
        transfer_syntax_uid=str(ts) if ts else None,
        referenced_frames=frames,
        referenced_series=series,
        referenced_instances=instances,
        label=(_str(ds, "StructureSetLabel") or _str(ds, "RTPlanLabel")) if is_rt else None,
        dose_summation_type=_str(ds, "DoseSummationType") if modality == "RTDOSE" else None,
    )
    if modality in _PIXEL_MODALITIES:
        d = getattr(ds, "_dict", None)
        if d is None:  # pragma: no cover - not a pydicom Dataset
            d = {e.tag: e for e in ds}
        tags = _PET_TAGS if modality == "PT" else _HEADER_TAGS
        inst.header = {t: d[t] for t in tags if t in d}
        if _has(ds, "PerFrameFunctionalGroupsSequence"):
            inst._frames = _frame_geometries(ds)  # enhanced multi-frame: parse the sequences now
    return inst


def _missing_transfer_syntax(ds: Dataset, path: Path) -> None:
    """File meta without TransferSyntaxUID: infer it from how pydicom read the data set (lenient)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID"):
        return
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = getattr(ds, "original_encoding", (None, None))
    elem = ds.get("PixelData")
    raw = getattr(elem, "value", None)
    if implicit is None or little is None or (isinstance(raw, bytes) and raw[:4] == b"\xfe\xff\x00\xe0"):
        raise DicomReadError(
            f"{path}: the file meta has no TransferSyntaxUID (Type 1) and the pixel data are "
            "encapsulated (compressed): rtkit cannot tell which codec they need. Re-export the file."
        )
    ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    violation(f"{path}: the file meta has no TransferSyntaxUID (Type 1)", log,
              repair=f"the pixel data are read as {ts.name}, the encoding of the data set")
    meta.TransferSyntaxUID = ts  # on the in-memory copy only; the file is never written


def decode_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Decoded stored pixel values, shape (frames, rows, columns).

    Raises
    ------
    DicomReadError
        Missing or short pixel data, or a compressed transfer syntax without
        an installed decoder (the message names the ``codecs`` extra).
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomReadError(f"{path}: no pixel data. The file holds only a header.")
    _missing_transfer_syntax(ds, path)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    said: list[str] = []
    try:
        with quiet_pydicom(path, said):
            arr = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        name = getattr(ts, "name", None) or str(ts)
        if ts is not None and not getattr(ts, "is_transfer_syntax", False):
            raise DicomReadError(
                f"{path}: TransferSyntaxUID {ts} is not a DICOM transfer syntax; the pixel data "
                "cannot be decoded. The file is non-conformant; re-export it."
            ) from exc
        raise DicomReadError(
            f"{path}: pixel data use the transfer syntax '{name}' ({ts}), which no installed "
            "decoder handles. Install the decoders with  pip install 'rtkit[codecs]'  "
            f"(pylibjpeg + openjpeg/libjpeg plugins). Decoder said: {exc}"
        ) from exc
    except (ValueError, AttributeError, KeyError, TypeError, EOFError, IndexError, OverflowError,
            MemoryError) as exc:
        hint = f" pydicom also said: {'; '.join(said)}." if said else ""
        raise DicomReadError(
            f"{path}: pixel data cannot be decoded with transfer syntax "
            f"'{getattr(ts, 'name', None) or ts}' ({type(exc).__name__}: {exc}).{hint} "
            "The file may be truncated, or its pixel-module attributes or transfer syntax may be "
            "wrong; re-export it."
        ) from exc
    nframes = _int(ds, "NumberOfFrames") or 1
    spp = _int(ds, "SamplesPerPixel") or 1
    if spp != 1:
        raise DicomReadError(
            f"{path}: SamplesPerPixel is {spp} (colour); rtkit volumes hold one value per voxel."
        )
    if arr.ndim < 2 or arr.size != nframes * arr.shape[-2] * arr.shape[-1]:
        raise DicomReadError(
            f"{path}: the decoded pixel data have shape {arr.shape}, which does not match "
            f"NumberOfFrames {nframes}; the header is inconsistent. Re-export the file."
        )
    return arr.reshape(nframes, arr.shape[-2], arr.shape[-1])


def expected_pixel_bytes(inst: Instance) -> int | None:
    """Bytes of native (uncompressed) pixel data the header announces, or None if unknown."""
    rows, cols = inst.rows, inst.columns
    bits = _int(inst.header, "BitsAllocated") or inst.bits_stored
    if not rows or not cols or not bits:
        return None
    return inst.number_of_frames * rows * cols * inst.samples_per_pixel * max(1, bits // 8)

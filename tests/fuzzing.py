"""Fuzz targets and hypothesis strategies shared by tests/test_fuzz.py and
benchmarks/fuzz_readers.py.

Each target starts from a small valid object written with pydicom (a 3-slice
CT, an RT Structure Set with two ROIs, a 3 x 4 x 5 RT Dose, the synthetic
RT Plan), applies a list of mutations drawn by hypothesis, writes the result to
a file and reads it with rtkit in lenient or strict mode, using the result the
way a caller would (pixels, volumes, masks, DVH-relevant values).

The contract under test: the only exceptions that escape are
:class:`rtkit.RTKitError`; a result that is returned is usable (arrays of the
grid's shape, finite non-negative volumes, masks of the grid's shape).
"""

from __future__ import annotations

import functools
import io
import math
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

import rtkit

__all__ = ["TARGETS", "mutations", "run_case", "Outcome"]

# ------------------------------------------------------------------ base objects (bytes)
_FRAME = "1.2.826.0.1.3680043.8.498.5151"


@functools.cache
def _base_files() -> dict[str, list[bytes]]:
    from badinput import write_ct, write_rd

    root = Path(tempfile.mkdtemp(prefix="rtkit-fuzz-base-"))
    write_ct(root / "ct")
    ct = [p.read_bytes() for p in sorted((root / "ct").iterdir())]
    t = np.linspace(0, 2 * np.pi, 13)[:-1]
    circle = np.c_[12 * np.cos(t), 9 * np.sin(t)]
    rois = [
        [np.c_[circle, np.full(len(t), z)] for z in (0.0, 2.5, 5.0)],
        [np.array([[-5, -5, z], [5, -5, z], [5, 5, z], [-5, 5, z]], float) for z in (2.5, 5.0)],
    ]
    from builders import write_rtstruct

    write_rtstruct(root / "rs.dcm", [{"name": f"R{i}", "number": i + 1, "contours": c} for i, c in enumerate(rois)],
                   "1.2.826.0.1.3680043.8.498.4242")
    write_rd(root / "rd.dcm")
    from _cases import _synthetic_source

    return {
        "ct": ct,
        "rtstruct": [(root / "rs.dcm").read_bytes()],
        "rtdose": [(root / "rd.dcm").read_bytes()],
        "rtplan": [(_synthetic_source() / "RP.dcm").read_bytes()],
    }


# ------------------------------------------------------------------ mutations
#: Header keywords worth breaking, per target (top level of the data set).
_KEYWORDS = {
    "ct": ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
           "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
           "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "NumberOfFrames",
           "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "FrameOfReferenceUID",
           "SliceThickness", "PixelData"],
    "rtstruct": ["SOPClassUID", "Modality", "StructureSetROISequence", "ROIContourSequence",
                 "RTROIObservationsSequence", "ReferencedFrameOfReferenceSequence", "SOPInstanceUID"],
    "rtdose": ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
               "BitsAllocated", "BitsStored", "PixelRepresentation", "NumberOfFrames",
               "GridFrameOffsetVector", "DoseGridScaling", "DoseUnits", "DoseType", "DoseSummationType",
               "FrameOfReferenceUID", "Modality", "SOPClassUID", "PixelData", "ReferencedRTPlanSequence"],
    "rtplan": ["SOPClassUID", "Modality", "BeamSequence", "FractionGroupSequence", "DoseReferenceSequence",
               "ReferencedStructureSetSequence", "RTPlanLabel", "PatientSetupSequence"],
}
#: Keywords inside items: (sequence path, keyword).
_NESTED = {
    "rtstruct": [("StructureSetROISequence", "ROINumber"), ("StructureSetROISequence", "ROIName"),
                 ("StructureSetROISequence", "ReferencedFrameOfReferenceUID"),
                 ("ROIContourSequence", "ReferencedROINumber"), ("ROIContourSequence", "ROIDisplayColor"),
                 ("ROIContourSequence", "ContourSequence"),
                 ("RTROIObservationsSequence", "RTROIInterpretedType"),
                 ("ReferencedFrameOfReferenceSequence", "FrameOfReferenceUID")],
    "rtplan": [("BeamSequence", "BeamNumber"), ("BeamSequence", "NumberOfControlPoints"),
               ("BeamSequence", "ControlPointSequence"), ("BeamSequence", "BeamType"),
               ("BeamSequence", "BeamLimitingDeviceSequence"), ("BeamSequence", "RadiationType"),
               ("FractionGroupSequence", "NumberOfFractionsPlanned"),
               ("FractionGroupSequence", "ReferencedBeamSequence"), ("FractionGroupSequence", "NumberOfBeams"),
               ("DoseReferenceSequence", "TargetPrescriptionDose")],
    "rtdose": [("ReferencedRTPlanSequence", "ReferencedSOPInstanceUID")],
    "ct": [],
}
#: Nasty values, written as raw text whatever the element's VR.
_VALUES = ["", "0", "-1", "1", "nan", "inf", "-inf", "1e308", "-1e308", "1e-320", "65536", "4294967296",
           "abc", "1\\2", "1\\2\\3", "0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "3.5", " ", "\\", "1.2.3",
           "X" * 70, "-0", "1e3\\1e3\\1e3"]


@dataclass(frozen=True)
class Outcome:
    """What one case did: ``"ok"`` (a usable result) or ``"error"`` (an RTKitError), and the class name."""

    status: str
    detail: str


def _raw_element(tag: int, vr: str, text: str) -> DataElement:
    elem = DataElement(tag, "LO", "0")
    elem.VR = vr if vr not in ("SQ", "OB", "OW", "OF", "OD", "UN", "US", "SS", "UL", "SL", "FL", "FD", "AT") else "LO"
    elem._value = text
    return elem


def _apply_header(ds: Dataset, op: tuple) -> None:
    kind, where, keyword, value = op
    items = [ds]
    if where:
        items = [it for it in ds.get(where, [])] or [ds]
    item = items[0] if len(items) == 1 else items[value[1] % len(items)] if isinstance(value, tuple) else items[0]
    text = value[0] if isinstance(value, tuple) else value
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if tag is None:
        return
    if kind == "delete":
        if keyword in item:
            del item[keyword]
    elif kind == "empty-seq":
        if keyword in item and item[keyword].VR == "SQ":
            item[keyword].value = []
    else:
        vr = pydicom.datadict.dictionary_VR(tag)
        item[tag] = _raw_element(tag, vr, text)


def _contour_items(ds: Dataset) -> list[Dataset]:
    return [c for rc in ds.get("ROIContourSequence", []) for c in rc.get("ContourSequence", [])]


_SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, 1e300, -1e300, 1e-300, 5e-324, 1e6, -1e6]


def _apply_contour(ds: Dataset, op: tuple) -> None:
    _, k, action, a, b = op
    items = _contour_items(ds)
    if not items:
        return
    item = items[k % len(items)]
    if "ContourData" not in item:
        return
    try:
        pts = np.asarray([float(v) for v in item.ContourData], dtype=np.float64)
    except (TypeError, ValueError):
        return
    if pts.size % 3:
        pts = pts[: pts.size - pts.size % 3]
    pts = pts.reshape(-1, 3)
    n = len(pts)
    rng = np.random.default_rng(a)
    if action == "special" and n:
        pts[a % n, b % 3] = _SPECIAL[b % len(_SPECIAL)]
    elif action == "duplicate" and n:
        pts = np.repeat(pts, 1 + a % 4, axis=0)
    elif action == "truncate":
        pts = pts[: a % 4]
    elif action == "collapse" and n:
        pts[:] = pts[0]
    elif action == "collinear" and n:
        pts[:, 1] = pts[0, 1]
    elif action == "shuffle":
        pts = pts[rng.permutation(n)]
    elif action == "nonplanar" and n:
        pts[:, 2] += rng.normal(0, 1 + b, n)
    elif action == "scale":
        pts *= (10.0 ** (b % 12)) * (1 if a % 2 else -1)
    elif action == "drop-values":
        flat = pts.ravel()[: max(0, pts.size - 1 - a % 2)]
        item[0x30060050] = _raw_element(0x30060050, "DS", "\\".join(repr(float(v)) for v in flat))
        return
    elif action == "move-plane" and n:
        pts[:, 2] = pts[:, 2] + (a % 5) * 0.001
    text = "\\".join("nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(float(v)))
                     for v in pts.ravel())
    item[0x30060050] = _raw_element(0x30060050, "DS", text)
    if "NumberOfContourPoints" in item and b % 3 == 0:
        item.NumberOfContourPoints = len(pts)


def _apply_bytes(data: bytes, op: tuple) -> bytes:
    _, action, pos, val = op
    if not data:
        return data
    i = pos % len(data)
    if action == "truncate":
        return data[:i]
    if action == "flip":
        return data[:i] + bytes([data[i] ^ (1 + val % 255)]) + data[i + 1:]
    if action == "insert":
        return data[:i] + bytes([val % 256]) * (1 + val % 7) + data[i:]
    if action == "zero":
        return data[:i] + b"\x00" * min(16, len(data) - i) + data[i + 16:]
    return data


def mutations(target: str) -> st.SearchStrategy[list[tuple]]:
    """A list of 1 to 4 mutations for ``target`` (header, nested header, contour, bytes)."""
    value = st.one_of(st.sampled_from(_VALUES), st.text(max_size=12).map(lambda s: s.replace("\x00", "")))
    header = st.tuples(st.sampled_from(["delete", "set", "set", "empty-seq"]), st.just(""),
                       st.sampled_from(_KEYWORDS[target]), value)
    ops = [header]
    if _NESTED[target]:
        ops.append(st.sampled_from(_NESTED[target]).flatmap(
            lambda pk: st.tuples(st.sampled_from(["delete", "set", "empty-seq"]), st.just(pk[0]), st.just(pk[1]),
                                 st.tuples(value, st.integers(0, 5)))))
    if target == "rtstruct":
        ops.append(st.tuples(st.just("contour"), st.integers(0, 10),
                             st.sampled_from(["special", "duplicate", "truncate", "collapse", "collinear", "shuffle",
                                              "nonplanar", "scale", "drop-values", "move-plane"]),
                             st.integers(0, 1000), st.integers(0, 1000)))
    ops.append(st.tuples(st.just("bytes"), st.sampled_from(["truncate", "flip", "insert", "zero"]),
                         st.integers(0, 1 << 20), st.integers(0, 1 << 16)))
    return st.lists(st.one_of(*ops), min_size=1, max_size=4)


# ------------------------------------------------------------------ readers and checks
def _use_ct(folder: Path) -> None:
    img = rtkit.read_image(folder)
    arr = img.array
    assert arr.shape == img.grid.shape, (arr.shape, img.grid.shape)
    img.grid.index_to_world((0, 0, 0))


_GRID = rtkit.Grid.from_spacing((6, 16, 16), (2.5, 2.0, 2.0), origin=(-15, -15, -2.5),
                                frame_of_reference_uid="1.2.826.0.1.3680043.8.498.4242")


def _use_rtstruct(path: Path) -> None:
    ss = rtkit.read_structures(path)
    for s in ss.structures:
        v = s.volume
        assert math.isfinite(v) and v >= 0, (s.name, v)
        if ss.frame_of_reference_uid in (None, _GRID.frame_of_reference_uid) and s.frame_of_reference_uid in (
                None, _GRID.frame_of_reference_uid):
            m = s.mask(_GRID)
            assert m.shape == _GRID.shape and m.dtype == bool
            f = s.mask(_GRID, fractional=True)
            assert f.shape == _GRID.shape and np.all((f >= 0) & (f <= 1)), (s.name, f.min(), f.max())


def _use_rtdose(path: Path) -> None:
    d = rtkit.read_dose(path)
    arr = d.array
    assert arr.shape == d.grid.shape
    d.max  # noqa: B018


def _use_rtplan(path: Path) -> None:
    plan = rtkit.read_plan(path)
    plan.summary()
    for b in plan.beams:
        for cp in b.control_points:
            cp.gantry_angle  # noqa: B018


TARGETS: dict[str, Callable[[Path], None]] = {
    "ct": _use_ct, "rtstruct": _use_rtstruct, "rtdose": _use_rtdose, "rtplan": _use_rtplan,
}


def _mutate(target: str, data: bytes, ops: list[tuple]) -> bytes | None:
    header_ops = [op for op in ops if op[0] not in ("bytes", "contour")]
    contour_ops = [op for op in ops if op[0] == "contour"]
    if header_ops or contour_ops:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            for op in header_ops:
                _apply_header(ds, op)
            for op in contour_ops:
                _apply_contour(ds, op)
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(buf, enforce_file_format=False)
            data = buf.getvalue()
        except Exception:  # noqa: BLE001 - pydicom refused to write this mutation: not a case
            return None
    for op in ops:
        if op[0] == "bytes":
            data = _apply_bytes(data, op)
    return data


def run_case(target: str, ops: list[tuple], strict: bool, workdir: Path, which: int = 0) -> Outcome | None:
    """Mutate the base object of ``target`` with ``ops`` and read it.

    Returns None when the mutation could not be written (pydicom refused);
    otherwise the :class:`Outcome`.  Any exception other than an
    :class:`rtkit.RTKitError` propagates: that is a defect.
    """
    base = _base_files()[target]
    k = which % len(base)
    data = _mutate(target, base[k], ops)
    if data is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.iterdir():
        old.unlink()
    if target == "ct":
        for j, b in enumerate(base):
            (workdir / f"s{j}.dcm").write_bytes(data if j == k else b)
        path = workdir
    else:
        path = workdir / "obj.dcm"
        path.write_bytes(data)
    saved = rtkit.config.strict
    rtkit.config.strict = strict
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            TARGETS[target](path)
        return Outcome("ok", "")
    except rtkit.RTKitError as exc:
        return Outcome("error", type(exc).__name__)
    finally:
        rtkit.config.strict = saved

"""The bad-input corpus: valid synthetic objects, each broken in one documented way.

Every :class:`Defect` writes its input with pydicom (never with rtkit), says
which rtkit call reads it, and states the documented behaviour
(``docs/robustness.md`` lists the same table):

* ``"error"``: both modes raise ``error`` (an :class:`rtkit.RTKitError`
  subclass) whose message matches ``match`` and names the input;
* ``"repair"``: lenient mode emits an :class:`rtkit.RTKitWarning` matching
  ``match`` and returns a usable result that passes ``check``; strict mode
  raises ``strict_error`` (message matching ``match`` too);
* ``"info"``: both modes warn (``match``) and return a result passing ``check``
  (the input is valid but unusual);
* ``"quiet"``: both modes read it without any RTKitWarning and ``check`` passes.

Expected values in the checks come from the builders' truth (stored values,
analytic areas), never from rtkit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from builders import pixel_data_offset, truncate, write_image_series, write_rtdose, write_rtstruct
from pydicom.dataelem import DataElement
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info

import rtkit

__all__ = ["Defect", "CORPUS", "by_id", "FRAME_UID", "SQUARE_MM2", "PLANES"]

FRAME_UID = "1.2.826.0.1.3680043.8.498.4242"
#: RTSTRUCT ROI 'A': 20 mm x 20 mm squares on three planes 2.5 mm apart.
SQUARE_MM2 = 400.0
PLANES = (0.0, 2.5, 5.0)
SLAB_MM = 2.5
CT_SHAPE = (4, 8, 10)


@dataclass(frozen=True)
class Defect:
    """One corpus entry (see the module docstring for ``kind``)."""

    id: str
    defect: str
    make: Callable[[Path], Path]
    read: Callable[[Path], object]
    kind: str
    match: str
    error: type[Exception] | None = None
    strict_error: type[Exception] | None = None
    check: Callable[[object, Path], None] | None = None
    names_input: bool = True


# --------------------------------------------------------------------- base objects
def _square(z: float, half: float = 10.0) -> np.ndarray:
    return np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]], float)


def write_ct(folder: Path, **kwargs) -> Path:
    """A valid 4-slice CT series (8 x 10 px) in ``folder``."""
    write_image_series(folder, shape=CT_SHAPE, shuffle=False, random_names=False,
                       frame_of_reference_uid=FRAME_UID, **kwargs)
    return folder


def write_rs(path: Path, contours: list | None = None, **kwargs) -> Path:
    """A valid RTSTRUCT with ROI 'A' (squares on PLANES) unless ``contours`` replaces them."""
    rois = [{"name": "A", "number": 1, "contours": contours if contours is not None else [_square(z) for z in PLANES]}]
    write_rtstruct(path, rois, FRAME_UID, **kwargs)
    return path


def write_rd(path: Path, stored: np.ndarray | None = None, dose_type: str = "PHYSICAL") -> tuple[Path, np.ndarray]:
    """A valid 3 x 4 x 5 RT Dose; with ``stored`` (int16), signed pixel data; returns (path, Gy)."""
    truth = write_rtdose(path, np.full((3, 4, 5), 2.0), bits=16, frame_of_reference_uid=FRAME_UID)
    gy = truth["gy"]
    if stored is not None:
        ds = pydicom.dcmread(path)
        ds.PixelRepresentation = 1
        ds.PixelData = stored.astype("<i2").tobytes()
        ds.DoseType = dose_type
        ds.save_as(path, enforce_file_format=True)
        gy = stored.astype(np.float64) * truth["scaling"]
    return path, gy


def _plan_source() -> Path:
    from _cases import _synthetic_source

    return _synthetic_source() / "RP.dcm"


# --------------------------------------------------------------------- mutations
def edit(path: Path, fn: Callable[[pydicom.Dataset], None]) -> Path:
    """Read ``path`` with pydicom, apply ``fn``, write it back as it was encoded."""
    ds = pydicom.dcmread(path, force=True)
    fn(ds)
    ds.save_as(path, enforce_file_format=False)
    return path


def set_file_meta_syntax(path: Path, transfer_syntax: str | None) -> Path:
    """Rewrite only the file meta with another (or no) TransferSyntaxUID; the data set bytes stay."""
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        body = fp.read()
    if transfer_syntax is None:
        del meta.TransferSyntaxUID
    else:
        meta.TransferSyntaxUID = transfer_syntax
    import io

    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=False)
    path.write_bytes(buf.getvalue() + body)
    return path


def _first(folder: Path) -> Path:
    return sorted(folder.iterdir())[0]


def _contour(ds: pydicom.Dataset, k: int = 0) -> pydicom.Dataset:
    return ds.ROIContourSequence[0].ContourSequence[k]


def _raw_contour_data(text: str, vr: str = "DS") -> Callable[[pydicom.Dataset], None]:
    def fn(ds: pydicom.Dataset) -> None:
        elem = DataElement(0x30060050, "LO", "0")  # placeholder; value replaced below without conversion
        elem.VR = vr
        elem._value = text
        _contour(ds)[0x30060050] = elem

    return fn


# --------------------------------------------------------------------- readers
def read_ct(path: Path) -> rtkit.Image:
    img = rtkit.read_image(path)
    img.array  # noqa: B018 - pixels decoded now
    return img


def read_rs(path: Path) -> rtkit.StructureSet:
    ss = rtkit.read_structures(path)
    for s in ss.structures:  # the solid is built lazily: force it
        s.volume  # noqa: B018
    return ss


def read_rd(path: Path) -> rtkit.Dose:
    d = rtkit.read_dose(path)
    d.array  # noqa: B018
    return d


def read_rp(path: Path) -> rtkit.Plan:
    return rtkit.read_plan(path)


# --------------------------------------------------------------------- checks
def _ct_values_ok(img: object, folder: Path) -> None:
    """The array equals stored value + intercept of each file, in position order (pydicom truth)."""
    assert isinstance(img, rtkit.Image)
    files = sorted((f for f in folder.iterdir()), key=lambda f: float(pydicom.dcmread(f, force=True).ImagePositionPatient[2]))
    expected = []
    for f in files:
        ds = pydicom.dcmread(f, force=True)
        raw = np.frombuffer(ds.PixelData, dtype="<i2").reshape(int(ds.Rows), int(ds.Columns))
        expected.append(raw * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0)))
    np.testing.assert_array_equal(np.asarray(img.array, float), np.stack(expected))


def _volume_is(planes: int) -> Callable[[object, Path], None]:
    def check(ss: object, _: Path) -> None:
        assert isinstance(ss, rtkit.StructureSet)
        # each remaining plane is a 20 x 20 mm square of one 2.5 mm slab (analytic)
        expected = planes * SQUARE_MM2 * SLAB_MM / 1000.0
        assert abs(ss["A"].volume - expected) < 1e-9, (ss["A"].volume, expected)

    return check


def _dose_is(gy: np.ndarray) -> Callable[[object, Path], None]:
    def check(d: object, _: Path) -> None:
        assert isinstance(d, rtkit.Dose)
        np.testing.assert_allclose(d.array, gy, rtol=1e-6, atol=1e-9)

    return check


# --------------------------------------------------------------------- the corpus
def _ct(fn: Callable[[Path], None] | None = None, **kwargs) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        folder = write_ct(root / "ct", **kwargs)
        if fn is not None:
            fn(folder)
        return folder

    return make


def _ct_all(fn: Callable[[pydicom.Dataset], None]) -> Callable[[Path], Path]:
    return _ct(lambda folder: [edit(f, fn) for f in sorted(folder.iterdir())])


def _ct_one(fn: Callable[[pydicom.Dataset], None]) -> Callable[[Path], Path]:
    return _ct(lambda folder: edit(_first(folder), fn))


def _ct_cut(where: Callable[[Path], int]) -> Callable[[Path], Path]:
    return _ct(lambda folder: truncate(_first(folder), where(_first(folder))))


def _rs(fn: Callable[[pydicom.Dataset], None] | None = None, contours: list | None = None) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        p = write_rs(root / "rs.dcm", contours)
        if fn is not None:
            edit(p, fn)
        return p

    return make


def _rs_cut(where: Callable[[Path], int]) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        p = write_rs(root / "rs.dcm")
        return truncate(p, where(p))

    return make


def _rd(fn: Callable[[pydicom.Dataset], None] | None = None) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        p, _ = write_rd(root / "rd.dcm")
        if fn is not None:
            edit(p, fn)
        return p

    return make


def _rd_cut(where: Callable[[Path], int]) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        p, _ = write_rd(root / "rd.dcm")
        return truncate(p, where(p))

    return make


def _rp(fn: Callable[[pydicom.Dataset], None] | None = None) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        p = root / "rp.dcm"
        shutil.copyfile(_plan_source(), p)
        if fn is not None:
            edit(p, fn)
        return p

    return make


def _size(p: Path) -> int:
    return p.stat().st_size


def _inside(p: Path, element: bytes, offset: int) -> int:
    """Byte position ``offset`` bytes after the start of the first ``element`` (tag + VR bytes)."""
    at = p.read_bytes().find(element)
    assert at > 0, element
    return at + offset


_NEG_STORED = (np.arange(60, dtype=np.int64).reshape(3, 4, 5) - 30).astype(np.int16)


def _negative_dose(dose_type: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        return write_rd(root / "rd.dcm", _NEG_STORED, dose_type)[0]

    return make


def _check_negative(d: object, path: Path) -> None:
    ds = pydicom.dcmread(path)
    _dose_is(_NEG_STORED.astype(np.float64) * float(ds.DoseGridScaling))(d, path)
    assert float(np.min(d.array)) < 0  # type: ignore[attr-defined]


def _check_for_none(img: object, folder: Path) -> None:
    assert isinstance(img, rtkit.Image) and img.grid.frame_of_reference_uid is None
    _ct_values_ok(img, folder)


def _check_modality_ct(img: object, folder: Path) -> None:
    assert isinstance(img, rtkit.Image) and img.modality == "CT"
    _ct_values_ok(img, folder)


def _check_unit_direction(img: object, folder: Path) -> None:
    assert isinstance(img, rtkit.Image)
    d = img.grid.direction
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), 1.0, atol=1e-12)
    _ct_values_ok(img, folder)


def _check_duplicate_dropped(img: object, folder: Path) -> None:
    assert isinstance(img, rtkit.Image) and img.grid.shape == CT_SHAPE


def _check_empty_set(ss: object, _: Path) -> None:
    assert isinstance(ss, rtkit.StructureSet) and len(ss) == 0


def _check_relative(d: object, _: Path) -> None:
    assert isinstance(d, rtkit.Dose) and d.is_relative


def _check_plan_read(plan: object, path: Path) -> None:
    ds = pydicom.dcmread(path)
    assert isinstance(plan, rtkit.Plan) and len(plan.beams) == len(ds.BeamSequence)


def _dup_file(folder: Path) -> None:
    f = _first(folder)
    shutil.copyfile(f, folder / "copy_of_first")


def _second_series(folder: Path) -> None:
    write_image_series(folder, shape=(2, 8, 10), shuffle=False, random_names=False, name_prefix="OTHER",
                       frame_of_reference_uid=FRAME_UID)


def _bigger_slice(folder: Path) -> None:
    f = _first(folder)

    def fn(ds: pydicom.Dataset) -> None:
        ds.Rows, ds.Columns = 10, 12
        ds.PixelData = np.zeros((10, 12), "<i2").tobytes()

    edit(f, fn)


def _drop_slice(folder: Path) -> None:
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    files[1].unlink()


def _no(keyword: str, where: Callable[[pydicom.Dataset], pydicom.Dataset] = lambda ds: ds) -> Callable[[pydicom.Dataset], None]:
    def fn(ds: pydicom.Dataset) -> None:
        del where(ds)[keyword]

    return fn


def _set(keyword: str, value: object, where: Callable[[pydicom.Dataset], pydicom.Dataset] = lambda ds: ds) -> Callable[[pydicom.Dataset], None]:
    def fn(ds: pydicom.Dataset) -> None:
        setattr(where(ds), keyword, value)

    return fn


def _bow_tie(root: Path) -> Path:
    tie = np.array([[0, 0, 0], [10, 10, 0], [10, 0, 0], [0, 10, 0]], float)
    return write_rs(root / "rs.dcm", [tie, _square(2.5), _square(5.0)])


def _dup_points(root: Path) -> Path:
    return write_rs(root / "rs.dcm", [np.repeat(_square(z), 3, axis=0) for z in PLANES])


def _closing_point(root: Path) -> Path:
    return write_rs(root / "rs.dcm", [np.vstack([_square(z), _square(z)[:1]]) for z in PLANES])


E = rtkit.DicomReadError
G = rtkit.GeometryError
F = rtkit.FrameOfReferenceError

CORPUS: list[Defect] = [
    # ---- image series (CT)
    Defect("ct-cut-in-preamble", "CT file cut inside the 128-byte preamble (64 bytes left)",
           _ct_cut(lambda p: 64), read_ct, "error", "truncated", E),
    Defect("ct-cut-in-header", "CT file cut inside the header (200 bytes left)",
           _ct_cut(lambda p: 200), read_ct, "error", "truncated", E),
    Defect("ct-cut-at-pixel-tag", "CT file cut just before its Pixel Data element",
           _ct_cut(pixel_data_offset), read_ct, "error", "ends before its pixel data", E),
    Defect("ct-cut-in-pixels", "CT file cut in the middle of its pixel data",
           _ct_cut(lambda p: (pixel_data_offset(p) + _size(p)) // 2), read_ct, "error", "truncated", E),
    Defect("ct-cut-last-byte", "CT file missing only its last byte",
           _ct_cut(lambda p: _size(p) - 1), read_ct, "error", "truncated", E),
    Defect("ct-syntax-jpeg-on-raw", "TransferSyntaxUID says JPEG Baseline, pixel data are uncompressed",
           _ct(lambda f: set_file_meta_syntax(_first(f), "1.2.840.10008.1.2.4.50")), read_ct, "error",
           "JPEG Baseline", E),
    Defect("ct-syntax-implicit-on-explicit", "TransferSyntaxUID says implicit VR, data set is explicit VR",
           _ct(lambda f: set_file_meta_syntax(_first(f), "1.2.840.10008.1.2")), read_ct, "repair",
           "TransferSyntaxUID .* does not match", strict_error=E, check=_ct_values_ok),
    Defect("ct-syntax-big-endian-on-little", "TransferSyntaxUID says big endian, data set is little endian",
           _ct(lambda f: set_file_meta_syntax(_first(f), "1.2.840.10008.1.2.2")), read_ct, "error",
           "TransferSyntaxUID does not match", E),
    Defect("ct-syntax-missing", "file meta without TransferSyntaxUID",
           _ct(lambda f: set_file_meta_syntax(_first(f), None)), read_ct, "repair", "no TransferSyntaxUID",
           strict_error=E, check=_ct_values_ok),
    Defect("ct-syntax-unknown", "TransferSyntaxUID is not a transfer syntax (1.2.3.4)",
           _ct(lambda f: set_file_meta_syntax(_first(f), "1.2.3.4")), read_ct, "error",
           "not a DICOM transfer syntax", E),
    Defect("ct-no-position", "CT slice without ImagePositionPatient",
           _ct_one(_no("ImagePositionPatient")), read_ct, "error", "ImagePositionPatient", G),
    Defect("ct-no-pixel-spacing", "CT slice without PixelSpacing",
           _ct_one(_no("PixelSpacing")), read_ct, "error", "PixelSpacing", G),
    Defect("ct-no-orientation", "CT slice without ImageOrientationPatient",
           _ct_one(_no("ImageOrientationPatient")), read_ct, "error", "ImageOrientationPatient", G),
    Defect("ct-negative-pixel-spacing", "PixelSpacing -1\\1",
           _ct_all(_set("PixelSpacing", [-1, 1])), read_ct, "error", "must be positive", G),
    Defect("ct-orientation-degenerate", "ImageOrientationPatient 1\\0\\0\\1\\0\\0 (parallel cosines)",
           _ct_all(_set("ImageOrientationPatient", [1, 0, 0, 1, 0, 0])), read_ct, "error",
           "does not define an image plane", G),
    Defect("ct-orientation-not-unit", "ImageOrientationPatient 2\\0\\0\\0\\2\\0 (not unit vectors)",
           _ct_all(_set("ImageOrientationPatient", [2, 0, 0, 0, 2, 0])), read_ct, "repair",
           "not two orthogonal unit vectors", strict_error=G, check=_check_unit_direction, names_input=False),
    Defect("ct-empty-frame-of-reference", "FrameOfReferenceUID empty in every slice",
           _ct_all(_set("FrameOfReferenceUID", "")), read_ct, "repair", "FrameOfReferenceUID is missing or empty",
           strict_error=F, check=_check_for_none, names_input=False),
    Defect("ct-wrong-modality", "CT Image Storage SOP class with Modality MR",
           _ct_all(_set("Modality", "MR")), read_ct, "repair", "Modality tag says 'MR'", strict_error=E,
           check=_check_modality_ct),
    Defect("ct-rescale-nan", "RescaleSlope 'nan'",
           _ct_one(_set("RescaleSlope", "nan")), read_ct, "error", "RescaleSlope", E),
    Defect("ct-huge-number-of-frames", "single-frame CT claiming NumberOfFrames 100000",
           _ct_one(_set("NumberOfFrames", 100000)), read_ct, "error", "NumberOfFrames is 100000", G),
    Defect("ct-rows-wrong", "Rows 9 but pixel data for 8 rows",
           _ct_all(_set("Rows", 9)), read_ct, "error", "cannot be decoded", E),
    Defect("ct-mixed-series", "two CT series in one folder",
           _ct(_second_series), read_ct, "error", "holds 2 image series", rtkit.AmbiguousCaseError, names_input=False),
    Defect("ct-mixed-sizes", "one slice of the series 10 x 12 px, the others 8 x 10",
           _ct(_bigger_slice), read_ct, "error", "mixed image sizes", G),
    Defect("ct-missing-slice", "one slice missing from the middle of the series",
           _ct(_drop_slice), read_ct, "error", "missing slice", G, names_input=False),
    Defect("ct-same-file-twice", "the same SOP instance twice (a copy under another name)",
           _ct(_dup_file), read_ct, "repair", "repeats SOP instance", strict_error=G, check=_check_duplicate_dropped),
    # ---- RT Structure Set
    Defect("rs-cut-in-preamble", "RTSTRUCT cut inside the preamble (100 bytes left)",
           _rs_cut(lambda p: 100), read_rs, "error", "truncated", E),
    Defect("rs-cut-in-header", "RTSTRUCT cut inside the file meta / header (200 bytes left)",
           _rs_cut(lambda p: 200), read_rs, "error", "truncated", E),
    Defect("rs-cut-in-middle", "RTSTRUCT cut in the middle of a ContourData value",
           _rs_cut(lambda p: _inside(p, b"\x06\x30\x50\x00DS", 20)), read_rs, "error", "truncated", E),
    Defect("rs-cut-in-sequence", "RTSTRUCT cut between two elements inside ROIContourSequence",
           _rs_cut(lambda p: _inside(p, b"\x06\x30\x50\x00DS", 0)), read_rs, "error", "truncated", E),
    Defect("rs-cut-before-contours", "RTSTRUCT cut exactly before ROIContourSequence (a valid shorter file)",
           _rs_cut(lambda p: _inside(p, b"\x06\x30\x39\x00SQ", 0)), read_rs, "repair",
           "no ROIContourSequence", strict_error=E, check=_volume_is(0)),
    Defect("rs-cut-last-bytes", "RTSTRUCT missing its last 3 bytes",
           _rs_cut(lambda p: _size(p) - 3), read_rs, "error", "truncated", E),
    Defect("rs-no-contour-data", "a contour without ContourData",
           _rs(_no("ContourData", _contour)), read_rs, "repair", "without ContourData", strict_error=E,
           check=_volume_is(2)),
    Defect("rs-nan-in-contour", "NaN in ContourData",
           _rs(_raw_contour_data("nan\\-10\\0\\10\\-10\\0\\10\\10\\0\\-10\\10\\0")), read_rs, "repair",
           "NaN or infinite", strict_error=G, check=_volume_is(2), names_input=False),
    Defect("rs-inf-in-contour", "inf in ContourData",
           _rs(_raw_contour_data("-10\\-10\\0\\inf\\-10\\0\\10\\10\\0\\-10\\10\\0")), read_rs, "repair",
           "NaN or infinite", strict_error=G, check=_volume_is(2), names_input=False),
    Defect("rs-text-in-contour", "ContourData holding text (a\\b\\c)",
           _rs(_raw_contour_data("a\\b\\c", vr="LO")), read_rs, "repair", "cannot be read as numbers",
           strict_error=E, check=_volume_is(2)),
    Defect("rs-huge-coordinate", "a contour coordinate of 1e300 mm",
           _rs(_raw_contour_data("1e300\\-10\\0\\10\\-10\\0\\10\\10\\0\\-10\\10\\0")), read_rs, "repair",
           "corrupt ContourData", strict_error=G, check=_volume_is(2), names_input=False),
    Defect("rs-not-multiple-of-3", "ContourData with 11 values",
           _rs(_raw_contour_data("-10\\-10\\0\\10\\-10\\0\\10\\10\\0\\-10\\10")), read_rs, "repair",
           "not a multiple of 3", strict_error=E, check=_volume_is(2)),
    Defect("rs-duplicate-points", "every contour point repeated three times",
           _dup_points, read_rs, "quiet", "", check=_volume_is(3)),
    Defect("rs-closing-point", "contours closed explicitly (first point repeated at the end)",
           _closing_point, read_rs, "quiet", "", check=_volume_is(3)),
    Defect("rs-bow-tie", "a self-intersecting (bow-tie) contour",
           _bow_tie, read_rs, "repair", "self-intersecting contour", strict_error=G, names_input=False),
    Defect("rs-wrong-modality", "RT Structure Set SOP class with Modality RTDOSE",
           _rs(_set("Modality", "RTDOSE")), read_rs, "repair", "Modality tag says 'RTDOSE'", strict_error=E,
           check=_volume_is(3)),
    Defect("rs-empty-frame-of-reference", "ReferencedFrameOfReferenceSequence with an empty FrameOfReferenceUID",
           _rs(_set("FrameOfReferenceUID", "", lambda ds: ds.ReferencedFrameOfReferenceSequence[0])), read_rs,
           "repair", "no FrameOfReferenceUID", strict_error=F, check=_volume_is(3)),
    Defect("rs-unknown-geometric-type", "ContourGeometricType 'FOO'",
           _rs(_set("ContourGeometricType", "FOO", _contour)), read_rs, "repair", "ContourGeometricType is 'FOO'",
           strict_error=E, check=_volume_is(3)),
    Defect("rs-no-roi-sequence", "no StructureSetROISequence",
           _rs(_no("StructureSetROISequence")), read_rs, "repair", "no StructureSetROISequence", strict_error=E,
           check=_check_empty_set),
    Defect("rs-dangling-roi-number", "ROIContourSequence item without ReferencedROINumber",
           _rs(_no("ReferencedROINumber", lambda ds: ds.ROIContourSequence[0])), read_rs, "repair",
           "without a valid ReferencedROINumber", strict_error=E),
    # ---- RT Dose
    Defect("rd-cut-in-header", "RT Dose cut inside the header (300 bytes left)",
           _rd_cut(lambda p: 300), read_rd, "error", "truncated", E),
    Defect("rd-cut-at-pixel-tag", "RT Dose cut just before its Pixel Data element",
           _rd_cut(pixel_data_offset), read_rd, "error", "ends before its pixel data", E),
    Defect("rd-cut-in-pixels", "RT Dose cut in the middle of its pixel data",
           _rd_cut(lambda p: (pixel_data_offset(p) + _size(p)) // 2), read_rd, "error", "truncated", E),
    Defect("rd-cut-last-bytes", "RT Dose missing its last 2 bytes",
           _rd_cut(lambda p: _size(p) - 2), read_rd, "error", "truncated", E),
    Defect("rd-no-scaling", "RT Dose without DoseGridScaling",
           _rd(_no("DoseGridScaling")), read_rd, "error", "DoseGridScaling is missing", E),
    Defect("rd-zero-scaling", "DoseGridScaling 0",
           _rd(_set("DoseGridScaling", "0")), read_rd, "error", "must be positive", E),
    Defect("rd-negative-scaling", "DoseGridScaling -1",
           _rd(_set("DoseGridScaling", "-1")), read_rd, "error", "must be positive", E),
    Defect("rd-huge-number-of-frames", "NumberOfFrames 1000000 with pixel data for 3 frames",
           _rd(_set("NumberOfFrames", 1000000)), read_rd, "error", "NumberOfFrames 1000000", E),
    Defect("rd-frames-offsets-mismatch", "NumberOfFrames 5, GridFrameOffsetVector with 3 values",
           _rd(_set("NumberOfFrames", 5)), read_rd, "error", "GridFrameOffsetVector holds 3", G),
    Defect("rd-no-offsets", "multi-frame RT Dose without GridFrameOffsetVector",
           _rd(_no("GridFrameOffsetVector")), read_rd, "error", "no GridFrameOffsetVector", G),
    Defect("rd-no-position", "RT Dose without ImagePositionPatient",
           _rd(_no("ImagePositionPatient")), read_rd, "error", "ImagePositionPatient", G),
    Defect("rd-no-pixel-spacing", "RT Dose without PixelSpacing",
           _rd(_no("PixelSpacing")), read_rd, "error", "PixelSpacing", G),
    Defect("rd-negative-values", "signed RT Dose (DoseType PHYSICAL) with negative values",
           _negative_dose("PHYSICAL"), read_rd, "repair", "negative values", strict_error=E, check=_check_negative),
    Defect("rd-negative-error-dose", "signed RT Dose with DoseType ERROR (negative values allowed)",
           _negative_dose("ERROR"), read_rd, "info", "DoseType ERROR", check=_check_negative),
    Defect("rd-wrong-modality", "RT Dose SOP class with Modality CT",
           _rd(_set("Modality", "CT")), read_rd, "repair", "Modality tag says 'CT'", strict_error=E),
    Defect("rd-empty-frame-of-reference", "RT Dose with an empty FrameOfReferenceUID",
           _rd(_set("FrameOfReferenceUID", "")), read_rd, "repair", "FrameOfReferenceUID is missing or empty",
           strict_error=F),
    Defect("rd-units-cgy", "DoseUnits CGY (not a defined term)",
           _rd(_set("DoseUnits", "CGY")), read_rd, "repair", "DoseUnits is 'CGY'", strict_error=E,
           check=_check_relative),
    # ---- RT Plan
    Defect("rp-cut-in-middle", "RT Plan cut in the middle",
           lambda root: truncate(_rp()(root), _size(root / "rp.dcm") // 2), read_rp, "error", "truncated", E),
    Defect("rp-wrong-modality", "RT Plan SOP class with Modality RTDOSE",
           _rp(_set("Modality", "RTDOSE")), read_rp, "repair", "Modality tag says 'RTDOSE'", strict_error=E,
           check=_check_plan_read),
    Defect("rp-no-beam-number", "a beam without BeamNumber",
           _rp(_no("BeamNumber", lambda ds: ds.BeamSequence[0])), read_rp, "repair", "has no BeamNumber",
           strict_error=E),
]


def by_id(defect_id: str) -> Defect:
    """The corpus entry ``defect_id``."""
    return next(d for d in CORPUS if d.id == defect_id)

"""Assemble image series (CT, MR, PET) into :class:`rtkit.Image` volumes.

Slices are ordered by their position along the slice normal (never by file
name or InstanceNumber).  The grid's slice step is the measured vector from
the first to the last slice divided by the number of steps, so tilted
(sheared) series keep exact positions.  See ``docs/geometry.md`` for the
rules on gaps, duplicates and non-uniform pitch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from .. import config
from ..errors import (
    AmbiguousCaseError,
    DicomReadError,
    FrameOfReferenceError,
    GeometryError,
    violation,
)
from ..geometry import Grid
from ..image import Image
from ._dicom import (
    _SLOW,
    _SOP_MODALITY,
    IMAGE_MODALITIES,
    FrameGeometry,
    Instance,
    NotDicomError,
    _floats,
    _get,
    _raw,
    _seq,
    _str,
    decode_pixels,
    guard_decoding,
    make_instance,
    open_dataset,
)

__all__ = ["read_image", "series_image", "SliceLayout", "layout_frames"]

log = logging.getLogger("rtkit.io")

_POS_TOL = 1e-3  # mm: two frames closer than this along the normal share a position


@dataclass
class SliceLayout:
    """How the frames of a series fill a regular grid.

    Attributes
    ----------
    grid : Grid
    sources : list of (Instance, int)
        The frame (instance, frame index) of each source slice, in grid order.
    weights : None or (ndarray of int, ndarray of float)
        ``None`` when source slice ``k`` is grid slice ``k``.  Otherwise, for
        non-uniform pitch, grid slice ``k`` is ``(1 - w[k]) * src[i[k]] +
        w[k] * src[i[k] + 1]`` (linear interpolation along the normal).
    rescale : ndarray, shape (n, 2)
        (slope, intercept) per source slice.
    """

    grid: Grid
    sources: list[tuple[Instance, int]]
    weights: tuple[NDArray[np.intp], NDArray[np.float64]] | None
    rescale: NDArray[np.float64]


def _describe(inst: Instance, frame: int) -> str:
    return f"{inst.path}" + (f" frame {frame + 1}" if inst.number_of_frames > 1 else "")


def _orientation(iop: NDArray[np.float64], where: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Unit row and column cosines from ImageOrientationPatient (repairing small deviations).

    Raises
    ------
    GeometryError
        A zero or parallel pair of direction cosines: no plane is defined.
    """
    r, c = iop[:3], iop[3:]
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    if nr < 1e-6 or nc < 1e-6 or np.linalg.norm(np.cross(r / nr, c / nc)) < 0.5:
        raise GeometryError(
            f"{where}: ImageOrientationPatient {iop.tolist()} does not define an image plane (a zero "
            "or parallel pair of direction cosines); the header is invalid. Re-export the series."
        )
    r, c = r / nr, c / nc
    dot = float(r @ c)
    if abs(nr - 1) > 1e-3 or abs(nc - 1) > 1e-3 or abs(dot) > 1e-3:
        violation(
            f"{where}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors "
            f"(lengths {nr:.4f}, {nc:.4f}; dot product {dot:.4f})",
            log, GeometryError, repair="re-orthonormalised (row cosine kept)",
        )
        c = c - dot * r
        c = c / np.linalg.norm(c)
    return r, c


def _check_modality_tag(inst: Instance) -> None:
    """The Modality tag must agree with the SOP class (the SOP class wins)."""
    from_sop = _SOP_MODALITY.get(inst.sop_class_uid or "")
    tag = (inst.modality_tag or "").upper()
    if from_sop and tag and tag != from_sop:
        violation(f"{inst.path}: Modality tag says {inst.modality_tag!r} but the SOP Class is {from_sop}",
                  log, repair=f"read as {from_sop}")


def layout_frames(instances: Sequence[Instance], what: str) -> SliceLayout:
    """Order the frames of ``instances`` and build their :class:`Grid`.

    Parameters
    ----------
    instances : sequence of Instance
        All files of one series.
    what : str
        A name for messages (e.g. ``"CT series 1.2.3 (120 files)"``).

    Raises
    ------
    GeometryError
        Missing geometry attributes, mixed sizes/orientations/spacings,
        duplicate positions, a missing slice, or (strict mode) non-uniform pitch.
    """
    frames: list[tuple[Instance, int, FrameGeometry]] = []
    seen_sop: set[str] = set()
    for inst in instances:
        if inst.sop_instance_uid and inst.sop_instance_uid in seen_sop:
            violation(f"{what}: {inst.path} repeats SOP instance {inst.sop_instance_uid}", log, GeometryError,
                      repair="ignoring the copy")
            continue
        if inst.sop_instance_uid:
            seen_sop.add(inst.sop_instance_uid)
        for k, fg in enumerate(inst.frames):
            frames.append((inst, k, fg))
    if not frames:
        raise GeometryError(f"{what}: no image frames")
    tags = {(i.sop_class_uid, (i.modality_tag or "").upper()): i for i in instances if i.modality in IMAGE_MODALITIES}
    for inst in tags.values():
        _check_modality_tag(inst)

    # --- every frame must carry geometry
    for inst, k, fg in frames:
        missing = [n for n, v in (("ImagePositionPatient", fg.position),
                                  ("ImageOrientationPatient", fg.orientation),
                                  ("PixelSpacing", fg.pixel_spacing)) if v is None]
        if missing or inst.rows is None or inst.columns is None:
            missing += [n for n, v in (("Rows", inst.rows), ("Columns", inst.columns)) if v is None]
            if missing == ["ImagePositionPatient"] and inst.number_of_frames > 1 and _floats(
                inst.header, "ImagePositionPatient", 3
            ) is not None:
                # a multi-frame file whose per-frame positions cannot be derived
                n_off = len(_values(inst.header, "GridFrameOffsetVector"))
                raise GeometryError(
                    f"{inst.path}: NumberOfFrames is {inst.number_of_frames} but "
                    + (f"GridFrameOffsetVector holds {n_off} value(s)" if n_off else
                       "there is no GridFrameOffsetVector or per-frame plane position")
                    + "; the frames cannot be placed. The header is inconsistent (or the file "
                    "truncated); re-export it."
                )
            raise GeometryError(
                f"{_describe(inst, k)}: missing or invalid {', '.join(missing)}; "
                "without it the slice cannot be placed in patient coordinates."
            )
        if min(fg.pixel_spacing) <= 0:
            raise GeometryError(
                f"{_describe(inst, k)}: PixelSpacing {list(fg.pixel_spacing)} must be positive (mm); "
                "the header is invalid. Re-export the series."
            )
        if not np.all(np.isfinite([fg.slope, fg.intercept])):
            raise DicomReadError(
                f"{_describe(inst, k)}: RescaleSlope/RescaleIntercept is present but not a number; "
                "the stored values cannot be converted (HU for CT). Re-export the series."
            )

    # --- consistency across frames (vectorised: a multi-frame file repeats one value per frame)
    def check_same(label: str, values: np.ndarray, rtol: float, atol: float) -> None:
        ref = values[0]
        ok = np.all(np.abs(values - ref) <= atol + rtol * np.abs(ref), axis=tuple(range(1, values.ndim)))
        bad = np.flatnonzero(~ok)
        if bad.size:
            inst, k, _ = frames[bad[0]]
            raise GeometryError(
                f"{what}: mixed {label}: {tuple(ref.tolist())} in {_describe(frames[0][0], frames[0][1])} but "
                f"{tuple(values[bad[0]].tolist())} in {_describe(inst, k)} ({bad.size} of {len(values)} frames "
                "differ). The folder probably mixes several series; pass the files of one series."
            )

    check_same("image sizes (rows, columns)", np.array([(i.rows, i.columns) for i, _, _ in frames], float), 0.0, 0.0)
    check_same("orientations (ImageOrientationPatient)", np.array([fg.orientation for _, _, fg in frames], float), 0.0, 1e-4)
    check_same("pixel spacings", np.array([fg.pixel_spacing for _, _, fg in frames], float), 1e-4, 1e-6)

    first = frames[0]
    row_cos, col_cos = _orientation(np.asarray(first[2].orientation, dtype=np.float64),
                                    _describe(first[0], first[1]))
    normal = np.cross(row_cos, col_cos)
    pos = np.array([fg.position for _, _, fg in frames], dtype=np.float64)
    d = pos @ normal
    order = np.lexsort((np.arange(len(d)), d))
    frames = [frames[i] for i in order]
    pos, d = pos[order], d[order]
    n = len(frames)
    rows, cols = first[0].rows, first[0].columns
    spacing = first[2].pixel_spacing
    frame_uid = next((i.frame_of_reference_uid for i, _, _ in frames if i.frame_of_reference_uid), None)
    if frame_uid is None:
        violation(f"{what}: FrameOfReferenceUID is missing or empty (Type 1)", log, FrameOfReferenceError,
                  repair="the grid has no frame of reference, so frame checks against other objects "
                  "are skipped; make sure they belong together")

    dup = np.flatnonzero(np.diff(d) < _POS_TOL)
    if dup.size:
        j = dup[0]
        raise GeometryError(
            f"{what}: {dup.size} pair(s) of frames share a slice position; "
            f"e.g. {d[j]:.3f} mm along the normal in {_describe(frames[j][0], frames[j][1])} and "
            f"{_describe(frames[j + 1][0], frames[j + 1][1])}. The folder may hold two acquisitions "
            "(check AcquisitionNumber); pass the files of one of them."
        )

    weights = None
    if n == 1:
        inst = frames[0][0]
        thick = inst.spacing_between_slices or inst.slice_thickness
        if not thick or thick <= 0:
            violation(f"{what}: one slice and no SliceThickness/SpacingBetweenSlices", log, GeometryError,
                      repair="assuming 1 mm")
            thick = 1.0
        step = normal * thick
    else:
        steps = np.diff(d)
        # Against the smallest step, so that a gap cannot hide in the median of a short series.
        pitch = float(steps.min())
        gaps = np.flatnonzero(steps > 1.5 * pitch)
        if gaps.size:
            lines = ", ".join(f"{d[g]:.3f} -> {d[g + 1]:.3f} mm" for g in gaps[:5])
            raise GeometryError(
                f"{what}: missing slice(s): the pitch is {pitch:.3f} mm but the positions along the "
                f"normal jump {lines} ({gaps.size} gap(s)). Add the missing files or read the "
                "slices on each side as separate volumes."
            )
        step = (pos[-1] - pos[0]) / (n - 1)
        expected = pos[0] + np.arange(n)[:, None] * step
        dev = pos - expected
        along = dev @ normal
        across = np.linalg.norm(dev - along[:, None] * normal, axis=1)
        tol = config.slice_tolerance_mm
        if across.max() > max(tol, 1e-6 * pitch):
            k = int(np.argmax(across))
            raise GeometryError(
                f"{what}: slice positions do not lie on a line: {_describe(frames[k][0], frames[k][1])} "
                f"is {across[k]:.3f} mm off it in-plane. rtkit cannot place these slices on one grid."
            )
        if np.abs(along).max() > tol:
            k = int(np.argmax(np.abs(along)))
            msg = (
                f"{what}: non-uniform slice pitch ({steps.min():.3f} to {steps.max():.3f} mm); "
                f"the largest deviation from a uniform {np.linalg.norm(step):.4f} mm pitch is "
                f"{abs(along[k]):.3f} mm at {_describe(frames[k][0], frames[k][1])}"
            )
            violation(msg, log, GeometryError,
                      repair="resampled linearly along the normal onto the uniform grid from the "
                      "first to the last slice (same number of slices)")
            target = d[0] + np.arange(n) * (d[-1] - d[0]) / (n - 1)
            i = np.clip(np.searchsorted(d, target, side="right") - 1, 0, n - 2)
            w = np.clip((target - d[i]) / (d[i + 1] - d[i]), 0.0, 1.0)
            weights = (i.astype(np.intp), w)
            step = normal * (d[-1] - d[0]) / (n - 1)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = col_cos * spacing[0]
    affine[:3, 2] = row_cos * spacing[1]
    affine[:3, 3] = pos[0]
    try:
        grid = Grid((n, rows, cols), affine, frame_uid)
    except GeometryError as exc:
        raise GeometryError(f"{what}: {exc}") from exc
    rescale = np.array([(fg.slope, fg.intercept) for _, _, fg in frames], dtype=np.float64)
    return SliceLayout(grid, [(i, k) for i, k, _ in frames], weights, rescale)


def _output_dtype(layout: SliceLayout, raw: np.dtype) -> np.dtype:
    slopes, intercepts = layout.rescale[:, 0], layout.rescale[:, 1]
    if layout.weights is not None or raw.kind not in "iu" or np.any(slopes != 1) or np.any(
        intercepts != np.round(intercepts)
    ):
        return np.dtype(np.float32) if raw.itemsize <= 2 or raw.kind != "f" else raw
    # Start narrow (int16 for 8/16-bit data); load_pixels widens if a slice does not fit.
    return np.dtype(np.int16) if raw.itemsize <= 2 else np.dtype(np.int32)


@guard_decoding
def load_pixels(layout: SliceLayout, get_dataset: Callable[[Instance], Dataset]) -> NDArray:
    """Decode, rescale and stack the pixel data of a :class:`SliceLayout`.

    Returns
    -------
    ndarray, shape ``layout.grid.shape``
        Rescaled values (HU for CT): int16/int32 when every slice's rescale
        is an integer shift of integer data and fits, float32 otherwise.
    """
    cache: dict[int, NDArray] = {}
    out: NDArray | None = None
    n = len(layout.sources)
    stack_shape = (n, *layout.grid.shape[1:])
    for s, (inst, k) in enumerate(layout.sources):
        key = id(inst)
        if key not in cache:
            if len(cache) > 4:  # keep only recent multi-frame arrays
                cache.clear()
            cache[key] = decode_pixels(get_dataset(inst), inst.path)
        frame = cache[key][k]
        if frame.shape != stack_shape[1:]:
            raise DicomReadError(
                f"{inst.path}: pixel data are {frame.shape} but Rows/Columns say {stack_shape[1:]}"
            )
        if out is None:
            out = np.empty(stack_shape, dtype=_output_dtype(layout, frame.dtype))
        slope, intercept = layout.rescale[s]
        if out.dtype.kind in "iu":
            oi = np.iinfo(out.dtype)
            if int(frame.min()) + intercept < oi.min or int(frame.max()) + intercept > oi.max:
                # Stored values beyond BitsStored: widen rather than wrap around.
                out = out.astype(np.int64 if out.dtype.itemsize >= 4 else np.int32)
            np.add(frame, int(intercept), out=out[s], dtype=out.dtype, casting="unsafe")
        elif slope == 1 and intercept == 0:
            out[s] = frame
        else:
            out[s] = frame * np.float64(slope) + np.float64(intercept)
        if inst.number_of_frames == 1:
            cache.pop(key, None)
    assert out is not None
    if layout.weights is not None:
        i, w = layout.weights
        w = w.astype(np.float32)[:, None, None]
        out = ((1.0 - w) * out[i] + w * out[i + 1]).astype(np.float32)
    return out


def _meta(instances: Sequence[Instance], layout: SliceLayout) -> dict:
    """Header values kept with an Image (enough to reference the series from RT objects)."""
    i = instances[0]
    meta = {
        "patient_id": i.patient_id,
        "patient_name": i.patient_name,
        "study_instance_uid": i.study_instance_uid,
        "study_date": i.study_date,
        "study_description": i.study_description,
        "series_description": i.series_description,
        "series_number": i.series_number,
        "sop_class_uid": i.sop_class_uid,
        "units": i.units or ("HU" if i.modality == "CT" else None),
        "files": len(instances),
        # SOPInstanceUID of each grid slice's source frame (None after resampling along the normal)
        "sop_instance_uids": (
            [inst.sop_instance_uid for inst, _ in layout.sources] if layout.weights is None else None
        ),
    }
    for kw, key in (("PatientBirthDate", "patient_birth_date"), ("PatientSex", "patient_sex"),
                    ("StudyTime", "study_time"), ("StudyID", "study_id"),
                    ("AccessionNumber", "accession_number"),
                    ("ReferringPhysicianName", "referring_physician_name"),
                    ("Manufacturer", "manufacturer")):
        meta[key] = i.text(kw)
    if i.modality == "PT":
        meta["pet"] = _pet_meta(instances)
    return meta


#: Series-level PET header values kept in ``meta["pet"]`` (raw DICOM text), by meta key.
_PET_SERIES_KEYWORDS = {
    "units": "Units", "decay_correction": "DecayCorrection", "suv_type": "SUVType",
    "patient_weight": "PatientWeight", "patient_size": "PatientSize", "patient_sex": "PatientSex",
    "series_date": "SeriesDate", "series_time": "SeriesTime",
}
#: Items of RadiopharmaceuticalInformationSequence kept in ``meta["pet"]["radiopharmaceutical"]``.
_PET_DRUG_KEYWORDS = {
    "start_time": "RadiopharmaceuticalStartTime",
    "start_datetime": "RadiopharmaceuticalStartDateTime",
    "total_dose": "RadionuclideTotalDose", "half_life": "RadionuclideHalfLife",
}
_DRUG_TAG = 0x00540016  # RadiopharmaceuticalInformationSequence


def _values(header: dict, keyword: str) -> list[str]:
    """A multi-valued text element (e.g. CorrectedImage) as a list of strings."""
    v = _raw(header, keyword)
    if v is _SLOW:
        v = _get(header, keyword)
    if v is None:
        return []
    items = v.split("\\") if isinstance(v, str) else v if hasattr(v, "__iter__") else [v]
    return [str(x).strip() for x in items if str(x).strip()]


def _pet_meta(instances: Sequence[Instance]) -> dict:
    """The PET header values :func:`rtkit.suv` needs, as raw DICOM text.

    Values that must be the same in every file are taken from the first file;
    ``conflicts`` lists those that differ between files (keyword -> distinct
    values).  ``acquisitions`` holds the distinct (AcquisitionDate,
    AcquisitionTime, AcquisitionDateTime) of the files, sorted.
    """
    first = instances[0]
    pet: dict = {key: first.text(kw) for key, kw in _PET_SERIES_KEYWORDS.items()}
    pet["corrected_image"] = _values(first.header, "CorrectedImage")
    pet["study_date"] = first.study_date
    pet["source"] = str(first.path)
    conflicts: dict[str, list[str]] = {}

    def drug(inst: Instance) -> tuple[dict[str, str | None], int]:
        items = _seq(inst.header, "RadiopharmaceuticalInformationSequence")
        if not items:
            return {}, 0
        return {key: _str(items[0], kw) for key, kw in _PET_DRUG_KEYWORDS.items()}, len(items)

    first_drug, n_items = drug(first)
    pet["radiopharmaceutical"] = first_drug or None
    pet["radiopharmaceutical_items"] = n_items
    seen: dict[str, set[str | None]] = {}
    parsed: set[bytes] = set()  # encoded sequences already parsed (usually one for the series)
    acquisitions: set[tuple[str, ...]] = set()
    for inst in instances:
        for kw in _PET_SERIES_KEYWORDS.values():
            seen.setdefault(kw, set()).add(inst.text(kw))
        acquisitions.add(tuple(inst.text(kw) or "" for kw in
                               ("AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime")))
        encoded = getattr(inst.header.get(_DRUG_TAG), "value", None)
        if isinstance(encoded, bytes):
            if encoded in parsed:
                continue
            parsed.add(encoded)
        this, _ = drug(inst)
        for key, kw in _PET_DRUG_KEYWORDS.items():
            seen.setdefault(kw, set()).add(this.get(key))
    for kw, values in seen.items():
        if len(values) > 1:
            conflicts[kw] = sorted(str(v) for v in values)
    pet["acquisitions"] = sorted(acquisitions)
    pet["conflicts"] = conflicts
    return pet


def _series_name(instances: Sequence[Instance]) -> str:
    i = instances[0]
    return f"{i.modality} series {i.series_instance_uid} ({len(instances)} files)"


def series_image(instances: Sequence[Instance], get_dataset: Callable[[Instance], Dataset] | None = None) -> Image:
    """An :class:`Image` for one series' header records.

    The grid is built now from the headers; pixel data are read on first
    access to ``Image.array`` (with ``get_dataset`` when given, else by
    reading each file again).
    """
    layout = layout_frames(instances, _series_name(instances))
    getter = get_dataset or (lambda inst: open_dataset(inst.path, headers_only=False))
    i = instances[0]
    return Image(
        lambda: load_pixels(layout, getter),
        layout.grid,
        i.modality,
        series_instance_uid=i.series_instance_uid,
        meta=_meta(instances, layout),
    )


def _files(path_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(path_or_files, (str, os.PathLike)):
        p = Path(path_or_files)
        if p.is_dir():
            return sorted(f for f in p.rglob("*") if f.is_file())
        if p.is_file():
            return [p]
        raise DicomReadError(f"{p}: no such file or folder")
    return [Path(f) for f in path_or_files]


@guard_decoding
def read_image(path_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Image:
    """Read one image series (CT, MR, PET) into an :class:`Image`.

    Parameters
    ----------
    path_or_files : path-like or sequence of path-like
        A folder holding one image series (searched recursively; other,
        non-image DICOM objects and non-DICOM files are ignored), or the
        list of its files.

    Returns
    -------
    Image
        Pixel data read and rescaled (HU for CT) at once.

    Raises
    ------
    DicomReadError
        No image files, unreadable files, or undecodable pixel data.
    AmbiguousCaseError
        The files hold several image series; the message lists them.
    GeometryError
        The slices cannot form one regular grid (see :func:`layout_frames`).
    """
    files = _files(path_or_files)
    by_series: dict[tuple[str | None, str], list[tuple[Instance, Dataset]]] = {}
    for f in files:
        try:
            ds = open_dataset(f, headers_only=False)
        except NotDicomError:
            continue
        inst = make_instance(ds, f)
        if inst.modality not in IMAGE_MODALITIES:
            continue
        by_series.setdefault((inst.series_instance_uid, inst.modality), []).append((inst, ds))
    if not by_series:
        raise DicomReadError(f"{path_or_files}: no CT, MR, PET or NM image files found")
    if len(by_series) > 1:
        lines = "; ".join(
            f"{m} {uid} ({len(v)} files, '{v[0][0].series_description or ''}')"
            for (uid, m), v in by_series.items()
        )
        raise AmbiguousCaseError(
            f"{path_or_files}: holds {len(by_series)} image series: {lines}. Pass the files of one "
            "series, or use rtkit.scan(path).series to pick one."
        )
    pairs = next(iter(by_series.values()))
    datasets = {id(inst): ds for inst, ds in pairs}
    instances = [inst for inst, _ in pairs]
    layout = layout_frames(instances, _series_name(instances))
    # pop: each dataset (and its pixel bytes) is freed once its slice is stacked
    array = load_pixels(layout, lambda inst: datasets.pop(id(inst)))
    i = instances[0]
    return Image(array, layout.grid, i.modality, series_instance_uid=i.series_instance_uid, meta=_meta(instances, layout))

"""Reading RT Dose into :class:`rtkit.Dose`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from ..dose import Dose
from ..errors import DicomReadError, violation, warn
from ._dicom import (
    _float,
    _seq,
    _str,
    decode_pixels,
    expected_pixel_bytes,
    guard_decoding,
    make_instance,
    open_dataset,
    quiet_pydicom,
    read_object,
)
from .series import layout_frames

__all__ = ["read_dose", "dose_from_instance"]

#: Uncompressed transfer syntaxes, whose pixel data length follows from the header.
_NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", None})

log = logging.getLogger("rtkit.io")


def _referenced_beams(ds: Dataset) -> list[int]:
    out = []
    for plan in _seq(ds, "ReferencedRTPlanSequence"):
        for fg in _seq(plan, "ReferencedFractionGroupSequence"):
            for b in _seq(fg, "ReferencedBeamSequence"):
                v = b.get("ReferencedBeamNumber")
                if v not in (None, ""):
                    out.append(int(v))
    return out


def _iter_frames(path: Path):
    """Stored values of each frame in file order, decoded one at a time (bounded memory)."""
    from pydicom.pixels import iter_pixels

    started = False
    try:
        for frame in iter_pixels(path):
            started = True
            yield frame
        return
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError, TypeError) as exc:
        if started:
            raise DicomReadError(
                f"{path}: pixel data cannot be decoded ({exc}); the file is probably truncated. "
                "Re-export it."
            ) from exc
        # no file meta, or a layout iter_pixels does not handle: decode the whole dataset
    ds = open_dataset(path, headers_only=False)
    yield from decode_pixels(ds, path)


def _quiet_frames(path: Path):
    """:func:`_iter_frames` with pydicom's warnings turned into DEBUG log lines."""
    frames = _iter_frames(path)
    while True:
        with quiet_pydicom(path):
            frame = next(frames, None)
        if frame is None:
            return
        yield frame


def dose_from_instance(ds: Dataset, path: Path, *, lazy: bool = True) -> Dose:
    """A :class:`Dose` from an RT Dose header dataset (pixels read from ``path``)."""
    inst = make_instance(ds, path)
    if inst.modality != "RTDOSE":
        raise DicomReadError(f"{path}: not an RT Dose (SOP Class says {inst.modality})")
    if inst.modality_tag and inst.modality_tag != "RTDOSE":
        violation(f"{path}: Modality tag says {inst.modality_tag!r} but the SOP Class is RT Dose", log,
                  repair="read as one")
    scaling = _float(ds, "DoseGridScaling")
    if scaling is None:
        raise DicomReadError(
            f"{path}: DoseGridScaling is missing or not a number (Type 1 when the dose has pixel "
            "data); without it the stored values cannot be converted to Gy."
        )
    if scaling <= 0:
        raise DicomReadError(
            f"{path}: DoseGridScaling is {scaling:g}; it must be positive (Gy per stored unit), else "
            "every dose would be zero or negated. The file is invalid; re-export it."
        )
    units = (_str(ds, "DoseUnits") or "").upper()
    if units not in ("GY", "RELATIVE"):
        violation(f"{path}: DoseUnits is {units or 'missing'!r} (GY or RELATIVE expected)", log,
                  repair="treated as RELATIVE (values are not taken as Gy)")
        units = "RELATIVE"
    need = expected_pixel_bytes(inst)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if need is not None and size is not None and need > size and inst.transfer_syntax_uid in _NATIVE:
        raise DicomReadError(
            f"{path}: NumberOfFrames {inst.number_of_frames} x Rows {inst.rows} x Columns "
            f"{inst.columns} needs {need} bytes of pixel data but the file has {size} bytes: the "
            "file is truncated or NumberOfFrames is wrong. Re-export it."
        )
    elif units == "RELATIVE":
        warn(f"{path}: DoseUnits is RELATIVE: values are relative, not Gy (Dose.is_relative)", log)
    dose_type = (_str(ds, "DoseType") or "").upper() or None
    layout = layout_frames([inst], f"RT Dose {path}")
    slot = {k: j for j, (_, k) in enumerate(layout.sources)}  # file frame -> grid slice
    nframes = inst.number_of_frames

    @guard_decoding
    def load() -> NDArray[np.float32]:
        out = np.empty(layout.grid.shape, dtype=np.float32)
        count = 0
        for k, frame in enumerate(_quiet_frames(path)):
            if k >= nframes:
                count = k + 1
                break
            np.multiply(frame, scaling, out=out[slot[k]], casting="unsafe")
            count = k + 1
        if count != nframes:
            raise DicomReadError(
                f"{path}: NumberOfFrames is {nframes} but the pixel data hold {'more' if count > nframes else count} "
                "frame(s); the file is truncated or inconsistent"
            )
        if out.size and float(out.min()) < 0:
            lowest = float(out.min())
            if dose_type == "ERROR":
                warn(f"{path}: the (DoseType ERROR) dose has negative values (min {lowest:.4g} Gy)", log)
            else:
                violation(
                    f"{path}: the dose has negative values (min {lowest:.4g} Gy) although DoseType is "
                    f"{dose_type or 'missing'!r} (only ERROR doses may be signed, PS3.3 C.8.8.3.4)",
                    log, repair="values kept as stored; DVHs count them below 0 Gy",
                )
        return out

    plans = [_str(p, "ReferencedSOPInstanceUID") for p in _seq(ds, "ReferencedRTPlanSequence")]
    dose = Dose(
        load if lazy else load(),
        layout.grid,
        summation_type=_str(ds, "DoseSummationType"),
        referenced_plan_uid=next((p for p in plans if p), None),
        referenced_beam_numbers=_referenced_beams(ds),
        units=units,
        dose_type=_str(ds, "DoseType"),
        dvh_sequence=_seq(ds, "DVHSequence"),
        series_instance_uid=inst.series_instance_uid,
        meta={"path": str(path), "sop_instance_uid": inst.sop_instance_uid,
              "dose_grid_scaling": scaling, "patient_id": inst.patient_id},
    )
    return dose


@guard_decoding
def read_dose(path: str | os.PathLike[str]) -> Dose:
    """Read an RT Dose file.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    Dose
        Values in Gy (stored values times DoseGridScaling), float32, shape
        ``(frames, rows, columns)`` ordered along the slice normal.  Frame
        positions come from GridFrameOffsetVector in either form (relative:
        first value 0; absolute: first value equal to the position of the
        first frame), with any sign of the step.  Pixel data (16 or 32 bit,
        any transfer syntax pydicom decodes, including big-endian and RLE)
        are decoded one frame at a time, on first access to ``.array``.
        DoseUnits RELATIVE is kept and flagged (``Dose.is_relative``) with a
        warning; DVHSequence items are kept in ``Dose.dvh_sequence``.

    Raises
    ------
    DicomReadError
        Not an RT Dose, missing DoseGridScaling, unreadable pixel data.
    GeometryError
        Missing or inconsistent geometry.
    """
    p = Path(path)
    ds = read_object(p, "an RT Dose", headers_only=True)
    return dose_from_instance(ds, p)

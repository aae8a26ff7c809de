"""Small synthetic cases for cohort tests and the cohort benchmark, written with pydicom only.

Each case is a CT (a few slices of a few pixels), an RT Structure Set with
three ROIs (a PTV sphere, a lung-like ellipsoid and a heart-like sphere, on
the CT planes) whose names vary between cases the way clinical exports do,
and a PLAN RT Dose of an analytical field (a plateau around the PTV on a
low bath).  Orientation, grids and names change with the case number, so a
cohort built from them covers HFS/FFS/prone/decubitus/oblique series and
names that only a structure map relates.

:func:`write_cohort_case` can also write the broken cases the cohort must
report: ``defect="truncated_dose"`` (the RT Dose cut inside its pixel data),
``"no_rtstruct"`` and ``"frame_mismatch"`` (the structure set in a frame of
reference of its own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from builders import (
    ORIENTATIONS,
    pixel_data_offset,
    truncate,
    write_image_series,
    write_rtdose,
    write_rtstruct,
)
from pydicom.uid import generate_uid

__all__ = ["ORIENTATION_CYCLE", "NAMES", "USER_MAP", "write_cohort_case", "write_cohort"]

ORIENTATION_CYCLE = ("HFS", "FFS", "HFP", "FFP", "OBLIQUE", "HFDL", "FFDR")

#: Local names per standard name, cycled over the cases; "Herz"/"cuore" need the user map.
NAMES = {
    "PTV": ("PTV", "ptv", "PTV"),
    "Lung_L": ("Lung_L", "Lt Lung", "LUNG L", "lung left", "Left Lung", "L_Lung"),
    "Heart": ("Heart", "HEART", "Herz", "cuore_1"),
}

#: The structure map the tests pass (the rest comes from rtkit's starter map).
USER_MAP = {"Heart": ["Herz", "re:cuore(_\\d+)?"]}


def _dose_field(xyz: np.ndarray, centre: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(xyz - centre, axis=-1)
    return 2.0 + 58.0 / (1.0 + np.exp((r - 14.0) / 4.0))


def write_cohort_case(folder: Path, number: int, *, defect: str | None = None, scale: int = 1) -> dict:
    """Write case ``number`` into ``folder``; returns its patient ID and ROI names.

    ``scale`` divides every spacing (CT and dose) and multiplies the voxel
    counts, for heavier cases of the same anatomy (the benchmark).
    """
    rng = np.random.default_rng(number)
    orientation_name = ORIENTATION_CYCLE[number % len(ORIENTATION_CYCLE)]
    iop = np.asarray(ORIENTATIONS[orientation_name], float)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    slices = (9 + number % 4) * scale
    rows = cols = (14 + 2 * (number % 3)) * scale
    ps = ((3.0 + 0.5 * (number % 3)) / scale, (3.0 + 0.5 * ((number + 1) % 3)) / scale)
    step = (3.0, 2.5, 4.0)[number % 3] / scale
    # centre the CT on the origin of the patient frame (plus a per-case shift)
    shift = rng.uniform(-5, 5, size=3)
    origin = (shift - row_cos * (cols - 1) * ps[1] / 2 - col_cos * (rows - 1) * ps[0] / 2
              - normal * (slices - 1) * step / 2)
    patient = f"COH{number:04d}"
    frame = generate_uid()
    study = generate_uid()
    ct = write_image_series(folder, shape=(slices, rows, cols), pixel_spacing=ps,
                            orientation=tuple(iop), origin=tuple(origin), slice_step=step,
                            patient_id=patient, frame_of_reference_uid=frame, study_uid=study,
                            rng=number, patient_position=orientation_name[:4] if orientation_name != "OBLIQUE" else "HFS",
                            shuffle=True, random_names=True)
    centre = shift  # PTV at the CT centre
    names = {std: NAMES[std][number % len(NAMES[std])] for std in NAMES}

    def plane_contours(c_world: np.ndarray, radii: tuple[float, float, float]) -> list[np.ndarray]:
        """Ellipsoid cross-sections on the CT planes (polygons of 24 points)."""
        out = []
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        for k in range(slices):
            p = origin + k * step * normal
            dz = float((p - c_world) @ normal)
            f = 1 - (dz / radii[2]) ** 2
            if f <= 0.05:
                continue
            a, b = radii[0] * np.sqrt(f), radii[1] * np.sqrt(f)
            centre_in_plane = c_world + dz * normal  # the ellipse centre on this plane
            pts = centre_in_plane + np.outer(a * np.cos(t), row_cos) + np.outer(b * np.sin(t), col_cos)
            out.append(pts)
        return out

    half_x = (cols - 1) * ps[1] / 2
    rois = [
        {"name": names["PTV"], "number": 1, "contours": plane_contours(centre, (9.0, 9.0, 8.0)), "type": "PTV"},
        {"name": names["Lung_L"], "number": 2,
         "contours": plane_contours(centre + row_cos * half_x * 0.5, (7.0, 10.0, 12.0))},
        {"name": names["Heart"], "number": 3,
         "contours": plane_contours(centre - row_cos * half_x * 0.45 + col_cos * 4.0, (6.0, 6.0, 6.0))},
    ]
    if defect != "no_rtstruct":
        write_rtstruct(folder / "RS.dcm", rois, generate_uid() if defect == "frame_mismatch" else frame,
                       referenced_series_uid=ct.series_instance_uid, study_uid=study, patient_id=patient)
    # dose grid: same orientation, its own spacing, covering the CT
    dps = ((4.0 + (number % 2)) / scale, (4.0 + (number % 2)) / scale)
    dstep = (3.5 + 0.5 * (number % 2)) / scale
    ext = np.array([(cols - 1) * ps[1], (rows - 1) * ps[0], (slices - 1) * step])
    dshape = (int(ext[2] // dstep) + 3, int(ext[1] // dps[0]) + 3, int(ext[0] // dps[1]) + 3)
    dorigin = origin - row_cos * dps[1] - col_cos * dps[0] - normal * dstep
    k, r, c = np.meshgrid(*(np.arange(n) for n in dshape), indexing="ij")
    xyz = (dorigin + np.multiply.outer(k * dstep, normal) + np.multiply.outer(r * dps[0], col_cos)
           + np.multiply.outer(c * dps[1], row_cos))
    gy = _dose_field(xyz, centre)
    rd = write_rtdose(folder / "RD.dcm", gy, origin=tuple(dorigin), pixel_spacing=dps, frame_step=dstep,
                      orientation=tuple(iop), frame_of_reference_uid=frame, patient_id=patient)
    if defect == "truncated_dose":
        truncate(rd["path"], pixel_data_offset(rd["path"]) + 64)
    return {"patient_id": patient, "names": names, "orientation": orientation_name}


def write_cohort(root: Path, n: int, *, broken: bool = True, scale: int = 1) -> dict[str, dict]:
    """``n`` good cases (``case000``...) and, with ``broken``, the three broken ones, under ``root``."""
    info = {}
    for i in range(n):
        info[f"case{i:03d}"] = write_cohort_case(root / f"case{i:03d}", i, scale=scale)
    if broken:
        for j, defect in enumerate(("truncated_dose", "no_rtstruct", "frame_mismatch")):
            name = f"broken_{defect}"
            info[name] = {**write_cohort_case(root / name, 900 + j, defect=defect), "defect": defect}
    return info


class CrashingMap:
    """Stands in for a StructureMap; kills the worker process that unpickles it (os._exit).

    Tests use it to check that a dying worker fails only its own case.
    """

    def __reduce__(self):
        import os

        return (os._exit, (3,))

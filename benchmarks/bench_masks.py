"""Structure-mask benchmark: rtkit ``Structure.mask`` against rt-utils, side by side.

rt-utils (``RTStructBuilder.create_from(ct_folder, rtstruct).get_roi_mask_by_name(name)``)
runs in its own virtual environment, ``benchmarks/_work/peers-venv`` (created on first
use with ``python -m venv`` + ``pip install rt-utils``; rtkit never depends on it), in a
worker subprocess that this script writes to ``_work/masks/`` and drives over a JSON-lines
pipe, so that the two libraries' runs can alternate. rtkit runs in this interpreter.

Cases:

* ``synthetic``: a 512x512x150 CT (0.9765625 mm pixels, 2 mm slices, HFS) and an
  RTSTRUCT of 20 ROIs (body outline, spheres, ellipsoids, cylinders, a cone, boxes, a
  concave C shape, a shell and a torus with holes, two islands in one ROI) whose
  contours lie on the CT planes and reference the CT slices in ContourImageSequence.
  Generated once into ``_work/masks/synthetic`` (reused; ``--regen`` rebuilds it);
* ``mirp``: the GTVs of the three cropped CTs of the MIRP soft-tissue-sarcoma set
  (their RTSTRUCTs reference the original, uncropped series: rt-utils refuses them,
  and the refusal is recorded as its result);
* ``nelms``: the Nelms et al. (2015) analytical structures drawn at 3 mm on the 3 mm CT
  (the ``*_30_*`` files, the only ones whose planes are CT planes).

For each case it times, after one warm-up run of each and as the best of ``--repeat``
alternating runs: rtkit bool masks (``Structure.mask(ct.grid)`` of every ROI, the CT
already loaded), rtkit fractional masks (``fractional=True``), rt-utils masks (after
``create_from``), and both end to end (rtkit ``read_image`` + ``read_structures`` + bool
masks; rt-utils ``create_from`` + masks). It prints rt-utils time / rtkit time against
the targets (bool >= 5x, fractional >= 1x), each method's peak memory in a fresh
subprocess, and per-ROI agreement: voxel counts and Dice of rtkit's bool mask against
rt-utils' (aligned by geometry), and the fractional mask's sum against
``Structure.volume``.

Run:  .venv/bin/python benchmarks/bench_masks.py [--repeat N] [--regen] [--no-memory]
      [--cases synthetic,mirp,nelms] [--work DIR] [--data DIR]
Exit status 1 if a correctness check fails (a missed time target only prints FAIL).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import PeerProcess, proc_status, reset_peak
from _common import machine_facts as _machine_facts
from _common import mib as _mib
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

import rtkit

# ----------------------------------------------------------------- parameters
CT_PX = 512
CT_SLICES = 150
CT_PIXEL = 0.9765625  # mm (500 mm field of view)
CT_STEP = 2.0  # mm
CT_Z0 = -149.0  # mm, first slice
INTERCEPT = -1024
VERTEX_STEP = 1.0  # mm of perimeter per contour vertex (about one per pixel, like a TPS)
SEED = 20240611
TARGETS = {"bool": 5.0, "fractional": 1.0}  # rt-utils time / rtkit time, at least
#: Changing the synthetic data (above or in ``synthetic_rois``) must change this.
DATA_VERSION = 1
MANIFEST = {"data_version": DATA_VERSION, "px": CT_PX, "slices": CT_SLICES, "pixel": CT_PIXEL,
            "step": CT_STEP, "z0": CT_Z0, "vertex_step": VERTEX_STEP, "seed": SEED}

HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "_work"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
MIRP = "mirp-sts-ct-pet-mr/cropped"
NELMS = "nelms-analytical-dvh/DVH-Analysis-Data-Etc"
CASE_KEYS = ("synthetic", "mirp", "nelms")


# ----------------------------------------------------------------- synthetic data
def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["rtkit-bench-masks", *map(str, parts)])


Rings = list[np.ndarray]  # closed rings (N, 2) of x, y in mm, first vertex not repeated


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """A polygon approximating an ellipse, one vertex per VERTEX_STEP mm of perimeter."""
    perimeter = 2 * math.pi * math.sqrt((rx * rx + ry * ry) / 2)
    n = max(12, math.ceil(perimeter / VERTEX_STEP))
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def _rect(cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> np.ndarray:
    x = np.array([-w, w, w, -w]) / 2
    y = np.array([-h, -h, h, h]) / 2
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def _ellipsoid(c: tuple[float, float, float], a: tuple[float, float, float], angle: float = 0.0
               ) -> Callable[[float], Rings]:
    def rings(z: float) -> Rings:
        s = 1.0 - ((z - c[2]) / a[2]) ** 2
        if s <= 0 or min(a[0], a[1]) * math.sqrt(s) < 0.5:
            return []
        return [_ellipse(c[0], c[1], a[0] * math.sqrt(s), a[1] * math.sqrt(s), angle)]
    return rings


def _prism(ring: np.ndarray, z0: float, z1: float) -> Callable[[float], Rings]:
    return lambda z: [ring] if z0 <= z <= z1 else []


def _union(*parts: Callable[[float], Rings]) -> Callable[[float], Rings]:
    return lambda z: [r for p in parts for r in p(z)]


def _cone(cx: float, cy: float, r0: float, z0: float, z1: float) -> Callable[[float], Rings]:
    def rings(z: float) -> Rings:
        r = r0 * (z1 - z) / (z1 - z0)
        return [_ellipse(cx, cy, r, r)] if z0 <= z <= z1 and r >= 0.5 else []
    return rings


def _torus(cx: float, cy: float, cz: float, big: float, small: float) -> Callable[[float], Rings]:
    def rings(z: float) -> Rings:
        d = small * small - (z - cz) ** 2
        if d <= 0.25:
            return []
        w = math.sqrt(d)
        return [_ellipse(cx, cy, big + w, big + w), _ellipse(cx, cy, big - w, big - w)]
    return rings


def _c_shape(cx: float, cy: float, r_out: float, r_in: float) -> np.ndarray:
    """A concave annular sector (300 degrees open towards +x)."""
    n_out = math.ceil(r_out * math.radians(300) / VERTEX_STEP)
    n_in = math.ceil(r_in * math.radians(300) / VERTEX_STEP)
    t_out = np.linspace(math.radians(30), math.radians(330), n_out)
    t_in = np.linspace(math.radians(330), math.radians(30), n_in)
    x = np.concatenate([r_out * np.cos(t_out), r_in * np.cos(t_in)])
    y = np.concatenate([r_out * np.sin(t_out), r_in * np.sin(t_in)])
    return np.stack([cx + x, cy + y], axis=1)


def _body(z: float) -> Rings:
    if not -145.0 <= z <= 145.0:
        return []
    return [_ellipse(0.0, 5.0, 200.0 + 12.0 * math.sin(z / 40.0), 150.0 - 8.0 * math.cos(z / 55.0))]


def synthetic_rois() -> list[tuple[str, str, Callable[[float], Rings]]]:
    """(name, RTROIInterpretedType, z -> rings) of the 20 synthetic ROIs (LPS mm)."""
    return [
        ("BODY", "EXTERNAL", _body),
        ("PTV_sphere60", "PTV", _ellipsoid((0, 10, 0), (60, 60, 60))),
        ("CTV_sphere40", "CTV", _ellipsoid((0, 10, 0), (40, 40, 40))),
        ("GTV_sphere20", "GTV", _ellipsoid((10, 20, 5), (20, 20, 20))),
        ("Sphere_r10", "ORGAN", _ellipsoid((-90, -40, 41), (10, 10, 10))),
        ("Sphere_r5", "ORGAN", _ellipsoid((90, 60, -59), (5, 5, 5))),
        ("Sphere_r3", "ORGAN", _ellipsoid((-60, 80, 91), (3, 3, 3))),
        ("Lung_L", "ORGAN", _ellipsoid((110, -10, 10), (70, 55, 110))),
        ("Lung_R", "ORGAN", _ellipsoid((-110, -10, 10), (65, 55, 105))),
        ("Ellipsoid_rot30", "ORGAN", _ellipsoid((-40, -70, -80), (45, 20, 30), angle=30)),
        ("SpinalCord", "ORGAN", _prism(_ellipse(0, 100, 7, 7), -139, 139)),
        ("Cylinder_r25", "ORGAN", _prism(_ellipse(60, -80, 25, 25), -121, -41)),
        ("Cylinder_ellip", "ORGAN", _prism(_ellipse(-70, 60, 35, 18, angle=-20), 61, 129)),
        ("Shell_hole", "ORGAN", _union(_ellipsoid((0, -60, 81), (45, 45, 45)),
                                       _ellipsoid((0, -60, 81), (30, 30, 30)))),
        ("Torus_hole", "ORGAN", _torus(-120, 80, -41, 40, 12)),
        ("Cone", "ORGAN", _cone(120, 70, 35, -131, -61)),
        ("Box", "ORGAN", _prism(_rect(-20, 40, 50, 30), -131, -91)),
        ("Box_rot45", "ORGAN", _prism(_rect(60, 40, 40, 40, angle=45), 101, 139)),
        ("C_shape", "ORGAN", _prism(_c_shape(140, 0, 35, 20), -61, -1)),
        ("Two_islands", "ORGAN", _union(_ellipsoid((-140, -60, 121), (15, 15, 15)),
                                        _ellipsoid((-100, -60, 121), (15, 15, 15)))),
    ]


def _ct_slice(k: int, uids: dict[str, str], pixels: np.ndarray) -> Dataset:
    sop = _uid("ct", k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = "20240611"
    ds.StudyTime = "120000"
    ds.Modality = "CT"
    ds.Manufacturer = "rtkit-bench"
    ds.PatientName = "Bench^Masks"
    ds.PatientID = "MASKS01"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    z = CT_Z0 + CT_STEP * k
    half = (CT_PX / 2 - 0.5) * CT_PIXEL
    ds.ImagePositionPatient = [-half, -half, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z
    ds.SliceThickness = CT_STEP
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = CT_PX
    ds.PixelSpacing = [CT_PIXEL, CT_PIXEL]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def _ds_text(values: np.ndarray) -> list[str]:
    """DS strings (at most 16 characters) of contour coordinates."""
    return [f"{v:.4f}" for v in values]


def _rtstruct(uids: dict[str, str], slice_uids: list[str]) -> Dataset:
    sop = _uid("rtstruct")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop
    ds.StudyDate = ds.SeriesDate = ds.StructureSetDate = "20240611"
    ds.StudyTime = ds.StructureSetTime = "120000"
    ds.Modality = "RTSTRUCT"
    ds.Manufacturer = "rtkit-bench"
    ds.PatientName = "Bench^Masks"
    ds.PatientID = "MASKS01"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = _uid("rtstruct-series")
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "BENCH"

    def image_ref(sop_uid: str) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = sop_uid
        return item

    series = Dataset()
    series.SeriesInstanceUID = uids["series"]
    series.ContourImageSequence = Sequence([image_ref(u) for u in slice_uids])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    study.ReferencedSOPInstanceUID = uids["study"]
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = uids["frame"]
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    z_planes = CT_Z0 + CT_STEP * np.arange(CT_SLICES)
    roi_seq, contour_seq, obs_seq = [], [], []
    for number, (name, kind, shape) in enumerate(synthetic_rois(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = uids["frame"]
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        roi_seq.append(roi)
        contours = []
        for k, z in enumerate(z_planes):
            for ring in shape(float(z)):
                c = Dataset()
                c.ContourImageSequence = Sequence([image_ref(slice_uids[k])])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(ring)
                xyz = np.column_stack([ring, np.full(len(ring), z)]).ravel()
                c.ContourData = _ds_text(xyz)
                contours.append(c)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [(37 * number) % 256, (91 * number) % 256, (151 * number) % 256]
        rc.ContourSequence = Sequence(contours)
        contour_seq.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = kind
        obs.ROIInterpreter = ""
        obs_seq.append(obs)
    ds.StructureSetROISequence = Sequence(roi_seq)
    ds.ROIContourSequence = Sequence(contour_seq)
    ds.RTROIObservationsSequence = Sequence(obs_seq)
    return ds


def _phantom(z: float) -> np.ndarray:
    """Stored values of one slice: water inside the body outline, air outside."""
    half = (CT_PX / 2 - 0.5) * CT_PIXEL
    xs = -half + CT_PIXEL * np.arange(CT_PX)
    yy, xx = np.meshgrid(xs, xs, indexing="ij")
    hu = np.full((CT_PX, CT_PX), -1000, dtype=np.int16)
    for ring in _body(z):
        rx, ry = np.ptp(ring[:, 0]) / 2, np.ptp(ring[:, 1]) / 2
        hu[(xx / rx) ** 2 + ((yy - 5.0) / ry) ** 2 <= 1] = 0
    return hu - INTERCEPT


def prepare(folder: Path, regen: bool) -> bool:
    """Write the synthetic CT and RTSTRUCT unless a matching set is there. True if written."""
    manifest = folder / "manifest.json"
    if not regen and manifest.is_file():
        try:
            if json.loads(manifest.read_text()) == MANIFEST:
                return False
        except (OSError, ValueError):
            pass
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "ct").mkdir(parents=True)
    (folder / "rtstruct").mkdir()
    uids = {"study": _uid("study"), "series": _uid("series"), "frame": _uid("frame")}
    slice_uids = []
    for k in range(CT_SLICES):
        ds = _ct_slice(k, uids, _phantom(CT_Z0 + CT_STEP * k))
        ds.save_as(folder / "ct" / f"CT_{k:03d}.dcm", enforce_file_format=True)
        slice_uids.append(ds.SOPInstanceUID)
    _rtstruct(uids, slice_uids).save_as(folder / "rtstruct" / "RS.dcm", enforce_file_format=True)
    manifest.write_text(json.dumps(MANIFEST, indent=2) + "\n")
    return True


# ----------------------------------------------------------------- cases
@dataclass
class Item:
    """One RTSTRUCT on its CT."""

    label: str  # how its ROIs are labelled in the tables: "{roi}", "{file}" or "{file} {roi}"
    ct: Path
    rs: Path

    def roi_label(self, roi: str) -> str:
        return self.label.format(file=self.rs.stem, roi=roi)


@dataclass
class Case:
    key: str
    title: str
    items: list[Item]
    missing: str = ""  # why the case cannot run, if it cannot


def build_cases(work: Path, data: Path) -> dict[str, Case]:
    syn = work / "masks" / "synthetic"
    cases = {"synthetic": Case("synthetic", "synthetic 512x512x150 CT, 20 ROIs",
                               [Item("{roi}", syn / "ct", syn / "rtstruct" / "RS.dcm")])}
    mirp = [Item(p + " {roi}", data / MIRP / p / "CT" / "dicom" / "image", data / MIRP / p / "CT" / "dicom" / "mask" / "RS.dcm")
            for p in ("STS_001", "STS_002", "STS_003")]
    cases["mirp"] = Case("mirp", "MIRP STS CT GTVs, 3 patients", mirp)
    nelms_ct = data / NELMS / "CT" / "3 mm CT"
    files = sorted((data / NELMS / "STRUCTURES").glob("*_30_*.dcm"))
    cases["nelms"] = Case("nelms", f"Nelms 3 mm CT, {len(files)} *_30_* structure sets",
                          [Item("{file}", nelms_ct, f) for f in files])
    for case in cases.values():
        if case.key == "synthetic":
            continue
        gone = [p for it in case.items for p in (it.ct, it.rs) if not p.exists()]
        if not case.items or gone:
            case.missing = f"data not found: {gone[0] if gone else data / NELMS / 'STRUCTURES'}"
    return cases


@dataclass
class Loaded:
    """rtkit's view of a case: CT grids and the non-empty ROIs of each item."""

    grids: dict[Path, rtkit.Grid]
    rois: list[tuple[Item, rtkit.Structure]]
    warnings: list[str] = field(default_factory=list)


def rtkit_load(case: Case) -> Loaded:
    grids: dict[Path, rtkit.Grid] = {}
    rois = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for it in case.items:
            if it.ct not in grids:
                grids[it.ct] = rtkit.read_image(it.ct).grid
            rois += [(it, s) for s in rtkit.read_structures(it.rs).structures if not s.is_empty]
    return Loaded(grids, rois, [f"{w.category.__name__}: {w.message}" for w in caught])


def rtkit_masks(loaded: Loaded, fractional: bool) -> int:
    """Every ROI's mask on its CT grid, one at a time (not kept)."""
    n = 0
    for it, s in loaded.rois:
        m = s.mask(loaded.grids[it.ct], fractional)
        n += 1
        del m
    return n


def rtkit_end_to_end(case: Case) -> int:
    """read_image (each CT once) + read_structures + bool masks of every non-empty ROI."""
    grids: dict[Path, rtkit.Grid] = {}
    n = 0
    for it in case.items:
        if it.ct not in grids:
            grids[it.ct] = rtkit.read_image(it.ct).grid
        for s in rtkit.read_structures(it.rs).structures:
            if not s.is_empty:
                m = s.mask(grids[it.ct])
                n += 1
                del m
    return n


# ----------------------------------------------------------------- the rt-utils worker
WORKER_SOURCE = r'''"""rt-utils side of benchmarks/bench_masks.py (written by it; runs in the peers venv).

--serve JOB: read JSON commands from stdin, one per line ("load", "masks", "end_to_end",
"quit") and answer each with one JSON line on stdout.  --memory JOB: load and build every
mask once in this fresh process and print the peak memory as JSON.
"""
import gc
import json
import os
import platform
import sys
import time
import traceback
from importlib import metadata

import numpy as np

OUT = sys.stdout
sys.stdout = sys.stderr  # keep the answer channel clean


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def err(exc):
    return f"{type(exc).__name__}: {exc}"


def create(item, **kw):
    from rt_utils import RTStructBuilder
    return RTStructBuilder.create_from(item["ct"], item["rs"], **kw)


def versions():
    import cv2
    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for d in ("rt-utils", "pydicom"):
        out[d] = metadata.version(d)
    return out


def crop_stats(mask):
    """Voxel count, bounding box and the mask cropped to it."""
    n = int(np.count_nonzero(mask))
    if n == 0:
        return {"count": 0, "bbox": None, "shape": list(mask.shape)}, None
    box = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        box += [int(hit[0]), int(hit[-1]) + 1]
    crop = mask[box[0]:box[1], box[2]:box[3], box[4]:box[5]]
    return {"count": n, "bbox": box, "shape": list(mask.shape), "dtype": str(mask.dtype)}, crop


class Worker:
    def __init__(self, job):
        self.items = job["items"]
        self.out = job["out"]
        self.rts = [None] * len(self.items)

    def load(self):
        res = []
        for i, item in enumerate(self.items):
            gc.collect()
            t0 = time.perf_counter()
            try:
                rt = create(item)
            except Exception as exc:
                r = {"ok": False, "error": err(exc), "load_s": time.perf_counter() - t0}
                try:
                    rt2 = create(item, warn_only=True)
                    n = sum(int(np.count_nonzero(rt2.get_roi_mask_by_name(name))) for name in item["rois"])
                    r["warn_only"] = f"loads; its masks hold {n} voxels in all"
                except Exception as exc2:
                    r["warn_only"] = err(exc2)
                res.append(r)
                continue
            self.rts[i] = rt
            s = rt.series_data
            res.append({"ok": True, "load_s": time.perf_counter() - t0, "n_slices": len(s),
                        "positions": [[float(v) for v in d.ImagePositionPatient] for d in s],
                        "rows": int(s[0].Rows), "columns": int(s[0].Columns)})
        return {"items": res, "versions": versions()}

    def masks(self, save=False):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        stats = {}
        for i, rt in enumerate(self.rts):
            if rt is None:
                continue
            for j, name in enumerate(self.items[i]["rois"]):
                m = rt.get_roi_mask_by_name(name)
                if save:
                    st, crop = crop_stats(m)
                    if crop is not None:
                        st["npy"] = os.path.join(self.out, f"rtutils_{i:03d}_{j:03d}.npy")
                        np.save(st["npy"], crop)
                    stats[f"{i}/{j}"] = st
                del m
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "rois": stats}

    def end_to_end(self):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        n = failed = 0
        for item in self.items:
            try:
                rt = create(item)
            except Exception:
                failed += 1
                continue
            for name in item["rois"]:
                m = rt.get_roi_mask_by_name(name)
                n += 1
                del m
            del rt
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                "n_masks": n, "failed": failed}


def memory(job):
    gc.collect()
    rss0 = status("VmRSS")
    rts = []
    for item in job["items"]:
        try:
            rts.append((item, create(item)))
        except Exception:
            pass
    hwm_load = status("VmHWM")
    ok = reset_peak()
    gc.collect()
    rss1 = status("VmRSS")
    n = 0
    for item, rt in rts:
        for name in item["rois"]:
            m = rt.get_roi_mask_by_name(name)
            n += 1
            del m
    hwm = status("VmHWM")
    return {"n_masks": n, "reset_ok": ok, "load_peak": hwm_load - rss0, "masks_peak": hwm - rss1,
            "end_to_end_peak": max(hwm_load, hwm) - rss0}


def main():
    mode, job_path = sys.argv[1], sys.argv[2]
    with open(job_path) as f:
        job = json.load(f)
    if mode == "--memory":
        print(json.dumps(memory(job)), file=OUT, flush=True)
        return
    w = Worker(job)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            args = {k: v for k, v in cmd.items() if k != "cmd"}
            res = getattr(w, cmd["cmd"])(**args)
        except Exception:
            res = {"error": traceback.format_exc()}
        print(json.dumps(res), file=OUT, flush=True)


if __name__ == "__main__":
    main()
'''


def ensure_peers_venv(venv: Path) -> tuple[Path | None, str]:
    """The peers venv's python, creating the venv (rt-utils) if needed; (None, why) on failure."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import rt_utils, cv2"]
    if py.is_file() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return py, "reused"
    print(f"creating {venv} (python -m venv; pip install rt-utils) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "rt-utils"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None, f"pip install rt-utils failed: {proc.stderr.strip().splitlines()[-1:]}"
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the venv: {exc}"
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        return None, "rt_utils does not import in the peers venv"
    return py, "created"


class Peer(PeerProcess):
    """The rt-utils worker of one case, driven over a JSON-lines pipe."""

    def __init__(self, python: Path, worker: Path, job: Path, log: Path) -> None:
        super().__init__(python, worker, ["--serve", str(job)], log, "rt-utils",
                         lambda res: isinstance(res.get("error"), str) and res["error"].startswith("Traceback"))


# ----------------------------------------------------------------- measurement
Timing = tuple[float, float]  # wall s, CPU s


def _timed(fn: Callable[[], Any]) -> Timing:
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def child_memory(case: Case, mode: str) -> None:
    """In a fresh process: load the case with rtkit, then every mask once; print peaks as JSON."""
    warnings.simplefilter("ignore")
    gc.collect()
    rss0 = proc_status("VmRSS")
    loaded = rtkit_load(case)
    hwm_load = proc_status("VmHWM")
    ok = reset_peak()
    gc.collect()
    rss1 = proc_status("VmRSS")
    n = rtkit_masks(loaded, fractional=(mode == "fractional"))
    hwm = proc_status("VmHWM")
    print(json.dumps({"n_masks": n, "reset_ok": ok, "load_peak": hwm_load - rss0, "masks_peak": hwm - rss1,
                      "end_to_end_peak": max(hwm_load, hwm) - rss0}))


def measure_rtkit_memory(case: Case, mode: str, work: Path, data: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--work", str(work), "--data", str(data),
           "--child", case.key, mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {case.key}/{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_peer_memory(python: Path, worker: Path, job: Path) -> dict[str, Any]:
    proc = subprocess.run([str(python), str(worker), "--memory", str(job)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"rt-utils memory worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- agreement
@dataclass
class Agreement:
    label: str
    exact_cc: float
    frac_rel: float  # (fractional sum - exact) / exact
    bool_n: int
    voxel_cc: float
    rt_n: int | None = None  # rt-utils voxel count (None: no rt-utils mask)
    dice: float | None = None
    clipped: int = 0  # rt-utils voxels outside the rtkit grid after alignment
    note: str = ""


def _align(st: dict[str, Any], info: dict[str, Any], grid: rtkit.Grid) -> tuple[np.ndarray, int]:
    """rt-utils' mask as a bool array on rtkit's grid (slices, rows, columns).

    rt-utils fills slice i of its mask with ``cv.fillPoly`` at x = column, y = row, so its
    axes are (row, column, slice), with slices sorted along the normal (its
    ``series_data``) and the array allocated as (Columns, Rows, slices).  Slice i is put at
    the rtkit slice whose centre is that slice's ImagePositionPatient.
    """
    out = np.zeros(grid.shape, dtype=bool)
    if not st["count"]:
        return out, 0
    idx = grid.world_to_index(np.asarray(info["positions"], dtype=np.float64))
    kmap = np.rint(idx[:, 0]).astype(int)
    if (np.abs(idx - np.rint(idx)).max() > 1e-3 or np.abs(idx[:, 1:]).max() > 1e-3
            or kmap.min() < 0 or kmap.max() >= grid.shape[0] or len(set(kmap.tolist())) != len(kmap)):
        raise ValueError("rt-utils slices do not fall on rtkit's slice centres")
    crop = np.load(st["npy"])
    r0, r1, c0, c1, i0, i1 = st["bbox"]
    R, C = grid.shape[1:]
    rr, cc = min(r1, R), min(c1, C)
    kept = crop[: max(rr - r0, 0), : max(cc - c0, 0), :]
    if kept.size:
        out[kmap[i0:i1], r0:rr, c0:cc] = np.moveaxis(kept, 2, 0)
    return out, int(st["count"] - np.count_nonzero(kept))


def agreement(loaded: Loaded, peer_load: dict[str, Any] | None, peer_masks: dict[str, Any] | None,
              item_index: dict[int, int]) -> list[Agreement]:
    """Per ROI: rtkit fractional sum vs volume; rtkit bool vs rt-utils (when it ran)."""
    out = []
    roi_counter: dict[int, int] = {}
    for it, s in loaded.rois:
        grid = loaded.grids[it.ct]
        i = item_index[id(it)]
        j = roi_counter.get(i, 0)
        roi_counter[i] = j + 1
        vox = abs(float(np.linalg.det(grid.affine[:3, :3]))) / 1000.0
        b = s.mask(grid)
        f = s.mask(grid, fractional=True)
        exact = s.volume
        a = Agreement(it.roi_label(s.name), exact, (float(f.sum(dtype=np.float64)) * vox - exact) / exact,
                      int(np.count_nonzero(b)), vox)
        del f
        info = peer_load["items"][i] if peer_load else None
        if info is not None and info["ok"] and peer_masks is not None:
            st = peer_masks["rois"][f"{i}/{j}"]
            try:
                rtm, a.clipped = _align(st, info, grid)
            except ValueError as exc:
                a.note = str(exc)
            else:
                a.rt_n = int(st["count"])
                inter = int(np.count_nonzero(b & rtm))
                total = a.bool_n + int(np.count_nonzero(rtm))
                a.dice = 2.0 * inter / total if total else 1.0
                if tuple(st["shape"][:2]) != (info["rows"], info["columns"]):
                    a.note = (f"rt-utils array is (Columns, Rows) = {tuple(st['shape'][:2])} for "
                              f"{info['rows']} rows x {info['columns']} columns")
        out.append(a)
    return out


# ----------------------------------------------------------------- reporting
def machine_facts() -> list[str]:
    import shapely

    return _machine_facts(f"shapely: {shapely.__version__}")


def _best(runs: list[Timing]) -> tuple[float, float]:
    return min(w for w, _ in runs), min(c for _, c in runs)


@dataclass
class CaseResult:
    case: Case
    n_rois: int
    rt_bool: list[Timing]
    rt_frac: list[Timing]
    rt_e2e: list[Timing]
    peer_masks: list[Timing] | None  # None: rt-utils could not produce masks
    peer_e2e: list[Timing] | None
    peer_error: str = ""
    peer_warn_only: str = ""
    agreement: list[Agreement] = field(default_factory=list)
    rtkit_warnings: list[str] = field(default_factory=list)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid_voxels: int = 0  # voxels of the largest CT grid of the case


def run_case(case: Case, args: argparse.Namespace, peer_py: Path | None, work: Path) -> CaseResult:
    loaded = rtkit_load(case)
    out_dir = work / "masks" / "out" / case.key
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    index = {id(it): i for i, it in enumerate(case.items)}
    rois_by_item: list[list[str]] = [[] for _ in case.items]
    for it, s in loaded.rois:
        rois_by_item[index[id(it)]].append(s.name)
    job = {"items": [{"ct": str(it.ct), "rs": str(it.rs), "rois": rois_by_item[i]} for i, it in enumerate(case.items)],
           "out": str(out_dir)}
    job_path = work / "masks" / f"job_{case.key}.json"
    job_path.write_text(json.dumps(job, indent=1))

    peer = Peer(peer_py, work / "masks" / "rtutils_worker.py", job_path, work / "masks" / "worker.log") if peer_py else None
    peer_load = peer_masks_warm = None
    error = warn_only = ""
    peer_ok = False
    try:
        if peer:
            peer_load = peer.ask("load")
            bad = [r for r in peer_load["items"] if not r["ok"]]
            if bad:
                error = f"{len(bad)} of {len(case.items)} create_from raised: {bad[0]['error']}"
                warn_only = bad[0].get("warn_only", "")
            peer_ok = len(bad) < len(case.items)
        # warm-up (results kept for the agreement check), then alternating timed runs
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rtkit_masks(loaded, False)
            rtkit_masks(loaded, True)
            rtkit_end_to_end(case)
        loaded.warnings += [f"{w.category.__name__}: {w.message}" for w in caught]
        if peer and peer_ok:
            peer_masks_warm = peer.ask("masks", save=True)
            peer.ask("end_to_end")
        rt_bool: list[Timing] = []
        rt_frac: list[Timing] = []
        rt_e2e: list[Timing] = []
        p_masks: list[Timing] = []
        p_e2e: list[Timing] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(args.repeat):
                rt_bool.append(_timed(lambda: rtkit_masks(loaded, False)))
                if peer and peer_ok:
                    r = peer.ask("masks")
                    p_masks.append((r["wall"], r["cpu"]))
                rt_frac.append(_timed(lambda: rtkit_masks(loaded, True)))
                rt_e2e.append(_timed(lambda: rtkit_end_to_end(case)))
                if peer and peer_ok:
                    r = peer.ask("end_to_end")
                    p_e2e.append((r["wall"], r["cpu"]))
    finally:
        if peer:
            peer.close()
    res = CaseResult(case, len(loaded.rois), rt_bool, rt_frac, rt_e2e, p_masks or None, p_e2e or None,
                     error, warn_only, rtkit_warnings=loaded.warnings,
                     grid_voxels=max(int(np.prod(g.shape)) for g in loaded.grids.values()))
    res.agreement = agreement(loaded, peer_load if peer_ok else None, peer_masks_warm, index)
    if not args.no_memory:
        res.memory["rtkit bool"] = measure_rtkit_memory(case, "bool", work, args.data.resolve())
        res.memory["rtkit fractional"] = measure_rtkit_memory(case, "fractional", work, args.data.resolve())
        if peer_py:
            res.memory["rt-utils"] = measure_peer_memory(peer_py, work / "masks" / "rtutils_worker.py", job_path)
    return res


def print_timings(results: list[CaseResult]) -> None:
    print(f"{'benchmark':<36}{'rtkit s':>9}{'rt-utils s':>12}{'rt-utils/rtkit':>16}{'target':>9}  result"
          f"{'CPU ratio':>11}")
    for r in results:
        k = r.case.key
        rows: list[tuple[str, list[Timing], list[Timing] | None, float | None]] = [
            (f"{k}: {r.n_rois} bool masks", r.rt_bool, r.peer_masks, TARGETS["bool"]),
            (f"{k}: {r.n_rois} fractional masks", r.rt_frac, r.peer_masks, TARGETS["fractional"]),
            (f"{k}: end to end (load + bool)", r.rt_e2e, r.peer_e2e, None),
        ]
        for label, rt_runs, p_runs, target in rows:
            rt_w, rt_c = _best(rt_runs)
            tgt = f">= {target:g}x" if target else "-"
            if p_runs is None:
                print(f"{label:<36}{rt_w:>9.3f}{'failed':>12}{'-':>16}{tgt:>9}  {'n/a':<6}{'-':>9}")
                continue
            p_w, p_c = _best(p_runs)
            ratio = p_w / rt_w
            verdict = ("PASS" if ratio >= target else "FAIL") if target else "info"
            print(f"{label:<36}{rt_w:>9.3f}{p_w:>12.3f}{ratio:>14.2f}x{tgt:>10}  {verdict:<6}{p_c / rt_c:>8.2f}x")
    print()
    print("  times: best wall clock of the whole case (all its ROIs); CPU ratio = best process CPU time")
    print("         rt-utils / rtkit. rtkit: Structure.mask(ct.grid[, fractional=True]) per ROI, CT and")
    print("         RTSTRUCT already read; rt-utils: get_roi_mask_by_name per ROI after create_from.")
    print("         End to end: rtkit read_image (each CT once) + read_structures + bool masks;")
    print("         rt-utils create_from (CT series read again for every RTSTRUCT, as its API takes")
    print("         both) + masks. All runs, wall s:")
    for r in results:
        parts = [("bool", r.rt_bool), ("frac", r.rt_frac), ("e2e", r.rt_e2e)]
        print(f"    {r.case.key} rtkit " + "  ".join(f"{n} " + " ".join(f"{w:.3f}" for w, _ in runs) for n, runs in parts))
        if r.peer_masks:
            print(f"    {r.case.key} rt-utils masks " + " ".join(f"{w:.3f}" for w, _ in r.peer_masks)
                  + "  e2e " + " ".join(f"{w:.3f}" for w, _ in (r.peer_e2e or [])))
        if r.peer_error:
            print(f"    {r.case.key} rt-utils: {r.peer_error}")
            if r.peer_warn_only:
                print(f"    {r.case.key} rt-utils with create_from(..., warn_only=True): {r.peer_warn_only}")
    print()


def print_memory(results: list[CaseResult]) -> None:
    if not any(r.memory for r in results):
        return
    print("peak memory, each method and case in its own fresh subprocess (masks built one at a time)")
    print(f"{'case':<11}{'method':<18}{'masks peak +':>13}{'end-to-end peak +':>19}  one mask")
    for r in results:
        for key, m in r.memory.items():
            if not m.get("n_masks"):
                print(f"{r.case.key:<11}{key:<18}{'-':>13}{_mib(m['end_to_end_peak']):>19}  (no mask: load failed)")
                continue
            frac = key == "rtkit fractional"
            size = f"{'float32' if frac else 'bool'} {_mib(r.grid_voxels * (4 if frac else 1))}"
            print(f"{r.case.key:<11}{key:<18}{_mib(m['masks_peak']):>13}{_mib(m['end_to_end_peak']):>19}  {size}")
    print("  masks peak + = VmHWM while building the masks minus VmRSS once loaded (peak reset with")
    print("  /proc/self/clear_refs); end-to-end peak + = highest VmHWM minus VmRSS before loading")
    print()


def print_agreement(r: CaseResult) -> None:
    has_peer = any(a.rt_n is not None for a in r.agreement)
    print(f"agreement, {r.case.key}: {r.case.title}")
    head = f"  {'ROI':<22}{'exact cm3':>10}{'frac-exact':>11}{'rtkit vox':>11}"
    if has_peer:
        head += f"{'rt-utils vox':>13}{'rt-utils/rtkit':>15}{'Dice':>7}{'rtkit vs exact':>15}{'rt-utils vs exact':>18}"
    print(head)
    for a in r.agreement:
        line = f"  {a.label[:22]:<22}{a.exact_cc:>10.3f}{a.frac_rel:>+11.0e}{a.bool_n:>11,}"
        if has_peer:
            if a.rt_n is None:
                line += f"{'-':>13}{'-':>15}{'-':>7}{(a.bool_n * a.voxel_cc / a.exact_cc - 1) * 100:>14.2f}%{'-':>18}"
            else:
                line += (f"{a.rt_n:>13,}{(a.rt_n / a.bool_n - 1) * 100 if a.bool_n else float('nan'):>+14.2f}%"
                         f"{a.dice:>7.3f}{(a.bool_n * a.voxel_cc / a.exact_cc - 1) * 100:>+14.2f}%"
                         f"{(a.rt_n * a.voxel_cc / a.exact_cc - 1) * 100:>+17.2f}%")
        else:
            line += f"   rtkit bool vs exact {(a.bool_n * a.voxel_cc / a.exact_cc - 1) * 100:+.2f}%"
        print(line + (f"  ({a.note})" if a.note else ""))
    print("  exact = Structure.volume; frac-exact = relative difference (sum of the fractional mask x")
    print("  voxel volume - exact) / exact; vox = voxels of the bool mask; Dice and counts after aligning")
    print("  rt-utils' (row, col, slice) mask onto rtkit's (slice, row, col) grid by each slice's")
    print("  ImagePositionPatient; 'vs exact' = bool-mask volume (voxels x voxel volume) vs exact.")
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder (default %(default)s)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default %(default)s)")
    ap.add_argument("--cases", default=",".join(CASE_KEYS), help="comma-separated subset of %(default)s")
    ap.add_argument("--regen", action="store_true", help="regenerate the synthetic data even if present")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method, best kept (default 3)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = args.work.resolve()
    cases = build_cases(work, args.data.resolve())
    if args.child:
        child_memory(cases[args.child[0]], args.child[1])
        return 0
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    if unknown := [k for k in keys if k not in cases]:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(CASE_KEYS)}")

    t0 = time.perf_counter()
    generated = prepare(work / "masks" / "synthetic", args.regen) if "synthetic" in keys else False
    gen_note = f"generated in {time.perf_counter() - t0:.1f} s" if generated else "reused"
    peer_py, venv_note = ensure_peers_venv(work / "peers-venv")
    worker = work / "masks" / "rtutils_worker.py"
    worker.parent.mkdir(parents=True, exist_ok=True)
    (worker.parent / "worker.log").unlink(missing_ok=True)
    if not worker.is_file() or worker.read_text() != WORKER_SOURCE:
        worker.write_text(WORKER_SOURCE)
    peer_versions = ""
    if peer_py:
        proc = subprocess.run([str(peer_py), "-c", "import json, sys; sys.path.insert(0, sys.argv[1]); "
                               "import rtutils_worker as w; print(json.dumps(w.versions()), file=w.OUT)", str(worker.parent)],
                              capture_output=True, text=True, check=False)
        v = json.loads(proc.stdout) if proc.returncode == 0 else {}
        peer_versions = ", ".join(f"{k} {v[k]}" for k in ("rt-utils", "opencv", "pydicom", "numpy", "python") if k in v)

    print("rtkit structure-mask benchmark: rtkit vs rt-utils")
    for line in machine_facts():
        print("  " + line)
    print(f"  rt-utils: {peer_versions or 'unavailable: ' + venv_note} (in {work / 'peers-venv'}, {venv_note})")
    print(f"  data:     synthetic in {work / 'masks' / 'synthetic'} ({gen_note}); real data in {args.data.resolve()}")
    print(f"  timing:   best of {args.repeat} alternating runs after 1 warm-up run each (OS file cache warm)")
    print(f"  load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at start")
    print()

    results: list[CaseResult] = []
    skipped = []
    for k in keys:
        case = cases[k]
        if case.missing:
            skipped.append(f"{k}: {case.missing}")
            continue
        results.append(run_case(case, args, peer_py, work))
    for s in skipped:
        print(f"skipped {s}")

    print_timings(results)
    print_memory(results)
    for r in results:
        print_agreement(r)

    checks: list[tuple[str, bool]] = []
    for r in results:
        worst = max(abs(a.frac_rel) for a in r.agreement)
        checks.append((f"{r.case.key}: fractional sum = Structure.volume for all {len(r.agreement)} ROIs "
                       f"(worst relative difference {worst:.0e}, tolerance 1e-4)", worst <= 1e-4))
        empty = [a.label for a in r.agreement if a.bool_n == 0]
        checks.append((f"{r.case.key}: every bool mask non-empty" + (f" (empty: {', '.join(empty)})" if empty else ""),
                       not empty))
        dice = [a.dice for a in r.agreement if a.dice is not None]
        if dice:
            checks.append((f"{r.case.key}: rt-utils masks aligned (median Dice {np.median(dice):.3f} >= 0.9; "
                           f"min {min(dice):.3f})", float(np.median(dice)) >= 0.9))
        if r.case.key == "synthetic":
            checks.append((f"synthetic: rtkit warned {len(r.rtkit_warnings)} time(s) on clean data"
                           + (f": {r.rtkit_warnings[0][:100]}" if r.rtkit_warnings else ""), not r.rtkit_warnings))
        elif r.rtkit_warnings:
            print(f"  info  {r.case.key}: rtkit warned {len(r.rtkit_warnings)} time(s): {r.rtkit_warnings[0][:120]}")
    print("correctness")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    for r in results:
        if r.peer_error:
            print(f"  info  {r.case.key}: rt-utils gives no masks ({r.peer_error.split(' Problematic')[0]})")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

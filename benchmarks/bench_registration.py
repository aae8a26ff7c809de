"""Rigid registration benchmark: ``rtkit.register`` against SimpleITK, side by side.

SimpleITK runs in its own virtual environment, ``benchmarks/_work/sitk-venv`` (created on
first use with ``python -m venv`` + ``pip install SimpleITK numpy pydicom``; rtkit never
depends on it), in a worker subprocess that this script writes to ``_work/registration/``
and drives over a JSON-lines pipe, so the two tools' runs alternate. rtkit runs in this
interpreter, through its public API (``read_image``, ``read_structures``, ``register``,
``Registration.matrix`` / ``resample`` / ``transform_points``).

Both tools see the same voxels: every image is read (or generated) here, and its array
(slices, rows, columns) and rtkit's 4x4 index -> LPS affine go to the worker in ``.npy`` /
JSON files; the worker builds the SimpleITK image from them (spacing, origin and direction
from the affine, index axes reversed to SimpleITK's (column, row, slice) order). As a check
of that geometry the worker also reads the real DICOM series with its own
``ImageSeriesReader``, and its origin, spacing, direction and voxels must agree.

SimpleITK settings: the registration tutorial's (SimpleITK notebooks,
``60_Registration_Introduction``): ``CenteredTransformInitializer(GEOMETRY)`` on an
``Euler3DTransform``, Mattes MI with 50 bins, RANDOM sampling of 1% (seed ``SEED``),
linear interpolator, ``GradientDescent(learningRate=1.0, numberOfIterations=100,
convergenceMinimumValue=1e-6, convergenceWindowSize=10)``,
``SetOptimizerScalesFromPhysicalShift``, shrink factors [4, 2, 1], smoothing sigmas
[2, 1, 0] mm, images cast to float32. Its final transform maps fixed points to moving
points; rtkit's ``Registration.matrix`` (DESIGN section 6) maps moving -> fixed, so the
SimpleITK matrix is inverted (checked: SimpleITK's own ``Resample`` with its transform and
rtkit's ``Image.resample`` with the inverted matrix give the same voxels).
rtkit: ``rtkit.register(fixed, moving, method="rigid", metric="mi")`` with its defaults.

Cases:

* ``real``: MIRP soft-tissue sarcoma STS_001 (``mirp-sts-ct-pet-mr``). Fixed: the cropped
  CT (198x202x59, 0.98 x 0.98 x 3.27 mm). Moving: the raw T1 MR (512x512x40,
  0.39 x 0.39 mm, 4 mm slices every 5.2 mm, oblique, its own frame of reference).
  Reference: the authors' MR already resampled onto that CT (cropped/STS_001/MR_T1).
  Per tool: NCC of the moving MR resampled onto the CT grid (trilinear, rtkit's resampler
  for every tool) with the reference MR, over the CT voxels where the reference is defined
  and non-zero (zero is MIRP's fill outside the MR) and the moving image's voxel box
  covers them; the mean symmetric surface distance (MSD) between the raw MR's GTV_Mass
  contours mapped by the tool's matrix and the reference GTV (GTV_Mass_MR_T1, on the CT
  planes), and its 95th percentile (HD95); wall and CPU time of the registration call.
  Rows for information: the start (geometric centres, both tools' initialisation) and a
  "reference fit" (SimpleITK, MR -> reference MR, Mattes MI with a mask and 10% sampling:
  an estimate of the authors' transform, i.e. the best achievable; cached in ``_work``).
* ``synthetic``: a 256x256x120 phantom pair (1.5 x 1.5 x 2 mm): fixed = CT-like contrast,
  moving = the same anatomy seen through a known rigid transform (rotations 6, -5, 8 deg
  about x, y, z and a (12, -9, 15) mm shift) with an MR-like contrast (non-monotonic
  intensity mapping, a bias field, noise), on a box shifted by a few mm in its own frame.
  Generated once into ``_work/registration/synthetic`` (reused; ``--regen`` rebuilds).
  Reports the target registration error (TRE) over body points.

Surface distance: each structure's bool mask (``Structure.mask``: voxel centres inside
rtkit's slab solid) on a 0.5 mm isotropic lattice aligned with the CT axes; surface
voxels = mask voxels with a 6-neighbour outside; every surface voxel's distance to the
nearest surface voxel of the other structure (KD-tree); MSD = the mean over the surface
voxels of both (symmetric), HD95 = the larger of the two directed 95th percentiles.
Checked at start: a structure against itself gives 0 and concentric spheres of radius 20
and 21 mm give 1 mm.

Runs: one warm-up run of each tool, then ``--repeat`` alternating timed runs; times are the
best wall and CPU (process, all threads) times of the timed runs. rtkit's result is that of
the warm-up run, and the timed runs must reproduce it exactly. SimpleITK with more than one
thread is not reproducible even with a fixed seed (its multi-threaded metric sums change
the optimiser's path), so every SimpleITK run is evaluated and its row shows the median
(the range is printed below the table); ``--sitk-threads 1`` makes it reproducible.

Targets (issue 6): NCC >= SimpleITK's - 0.01, MSD <= SimpleITK's + 0.5 mm, synthetic TRE
<= max(0.5 mm, SimpleITK's), best wall time <= 1.5x SimpleITK's.

Options for information: ``--seeds K`` runs both tools with K other seeds (accuracy
spread); ``--tuned`` adds one SimpleITK run with RegularStepGradientDescent (learning rate 2,
minimum step 1e-4, 300 iterations) and 10% sampling, to show what SimpleITK reaches beyond
the tutorial settings.

Run:  .venv/bin/python benchmarks/bench_registration.py [--repeat N] [--cases real,synthetic]
      [--seeds K] [--tuned] [--sitk-threads N] [--regen] [--refit] [--work DIR] [--data DIR]
Exit status 1 if a correctness check fails (an rtkit crash, a non-rigid or irreproducible
result, inconsistent Registration methods, wrong geometry); missed targets only print FAIL.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import json
import math
import sys
import textwrap
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from _common import PeerProcess, peer_venv
from _common import machine_facts as _machine_facts
from scipy import ndimage
from scipy.spatial import cKDTree

import rtkit

# ----------------------------------------------------------------- parameters
SEED = 20240611  # SimpleITK sampling seed and synthetic noise
TARGETS = {"ncc": 0.01, "msd": 0.5, "time": 1.5, "tre": 0.5}
SURFACE_MM = 0.5  # lattice of the surface-distance masks
HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "_work"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
MIRP = "mirp-sts-ct-pet-mr"
REAL = {
    "fixed": "cropped/STS_001/CT/dicom/image",
    "moving": "raw/STS_001/MR_T1/image",
    "reference": "cropped/STS_001/MR_T1/dicom/image",
    "moving_rs": "raw/STS_001/MR_T1/mask/1-1.dcm",
    "reference_rs": "cropped/STS_001/MR_T1/dicom/mask/RS.dcm",
}
MOVING_ROI = "GTV_Mass"
REFERENCE_ROI = "GTV_Mass_MR_T1"
CASE_KEYS = ("real", "synthetic")

# synthetic pair
SYN_SHAPE = (120, 256, 256)  # slices, rows, columns
SYN_SPACING = (2.0, 1.5, 1.5)  # mm, same order
SYN_ROT_DEG = (6.0, -5.0, 8.0)  # about x, y, z (applied x, then y, then z)
SYN_SHIFT = (12.0, -9.0, 15.0)  # mm
SYN_MOVING_BOX = (-4.0, 3.0, -5.0)  # mm: the moving grid's box relative to the fixed one
SYN_EDGE = 1.5  # mm, width of the soft object edges
SYN_TRE_STEP = 4  # TRE points: every 4th fixed voxel (each axis) inside the body
SYN_VERSION = 1  # change with the phantom
#: (name, centre x y z mm, semi-axes mm, angle about z deg, exponent of the z term,
#:  CT-like value, MR-like value); painted in this order.
SYN_OBJECTS: list[tuple[str, tuple[float, float, float], tuple[float, float, float], float, int, float, float]] = [
    ("body (fat)", (0, 0, 0), (160, 110, 125), 0, 8, 0.90, 1.00),
    ("muscle", (0, 2, 0), (148, 98, 118), 0, 8, 1.04, 0.35),
    ("lung L", (62, -8, 45), (48, 58, 62), 10, 2, 0.25, 0.05),
    ("lung R", (-60, -10, 40), (44, 54, 58), -8, 2, 0.25, 0.05),
    ("heart", (12, -38, 5), (38, 30, 40), 30, 2, 1.08, 0.60),
    ("liver", (-52, -5, -72), (62, 46, 38), -15, 2, 1.10, 0.45),
    ("kidney L", (62, 42, -62), (16, 24, 32), 20, 2, 1.12, 0.55),
    ("kidney R", (-60, 40, -58), (15, 23, 30), -20, 2, 1.12, 0.55),
    ("aorta", (-18, 28, 0), (11, 11, 105), 0, 8, 1.15, 0.10),
    *[(f"vertebra {k}", (0, 62, -96 + 24 * k), (17, 15, 9.5), 0, 2, 1.60, 0.62) for k in range(9)],
    ("marker 1", (40, -60, -30), (6, 6, 6), 0, 2, 1.50, 0.85),
    ("marker 2", (-35, 70, 55), (7, 5, 6), 0, 2, 1.50, 0.85),
    ("marker 3", (75, 30, 80), (5, 8, 6), 0, 2, 1.50, 0.85),
]
SYN_BACKGROUND = (0.0, 0.02)  # CT-like, MR-like
SYN_MANIFEST = {"version": SYN_VERSION, "shape": SYN_SHAPE, "spacing": SYN_SPACING, "rot": SYN_ROT_DEG,
                "shift": SYN_SHIFT, "box": SYN_MOVING_BOX, "edge": SYN_EDGE, "seed": SEED}


# ----------------------------------------------------------------- small geometry helpers
def rotation_xyz(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:3, :3].T + m[:3, 3]


def angle_deg(m: np.ndarray, n: np.ndarray) -> float:
    """Rotation angle between the linear parts of two rigid matrices."""
    r = m[:3, :3] @ n[:3, :3].T
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def is_rigid(m: np.ndarray, tol: float = 1e-6) -> bool:
    r = m[:3, :3]
    return bool(np.allclose(r.T @ r, np.eye(3), atol=tol) and np.linalg.det(r) > 0 and np.allclose(m[3], [0, 0, 0, 1]))


# ----------------------------------------------------------------- synthetic phantom
def syn_grids() -> tuple[rtkit.Grid, rtkit.Grid]:
    """Fixed grid centred on the phantom, moving grid on a box shifted by SYN_MOVING_BOX."""
    sp = np.array(SYN_SPACING)
    half = (np.array(SYN_SHAPE) - 1) / 2 * sp  # slice, row, column
    origin = -half[::-1]  # x, y, z
    fixed = rtkit.Grid.from_spacing(SYN_SHAPE, spacing=SYN_SPACING, origin=tuple(origin),
                                    frame_of_reference_uid="1.2.826.0.1.3680043.10.1.1")
    moving = rtkit.Grid.from_spacing(SYN_SHAPE, spacing=SYN_SPACING, origin=tuple(origin + SYN_MOVING_BOX),
                                     frame_of_reference_uid="1.2.826.0.1.3680043.10.1.2")
    return fixed, moving


def syn_truth() -> np.ndarray:
    """The true moving -> fixed matrix: x = R p + shift."""
    m = np.eye(4)
    m[:3, :3] = rotation_xyz(SYN_ROT_DEG)
    m[:3, 3] = SYN_SHIFT
    return m


def _soft(obj: tuple[Any, ...], xyz: np.ndarray) -> np.ndarray:
    """Soft indicator (0..1, ramp SYN_EDGE mm wide) of one phantom object at points (N, 3)."""
    _, c, a, ang, p, _, _ = obj
    d = xyz - np.asarray(c, dtype=np.float64)
    ca, sa = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    u = (ca * d[:, 0] + sa * d[:, 1]) / a[0]
    v = (-sa * d[:, 0] + ca * d[:, 1]) / a[1]
    w = np.abs(d[:, 2] / a[2]) ** p
    r = np.sqrt(u * u + v * v + w)
    return np.clip(0.5 - (r - 1.0) * min(a) / SYN_EDGE, 0.0, 1.0)


def phantom(xyz: np.ndarray, contrast: int) -> np.ndarray:
    """Phantom value at anatomy points (N, 3) (fixed-frame LPS mm), contrast 0 CT-like, 1 MR-like."""
    out = np.full(len(xyz), SYN_BACKGROUND[contrast])
    zlo, zhi = xyz[:, 2].min(), xyz[:, 2].max()
    body = None
    for obj in SYN_OBJECTS:
        reach = max(obj[2]) + 2 * SYN_EDGE
        if obj[1][2] + reach < zlo or obj[1][2] - reach > zhi:
            continue
        s = _soft(obj, xyz)
        if body is None:
            body = s
        out += s * (obj[5 + contrast] - out)
    if body is not None:  # texture that moves with the anatomy
        x, y, z = xyz.T
        if contrast == 0:
            out += body * 0.03 * np.sin(x / 13 + 1) * np.sin(y / 17) * np.sin(z / 11 + 2)
        else:
            out += body * 0.04 * np.sin(x / 9) * np.cos(y / 14) * np.sin(z / 12)
    return out


def syn_body(xyz: np.ndarray) -> np.ndarray:
    return _soft(SYN_OBJECTS[0], xyz) >= 0.5


def make_synthetic(folder: Path, regen: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """The fixed (CT-like) and moving (MR-like) float32 arrays, generated or reused."""
    manifest = folder / "manifest.json"
    fpath, mpath = folder / "fixed.npy", folder / "moving.npy"
    if not regen and manifest.is_file() and fpath.is_file() and mpath.is_file():
        try:
            if json.loads(manifest.read_text()) == json.loads(json.dumps(SYN_MANIFEST)):
                return np.load(fpath), np.load(mpath), "reused"
        except (OSError, ValueError):
            pass
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    fixed_grid, moving_grid = syn_grids()
    truth = syn_truth()
    rng = np.random.default_rng(SEED)
    rows, cols = SYN_SHAPE[1:]
    rr, cc = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    out = []
    for contrast, grid in ((0, fixed_grid), (1, moving_grid)):
        arr = np.empty(SYN_SHAPE, dtype=np.float32)
        for k in range(SYN_SHAPE[0]):
            idx = np.column_stack([np.full(rr.size, float(k)), rr.ravel(), cc.ravel()])
            p = grid.index_to_world(idx)
            if contrast == 0:
                val = phantom(p, 0) + rng.normal(0.0, 0.01, len(p))
            else:  # anatomy at truth(p); a bias field fixed to the scanner (moving grid) frame
                bias = 1.0 + 0.12 * p[:, 0] / 160.0 - 0.08 * p[:, 2] / 125.0
                val = phantom(apply(truth, p), 1) * bias + rng.normal(0.0, 0.02, len(p))
            arr[k] = val.reshape(rows, cols)
        out.append(arr)
    np.save(fpath, out[0])
    np.save(mpath, out[1])
    manifest.write_text(json.dumps(SYN_MANIFEST, indent=1) + "\n")
    return out[0], out[1], f"generated in {time.perf_counter() - t0:.0f} s"


def syn_tre_points(grid: rtkit.Grid) -> np.ndarray:
    """Fixed-frame points for the TRE: every SYN_TRE_STEP-th voxel centre inside the body."""
    s = [np.arange(0, n, SYN_TRE_STEP, dtype=np.float64) for n in grid.shape]
    idx = np.stack(np.meshgrid(*s, indexing="ij"), axis=-1).reshape(-1, 3)
    pts = grid.index_to_world(idx)
    return pts[syn_body(pts)]


# ----------------------------------------------------------------- metrics
def ncc(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Pearson correlation of two images over a bool region."""
    x = a[region].astype(np.float64)
    y = b[region].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else float("nan")


def mutual_information(a: np.ndarray, b: np.ndarray, ranges: tuple[tuple[float, float], tuple[float, float]],
                       bins: int = 50) -> float:
    """Mutual information (nats) of paired samples from a joint histogram with fixed ranges."""
    h = np.histogram2d(a, b, bins=bins, range=ranges)[0]
    p = h / h.sum()
    outer = p.sum(axis=1)[:, None] * p.sum(axis=0)[None, :]
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / outer[nz])).sum())


def surface_points(structure: rtkit.Structure, h: float = SURFACE_MM) -> np.ndarray:
    """LPS centres (N, 3) of the surface voxels of the structure's mask on an h-mm lattice.

    The lattice is aligned with the patient axes and anchored at multiples of h, so two
    structures' lattices coincide. Surface voxel: inside, with a 6-neighbour outside.
    """
    corners = structure.box_corners()
    lo = np.floor(corners.min(axis=0) / h - 3) * h
    hi = np.ceil(corners.max(axis=0) / h + 3) * h
    n = np.rint((hi - lo) / h).astype(int) + 1  # x, y, z
    grid = rtkit.Grid.from_spacing((int(n[2]), int(n[1]), int(n[0])), spacing=(h, h, h), origin=tuple(lo),
                                   frame_of_reference_uid=structure.frame_of_reference_uid)
    mask = structure.mask(grid)
    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    idx = np.argwhere(mask & ~inner).astype(np.float64)
    return grid.index_to_world(idx)


@dataclass
class Surface:
    msd: float  # mean symmetric surface distance, mm
    hd95: float  # max of the two directed 95th percentiles, mm
    n: tuple[int, int]


def surface_distance(a: np.ndarray, b: np.ndarray) -> Surface:
    if not len(a) or not len(b):
        return Surface(float("nan"), float("nan"), (len(a), len(b)))
    dab = cKDTree(b).query(a)[0]
    dba = cKDTree(a).query(b)[0]
    msd = float((dab.sum() + dba.sum()) / (len(dab) + len(dba)))
    hd95 = float(max(np.percentile(dab, 95), np.percentile(dba, 95)))
    return Surface(msd, hd95, (len(a), len(b)))


def _sphere(r: float, centre: tuple[float, float, float], step: float, frame: str | None) -> rtkit.Structure:
    contours = []
    for z in np.arange(-r + step / 2, r, step):
        rho = math.sqrt(r * r - z * z)
        t = np.linspace(0, 2 * math.pi, max(16, int(2 * math.pi * rho / 0.25)), endpoint=False)
        pts = np.column_stack([centre[0] + rho * np.cos(t), centre[1] + rho * np.sin(t), np.full(len(t), centre[2] + z)])
        contours.append(rtkit.Contour(pts))
    return rtkit.Structure("sphere", 1, contours, frame_of_reference_uid=frame)


# ----------------------------------------------------------------- the SimpleITK worker
WORKER_SOURCE = r'''"""SimpleITK side of benchmarks/bench_registration.py (written by it; runs in _work/sitk-venv).

Reads JSON commands from stdin, one per line, and answers each with one JSON line:
  load {name, npy, affine}      an image from a (slices, rows, columns) array and rtkit's 4x4
                                index -> LPS affine, cast to float32 (as the tutorial does)
  read_dicom {folder, compare}  read a DICOM series with ImageSeriesReader: its geometry as an
                                rtkit-style affine, and its largest voxel difference from `compare`
  register {fixed, moving, seed, settings, fixed_mask, resample_npy}
                                settings "tutorial" (60_Registration_Introduction) or "regularstep"
                                (10% sampling, RegularStepGradientDescent); fixed_mask: fixed > value
  threads {n}                   set SimpleITK's global default number of threads
  versions, quit
Matrices are returned in rtkit's convention (moving -> fixed, the inverse of SimpleITK's).
"""
import json
import platform
import sys
import time
import traceback

import numpy as np
import SimpleITK as sitk

OUT = sys.stdout
sys.stdout = sys.stderr  # keep the answer channel clean
IMAGES = {}


def from_array(arr, affine):
    aff = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)  # slice, row, column
    direction = aff[:3, :3] / spacing
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))  # index (column, row, slice)
    img.SetSpacing([float(s) for s in spacing[::-1]])
    img.SetOrigin([float(v) for v in aff[:3, 3]])
    img.SetDirection([float(v) for v in direction[:, ::-1].ravel()])
    return img


def affine_of(img):
    """rtkit-style 4x4 (slice, row, column) -> LPS affine of a SimpleITK image."""
    d = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    aff = np.eye(4)
    aff[:3, :3] = d[:, ::-1]
    aff[:3, 3] = img.GetOrigin()
    return aff


def fixed_to_moving(tx, fixed):
    """4x4 of an (affine) SimpleITK transform, from points around the fixed image's centre."""
    c = np.array(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    t0 = np.array(tx.TransformPoint(c.tolist()))
    a = np.stack([(np.array(tx.TransformPoint((c + 100.0 * e).tolist())) - t0) / 100.0 for e in np.eye(3)], axis=1)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t0 - a @ c
    return m


def load(name, npy, affine):
    IMAGES[name] = from_array(np.load(npy), affine)
    return {"size": list(IMAGES[name].GetSize())}


def read_dicom(folder, compare):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    img = reader.Execute()
    a = sitk.GetArrayFromImage(img).astype(np.float64)
    b = sitk.GetArrayFromImage(IMAGES[compare]).astype(np.float64)
    diff = float(np.abs(a - b).max()) if a.shape == b.shape else None
    return {"affine": affine_of(img).tolist(), "shape": list(a.shape), "max_voxel_diff": diff}


def method(settings, seed, fixed_mask=None):
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetInterpolator(sitk.sitkLinear)
    if settings == "tutorial":
        reg.SetMetricSamplingPercentage(0.01, seed)
        reg.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=100,
                                          convergenceMinimumValue=1e-6, convergenceWindowSize=10)
    elif settings == "regularstep":
        reg.SetMetricSamplingPercentage(0.10, seed)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=300,
                                                     relaxationFactor=0.7)
    else:
        raise ValueError(settings)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrinkFactors=[4, 2, 1])
    reg.SetSmoothingSigmasPerLevel(smoothingSigmas=[2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def register(fixed, moving, seed, settings="tutorial", fixed_mask=None, resample_npy=None):
    f, m = IMAGES[fixed], IMAGES[moving]
    mask = sitk.Cast(f > fixed_mask, sitk.sitkUInt8) if fixed_mask is not None else None
    iters = [0]
    c0, t0 = time.process_time(), time.perf_counter()
    initial = sitk.CenteredTransformInitializer(f, m, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = method(settings, seed, mask)
    reg.SetInitialTransform(initial, inPlace=False)
    reg.AddCommand(sitk.sitkIterationEvent, lambda: iters.__setitem__(0, iters[0] + 1))
    final = reg.Execute(f, m)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    fm = fixed_to_moving(final, f)
    out = {"wall": wall, "cpu": cpu, "matrix": np.linalg.inv(fm).tolist(), "sitk_matrix": fm.tolist(),
           "initial": np.linalg.inv(fixed_to_moving(initial, f)).tolist(), "iterations": iters[0],
           "metric": reg.GetMetricValue(), "stop": reg.GetOptimizerStopConditionDescription()}
    if resample_npy:
        res = sitk.Resample(m, f, final, sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
        np.save(resample_npy, sitk.GetArrayFromImage(res))
    return out


def threads(n):
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    return {"threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}


def versions():
    return {"SimpleITK": sitk.Version.VersionString(), "ITK": sitk.Version.ITKVersionString(),
            "numpy": np.__version__, "python": platform.python_version(),
            "threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}


def main():
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            res = globals()[cmd["cmd"]](**{k: v for k, v in cmd.items() if k != "cmd"})
        except Exception:
            res = {"error": traceback.format_exc()}
        print(json.dumps(res), file=OUT, flush=True)


if __name__ == "__main__":
    main()
'''


def ensure_sitk_venv(venv: Path) -> tuple[Path | None, str]:
    """The SimpleITK venv's python, creating it if needed; (None, why) on failure."""
    return peer_venv(venv, ["SimpleITK", "numpy", "pydicom"], "import SimpleITK, numpy, pydicom", "SimpleITK")


class Sitk(PeerProcess):
    """The SimpleITK worker, driven over a JSON-lines pipe; images exchanged as .npy files."""

    def __init__(self, python: Path, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        worker = folder / "sitk_worker.py"
        worker.write_text(WORKER_SOURCE)
        self.folder = folder
        super().__init__(python, worker, [], folder / "worker.log", "SimpleITK")

    def send(self, name: str, array: np.ndarray, affine: np.ndarray) -> None:
        path = self.folder / f"{name}.npy"
        np.save(path, array)
        self.ask("load", name=name, npy=str(path), affine=np.asarray(affine).tolist())


# ----------------------------------------------------------------- running the tools
@dataclass
class Run:
    """One registration by one tool."""

    matrix: np.ndarray | None = None
    wall: float = float("nan")
    cpu: float = float("nan")
    iterations: int | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tool:
    """Every run of one tool on one case: the warm-up run (evaluated) and the timed ones."""

    name: str
    first: Run | None = None
    timed: list[Run] = field(default_factory=list)
    note: str = ""  # why it did not run

    @property
    def ok(self) -> bool:
        return self.first is not None and self.first.matrix is not None

    def best(self) -> tuple[float, float]:
        runs = [r for r in self.timed if r.matrix is not None] or ([self.first] if self.ok else [])
        if not runs:
            return float("nan"), float("nan")
        return min(r.wall for r in runs), min(r.cpu for r in runs)

    def spread(self) -> float:
        """Largest matrix difference between the timed runs and the evaluated one."""
        if not self.ok:
            return 0.0
        return max([float(np.abs(r.matrix - self.first.matrix).max()) for r in self.timed if r.matrix is not None],
                   default=0.0)


def rtkit_available() -> bool:
    return hasattr(rtkit, "register")


def rtkit_register(fixed: rtkit.Image, moving: rtkit.Image, seed: int | None = None,
                   initial: Any = None) -> tuple[Run, Any]:
    kw: dict[str, Any] = {} if initial is None else {"initial": initial}
    if seed is not None and "seed" in inspect.signature(rtkit.register).parameters:
        kw["seed"] = seed
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reg = rtkit.register(fixed, moving, method="rigid", metric="mi", **kw)
    except Exception as exc:  # noqa: BLE001 - a crash is reported, not raised
        return Run(error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                   extra={"traceback": traceback.format_exc()}), None
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    hist = getattr(reg, "history", None) or []
    iters = sum(int(h.get("iterations", 0)) for h in hist if isinstance(h, dict)) if hist else None
    return Run(np.array(reg.matrix, dtype=np.float64), wall, cpu, iters), reg


def sitk_register(peer: Sitk, fixed: str, moving: str, seed: int, resample_npy: Path | None = None,
                  settings: str = "tutorial") -> Run:
    r = peer.ask("register", fixed=fixed, moving=moving, seed=seed, settings=settings,
                 resample_npy=str(resample_npy) if resample_npy else None)
    return Run(np.array(r["matrix"]), r["wall"], r["cpu"], r["iterations"],
               extra={"initial": np.array(r["initial"]), "stop": r["stop"], "metric": r["metric"]})


def run_both(peer: Sitk | None, fixed: rtkit.Image, moving: rtkit.Image, names: tuple[str, str], repeat: int,
             resample_npy: Path | None, rt_note: str, sitk_note: str) -> tuple[Tool, Tool, Any]:
    """Warm-up run of each (evaluated), then `repeat` alternating timed runs."""
    st, rt = Tool("SimpleITK tutorial", note=sitk_note), Tool("rtkit", note=rt_note)
    reg = None
    for i in range(repeat + 1):
        if peer is not None:
            print(f"  SimpleITK run {i}{' (warm-up)' if i == 0 else ''} ...", end="", flush=True)
            run = sitk_register(peer, *names, seed=SEED, resample_npy=resample_npy if i == 0 else None)
            print(f" {run.wall:.1f} s", flush=True)
            if i == 0:
                st.first = run
            else:
                st.timed.append(run)
        if not rt_note and (i == 0 or rt.ok):
            print(f"  rtkit run {i}{' (warm-up)' if i == 0 else ''} ...", end="", flush=True)
            run, r = rtkit_register(fixed, moving)
            print(f" {run.wall:.1f} s" if not run.error else f" {run.error}", flush=True)
            if i == 0:
                rt.first, reg = run, r
            else:
                rt.timed.append(run)
    return st, rt, reg


def seed_runs(peer: Sitk | None, fixed: rtkit.Image, moving: rtkit.Image, names: tuple[str, str], k: int,
              with_rtkit: bool) -> list[tuple[str, int, Run]]:
    out = []
    for j in range(1, k + 1):
        seed = SEED + j
        if peer is not None:
            out.append(("SimpleITK tutorial", seed, sitk_register(peer, *names, seed=seed)))
        if with_rtkit:
            out.append(("rtkit", seed, rtkit_register(fixed, moving, seed=seed)[0]))
    return out


# ----------------------------------------------------------------- checks
class Checks:
    """Correctness checks: each is printed; a failed one makes the exit status 1."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = 0

    def add(self, ok: bool, text: str, fatal: bool = True) -> bool:
        verdict = "ok" if ok else ("FAILED" if fatal else "note")
        self.lines.append(f"  [{verdict:>6}] {text}")
        if not ok and fatal:
            self.failed += 1
        return ok


def self_checks(checks: Checks, ref_arr: np.ndarray, ref_surface: np.ndarray, frame: str | None) -> None:
    region = np.isfinite(ref_arr) & (ref_arr != 0)
    v = ncc(ref_arr, ref_arr, region)
    checks.add(abs(v - 1) < 1e-9, f"NCC(reference MR, itself) = {v:.9f} (expected 1)")
    s = surface_distance(ref_surface, ref_surface)
    checks.add(s.msd == 0 and s.hd95 == 0, f"MSD(reference GTV, itself) = {s.msd:.3f} mm, HD95 {s.hd95:.3f} mm (expected 0)")
    c = (0.3, -0.2, 0.1)
    a = surface_points(_sphere(20.0, c, 0.5, frame))
    b = surface_points(_sphere(21.0, c, 0.5, frame))
    s = surface_distance(a, b)
    checks.add(abs(s.msd - 1.0) < 0.1, f"MSD(sphere r 20 mm, concentric sphere r 21 mm) = {s.msd:.3f} mm, "
               f"HD95 {s.hd95:.2f} mm (expected 1 +- 0.1)")


def rtkit_api_checks(checks: Checks, label: str, tool: Tool, reg: Any, moving: rtkit.Image, fixed: rtkit.Image,
                     points: np.ndarray, resampled: np.ndarray) -> None:
    """rtkit's Registration: rigid, reproducible, transform_points and resample consistent with matrix."""
    if not tool.ok:
        return
    m = tool.first.matrix
    crashed = [r.error for r in tool.timed if r.error]
    if crashed:
        checks.add(False, f"{label}: rtkit.register crashed in {len(crashed)} timed run(s): {crashed[0]}")
    checks.add(is_rigid(m), f"{label}: rtkit matrix is rigid (orthonormal, det +1, last row 0 0 0 1)")
    spread = tool.spread()
    checks.add(spread <= 1e-6, f"{label}: rtkit timed runs reproduce the evaluated matrix (max diff {spread:.1e})")
    if reg is None:
        return
    d = float(np.abs(np.asarray(reg.transform_points(points)) - apply(m, points)).max())
    checks.add(d <= 1e-6, f"{label}: Registration.transform_points agrees with matrix (max {d:.1e} mm)")
    img = reg.resample(moving, fill=np.nan)
    same_grid = img.grid.isclose(fixed.grid)
    arr = np.asarray(img.array, dtype=np.float64)
    both = np.isfinite(arr) & np.isfinite(resampled)
    rng = float(np.nanmax(np.abs(resampled))) or 1.0
    diff = float(np.abs(arr[both] - resampled[both]).max()) if both.any() else 0.0
    checks.add(same_grid and diff <= 1e-3 * rng,
               f"{label}: Registration.resample(moving) is on the fixed grid ({same_grid}) and equals "
               f"moving.resample(grid, transform=matrix) (max diff {diff:.2g})")


def conversion_check(checks: Checks, label: str, npy: Path, moving: rtkit.Image, grid: rtkit.Grid,
                     matrix: np.ndarray) -> np.ndarray:
    """SimpleITK's Resample with its own transform against rtkit's resample with the inverted matrix.

    Returns rtkit's resampled array (NaN outside the moving box).
    """
    theirs = np.load(npy).astype(np.float64)
    mine = moving.resample(grid, transform=matrix, order=1, fill=np.nan).array.astype(np.float64)
    both = np.isfinite(theirs) & np.isfinite(mine)
    diff = float(np.abs(theirs[both] - mine[both]).max()) if both.any() else float("inf")
    n_mis = int((np.isfinite(theirs) != np.isfinite(mine)).sum())
    checks.add(diff <= 1e-3 * float(np.abs(moving.array).max()),
               f"{label}: SimpleITK Resample(its transform) = rtkit resample(inverted matrix): max diff {diff:.2g} "
               f"on {int(both.sum())} voxels ({n_mis} differ only in being inside the moving box)")
    return mine


def tuned_row(peer: Sitk, names: tuple[str, str], evaluate: Callable[[np.ndarray], dict[str, float]]) -> Row:
    print("  SimpleITK RegularStep run (--tuned) ...", flush=True)
    run = sitk_register(peer, *names, seed=SEED, settings="regularstep")
    return Row("SimpleITK RegularStep (info)", run, evaluate(run.matrix), timed=(run.wall, run.cpu),
               note=run.extra["stop"])


# ----------------------------------------------------------------- the cases
@dataclass
class Row:
    label: str
    run: Run | None  # None: no registration (start row, n/a)
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""
    timed: tuple[float, float] | None = None
    iterations: int | None = None

    def __post_init__(self) -> None:
        if self.run is not None and self.iterations is None:
            self.iterations = self.run.iterations


def sitk_row(st: Tool, evals: list[dict[str, float]], keys: list[str]) -> Row:
    """SimpleITK's row: the median of every run's figures (multi-threaded ITK is not reproducible)."""
    runs = [st.first, *[r for r in st.timed if r.matrix is not None]]
    metrics = {k: float(np.median([e[k] for e in evals])) for k in evals[0]}
    note = st.first.extra["stop"]
    if len(evals) > 1:
        rng = ", ".join(f"{k} {min(e[k] for e in evals):.3f} .. {max(e[k] for e in evals):.3f}" for k in keys)
        turn = max(angle_deg(r.matrix, st.first.matrix) for r in runs[1:])
        note = f"median of {len(evals)} runs (same seed): {rng}; rotations differ by up to {turn:.2f} deg; " + note
    iters = [r.iterations for r in runs if r.iterations is not None]
    row = Row(st.name, st.first, metrics, note=note, timed=st.best())
    row.iterations = int(np.median(iters)) if iters else None
    return row


def _read(path: Path) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = rtkit.read_structures(path) if path.suffix == ".dcm" else rtkit.read_image(path)
        if isinstance(obj, rtkit.Image):
            obj.array  # noqa: B018 - decode now
    return obj, [f"{path.name}: {w.category.__name__}: {w.message}" for w in caught]


def reference_fit(peer: Sitk, key: str, cache: Path, refit: bool) -> tuple[np.ndarray, str]:
    """SimpleITK MR -> reference MR (same contrast, masked): the authors' transform, estimated."""
    if not refit and cache.is_file():
        try:
            got = json.loads(cache.read_text())
            if got.get("key") == key:
                return np.array(got["matrix"]), "cached"
        except (OSError, ValueError, KeyError):
            pass
    print("  reference fit (SimpleITK, raw MR -> reference MR, about 20 s) ...", flush=True)
    r = peer.ask("register", fixed="reference", moving="moving", seed=1, settings="regularstep", fixed_mask=0)
    cache.write_text(json.dumps({"key": key, "matrix": r["matrix"], "metric": r["metric"], "stop": r["stop"],
                                 "wall": r["wall"]}, indent=1) + "\n")
    return np.array(r["matrix"]), f"computed in {r['wall']:.0f} s"


def run_real(args: argparse.Namespace, peer: Sitk | None, checks: Checks, notes: list[str]) -> dict[str, Any]:
    root = args.data / MIRP
    paths = {k: root / v for k, v in REAL.items()}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        return {"missing": f"data not found: {missing[0]}"}
    loaded = {}
    for k, p in paths.items():
        loaded[k], w = _read(p)
        notes += [f"real: {x}" for x in w]
    fixed, moving, reference = loaded["fixed"], loaded["moving"], loaded["reference"]
    mov_roi = loaded["moving_rs"][MOVING_ROI]
    ref_roi = loaded["reference_rs"][REFERENCE_ROI]
    frame = fixed.grid.frame_of_reference_uid
    ref_on_fixed = reference.resample(fixed.grid, order=1, fill=np.nan).array.astype(np.float64)
    ref_defined = np.isfinite(ref_on_fixed) & (ref_on_fixed != 0)
    ref_surface = surface_points(ref_roi)
    self_checks(checks, ref_on_fixed, ref_surface, frame)
    gtv_points = np.concatenate([c.points for c in mov_roi.contours])
    fixed_values = fixed.array.astype(np.float64)
    mi_ranges = ((float(fixed_values.min()), float(fixed_values.max())),
                 (float(moving.array.min()), float(moving.array.max())))

    def evaluate(m: np.ndarray, resampled: np.ndarray | None = None) -> dict[str, float]:
        if resampled is None:
            resampled = moving.resample(fixed.grid, transform=m, order=1, fill=np.nan).array
        region = ref_defined & np.isfinite(resampled)
        s = surface_distance(surface_points(mov_roi.transformed(m, frame)), ref_surface)
        inside = np.isfinite(resampled)
        out = {"ncc": ncc(resampled, ref_on_fixed, region), "cover": region.sum() / ref_defined.sum(),
               "msd": s.msd, "hd95": s.hd95,
               "mi": mutual_information(fixed_values[inside], resampled[inside], mi_ranges)}
        if ref_fit is not None:
            out["rot_vs_fit"] = angle_deg(m, ref_fit)
            out["gtv_vs_fit"] = float(np.linalg.norm(apply(m, gtv_points) - apply(ref_fit, gtv_points), axis=1).mean())
        return out

    res: dict[str, Any] = {"title": (f"real: raw MR_T1 {'x'.join(map(str, moving.shape[::-1]))} "
                                     f"({' x '.join(f'{s:.2f}' for s in moving.grid.spacing[::-1])} mm, oblique, own frame)"
                                     f" -> cropped CT {'x'.join(map(str, fixed.shape[::-1]))}"), "rows": []}
    ref_fit = None
    sitk_note = "" if peer else "SimpleITK venv not available"
    if peer is not None:
        peer.send("fixed", fixed.array, fixed.grid.affine)
        peer.send("moving", moving.array, moving.grid.affine)
        peer.send("reference", reference.array, reference.grid.affine)
        for name, folder in (("fixed", paths["fixed"]), ("moving", paths["moving"])):
            r = peer.ask("read_dicom", folder=str(folder), compare=name)
            img = loaded[name]
            aff = np.array(r["affine"])
            dpos = float(np.abs(aff[:3, 3] - img.grid.affine[:3, 3]).max())
            daxes = float(np.abs(aff[:3, :3] - img.grid.affine[:3, :3]).max())
            ok = tuple(r["shape"]) == img.shape and dpos < 1e-3 and daxes < 1e-5 and r["max_voxel_diff"] == 0
            checks.add(ok, f"real: SimpleITK's own DICOM read of the {'cropped CT' if name == 'fixed' else 'raw MR'} series "
                           f"matches the arrays + affines passed: shape {ok and 'same'}, origin {dpos:.1e} mm, "
                           f"axes {daxes:.1e}, voxels max diff {r['max_voxel_diff']}")
        h = hashlib.sha1()
        for k in ("moving", "reference"):
            h.update(np.ascontiguousarray(loaded[k].array).tobytes())
            h.update(loaded[k].grid.affine.tobytes())
        ref_fit, how = reference_fit(peer, h.hexdigest() + "-v1", args.work / "registration" / "reference_fit.json",
                                     args.refit)
        notes.append(f"real: reference fit {how}")

    rt_note = "" if rtkit_available() else "rtkit.register not available yet"
    resample_npy = args.work / "registration" / "sitk_resampled_real.npy"
    st, rt, reg = run_both(peer, fixed, moving, ("fixed", "moving"), args.repeat, resample_npy, rt_note, sitk_note)
    res["tools"] = (st, rt)

    if st.ok:
        start = st.first.extra["initial"]
        res["rows"].append(Row("start (geometric centres)", None, evaluate(start)))
        mine = conversion_check(checks, "real", resample_npy, moving, fixed.grid, st.first.matrix)
        evals = [evaluate(st.first.matrix, mine)] + [evaluate(r.matrix) for r in st.timed if r.matrix is not None]
        res["rows"].append(sitk_row(st, evals, ["ncc", "msd"]))
    else:
        res["rows"].append(Row(st.name, None, note=st.note))
    if rt.ok:
        mine = moving.resample(fixed.grid, transform=rt.first.matrix, order=1, fill=np.nan).array.astype(np.float64)
        rtkit_api_checks(checks, "real", rt, reg, moving, fixed, gtv_points, mine)
        res["rows"].append(Row("rtkit", rt.first, evaluate(rt.first.matrix, mine), timed=rt.best()))
    else:
        crash = rt.first.error if rt.first is not None else ""
        if crash:
            checks.add(False, f"real: rtkit.register crashed: {crash}")
            notes.append("real: rtkit traceback:\n" + rt.first.extra.get("traceback", ""))
        res["rows"].append(Row("rtkit", None, note=crash or rt.note))
    if args.tuned and peer is not None:
        res["rows"].append(tuned_row(peer, ("fixed", "moving"), evaluate))
    if ref_fit is not None:
        res["rows"].append(Row("reference fit (info)", None, evaluate(ref_fit),
                               note="SimpleITK MR -> reference MR; the authors' transform, estimated"))
        if rt.ok and "initial" in inspect.signature(rtkit.register).parameters:
            print("  rtkit run started at the reference fit (info) ...", flush=True)
            run = rtkit_register(fixed, moving, initial=ref_fit)[0]
            res["rows"].append(Row("rtkit from reference fit (info)", run,
                                   evaluate(run.matrix) if run.matrix is not None else {}, timed=(run.wall, run.cpu),
                                   note=run.error or "rtkit.register(..., initial=reference fit): where MI leads "
                                   "from the authors' transform"))
    if args.seeds:
        for tool, seed, run in seed_runs(peer, fixed, moving, ("fixed", "moving"), args.seeds, rt.ok):
            res["rows"].append(Row(f"{tool} seed {seed}", run, evaluate(run.matrix) if run.matrix is not None else {},
                                   timed=(run.wall, run.cpu), note=run.error))
    return res


def run_synthetic(args: argparse.Namespace, peer: Sitk | None, checks: Checks, notes: list[str]) -> dict[str, Any]:
    fixed_arr, moving_arr, how = make_synthetic(args.work / "registration" / "synthetic", args.regen)
    notes.append(f"synthetic: phantom pair {how}")
    fixed_grid, moving_grid = syn_grids()
    fixed = rtkit.Image(fixed_arr, fixed_grid, "CT")
    moving = rtkit.Image(moving_arr, moving_grid, "MR")
    truth = syn_truth()
    pts_fixed = syn_tre_points(fixed_grid)
    pts_moving = apply(np.linalg.inv(truth), pts_fixed)

    def evaluate(m: np.ndarray) -> dict[str, float]:
        err = np.linalg.norm(apply(m, pts_moving) - pts_fixed, axis=1)
        return {"tre": float(err.mean()), "tre_max": float(err.max()), "rot_err": angle_deg(m, truth),
                "shift_err": float(np.linalg.norm(apply(m, np.zeros((1, 3))) - apply(truth, np.zeros((1, 3)))))}

    res: dict[str, Any] = {
        "title": (f"synthetic: {'x'.join(map(str, SYN_SHAPE[::-1]))} phantom pair "
                  f"({' x '.join(f'{s:g}' for s in SYN_SPACING[::-1])} mm), CT-like fixed, MR-like moving, "
                  f"known transform {SYN_ROT_DEG} deg, {SYN_SHIFT} mm"), "rows": []}
    sitk_note = "" if peer else "SimpleITK venv not available"
    if peer is not None:
        peer.send("syn_fixed", fixed_arr, fixed_grid.affine)
        peer.send("syn_moving", moving_arr, moving_grid.affine)
    rt_note = "" if rtkit_available() else "rtkit.register not available yet"
    resample_npy = args.work / "registration" / "sitk_resampled_synthetic.npy"
    st, rt, reg = run_both(peer, fixed, moving, ("syn_fixed", "syn_moving"), args.repeat, resample_npy, rt_note,
                           sitk_note)
    res["tools"] = (st, rt)
    if st.ok:
        res["rows"].append(Row("start (geometric centres)", None, evaluate(st.first.extra["initial"])))
        conversion_check(checks, "synthetic", resample_npy, moving, fixed_grid, st.first.matrix)
        evals = [evaluate(r.matrix) for r in [st.first, *st.timed] if r.matrix is not None]
        res["rows"].append(sitk_row(st, evals, ["tre"]))
    else:
        res["rows"].append(Row(st.name, None, note=st.note))
    if rt.ok:
        mine = moving.resample(fixed_grid, transform=rt.first.matrix, order=1, fill=np.nan).array.astype(np.float64)
        rtkit_api_checks(checks, "synthetic", rt, reg, moving, fixed, pts_moving[:1000], mine)
        res["rows"].append(Row("rtkit", rt.first, evaluate(rt.first.matrix), timed=rt.best()))
    else:
        crash = rt.first.error if rt.first is not None else ""
        if crash:
            checks.add(False, f"synthetic: rtkit.register crashed: {crash}")
            notes.append("synthetic: rtkit traceback:\n" + rt.first.extra.get("traceback", ""))
        res["rows"].append(Row("rtkit", None, note=crash or rt.note))
    if args.tuned and peer is not None:
        res["rows"].append(tuned_row(peer, ("syn_fixed", "syn_moving"), evaluate))
    if args.seeds:
        for tool, seed, run in seed_runs(peer, fixed, moving, ("syn_fixed", "syn_moving"), args.seeds, rt.ok):
            res["rows"].append(Row(f"{tool} seed {seed}", run, evaluate(run.matrix) if run.matrix is not None else {},
                                   timed=(run.wall, run.cpu), note=run.error))
    return res


# ----------------------------------------------------------------- reporting
def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def print_table(res: dict[str, Any], cols: list[tuple[str, str, str, int]]) -> None:
    """cols: (header, metric key, format, width)."""
    head = f"{'':<34}" + "".join(f"{h:>{w}}" for h, _, _, w in cols) + f"{'wall s':>9}{'CPU s':>8}{'iters':>7}"
    print(head)
    for row in res["rows"]:
        line = f"{row.label:<34}"
        if not row.metrics:
            print(line + (row.note or "n/a"))
            continue
        line += "".join(f"{_f(row.metrics.get(k), fmt):>{w}}" for _, k, fmt, w in cols)
        if row.timed is not None:
            line += f"{row.timed[0]:>9.2f}{row.timed[1]:>8.2f}{_f(row.iterations, 'd'):>7}"
        print(line)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def print_targets(res: dict[str, Any], accuracy: list[tuple[str, str, str, Callable[[float, float], tuple[float, bool]]]]
                  ) -> list[str]:
    """Rows: measure, rtkit, SimpleITK, difference or ratio, target, result. Returns verdicts."""
    st, rt = res["tools"]
    rows = {r.label: r for r in res["rows"]}
    a, b = rows.get("rtkit"), rows.get(st.name)
    print(f"{'target':<34}{'rtkit':>10}{'SimpleITK':>11}{'rtkit - SimpleITK':>19}{'target':>16}  result")
    verdicts = []
    for label, key, tgt, judge in accuracy:
        if a is None or b is None or not a.metrics or not b.metrics:
            print(f"{label:<34}{_f(a.metrics.get(key) if a and a.metrics else None, '.3f'):>10}"
                  f"{_f(b.metrics.get(key) if b and b.metrics else None, '.3f'):>11}{'-':>19}{tgt:>16}  n/a")
            verdicts.append("n/a")
            continue
        diff, ok = judge(a.metrics[key], b.metrics[key])
        print(f"{label:<34}{a.metrics[key]:>10.3f}{b.metrics[key]:>11.3f}{diff:>+19.3f}{tgt:>16}  {_verdict(ok)}")
        verdicts.append(_verdict(ok))
    if rt.ok and st.ok:
        (rw, rc), (sw, sc) = rt.best(), st.best()
        ok = rw <= TARGETS["time"] * sw
        print(f"{'time (best wall s)':<34}{rw:>10.2f}{sw:>11.2f}{f'ratio {rw / sw:.2f}x':>19}"
              f"{'<= ' + format(TARGETS['time'], 'g') + 'x':>16}  {_verdict(ok)}")
        print(f"{'CPU time (best s)':<34}{rc:>10.2f}{sc:>11.2f}{f'ratio {rc / sc:.2f}x':>19}{'info':>16}")
        verdicts.append(_verdict(ok))
    else:
        print(f"{'time (best wall s)':<34}{'-':>10}{_f(st.best()[0] if st.ok else None, '.2f'):>11}{'-':>19}"
              f"{'<= ' + format(TARGETS['time'], 'g') + 'x':>16}  n/a")
        verdicts.append("n/a")
    return verdicts


def machine_facts(versions: dict[str, Any] | None) -> list[str]:
    extra = f"scipy: {scipy.__version__}"
    lines = _machine_facts(extra)
    if versions:
        lines.append(f"peer:     SimpleITK {versions['SimpleITK']} (ITK {versions['ITK']}), numpy {versions['numpy']}, "
                     f"python {versions['python']}, {versions['threads']} threads ({versions['threads_note']})")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder (default %(default)s)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default %(default)s)")
    ap.add_argument("--cases", default=",".join(CASE_KEYS), help="comma-separated subset of %(default)s")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per tool after the warm-up, best kept (default 3)")
    ap.add_argument("--seeds", type=int, default=0, help="also run both tools with K other seeds (accuracy spread)")
    ap.add_argument("--tuned", action="store_true",
                    help="also one SimpleITK run with RegularStepGradientDescent and 10%% sampling (info)")
    ap.add_argument("--sitk-threads", type=int, default=0,
                    help="SimpleITK's number of threads (default: its own default, all cores; 1 is reproducible)")
    ap.add_argument("--regen", action="store_true", help="regenerate the synthetic pair even if present")
    ap.add_argument("--refit", action="store_true", help="recompute the cached reference fit")
    args = ap.parse_args(argv)
    if args.repeat < 0:
        ap.error("--repeat must be >= 0")
    args.work, args.data = args.work.resolve(), args.data.resolve()
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    if unknown := [k for k in keys if k not in CASE_KEYS]:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(CASE_KEYS)}")
    folder = args.work / "registration"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "worker.log").unlink(missing_ok=True)
    py, venv_note = ensure_sitk_venv(args.work / "sitk-venv")
    peer = Sitk(py, folder) if py else None
    if peer and args.sitk_threads:
        peer.ask("threads", n=args.sitk_threads)
    versions = peer.ask("versions") if peer else None
    if versions:
        versions["threads_note"] = "set by --sitk-threads" if args.sitk_threads else "its default"
    checks = Checks()
    notes: list[str] = [f"SimpleITK venv {args.work / 'sitk-venv'}: {venv_note}"]
    results = {}
    t0 = time.perf_counter()
    try:
        for key in keys:
            print(f"{key} ...", flush=True)
            results[key] = (run_real if key == "real" else run_synthetic)(args, peer, checks, notes)
    finally:
        if peer:
            peer.close()

    print()
    print("Rigid registration: rtkit.register(fixed, moving, method='rigid', metric='mi') vs SimpleITK")
    print("Euler3D + Mattes MI, tutorial settings (60_Registration_Introduction), seed", SEED)
    for line in machine_facts(versions):
        print("  " + line)
    print(f"  total run time {time.perf_counter() - t0:.0f} s; timed runs per tool: best of {args.repeat} "
          "after a warm-up run (the evaluated one)")
    if not rtkit_available():
        print("  rtkit.register not available yet: the rtkit column is empty")
    verdicts: dict[str, list[str]] = {}
    if "real" in results:
        res = results["real"]
        print()
        if "missing" in res:
            print(f"== real: {res['missing']}")
        else:
            print(f"== {res['title']}")
            print_table(res, [("NCC", "ncc", ".4f", 8), ("cover", "cover", ".3f", 7), ("MI", "mi", ".3f", 7),
                              ("MSD mm", "msd", ".2f", 8),
                              ("HD95 mm", "hd95", ".2f", 9), ("rot-fit deg", "rot_vs_fit", ".2f", 12),
                              ("GTV-fit mm", "gtv_vs_fit", ".2f", 11)])
            print()
            verdicts["real"] = print_targets(res, [
                ("NCC with reference MR", "ncc", f">= -{TARGETS['ncc']:g}",
                 lambda a, b: (a - b, a >= b - TARGETS["ncc"])),
                ("GTV MSD mm", "msd", f"<= +{TARGETS['msd']:g}", lambda a, b: (a - b, a <= b + TARGETS["msd"])),
            ])
            for row in res["rows"]:
                if row.note and row.metrics:
                    print(f"  {row.label}: {row.note}")
    if "synthetic" in results:
        res = results["synthetic"]
        print()
        print(f"== {res['title']}")
        print_table(res, [("TRE mm", "tre", ".3f", 8), ("TRE max", "tre_max", ".3f", 9),
                          ("rot err deg", "rot_err", ".3f", 12), ("shift err mm", "shift_err", ".3f", 13)])
        print()
        verdicts["synthetic"] = print_targets(res, [
            ("mean TRE mm", "tre", f"<= max({TARGETS['tre']:g}, S)",
             lambda a, b: (a - b, a <= max(TARGETS["tre"], b))),
        ])
        for row in res["rows"]:
            if row.note and row.metrics:
                print(f"  {row.label}: {row.note}")
    print()
    legend = (
        "NCC: Pearson correlation of the raw MR resampled onto the CT grid (trilinear, rtkit's resampler with "
        "each tool's moving -> fixed matrix) with the reference MR, over the CT voxels where the reference is "
        "non-zero and the raw MR's box covers them ('cover' = their share of the reference's voxels). MI: mutual "
        "information (nats, 50x50-bin histogram) of the CT and the resampled MR over the CT voxels inside the "
        "MR's box. MSD / HD95: surfaces of the GTV masks on a 0.5 mm lattice (raw MR GTV_Mass mapped by the "
        "matrix vs the reference GTV_Mass_MR_T1), mean symmetric nearest surface-voxel distance / larger "
        "directed 95th percentile. rot-fit, GTV-fit: rotation angle and mean GTV-point displacement from the "
        "reference fit. TRE: mean (max) distance over body points between the found and true mapping. Times: "
        "the registration call alone, images in memory (SimpleITK: initializer + Execute, timed in its "
        "worker); iters: optimiser iterations over all levels."
    )
    for k, line in enumerate(textwrap.wrap(legend, 100)):
        print(("  " if k == 0 else "       ") + line)
    print()
    print("correctness checks:")
    for line in checks.lines:
        print(line)
    for n in notes:
        print("note: " + n)
    summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in verdicts.items())
    print()
    print(f"targets (NCC, MSD, time / TRE, time): {summary or 'none evaluated'}")
    print(f"exit status {1 if checks.failed else 0}: {checks.failed} correctness check(s) failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

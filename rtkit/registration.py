"""Rigid and affine registration of images in patient coordinates (DESIGN §6).

:func:`register` finds the transform that brings a *moving* image (MR, PET,
CBCT) onto a *fixed* one (the planning CT).  Everything happens in patient
coordinates (LPS, mm), so grids of any spacing and orientation work,
oblique ones included.

The method, in short (docs/registration.md has the details and the choices):

* a pyramid: at each level both images are block-averaged to about the
  level's voxel size and smoothed with a Gaussian (``smoothing_mm``);
* samples: fixed-image voxel centres (inside ``fixed_mask`` when given), a
  seeded random or a regular subset of at most ``samples`` per level;
* the moving image is interpolated trilinearly at the transformed sample
  points; the metric is Mattes mutual information (cubic B-spline Parzen
  window on the moving intensities, 50 bins), normalised cross-correlation
  or mean squared difference, each with its exact gradient with respect to
  the transform parameters;
* L-BFGS-B (scipy) optimises 6 (rigid: Euler angles and a translation about
  the sample centroid) or 12 (affine) parameters, re-based at each level.

The result is a :class:`Registration` whose ``matrix`` maps moving patient
coordinates to fixed patient coordinates, the direction DICOM Spatial
Registration uses (``Registration.save`` writes one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage, optimize

from .errors import FrameOfReferenceError, GeometryError, RegistrationError
from .geometry import Grid
from .image import Image
from .io._dicom import guard_decoding

__all__ = ["METHODS", "METRICS", "Registration", "register", "read_registration"]

log = logging.getLogger("rtkit.registration")

METHODS = ("rigid", "affine")
METRICS = ("mi", "ncc", "mse")
# L-BFGS-B: stop when a step improves the metric by less than this fraction; line-search steps
FTOL = 1e-6
MAX_LINE_SEARCH = 6


# ------------------------------------------------------------------ the result
@dataclass(frozen=True)
class SeriesRef:
    """What a Spatial Registration records of one registered image series."""

    frame_of_reference_uid: str | None = None
    series_instance_uid: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uids: tuple[str, ...] = ()
    study_instance_uid: str | None = None

    @classmethod
    def of(cls, image: Image) -> SeriesRef:
        meta = image.meta or {}
        uids = meta.get("sop_instance_uids") or ()
        return cls(image.grid.frame_of_reference_uid, image.series_instance_uid, meta.get("sop_class_uid"),
                   tuple(u for u in uids if u), meta.get("study_instance_uid"))


class Registration:
    """A spatial transform between two frames of reference.

    Parameters
    ----------
    matrix : (4, 4) array_like
        Maps a point in the moving image's patient coordinates (LPS, mm) to the
        fixed image's patient coordinates (homogeneous, last row ``0 0 0 1``).
    fixed, moving : SeriesRef, optional
        Frames of reference and series of the two sides.
    fixed_grid : Grid, optional
        The fixed image's grid: the default target of :meth:`resample`.
    metric : float, optional
        Final value of the similarity metric (higher is better for ``"mi"``
        and ``"ncc"``, lower for ``"mse"``).
    metric_name : str, optional
    method : str, optional
        ``"rigid"``, ``"affine"`` or ``"dicom"`` (read from a file).
    history : list of dict, optional
        Per pyramid level: shrink, samples, iterations, metric before/after.
    meta : dict, optional
        Patient and study values used when saving (from the fixed image).
    """

    def __init__(self, matrix: ArrayLike, *, fixed: SeriesRef | None = None, moving: SeriesRef | None = None,
                 fixed_grid: Grid | None = None, metric: float | None = None, metric_name: str | None = None,
                 method: str | None = None, history: list[dict[str, Any]] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        m = np.array(matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise GeometryError(f"a registration matrix must be a finite 4x4 array, got shape {m.shape}")
        if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
            raise GeometryError(f"a registration matrix must have last row 0 0 0 1, got {m[3].tolist()}")
        if abs(np.linalg.det(m[:3, :3])) < 1e-9:
            raise GeometryError("the registration matrix is singular")
        m.setflags(write=False)
        self._matrix = m
        self.fixed = fixed or SeriesRef()
        self.moving = moving or SeriesRef()
        self.fixed_grid = fixed_grid
        self.metric = metric
        self.metric_name = metric_name
        self.method = method
        self.history = list(history or [])
        self.meta = dict(meta or {})

    @property
    def matrix(self) -> NDArray[np.float64]:
        """(4, 4) float64, read-only: moving patient coordinates -> fixed patient coordinates (mm)."""
        return self._matrix

    @property
    def is_rigid(self) -> bool:
        """Whether the linear part is a rotation (orthonormal, determinant +1, to 1e-6)."""
        r = self._matrix[:3, :3]
        return bool(np.allclose(r.T @ r, np.eye(3), atol=1e-6) and np.linalg.det(r) > 0)

    @property
    def translation_mm(self) -> NDArray[np.float64]:
        """(3,) the translation part of :attr:`matrix` (mm, LPS)."""
        return self._matrix[:3, 3].copy()

    @property
    def rotation_deg(self) -> float:
        """The rotation angle of the linear part (degrees; for rigid registrations)."""
        r = self._matrix[:3, :3]
        return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))

    def transform_points(self, xyz: ArrayLike) -> NDArray[np.float64]:
        """Map points from moving to fixed patient coordinates.

        Parameters
        ----------
        xyz : array_like, shape (..., 3)
            LPS coordinates (mm) in the moving frame of reference.

        Returns
        -------
        ndarray, shape (..., 3), float64
            LPS coordinates (mm) in the fixed frame of reference.
        """
        p = np.asarray(xyz, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {p.shape}")
        m = self._matrix
        return p @ m[:3, :3].T + m[:3, 3]

    def inverse(self) -> Registration:
        """The registration in the other direction (fixed -> moving); no default grid."""
        return Registration(np.linalg.inv(self._matrix), fixed=self.moving, moving=self.fixed,
                            metric=self.metric, metric_name=self.metric_name, method=self.method,
                            history=self.history, meta=self.meta)

    def resample(self, moving: Image, order: int = 1, grid: Grid | None = None,
                 fill: float | None = None) -> Image:
        """The moving image on the fixed grid (or on ``grid``).

        Parameters
        ----------
        moving : Image
            An image in the moving frame of reference.
        order : int
            Interpolation order: 0 nearest, 1 trilinear (default), up to 5.
        grid : Grid, optional
            Target grid in the fixed frame; default the fixed image's grid.
        fill : float, optional
            Value outside the moving image (default: the image's default fill).

        Returns
        -------
        Image
            On the target grid, in the fixed frame of reference.
        """
        target = grid or self.fixed_grid
        if target is None:
            raise GeometryError("this registration has no fixed grid (it was read from a file or inverted); "
                                "pass grid= (e.g. case.ct.grid)")
        want = self.moving.frame_of_reference_uid
        have = moving.grid.frame_of_reference_uid
        if want and have and want != have:
            raise FrameOfReferenceError(f"the image is in frame of reference {have}, but this registration "
                                        f"maps frame {want}")
        return moving.resample(target, transform=self._matrix, order=order, fill=fill)

    def transform_structures(self, structures: Any) -> Any:
        """A StructureSet (or Structure) drawn on the moving image, mapped to the fixed frame."""
        return structures.transformed(self._matrix, frame_of_reference_uid=self.fixed.frame_of_reference_uid)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a DICOM Spatial Registration object (see :func:`rtkit.io.reg.build_registration`)."""
        from .io.reg import build_registration
        from .io.rtstruct_write import write_dataset

        return write_dataset(build_registration(self), path, overwrite=overwrite)

    def _repr_html_(self) -> str:
        """Notebook summary: method, frames of reference, metric, rotation/translation and the 4x4 matrix."""
        from . import _html

        def frame(ref: SeriesRef) -> str:
            return ref.frame_of_reference_uid or "-"

        kind = "rigid" if self.is_rigid else "affine"
        metric = "-" if self.metric is None else f"{self.metric:.6g} ({self.metric_name or 'metric'})"
        facts = [
            ("method", self.method or "-"), ("kind", kind),
            ("fixed frame of reference", frame(self.fixed)), ("moving frame of reference", frame(self.moving)),
            ("metric", metric), ("rotation (deg)", f"{self.rotation_deg:.3f}"),
            ("translation (mm, LPS)", ", ".join(f"{t:.3f}" for t in self.translation_mm)),
        ]
        info = _html.table(("property", "value"), [(_html.cell(k), _html.cell(v)) for k, v in facts])
        matrix = _html.table(("matrix (moving mm -> fixed mm)", "", "", ""),
                             [tuple(_html.cell(f"{v:.6g}") for v in row) for row in self._matrix])
        return _html.summary("Registration", kind, info + matrix)

    def __repr__(self) -> str:
        kind = "rigid" if self.is_rigid else "affine"
        metric = "" if self.metric is None else f", {self.metric_name or 'metric'} {self.metric:.4g}"
        return (f"Registration({kind}, rotation {self.rotation_deg:.2f} deg, translation "
                f"{np.round(self.translation_mm, 2).tolist()} mm{metric})")


@guard_decoding
def read_registration(path: str | os.PathLike[str], *, fixed_frame_of_reference_uid: str | None = None,
                      moving_frame_of_reference_uid: str | None = None) -> Registration:
    """Read a DICOM Spatial Registration object (see :func:`rtkit.io.reg.registration_from_dataset`)."""
    from .io._dicom import read_object
    from .io.reg import registration_from_dataset

    ds = read_object(path, "a Spatial Registration (REG)", headers_only=True)
    return registration_from_dataset(ds, source=str(path), fixed_frame_of_reference_uid=fixed_frame_of_reference_uid,
                                     moving_frame_of_reference_uid=moving_frame_of_reference_uid)


# ------------------------------------------------------------------ transforms
def _rotation(angles: NDArray[np.float64]) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
    """R = Rz Ry Rx of Euler angles (rad) and its derivatives with respect to each angle."""
    ax, ay, az = angles
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    dx = np.array([[0, 0, 0], [0, -sx, -cx], [0, cx, -sx]])
    dy = np.array([[-sy, 0, cy], [0, 0, 0], [-cy, 0, -sy]])
    dz = np.array([[-sz, -cz, 0], [cz, -sz, 0], [0, 0, 0]])
    return rz @ ry @ rx, [rz @ ry @ dx, rz @ dy @ rx, dz @ ry @ rx]


@dataclass
class _Model:
    """T(x) = L(p) y + T0(c) + t with y = A0 (x - c): the fixed -> moving map being optimised.

    Parameters are scaled so that one unit moves the samples by about 1 mm.
    """

    affine: bool
    a0: NDArray[np.float64]  # (3, 3) linear part at p = 0
    t0c: NDArray[np.float64]  # T0(c)
    c: NDArray[np.float64]
    radius: float  # mm: scales rotation/affine parameters

    @property
    def size(self) -> int:
        return 12 if self.affine else 6

    def linear(self, p: NDArray[np.float64]) -> tuple[NDArray[np.float64], list[NDArray[np.float64]]]:
        """L(p) and dL/dp_k for the linear parameters (in scaled units)."""
        if self.affine:
            d = p[:9].reshape(3, 3) / self.radius
            basis = []
            for k in range(9):
                e = np.zeros(9)
                e[k] = 1.0 / self.radius
                basis.append(e.reshape(3, 3))
            return np.eye(3) + d, basis
        r, dr = _rotation(p[:3] / self.radius)
        return r, [m / self.radius for m in dr]

    def matrix(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """4x4 fixed -> moving."""
        lin, _ = self.linear(p)
        out = np.eye(4)
        out[:3, :3] = lin @ self.a0
        out[:3, 3] = self.t0c + p[-3:] - out[:3, :3] @ self.c
        return out


def _affine_rows(x: NDArray[np.float64], m: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """``x @ m.T + b`` for (N, 3) rows, elementwise (no BLAS threads for a 3x3 product)."""
    out = np.empty((len(x), 3))
    for j in range(3):
        out[:, j] = x[:, 0] * m[j, 0] + x[:, 1] * m[j, 1] + x[:, 2] * m[j, 2] + b[j]
    return out


# ------------------------------------------------------------------ pyramid
@dataclass
class _Level:
    array: NDArray[np.float32]
    affine: NDArray[np.float64]  # index -> world
    inverse: NDArray[np.float64]


def _downsample(image: Image, target_mm: float, sigma_mm: float, mask: NDArray[np.bool_] | None = None
                ) -> tuple[_Level, NDArray[np.bool_] | None]:
    """Block-average to about ``target_mm`` voxels (never finer than the image), then smooth."""
    arr = np.asarray(image.array, dtype=np.float32)
    sp = np.asarray(image.grid.spacing, dtype=np.float64)
    f = np.maximum(1, np.floor(target_mm / sp + 1e-6)).astype(int)
    if np.any(f > 1):
        n = np.array(arr.shape) // f
        f = np.where(n >= 2, f, 1)
        n = np.array(arr.shape) // f
        crop = arr[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]]
        arr = crop.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
        if mask is not None:
            mcrop = mask[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]]
            mask = mcrop.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5)) >= 0.5
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f.astype(np.float64))
    scale[:3, 3] = (f - 1) / 2.0  # the new voxel centre is the block's centre
    affine = image.grid.affine @ scale
    if sigma_mm > 0:
        sigma = sigma_mm / (sp * f)
        arr = ndimage.gaussian_filter(arr, sigma=sigma, mode="nearest", truncate=3.0)
    return _Level(np.ascontiguousarray(arr), affine, np.linalg.inv(affine)), mask


def _trilinear(arr: NDArray[np.float32], idx: NDArray[np.float64]
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Trilinear value and its exact index-space gradient at (N, 3) indices; ``ok`` where inside."""
    shape = np.array(arr.shape)
    ok = ((idx[:, 0] >= 0.0) & (idx[:, 0] <= shape[0] - 1) & (idx[:, 1] >= 0.0) & (idx[:, 1] <= shape[1] - 1)
          & (idx[:, 2] >= 0.0) & (idx[:, 2] <= shape[2] - 1))
    i = idx[ok]
    i0 = np.minimum(np.floor(i).astype(np.intp), np.maximum(shape - 2, 0))
    t = i - i0
    flat = arr.reshape(-1)
    s0, s1 = shape[1] * shape[2], shape[2]
    base = i0[:, 0] * s0 + i0[:, 1] * s1 + i0[:, 2]
    step = [s0 if shape[0] > 1 else 0, s1 if shape[1] > 1 else 0, 1 if shape[2] > 1 else 0]
    c = [flat[base + a * step[0] + b * step[1] + d * step[2]].astype(np.float64)
         for a in (0, 1) for b in (0, 1) for d in (0, 1)]
    c000, c001, c010, c011, c100, c101, c110, c111 = c
    tz, ty, tx = t[:, 0], t[:, 1], t[:, 2]
    c00 = c000 + tx * (c001 - c000)
    c01 = c010 + tx * (c011 - c010)
    c10 = c100 + tx * (c101 - c100)
    c11 = c110 + tx * (c111 - c110)
    c0 = c00 + ty * (c01 - c00)
    c1 = c10 + ty * (c11 - c10)
    val = c0 + tz * (c1 - c0)
    g = np.empty((len(i), 3))
    g[:, 0] = c1 - c0
    g[:, 1] = (1 - tz) * (c01 - c00) + tz * (c11 - c10)
    g[:, 2] = ((1 - tz) * ((1 - ty) * (c001 - c000) + ty * (c011 - c010))
               + tz * ((1 - ty) * (c101 - c100) + ty * (c111 - c110)))
    return val, g, ok


# ------------------------------------------------------------------ metrics
def _parzen(eta: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """Cubic B-spline window at continuous bin positions ``eta``: the first of the 4 bins each
    sample touches, the 4 weights, and their derivatives with respect to the bin offset
    ``u = bin - eta`` (so d/d eta is minus these)."""
    k = np.floor(eta)
    f = (eta - k)[:, None]
    g = 1.0 - f
    w = np.hstack([g**3 / 6.0, 2.0 / 3.0 - f * f * (1.0 - 0.5 * f), 2.0 / 3.0 - g * g * (1.0 - 0.5 * g), f**3 / 6.0])
    dw = np.hstack([0.5 * g * g, f * (2.0 - 1.5 * f), -g * (2.0 - 1.5 * g), -0.5 * f * f])
    return k.astype(np.intp) - 1, w, dw


class _MattesMI:
    """Mattes et al. (2003) mutual information: fixed intensities binned (zero order), moving
    intensities Parzen-windowed with a cubic B-spline; value and d/d(moving value) per sample."""

    higher_is_better = True

    def __init__(self, fixed_values: NDArray[np.float64], moving_range: tuple[float, float], bins: int) -> None:
        self.bins = int(bins)
        lo, hi = np.percentile(fixed_values, [0.5, 99.5]) if fixed_values.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        self.fbin = np.clip(((fixed_values - lo) / (hi - lo) * self.bins).astype(np.intp), 0, self.bins - 1)
        mlo, mhi = moving_range
        mhi = mhi if mhi > mlo else mlo + 1.0
        self.mlo, self.mhi = mlo, mhi
        self.dm = (mhi - mlo) / (self.bins - 5)  # moving bins: the window (width 4) stays inside 0..bins-1

    def __call__(self, m: NDArray[np.float64], sel: NDArray[np.bool_]) -> tuple[float, NDArray[np.float64]]:
        b = self.bins
        fb = self.fbin[sel]
        mc = np.clip(m, self.mlo, self.mhi)
        eta = (mc - self.mlo) / self.dm + 2.0
        k0, w, dw = _parzen(eta)
        ks = k0[:, None] + np.arange(4)
        n = len(m)
        joint = np.bincount((fb[:, None] * b + ks).ravel(), weights=w.ravel(), minlength=b * b).reshape(b, b) / n
        pf = joint.sum(axis=1)
        pm = joint.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = joint / (pf[:, None] * pm[None, :])
            logr = np.where(joint > 0, np.log(ratio), 0.0)
        mi = float((joint * logr).sum())
        # dMI/dm_i = -(1 / (n dm)) sum_j dw_ij L[f_i, k_ij]   (the marginal terms cancel)
        lsum = (dw * logr[fb[:, None], ks]).sum(axis=1)
        grad = -lsum / (n * self.dm)
        grad = np.where((m > self.mlo) & (m < self.mhi), grad, 0.0)
        return mi, grad


class _NCC:
    higher_is_better = True

    def __init__(self, fixed_values: NDArray[np.float64]) -> None:
        self.f = fixed_values

    def __call__(self, m: NDArray[np.float64], sel: NDArray[np.bool_]) -> tuple[float, NDArray[np.float64]]:
        a = self.f[sel] - self.f[sel].mean()
        b = m - m.mean()
        saa, sbb = float(a @ a), float(b @ b)
        if saa <= 0 or sbb <= 0:
            return 0.0, np.zeros_like(m)
        sab = float(a @ b)
        den = np.sqrt(saa * sbb)
        return sab / den, a / den - (sab / den) * b / sbb


class _MSE:
    higher_is_better = False

    def __init__(self, fixed_values: NDArray[np.float64]) -> None:
        self.f = fixed_values

    def __call__(self, m: NDArray[np.float64], sel: NDArray[np.bool_]) -> tuple[float, NDArray[np.float64]]:
        d = m - self.f[sel]
        return float(d @ d) / len(d), 2.0 * d / len(d)


# ------------------------------------------------------------------ register
@dataclass
class _Problem:
    model: _Model
    y: NDArray[np.float64]  # (N, 3) A0 (x - c)
    level: _Level
    metric: Any
    moving_mask: NDArray[np.bool_] | None
    min_overlap: int
    evaluations: int = 0
    trace: list[float] = field(default_factory=list)

    def value(self, p: NDArray[np.float64]) -> tuple[float, NDArray[np.float64], int]:
        """Metric (as a cost: lower is better), its gradient, and the number of samples used."""
        self.evaluations += 1
        lin, dlin = self.model.linear(p)
        inv = self.level.inverse
        # moving index coordinates of the samples: inv (L y + T0(c) + t)
        idx = _affine_rows(self.y, inv[:3, :3] @ lin, inv[:3, :3] @ (self.model.t0c + p[-3:]) + inv[:3, 3])
        m, g_idx, ok = _trilinear(self.level.array, idx)
        if self.moving_mask is not None and ok.any():
            ii = np.clip(np.rint(idx[ok]).astype(np.intp), 0, np.array(self.moving_mask.shape) - 1)
            inside = self.moving_mask[ii[:, 0], ii[:, 1], ii[:, 2]]
            pos = np.flatnonzero(ok)
            ok[pos[~inside]] = False
            m, g_idx = m[inside], g_idx[inside]
        if ok.sum() < self.min_overlap:
            return np.inf, np.zeros_like(p), int(ok.sum())
        value, dm = self.metric(m, ok)
        gw = _affine_rows(g_idx, inv[:3, :3].T, np.zeros(3)) * dm[:, None]  # dmetric/dT (world), per sample
        # dmetric/dp_k = sum_i gw_i . (dL_k y_i) = sum(dL_k * G) with G = sum_i gw_i y_i^T
        y = self.y[ok]
        big_g = np.array([[float((gw[:, a] * y[:, b]).sum()) for b in range(3)] for a in range(3)])
        nlin = len(dlin)
        grad = np.empty(len(p))
        for k in range(nlin):
            grad[k] = float((dlin[k] * big_g).sum())
        grad[nlin:] = gw.sum(axis=0)
        sign = -1.0 if self.metric.higher_is_better else 1.0
        self.trace.append(sign * value)
        return sign * value, sign * grad, int(ok.sum())


def _centre_of_mass(image: Image) -> NDArray[np.float64]:
    arr = np.asarray(image.array, dtype=np.float64)
    w = arr - arr.min()
    total = w.sum()
    if total <= 0:
        return image.grid.index_to_world((np.array(image.shape) - 1) / 2.0)
    idx = np.array(ndimage.center_of_mass(w))
    return image.grid.index_to_world(idx)


def _initial(fixed: Image, moving: Image, initial: Any) -> NDArray[np.float64]:
    """Initial 4x4 fixed -> moving map."""
    if isinstance(initial, Registration):
        return np.linalg.inv(initial.matrix)
    if initial is not None and not isinstance(initial, str):
        m = np.asarray(initial, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"initial must be a Registration, a 4x4 matrix or a method name, got shape {m.shape}")
        return np.linalg.inv(m)  # given moving -> fixed, like Registration.matrix
    if initial is None:
        a, b = fixed.grid.frame_of_reference_uid, moving.grid.frame_of_reference_uid
        initial = "identity" if a and b and a == b else "centers"
    out = np.eye(4)
    if initial == "identity":
        return out
    if initial in ("centers", "centres", "geometry"):
        cf = fixed.grid.index_to_world((np.array(fixed.shape) - 1) / 2.0)
        cm = moving.grid.index_to_world((np.array(moving.shape) - 1) / 2.0)
    elif initial in ("moments", "mass"):
        cf, cm = _centre_of_mass(fixed), _centre_of_mass(moving)
    else:
        raise ValueError(f"initial must be 'identity', 'centers', 'moments', a Registration or a 4x4 matrix, "
                         f"not {initial!r}")
    out[:3, 3] = cm - cf
    return out


def _mask_array(mask: Any, image: Image, what: str) -> NDArray[np.bool_] | None:
    if mask is None:
        return None
    arr = np.asarray(getattr(mask, "array", mask), dtype=bool)
    if arr.shape != image.shape:
        raise GeometryError(f"{what} has shape {arr.shape}, but the image has shape {image.shape}")
    return arr


def register(fixed: Image, moving: Image, method: str = "rigid", metric: str = "mi", *,
             initial: Any = None, fixed_mask: Any = None, moving_mask: Any = None,
             levels: Sequence[float] = (4, 2, 1), smoothing_mm: Sequence[float] = (2.0, 1.0, 0.0),
             samples: int = 30_000, sampling: str = "random", bins: int = 50, seed: int = 0,
             max_iterations: int = 100, progress: bool | Callable[[dict[str, Any]], None] = False
             ) -> Registration:
    """Register ``moving`` onto ``fixed`` (rigid or affine) in patient coordinates.

    Parameters
    ----------
    fixed : Image
        The reference (normally the planning CT).
    moving : Image
        The image to bring onto it (MR, PET, CBCT...), any grid and orientation,
        in its own frame of reference or the fixed one.
    method : {"rigid", "affine"}
        6 parameters (rotation and translation) or 12 (full affine).
    metric : {"mi", "ncc", "mse"}
        Mattes mutual information (multimodal, default), normalised
        cross-correlation or mean squared difference (same modality).
    initial : {"identity", "centers", "moments"}, Registration or (4, 4) array, optional
        Start: identity, geometric centres of the two voxel boxes, intensity
        centres of mass, or a given moving -> fixed transform (e.g. read from a
        DICOM REG).  Default: identity when both images share a frame of
        reference, else ``"centers"``.
    fixed_mask, moving_mask : bool array or Image, optional
        Only samples inside the fixed mask, whose image lies inside the moving
        mask, are used.  Shapes are those of the images.
    levels : sequence of float
        Pyramid: the voxel size at each level, in units of the fixed image's
        finest spacing (default 4, 2, 1).
    smoothing_mm : sequence of float
        Gaussian sigma (mm) at each level (default 2, 1, 0 mm).
    samples : int
        At most this many fixed-image samples per level (default 30,000).
    sampling : {"random", "regular"}
        A seeded random subset, or an evenly strided one.
    bins : int
        Histogram bins for ``"mi"`` (default 50).
    seed : int
        Seed of the random sampling: the same inputs give the same result.
    max_iterations : int
        L-BFGS-B iterations per level (default 100).
    progress : bool or callable
        True logs each level at INFO (``logging.getLogger("rtkit.registration")``);
        a callable is called with a dict (level, iteration, metric) after every
        iteration.

    Returns
    -------
    Registration
        ``matrix`` maps moving patient coordinates to fixed patient coordinates.

    Raises
    ------
    RegistrationError
        The images do not overlap enough, or the optimisation fails or ends
        with a worse metric than it started from (the message has the metric
        history).
    ValueError
        Unknown ``method``, ``metric``, ``sampling`` or ``initial``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    if sampling not in ("random", "regular"):
        raise ValueError(f"sampling must be 'random' or 'regular', not {sampling!r}")
    if len(levels) != len(smoothing_mm) or not len(levels):
        raise ValueError("levels and smoothing_mm must have the same (non-zero) length")
    fmask = _mask_array(fixed_mask, fixed, "fixed_mask")
    mmask = _mask_array(moving_mask, moving, "moving_mask")
    current = _initial(fixed, moving, initial)  # fixed -> moving, 4x4
    base = float(np.min(fixed.grid.spacing))
    rng = np.random.default_rng(seed)
    history: list[dict[str, Any]] = []
    final_metric = np.nan
    for li, (shrink, sigma) in enumerate(zip(levels, smoothing_mm, strict=True)):
        target = float(shrink) * base
        flev, fm = _downsample(fixed, target, float(sigma), fmask)
        mlev, mm = _downsample(moving, target, float(sigma), mmask)
        if float(np.ptp(mlev.array)) <= 0 or float(np.ptp(flev.array)) <= 0:
            which = "moving" if float(np.ptp(mlev.array)) <= 0 else "fixed"
            raise RegistrationError(f"the {which} image is constant (at pyramid level {li}); nothing to register")
        # samples: fixed voxel centres (in the mask), a seeded subset
        cand = np.flatnonzero(fm.reshape(-1)) if fm is not None else np.arange(flev.array.size)
        if len(cand) > samples:
            if sampling == "random":
                cand = np.sort(rng.choice(cand, size=samples, replace=False))
            else:
                cand = cand[np.linspace(0, len(cand) - 1, samples).astype(np.intp)]
        if len(cand) < 64:
            raise RegistrationError(f"level {li}: only {len(cand)} fixed samples (mask too small?); "
                                    "use a larger fixed_mask or fewer levels")
        ijk = np.column_stack(np.unravel_index(cand, flev.array.shape)).astype(np.float64)
        x = ijk @ flev.affine[:3, :3].T + flev.affine[:3, 3]
        fvals = flev.array.reshape(-1)[cand].astype(np.float64)
        c = x.mean(axis=0)
        radius = float(np.sqrt(((x - c) ** 2).sum(axis=1).mean())) or 1.0
        a0 = current[:3, :3]
        model = _Model(method == "affine", a0.copy(), a0 @ c + current[:3, 3], c, radius)
        if metric == "mi":
            lo, hi = np.percentile(mlev.array, [0.5, 99.5])
            met: Any = _MattesMI(fvals, (float(lo), float(hi)), bins)
        elif metric == "ncc":
            met = _NCC(fvals)
        else:
            met = _MSE(fvals)
        prob = _Problem(model, (x - c) @ a0.T, mlev, met, mm, min_overlap=max(32, len(cand) // 20))
        p0 = np.zeros(model.size)
        start, _, used0 = prob.value(p0)
        if not np.isfinite(start):
            raise RegistrationError(
                f"level {li}: the images hardly overlap at the start ({used0} of {len(cand)} samples fall "
                f"inside the moving image); give a better initial= (e.g. 'centers' or 'moments')")
        iterations = [0]

        def fun(p: NDArray[np.float64], prob: _Problem = prob) -> tuple[float, NDArray[np.float64]]:
            v, g, _ = prob.value(p)
            return v, g

        def report(p: NDArray[np.float64], li: int = li, prob: _Problem = prob, it: list[int] = iterations) -> None:
            it[0] += 1
            if callable(progress):
                progress({"level": li, "iteration": it[0], "metric": prob.trace[-1] if prob.trace else np.nan})

        res = optimize.minimize(fun, p0, jac=True, method="L-BFGS-B", callback=report,
                                options={"maxiter": int(max_iterations), "ftol": FTOL, "gtol": 1e-5,
                                         "maxcor": 20, "maxls": MAX_LINE_SEARCH})
        end, _, used = prob.value(res.x)
        sign = -1.0 if met.higher_is_better else 1.0
        entry = {"level": li, "shrink": float(shrink), "smoothing_mm": float(sigma), "samples": int(len(cand)),
                 "used": int(used), "iterations": int(res.nit), "evaluations": prob.evaluations,
                 "metric_start": sign * start, "metric_end": sign * end, "message": str(res.message)}
        history.append(entry)
        if progress:
            log.info("registration level %d (voxels ~%.2f mm): %s %.5g -> %.5g in %d iterations", li, target,
                     metric, sign * start, sign * end, res.nit)
        if not np.isfinite(end) or end > start + 1e-12 * abs(start):
            raise RegistrationError(
                f"registration failed at level {li}: the {metric} metric went from {sign * start:.6g} to "
                f"{sign * end:.6g} ({res.message}); history: {history}. Try another initial= or metric=")
        current = model.matrix(res.x)
        final_metric = sign * end
    matrix = np.linalg.inv(current)  # moving -> fixed
    return Registration(matrix, fixed=SeriesRef.of(fixed), moving=SeriesRef.of(moving), fixed_grid=fixed.grid,
                        metric=final_metric, metric_name=metric, method=method, history=history,
                        meta=dict(fixed.meta or {}))

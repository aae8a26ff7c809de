"""Gamma index (Low et al. 1998) between two dose distributions (DESIGN §7).

For every reference voxel ``r`` above the cutoff,

    gamma(r) = min over x of sqrt(|x - r|^2 / dd^2 + (E(x) - R(r))^2 / dD^2)

where ``E`` is the evaluated dose, interpolated trilinearly between its voxel
centres, ``dd`` the distance criterion (mm) and ``dD`` the dose criterion (a
percentage of the normalisation dose, or of ``R(r)`` for local gamma).

The search (docs/gamma.md has the details) is a branch and bound over the
cells of the evaluated grid (the boxes between 8 neighbouring voxel centres,
in each of which the dose is trilinear), per reference point, in the evaluated
grid's index space with distances scaled by its spacing per axis:

1. the cell holding the point (the nearest one if the point is outside the
   grid): the minimum of ``|x - r|^2 / dd^2 + (E(x) - R)^2 / dD^2`` over that
   cell, by projected Gauss-Newton from the point itself (coordinates held on
   a face where the descent leaves the cell, so minima on faces, edges and
   corners, the kinks of the trilinear dose, are found), continued by damped
   Newton where it does not settle.  This is the point's first best value;
2. the other cells within ``max_gamma * dd``, ring by ring around that cell
   (face, edge and corner neighbours first), each with a lower bound: its
   distance from the point, plus the dose term of the dose range over the
   part of the cell within the best value's reach (a trilinear dose takes its
   extremes at a box's corners).  Only cells whose bound is below the point's
   best value are minimised; a point leaves the search once no further ring
   can come close enough.

So gamma is the minimum over every cell in reach, each minimised to the
tolerance ``resolution`` (no lattice): exact wherever the objective has a
single minimum in each cell.  A cell can hold two only where the dose bends
strongly inside it (voxel-scale structure, such as noise, of the order of the
dose criterion); the local descent may then settle in the higher one
(docs/gamma.md, accuracy).

Values at or above ``max_gamma`` are reported as ``max_gamma``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import FrameOfReferenceError, GeometryError, warn
from .geometry import Grid

__all__ = ["GammaResult", "gamma"]

log = logging.getLogger("rtkit.gamma")

POINT_CHUNK = 50_000  # reference points per chunk
PAIR_BATCH = 1_000_000  # (point, cell) distance bounds evaluated at once: bounds the memory
CELL_BATCH = 32_768  # (point, cell) minimisations run at once (cache-sized arrays)
GN_STEPS = 8  # Gauss-Newton steps per (point, cell); unsettled rows go on with damped Newton
NEWTON_STEPS = 200  # damped Newton steps at most
HALVINGS = 4  # Gauss-Newton step halvings when a step does not lower the objective


@dataclass
class GammaResult:
    """The gamma index on the reference grid.

    Attributes
    ----------
    array : ndarray, float32, shape of ``grid``
        Gamma per reference voxel; NaN below the dose cutoff (and where no
        evaluated dose lies within the search radius); values at or above
        ``max_gamma`` are ``max_gamma``.
    grid : Grid
        The reference grid.
    dose_percent, distance_mm, local, lower_cutoff_percent, max_gamma : criteria used
    normalization_gy : float
        The global normalisation dose (Gy; the reference maximum unless given).
    resolution_mm : float
        The convergence tolerance of the minimisation inside each evaluated
        cell (mm).
    """

    array: NDArray[np.float32]
    grid: Grid
    dose_percent: float
    distance_mm: float
    local: bool
    lower_cutoff_percent: float
    max_gamma: float
    normalization_gy: float
    resolution_mm: float

    @property
    def evaluated(self) -> NDArray[np.float32]:
        """The finite gamma values (the voxels above the cutoff), 1-D."""
        a = self.array
        return a[np.isfinite(a)]

    @property
    def pass_rate(self) -> float:
        """Percentage (0-100) of evaluated voxels with gamma <= 1 (NaN if none)."""
        v = self.evaluated
        return float(100.0 * np.count_nonzero(v <= 1.0) / v.size) if v.size else float("nan")

    @property
    def mean(self) -> float:
        """Mean gamma over evaluated voxels (values capped at ``max_gamma``)."""
        v = self.evaluated
        return float(v.mean(dtype=np.float64)) if v.size else float("nan")

    def histogram(self, bins: int | NDArray[np.float64] = 40) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Counts and bin edges of the gamma values, over ``[0, max_gamma]`` by default."""
        if np.isscalar(bins):
            bins = np.linspace(0.0, self.max_gamma, int(bins) + 1)
        return np.histogram(self.evaluated, bins=bins)

    def plot(self, ax: Any = None, *, kind: str = "map", slice_index: int | None = None, **kwargs: Any) -> Any:
        """Gamma map on one slice (``kind="map"``) or the histogram (``kind="histogram"``);
        needs matplotlib. Returns the Axes."""
        from ._optional import require

        plt = require("matplotlib.pyplot", "plot", "Plotting")
        ax = ax or plt.gca()
        if kind == "histogram":
            counts, edges = self.histogram()
            ax.stairs(counts, edges, fill=True, **kwargs)
            ax.axvline(1.0, color="k", lw=0.8)
            ax.set_xlabel("gamma")
            ax.set_ylabel("voxels")
            ax.set_title(f"pass rate {self.pass_rate:.2f} %")
            return ax
        if kind != "map":
            raise ValueError(f"kind must be 'map' or 'histogram', not {kind!r}")
        k = int(np.nanargmax(np.isfinite(self.array).sum(axis=(1, 2)))) if slice_index is None else slice_index
        im = ax.imshow(self.array[k], cmap=kwargs.pop("cmap", "RdYlGn_r"), vmin=0, vmax=self.max_gamma, **kwargs)
        ax.figure.colorbar(im, ax=ax, label="gamma")
        ax.set_title(f"slice {k}: {self.dose_percent:g}%/{self.distance_mm:g} mm "
                     f"{'local' if self.local else 'global'}, pass {self.pass_rate:.1f} %")
        return ax

    def __repr__(self) -> str:
        return (f"GammaResult({self.dose_percent:g}%/{self.distance_mm:g} mm {'local' if self.local else 'global'}, "
                f"{self.evaluated.size} voxels, pass rate {self.pass_rate:.2f} %, mean {self.mean:.3f})")


class _Evaluated:
    """The evaluated dose in its own index space: the cells between its voxel centres, in which
    the dose is trilinear.  A singleton axis is a plane: no cells (and no search) along it."""

    def __init__(self, array: NDArray[Any], grid: Grid) -> None:
        arr = np.asarray(array)
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        self.flat = np.ascontiguousarray(arr).reshape(-1)
        self.shape = np.array(arr.shape)
        self.spacing = np.asarray(grid.spacing, dtype=np.float64)
        self.active = self.shape > 1
        self.inverse = grid.inverse_affine
        self.last_cell = np.where(self.active, self.shape - 2, 0)  # cells 0 .. n - 2 along an axis
        strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1])
        self.strides = strides
        step = np.where(self.active, strides, 0)
        # flat offsets of a cell's 8 corners from its first one, corner (i, j, k) at 4 i + 2 j + k
        self.corner = np.array([i * step[0] + j * step[1] + k * step[2]
                                for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.intp)

    def corners(self, cells: NDArray[np.intp]) -> NDArray[np.float64]:
        """Dose at the 8 corners of cells (M, 3) (first-corner index), as (8, M) float64."""
        base = cells @ self.strides
        return self.flat[self.corner[:, None] + base[None, :]].astype(np.float64, copy=False)


def _rings(ev: _Evaluated, radius_mm: float, inv_dta2: float
           ) -> tuple[NDArray[np.intp], list[tuple[int, NDArray[np.intp]]]]:
    """The largest offset per axis and the cells that can lie within ``radius_mm`` of a point, as
    offsets from the cell holding it, in rings: ring k holds the offsets whose largest component
    is k (k = 1, 2, ...); ring 1 in three groups (the face, edge and corner neighbours)."""
    reach = np.array([int(np.ceil(radius_mm / ev.spacing[a])) + 1 if ev.active[a] else 0 for a in range(3)])
    count = np.prod(2 * reach + 1)
    if count > 5_000_000:
        raise ValueError(f"the search would visit up to {count:.3g} evaluated cells per point (radius "
                         f"{radius_mm:g} mm); use a smaller max_gamma")
    axes = [np.arange(-k, k + 1) for k in reach]
    o = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    gap = np.maximum(np.abs(o) - 1, 0) * ev.spacing  # the nearest such a cell can be (mm)
    o = o[(gap * gap).sum(axis=1) * inv_dta2 <= radius_mm * radius_mm * inv_dta2 * (1 + 1e-12)]
    ring = np.abs(o).max(axis=1)
    sides = (o != 0).sum(axis=1)  # within ring 1: faces, then edges, then corners (nearest first)
    groups = []
    for k in range(1, int(reach.max()) + 1):
        for s in ((1, 2, 3) if k == 1 else (None,)):
            g = o[(ring == k) & ((sides == s) if s else True)]
            if len(g):
                groups.append((k, g.astype(np.intp)))
    return reach, groups


def gamma(reference: Any, evaluated: Any, dose_percent: float = 3, distance_mm: float = 3, *,
          local: bool = False, lower_cutoff_percent: float = 10, max_gamma: float = 2,
          normalization: float | None = None, resolution: float | None = None) -> GammaResult:
    """Gamma index of ``evaluated`` against ``reference`` (Low et al. 1998), in 1-D, 2-D or 3-D.

    Parameters
    ----------
    reference : Dose or Image
        Gamma is computed at every reference voxel above the cutoff.  A grid
        with one slice (or one row) is a plane (film, EPID) or a profile.
    evaluated : Dose or Image
        Interpolated trilinearly between its voxel centres; any grid and
        orientation (axes orthogonal), in the same frame of reference.  Its
        singleton axes are not searched along (a plane is compared in plane).
    dose_percent : float
        Dose criterion, percent of ``normalization`` (global) or of the
        reference voxel's dose (``local=True``).
    distance_mm : float
        Distance-to-agreement criterion (mm).
    local : bool
        Local instead of global dose criterion.
    lower_cutoff_percent : float
        Reference voxels below this percentage of ``normalization`` are not
        evaluated (NaN).
    max_gamma : float
        The search stops at this gamma (radius ``max_gamma * distance_mm``);
        larger values are reported as ``max_gamma``.
    normalization : float, optional
        Global normalisation dose (Gy); default the reference maximum.
    resolution : float, optional
        Convergence tolerance (mm) of the minimisation inside each evaluated
        cell: a cell's search stops once its step is shorter than this;
        default ``distance_mm / 1000``.  The search is continuous (no
        lattice), so gamma is not limited to a step.

    Returns
    -------
    GammaResult

    Raises
    ------
    FrameOfReferenceError
        The two doses are in different frames of reference.
    GeometryError
        The evaluated grid has non-orthogonal (sheared) axes.
    ValueError
        Non-positive criteria, resolution or normalisation.
    """
    if dose_percent <= 0 or distance_mm <= 0 or max_gamma <= 0:
        raise ValueError("dose_percent, distance_mm and max_gamma must be positive")
    rg, eg = reference.grid, evaluated.grid
    a, b = rg.frame_of_reference_uid, eg.frame_of_reference_uid
    if a and b and a != b:
        raise FrameOfReferenceError(
            f"the reference dose is in frame of reference {a} and the evaluated one in {b}; gamma needs "
            "both in one frame (resample one with its registration first)")
    if not eg.is_orthogonal:
        raise GeometryError("the evaluated dose grid has sheared axes; resample it onto an orthogonal grid first")
    ref = np.asarray(reference.array)
    if ref.dtype not in (np.float32, np.float64):
        ref = ref.astype(np.float64)
    norm = float(np.nanmax(ref)) if normalization is None else float(normalization)
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(f"the normalisation dose must be positive, got {norm}")
    tol = float(resolution) if resolution is not None else distance_mm / 1000.0
    if not tol > 0:
        raise ValueError("resolution must be positive")
    ev = _Evaluated(evaluated.array, eg)
    radius = max_gamma * distance_mm
    inv_dta2 = 1.0 / (distance_mm * distance_mm)
    reach, rings = _rings(ev, radius, inv_dta2)

    out = np.full(rg.shape, np.nan, dtype=np.float32)
    flat_ref = ref.reshape(-1)
    with np.errstate(invalid="ignore"):
        idx = np.flatnonzero(flat_ref >= lower_cutoff_percent / 100.0 * norm)  # NaN compares False
    # reference index -> evaluated index
    m = ev.inverse @ rg.affine
    unreachable = 0
    for c0 in range(0, idx.size, POINT_CHUNK):
        sel = idx[c0:c0 + POINT_CHUNK]
        kji = np.column_stack(np.unravel_index(sel, rg.shape)).astype(np.float64)
        p = kji @ m[:3, :3].T + m[:3, 3]
        r = flat_ref[sel].astype(np.float64)
        dd = (dose_percent / 100.0) * (r if local else np.full_like(r, norm))
        g2, found = _search(ev, p, r, 1.0 / (dd * dd), inv_dta2, max_gamma * max_gamma, reach, rings, tol)
        unreachable += int(np.count_nonzero(~found))
        vals = np.where(found, np.sqrt(np.minimum(g2, max_gamma ** 2)), np.nan)
        out.reshape(-1)[sel] = vals.astype(np.float32)
    if unreachable:
        warn(f"gamma: {unreachable} reference voxel(s) above the cutoff have no evaluated dose within "
             f"{radius:g} mm (outside the evaluated grid); left NaN", log)
    return GammaResult(out, rg, float(dose_percent), float(distance_mm), bool(local), float(lower_cutoff_percent),
                       float(max_gamma), norm, tol)


def _search(ev: _Evaluated, p: NDArray[np.float64], r: NDArray[np.float64], wd: NDArray[np.float64],
            inv_dta2: float, cap: float, reach: NDArray[np.intp], rings: list[tuple[int, NDArray[np.intp]]],
            tol: float
            ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Squared gamma (at most ``cap``) of points ``p`` (evaluated index coordinates, (N, 3)) with
    reference doses ``r`` and dose weights ``wd`` (1 / dose criterion^2); and whether any evaluated
    dose lies within reach.  Branch and bound over the evaluated cells (module docstring)."""
    n = len(p)
    act = ev.active
    spacing = ev.spacing
    last = ev.last_cell
    cell = np.clip(np.floor(np.where(act, p, 0.0)), 0, last).astype(np.intp)
    # reachable: the evaluated grid's box within the search radius (a plane: within half a voxel of it)
    gap = np.where(act, np.maximum(0.0, np.maximum(-p, p - (ev.shape - 1))) * spacing, 0.0)
    found = ((gap * gap).sum(axis=1) * inv_dta2 <= cap * (1 + 1e-12)) & np.all(
        act | (np.abs(p) <= 0.5 + 1e-6), axis=1)
    best = np.full(n, float(cap))
    ws = spacing * spacing * inv_dta2  # squared gamma distance term per index unit^2, per axis
    ctx = _Context(ev, p, r, wd, best, ws, tol / spacing)
    todo = np.flatnonzero(found)
    _visit(ctx, todo, cell[todo], np.zeros(todo.size), False)  # the cell holding the point (or the nearest one)
    # the other cells, ring by ring; the distance term of a cell from per-axis tables.  The distance
    # (index units) from each point to the nearer face of its cell along each axis (or to the cell)
    inside = np.maximum(0.0, np.maximum(cell - p, p - cell - 1))
    face = np.maximum(np.minimum(np.maximum(p - cell, 0.0), np.maximum(cell + 1 - p, 0.0)), inside)
    near = np.cumsum(np.sort(np.where(act, face * face * ws, np.inf), axis=1), axis=1)
    ring = 0
    for k, offs in rings:
        if k != ring:  # no cell of ring k (or beyond) is nearer than k - 1 cells beyond the nearest face
            ring = k
            todo = todo[np.where(act, (face[todo] + (k - 1)) ** 2 * ws, np.inf).min(axis=1) < best[todo]]
        if not todo.size:
            break
        # within ring 1: the edge (corner) neighbours are beyond two (three) faces
        sel = todo if k > 1 else todo[near[todo, int(np.count_nonzero(offs[0])) - 1] < best[todo]]
        for s0 in range(0, sel.size, max(1, PAIR_BATCH // len(offs))):
            tk = sel[s0:s0 + max(1, PAIR_BATCH // len(offs))]
            pt, ct = p[tk], cell[tk]
            d2 = np.zeros((tk.size, len(offs)))
            for a in range(3):
                if not act[a]:
                    continue
                span = min(k, int(reach[a]))
                lo_a = ct[:, a, None] + np.arange(-span, span + 1)[None, :]  # candidate cells
                g = np.maximum(0.0, np.maximum(lo_a - pt[:, a, None], pt[:, a, None] - lo_a - 1))
                tab = np.where((lo_a >= 0) & (lo_a <= last[a]), g * g * ws[a], np.inf)  # (T, 2 span + 1)
                d2 += tab[:, offs[:, a] + span]
            ti, oi = np.nonzero(d2 < best[tk, None])
            if ti.size:
                _visit(ctx, tk[ti], ct[ti] + offs[oi], d2[ti, oi], True)
    return best, found


@dataclass
class _Context:
    """What the cell visits of one chunk of points share."""

    ev: _Evaluated
    p: NDArray[np.float64]  # points, evaluated index coordinates (N, 3)
    r: NDArray[np.float64]  # reference doses
    wd: NDArray[np.float64]  # 1 / dose criterion^2
    best: NDArray[np.float64]  # squared gamma so far (lowered in place)
    ws: NDArray[np.float64]  # squared gamma distance term per index unit^2, per axis
    tol: NDArray[np.float64]  # convergence tolerance, index units per axis


def _visit(ctx: _Context, pts: NDArray[np.intp], cells: NDArray[np.intp], lower: NDArray[np.float64],
           clip: bool) -> None:
    """Minimise in cells ``cells`` (first-corner indices, (M, 3)) for points ``pts`` (sorted), whose
    distance terms there are at least ``lower``, where the dose bound allows; lowers ``ctx.best``.
    ``clip``: bound the dose over the part of the cell within reach only (else the whole cell)."""
    ev, ws, best = ctx.ev, ctx.ws, ctx.best
    for s0 in range(0, pts.size, CELL_BATCH):
        k, c, lo = pts[s0:s0 + CELL_BATCH], cells[s0:s0 + CELL_BATCH], lower[s0:s0 + CELL_BATCH]
        corners = ev.corners(c)
        q = ctx.p[k] - c
        rk, bk = ctx.r[k], best[k]
        if clip:
            # the dose range over the part of the cell where the distance term alone stays below
            # best: along an axis, the others contribute at least their gaps to the cell
            gap = np.maximum(0.0, np.maximum(-q, q - 1.0))
            half = np.sqrt(np.maximum(bk - lo, 0.0)[:, None] / ws + gap * gap)
            emin, emax = _dose_range(corners, np.clip(q - half, 0.0, 1.0), np.clip(q + half, 0.0, 1.0))
        else:
            emin, emax = corners.min(axis=0), corners.max(axis=0)
        dgap = np.maximum(0.0, np.maximum(emin - rk, rk - emax))
        keep = np.flatnonzero(lo + ctx.wd[k] * dgap * dgap < bk)
        if not keep.size:
            continue
        k = k[keep]
        f = _minimise_in_cell(corners[:, keep], q[keep], rk[keep], ctx.wd[k], ws, ev.active, ctx.tol)
        first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])  # k is sorted: one group per point
        fmin = np.minimum.reduceat(f, first)
        kk = k[first]
        best[kk] = np.minimum(best[kk], fmin)


def _dose_range(corners: NDArray[np.float64], lo: NDArray[np.float64], hi: NDArray[np.float64]
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Smallest and largest trilinear dose over the sub-boxes ``[lo, hi]`` (unit-cell coordinates,
    (M, 3)) of cells with ``corners`` (8, M): a multilinear function takes its extremes at a box's
    corners, whose doses come from interpolating the cell's along each axis in turn."""
    v = corners.reshape(2, 4, -1)  # axis 0 first: corner (i, j, k) at 4 i + 2 j + k
    d = v[1] - v[0]
    v = np.stack([v[0] + lo[:, 0] * d, v[0] + hi[:, 0] * d])  # (2, 4, M): i, (j, k)
    v = v.reshape(2, 2, 2, -1)
    d = v[:, 1] - v[:, 0]
    v = np.stack([v[:, 0] + lo[:, 1] * d, v[:, 0] + hi[:, 1] * d], axis=1)  # (2, 2, 2, M)
    d = v[..., 1, :] - v[..., 0, :]
    v = np.stack([v[..., 0, :] + lo[:, 2] * d, v[..., 0, :] + hi[:, 2] * d], axis=-2)
    v = v.reshape(8, -1)
    return v.min(axis=0), v.max(axis=0)


def _coefficients(c: NDArray[np.float64], r: NDArray[np.float64]) -> NDArray[np.float64]:
    """The trilinear dose of cells with corners ``c`` (8, M), minus ``r``, as coefficients (8, M):
    ``E(t) - r = A0 + A1 t0 + A2 t1 + A3 t2 + A4 t0 t1 + A5 t0 t2 + A6 t1 t2 + A7 t0 t1 t2``."""
    A = np.empty((8, c.shape[1]))
    np.subtract(c[0], r, out=A[0])
    np.subtract(c[4], c[0], out=A[1])
    np.subtract(c[2], c[0], out=A[2])
    np.subtract(c[1], c[0], out=A[3])
    A[4] = c[6] - c[4] - A[2]
    A[5] = c[5] - c[4] - A[3]
    A[6] = c[3] - c[2] - A[3]
    A[7] = c[7] - c[6] - c[5] + c[4] - A[6]
    return A


def _minimise_in_cell(corners: NDArray[np.float64], q: NDArray[np.float64], r: NDArray[np.float64],
                      wd: NDArray[np.float64], ws: NDArray[np.float64], active: NDArray[np.bool_],
                      tol: NDArray[np.float64]) -> NDArray[np.float64]:
    """Minimum over the unit cell of ``sum_a ws_a (t_a - q_a)^2 + wd (E(t) - r)^2``, ``E`` trilinear
    with ``corners`` (8, M), per row (``q`` (M, 3): the point in the cell's coordinates).

    Projected Gauss-Newton from the point of the cell nearest to ``q``, with step halving;
    coordinates on a face where the descent direction (or the step) leaves the cell are held
    there, so minima on faces, edges and corners are found too.  Rows that Gauss-Newton does not
    settle within ``GN_STEPS`` steps (narrow curved valleys of a steep dose with a tight dose
    criterion, where it converges slowly or stalls) continue with damped Newton steps
    (:func:`_newton`).  ``tol`` (index units, per axis): a row stops once its step is below it
    along every axis."""
    A = _coefficients(corners, r)
    h0, h1, h2 = (1.0 if a else 0.0 for a in active)
    w0, w1, w2 = (float(ws[a]) if active[a] else 0.0 for a in range(3))
    i0, i1, i2 = (1.0 / float(ws[a]) if active[a] else 0.0 for a in range(3))
    e0, e1, e2 = (float(x) for x in tol)
    q0, q1, q2 = (np.ascontiguousarray(q[:, a]) for a in range(3))
    t0, t1, t2 = np.clip(q0, 0.0, h0), np.clip(q1, 0.0, h1), np.clip(q2, 0.0, h2)
    A_all, wd_all = A, wd
    rows = np.arange(len(r))
    out = np.empty(len(r))
    hard_rows: list[NDArray[np.intp]] = []
    hard_t: list[NDArray[np.float64]] = []

    Arr = NDArray[np.float64]

    def value(A: Arr, t0: Arr, t1: Arr, t2: Arr, q0: Arr, q1: Arr, q2: Arr, wd: Arr) -> tuple[Arr, Arr, Arr]:
        """Objective, dose residual and its derivative along axis 0."""
        t12 = t1 * t2
        g0 = A[1] + A[4] * t1 + A[5] * t2 + A[7] * t12
        res = A[0] + t0 * g0 + A[2] * t1 + A[3] * t2 + A[6] * t12
        d0, d1, d2 = t0 - q0, t1 - q1, t2 - q2
        return w0 * d0 * d0 + w1 * d1 * d1 + w2 * d2 * d2 + wd * res * res, res, g0

    def step(t0: Arr, t1: Arr, t2: Arr, q0: Arr, q1: Arr, q2: Arr, wd: Arr, res: Arr, g0: Arr, g1: Arr, g2: Arr,
             m0: Arr, m1: Arr, m2: Arr) -> tuple[Arr, Arr, Arr]:
        """Gauss-Newton step (diag(w) + wd g g^T) s = -G on the coordinates not held (``m``; the
        held ones do not move), by Sherman-Morrison; G is half the objective's gradient."""
        wr = wd * res
        g0, g1, g2 = g0 * m0, g1 * m1, g2 * m2
        y0 = (w0 * (t0 - q0) + wr * g0) * (m0 * i0)
        y1 = (w1 * (t1 - q1) + wr * g1) * (m1 * i1)
        y2 = (w2 * (t2 - q2) + wr * g2) * (m2 * i2)
        k = wd * (g0 * y0 + g1 * y1 + g2 * y2) / (1.0 + wd * (g0 * g0 * i0 + g1 * g1 * i1 + g2 * g2 * i2))
        return (g0 * i0) * k - y0, (g1 * i1) * k - y1, (g2 * i2) * k - y2

    def out_of_cell(t: Arr, d: Arr, h: float) -> NDArray[np.bool_]:
        """On a face of the cell and ``d`` pointing out of it."""
        return ((t <= 0.0) & (d < 0.0)) | ((t >= h) & (d > 0.0))

    def drop(gone: NDArray[np.intp] | NDArray[np.bool_], hard: bool) -> NDArray[np.bool_]:
        """Rows leaving the Gauss-Newton loop: settled (their value is the result) or hard."""
        if hard:
            hard_rows.append(rows[gone])
            hard_t.append(np.stack([t0[gone], t1[gone], t2[gone]]))
        else:
            out[rows[gone]] = f[gone]
        keep = np.ones(rows.size, dtype=bool)
        keep[gone] = False
        return keep

    f, res, g0 = value(A, t0, t1, t2, q0, q1, q2, wd)
    for it in range(GN_STEPS):
        g1 = A[2] + A[4] * t0 + (A[6] + A[7] * t0) * t2
        g2 = A[3] + A[5] * t0 + (A[6] + A[7] * t0) * t1
        wr = wd * res
        # held on a face: coordinates whose descent direction (-gradient) leaves the cell
        m0 = ~out_of_cell(t0, -(w0 * (t0 - q0) + wr * g0), h0)
        m1 = ~out_of_cell(t1, -(w1 * (t1 - q1) + wr * g1), h1)
        m2 = ~out_of_cell(t2, -(w2 * (t2 - q2) + wr * g2), h2)
        s0, s1, s2 = step(t0, t1, t2, q0, q1, q2, wd, res, g0, g1, g2, m0, m1, m2)
        # and those where the coupled step itself would leave the cell: held too, the step redone
        for _pass in range(2):
            o0, o1, o2 = out_of_cell(t0, s0, h0), out_of_cell(t1, s1, h1), out_of_cell(t2, s2, h2)
            redo = np.flatnonzero(o0 | o1 | o2)
            if not redo.size:
                break
            u = (t0[redo], t1[redo], t2[redo], q0[redo], q1[redo], q2[redo], wd[redo], res[redo], g0[redo],
                 g1[redo], g2[redo], m0[redo] & ~o0[redo], m1[redo] & ~o1[redo], m2[redo] & ~o2[redo])
            s0[redo], s1[redo], s2[redo] = step(*u)
            m0[redo], m1[redo], m2[redo] = u[11], u[12], u[13]
        n0, n1, n2 = np.clip(t0 + s0, 0.0, h0), np.clip(t1 + s1, 0.0, h1), np.clip(t2 + s2, 0.0, h2)
        fn, resn, gn = value(A, n0, n1, n2, q0, q1, q2, wd)
        better = fn < f
        # converged: the step is below the tolerance along every axis
        done = (np.abs(n0 - t0) <= e0) & (np.abs(n1 - t1) <= e1) & (np.abs(n2 - t2) <= e2)
        t0, t1, t2 = np.where(better, n0, t0), np.where(better, n1, t1), np.where(better, n2, t2)
        f, res, g0 = np.where(better, fn, f), np.where(better, resn, res), np.where(better, gn, g0)
        retry = np.flatnonzero(~better & ~done)  # the step overshot: halve it
        stalled = retry[:0]
        if retry.size:
            r0, r1, r2 = s0[retry], s1[retry], s2[retry]
            for _half in range(HALVINGS):
                r0, r1, r2 = r0 * 0.5, r1 * 0.5, r2 * 0.5
                n0 = np.clip(t0[retry] + r0, 0.0, h0)
                n1 = np.clip(t1[retry] + r1, 0.0, h1)
                n2 = np.clip(t2[retry] + r2, 0.0, h2)
                fn, resn, gn = value(A[:, retry], n0, n1, n2, q0[retry], q1[retry], q2[retry], wd[retry])
                ok = fn < f[retry]
                take = retry[ok]
                t0[take], t1[take], t2[take] = n0[ok], n1[ok], n2[ok]
                f[take], res[take], g0[take] = fn[ok], resn[ok], gn[ok]
                retry, r0, r1, r2 = retry[~ok], r0[~ok], r1[~ok], r2[~ok]
                if not retry.size:
                    break
            stalled = retry  # no halved step lowered the objective either
        last = it == GN_STEPS - 1
        if done.any() or stalled.size or last:
            keep = np.ones(rows.size, dtype=bool)
            if done.any():
                keep &= drop(np.flatnonzero(done), False)
            hard = np.flatnonzero(keep) if last else stalled
            if hard.size:
                keep &= drop(hard, True)
            rows, A, wd, f, res, g0 = rows[keep], A[:, keep], wd[keep], f[keep], res[keep], g0[keep]
            t0, t1, t2, q0, q1, q2 = t0[keep], t1[keep], t2[keep], q0[keep], q1[keep], q2[keep]
            if not rows.size:
                break
    if hard_rows:
        k = np.concatenate(hard_rows)
        if k.size:
            out[k] = _newton(A_all[:, k], np.concatenate(hard_t, axis=1), q[k].T, wd_all[k], ws, active, tol)
    return out


def _newton(A: NDArray[np.float64], t: NDArray[np.float64], q: NDArray[np.float64], wd: NDArray[np.float64],
            ws: NDArray[np.float64], active: NDArray[np.bool_], tol: NDArray[np.float64]) -> NDArray[np.float64]:
    """Damped (Levenberg) Newton for the rows :func:`_minimise_in_cell` hands on: same objective,
    trilinear coefficients ``A`` (8, M), start ``t`` (3, M), point ``q`` (3, M).  The Hessian
    includes the dose's own curvature (``res`` times its mixed second derivatives), so the
    iteration follows curved valleys; where it is not positive definite, the Gauss-Newton matrix
    is used.  A step that does not lower the objective raises the damping."""
    hi = np.where(active, 1.0, 0.0)[:, None]
    w = np.where(active, ws, 0.0)[:, None]
    tol = tol[:, None]
    t = t.copy()
    n = t.shape[1]
    out = np.empty(n)
    rows = np.arange(n)
    lam = np.zeros(n)

    def value(A: NDArray[np.float64], t: NDArray[np.float64], q: NDArray[np.float64], wd: NDArray[np.float64]
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Objective, residual, dose gradient (3, M) and mixed second derivatives (E01, E02, E12)."""
        t0, t1, t2 = t
        e01, e02, e12 = A[4] + A[7] * t2, A[5] + A[7] * t1, A[6] + A[7] * t0
        g = np.stack([A[1] + A[4] * t1 + A[5] * t2 + A[7] * t1 * t2, A[2] + e01 * t0 + A[6] * t2,
                      A[3] + e02 * t0 + A[6] * t1])
        res = A[0] + t0 * g[0] + A[2] * t1 + A[3] * t2 + A[6] * t1 * t2
        d = t - q
        return (w * d * d).sum(axis=0) + wd * res * res, res, g, np.stack([e01, e02, e12])

    f, res, g, e = value(A, t, q, wd)
    for _ in range(NEWTON_STEPS):
        G = w * (t - q) + (wd * res) * g  # half the gradient
        free = ~(((t <= 0.0) & (G > 0.0)) | ((t >= hi) & (G < 0.0))) & active[:, None]  # planes: no step
        s = np.zeros_like(t)
        for _pass in range(3):
            s = _newton_step(w, wd, res, g, e, G, free, lam)
            out_ = ((t <= 0.0) & (s < 0.0)) | ((t >= hi) & (s > 0.0))
            if not out_.any():
                break
            free &= ~out_
        tn = np.clip(t + s, 0.0, hi)
        fn, rn, gn, en = value(A, tn, q, wd)
        better = fn < f
        small = np.all(np.abs(tn - t) <= tol, axis=0)
        t[:, better], f[better], res[better], g[:, better], e[:, better] = (
            tn[:, better], fn[better], rn[better], gn[:, better], en[:, better])
        lam = np.where(better, lam * 0.25, np.maximum(lam * 4.0, 1e-3))
        done = small | (lam > 1e8)
        if done.any():
            out[rows[done]] = f[done]
            keep = ~done
            rows, A, t, q, wd, f, res, g, e, lam = (rows[keep], A[:, keep], t[:, keep], q[:, keep], wd[keep],
                                                    f[keep], res[keep], g[:, keep], e[:, keep], lam[keep])
            if not rows.size:
                break
    out[rows] = f
    return out


def _newton_step(w: NDArray[np.float64], wd: NDArray[np.float64], res: NDArray[np.float64], g: NDArray[np.float64],
                 e: NDArray[np.float64], G: NDArray[np.float64], free: NDArray[np.bool_], lam: NDArray[np.float64]
                 ) -> NDArray[np.float64]:
    """Solve (H + lam diag(w)) s = -G on the free coordinates (3 x 3, by cofactors), H the
    Newton matrix where positive definite, else the Gauss-Newton one."""
    m = free.astype(np.float64)
    gf = g * m
    wr = wd * res
    # off-diagonal mixed terms of the Newton matrix, only between free coordinates
    x01, x02, x12 = wr * e[0] * m[0] * m[1], wr * e[1] * m[0] * m[2], wr * e[2] * m[1] * m[2]
    diag = (w * (1.0 + lam)) * m + (1.0 - m)  # held coordinates: identity rows
    a = diag[0] + wd * gf[0] * gf[0]
    d = diag[1] + wd * gf[1] * gf[1]
    ff = diag[2] + wd * gf[2] * gf[2]
    b0, c0, e0 = wd * gf[0] * gf[1], wd * gf[0] * gf[2], wd * gf[1] * gf[2]
    rhs = -(G * m)

    def solve(b: NDArray[np.float64], c: NDArray[np.float64], ee: NDArray[np.float64]
              ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        c00, c01, c02 = d * ff - ee * ee, c * ee - b * ff, b * ee - c * d
        c11, c12, c22 = a * ff - c * c, b * c - a * ee, a * d - b * b
        det = a * c00 + b * c01 + c * c02
        pd = (a > 0) & (c22 > 0) & (det > 0)  # leading minors
        s = np.stack([c00 * rhs[0] + c01 * rhs[1] + c02 * rhs[2],
                      c01 * rhs[0] + c11 * rhs[1] + c12 * rhs[2],
                      c02 * rhs[0] + c12 * rhs[1] + c22 * rhs[2]])
        return np.where(pd, s / np.where(pd, det, 1.0), 0.0), pd

    sol, pd = solve(b0 + x01, c0 + x02, e0 + x12)
    if not pd.all():
        sol = np.where(pd, sol, solve(b0, c0, e0)[0])
    return sol * m

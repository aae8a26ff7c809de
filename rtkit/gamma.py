"""Gamma index (Low et al. 1998) between two dose distributions (DESIGN §7).

For every reference voxel ``r`` above the cutoff,

    gamma(r) = min over x of sqrt(|x - r|^2 / dd^2 + (E(x) - R(r))^2 / dD^2)

where ``E`` is the evaluated dose, interpolated trilinearly between its voxel
centres, ``dd`` the distance criterion (mm) and ``dD`` the dose criterion (a
percentage of the normalisation dose, or of ``R(r)`` for local gamma).

The search (docs/gamma.md has the details):

1. a lower bound for every point from the range of the evaluated dose within
   the search radius (a minimum/maximum filter): points whose dose difference
   alone exceeds the bound need no search;
2. a lattice of offsets with step ``resolution`` (default distance / 10), in
   order of distance, each point leaving the search once the distance alone
   (plus its dose bound) cannot beat its best value;
3. from the best lattice offset, Gauss-Newton steps on the continuous
   trilinear dose (step limited to the lattice step), kept when they lower
   gamma: the minimum is then found to far better than the lattice step, also
   in steep gradients where the lattice alone is off by up to
   ``|grad E| * step / dD``.

Values at or above ``max_gamma`` are reported as ``max_gamma``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from .errors import FrameOfReferenceError, GeometryError, warn
from .geometry import Grid

__all__ = ["GammaResult", "gamma"]

log = logging.getLogger("rtkit.gamma")

POINT_CHUNK = 50_000  # reference points per chunk
BATCH_VALUES = 1_500_000  # (point, offset) pairs evaluated at once: bounds the memory
REFINE_STEPS = 6
COMPASS_LEVELS = 4  # compass search: steps of 1/2 .. 1/16 of the lattice step


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
        The search lattice step (mm).
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
    """Trilinear evaluated dose in its own index space; singleton axes are a plane (no search)."""

    def __init__(self, array: NDArray[Any], grid: Grid) -> None:
        self.arr = np.ascontiguousarray(array, dtype=np.float32)
        self.shape = np.array(self.arr.shape)
        self.flat = self.arr.reshape(-1)
        self.strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1])
        self.spacing = np.asarray(grid.spacing, dtype=np.float64)
        self.active = self.shape > 1
        self.inverse = grid.inverse_affine

    def values(self, p: NDArray[np.float64], gradient: bool = False
               ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """Dose at (..., 3) index points (NaN outside ``[0, n - 1]``) and, optionally, its gradient
        per mm along the grid axes."""
        shape = self.shape
        ok = np.ones(p.shape[:-1], dtype=bool)
        lo = np.empty(p.shape, dtype=np.intp)
        t = np.empty(p.shape)
        for a in range(3):
            pa = p[..., a]
            if self.active[a]:
                ok &= (pa >= 0.0) & (pa <= shape[a] - 1)
                pa = np.where(np.isfinite(pa), pa, 0.0)
                i0 = np.clip(np.floor(pa), 0, shape[a] - 2).astype(np.intp)
                lo[..., a] = i0
                t[..., a] = pa - i0
            else:
                ok &= np.abs(pa) <= 0.5 + 1e-6
                lo[..., a] = 0
                t[..., a] = 0.0
        base = lo[..., 0] * self.strides[0] + lo[..., 1] * self.strides[1] + lo[..., 2]
        base = np.where(ok, base, 0)
        step = [self.strides[a] if self.active[a] else 0 for a in range(3)]
        f = self.flat
        c = {}
        for i in (0, 1):
            for j in (0, 1):
                for k in (0, 1):
                    c[i, j, k] = f[base + i * step[0] + j * step[1] + k * step[2]].astype(np.float64)
        tz, ty, tx = t[..., 0], t[..., 1], t[..., 2]
        c00 = c[0, 0, 0] + tx * (c[0, 0, 1] - c[0, 0, 0])
        c01 = c[0, 1, 0] + tx * (c[0, 1, 1] - c[0, 1, 0])
        c10 = c[1, 0, 0] + tx * (c[1, 0, 1] - c[1, 0, 0])
        c11 = c[1, 1, 0] + tx * (c[1, 1, 1] - c[1, 1, 0])
        c0 = c00 + ty * (c01 - c00)
        c1 = c10 + ty * (c11 - c10)
        v = np.where(ok, c0 + tz * (c1 - c0), np.nan)
        if not gradient:
            return v, None
        g = np.empty(p.shape)
        g[..., 0] = (c1 - c0) / self.spacing[0]
        g[..., 1] = ((1 - tz) * (c01 - c00) + tz * (c11 - c10)) / self.spacing[1]
        g[..., 2] = ((1 - tz) * ((1 - ty) * (c[0, 0, 1] - c[0, 0, 0]) + ty * (c[0, 1, 1] - c[0, 1, 0]))
                     + tz * ((1 - ty) * (c[1, 0, 1] - c[1, 0, 0]) + ty * (c[1, 1, 1] - c[1, 1, 0]))) / self.spacing[2]
        g *= self.active  # no gradient across a plane
        return v, g


def _offsets(ev: _Evaluated, radius_mm: float, step_mm: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lattice offsets (mm along the evaluated axes) within ``radius_mm``, nearest first."""
    n = int(np.floor(radius_mm / step_mm + 1e-9))
    axes = [np.arange(-n, n + 1) * step_mm if ev.active[a] else np.zeros(1) for a in range(3)]
    o = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    d = np.sqrt((o * o).sum(axis=1))
    keep = d <= radius_mm + 1e-9
    o, d = o[keep], d[keep]
    order = np.argsort(d, kind="stable")
    return o[order], d[order]


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
        Search lattice step (mm); default ``distance_mm / 10``.  Continuous
        refinement follows, so gamma is not limited to the lattice.

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
        Non-positive criteria or normalisation.
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
    ref = np.asarray(reference.array, dtype=np.float64)
    norm = float(np.nanmax(ref)) if normalization is None else float(normalization)
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(f"the normalisation dose must be positive, got {norm}")
    step = float(resolution) if resolution is not None else distance_mm / 10.0
    if step <= 0:
        raise ValueError("resolution must be positive")
    ev = _Evaluated(evaluated.array, eg)
    radius = max_gamma * distance_mm
    lattice = np.prod([2 * radius / step + 1 if ev.active[k] else 1 for k in range(3)])
    if lattice > 20_000_000:
        raise ValueError(f"the search lattice would have about {lattice:.3g} offsets (radius {radius:g} mm at "
                         f"{step:g} mm); use a smaller max_gamma or a larger resolution")
    offsets, dist = _offsets(ev, radius, step)
    # dose range of the evaluated dose within the search radius of every evaluated node
    half = [int(np.ceil(radius / ev.spacing[k])) + 1 if ev.active[k] else 0 for k in range(3)]
    size = [2 * h + 1 for h in half]
    emin = ndimage.minimum_filter(ev.arr, size=size, mode="nearest")
    emax = ndimage.maximum_filter(ev.arr, size=size, mode="nearest")

    out = np.full(rg.shape, np.nan, dtype=np.float32)
    flat_ref = ref.reshape(-1)
    idx = np.flatnonzero(np.isfinite(flat_ref) & (flat_ref >= lower_cutoff_percent / 100.0 * norm))
    # reference index -> evaluated index
    m = ev.inverse @ rg.affine
    unreachable = 0
    for c0 in range(0, idx.size, POINT_CHUNK):
        sel = idx[c0:c0 + POINT_CHUNK]
        kji = np.column_stack(np.unravel_index(sel, rg.shape)).astype(np.float64)
        p = kji @ m[:3, :3].T + m[:3, 3]
        r = flat_ref[sel]
        dd = (dose_percent / 100.0) * (r if local else np.full_like(r, norm))
        g2, found = _search(ev, p, r, dd, distance_mm, max_gamma, offsets, dist, emin, emax, step)
        unreachable += int(np.count_nonzero(~found))
        vals = np.where(found, np.sqrt(np.minimum(g2, max_gamma ** 2)), np.nan)
        out.reshape(-1)[sel] = vals.astype(np.float32)
    if unreachable:
        warn(f"gamma: {unreachable} reference voxel(s) above the cutoff have no evaluated dose within "
             f"{radius:g} mm (outside the evaluated grid); left NaN", log)
    return GammaResult(out, rg, float(dose_percent), float(distance_mm), bool(local), float(lower_cutoff_percent),
                       float(max_gamma), norm, step)


def _search(ev: _Evaluated, p: NDArray[np.float64], r: NDArray[np.float64], dd: NDArray[np.float64],
            dta: float, max_gamma: float, offsets: NDArray[np.float64], dist: NDArray[np.float64],
            emin: NDArray[np.float32], emax: NDArray[np.float32], step: float
            ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Squared gamma of points ``p`` (evaluated index coordinates) with reference doses ``r`` and dose
    criteria ``dd``; and whether any evaluated dose lay within reach."""
    n = len(p)
    inv_dta2 = 1.0 / (dta * dta)
    inv_dd2 = 1.0 / (dd * dd)
    cap = max_gamma * max_gamma
    # lower bound: dose difference to the evaluated range around the nearest node
    node = np.clip(np.rint(p), 0, ev.shape - 1).astype(np.intp)
    flat_node = node[:, 0] * ev.strides[0] + node[:, 1] * ev.strides[1] + node[:, 2]
    lo, hi = emin.reshape(-1)[flat_node], emax.reshape(-1)[flat_node]
    lb2 = np.maximum(0.0, np.maximum(lo - r, r - hi)) ** 2 * inv_dd2
    v0, _ = ev.values(p)  # the zero offset
    f0 = (v0 - r) ** 2 * inv_dd2
    found = np.isfinite(f0)
    best = np.where(found, np.minimum(f0, cap), cap)
    best_o = np.zeros((n, 3))
    scale = 1.0 / ev.spacing  # mm along an axis -> index units
    lo_index = np.where(ev.active, 0.0, -np.inf)
    hi_index = np.where(ev.active, ev.shape - 1.0, np.inf)
    # a first Gauss-Newton descent from the point itself: where the doses agree well this gives a
    # tight bound at once, and the lattice search below stops after a few shells
    pre = np.flatnonzero(found & (best < cap))
    for s0 in range(0, pre.size, BATCH_VALUES // 8):
        k = pre[s0:s0 + BATCH_VALUES // 8]
        fk, o = _refine(ev, p[k], r[k], inv_dd2[k], inv_dta2, np.zeros((len(k), 3)), scale, lo_index, hi_index)
        keep = fk < best[k]
        best[k[keep]], best_o[k[keep]] = fk[keep], o[keep]
    start_score = best.copy()
    start_o = best_o.copy()
    # points whose search ball misses the evaluated grid's box have nothing to compare with
    gap = np.where(ev.active, np.maximum(0.0, np.maximum(-p, p - (ev.shape - 1))) * ev.spacing, 0.0)
    reachable = (gap * gap).sum(axis=1) <= (max_gamma * dta) ** 2
    todo = np.flatnonzero(((lb2 < best) | ~found) & reachable)
    start = 1 if len(offsets) and dist[0] == 0 else 0
    while todo.size and start < len(offsets):
        batch = max(1, BATCH_VALUES // todo.size)
        o = offsets[start:start + batch]
        d2 = dist[start:start + batch] ** 2 * inv_dta2
        start += len(o)
        q = p[todo, None, :] + (o * scale)[None, :, :]
        v, g = ev.values(q, gradient=True)
        wd = inv_dd2[todo, None]
        f = d2[None, :] + (v - r[todo, None]) ** 2 * wd
        ok = np.isfinite(f)
        found[todo] |= ok.any(axis=1)
        f = np.where(ok, f, np.inf)
        j = np.argmin(f, axis=1)
        rows = np.arange(todo.size)
        fj = f[rows, j]
        better = fj < best[todo]
        best[todo[better]] = fj[better]
        best_o[todo[better]] = o[j[better]]
        # where to refine from: the lattice offset whose linearised gamma (the minimum of the dose's
        # tangent plane there, if that lies within two lattice steps) is lowest; in steep gradients
        # the lattice values themselves mostly measure how close a lattice point falls to the isodose
        c = v - r[todo, None] - (g * o[None]).sum(axis=-1)
        lam = -(wd * c / (inv_dta2 + wd * (g * g).sum(axis=-1)))
        target = lam[..., None] * g
        near = ((target - o[None]) ** 2).sum(axis=-1) <= (2.0 * step) ** 2
        score = np.where(ok & near, (target * target).sum(axis=-1) * inv_dta2 + (c + (g * target).sum(axis=-1)) ** 2
                         * wd, f)
        js = np.argmin(score, axis=1)
        sj = score[rows, js]
        take = sj < start_score[todo]
        start_score[todo[take]] = sj[take]
        start_o[todo[take]] = np.where(near[rows, js][take, None], target[rows, js][take], o[js[take]])
        if start < len(offsets):  # points that the farther offsets can still improve
            nxt = dist[start] ** 2 * inv_dta2
            todo = todo[nxt + lb2[todo] < best[todo]]
    # continuous refinement: Gauss-Newton on the trilinear dose, from the linearised best start and
    # from the best lattice offset, each step halved until it lowers gamma (at most three times)
    ref_pts = np.flatnonzero(found & (best < cap))
    for s0 in range(0, ref_pts.size, BATCH_VALUES // 8):
        k = ref_pts[s0:s0 + BATCH_VALUES // 8]
        for first in (start_o[k], best_o[k]):
            fk, o = _refine(ev, p[k], r[k], inv_dd2[k], inv_dta2, first.copy(), scale, lo_index, hi_index)
            keep = fk < best[k]
            best[k[keep]], best_o[k[keep]] = fk[keep], o[keep]
        fk, o = _compass(ev, p[k], r[k], inv_dd2[k], inv_dta2, best_o[k].copy(), best[k].copy(), scale,
                         lo_index, hi_index, step)
        best[k], best_o[k] = fk, o
    return best, found


def _refine(ev: _Evaluated, p: NDArray[np.float64], r: NDArray[np.float64], wd: NDArray[np.float64], inv_dta2: float,
            o: NDArray[np.float64], scale: NDArray[np.float64], lo_index: NDArray[np.float64],
            hi_index: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gauss-Newton from offsets ``o`` (mm): squared gamma reached and the offsets."""
    def value_at(rows: NDArray[np.intp], off: NDArray[np.float64]) -> NDArray[np.float64]:
        v, _ = ev.values(p[rows] + off * scale)
        f = (off * off).sum(axis=1) * inv_dta2 + (v - r[rows]) ** 2 * wd[rows]
        return np.where(np.isfinite(f), f, np.inf)

    fk = value_at(np.arange(len(o)), o)
    live = np.isfinite(fk)
    for _ in range(REFINE_STEPS):
        if not live.any():
            break
        here = p + o * scale
        v, g = ev.values(here, gradient=True)
        # coordinates held on a face of the evaluated box (the unconstrained step would leave it)
        c_all = v - r - (g * o).sum(axis=1)
        free_target = -(wd * c_all / (inv_dta2 + wd * (g * g).sum(axis=1)))[:, None] * g
        pinned = (((here <= lo_index + 1e-9) & (free_target < o)) | ((here >= hi_index - 1e-9) & (free_target > o)))
        gu = np.where(pinned, 0.0, g)
        c = v - r - (gu * o).sum(axis=1)  # the pinned part of g . o stays in the constant
        target = np.where(pinned, o, -(wd * c / (inv_dta2 + wd * (gu * gu).sum(axis=1)))[:, None] * gu)
        move = target - o  # to the linearised minimum (on the face where pinned)
        move[~live] = 0.0
        improved = np.zeros(len(o), dtype=bool)
        trying = np.flatnonzero(live)
        for _half in range(4):
            if not trying.size:
                break
            # projected onto the evaluated grid's box (the minimum may lie on its faces)
            cand = (np.clip(p[trying] + (o[trying] + move[trying]) * scale, lo_index, hi_index) - p[trying]) / scale
            fc = value_at(trying, cand)
            ok = fc < fk[trying]
            took = trying[ok]
            o[took], fk[took] = cand[ok], fc[ok]
            improved[took] = True
            trying = trying[~ok]
            move[trying] *= 0.5
        live &= improved
    return fk, o


def _compass(ev: _Evaluated, p: NDArray[np.float64], r: NDArray[np.float64], wd: NDArray[np.float64],
             inv_dta2: float, o: NDArray[np.float64], fk: NDArray[np.float64], scale: NDArray[np.float64],
             lo_index: NDArray[np.float64], hi_index: NDArray[np.float64], step_mm: float
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A compass search around offsets ``o`` (squared gamma ``fk``): Gauss-Newton stalls where the
    minimum sits on a kink of the trilinear dose (a cell face)."""
    live = np.isfinite(fk)
    h = step_mm / 2.0
    dirs = np.vstack([np.eye(3), -np.eye(3)])
    dirs = dirs[np.isfinite(hi_index)[np.arange(6) % 3]]  # only along searched axes
    for _ in range(COMPASS_LEVELS):
        for d in dirs:
            cand = (np.clip(p + (o + h * d) * scale, lo_index, hi_index) - p) / scale
            v, _ = ev.values(p + cand * scale)
            fc = (cand * cand).sum(axis=1) * inv_dta2 + (v - r) ** 2 * wd
            take = live & np.isfinite(fc) & (fc < fk)
            o[take], fk[take] = cand[take], fc[take]
        h *= 0.5
    return fk, o

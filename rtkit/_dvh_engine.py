"""Sampling a structure's solid in a dose grid, for the DVH (DESIGN §5).

The solid is cut into *layers*: slabs ``[lo, hi]`` along the contour normal
with one in-plane region each (the slab convention of DESIGN §3 gives one
layer per contour plane; the smooth model, further down, adds the parts
between planes where the interpolated surface is inside).  The dose grid's
slices are parallel to the contour planes, and each layer is handled exactly:

* in plane, a lattice that subdivides the dose pixels gets the exact area
  fraction of each of its pixels inside the region, and the centroid of the
  covered part (:func:`rtkit._raster.coverage` with moments); the dose is
  interpolated bilinearly at that centroid, which is the mean dose over the
  covered part wherever the dose is linear across the pixel;
* along the normal, the layer is split at the dose grid's slice centres,
  between which the trilinear dose is linear in depth: each piece's volume is
  spread uniformly between the doses at its two faces.  The remaining
  in-plane variation across a lattice pixel (from the local bilinear
  gradient) widens that spread (their variances add).

Dose grids oblique to the contour planes are first resampled (trilinear) onto a
grid aligned with them (see ``rtkit.dvh``).

Each sample is ``(dose, half_width, weight_cc)``: its volume is spread
uniformly over ``dose +- half_width``.  Samples are made in chunks and added
to a :class:`Histogram`, the cumulative curve exact at its bin edges, so the
working memory is that of one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._raster import coverage, ring_successors

# Default sampling: about this many samples (lattice pixels x depth pieces) over the solid; the
# in-plane pixel is never larger than the dose pixel, and along the normal the split is exact.
TARGET_SAMPLES = 40_000
MIN_RESOLUTION_MM = 0.05
# Lattice pixels per dose pixel, at most (per axis): with exact coverage and centroids, finer
# pixels add little but cost; small or thin ROIs would otherwise get 0.1 mm lattices.
MAX_SUBDIVISION = 8


@dataclass
class Samples:
    """Dose samples of a solid: volume ``weights`` (cm3) spread over ``doses +- half`` (Gy)."""

    doses: NDArray[np.float64]
    half: NDArray[np.float64]
    weights: NDArray[np.float64]
    outside_cc: float
    dmin: float
    dmax: float


class Histogram:
    """A streaming sink for samples: the cumulative DVH at fixed bin edges and running figures.

    Chunks of samples are added as they are made, so memory stays bounded by one chunk.
    """

    def __init__(self, width: float, top: float) -> None:
        self.width = float(width)
        self.edges = np.arange(int(np.ceil(max(top, 0.0) / self.width)) + 2) * self.width
        self.cum = np.zeros(len(self.edges))  # volume (cm3) at or above each edge
        self.total = 0.0
        self.dose_volume = 0.0  # sum of dose x volume (Gy cm3)
        self.outside_cc = 0.0
        self.dmin, self.dmax = np.inf, -np.inf
        self.top = 0.0

    def add(self, smp: Samples) -> None:
        from .dvh import _spread_cumulative

        self.outside_cc += smp.outside_cc
        self.dmin, self.dmax = min(self.dmin, smp.dmin), max(self.dmax, smp.dmax)
        keep = smp.weights > 0
        if not keep.any():
            return
        d, w = smp.doses[keep], smp.weights[keep]
        half = np.minimum(smp.half[keep], np.maximum(d, 0.0))  # doses are never negative
        self.cum += _spread_cumulative(d, w, half, self.edges)
        self.total += float(w.sum())
        self.dose_volume += float((d * w).sum())  # not np.dot: no BLAS threads for this
        self.top = max(self.top, float(np.max(d + half)))

    def merge(self, other: Histogram) -> None:
        """Add another histogram with the same bin edges (another part of the same solid)."""
        if len(other.edges) != len(self.edges) or other.width != self.width:
            raise ValueError("histograms with different bin edges cannot be merged")
        self.cum += other.cum
        self.total += other.total
        self.dose_volume += other.dose_volume
        self.outside_cc += other.outside_cc
        self.dmin, self.dmax = min(self.dmin, other.dmin), max(self.dmax, other.dmax)
        self.top = max(self.top, other.top)


@dataclass
class Layer:
    """A slab ``[lo, hi]`` (mm along the normal) of constant in-plane region."""

    lo: float
    hi: float
    position: float  # where its rings lie along the normal (mm)
    rings: list[NDArray[np.float64]]  # (u, v) plane coordinates, mm; exteriors/holes oppositely oriented
    area: float  # mm2


def slab_layers(stack: Any, end_caps: bool = True) -> list[Layer]:
    """One layer per contour plane: the slab solid of DESIGN §3.

    Without ``end_caps`` the first and last planes of each run of planes stop at the plane
    (a plane on its own keeps its whole slab).
    """
    layers = [Layer(p.lo, p.hi, p.position, p.rings(), float(p.region.area)) for p in stack.planes]
    if not end_caps:
        for run in _runs(stack):
            if len(run) > 1:
                first, last = layers[run[0]], layers[run[-1]]
                first.lo, last.hi = first.position, last.position
    return layers


def is_aligned(grid: Any, normal: NDArray[np.float64]) -> bool:
    """Whether the grid's slices are the contour planes' orientation, without shear."""
    a = grid.affine[:3, :3]
    k, r, c = a[:, 0], a[:, 1], a[:, 2]
    return bool(abs(k @ normal) >= (1 - 1e-9) * np.linalg.norm(k)
                and abs(r @ normal) <= 1e-9 * np.linalg.norm(r)
                and abs(c @ normal) <= 1e-9 * np.linalg.norm(c))


def _resolution(layers: list[Layer], pieces: NDArray[np.float64], pixel_mm: NDArray[np.float64],
                resolution: float | None) -> float:
    """Lattice pixel size (mm): given, or about TARGET_SAMPLES (pixels x depth pieces) over all layers."""
    if resolution is not None:
        return float(max(resolution, MIN_RESOLUTION_MM))
    work = float(sum(lay.area * k for lay, k in zip(layers, pieces, strict=True)))
    finest = max(MIN_RESOLUTION_MM, float(pixel_mm.min()) / MAX_SUBDIVISION)
    return float(np.clip(np.sqrt(max(work, 1e-6) / TARGET_SAMPLES), finest, pixel_mm.min()))


@dataclass
class _Frame:
    """The dose grid seen from the contour planes (aligned: slices parallel to the planes)."""

    shape: tuple[int, int, int]
    s_n: float  # mm along the normal per slice index
    o_n: float  # normal coordinate (mm) of slice 0
    pixel_mm: NDArray[np.float64]  # (row, col) pixel size
    pixel_area: float  # mm2
    inv: NDArray[np.float64]
    to_rc: NDArray[np.float64]  # (2, 2): plane (u, v) -> (row, col) index
    normal: NDArray[np.float64]

    @classmethod
    def of(cls, grid: Any, stack: Any) -> _Frame:
        a = grid.affine
        n = stack.normal
        inv = grid.inverse_affine
        return cls(grid.shape, float(a[:3, 0] @ n), float(a[:3, 3] @ n),
                   np.array([np.linalg.norm(a[:3, 1]), np.linalg.norm(a[:3, 2])]),
                   float(np.linalg.norm(np.cross(a[:3, 1], a[:3, 2]))), inv,
                   inv[1:3, :3] @ np.stack([stack.e1, stack.e2], axis=1), n)

    def rings_rc(self, rings: list[NDArray[np.float64]], position: float) -> list[NDArray[np.float64]]:
        """Plane rings (u, v) at ``position`` in dose (row, col) index coordinates."""
        shift = self.inv[1:3, :3] @ (position * self.normal) + self.inv[1:3, 3]
        return [r[:, :2] @ self.to_rc.T + shift for r in rings]

    def k(self, t: ArrayLike) -> NDArray[np.float64]:
        """Slice index coordinate of normal position(s) ``t`` (mm)."""
        return (np.asarray(t, dtype=np.float64) - self.o_n) / self.s_n


@dataclass
class _Lattice:
    """In-plane pixels subdividing the dose pixels (``f`` per dose pixel), covering some rings."""

    lo_rc: NDArray[np.float64]  # dose index of the lattice's first edge (a dose-pixel edge)
    f: NDArray[np.int64]
    shape: tuple[int, int]
    pixel_area: float  # mm2

    @classmethod
    def around(cls, frame: _Frame, rings_rc: list[NDArray[np.float64]], res: float) -> _Lattice:
        allpts = np.concatenate(rings_rc)
        lo_rc = np.floor(allpts.min(axis=0) + 0.5) - 0.5  # snapped to dose-pixel edges
        hi_rc = np.ceil(allpts.max(axis=0) - 0.5) + 0.5
        f = np.maximum(1, np.ceil(frame.pixel_mm / res - 1e-9)).astype(np.int64)
        nr, nc = (int(v) for v in np.maximum(1, np.round((hi_rc - lo_rc) * f)))
        return cls(lo_rc, f, (nr, nc), frame.pixel_area / float(f[0] * f[1]))

    def rings(self, rings_rc: list[NDArray[np.float64]], row_offset: int = 0) -> list[NDArray[np.float64]]:
        """Rings in lattice pixel coordinates (pixel (i, j) centred on (i, j))."""
        return [(r - self.lo_rc) * self.f - 0.5 + np.array([row_offset, 0.0]) for r in rings_rc]

    def to_rc(self, i: NDArray, j: NDArray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Dose (row, col) index of lattice positions (fractional pixel indices allowed)."""
        return self.lo_rc[0] + (i + 0.5) / self.f[0], self.lo_rc[1] + (j + 0.5) / self.f[1]


def _in_plane(frame: _Frame, r: NDArray, c: NDArray) -> NDArray[np.bool_]:
    _, R, C = frame.shape
    return (r > -0.5) & (r < R - 0.5) & (c > -0.5) & (c < C - 0.5)


def _vertex_extremes(arr: NDArray, frame: _Frame, faces: list[tuple[float, list[NDArray]]]) -> tuple[float, float]:
    """Min and max dose over ring vertices placed at normal positions (mm), inside the grid."""
    rc, zs = [], []
    for t, rings in faces:
        if rings:
            xy = rings[0] if len(rings) == 1 else np.concatenate(rings)
            rc.append(xy)
            zs.append(np.full(len(xy), float(frame.k(t))))
    if not rc:
        return np.inf, -np.inf
    rc_all, z_all = np.concatenate(rc), np.concatenate(zs)
    K, R, C = frame.shape
    ok = ((z_all > -0.5) & (z_all < K - 0.5) & (rc_all[:, 0] > -0.5) & (rc_all[:, 0] < R - 0.5)
          & (rc_all[:, 1] > -0.5) & (rc_all[:, 1] < C - 0.5))
    rc_all, z_all = rc_all[ok], z_all[ok]
    lo, hi = np.inf, -np.inf
    for s0 in range(0, len(z_all), VERTEX_CHUNK):
        part = slice(s0, s0 + VERTEX_CHUNK)
        vs = _Columns(arr, rc_all[part, 0], rc_all[part, 1]).face(z_all[part], slice(None))[0]
        lo, hi = min(lo, float(vs.min())), max(hi, float(vs.max()))
    return lo, hi


class _Columns:
    """Bilinear in-plane weights of fixed points (row, col) of a dose grid, for any slice."""

    def __init__(self, arr: NDArray, r: NDArray, c: NDArray) -> None:
        K, R, C = arr.shape
        self.flat = arr.reshape(-1)
        self.K, self.RC = K, R * C
        r = np.clip(r, 0.0, R - 1.0)
        c = np.clip(c, 0.0, C - 1.0)
        r0 = np.minimum(np.floor(r).astype(np.intp), max(R - 2, 0))
        c0 = np.minimum(np.floor(c).astype(np.intp), max(C - 2, 0))
        self.tr, self.tc = r - r0, c - c0
        r1, c1 = np.minimum(r0 + 1, R - 1), np.minimum(c0 + 1, C - 1)
        self.i00, self.i01, self.i10, self.i11 = r0 * C + c0, r0 * C + c1, r1 * C + c0, r1 * C + c1

    def slice(self, k: NDArray, sel: NDArray | slice) -> tuple[NDArray, NDArray, NDArray]:
        """Dose, d/drow and d/dcol (per index unit) at the points ``sel`` (indices, or a slice
        from the first point) on slices ``k``."""
        base = k * self.RC
        f = self.flat
        v00 = f[base + self.i00[sel]].astype(np.float64)
        v01 = f[base + self.i01[sel]].astype(np.float64)
        v10 = f[base + self.i10[sel]].astype(np.float64)
        v11 = f[base + self.i11[sel]].astype(np.float64)
        tr, tc = self.tr[sel], self.tc[sel]
        top = v00 + tc * (v01 - v00)
        bottom = v10 + tc * (v11 - v10)
        return top + tr * (bottom - top), bottom - top, (1 - tr) * (v01 - v00) + tr * (v11 - v10)

    def face(self, z: NDArray, sel: NDArray | slice) -> tuple[NDArray, NDArray, NDArray]:
        """The same at depths z (slice index units, clamped to the grid): trilinear.  ``sel``:
        point indices, or a slice starting at the first point."""
        K = self.K
        zc = np.clip(z, 0.0, K - 1.0)
        k0 = np.minimum(np.floor(zc).astype(np.intp), max(K - 2, 0))
        t = zc - k0
        out = self.slice(k0, sel)
        between = np.flatnonzero(t > 0)
        if between.size and K > 1:
            upper = self.slice(k0[between] + 1, between if isinstance(sel, slice) else sel[between])
            tb = t[between]
            out = tuple(x.copy() for x in out)
            for x, u in zip(out, upper, strict=True):
                x[between] += tb * (u - x[between])
        return out


def _depth_samples(arr: NDArray, frame: _Frame, r: NDArray, c: NDArray, area: NDArray,
                   ka: NDArray, kb: NDArray, f: NDArray) -> Samples:
    """Samples of columns ``[ka, kb]`` (slice index units, ka <= kb) over in-plane points ``(r, c)``.

    Each column is split at the dose slices (and at the grid's outer faces); a piece's volume is
    spread uniformly between the doses on its two faces, widened by the in-plane variation over
    a lattice pixel (``1/f`` dose pixels).  Faces shared by two pieces are evaluated once.
    Volume beyond the grid is in ``outside_cc``.
    """
    K = frame.shape[0]
    cuts = np.concatenate([[-0.5], np.arange(K, dtype=np.float64), [K - 0.5]])
    first = np.searchsorted(cuts, ka, side="right")  # first cut strictly above ka
    last = np.searchsorted(cuts, kb, side="left")  # cuts strictly below kb: first .. last-1
    npieces = np.maximum(last - first, 0) + 1
    # columns by decreasing piece count: the columns with a piece m are a prefix
    order = np.argsort(-npieces, kind="stable")
    npieces, first = npieces[order], first[order]
    ka, kb, area = ka[order], kb[order], area[order]
    r, c = r[order], c[order]
    count = np.bincount(npieces, minlength=int(npieces.max(initial=0)) + 1)
    with_piece = len(r) - np.cumsum(count)  # columns with more than m pieces: with a piece m
    inside = _in_plane(frame, r, c)
    outside = 0.0
    ds, hs, ws = [], [], []
    dmin, dmax = np.inf, -np.inf
    cols = _Columns(arr, r, c)
    lower = cols.face(ka, slice(None))  # the lower face of piece 0, for every column
    for m in range(int(npieces.max(initial=0))):
        n = int(with_piece[m]) if m else len(r)
        va, ga_r, ga_c = (x[:n] for x in lower)
        lo = ka[:n] if m == 0 else cuts[np.minimum(first[:n] + m - 1, len(cuts) - 1)]
        hi = np.where(npieces[:n] == m + 1, kb[:n], cuts[np.minimum(first[:n] + m, len(cuts) - 1)])
        lower = vb, gb_r, gb_c = cols.face(hi, slice(0, n))
        thick = (hi - lo) * abs(frame.s_n)
        mid = 0.5 * (lo + hi)
        good = inside[:n] & (mid >= -0.5) & (mid <= K - 0.5) & (thick > 0)
        known = np.isfinite(va) & np.isfinite(vb)  # a resampled dose is NaN outside the original grid
        keep = good & known
        if not keep.all():
            lost = ~keep
            outside += float(np.sum(area[:n][lost] * np.maximum(thick[lost], 0.0))) / 1000.0
            if not keep.any():
                continue
            va, vb, ga_r, ga_c, gb_r, gb_c = (x[keep] for x in (va, vb, ga_r, ga_c, gb_r, gb_c))
            w = area[:n][keep] * thick[keep]
        else:
            w = area[:n] * thick
        g_r = (0.5 / f[0]) * (ga_r + gb_r)
        g_c = (0.5 / f[1]) * (ga_c + gb_c)
        ds.append(0.5 * (va + vb))
        hs.append(0.5 * np.sqrt((vb - va) ** 2 + g_r * g_r + g_c * g_c))
        ws.append(w / 1000.0)
        dmin = min(dmin, float(va.min()), float(vb.min()))
        dmax = max(dmax, float(va.max()), float(vb.max()))
    return Samples(_cat(ds), _cat(hs), _cat(ws), outside, dmin, dmax)


def _cat(arrays: list[NDArray]) -> NDArray:
    return np.concatenate(arrays) if arrays else np.empty(0)


def _merge(parts: list[Samples]) -> Samples:
    return Samples(_cat([p.doses for p in parts]), _cat([p.half for p in parts]), _cat([p.weights for p in parts]),
                   float(sum(p.outside_cc for p in parts)),
                   float(min([p.dmin for p in parts], default=np.inf)),
                   float(max([p.dmax for p in parts], default=-np.inf)))


def _coverage_samples(arr: NDArray, fr: _Frame, lat: _Lattice, layers: list[Layer],
                      idx_rings: list[list[NDArray[np.float64]]]) -> Samples:
    """Samples of slab layers on a lattice, with exact coverage and centroids."""
    nr, nc = lat.shape
    # Every layer's lattice stacked along the rows: one exact coverage pass for the whole solid.
    rings = [r for j, rr in enumerate(idx_rings) for r in lat.rings(rr, j * nr)]
    cov, oy, ox = coverage(rings, (len(layers) * nr, nc), moments=True)
    zab = np.sort(np.array([[fr.k(lay.lo), fr.k(lay.hi)] for lay in layers]), axis=1)
    full = cov >= 1.0 - 1e-12
    # Partly covered pixels: one column per layer, at the covered part's centroid.
    ii, jj = np.nonzero((cov > 0) & ~full)
    layer_of = ii // nr
    r_idx, c_idx = lat.to_rc(ii - layer_of * nr + oy[ii, jj], jj + ox[ii, jj])
    part = _depth_samples(arr, fr, r_idx, c_idx, cov[ii, jj] * lat.pixel_area,
                             zab[layer_of, 0], zab[layer_of, 1], lat.f)
    # Wholly covered pixels: one column per run of touching layers (fewer depth pieces).
    pix, lay, ka, kb = _full_runs(full.reshape(len(layers), nr, nc), zab)
    r_idx, c_idx = lat.to_rc((pix // nc).astype(np.float64), (pix % nc).astype(np.float64))
    whole = _depth_samples(arr, fr, r_idx, c_idx, np.full(pix.size, lat.pixel_area), ka, kb, lat.f)
    smp = _merge([part, whole])
    faces = [(t, rr) for lay, rr in zip(layers, idx_rings, strict=True) for t in (lay.lo, lay.hi)]
    vmin, vmax = _vertex_extremes(arr, fr, faces)
    smp.dmin, smp.dmax = min(smp.dmin, vmin), max(smp.dmax, vmax)
    return smp


def _full_runs(full: NDArray[np.bool_], zab: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Runs of touching layers (in order) over which a lattice pixel is wholly covered.

    ``full`` is (layers, rows, cols); ``zab`` the layers' sorted depth ranges (slice index
    units).  Returns each run's flat pixel index, first layer and merged depth range.
    """
    L, nr, nc = full.shape
    pi, pj, lay = np.nonzero(full.transpose(1, 2, 0))  # pixel-major, layers ascending
    if not lay.size:
        e = np.empty(0)
        return e.astype(np.intp), e.astype(np.intp), e, e
    pix = pi * nc + pj
    prev = np.r_[-1, lay[:-1]]
    touching = np.zeros(lay.size, dtype=bool)
    touching[1:] = ((pix[1:] == pix[:-1]) & (lay[1:] == lay[:-1] + 1)
                    & ((np.abs(zab[lay[1:], 0] - zab[prev[1:], 1]) < 1e-9)
                       | (np.abs(zab[lay[1:], 1] - zab[prev[1:], 0]) < 1e-9)))
    start = np.flatnonzero(~touching)
    ka = np.minimum.reduceat(zab[lay, 0], start)
    kb = np.maximum.reduceat(zab[lay, 1], start)
    return pix[start], lay[start], ka, kb


def _lattice_for(fr: _Frame, layers: list[Layer], idx_rings: list[list[NDArray[np.float64]]],
                 resolution: float | None) -> _Lattice:
    K = fr.shape[0]
    zab = np.sort(np.array([[fr.k(lay.lo), fr.k(lay.hi)] for lay in layers]), axis=1)
    pieces = np.floor(np.minimum(zab[:, 1], K)) - np.ceil(np.maximum(zab[:, 0], -1)) + 2
    res = _resolution(layers, np.maximum(pieces, 1), fr.pixel_mm, resolution)
    return _Lattice.around(fr, [r for rr in idx_rings for r in rr], res)


CHUNK_CELLS = 60_000  # lattice cells (layers x pixels) handled at once: bounds the memory
GAP_CHUNK_CELLS = 100_000  # the same for the gaps of the smooth solid
FULL_CHUNK_PIECES = 30_000  # depth pieces of wholly covered columns sampled at once
COVERAGE_CHUNK_CELLS = 40_000  # lattice cells of the planes whose exact coverage is found at once
VERTEX_CHUNK = 16_384  # contour vertices whose doses are interpolated at once (for Dmin, Dmax)


def sample_aligned(dose: Any, stack: Any, layers: list[Layer], resolution: float | None,
                   sink: Histogram) -> None:
    """Add the samples of the layers' solid, in a dose grid whose slices are parallel to the
    layers, to ``sink`` (in chunks of layers)."""
    if not layers:
        return
    fr = _Frame.of(dose.grid, stack)
    idx_rings = [fr.rings_rc(lay.rings, lay.position) for lay in layers]
    lat = _lattice_for(fr, layers, idx_rings, resolution)
    step = max(1, CHUNK_CELLS // max(1, lat.shape[0] * lat.shape[1]))
    for j0 in range(0, len(layers), step):
        sink.add(_coverage_samples(dose.array, fr, lat, layers[j0:j0 + step], idx_rings[j0:j0 + step]))


# ------------------------------------------------------------------ smooth solid
# between_planes="smooth": between two contour planes the surface is interpolated instead of
# stepping half-way.  At every lattice pixel the in-plane signed distances d_j to each plane's
# boundary, against the planes' positions z_j, trace the surface's profile in the (d, z)
# plane; a G1 curve through those points (cubic Hermite pieces whose tangents are those of the
# circle through each point and its two neighbours, and of the circle through the last three
# points at an end) is followed from plane to plane, and the pixel is inside where the curve has
# d < 0.  Circular arcs are reproduced to ~1e-4 of their radius, so spheres, cylinders and cones
# at any orientation (the analytical shapes of Nelms et al. 2015), and their closing poles,
# come out right; the half-slice end caps beyond the first and last planes stay slabs.
CURVE_STEPS = 16
CURVE_CHUNK = 2048  # curves followed at once: (17, CURVE_CHUNK) arrays stay in cache
BOUNDARY_STEP_MM = 1.0  # edge resampling for the nearest-edge search (distances are exact to edges)


def _runs(stack: Any) -> list[list[int]]:
    """Plane indices in connected runs (a gap wider than 1.5 spacings starts a new run)."""
    runs: list[list[int]] = []
    prev = None
    for i, p in enumerate(stack.planes):
        if prev is None or p.position - prev > 1.5 * stack.spacing + 1e-9:
            runs.append([])
        runs[-1].append(i)
        prev = p.position
    return runs


class _Boundaries:
    """Exact distance (mm) from in-plane points to the ring edges of each plane.

    Planes are grouped in blocks of consecutive planes with about ``BLOCK_POINTS`` points
    resampled along their edges; per block, one k-d tree over those points (planes kept apart
    by a huge offset in a third coordinate; built on first use, dropped by :meth:`release`)
    finds candidate edges, and the distance to those is exact.
    """

    _APART = 1e7
    BLOCK_POINTS = 20_000

    def __init__(self, rings_per_plane: list[list[NDArray[np.float64]]], step: float) -> None:
        self._rings = [[r[:-1] if len(r) > 1 and r[0, 0] == r[-1, 0] and r[0, 1] == r[-1, 1] else r for r in rr]
                       for rr in rings_per_plane]
        self._step = step
        # resampled points per plane: each ring's perimeter / step plus its vertices
        flat = [r[:, :2] for rr in self._rings for r in rr]
        sizes = np.array([len(r) for r in flat], dtype=np.intp)
        points = np.zeros(len(self._rings))
        if flat:
            a = np.concatenate(flat)
            edge = np.hypot(*(a[ring_successors(sizes)] - a).T)
            plane = np.repeat(np.repeat(np.arange(len(self._rings)), [len(rr) for rr in self._rings]), sizes)
            points = np.bincount(plane, weights=edge / step + 1.0, minlength=len(self._rings))
        self._block_of = (np.cumsum(points) // self.BLOCK_POINTS).astype(np.intp)
        self._blocks: dict[int, tuple] = {}

    def _block(self, blk: int) -> tuple:
        hit = self._blocks.get(blk)
        if hit is None:
            from scipy.spatial import cKDTree

            members = np.flatnonzero(self._block_of == blk)
            rings = [r[:, :2] for j in members for r in self._rings[j]]
            plane = np.repeat([float(j) for j in members for _ in self._rings[j]],
                              [len(r) for j in members for r in self._rings[j]])
            sizes = np.array([len(r) for r in rings], dtype=np.intp)
            a = np.concatenate(rings).astype(np.float64, copy=False)
            ab = a[ring_successors(sizes)] - a
            n = np.maximum(1, np.ceil(np.linalg.norm(ab, axis=1) / self._step)).astype(np.intp)
            seg = np.repeat(np.arange(len(n)), n)
            t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / n[seg]
            # sliding-midpoint splits (not balanced): faster to build and to query for points on
            # curves in well-separated planes
            tree = cKDTree(np.c_[a[seg] + t[:, None] * ab[seg], plane[seg] * self._APART],
                           balanced_tree=False, compact_nodes=False)
            inv = 1.0 / np.maximum((ab * ab).sum(axis=1), 1e-300)
            hit = self._blocks[blk] = (a[:, 0].copy(), a[:, 1].copy(), ab[:, 0].copy(), ab[:, 1].copy(),
                                       inv, seg, tree, min(3, len(seg)))
        return hit

    def release(self, below: int) -> None:
        """Forget the trees of blocks wholly below plane ``below``."""
        if below < len(self._block_of):
            for blk in [b for b in self._blocks if b < self._block_of[below]]:
                del self._blocks[blk]

    def nearest(self, plane: NDArray[np.intp], q: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        """Distance from q[i] (N, 2) to the edges of plane[i], and the nearest edge point (N, 2)."""
        dist, foot = np.empty(len(q)), np.empty((len(q), 2))
        if not len(q):
            return dist, foot
        blk = self._block_of[plane]
        order = np.argsort(blk, kind="stable")
        starts = np.flatnonzero(np.r_[True, blk[order][1:] != blk[order][:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(q)], strict=True):
            rows = order[s:e]
            ax, ay, abx, aby, inv, seg, tree, k = self._block(int(blk[rows[0]]))
            qx, qy = q[rows, 0][:, None], q[rows, 1][:, None]
            _, idx = tree.query(np.c_[q[rows], plane[rows] * self._APART], k=k)
            cand = seg[idx.reshape(len(rows), -1)]  # (n, k) candidate segments
            ax, ay, abx, aby = ax[cand], ay[cand], abx[cand], aby[cand]
            t = np.clip(((qx - ax) * abx + (qy - ay) * aby) * inv[cand], 0.0, 1.0)
            fx, fy = ax + t * abx, ay + t * aby
            d2 = (qx - fx) ** 2 + (qy - fy) ** 2
            best = d2.argmin(axis=1)[:, None]
            dist[rows] = np.sqrt(np.take_along_axis(d2, best, 1)[:, 0])
            foot[rows, 0] = np.take_along_axis(fx, best, 1)[:, 0]
            foot[rows, 1] = np.take_along_axis(fy, best, 1)[:, 0]
        return dist, foot


class _PixelDistances:
    """Distances (mm) from lattice pixel centres to each plane's boundary, the nearest boundary
    points and the side (-1 inside, +1 outside), kept between gap chunks for the planes still in
    use (a plane serves up to four gaps)."""

    def __init__(self, boundaries: _Boundaries, regions: NDArray, npx: int, centre_of: Any) -> None:
        self.boundaries, self.regions, self.npx, self.centre_of = boundaries, regions, npx, centre_of
        self.keys = np.empty(0, dtype=np.int64)  # plane * npx + pixel, sorted
        self.d, self.sign, self.foot = np.empty(0), np.empty(0), np.empty((0, 2))

    def release(self, below: int) -> None:
        """Forget planes with index < ``below``."""
        self.boundaries.release(below)
        keep = self.keys >= below * self.npx
        self.keys, self.d, self.sign, self.foot = self.keys[keep], self.d[keep], self.sign[keep], self.foot[keep]

    def get(self, keys: NDArray[np.int64]) -> tuple[NDArray, NDArray, NDArray]:
        """Distance, side and nearest boundary point of sorted unique keys."""
        import shapely

        pos = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        have = self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), dtype=bool)
        miss = keys[~have]
        if miss.size:
            plane, centre = miss // self.npx, self.centre_of(miss % self.npx)
            d, foot = self.boundaries.nearest(plane, centre)
            sign = np.where(shapely.contains_xy(self.regions[plane], centre[:, 0], centre[:, 1]), -1.0, 1.0)
            order = np.argsort(np.concatenate([self.keys, miss]), kind="stable")
            self.keys = np.concatenate([self.keys, miss])[order]
            self.d = np.concatenate([self.d, d])[order]
            self.sign = np.concatenate([self.sign, sign])[order]
            self.foot = np.concatenate([self.foot, foot])[order]
            pos = np.searchsorted(self.keys, keys)
        return self.d[pos], self.sign[pos], self.foot[pos]


def _norm(v: NDArray) -> NDArray:
    """Length of 2-vectors (..., 2), as (..., 1)."""
    return np.sqrt(v[..., :1] * v[..., :1] + v[..., 1:] * v[..., 1:])


def _unit(v: NDArray) -> NDArray:
    return v / np.maximum(_norm(v), 1e-300)


def _circle_tangent(pm: NDArray, p: NDArray, pp: NDArray) -> NDArray:
    """Unit tangent at ``p`` of the circle through ``pm, p, pp`` (the line if collinear), pointing on."""
    a, b = p - pm, pp - p
    return _unit(_unit(a) * _norm(b) + _unit(b) * _norm(a))


def _end_tangent(p0: NDArray, p1: NDArray, p2: NDArray) -> NDArray:
    """Unit tangent at ``p0`` of the circle through ``p0, p1, p2``, pointing towards ``p1``."""
    t1 = _circle_tangent(p0, p1, p2)
    u = _unit(p1 - p0)
    return 2 * (t1[..., :1] * u[..., :1] + t1[..., 1:] * u[..., 1:]) * u - t1


def _inside_along_curve(p0: NDArray, p1: NDArray, t0: NDArray, t1: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Length along z of the Hermite curve p0 -> p1 where d < 0, the centroid z of that part, and
    the length a narrow band next to p0's contour stays inside (see below).

    Points are (N, 2) arrays (d, z); tangents unit, scaled by the chord length.  The curve is
    followed in CURVE_STEPS straight steps; its (CURVE_STEPS + 1, N) arrays are best kept within
    the CPU cache (callers pass CURVE_CHUNK columns at a time).
    """
    chord = _norm(p1 - p0)[..., 0]
    d = _HERMITE @ np.stack([p0[:, 0], chord * t0[:, 0], p1[:, 0], chord * t1[:, 0]])
    z = _HERMITE @ np.stack([p0[:, 1], chord * t0[:, 1], p1[:, 1], chord * t1[:, 1]])
    da, db = d[:-1], d[1:]
    dz = z[1:] - z[:-1]
    rising = (da < db).astype(np.float64)
    neg = np.maximum(-np.minimum(da, db), 0.0)
    frac = neg / np.maximum(neg + np.maximum(np.maximum(da, db), 0.0), 1e-300)
    adz = np.abs(dz)
    length = frac * adz
    total = length.sum(axis=0)
    # the inside part's middle: from the lower-d end of the step, half its inside length on
    mid = z[:-1] + dz * ((1.0 - rising) + frac * (rising - 0.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = (length * mid).sum(axis=0) / np.where(total > 0, total, np.inf)
        w = p1[:, 0] - p0[:, 0]
        flat = np.abs(w) <= 1e-12
        nu = (d - p0[:, 0]) / np.where(flat, 1.0, w)
        if flat.any():
            nu[:, flat] = (z[:, flat] - p0[flat, 1]) / (p1[flat, 1] - p0[flat, 1])
    np.clip(nu, 0.0, 1.0, out=nu)
    keep_a = ((1.0 - 0.5 * (nu[:-1] + nu[1:])) * adz).sum(axis=0)
    return total, centre, keep_a


_s = np.linspace(0.0, 1.0, CURVE_STEPS + 1)[:, None]
_HERMITE = np.hstack([2 * _s**3 - 3 * _s**2 + 1, _s**3 - 2 * _s**2 + _s, -2 * _s**3 + 3 * _s**2, _s**3 - _s**2])
del _s


def sample_smooth(dose: Any, stack: Any, resolution: float | None, sink: Histogram,
                  end_caps: bool = True, part: int = 0, parts: int = 1) -> None:
    """Add the samples of the smoothly interpolated solid (see above), in an aligned dose grid,
    to ``sink`` (in chunks of gaps).

    ``part`` of ``parts``: only that share of the solid (part 0: the contour vertices and the
    end caps; every part: a run of consecutive gap chunks).  The parts' samples together are
    those of the whole solid, but for wholly covered columns, which are not merged across a
    part boundary (an extra depth split there: the same volume and, to rounding, the same
    doses); independent parts can be sampled side by side and their histograms added.

    Between planes a and b the solid is the *core* (inside both regions: inside over the whole
    gap; its per-pixel coverage is the smaller of the two planes' exact coverages, exact where
    the two contours are nested within the pixel) plus, at every lattice pixel not wholly in the
    core, the part of the gap where the interpolated profile is inside: evaluated at the
    centroid of the pixel's non-core part where the band between the contours is at least two
    lattice pixels wide, integrated over the band where it is narrower.
    """
    import shapely

    planes = stack.planes
    fr = _Frame.of(dose.grid, stack)
    arr = dose.array
    layers = slab_layers(stack)
    z = np.array([p.position for p in planes])
    idx_rings = [fr.rings_rc(lay.rings, lay.position) for lay in layers]
    lat = _lattice_for(fr, layers, idx_rings, resolution)
    nr, nc = lat.shape
    npx = nr * nc
    px = fr.pixel_mm / lat.f  # lattice pixel size (mm)
    diag = float(np.hypot(*px))
    g = dose.grid
    # lattice (i, j) -> plane (u, v), mm (affine)
    w3 = g.index_to_world(np.array([[0.0, *lat.to_rc(np.array(0.0), np.array(0.0))],
                                    [0.0, *lat.to_rc(np.array(1.0), np.array(0.0))],
                                    [0.0, *lat.to_rc(np.array(0.0), np.array(1.0))]]))
    uv3 = np.c_[w3 @ stack.e1, w3 @ stack.e2]
    uv0, du, dv = uv3[0], uv3[1] - uv3[0], uv3[2] - uv3[0]

    caps: list[Layer] = []
    gaps: list[tuple[int, int, int, int]] = []  # (a, b, previous, next) plane indices; -1: none
    for run in _runs(stack):
        first, last = run[0], run[-1]
        if len(run) == 1:
            caps.append(layers[first])
            continue
        if end_caps:
            caps.append(Layer(layers[first].lo, z[first], z[first], layers[first].rings, layers[first].area))
            caps.append(Layer(z[last], layers[last].hi, z[last], layers[last].rings, layers[last].area))
        for gi in range(len(run) - 1):
            gaps.append((run[gi], run[gi + 1], run[gi - 1] if gi > 0 else -1,
                         run[gi + 2] if gi + 2 < len(run) else -1))
    if part == 0:
        sink.add(Samples(np.empty(0), np.empty(0), np.empty(0), 0.0,
                         *_vertex_extremes(arr, fr, [(lay.position, rr) for lay, rr in zip(layers, idx_rings, strict=True)])))
        # the caps at the solid's lattice pixel (their own budget of TARGET_SAMPLES would sample a
        # few percent of the volume as finely as the rest together)
        sample_aligned(dose, stack, caps, resolution if resolution is not None else float(px.min()), sink)
    step = max(1, GAP_CHUNK_CELLS // max(1, npx))
    starts = list(range(0, len(gaps), step))
    mine = starts[part * len(starts) // parts:(part + 1) * len(starts) // parts]
    if not mine:
        return
    regions = np.array([p.region for p in planes], dtype=object)
    table = np.array(gaps, dtype=np.intp)[mine[0]:min(mine[-1] + step, len(gaps))]
    gaps = gaps[mine[0]:mine[0] + len(table)]
    distances = _PixelDistances(_Boundaries([lay.rings for lay in layers], BOUNDARY_STEP_MM), regions, npx,
                                lambda pix: uv0 + (pix // nc)[:, None] * du + (pix % nc)[:, None] * dv)
    plane_cov: dict[int, tuple[NDArray, NDArray, NDArray]] = {}  # coverage rows shared by chunks
    whole = np.zeros((len(gaps), npx), dtype=bool)  # pixels inside the core over the whole gap
    for g0 in range(0, len(gaps), step):
        chunk = table[g0:g0 + step]
        used = chunk[chunk >= 0]
        shapely.prepare(regions[np.unique(used)])
        distances.release(int(used.min()))  # gaps come in order: lower planes are done
        whole[g0:g0 + step] = _smooth_gaps(chunk, arr, fr, lat, z, idx_rings, distances,
                                           (uv0, du, dv), diag, sink, plane_cov)
    del distances, plane_cov  # not needed below: their memory is free for the columns
    # Wholly covered pixels: one column per run of touching gaps over the whole solid (fewer
    # depth pieces than one per chunk), found in blocks of pixels (memory).
    zab = np.sort(np.column_stack([fr.k(z[table[:, 0]]), fr.k(z[table[:, 1]])]), axis=1)
    block = max(1, GAP_CHUNK_CELLS // len(gaps))
    runs = []
    for p0 in range(0, npx, block):
        sub = whole[:, p0:p0 + block]
        pix, _, ka, kb = _full_runs(sub.reshape(len(gaps), 1, sub.shape[1]), zab)
        runs.append((pix + p0, ka, kb))
    del whole
    _whole_columns(arr, fr, lat, np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs]),
                   np.concatenate([r[2] for r in runs]), sink)


def _whole_columns(arr: NDArray, fr: _Frame, lat: _Lattice, pix: NDArray[np.intp], ka: NDArray, kb: NDArray,
                   sink: Histogram) -> None:
    """Samples of wholly covered lattice pixels ``pix`` (flat lattice index) over the depths
    ``[ka, kb]`` (slice index units; a pixel's columns do not overlap), into ``sink``.

    The same pieces as :func:`_depth_samples` (split at the dose slices), made faster: the
    pieces between two dose slices that lie wholly inside a column are marked in a (slice,
    pixel) table and sampled a few slices at a time for all pixels at once, each slice's
    in-plane doses found once; the pieces at the columns' ends, and columns whose pixel lies
    outside the dose grid in plane, go through :func:`_depth_samples`.
    """
    if not pix.size:
        return
    K = fr.shape[0]
    nc = lat.shape[1]
    r_all, c_all = lat.to_rc((pix // nc).astype(np.float64), (pix % nc).astype(np.float64))
    a = np.maximum(np.ceil(ka), 0.0)  # interior pieces [k, k + 1] for a <= k < b
    b = np.minimum(np.floor(kb), K - 1.0)
    inner = (b > a) & _in_plane(fr, r_all, c_all)
    # the ends (and whole columns without interior pieces)
    lo = np.concatenate([ka[~inner], ka[inner], b[inner]])
    hi = np.concatenate([kb[~inner], a[inner], kb[inner]])
    at = np.concatenate([np.flatnonzero(~inner), np.flatnonzero(inner), np.flatnonzero(inner)])
    keep = hi > lo
    lo, hi, at = lo[keep], hi[keep], at[keep]
    for s0 in range(0, at.size, FULL_CHUNK_PIECES // 2):
        sl = slice(s0, s0 + FULL_CHUNK_PIECES // 2)
        sink.add(_depth_samples(arr, fr, r_all[at[sl]], c_all[at[sl]], np.full(len(at[sl]), lat.pixel_area),
                                lo[sl], hi[sl], lat.f))
    if not inner.any():
        return
    # interior pieces: +1 at a, -1 at b per column; the running sum marks the pieces inside
    px_in = np.flatnonzero(inner)
    upix, col = np.unique(pix[px_in], return_inverse=True)
    k0 = int(a[px_in].min())
    table = np.zeros((int(b[px_in].max()) - k0 + 1, upix.size), dtype=np.int8)
    np.add.at(table, (a[px_in].astype(np.intp) - k0, col), 1)
    np.add.at(table, (b[px_in].astype(np.intp) - k0, col), -1)
    np.cumsum(table, axis=0, out=table)
    cols = _Columns(arr, *lat.to_rc((upix // nc).astype(np.float64), (upix % nc).astype(np.float64)))
    weight = lat.pixel_area * abs(fr.s_n) / 1000.0
    step = max(1, FULL_CHUNK_PIECES // upix.size)
    below = cols.slice(k0, slice(None))
    for j0 in range(0, table.shape[0] - 1, step):
        j1 = min(j0 + step, table.shape[0] - 1)  # pieces j0 .. j1 - 1 (slices k0 + j)
        faces = [below] + [cols.slice(k0 + j, slice(None)) for j in range(j0 + 1, j1 + 1)]
        below = faces[-1]
        v, g_r, g_c = (np.stack([f[i] for f in faces]) for i in range(3))
        mark = table[j0:j1] > 0
        va, vb = v[:-1][mark], v[1:][mark]
        gr = (0.5 / lat.f[0]) * (g_r[:-1][mark] + g_r[1:][mark])
        gc = (0.5 / lat.f[1]) * (g_c[:-1][mark] + g_c[1:][mark])
        known = np.isfinite(va) & np.isfinite(vb)  # a resampled dose is NaN outside the original grid
        lost = float(np.count_nonzero(~known)) * weight
        if lost:
            va, vb, gr, gc = va[known], vb[known], gr[known], gc[known]
        if not va.size:
            sink.add(Samples(np.empty(0), np.empty(0), np.empty(0), lost, np.inf, -np.inf))
            continue
        sink.add(Samples(0.5 * (va + vb), 0.5 * np.sqrt((vb - va) ** 2 + gr * gr + gc * gc),
                         np.full(va.size, weight), lost,
                         min(float(va.min()), float(vb.min())), max(float(va.max()), float(vb.max()))))


def _smooth_gaps(table: NDArray[np.intp], arr: NDArray, fr: _Frame, lat: _Lattice, z: NDArray,
                 idx_rings: list, distances: _PixelDistances, uv_map: tuple,
                 diag: float, sink: Histogram,
                 plane_cov: dict[int, tuple[NDArray, NDArray, NDArray]]) -> NDArray[np.bool_]:
    """The gaps of ``table`` (rows: plane a, plane b, previous, next) into ``sink``, but for the
    pixels wholly inside both planes' regions: returned as a (gaps, pixels) mask for the caller
    to sample as columns over runs of gaps.  ``plane_cov`` caches the planes' coverage rows
    between calls (planes below this chunk's are dropped)."""

    nr, nc = lat.shape
    npx = nr * nc
    uv0, du, dv = uv_map
    A, B, PREV, NEXT = table.T
    # exact coverage and centroids of the planes these gaps use, one pass for those not cached
    used = np.unique(np.concatenate([A, B]))
    for j in [j for j in plane_cov if j < used[0]]:
        del plane_cov[j]
    new = [int(j) for j in used if int(j) not in plane_cov]
    per = max(1, COVERAGE_CHUNK_CELLS // npx)  # planes per coverage pass (memory; the same values to round-off)
    for b0 in range(0, len(new), per):
        batch = new[b0:b0 + per]
        rings = [r for i, j in enumerate(batch) for r in lat.rings(idx_rings[j], i * nr)]
        cov_new = [x.reshape(len(batch), npx) for x in coverage(rings, (len(batch) * nr, nc), moments=True)]
        for i, j in enumerate(batch):
            plane_cov[j] = (cov_new[0][i], cov_new[1][i], cov_new[2][i])
    def rows(planes: NDArray, which: int) -> NDArray:
        return np.stack([plane_cov[int(j)][which] for j in planes])

    ca, cb = rows(A, 0), rows(B, 0)
    smaller = ca <= cb
    core = np.where(smaller, ca, cb)
    core_oy = np.where(smaller, rows(A, 1), rows(B, 1))
    core_ox = np.where(smaller, rows(A, 2), rows(B, 2))
    cols_q, cols_w, cols_a, cols_b = [], [], [], []  # columns whose dose point is inside
    split_q, split_w, split_a, split_b = [], [], [], []  # band parts: dose point in the pixel
    # the core: inside over the whole gap (wholly covered pixels merged over touching gaps)
    whole = core >= 1.0 - 1e-12
    gi, pix = np.nonzero((core > 0) & ~whole)
    cols_q.append(np.column_stack([pix // nc + core_oy[gi, pix], pix % nc + core_ox[gi, pix]]))
    cols_w.append(core[gi, pix] * lat.pixel_area)
    cols_a.append(z[A[gi]])
    cols_b.append(z[B[gi]])
    # the rest of every pixel touching either region (a surface bulging out beyond both contours
    # between the planes is left out: it is of second order in the spacing)
    gi, pix = np.nonzero((core < 1.0 - 1e-9) & ((ca > 0) | (cb > 0)))
    cc = core[gi, pix]
    own_a, own_b = ca[gi, pix] - cc, cb[gi, pix] - cc
    k = np.where(cc > 0, -cc / np.maximum(1.0 - cc, 1e-12), 0.0)
    qi = pix // nc + k * core_oy[gi, pix]  # the centroid of the pixel's part outside the core
    qj = pix % nc + k * core_ox[gi, pix]
    del core, core_oy, core_ox, ca, cb
    if gi.size:
        q = uv0 + qi[:, None] * du + qj[:, None] * dv
        # Signed distances of the query points to the gap's two planes and their neighbours:
        # exact (nearest edge) at each pixel centre, computed once per (plane, pixel) and shared
        # by the gaps using it, then carried to the query point along the normal there.
        roles = np.stack([PREV[gi], A[gi], B[gi], NEXT[gi]])  # (4, N); -1: no such plane
        keys = np.where(roles >= 0, roles.astype(np.int64) * npx + pix, -1)
        # each role's keys ascend (gaps and pixels in order): a stable sort merges the four runs
        uniq = np.sort(keys[keys >= 0], kind="stable")
        if uniq.size:
            uniq = uniq[np.r_[True, uniq[1:] != uniq[:-1]]]
        pix_of = uniq % npx
        centre = uv0 + (pix_of // nc)[:, None] * du + (pix_of % nc)[:, None] * dv
        d_c, sign, foot = distances.get(uniq)
        normal = (centre - foot) * (sign / np.maximum(d_c, 1e-300))[:, None]
        slot = np.searchsorted(uniq, np.maximum(keys, 0))
        dist = np.empty(slot.shape)
        for i, sl in enumerate(slot):  # one role at a time (memory): (q - foot) . normal
            dist[i] = (q[:, 0] - foot[sl, 0]) * normal[sl, 0] + (q[:, 1] - foot[sl, 1]) * normal[sl, 1]
        absent = keys < 0
        dist[absent] = 0.0
        at_centre = (qi == pix // nc) & (qj == pix % nc)  # exact there (also on the medial axis)
        exact = at_centre[None] & ~absent
        dist[exact] = (sign * d_c)[slot[exact]]
        del normal, centre, foot, keys, uniq, pix_of, slot, sign, d_c, absent, exact  # memory
        da, db = dist[1], dist[2]
        zz = np.stack([z[np.maximum(r, 0)] for r in roles])
        pp, p0, p1, pn = (np.stack([dist[i], zz[i]], axis=-1) for i in range(4))
        no_prev, no_next = np.flatnonzero(roles[0] < 0), np.flatnonzero(roles[3] < 0)
        pp[no_prev] = 2 * p0[no_prev] - p1[no_prev]  # stand-ins where absent (not used)
        pn[no_next] = 2 * p1[no_next] - p0[no_next]
        t0 = _circle_tangent(pp, p0, p1)
        t1 = _circle_tangent(p0, p1, pn)
        # a run's first or last gap: the circle through its three points there, else the chord
        for t, ends, end in ((t0, no_prev, lambda i: _end_tangent(p0[i], p1[i], pn[i])),
                             (t1, no_next, lambda i: -_end_tangent(p1[i], p0[i], pp[i]))):
            if ends.size:
                lone = (roles[0][ends] < 0) & (roles[3][ends] < 0)  # a run of two planes
                t[ends] = np.where(lone[:, None], _unit(p1[ends] - p0[ends]), end(ends))
        length, centre_z, keep_a = (np.empty(len(p0)) for _ in range(3))
        for s0 in range(0, len(p0), CURVE_CHUNK):
            sl = slice(s0, s0 + CURVE_CHUNK)
            length[sl], centre_z[sl], keep_a[sl] = _inside_along_curve(p0[sl], p1[sl], t0[sl], t1[sl])
        del pp, p0, p1, pn, t0, t1, zz, roles, q  # memory: the curves are done
        za_g, zb_g = z[A[gi]], z[B[gi]]
        # Resolved (the band between the two contours at least two lattice pixels wide): the
        # part of the gap where the profile at the query point is inside.
        resolved = np.abs(da - db) >= 2.0 * diag
        keep = resolved & (length > 1e-9)
        lo = np.clip(centre_z[keep] - 0.5 * length[keep], za_g[keep], zb_g[keep])
        cols_q.append(np.column_stack([qi[keep], qj[keep]]))
        cols_w.append((1.0 - cc[keep]) * lat.pixel_area)
        cols_a.append(lo)
        cols_b.append(np.minimum(lo + length[keep], zb_g[keep]))
        # Narrower bands: the part of the pixel in plane a's region only stays inside from z_a for
        # keep_a (the integral of the band's inside fraction), the part in b's only for the rest,
        # next to z_b (the slab split would give both half the gap).
        n = ~resolved
        for own, za, zb in ((own_a[n], za_g[n], za_g[n] + keep_a[n]),
                            (own_b[n], za_g[n] + keep_a[n], zb_g[n])):
            use = (own > 1e-12) & (zb > za)
            split_q.append(np.column_stack([qi[n][use], qj[n][use]]))
            split_w.append(own[use] * lat.pixel_area)
            split_a.append(za[use])
            split_b.append(zb[use])
        del dist, da, db, length, centre_z, keep_a, own_a, own_b, qi, qj, cc  # memory
    for qs, ws, zas, zbs, extremes in ((cols_q, cols_w, cols_a, cols_b, True),
                                       (split_q, split_w, split_a, split_b, False)):
        if not qs:
            continue
        qq = np.concatenate(qs)
        r, c = lat.to_rc(qq[:, 0], qq[:, 1])
        ka, kb = fr.k(np.concatenate(zas)), fr.k(np.concatenate(zbs))
        smp = _depth_samples(arr, fr, r, c, np.concatenate(ws), np.minimum(ka, kb), np.maximum(ka, kb), lat.f)
        if not extremes:  # their dose point may lie just outside the solid
            smp.dmin, smp.dmax = np.inf, -np.inf
        sink.add(smp)
    return whole

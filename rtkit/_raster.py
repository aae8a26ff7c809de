"""Exact rasterisation of planar polygon rings on a pixel lattice.

Both functions take rings in *index* coordinates ``(row, column)`` of a
lattice whose pixel ``(r, c)`` is the unit square centred on ``(r, c)``, and
work on a window of ``shape = (R, C)`` pixels starting at pixel ``(0, 0)``.
Any affine in-plane geometry (pixel spacing, rotation, shear) is handled by
transforming the ring vertices into index coordinates first: insideness and
area fractions are affine-invariant.

* :func:`centers_inside` -- the even-odd rule at pixel centres (a point is
  inside when a ray from it crosses the rings an odd number of times).
* :func:`coverage` -- the exact area fraction of each pixel covered by the
  region, for rings oriented so that exteriors and holes have opposite
  orientation (signed-area accumulation, as in anti-aliased font
  rasterisers).  Exact for polygons: no supersampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["centers_inside", "centers_inside_stack", "coverage", "ring_successors"]


def _segments(rings: Sequence[NDArray[np.float64]]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Start and end points (M, 2) of every ring edge, rings closed implicitly."""
    parts = []
    for ring in rings:
        r = np.asarray(ring, dtype=np.float64)
        if len(r) < 2:
            continue
        if r[0, 0] == r[-1, 0] and r[0, 1] == r[-1, 1]:
            r = r[:-1]
        parts.append(r)
    if not parts:
        empty = np.empty((0, 2))
        return empty, empty
    starts = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return starts, starts[ring_successors([len(r) for r in parts])]


def ring_successors(sizes: Sequence[int] | NDArray[np.intp]) -> NDArray[np.intp]:
    """Index of each vertex's successor on its ring, for rings of ``sizes`` vertices stored one
    after the other (the last vertex of a ring is followed by its first: the closing edge)."""
    sizes = np.asarray(sizes, dtype=np.intp)
    nxt = np.arange(1, int(sizes.sum()) + 1)
    ends = np.cumsum(sizes)
    nxt[ends - 1] = ends - sizes
    return nxt


def _integer_crossings(a0: NDArray, a1: NDArray, lo: int, hi: int) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """For each segment, the parameters t at which coordinate a crosses integers in [lo, hi]."""
    amin, amax = np.minimum(a0, a1), np.maximum(a0, a1)
    k0 = np.maximum(np.floor(amin) + 1, lo)
    k1 = np.minimum(np.ceil(amax) - 1, hi)
    n = np.maximum(k1 - k0 + 1, 0).astype(np.intp)
    total = int(n.sum())
    seg = np.repeat(np.arange(len(a0)), n)
    offs = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    k = k0[seg] + offs
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (k - a0[seg]) / (a1[seg] - a0[seg])
    return seg, t


def coverage(rings: Sequence[NDArray[np.float64]], shape: tuple[int, int], moments: bool = False) -> Any:
    """Exact fraction of each pixel's area inside the region bounded by ``rings``.

    Parameters
    ----------
    rings : sequence of ndarray, each (N, 2) float
        Closed polygon rings in ``(row, column)`` index coordinates.  The
        region is the winding-number sum of the rings, so exteriors must have
        one orientation and holes the other (as after
        ``shapely.geometry.polygon.orient``).  Either overall orientation is
        accepted.
    shape : (int, int)
        ``(R, C)``: the window of pixels ``0..R-1`` x ``0..C-1``.

    moments : bool
        Also return the centroid of each pixel's covered part.

    Returns
    -------
    ndarray, shape (R, C), float64
        Area fractions in [0, 1].  With ``moments``, a tuple ``(fraction,
        row_offset, col_offset)``: the covered part's centroid relative to
        the pixel centre, in pixels (in [-0.5, 0.5]; 0 where nothing is
        covered).
    """
    R, C = shape
    p0, p1 = _segments(rings)
    if len(p0) == 0 or R == 0 or C == 0:
        return np.zeros(shape)
    # Shift so that pixel (r, c) is the square [r, r+1] x [c, c+1]; y = row, x = column.
    p0 = p0 + 0.5
    p1 = p1 + 0.5
    m = len(p0)
    sx, tx = _integer_crossings(p0[:, 1], p1[:, 1], 0, C)
    sy, ty = _integer_crossings(p0[:, 0], p1[:, 0], 0, R)
    seg = np.concatenate([np.arange(m), np.arange(m), sx, sy])
    t = np.concatenate([np.zeros(m), np.ones(m), tx, ty])
    order = np.lexsort((t, seg))
    seg, t = seg[order], t[order]
    same = seg[:-1] == seg[1:]
    s, ta, tb = seg[:-1][same], t[:-1][same], t[1:][same]
    d = p1[s] - p0[s]
    a = p0[s] + ta[:, None] * d
    b = p0[s] + tb[:, None] * d
    # Each piece now lies within one pixel row and column band; clamping is exact.
    ya, yb = np.clip(a[:, 0], 0, R), np.clip(b[:, 0], 0, R)
    xa, xb = np.clip(a[:, 1], 0, C), np.clip(b[:, 1], 0, C)
    dy = yb - ya
    keep = dy != 0
    dy, ya, yb, xa, xb = dy[keep], ya[keep], yb[keep], xa[keep], xb[keep]
    r = np.clip(np.floor((ya + yb) * 0.5).astype(np.intp), 0, R - 1)
    xm = (xa + xb) * 0.5
    c = np.clip(np.floor(xm).astype(np.intp), 0, C - 1)
    # Area of the pixel to the right of the piece, then a full dy for every pixel further right.
    width = C + 1
    here = r * width + c
    inpix = dy * (c + 1 - xm)
    acc = np.bincount(here, weights=inpix, minlength=R * width)
    acc += np.bincount(here + 1, weights=dy - inpix, minlength=R * width)
    cov = np.cumsum(acc.reshape(R, width), axis=1)[:, :C]
    cov[np.abs(cov) < 1e-12] = 0.0  # round-off of the running sums, not area
    if not moments:
        return np.clip(np.abs(cov), 0.0, 1.0)
    # First moments about each pixel's centre of the same signed regions (x linear in y along a
    # piece, so the integrals are closed-form): the centroid of the covered part of each pixel.
    # Only partly covered pixels have a centroid off the centre; their moments are found from
    # running sums over the pieces sorted by pixel rather than over the whole window (a partly
    # covered pixel need not hold a piece itself: it may lie right of one in its row).
    ua = ya - (r + 0.5)
    dx = xb - xa
    rest = c + 1 - xa
    my_in = dy * (ua * rest - ua * dx / 2 + dy * rest / 2 - dy * dx / 3)
    my_full = dy * (ua + dy / 2)  # the piece's moment in every pixel further right in its row
    wa, wb = xa - c - 0.5, xb - c - 0.5
    mx_in = dy * (0.25 - (wa * wa + wa * wb + wb * wb) / 3) / 2
    order = np.argsort(here, kind="stable")
    here_s = here[order]
    cum_in = np.r_[0.0, np.cumsum(my_in[order])]
    cum_full = np.r_[0.0, np.cumsum(my_full[order])]
    cum_x = np.r_[0.0, np.cumsum(mx_in[order])]
    rr, cc = np.nonzero((cov != 0) & (np.abs(cov) < 1.0 - 1e-12))
    flat = rr * width + cc
    at = np.searchsorted(here_s, flat, side="left")  # pieces before the pixel
    to = np.searchsorted(here_s, flat, side="right")  # ... and up to it
    row0 = np.searchsorted(here_s, rr * width, side="left")  # pieces before its row
    m_y = cum_in[to] - cum_in[at] + cum_full[at] - cum_full[row0]
    m_x = cum_x[to] - cum_x[at]
    inv = 1.0 / cov[rr, cc]
    oy, ox = np.zeros(shape), np.zeros(shape)
    oy[rr, cc] = np.clip(m_y * inv, -0.5, 0.5)
    ox[rr, cc] = np.clip(m_x * inv, -0.5, 0.5)
    return np.clip(np.abs(cov), 0.0, 1.0), oy, ox


def centers_inside(rings: Sequence[NDArray[np.float64]], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Even-odd test of every pixel centre against ``rings``.

    Parameters
    ----------
    rings : sequence of ndarray, each (N, 2) float
        Closed rings in ``(row, column)`` index coordinates, any orientation.
        Several rings combine by the even-odd rule (a ring inside another is
        a hole; an island inside a hole is filled again).
    shape : (int, int)
        ``(R, C)`` window.

    Returns
    -------
    ndarray of bool, shape (R, C)
        True where pixel centre ``(r, c)`` is inside.  A centre exactly on an
        edge counts as inside on the edge's left and outside on its right
        (half-open convention), so that adjacent regions never share a pixel.
    """
    return centers_inside_stack([rings], shape)[0]


def centers_inside_stack(
    rings_per_slice: Sequence[Sequence[NDArray[np.float64]]], shape: tuple[int, int]
) -> NDArray[np.bool_]:
    """:func:`centers_inside` for several slices at once, shape ``(len(rings_per_slice), R, C)``.

    One vectorised pass over every edge of every slice: the per-slice work
    is a few array operations instead of a Python call per slice.
    """
    R, C = shape
    J = len(rings_per_slice)
    starts, ends, owner = [], [], []
    for j, rings in enumerate(rings_per_slice):
        p0, p1 = _segments(rings)
        if len(p0):
            starts.append(p0)
            ends.append(p1)
            owner.append(np.full(len(p0), j, dtype=np.intp))
    if not starts or R == 0 or C == 0:
        return np.zeros((J, R, C), dtype=bool)
    p0, p1, owner_a = np.concatenate(starts), np.concatenate(ends), np.concatenate(owner)
    y0, y1 = p0[:, 0], p1[:, 0]
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    # rows r whose centre y = r lies in [ylo, yhi): r from ceil(ylo) to ceil(yhi) - 1
    r0 = np.maximum(np.ceil(ylo), 0)
    r1 = np.minimum(np.ceil(yhi) - 1, R - 1)
    n = np.maximum(r1 - r0 + 1, 0).astype(np.intp)
    total = int(n.sum())
    if total == 0:
        return np.zeros((J, R, C), dtype=bool)
    seg = np.repeat(np.arange(len(p0)), n)
    rows = (r0[seg] + (np.arange(total) - np.repeat(np.cumsum(n) - n, n))).astype(np.intp)
    t = (rows - y0[seg]) / (y1[seg] - y0[seg])
    x = p0[seg, 1] + t * (p1[seg, 1] - p0[seg, 1])
    # first column whose centre lies strictly right of the crossing
    first = np.clip(np.floor(x).astype(np.intp) + 1, 0, C)
    flat = (owner_a[seg] * R + rows) * (C + 1) + first
    toggles = (np.bincount(flat, minlength=J * R * (C + 1)) & 1).astype(np.uint8).reshape(J * R, C + 1)
    inside = np.bitwise_xor.accumulate(toggles, axis=1)[:, :C]
    return inside.view(bool).reshape(J, R, C)

"""Exact pixel-edge contours of 2-D masks (mask -> polygons).

:func:`mask_to_rings` traces the boundary of the union of the pixel squares
of a boolean mask *on the pixel edges* (not through the pixel centres, as
marching squares does), so filling the rings again with the even-odd rule at
the pixel centres gives back exactly the same mask: no systematic shrink or
growth.  :func:`rings_to_world` places the rings of one slice of a
:class:`~rtkit.Grid` in patient coordinates.

Conventions
-----------
Pixel ``(r, c)`` is the unit square ``[r - 0.5, r + 0.5] x [c - 0.5, c + 0.5]``
in ``(row, column)`` index coordinates, so ring vertices lie on half-integer
coordinates.  Every boundary edge (a pixel side between a pixel in the mask
and one outside it, the outside of the array counting as outside) belongs to
exactly one ring, hence the even-odd combination (XOR) of the rings is exactly
the mask.  Pixels that touch only at a corner are *not* connected (4-connected
foreground, 8-connected background): their rings touch at that vertex but do
not cross, and a boundary that would touch itself there is split into two
rings.  Every ring is therefore a simple polygon (rings may share vertices).

Outer boundaries run counter-clockwise in the ``(column, row)`` plane (column
to the right, row up: positive shoelace area), holes clockwise; for the
usual axial head-first-supine grid (column -> +x, row -> +y) that is
counter-clockwise in LPS ``(x, y)`` for outer boundaries.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .geometry import Grid

__all__ = ["mask_to_rings", "rings_to_world"]

# Direction codes of unit edges in (row, column) index space.
_DR = np.array([0, 1, 0, -1], dtype=np.int64)  # +col, +row, -col, -row
_DC = np.array([1, 0, -1, 0], dtype=np.int64)
# The interior lies to the side rot(d) = (dc, -dr) of an edge heading d:
# +col -> +row, +row -> -col, -col -> -row, -row -> +col, i.e. code (d + 1) % 4.


def mask_to_rings(mask2d: ArrayLike) -> list[NDArray[np.float64]]:
    """Trace the exact pixel-edge boundary of a 2-D mask as closed rings.

    Parameters
    ----------
    mask2d : array_like of bool, shape (R, C)
        The in-plane mask (``[row, column]``).  Non-boolean input is
        converted with ``!= 0``.

    Returns
    -------
    list of ndarray, each shape (N, 2), float64
        One closed ring per boundary component, in ``(row, column)`` index
        coordinates of the pixel *corners* (half-integers: pixel ``(r, c)``
        spans ``[r - 0.5, r + 0.5] x [c - 0.5, c + 0.5]``).  The first vertex
        is not repeated at the end (the closing edge is implied, as in DICOM
        CLOSED_PLANAR contours).  Only corners are kept (no collinear
        intermediate vertices), so ``N >= 4`` and even.  Outer boundaries
        and hole boundaries are separate rings with opposite orientation
        (outer: positive shoelace area in the ``(column, row)`` plane); the
        even-odd combination of all rings is exactly the mask.  Pixels that
        touch only diagonally get separate rings that share a vertex.  The
        order is deterministic: each ring starts at its smallest
        ``(row, column)`` vertex and rings are sorted by that vertex.
        Empty list for an empty mask.

    Raises
    ------
    ValueError
        If ``mask2d`` is not 2-D.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((4, 5), bool)
    >>> m[1:3, 1:4] = True
    >>> [ring.tolist() for ring in mask_to_rings(m)]
    [[[0.5, 0.5], [0.5, 3.5], [2.5, 3.5], [2.5, 0.5]]]
    >>> m[1, 2] = False  # a notch, still one ring
    >>> len(mask_to_rings(m))
    1
    """
    m = np.asarray(mask2d)
    if m.ndim != 2:
        raise ValueError(f"mask2d must be 2-D (rows, columns), got shape {m.shape}")
    m = m.astype(bool) if m.dtype == np.bool_ else m != 0
    nr, nc = m.shape
    if nr == 0 or nc == 0 or not m.any():
        return []
    p = np.zeros((nr + 2, nc + 2), dtype=bool)
    p[1:-1, 1:-1] = m
    ncv = nc + 1  # corner (i, j), i in 0..R, j in 0..C, is the point (i - 0.5, j - 0.5)

    # Horizontal edges on corner row i between pixel rows i-1 (above) and i (below).
    below = p[1:, 1:-1]
    above = p[:-1, 1:-1]
    hi, hj = np.nonzero(below != above)
    h_down_in = below[hi, hj]  # pixel below inside: edge runs +col, else -col
    # Vertical edges on corner column j between pixel columns j-1 (left) and j (right).
    right = p[1:-1, 1:]
    left = p[1:-1, :-1]
    vi, vj = np.nonzero(right != left)
    v_left_in = left[vi, vj]  # pixel left inside: edge runs +row, else -row

    h_src = np.where(h_down_in, hi * ncv + hj, hi * ncv + hj + 1)
    h_dir = np.where(h_down_in, 0, 2)
    v_src = np.where(v_left_in, vi * ncv + vj, (vi + 1) * ncv + vj)
    v_dir = np.where(v_left_in, 1, 3)
    src = np.concatenate([h_src, v_src]).astype(np.int64)
    d = np.concatenate([h_dir, v_dir]).astype(np.int64)
    ne = src.size
    dst = src + _DR[d] * ncv + _DC[d]

    # Outgoing edge of every (corner, direction); at most two leave a corner.
    nv = (nr + 1) * ncv
    out = np.full(nv * 4, -1, dtype=np.int64)
    out[src * 4 + d] = np.arange(ne)
    # At a corner, turn towards the interior if possible (keeps diagonal
    # contacts apart), else go straight, else turn away from the interior.
    nxt = out[dst * 4 + (d + 1) % 4]
    for turn in (d, (d + 3) % 4):
        miss = nxt < 0
        if not miss.any():
            break
        nxt[miss] = out[dst[miss] * 4 + turn[miss]]
    if np.any(nxt < 0):  # pragma: no cover - impossible for a pixel boundary
        raise AssertionError("mask_to_rings: unclosed boundary")

    # Rings are the cycles of the permutation nxt.
    ncomp, label = connected_components(
        csr_matrix((np.ones(ne, dtype=np.int8), nxt, np.arange(ne + 1)), shape=(ne, ne)),
        directed=True,
        connection="weak",
    )
    prv = np.empty(ne, dtype=np.int64)
    prv[nxt] = np.arange(ne)
    corner = d != d[prv]  # the edge's source vertex is a corner (direction changes)

    # Start of each ring: its corner with the smallest (row, column), i.e. vertex id.
    cidx = np.flatnonzero(corner)
    o = np.lexsort((src[cidx], label[cidx]))
    first = np.ones(o.size, dtype=bool)
    first[1:] = label[cidx[o[1:]]] != label[cidx[o[:-1]]]
    start = np.empty(ncomp, dtype=np.int64)
    start[label[cidx[o[first]]]] = cidx[o[first]]

    # List ranking: distance of every edge to the last edge of its ring.
    link = nxt.copy()
    link[prv[start]] = prv[start]  # break each cycle before its start
    dist = (link != np.arange(ne)).astype(np.int64)
    while True:
        nl = link[link]
        if np.array_equal(nl, link):
            break
        dist = dist + dist[link]
        link = nl
    ring_rank = np.empty(ncomp, dtype=np.int64)
    ring_rank[np.argsort(src[start], kind="stable")] = np.arange(ncomp)
    order = np.lexsort((-dist, ring_rank[label]))
    order = order[corner[order]]
    verts = src[order]
    counts = np.bincount(ring_rank[label[order]], minlength=ncomp)
    coords = np.column_stack([verts // ncv, verts % ncv]).astype(np.float64) - 0.5
    ends = np.cumsum(counts).tolist()
    bounds = list(zip([0, *ends[:-1]], ends, strict=True))
    rings = [coords[a:b] for a, b in bounds]

    # A boundary that touches itself at a diagonal contact is split there.
    out_count = np.bincount(src, minlength=nv)
    saddle_edges = np.flatnonzero(out_count[src] == 2)
    if saddle_edges.size:
        # Rings that leave a saddle corner twice.
        key = label[saddle_edges] * nv + src[saddle_edges]
        uniq, cnt = np.unique(key, return_counts=True)
        touching = np.unique(uniq[cnt > 1] // nv)
        if touching.size:
            result: list[NDArray[np.float64]] = []
            bad = set(ring_rank[touching].tolist())
            for k, ring in enumerate(rings):
                if k in bad:
                    a, b = bounds[k]
                    result.extend(_split_at_repeats(verts[a:b], ncv))
                else:
                    result.append(ring)
            result.sort(key=lambda r: (r[0, 0], r[0, 1]))
            return result
    return rings


def _split_at_repeats(verts: NDArray[np.int64], ncv: int) -> list[NDArray[np.float64]]:
    """Split a closed vertex cycle into simple cycles at repeated vertices."""
    stack: list[int] = []
    where: dict[int, int] = {}
    loops: list[list[int]] = []
    for v in verts.tolist() + [int(verts[0])]:
        if v in where:
            i = where[v]
            loop = stack[i:]
            for u in loop[1:]:
                del where[u]
            del stack[i + 1 :]
            if len(loop) > 1:
                loops.append(loop)
        else:
            where[v] = len(stack)
            stack.append(v)
    out = []
    for loop in loops:
        i = loop.index(min(loop))
        a = np.asarray(loop[i:] + loop[:i], dtype=np.int64)
        out.append(np.column_stack([a // ncv, a % ncv]).astype(np.float64) - 0.5)
    return out


def rings_to_world(
    rings: list[NDArray[np.float64]] | list[ArrayLike], grid: Grid, slice_index: int | float
) -> list[NDArray[np.float64]]:
    """Place ``(row, column)`` rings of one grid slice in patient coordinates.

    Parameters
    ----------
    rings : list of array_like, each shape (N, 2)
        Vertices in ``(row, column)`` index coordinates of ``grid`` (as
        returned by :func:`mask_to_rings`).
    grid : Grid
        The grid the mask was drawn on.
    slice_index : int or float
        Index ``k`` of the slice along the grid's first axis.

    Returns
    -------
    list of ndarray, each shape (N, 3), float64
        LPS coordinates in mm, ``grid.index_to_world((k, row, column))`` of
        every vertex; all on the plane of slice ``k``.
    """
    out = []
    for ring in rings:
        rc = np.asarray(ring, dtype=np.float64)
        if rc.ndim != 2 or rc.shape[1] != 2:
            raise ValueError(f"each ring must have shape (N, 2) (row, column), got {rc.shape}")
        idx = np.column_stack([np.full(len(rc), float(slice_index)), rc])
        out.append(grid.index_to_world(idx))
    return out

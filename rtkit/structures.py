"""RT Structure Sets: contours, volumes and exact masks on any grid.

Contour semantics (DESIGN §3, Nelms et al. 2015)
------------------------------------------------
* Closed planar contours on one plane combine by the **even-odd rule**: a
  contour inside another is a hole, an island inside a hole is filled.
* Each plane stands for a **slab** along the plane normal: it reaches
  half-way to the neighbouring plane, and half the nominal contour spacing
  beyond the first and last planes (the end caps).  Neighbours further apart
  than 1.5 times the nominal spacing (the median distance between planes)
  are a **gap**: each side then keeps only half the nominal spacing and the
  structure is absent in between.
* POINT and OPEN contours are kept (``Structure.contours``) but never
  rasterised.

Masks
-----
``Structure.mask(grid)`` is True where a voxel centre lies inside the slab
solid; ``mask(grid, fractional=True)`` is the fraction of each voxel's volume
inside it.  When the grid's slices are parallel to the contour planes (the
usual case, whatever the orientation or in-plane rotation), in-plane
fractions are computed exactly from the polygons and the through-plane
fraction from the exact slab overlap.  When they are not parallel (an
oblique grid), each voxel is sampled on a 5 x 5 x 5 lattice.  Work is
restricted to the grid window around the structure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from ._raster import centers_inside_stack, coverage, ring_successors
from .errors import FrameOfReferenceError, GeometryError, violation, warn
from .geometry import Grid

__all__ = ["Contour", "Structure", "StructureSet"]

log = logging.getLogger(__name__)

CLOSED_TYPES = frozenset({"CLOSED_PLANAR", "CLOSEDPLANAR_XOR"})
_PLANE_TOL = 0.01  # mm: contours closer than this along the normal share a plane
_PARALLEL_COS = np.cos(np.deg2rad(0.5))
#: mm: a contour coordinate beyond this (10 m from the origin) is corrupt, not anatomy.
_MAX_COORD_MM = 1e4
_OBLIQUE_SAMPLES = 5

#: Deterministic colours for ROIs without ROIDisplayColor, by ROI number.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def default_color(number: int) -> tuple[int, int, int]:
    """The palette colour used for ROI ``number`` when the file gives none."""
    return PALETTE[(int(number) - 1) % len(PALETTE)]


@dataclass
class Contour:
    """One contour of an ROI.

    Attributes
    ----------
    points : ndarray, shape (N, 3), float64
        Vertices in LPS mm, as stored (not rounded, not closed).
    geometric_type : str
        ContourGeometricType: ``CLOSED_PLANAR``, ``POINT``, ``OPEN_PLANAR``,
        ``OPEN_NONPLANAR``.
    referenced_sop_instance_uid : str or None
        The image the contour was drawn on (informative only: rtkit matches
        planes to grids by geometry).
    """

    points: NDArray[np.float64]
    geometric_type: str = "CLOSED_PLANAR"
    referenced_sop_instance_uid: str | None = None

    @property
    def is_closed(self) -> bool:
        return self.geometric_type in CLOSED_TYPES


@dataclass
class _Plane:
    position: float  # mm along the normal
    region: Any  # shapely geometry in plane coordinates (u, v), mm
    lo: float = 0.0
    hi: float = 0.0

    def rings(self) -> list[NDArray[np.float64]]:
        """Rings (u, v) of the region, exteriors and holes oppositely oriented (computed once)."""
        cached = self.__dict__.get("_rings")
        if cached is not None:
            return cached
        out = []
        for poly in shapely.get_parts(self.region):
            if not isinstance(poly, Polygon) or poly.is_empty:
                continue
            poly = orient(poly, 1.0)
            out.append(np.asarray(poly.exterior.coords))
            out.extend(np.asarray(r.coords) for r in poly.interiors)
        self.__dict__["_rings"] = out
        return out


@dataclass
class _Stack:
    normal: NDArray[np.float64]
    e1: NDArray[np.float64]
    e2: NDArray[np.float64]
    planes: list[_Plane] = field(default_factory=list)
    spacing: float | None = None

    def world(self, uv: NDArray[np.float64], t: float) -> NDArray[np.float64]:
        return uv[:, :1] * self.e1 + uv[:, 1:2] * self.e2 + t * self.normal

    @property
    def lo(self) -> NDArray[np.float64]:
        return np.array([p.lo for p in self.planes])

    @property
    def hi(self) -> NDArray[np.float64]:
        return np.array([p.hi for p in self.planes])


def _newell(centred: NDArray[np.float64]) -> NDArray[np.float64]:
    """Newell's normal of a polygon given about its centroid: direction = normal, length = 2 * area.

    Newell's sums reduce to the sum of the cross products of consecutive vertices; about the
    centroid that sum does not lose digits to coordinates far from the origin.
    """
    a, b = centred, np.concatenate([centred[1:], centred[:1]])
    return (a[:, [1, 2, 0]] * b[:, [2, 0, 1]] - a[:, [2, 0, 1]] * b[:, [1, 2, 0]]).sum(axis=0)


def _contour_normal(points: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """Unit normal of a planar contour, or None when its points are collinear.

    Newell's normal where the polygon has net area; the best-fit plane (SVD)
    where signed areas cancel (a symmetric bow-tie).
    """
    centred = points - points.mean(axis=0)
    extent2 = float(np.einsum("ij,ij->", centred, centred)) / len(points)
    if extent2 == 0:
        return None
    nv = _newell(centred)
    length = float(np.sqrt(nv @ nv))
    if length > 1e-6 * extent2:
        return nv / length
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    if sv[1] <= 1e-9 * sv[0]:
        return None
    return vt[2]


def _clean_contours(arrays: list[NDArray[np.float64]]) -> tuple[list[NDArray[np.float64]], list[Any] | None]:
    """Contours without repeated consecutive points (nor a repeated closing point), and a unit
    normal of each (None where it has fewer than 3 points or no net area: callers then use
    :func:`_contour_normal`), all contours at once.  ``arrays``: (N, 3) float64 each; a
    contour with non-finite coordinates gives None normals for all (the caller reports it)."""
    sizes = np.array([len(a) for a in arrays], dtype=np.intp)
    if not len(arrays) or not sizes.all():
        return [_dedup(a) for a in arrays], None
    allp = np.concatenate(arrays)
    if not np.isfinite(allp).all() or np.abs(allp).max() > _MAX_COORD_MM:
        return [_dedup(a) for a in arrays], None
    keep = np.ones(len(allp), dtype=bool)
    keep[1:] = np.any(allp[1:] != allp[:-1], axis=1)
    keep[np.cumsum(sizes) - sizes] = True
    sizes = np.add.reduceat(keep, np.cumsum(sizes) - sizes).astype(np.intp)
    pts = allp[keep]
    first = np.cumsum(sizes) - sizes
    last = first + sizes - 1
    closing = (sizes > 1) & np.all(pts[first] == pts[last], axis=1)
    if closing.any():
        keep = np.ones(len(pts), dtype=bool)
        keep[last[closing]] = False
        pts, sizes = pts[keep], sizes - closing
        first = np.cumsum(sizes) - sizes
    clean = np.split(pts, first[1:])
    normals: list[Any] = [None] * len(arrays)
    use = np.flatnonzero(sizes >= 3)
    if use.size:
        sel = np.concatenate([clean[i] for i in use])
        n_i = sizes[use]
        starts = np.cumsum(n_i) - n_i
        centred = sel - np.repeat(np.add.reduceat(sel, starts) / n_i[:, None], n_i, axis=0)
        nv = np.add.reduceat(np.cross(centred, centred[ring_successors(n_i)]), starts)  # Newell's sums
        extent2 = np.add.reduceat(np.einsum("ij,ij->i", centred, centred), starts) / n_i
        length = np.sqrt(np.einsum("ij,ij->i", nv, nv))
        for i, ok, v, ln in zip(use, length > 1e-6 * extent2, nv, length, strict=True):
            if ok:
                normals[i] = v / ln
    return clean, normals


def _dedup(pts: NDArray[np.float64]) -> NDArray[np.float64]:
    """One contour without repeated consecutive points, nor a repeated closing point."""
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = np.any(np.diff(pts, axis=0) != 0, axis=1)
    pts = pts[keep]
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    return pts


def _plane_basis(normal: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Orthonormal in-plane axes; for an axial normal these are +x and +y."""
    ref = np.array([1.0, 0.0, 0.0]) if abs(normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = ref - (ref @ normal) * normal
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(normal, e1)


class Structure:
    """One ROI of an RT Structure Set.

    Parameters
    ----------
    name : str
    number : int
        ROINumber.
    contours : list of Contour
    color : (int, int, int), optional
        RGB 0-255; default :func:`default_color` of ``number``.
    type : str, optional
        RTROIInterpretedType (``"PTV"``, ``"ORGAN"``, ``"EXTERNAL"``, ...).
    frame_of_reference_uid : str, optional
    slice_thickness : float, optional
        Slab thickness (mm) for a structure drawn on a single plane, where no
        contour spacing can be measured; :class:`StructureSet` fills it in
        from the other ROIs.
    """

    def __init__(
        self,
        name: str,
        number: int,
        contours: list[Contour] | None = None,
        color: tuple[int, int, int] | None = None,
        type: str | None = None,  # noqa: A002 - DESIGN name
        frame_of_reference_uid: str | None = None,
        slice_thickness: float | None = None,
    ) -> None:
        self.name = name
        self.number = int(number)
        self.contours: list[Contour] = list(contours or [])
        self.color = tuple(int(c) for c in color) if color is not None else default_color(number)
        self.type = type
        self.frame_of_reference_uid = frame_of_reference_uid or None
        self.slice_thickness = slice_thickness

    # ------------------------------------------------------------ the solid
    def _where(self, position: float) -> str:
        return f"ROI '{self.name}' (number {self.number}), plane at {position:.2f} mm"

    @cached_property
    def _stack(self) -> _Stack | None:
        closed = [c for c in self.contours if c.is_closed]
        if not closed:
            return None
        items: list[NDArray[np.float64]] = []
        normal: NDArray[np.float64] | None = None
        arrays = [np.asarray(c.points, dtype=np.float64).reshape(-1, 3) for c in closed]
        clean, normals = _clean_contours(arrays)
        for ci, pts in enumerate(arrays):
            where = f"ROI '{self.name}' (number {self.number})"
            if normals is None:  # else every coordinate was found finite and in range at once
                if not np.all(np.isfinite(pts)):
                    violation(f"{where}: a contour holds NaN or infinite coordinates", log, GeometryError,
                              repair="contour skipped")
                    continue
                if np.abs(pts).max(initial=0.0) > _MAX_COORD_MM:
                    violation(f"{where}: a contour has a coordinate of {np.abs(pts).max():.3g} mm, more than "
                              f"{_MAX_COORD_MM:g} mm from the origin (corrupt ContourData)", log, GeometryError,
                              repair="contour skipped")
                    continue
            pts = clean[ci]
            if len(pts) < 3:
                z = float(pts[:, 2].mean()) if len(pts) else float("nan")
                violation(f"{where}: closed contour at z = {z:.2f} mm has {len(pts)} distinct point(s)", log,
                          GeometryError, repair="skipped")
                continue
            # the stack's normal from the first contour, exactly; the others only checked against it
            n = _contour_normal(pts) if normal is None or normals is None or normals[ci] is None else normals[ci]
            if n is None:
                z = float(pts[:, 2].mean())
                violation(f"{where}: contour at z = {z:.2f} mm has zero area (collinear points)", log,
                          GeometryError, repair="skipped")
                continue
            if normal is None:
                normal = n if (n[2], n[1], n[0]) >= (0, 0, 0) else -n
                if abs(normal[2]) > 1e-12:
                    normal = normal * np.sign(normal[2])
            elif abs(n @ normal) < _PARALLEL_COS:
                z = float(pts[:, 2].mean())
                violation(f"{where}: contour at z = {z:.2f} mm is not parallel to the ROI's other contours "
                          f"(angle {np.degrees(np.arccos(min(1.0, abs(n @ normal)))):.1f} deg)", log,
                          GeometryError, repair="skipped")
                continue
            items.append(pts)
        if normal is None:
            return None
        e1, e2 = _plane_basis(normal)
        groups: list[tuple[float, list[NDArray[np.float64]]]] = []
        placed = [(pts, float(pts.mean(axis=0) @ normal)) for pts in items]
        for pts, t in sorted(placed, key=lambda it: it[1]):
            off = np.abs(pts @ normal - t).max()
            if off > 0.05:
                violation(f"{self._where(t)}: contour points are up to {off:.2f} mm off their plane "
                          "(CLOSED_PLANAR contours are planar)", log, GeometryError, repair="projected onto it")
            uv = np.stack([pts @ e1, pts @ e2], axis=1)
            if groups and t - groups[-1][0] < _PLANE_TOL:
                groups[-1][1].append(uv)
            else:
                groups.append((t, [uv]))
        stack = _Stack(normal, e1, e2)
        for t, polys in groups:
            region = None
            for uv in polys:
                poly = Polygon(uv)
                if not poly.is_valid:
                    fixed = shapely.make_valid(poly)
                    fixed = shapely.union_all([g for g in shapely.get_parts(fixed) if g.geom_type in ("Polygon", "MultiPolygon")])
                    x, y = uv[:, 0], uv[:, 1]
                    signed = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
                    ring = shapely.LinearRing(uv)
                    doubled = ring.length - shapely.unary_union(ring).length  # edges traversed twice
                    if doubled > 1e-9 * ring.length and abs(fixed.area - signed) <= 1e-9 * max(fixed.area, signed, 1.0):
                        # a ring that touches itself along edges traversed twice (the keyhole
                        # encoding of a hole, PS3.3 C.8.8.6.3): allowed, and nothing is lost
                        warn(f"{self._where(t)}: self-touching (keyhole) contour; read with shapely "
                             "make_valid, area unchanged", log)
                    else:
                        violation(f"{self._where(t)}: self-intersecting contour", log, GeometryError,
                                  repair="repaired with shapely make_valid (even-odd parts kept)")
                    poly = fixed
                region = poly if region is None else shapely.symmetric_difference(region, poly)
            if region is not None and not region.is_empty and region.area > 0:
                stack.planes.append(_Plane(t, region))
            else:
                violation(f"{self._where(t)}: the contours on this plane enclose no area", log, GeometryError,
                          repair="plane skipped")
        if not stack.planes:
            return None
        self._set_slabs(stack)
        return stack

    def _set_slabs(self, stack: _Stack) -> None:
        pos = np.array([p.position for p in stack.planes])
        if len(pos) > 1:
            spacing = float(np.median(np.diff(pos)))
        else:
            spacing = self.slice_thickness
            if not spacing:
                violation(f"ROI '{self.name}': a single contour plane and no contour spacing known", log,
                          GeometryError, repair="using a 1 mm slab (pass slice_thickness=)")
                spacing = 1.0
        stack.spacing = spacing
        half = spacing / 2.0
        for i, p in enumerate(stack.planes):
            p.lo = p.position - half
            p.hi = p.position + half
            if i > 0:
                d = p.position - stack.planes[i - 1].position
                if d <= 1.5 * spacing:
                    p.lo = p.position - d / 2.0
                else:
                    log.info("ROI '%s': gap of %.2f mm between contour planes at %.2f and %.2f mm",
                             self.name, d, stack.planes[i - 1].position, p.position)
            if i + 1 < len(stack.planes):
                d = stack.planes[i + 1].position - p.position
                if d <= 1.5 * spacing:
                    p.hi = p.position + d / 2.0

    def _plane_positions(self) -> NDArray[np.float64]:
        """Sorted distinct plane positions along the first contour's normal (cheap, no warnings)."""
        normal = None
        pos = []
        for c in self.contours:
            pts = np.asarray(c.points, dtype=np.float64).reshape(-1, 3)
            if (not c.is_closed or len(pts) < 3 or not np.all(np.isfinite(pts))
                    or np.abs(pts).max() > _MAX_COORD_MM):
                continue
            if normal is None:
                normal = _contour_normal(pts)
                if normal is None:
                    continue
            pos.append(float(pts.mean(axis=0) @ normal))
        if not pos:
            return np.empty(0)
        pos = np.sort(pos)
        return pos[np.concatenate([[True], np.diff(pos) >= _PLANE_TOL])]

    @property
    def is_empty(self) -> bool:
        """True when the ROI has no closed contour with area."""
        return self._stack is None

    @property
    def volume(self) -> float:
        """Volume of the slab solid in cm3 (0 for an empty ROI)."""
        stack = self._stack
        if stack is None:
            return 0.0
        return float(sum(p.region.area * (p.hi - p.lo) for p in stack.planes) / 1000.0)

    @property
    def planes(self) -> list[tuple[float, float, float, float]]:
        """``(position, slab start, slab end, area mm2)`` of each contour plane, along the normal."""
        stack = self._stack
        return [] if stack is None else [(p.position, p.lo, p.hi, p.region.area) for p in stack.planes]

    @property
    def normal(self) -> NDArray[np.float64] | None:
        """Unit normal (LPS) of the contour planes, or None if empty."""
        return None if self._stack is None else self._stack.normal.copy()

    def contains(self, points_lps: ArrayLike) -> NDArray[np.bool_]:
        """Whether points lie inside the slab solid.

        Parameters
        ----------
        points_lps : array_like, shape (..., 3)
            LPS coordinates (mm) in the structure's frame of reference.

        Returns
        -------
        ndarray of bool, shape (...)
        """
        pts = np.asarray(points_lps, dtype=np.float64)
        flat = pts.reshape(-1, 3)
        out = np.zeros(len(flat), dtype=bool)
        stack = self._stack
        if stack is None or not len(flat):
            return out.reshape(pts.shape[:-1])
        lo, hi = stack.lo, stack.hi
        t = flat @ stack.normal
        which = np.searchsorted(lo, t, side="right") - 1
        ok = (which >= 0) & (t < hi[np.clip(which, 0, None)])
        for i in np.unique(which[ok]):
            sel = np.flatnonzero(ok & (which == i))
            region = stack.planes[i].region
            shapely.prepare(region)
            out[sel] = shapely.contains_xy(region, flat[sel] @ stack.e1, flat[sel] @ stack.e2)
        return out.reshape(pts.shape[:-1])

    # ---------------------------------------------------------------- masks
    def _check_frame(self, grid: Grid) -> None:
        a, b = self.frame_of_reference_uid, grid.frame_of_reference_uid
        if a and b and a != b:
            raise FrameOfReferenceError(
                f"ROI '{self.name}' is in frame of reference {a} but the grid is in {b}; "
                "pass the registration linking them as transform="
            )

    def transformed(self, matrix: ArrayLike, frame_of_reference_uid: str | None = None) -> Structure:
        """This ROI with every contour point mapped by a 4x4 matrix (e.g. ``Registration.matrix``)."""
        m = np.asarray(getattr(matrix, "matrix", matrix), dtype=np.float64)
        if m.shape != (4, 4):
            raise GeometryError(f"transform must be 4x4, got shape {m.shape}")
        contours = [
            Contour(np.asarray(c.points, float) @ m[:3, :3].T + m[:3, 3], c.geometric_type,
                    c.referenced_sop_instance_uid)
            for c in self.contours
        ]
        return Structure(self.name, self.number, contours, self.color, self.type,
                         frame_of_reference_uid, self.slice_thickness)

    def mask(self, grid: Grid, fractional: bool = False, *, transform: Any = None) -> NDArray:
        """Rasterise the slab solid on ``grid``.

        Parameters
        ----------
        grid : Grid
            Any grid in the structure's frame of reference: the CT, the dose
            grid, or another; slices need not coincide with contour planes.
        fractional : bool
            False: bool, True where the voxel centre is inside.  True:
            float32 fraction of each voxel's volume inside the solid.
        transform : (4, 4) array_like or Registration, optional
            Maps the structure's coordinates to the grid's (moving -> fixed),
            for a structure drawn in another frame of reference.

        Returns
        -------
        ndarray, shape ``grid.shape``
            bool, or float32 in [0, 1].

        Raises
        ------
        FrameOfReferenceError
            If the frames of reference differ and no transform is given.
        """
        if transform is not None:
            return self.transformed(transform, grid.frame_of_reference_uid).mask(grid, fractional)
        self._check_frame(grid)
        out = np.zeros(grid.shape, dtype=np.float32 if fractional else bool)
        stack = self._stack
        if stack is None:
            return out
        window = self._window(grid, stack)
        if window is None:
            return out
        (k0, k1), (r0, r1), (c0, c1) = window
        sub = out[k0:k1, r0:r1, c0:c1]
        a = grid.affine
        gnormal = np.cross(a[:3, 1], a[:3, 2])
        gnormal /= np.linalg.norm(gnormal)
        if abs(gnormal @ stack.normal) >= 1 - 1e-9:
            self._mask_parallel(grid, stack, (k0, r0, c0), sub, fractional)
        else:
            self._mask_oblique(grid, stack, (k0, r0, c0), sub, fractional)
        return out

    def box_corners(self) -> NDArray[np.float64]:
        """LPS corners (mm) of every slab's in-plane bounding box: shape (8 * planes, 3).

        Their hull contains the whole solid; empty for an empty ROI.
        """
        stack = self._stack
        if stack is None:
            return np.empty((0, 3))
        corners = []
        for p in stack.planes:
            u0, v0, u1, v1 = p.region.bounds
            uv = np.array([[u0, v0], [u0, v1], [u1, v0], [u1, v1]])
            for t in (p.lo, p.hi):
                corners.append(stack.world(uv, t))
        return np.concatenate(corners)

    def _window(self, grid: Grid, stack: _Stack) -> tuple[tuple[int, int], ...] | None:
        """Index ranges of the grid that can touch the solid (a one-voxel margin)."""
        idx = grid.world_to_index(self.box_corners())
        lo = np.floor(idx.min(axis=0)).astype(int) - 1
        hi = np.ceil(idx.max(axis=0)).astype(int) + 2
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, grid.shape)
        if np.any(hi <= lo):
            return None
        return tuple((int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def _rings_on_slice(self, grid: Grid, stack: _Stack, plane: _Plane, t: float,
                        origin: tuple[int, int, int]) -> list[NDArray[np.float64]]:
        """The plane's rings projected onto the grid slice at ``t``, in window (row, col) indices."""
        out = []
        for ring in plane.rings():
            idx = grid.world_to_index(stack.world(ring, t))
            out.append(idx[:, 1:] - np.array(origin[1:], dtype=np.float64))
        return out

    def _mask_parallel(self, grid: Grid, stack: _Stack, origin: tuple[int, int, int],
                       sub: NDArray, fractional: bool) -> None:
        a = grid.affine
        step = a[:3, 0]
        thick = abs(step @ stack.normal)
        # Without shear, a plane's polygons project onto every slice at the same (row, col).
        sheared = np.linalg.norm(step - (step @ stack.normal) * stack.normal) > 1e-9 * np.linalg.norm(step)
        lo, hi = stack.lo, stack.hi
        shape2 = sub.shape[1:]
        cache: dict[int, list[NDArray[np.float64]]] = {}

        def rings(i: int, t: float) -> list[NDArray[np.float64]]:
            if sheared:
                return self._rings_on_slice(grid, stack, stack.planes[i], t, origin)
            if i not in cache:
                cache[i] = self._rings_on_slice(grid, stack, stack.planes[i], t, origin)
            return cache[i]

        ts = [(j, float((a[:3, 3] + (origin[0] + j) * step) @ stack.normal)) for j in range(sub.shape[0])]
        if not fractional:
            per_slice = []
            for _, t in ts:
                i = int(np.searchsorted(lo, t, side="right")) - 1
                per_slice.append(rings(i, t) if i >= 0 and t < hi[i] else [])
            # a few hundred thousand pixels per vectorised pass bounds the temporaries (8 bytes each)
            chunk = max(1, 400_000 // max(1, shape2[0] * (shape2[1] + 1)))
            for j0 in range(0, len(per_slice), chunk):
                sub[j0:j0 + chunk] = centers_inside_stack(per_slice[j0:j0 + chunk], shape2)
            return
        tiny = 1e-9 * thick
        for j, t in ts:
            overlap = np.minimum(hi, t + thick / 2.0) - np.maximum(lo, t - thick / 2.0)
            acc = None
            for i in np.flatnonzero(overlap > tiny):
                cov = coverage(rings(int(i), t), shape2)
                w = overlap[i] / thick
                if w < 1.0 - 1e-12:
                    cov *= w
                if acc is None:
                    acc = cov
                else:
                    acc += cov
            if acc is not None:
                np.minimum(acc, 1.0, out=acc)
                sub[j] = acc

    def _mask_oblique(self, grid: Grid, stack: _Stack, origin: tuple[int, int, int],
                      sub: NDArray, fractional: bool) -> None:
        n = _OBLIQUE_SAMPLES if fractional else 1
        offs = (np.arange(n) + 0.5) / n - 0.5 if fractional else np.zeros(1)
        so = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
        lo, hi = stack.lo, stack.hi
        for p in stack.planes:
            shapely.prepare(p.region)  # in place
        prepared = [p.region for p in stack.planes]
        rr, cc = np.meshgrid(np.arange(sub.shape[1]), np.arange(sub.shape[2]), indexing="ij")
        for j in range(sub.shape[0]):
            base = np.stack([np.full(rr.size, origin[0] + j), rr.ravel() + origin[1], cc.ravel() + origin[2]], 1)
            idx = (base[:, None, :] + so[None, :, :]).reshape(-1, 3)
            pts = grid.index_to_world(idx)
            t = pts @ stack.normal
            which = np.searchsorted(lo, t, side="right") - 1
            ok = (which >= 0) & (t < hi[np.clip(which, 0, None)])
            inside = np.zeros(len(pts), dtype=bool)
            for i in np.unique(which[ok]):
                sel = ok & (which == i)
                inside[sel] = shapely.contains_xy(prepared[i], pts[sel] @ stack.e1, pts[sel] @ stack.e2)
            vals = inside.reshape(-1, len(so)).mean(axis=1).reshape(sub.shape[1:])
            sub[j] = vals if fractional else vals > 0.5

    def __repr__(self) -> str:
        return f"Structure({self.name!r}, number={self.number}, {len(self.contours)} contours, {self.volume:.3f} cm3)"


class StructureSet(Mapping[str, Structure]):
    """The ROIs of an RT Structure Set, by name.

    Look-up is by exact name first, then case-insensitive.  Built by
    :func:`rtkit.read_structures` (or ``Case.structures``).

    Attributes
    ----------
    label : str or None
        StructureSetLabel.
    frame_of_reference_uid : str or None
    sop_instance_uid : str or None
    referenced_series_uid : str or None
        The image series the contours were drawn on.
    path : Path or None
        The file read.
    """

    def __init__(
        self,
        structures: list[Structure] | None = None,
        *,
        label: str | None = None,
        frame_of_reference_uid: str | None = None,
        sop_instance_uid: str | None = None,
        referenced_series_uid: str | None = None,
        path: Any = None,
    ) -> None:
        self._structures: list[Structure] = list(structures or [])
        self.label = label
        self.frame_of_reference_uid = frame_of_reference_uid
        self.sop_instance_uid = sop_instance_uid
        self.referenced_series_uid = referenced_series_uid
        self.path = path
        self._fill_thickness()

    def _fill_thickness(self) -> None:
        """Give single-plane ROIs the set's nominal contour spacing (median over the other ROIs)."""
        positions = {id(s): s._plane_positions() for s in self._structures if s.slice_thickness is None}
        spacings = [float(np.median(np.diff(p))) for p in positions.values() if len(p) > 1]
        if not spacings:
            return
        nominal = float(np.median(spacings))
        for s in self._structures:
            if len(positions.get(id(s), ())) == 1:
                s.slice_thickness = nominal
                s.__dict__.pop("_stack", None)

    # ----------------------------------------------------------- mapping
    def __getitem__(self, name: str) -> Structure:
        for s in self._structures:
            if s.name == name:
                return s
        low = name.lower() if isinstance(name, str) else name
        for s in self._structures:
            if s.name.lower() == low:
                return s
        raise KeyError(f"no ROI named {name!r}; the structure set has: {', '.join(self.names)}")

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for s in self._structures:
            if s.name not in seen:
                seen.add(s.name)
                yield s.name

    def __len__(self) -> int:
        return len(set(s.name for s in self._structures))

    @property
    def names(self) -> list[str]:
        """ROI names in file order."""
        return list(self)

    @property
    def structures(self) -> list[Structure]:
        """Every ROI, in file order (including duplicates of a name)."""
        return list(self._structures)

    # ----------------------------------------------------------- writing
    def add(
        self,
        name: str,
        mask: ArrayLike,
        grid: Grid,
        color: tuple[int, int, int] | None = None,
        type: str = "ORGAN",  # noqa: A002 - DESIGN name
    ) -> Structure:
        """Add an ROI traced from a mask.

        Parameters
        ----------
        name : str
        mask : array_like, shape ``grid.shape``
            bool, or fractional occupancy (voxels >= 0.5 count as inside).
        grid : Grid
            The mask's grid; its slices become the contour planes.
        color : (int, int, int), optional
            Default: the palette colour of the new ROI number.
        type : str
            RTROIInterpretedType.

        Returns
        -------
        Structure
            Contours trace the voxel *edges* of each slice (outer boundaries and
            holes as separate contours, even-odd rule), so rasterising them
            again on ``grid`` gives back exactly the same voxel centres.
        """
        from ._contours import mask_to_rings, rings_to_world

        m = np.asarray(mask)
        if m.shape != grid.shape:
            raise GeometryError(f"mask for ROI '{name}' has shape {m.shape}, the grid {grid.shape}")
        m = m >= 0.5 if m.dtype.kind == "f" else m.astype(bool)
        frame = grid.frame_of_reference_uid
        if self.frame_of_reference_uid and frame and frame != self.frame_of_reference_uid:
            raise FrameOfReferenceError(
                f"ROI '{name}': the mask's grid is in frame of reference {frame}, the structure "
                f"set in {self.frame_of_reference_uid}"
            )
        contours = []
        for k in np.flatnonzero(m.any(axis=(1, 2))):
            for pts in rings_to_world(mask_to_rings(m[k]), grid, int(k)):
                contours.append(Contour(pts, "CLOSED_PLANAR"))
        number = max((s.number for s in self._structures), default=0) + 1
        thickness = abs(grid.affine[:3, 0] @ np.cross(grid.direction[:, 1], grid.direction[:, 2]))
        roi = Structure(name, number, contours, color, type, frame or self.frame_of_reference_uid,
                        slice_thickness=float(thickness))
        self._structures.append(roi)
        self.frame_of_reference_uid = self.frame_of_reference_uid or frame
        return roi

    @classmethod
    def from_masks(cls, masks: Mapping[str, ArrayLike], reference: Any, **kwargs: Any) -> StructureSet:
        """A new structure set with one ROI per mask, drawn on ``reference``.

        Parameters
        ----------
        masks : mapping of name -> array_like, each shaped ``reference.grid.shape``
        reference : Image
            The image (normally the planning CT) the masks are on; it is also
            what :meth:`save` references.
        **kwargs
            ``color``/``type`` per ROI are not taken here; use :meth:`add`.

        Returns
        -------
        StructureSet
        """
        out = cls(frame_of_reference_uid=reference.grid.frame_of_reference_uid,
                  referenced_series_uid=getattr(reference, "series_instance_uid", None), **kwargs)
        out.reference = reference
        for name, m in masks.items():
            out.add(name, m, reference.grid)
        return out

    def save(
        self,
        path: Any,
        reference: Any = None,
        *,
        label: str | None = None,
        overwrite: bool = False,
    ) -> Any:
        """Write a DICOM RT Structure Set referencing ``reference``'s series.

        Parameters
        ----------
        path : path-like
        reference : Image, optional
            The image series the ROIs are drawn on (normally ``case.ct``), read
            by rtkit so that it knows the slices' SOP Instance UIDs; default:
            the reference given to :meth:`from_masks`.
        label : str, optional
            StructureSetLabel (default: this set's label, else "RTKIT").
        overwrite : bool
            Replace an existing file (default: refuse).

        Returns
        -------
        Path

        Notes
        -----
        The file holds the Patient, Study, RT Series, Frame of Reference,
        Structure Set, ROI Contour and RT ROI Observations modules, with a
        ContourImageSequence item per contour naming the CT slice on its plane,
        and is written atomically (temporary file + rename).  Files written by
        rtkit pass ``dciodvfy`` with 0 errors (tested).
        """
        from .io.rtstruct_write import build_rtstruct, write_dataset

        ref = reference if reference is not None else getattr(self, "reference", None)
        if ref is None:
            raise GeometryError("save() needs reference=, the image (e.g. case.ct) the ROIs are drawn on")
        rois = [
            {
                "number": s.number,
                "name": s.name,
                "color": s.color,
                "type": s.type or "",
                "contours": [(c.geometric_type, np.asarray(c.points, float), None) for c in s.contours],
            }
            for s in self._structures
        ]
        ds = build_rtstruct(rois, ref, label=(label or self.label or "RTKIT")[:16])
        return write_dataset(ds, path, overwrite=overwrite)

    # ------------------------------------------------------------- masks
    def transformed(self, matrix: ArrayLike, frame_of_reference_uid: str | None = None) -> StructureSet:
        """Every ROI mapped by a 4x4 matrix or a :class:`rtkit.Registration` (moving -> fixed).

        Parameters
        ----------
        matrix : (4, 4) array_like or Registration
            Maps this set's patient coordinates (mm) to the target frame's.
        frame_of_reference_uid : str, optional
            The target frame (default: a Registration's fixed frame, else none).

        Returns
        -------
        StructureSet
            A new set; contour references to image slices are dropped (the
            contours no longer lie on those slices).
        """
        if frame_of_reference_uid is None:
            fixed = getattr(matrix, "fixed", None)
            frame_of_reference_uid = getattr(fixed, "frame_of_reference_uid", None)
        rois = [s.transformed(matrix, frame_of_reference_uid) for s in self._structures]
        for roi in rois:
            for c in roi.contours:
                c.referenced_sop_instance_uid = None
        return StructureSet(rois, label=self.label, frame_of_reference_uid=frame_of_reference_uid)

    def mask(self, name: str, grid: Grid, fractional: bool = False, **kwargs: Any) -> NDArray:
        """``self[name].mask(grid, fractional)``."""
        return self[name].mask(grid, fractional, **kwargs)

    def masks(self, grid: Grid, fractional: bool = False, names: list[str] | None = None, **kwargs: Any) -> dict[str, NDArray]:
        """Masks of every ROI (or of ``names``) on ``grid``, by name.  Empty ROIs give all-False masks."""
        return {n: self[n].mask(grid, fractional, **kwargs) for n in (names or self.names)}

    def summary(self) -> str:
        lines = [f"Structure set {self.label or ''} ({len(self)} ROIs)"]
        for s in self._structures:
            kind = s.type or "-"
            vol = "empty" if s.is_empty else f"{s.volume:.2f} cm3"
            lines.append(f"  {s.number:>3} {s.name:<24} {kind:<10} {vol}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Notebook summary: number, name, colour swatch, type, volume (cm3), contours of each ROI."""
        from . import _html

        rows = [
            (_html.cell(s.number), _html.cell(s.name), _html.swatch(s.color), _html.cell(s.type or "-"),
             _html.cell("empty" if s.is_empty else f"{s.volume:.2f}"), _html.cell(len(s.contours)))
            for s in self._structures
        ]
        body = _html.table(("#", "name", "colour", "type", "volume (cm3)", "contours"), rows)
        return _html.summary("StructureSet", f"{self.label or ''} ({len(self)} ROIs)".strip(), body)

    def __repr__(self) -> str:
        return f"StructureSet({self.label!r}, {len(self)} ROIs: {', '.join(self.names[:8])}{'...' if len(self) > 8 else ''})"

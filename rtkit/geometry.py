"""One geometry model for every image, mask, dose and DVH grid.

A :class:`Grid` is a regular 3-D lattice of voxel centres in DICOM patient
coordinates (LPS, mm).  Its 4x4 ``affine`` maps the homogeneous index
``(slice, row, column, 1)`` to ``(x, y, z, 1)``.  Orientation comes only
from the affine (built from ImageOrientationPatient and the measured slice
step), so head-first, feet-first, prone, decubitus and oblique series all
take the same code path: there are no orientation lookup tables.

Index conventions
-----------------
``shape = (slices, rows, columns)``.  For a DICOM image with position
``P`` (ImagePositionPatient of the first slice), row direction cosine ``X``
(first triplet of ImageOrientationPatient, the direction of increasing
column index), column direction cosine ``Y`` (second triplet, increasing
row index), PixelSpacing ``(dr, dc)`` (row spacing, column spacing) and
slice step vector ``S`` (from one slice's position to the next)::

    world(k, r, c) = P + k * S + r * dr * Y + c * dc * X

so the affine columns are ``[S, dr * Y, dc * X, P]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import GeometryError

__all__ = ["Grid"]

_ORTHO_TOL = 1e-4


def _as_points(xyz: ArrayLike, name: str) -> NDArray[np.float64]:
    pts = np.asarray(xyz, dtype=np.float64)
    if pts.ndim == 0 or pts.shape[-1] != 3:
        raise GeometryError(
            f"{name} must have a last axis of length 3, got an array of shape {pts.shape}"
        )
    return pts


def _affine_apply(m: NDArray[np.float64], pts: NDArray[np.float64]) -> NDArray[np.float64]:
    """``pts @ m[:3, :3].T + m[:3, 3]`` without BLAS: a 3x3 product on many points is memory-bound,
    and BLAS threads started for it only spin against the caller's other work."""
    return pts[..., 0:1] * m[:3, 0] + pts[..., 1:2] * m[:3, 1] + pts[..., 2:3] * m[:3, 2] + m[:3, 3]


class Grid:
    """A regular 3-D grid in DICOM patient coordinates (LPS, mm).

    Parameters
    ----------
    shape : tuple of 3 int
        ``(slices, rows, columns)``, each >= 1.
    affine : array_like, shape (4, 4)
        Maps homogeneous index ``(slice, row, column, 1)`` to patient
        coordinates ``(x, y, z, 1)`` in mm (LPS).  Must be finite, invertible
        and have last row ``(0, 0, 0, 1)``.  Axes need not be orthogonal (a
        gantry-tilted CT is a sheared grid), see :attr:`is_orthogonal`.
    frame_of_reference_uid : str, optional
        The DICOM FrameOfReferenceUID the coordinates refer to.

    Raises
    ------
    GeometryError
        If the shape or affine is invalid.

    Examples
    --------
    >>> g = Grid.from_spacing((2, 3, 4), spacing=(2.5, 1.0, 1.0), origin=(-10, -20, 30))
    >>> g.index_to_world((1, 2, 3)).tolist()
    [-7.0, -18.0, 32.5]
    >>> g.world_to_index((-7.0, -18.0, 32.5)).tolist()
    [1.0, 2.0, 3.0]
    """

    def __init__(
        self,
        shape: Sequence[int],
        affine: ArrayLike,
        frame_of_reference_uid: str | None = None,
    ) -> None:
        try:
            shp = tuple(int(s) for s in shape)
        except (TypeError, ValueError) as exc:
            raise GeometryError(f"Grid shape must be 3 integers, got {shape!r}") from exc
        if len(shp) != 3 or any(s < 1 for s in shp) or any(s != v for s, v in zip(shp, shape, strict=True)):
            raise GeometryError(
                f"Grid shape must be 3 positive integers (slices, rows, columns), got {shape!r}"
            )
        aff = np.array(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise GeometryError(f"Grid affine must be 4x4, got shape {aff.shape}")
        if not np.all(np.isfinite(aff)):
            raise GeometryError(f"Grid affine contains NaN or infinity:\n{aff}")
        if not np.array_equal(aff[3], [0.0, 0.0, 0.0, 1.0]):
            raise GeometryError(f"Grid affine last row must be (0, 0, 0, 1), got {aff[3]}")
        steps = np.linalg.norm(aff[:3, :3], axis=0)
        if np.any(steps <= 0):
            raise GeometryError(f"Grid affine has a zero-length axis (spacings {steps} mm)")
        unit = aff[:3, :3] / steps
        if abs(np.linalg.det(unit)) < 1e-6:
            raise GeometryError(
                f"Grid affine axes are (nearly) parallel; the grid would be degenerate:\n{aff}"
            )
        aff.setflags(write=False)
        self._shape = shp
        self._affine = aff
        self.frame_of_reference_uid = frame_of_reference_uid or None

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_spacing(
        cls,
        shape: Sequence[int],
        spacing: Sequence[float],
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: ArrayLike | None = None,
        frame_of_reference_uid: str | None = None,
    ) -> Grid:
        """Build a grid from spacing, origin and direction.

        Parameters
        ----------
        shape : tuple of 3 int
            ``(slices, rows, columns)``.
        spacing : tuple of 3 float
            Step along each index axis in mm, same order as ``shape``.
        origin : tuple of 3 float
            LPS position (mm) of voxel ``(0, 0, 0)``.
        direction : array_like, shape (3, 3), optional
            Column ``i`` is the unit LPS direction of index axis ``i``.  The
            default maps (slice, row, column) to (z, y, x), the axial
            head-first-supine layout.
        frame_of_reference_uid : str, optional
        """
        d = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float) if direction is None else (
            np.asarray(direction, dtype=np.float64)
        )
        if d.shape != (3, 3):
            raise GeometryError(f"direction must be 3x3, got shape {d.shape}")
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.shape != (3,) or np.any(~np.isfinite(sp)) or np.any(sp <= 0):
            raise GeometryError(f"spacing must be 3 positive numbers (mm), got {spacing!r}")
        aff = np.eye(4)
        aff[:3, :3] = d / np.linalg.norm(d, axis=0) * sp
        aff[:3, 3] = np.asarray(origin, dtype=np.float64)
        return cls(shape, aff, frame_of_reference_uid)

    @classmethod
    def from_dicom(
        cls,
        position: Sequence[float],
        orientation: Sequence[float],
        pixel_spacing: Sequence[float],
        shape: Sequence[int],
        slice_step: float | Sequence[float],
        frame_of_reference_uid: str | None = None,
    ) -> Grid:
        """Build a grid from DICOM image-plane attributes.

        Parameters
        ----------
        position : 3 floats
            ImagePositionPatient of the first slice (mm, LPS).
        orientation : 6 floats
            ImageOrientationPatient (row cosine, then column cosine).
        pixel_spacing : 2 floats
            PixelSpacing ``(row spacing, column spacing)`` in mm.
        shape : 3 ints
            ``(slices, rows, columns)``.
        slice_step : float or 3 floats
            A float is the signed step (mm) along the slice normal
            ``row cosine x column cosine``; three floats are the full step
            vector between consecutive slice positions (which may be
            oblique to the normal, as for a gantry-tilted CT).
        frame_of_reference_uid : str, optional
        """
        iop = np.asarray(orientation, dtype=np.float64)
        if iop.shape != (6,) or not np.all(np.isfinite(iop)):
            raise GeometryError(f"ImageOrientationPatient must be 6 numbers, got {orientation!r}")
        row_cos, col_cos = iop[:3], iop[3:]
        nr, nc = np.linalg.norm(row_cos), np.linalg.norm(col_cos)
        if nr == 0 or nc == 0:
            raise GeometryError(f"ImageOrientationPatient has a zero vector: {orientation!r}")
        row_cos, col_cos = row_cos / nr, col_cos / nc
        if abs(row_cos @ col_cos) > 1e-3:
            raise GeometryError(
                f"ImageOrientationPatient row and column cosines are not orthogonal "
                f"(dot product {row_cos @ col_cos:.2e}): {orientation!r}"
            )
        ps = np.asarray(pixel_spacing, dtype=np.float64)
        if ps.shape != (2,) or not np.all(np.isfinite(ps)) or np.any(ps <= 0):
            raise GeometryError(f"PixelSpacing must be 2 positive numbers, got {pixel_spacing!r}")
        step = np.asarray(slice_step, dtype=np.float64)
        if step.ndim == 0:
            step = np.cross(row_cos, col_cos) * float(step)
        if step.shape != (3,):
            raise GeometryError(f"slice_step must be a number or 3 numbers, got {slice_step!r}")
        aff = np.eye(4)
        aff[:3, 0] = step
        aff[:3, 1] = col_cos * ps[0]
        aff[:3, 2] = row_cos * ps[1]
        aff[:3, 3] = np.asarray(position, dtype=np.float64)
        return cls(shape, aff, frame_of_reference_uid)

    # ---------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return self._shape  # type: ignore[return-value]

    @property
    def affine(self) -> NDArray[np.float64]:
        """4x4 float64 index-to-LPS matrix (read-only)."""
        return self._affine

    @cached_property
    def spacing(self) -> NDArray[np.float64]:
        """Step length (mm) along each index axis, order ``(slice, row, column)``."""
        return np.linalg.norm(self._affine[:3, :3], axis=0)

    @property
    def origin(self) -> NDArray[np.float64]:
        """LPS position (mm) of the centre of voxel ``(0, 0, 0)``."""
        return self._affine[:3, 3].copy()

    @cached_property
    def direction(self) -> NDArray[np.float64]:
        """3x3 matrix whose column ``i`` is the unit LPS direction of index axis ``i``."""
        return self._affine[:3, :3] / self.spacing

    @cached_property
    def inverse_affine(self) -> NDArray[np.float64]:
        """4x4 LPS-to-index matrix."""
        inv = np.linalg.inv(self._affine)
        inv[3] = (0.0, 0.0, 0.0, 1.0)
        inv.setflags(write=False)
        return inv

    @property
    def is_orthogonal(self) -> bool:
        """True when the three index axes are mutually perpendicular."""
        d = self.direction
        return bool(np.allclose(d.T @ d, np.eye(3), atol=_ORTHO_TOL))

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self._shape))

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm3."""
        return float(abs(np.linalg.det(self._affine[:3, :3])) / 1000.0)

    # -------------------------------------------------------------- transforms
    def index_to_world(self, idx: ArrayLike) -> NDArray[np.float64]:
        """Map (fractional) indices to LPS coordinates.

        Parameters
        ----------
        idx : array_like, shape (..., 3)
            ``(slice, row, column)`` indices; need not be integers.

        Returns
        -------
        ndarray, shape (..., 3), float64
            LPS coordinates in mm.
        """
        i = _as_points(idx, "idx")
        return _affine_apply(self._affine, i)

    def world_to_index(self, xyz: ArrayLike) -> NDArray[np.float64]:
        """Map LPS coordinates (mm) to fractional ``(slice, row, column)`` indices.

        Parameters
        ----------
        xyz : array_like, shape (..., 3)

        Returns
        -------
        ndarray, shape (..., 3), float64
        """
        p = _as_points(xyz, "xyz")
        return _affine_apply(self.inverse_affine, p)

    def centers(self) -> NDArray[np.float64]:
        """LPS coordinates (mm) of every voxel centre.

        Computed on each call (not stored), so memory is only spent when
        asked for.

        Returns
        -------
        ndarray, shape (slices, rows, columns, 3), float64
        """
        k, r, c = (np.arange(n, dtype=np.float64) for n in self._shape)
        a = self._affine
        return (
            a[:3, 3]
            + k[:, None, None, None] * a[:3, 0]
            + r[None, :, None, None] * a[:3, 1]
            + c[None, None, :, None] * a[:3, 2]
        )

    def corners(self) -> NDArray[np.float64]:
        """LPS coordinates (mm) of the 8 outer corners of the voxel box.

        The box extends half a voxel beyond the first and last centres.

        Returns
        -------
        ndarray, shape (8, 3), float64
        """
        lo = np.full(3, -0.5)
        hi = np.asarray(self._shape, dtype=np.float64) - 0.5
        idx = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        return self.index_to_world(idx)

    @property
    def bounds(self) -> NDArray[np.float64]:
        """Axis-aligned LPS bounding box of the voxel box (mm).

        Returns
        -------
        ndarray, shape (2, 3), float64
            ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``, including the
            half voxel around the outer centres.
        """
        c = self.corners()
        return np.stack([c.min(axis=0), c.max(axis=0)])

    def contains(self, xyz: ArrayLike, tolerance: float = 1e-6) -> NDArray[np.bool_]:
        """Whether points lie inside the voxel box of the grid.

        Parameters
        ----------
        xyz : array_like, shape (..., 3)
            LPS coordinates in mm.
        tolerance : float
            Slack in index units.

        Returns
        -------
        ndarray of bool, shape (...)
        """
        idx = self.world_to_index(xyz)
        hi = np.asarray(self._shape, dtype=np.float64) - 0.5
        return np.all((idx >= -0.5 - tolerance) & (idx <= hi + tolerance), axis=-1)

    # ----------------------------------------------------------------- helpers
    def isclose(self, other: Grid, atol: float = 1e-4) -> bool:
        """Same shape and affine within ``atol`` mm (frame UIDs not compared)."""
        return self._shape == other._shape and bool(
            np.allclose(self._affine, other._affine, rtol=0.0, atol=atol)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return (
            self._shape == other._shape
            and np.array_equal(self._affine, other._affine)
            and self.frame_of_reference_uid == other.frame_of_reference_uid
        )

    def __hash__(self) -> int:
        return hash((self._shape, self._affine.tobytes(), self.frame_of_reference_uid))

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.4g}" for s in self.spacing)
        org = ", ".join(f"{o:.4g}" for o in self._affine[:3, 3])
        return f"Grid(shape={self._shape}, spacing=({sp}) mm, origin=({org}) mm LPS)"

    def __reduce__(self):
        return (Grid, (self._shape, np.array(self._affine), self.frame_of_reference_uid))

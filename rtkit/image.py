"""Image volumes on an exact patient-coordinate grid."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from ._atomic import atomic_path
from ._optional import require
from .errors import GeometryError
from .geometry import Grid

__all__ = ["Image"]

log = logging.getLogger(__name__)

#: Value used outside the source image when resampling, by modality.
DEFAULT_FILL = {"CT": -1000.0}

# LPS -> RAS: negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Points are processed in chunks of this many to bound memory.
_CHUNK = 1 << 20


def _transform_matrix(transform: Any) -> NDArray[np.float64] | None:
    if transform is None:
        return None
    m = getattr(transform, "matrix", transform)
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise GeometryError(f"transform must be a 4x4 matrix or have one as .matrix, got shape {m.shape}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise GeometryError("transform matrix is singular and cannot be inverted")
    return m


def interpolate(
    array: NDArray[Any],
    idx: NDArray[np.float64],
    order: int = 1,
    fill: float = np.nan,
    prefiltered: bool = False,
) -> NDArray[Any]:
    """Interpolate ``array`` at fractional indices.

    Points inside the voxel box (index in ``[-0.5, n - 0.5]`` on every axis)
    get interpolated values, clamped to the edge value in the outer half
    voxel; points outside get ``fill``.

    Parameters
    ----------
    array : ndarray, shape (S, R, C)
    idx : ndarray, shape (N, 3), float64
        ``(slice, row, column)`` indices.
    order : int
        Spline order, 0 (nearest) to 5; 1 is trilinear.
    fill : float
    prefiltered : bool
        ``array`` already holds spline coefficients (orders > 1).

    Returns
    -------
    ndarray, shape (N,)
    """
    shape = np.asarray(array.shape, dtype=np.float64)
    tol = 1e-6
    inside = np.all((idx >= -0.5 - tol) & (idx <= shape - 0.5 + tol), axis=1)
    if order == 0:
        out_dtype = array.dtype
        ii = np.clip(np.floor(idx + 0.5).astype(np.intp), 0, np.asarray(array.shape) - 1)
        out = array[ii[:, 0], ii[:, 1], ii[:, 2]]
        if not inside.all():
            out = out.astype(np.result_type(out_dtype, np.min_scalar_type(fill)), copy=True)
            out[~inside] = fill
        return out
    out_dtype = np.result_type(array.dtype, np.float32)
    coords = np.clip(idx, 0.0, shape - 1.0).T
    out = ndimage.map_coordinates(
        array, coords, order=order, mode="nearest", prefilter=not prefiltered, output=out_dtype
    )
    out[~inside] = fill
    return out


class Image:
    """A 3-D image on a :class:`~rtkit.Grid`.

    Parameters
    ----------
    array : ndarray or callable
        Voxel values indexed like ``grid.shape`` = ``(slices, rows, columns)``.
        CT values are Hounsfield units; MR/PET carry their rescaled units
        (see ``meta["units"]``).  A zero-argument callable returning the
        array makes the image lazy: pixel data are read on first access.
    grid : Grid
    modality : str, optional
        DICOM modality (``"CT"``, ``"MR"``, ``"PT"``, ...).
    series_instance_uid : str, optional
    meta : mapping, optional
        A few header values (patient ID, series description, units, ...).
    """

    def __init__(
        self,
        array: ArrayLike | Callable[[], NDArray[Any]],
        grid: Grid,
        modality: str | None = None,
        *,
        series_instance_uid: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be an rtkit.Grid, got {type(grid).__name__}")
        self.grid = grid
        self.modality = modality
        self.series_instance_uid = series_instance_uid
        self.meta: dict[str, Any] = dict(meta or {})
        self._array: NDArray[Any] | None = None
        self._loader: Callable[[], NDArray[Any]] | None = None
        if callable(array):
            self._loader = array
        else:
            self._array = self._check(np.asarray(array))

    def _check(self, arr: NDArray[Any]) -> NDArray[Any]:
        if arr.shape != self.grid.shape:
            raise GeometryError(
                f"array shape {arr.shape} does not match grid shape {self.grid.shape} "
                "(slices, rows, columns)"
            )
        return arr

    @property
    def array(self) -> NDArray[Any]:
        """Voxel values, shape ``grid.shape``; loaded on first access if lazy."""
        if self._array is None:
            assert self._loader is not None
            self._array = self._check(np.asarray(self._loader()))
            self._loader = None
        return self._array

    @array.setter
    def array(self, value: ArrayLike) -> None:
        self._array = self._check(np.asarray(value))
        self._loader = None

    @property
    def is_loaded(self) -> bool:
        """Whether pixel data are in memory."""
        return self._array is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return self.grid.shape

    @property
    def frame_of_reference_uid(self) -> str | None:
        return self.grid.frame_of_reference_uid

    @property
    def default_fill(self) -> float:
        """Value used outside the image when resampling: -1000 HU for CT, else 0."""
        return DEFAULT_FILL.get(self.modality or "", 0.0)

    def _like(self, array: NDArray[Any], grid: Grid) -> Image:
        """A new image of the same kind and metadata on another grid."""
        return Image(
            array, grid, self.modality, series_instance_uid=self.series_instance_uid, meta=self.meta
        )

    # ------------------------------------------------------------- sampling
    def sample(
        self, points_lps: ArrayLike, order: int = 1, fill: float = np.nan
    ) -> NDArray[Any]:
        """Interpolate the image at arbitrary patient-coordinate points.

        Parameters
        ----------
        points_lps : array_like, shape (..., 3)
            LPS coordinates in mm (same frame of reference as the image).
        order : int
            0 nearest, 1 trilinear (default), up to 5 (spline).
        fill : float
            Value for points outside the voxel box (default NaN).

        Returns
        -------
        ndarray, shape (...)
            float32 (float64 for float64 images) for ``order >= 1``.
        """
        pts = np.asarray(points_lps, dtype=np.float64)
        idx = self.grid.world_to_index(pts).reshape(-1, 3)
        arr = self._coefficients(order)
        out = [
            interpolate(arr, idx[i : i + _CHUNK], order, fill, prefiltered=order > 1)
            for i in range(0, max(len(idx), 1), _CHUNK)
        ]
        return np.concatenate(out).reshape(pts.shape[:-1])

    def _coefficients(self, order: int) -> NDArray[Any]:
        if not 0 <= order <= 5:
            raise ValueError(f"interpolation order must be 0..5, got {order}")
        if order > 1:
            return ndimage.spline_filter(self.array, order=order, mode="nearest", output=np.float64)
        return self.array

    def resample(
        self,
        grid: Grid,
        transform: Any = None,
        order: int = 1,
        fill: float | None = None,
    ) -> Image:
        """This image on another grid.

        Parameters
        ----------
        grid : Grid
            The target grid.
        transform : (4, 4) array_like or Registration, optional
            Maps a point in *this* image's patient coordinates to the target
            grid's patient coordinates (the moving -> fixed direction of
            DICOM Spatial Registration and :class:`rtkit.Registration`).
            Without it both must be in the same frame of reference.
        order : int
            0 nearest, 1 trilinear (default), up to 5.
        fill : float, optional
            Value outside this image's voxel box; default
            :attr:`default_fill` (-1000 HU for CT, 0 otherwise).

        Returns
        -------
        Image
            On ``grid``; float32 values for ``order >= 1`` (float64 if this
            image is float64), this image's dtype for ``order == 0``.

        Raises
        ------
        FrameOfReferenceError
            If no transform is given and the frames of reference differ.
        """
        from .errors import FrameOfReferenceError

        m = _transform_matrix(transform)
        a, b = self.grid.frame_of_reference_uid, grid.frame_of_reference_uid
        if m is None and a and b and a != b:
            raise FrameOfReferenceError(
                f"cannot resample: this image is in frame of reference {a} and the target grid "
                f"in {b}; pass the registration that links them as transform="
            )
        fill_value = self.default_fill if fill is None else float(fill)
        if m is None and grid.isclose(self.grid, atol=1e-6):
            return self._like(self.array.copy(), grid)
        # target index -> source index
        full = self.grid.inverse_affine @ (np.linalg.inv(m) if m is not None else np.eye(4)) @ grid.affine
        arr = self._coefficients(order)
        out_dtype = arr.dtype if order == 0 else np.result_type(self.array.dtype, np.float32)
        if order == 0 and not np.can_cast(np.min_scalar_type(fill_value), out_dtype):
            out_dtype = np.result_type(out_dtype, np.float32)
        out = np.empty(grid.shape, dtype=out_dtype)
        rows, cols = grid.shape[1:]
        rr, cc = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
        plane = rr.reshape(-1, 1) * full[:3, 1] + cc.reshape(-1, 1) * full[:3, 2] + full[:3, 3]
        for k in range(grid.shape[0]):
            idx = plane + k * full[:3, 0]
            out[k] = interpolate(arr, idx, order, fill_value, prefiltered=order > 1).reshape(rows, cols)
        return self._like(out, grid)

    # ------------------------------------------------------------ exporting
    def to_nifti(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the image as NIfTI-1 (``.nii`` or ``.nii.gz``).

        The only place rtkit converts to RAS: the data are stored with axes
        ``(column, row, slice)`` and the affine is ``diag(-1, -1, 1, 1)``
        times the LPS affine with its first three columns reordered, so every
        voxel keeps its world position.  Needs the ``nifti`` extra (nibabel).

        Parameters
        ----------
        path : path-like
        overwrite : bool
            Replace an existing file (default: refuse).

        Returns
        -------
        Path
        """
        nib = require("nibabel", "nifti", "Writing NIfTI")
        data = np.ascontiguousarray(np.transpose(self.array, (2, 1, 0)))
        if data.dtype == np.bool_:
            data = data.astype(np.uint8)
        affine = _LPS_TO_RAS @ self.grid.affine[:, [2, 1, 0, 3]]
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        with atomic_path(path, overwrite=overwrite) as tmp:
            nib.save(img, str(tmp))
        return Path(path)

    def __repr__(self) -> str:
        kind = self.modality or "image"
        loaded = "" if self.is_loaded else ", not loaded"
        return f"Image({kind}, {self.grid!r}{loaded})"

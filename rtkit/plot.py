"""Figures for case review: slices with contours and dose, DVHs, fusion, MIPs, gamma.

Every function takes ``ax=None`` (a new figure is made when it is None) and
returns the matplotlib ``Axes`` it drew on.  matplotlib is optional
(``pip install 'rtkit[plot]'``): it is imported inside the functions, so
``import rtkit`` and ``import rtkit.plot`` never need it.

Conventions (docs/plot.md)
--------------------------
Views are **reformatted in patient coordinates** (LPS, mm): the displayed
plane is a patient-aligned 2-D grid on which the image is resampled
(trilinear), so the picture is the same whatever the acquisition
(head-first, feet-first, prone, decubitus, oblique).  Radiological
convention, as seen from the patient's feet (axial) or front (coronal) or
left (sagittal):

========  =====================  ===========================  ===============
plane     horizontal axis        vertical axis                position (mm)
========  =====================  ===========================  ===============
axial     x: R on the left, L    y: A at the top, P below     z (LPS)
coronal   x: R on the left, L    z: S (head) at the top       y (LPS)
sagittal  y: A on the left, P    z: S (head) at the top       x (LPS)
========  =====================  ===========================  ===============

The Axes' data coordinates are those patient coordinates in mm (the tick
labels are LPS millimetres) and the aspect is equal, so the picture has the
physical aspect ratio.  The letters on the image edges are derived from the
displayed plane's axis directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._optional import require
from .dose import Dose
from .errors import GeometryError, MetricError, RTKitError
from .geometry import Grid
from .image import Image
from .structures import Structure, StructureSet

__all__ = ["WINDOWS", "checkerboard", "dvh", "fusion", "gamma", "mip", "orientation_letters", "show_slice"]

#: CT display windows ``(centre, width)`` in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}

_PLANES = ("axial", "coronal", "sagittal")
# per plane: u (screen right), w (the Axes' vertical data axis), whether w points down the screen
_AXES = {
    "axial": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), True),
    "coronal": (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), False),
    "sagittal": (np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]), False),
}
_AXIS_NAMES = "xyz"
_MAX_PIXELS = 1024
_MIP_CHUNK_POINTS = 1 << 22  # points resampled at a time by mip()


def _plt() -> Any:
    return require("matplotlib.pyplot", "plot", "rtkit.plot")


def _new_ax(ax: Any) -> Any:
    if ax is not None:
        return ax
    plt = _plt()
    _, new = plt.subplots(figsize=(6, 6))
    return new


# ------------------------------------------------------------------ orientation
def orientation_letters(vector: Sequence[float], threshold: float = 0.1) -> str:
    """Patient-direction letters of an LPS direction, largest component first.

    Parameters
    ----------
    vector : 3 floats
        A direction in LPS patient coordinates.
    threshold : float
        Components whose magnitude (of the unit vector) is below this are
        left out.

    Returns
    -------
    str
        ``"L"``/``"R"`` for +x/-x, ``"P"``/``"A"`` for +y/-y, ``"S"``/``"I"``
        for +z/-z, e.g. ``"L"`` or, for an oblique direction, ``"LA"``.

    Examples
    --------
    >>> orientation_letters([1, 0, 0]), orientation_letters([0, 0, -1]), orientation_letters([0.9, -0.4, 0])
    ('L', 'I', 'LA')
    """
    v = np.asarray(vector, dtype=np.float64)
    n = np.linalg.norm(v)
    if v.shape != (3,) or n == 0:
        raise GeometryError(f"an orientation needs a non-zero 3-vector, got {vector!r}")
    v = v / n
    out = []
    for i in np.argsort(-np.abs(v), kind="stable"):
        if abs(v[i]) >= threshold:
            out.append(("LPS" if v[i] > 0 else "RAI")[i])
    return "".join(out)


@dataclass
class _Plane:
    """A patient-aligned 2-D display grid (one slice of a 3-D :class:`Grid`)."""

    name: str
    u: NDArray[np.float64]  # screen right
    w: NDArray[np.float64]  # data vertical axis
    down: bool  # w points down the screen
    normal: NDArray[np.float64]
    position: float  # mm along normal
    a_range: tuple[float, float]  # along u, mm (pixel edges)
    b_range: tuple[float, float]  # along w, mm (pixel edges)
    shape: tuple[int, int]  # rows, columns

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``imshow`` extent (left, right, bottom, top) for ``origin="upper"``."""
        a0, a1 = self.a_range
        b0, b1 = self.b_range
        return (a0, a1, b1, b0) if self.down else (a0, a1, b0, b1)

    def grid(self, frame_of_reference_uid: str | None = None, depth: tuple[float, float, int] | None = None) -> Grid:
        """The display plane as a 3-D Grid of one slice (or ``depth = (start, step, n)`` slices along the normal)."""
        rows, cols = self.shape
        a0, a1 = self.a_range
        b0, b1 = self.b_range
        da, db = (a1 - a0) / cols, (b1 - b0) / rows
        v = self.w if self.down else -self.w
        b_first = b0 + db / 2 if self.down else b1 - db / 2
        t0, dt, n = (self.position, 1.0, 1) if depth is None else depth
        aff = np.eye(4)
        aff[:3, 0] = self.normal * dt
        aff[:3, 1] = v * db
        aff[:3, 2] = self.u * da
        aff[:3, 3] = (a0 + da / 2) * self.u + b_first * self.w + t0 * self.normal
        return Grid((n, rows, cols), aff, frame_of_reference_uid)

    def to_data(self, xyz: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Axes data coordinates (mm) of LPS points."""
        p = np.asarray(xyz, dtype=np.float64)
        return p @ self.u, p @ self.w

    def labels(self) -> dict[str, str]:
        top = -self.w if self.down else self.w
        return {"left": orientation_letters(-self.u), "right": orientation_letters(self.u),
                "top": orientation_letters(top), "bottom": orientation_letters(-top)}


def _step(grid: Grid, vec: NDArray[np.float64]) -> float:
    """Spacing of the grid axis best aligned with ``vec`` (mm)."""
    return float(grid.spacing[int(np.argmax(np.abs(grid.direction.T @ vec)))])


def _span(lo: float, hi: float, step: float) -> tuple[tuple[float, float], int]:
    n = max(1, int(round((hi - lo) / step)))
    if n > _MAX_PIXELS:
        n = _MAX_PIXELS
    return (lo, hi), n


def _plane(grid: Grid, plane: str, position: float | None) -> _Plane:
    if plane not in _PLANES:
        raise ValueError(f"plane must be one of {_PLANES}, not {plane!r}")
    u, w, down = _AXES[plane]
    normal = np.cross(u, w)  # axial +z, coronal -y, sagittal +x
    normal = normal * np.sign(normal.sum())  # the positive LPS axis: position is that coordinate
    corners = grid.corners()
    pa, pb, pn = corners @ u, corners @ w, corners @ normal
    if position is None:
        position = float((pn.min() + pn.max()) / 2)
    else:
        position = float(position)
        tol = 1e-6
        if not pn.min() - tol <= position <= pn.max() + tol:
            axis = _AXIS_NAMES[int(np.argmax(np.abs(normal)))]
            raise GeometryError(
                f"{plane} slice at {axis} = {position:g} mm lies outside the image, which spans "
                f"{axis} = {pn.min():g} .. {pn.max():g} mm (LPS)"
            )
    a_range, na = _span(float(pa.min()), float(pa.max()), _step(grid, u))
    b_range, nb = _span(float(pb.min()), float(pb.max()), _step(grid, w))
    return _Plane(plane, u, w, down, normal, position, a_range, b_range, (nb, na))


def _draw_labels(ax: Any, plane: _Plane) -> None:
    import matplotlib.patheffects as pe

    style = {"color": "white", "fontsize": 11, "fontweight": "bold", "transform": ax.transAxes,
             "path_effects": [pe.withStroke(linewidth=2, foreground="black")], "gid": "rtkit-orientation"}
    lab = plane.labels()
    ax.text(0.02, 0.5, lab["left"], ha="left", va="center", **style)
    ax.text(0.98, 0.5, lab["right"], ha="right", va="center", **style)
    ax.text(0.5, 0.98, lab["top"], ha="center", va="top", **style)
    ax.text(0.5, 0.02, lab["bottom"], ha="center", va="bottom", **style)


def _set_axes(ax: Any, plane: _Plane) -> None:
    ax.set_aspect("equal")
    ax.set_xlabel(f"{_AXIS_NAMES[int(np.argmax(np.abs(plane.u)))]} (mm, LPS)")
    ax.set_ylabel(f"{_AXIS_NAMES[int(np.argmax(np.abs(plane.w)))]} (mm, LPS)")


# ------------------------------------------------------------------ inputs
def _is_case(obj: Any) -> bool:
    return not isinstance(obj, Image) and hasattr(obj, "ct") and hasattr(obj, "structures")


def _image_of(obj: Any, what: str) -> Image:
    img = obj.ct if _is_case(obj) else obj
    if not isinstance(img, Image):
        raise RTKitError(f"{what} must be an rtkit Image or Case, got {type(obj).__name__}")
    return img


def _window(image: Image, window: str | tuple[float, float] | None, values: NDArray[Any]) -> tuple[float, float]:
    """(vmin, vmax) of a display window."""
    if window is None:
        window = "soft_tissue" if image.modality == "CT" else "auto"
    if isinstance(window, str):
        if window == "auto":
            finite = values[np.isfinite(values)]
            if not finite.size:
                return 0.0, 1.0
            lo, hi = np.percentile(finite, [0.5, 99.5])
            return float(lo), float(hi if hi > lo else lo + 1.0)
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {sorted(WINDOWS)}, 'auto' or (centre, width), not {window!r}")
        window = WINDOWS[window]
    c, w = (float(x) for x in window)
    if not w > 0:
        raise ValueError(f"window width must be positive, got {w}")
    return c - w / 2, c + w / 2


def _structures(obj: Any, structures: Any) -> list[Structure]:
    """The Structures to draw."""
    case_set = obj.structures if _is_case(obj) else None
    if structures is None:
        return [s for s in case_set.structures] if case_set is not None else []
    if structures is False:
        return []
    if isinstance(structures, (Structure, str)):
        structures = [structures]
    if isinstance(structures, StructureSet):
        return structures.structures
    if isinstance(structures, Mapping):
        structures = list(structures.values())
    out = []
    for s in structures:
        if isinstance(s, str):
            if case_set is None:
                raise RTKitError(f"structure name {s!r} given but no Case to look it up in; "
                                 "pass Structure objects or a StructureSet")
            out.append(case_set[s])
        elif isinstance(s, Structure):
            out.append(s)
        else:
            raise RTKitError(f"structures must be Structures, names or a StructureSet, got {type(s).__name__}")
    return out


def _dose(obj: Any, dose: Any) -> Dose | Image | None:
    if dose is None or dose is False:
        return None
    if dose is True:
        if not _is_case(obj):
            raise RTKitError("dose=True needs a Case; pass the Dose itself with an Image")
        d = obj.dose
        if d is None:
            raise RTKitError("dose=True but the case has no RT Dose")
        return d
    if not isinstance(dose, Image):
        raise RTKitError(f"dose must be a Dose, True or None, got {type(dose).__name__}")
    return dose


def _on_plane(image: Image, plane: _Plane, transform: Any = None, order: int = 1, frame: str | None = None,
              ) -> NDArray[np.float64]:
    """The image resampled on the display plane (in frame ``frame``, default the image's), NaN outside its
    voxel box; shape (rows, columns)."""
    g = plane.grid(frame if frame is not None else image.grid.frame_of_reference_uid)
    if transform is not None and hasattr(transform, "resample"):
        out = transform.resample(image, order=order, grid=g, fill=np.nan)
    else:
        out = image.resample(g, transform=transform, order=order, fill=np.nan)
    return np.asarray(out.array[0], dtype=np.float64)


def _rgb(color: Sequence[int] | None) -> tuple[float, float, float] | None:
    return None if color is None else tuple(float(c) / 255.0 for c in color[:3])  # type: ignore[return-value]


def _draw_structure(ax: Any, s: Structure, plane: _Plane, centres: NDArray[np.float64], linewidth: float) -> bool:
    """Draw one ROI's outline on the plane; whether anything was drawn."""
    stack = s._stack
    if stack is None:
        return False
    color = _rgb(s.color)
    if abs(float(stack.normal @ plane.normal)) >= 1 - 1e-6:
        # contour planes parallel to the view: the exact polygons of the slab that holds the plane
        t = plane.position * float(plane.normal @ stack.normal)
        hit = [p for p in stack.planes if p.lo - 1e-9 <= t < p.hi - 1e-9]
        drawn = False
        for p in hit:
            for ring in p.rings():
                xyz = stack.world(np.asarray(ring)[:, :2], p.position)
                a, b = plane.to_data(xyz)
                ax.plot(np.r_[a, a[:1]], np.r_[b, b[:1]], color=color, linewidth=linewidth, gid=f"roi:{s.name}")
                drawn = True
        return drawn
    inside = s.contains(centres)
    if not inside.any():
        return False
    ax.contour(inside.astype(np.float32), levels=[0.5], colors=[color], linewidths=linewidth,
               extent=plane.extent, origin="upper", gid=f"roi:{s.name}")
    return True


def _fine_centres(plane: _Plane, frame: str | None, target_mm: float = 1.0) -> tuple[_Plane, NDArray[np.float64]]:
    """The display plane subdivided (up to 4x) towards ``target_mm`` pixels, and its pixel centres (LPS)."""
    rows, cols = plane.shape
    da = (plane.a_range[1] - plane.a_range[0]) / cols
    db = (plane.b_range[1] - plane.b_range[0]) / rows
    fa = int(np.clip(np.ceil(da / target_mm), 1, 4))
    fb = int(np.clip(np.ceil(db / target_mm), 1, 4))
    fa = max(1, min(fa, _MAX_PIXELS // max(cols, 1)))
    fb = max(1, min(fb, _MAX_PIXELS // max(rows, 1)))
    fine = _Plane(plane.name, plane.u, plane.w, plane.down, plane.normal, plane.position, plane.a_range,
                  plane.b_range, (rows * fb, cols * fa))
    return fine, fine.grid(frame).centers()[0]


# ------------------------------------------------------------------ show_slice
def show_slice(
    case_or_image: Any,
    z: float | None = None,
    plane: str = "axial",
    window: str | tuple[float, float] | None = None,
    structures: Any = None,
    dose: Any = None,
    isodoses: Sequence[float] | None = None,
    dose_alpha: float = 0.4,
    ax: Any = None,
    *,
    position: float | None = None,
    dose_min: float | None = None,
    dose_max: float | None = None,
    cmap: str = "gray",
    dose_cmap: str = "jet",
    linewidth: float = 1.5,
    legend: bool = True,
    colorbar: bool = True,
    labels: bool = True,
) -> Any:
    """One reformatted slice of a CT/MR/PET, with contours, dose colourwash and isodose lines.

    Parameters
    ----------
    case_or_image : Case or Image
        A Case shows its planning CT (and, by default, all its structures);
        an Image shows itself.
    z : float, optional
        Position of the slice in mm along the plane's normal, in LPS patient
        coordinates: the z coordinate for ``plane="axial"``, y for
        ``"coronal"``, x for ``"sagittal"``.  Default: the centre of the image.
    plane : {"axial", "coronal", "sagittal"}
        The view; always patient-aligned (see the module docstring).
    window : str or (centre, width), optional
        Grey-level window: ``"soft_tissue"`` (40/400 HU), ``"lung"``
        (-600/1500), ``"bone"`` (400/1800), ``"brain"``, ``"mediastinum"``,
        ``"auto"`` (0.5-99.5 percentiles of the slice) or ``(centre, width)``
        in the image's units (HU for CT).  Default: soft tissue for CT, auto
        otherwise.
    structures : StructureSet, list of Structure or names, False, optional
        ROIs to outline in their ROI colour.  Names need a Case.  Default:
        all of the case's ROIs (none for an Image).  ROIs whose contour planes
        are parallel to the view are drawn from the exact slab polygons;
        others from the solid sampled at the display pixels.
    dose : Dose or True, optional
        Dose (Gy) to colourwash; True takes the case's dose.  Only the part
        inside the dose grid is coloured.
    isodoses : list of float, optional
        Isodose line levels in Gy (drawn when a dose is given).
    dose_alpha : float
        Opacity of the colourwash (0 hides it, leaving the isodose lines).
    ax : matplotlib Axes, optional
        Drawn on; a new figure when None.
    position : float, optional
        Alias of ``z``.
    dose_min, dose_max : float, optional
        Colourwash range in Gy; doses below ``dose_min`` are transparent.
        Default: 5 % of the maximum dose and the maximum.
    cmap, dose_cmap : str
        Colormaps of the image and of the dose.
    linewidth : float
        Contour line width (points).
    legend, colorbar, labels : bool
        Draw a legend of the ROIs shown, a dose colour bar (Gy), the
        orientation letters.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    GeometryError
        The position lies outside the image.
    FrameOfReferenceError
        The dose is in another frame of reference than the image.
    MissingDependencyError
        matplotlib is not installed.
    """
    _plt()
    image = _image_of(case_or_image, "show_slice's first argument")
    if z is not None and position is not None and float(z) != float(position):
        raise ValueError(f"give z or position, not both (z={z}, position={position})")
    pl = _plane(image.grid, plane, z if z is not None else position)
    ax = _new_ax(ax)
    values = _on_plane(image, pl)
    vmin, vmax = _window(image, window, values)
    import matplotlib as mpl

    cm = mpl.colormaps[cmap].with_extremes(bad="black")
    ax.imshow(np.ma.masked_invalid(values), cmap=cm, vmin=vmin, vmax=vmax, extent=pl.extent, origin="upper",
              interpolation="nearest", gid="rtkit-image")
    d = _dose(case_or_image, dose)
    if d is not None:
        dv = _on_plane(d, pl, frame=image.grid.frame_of_reference_uid)
        top = float(np.nanmax(dv)) if np.isfinite(dv).any() else 0.0
        dmax_all = float(np.nanmax(d.array)) if d.array.size else top
        hi = float(dose_max) if dose_max is not None else (dmax_all if dmax_all > 0 else 1.0)
        lo = float(dose_min) if dose_min is not None else 0.05 * hi
        dcm = mpl.colormaps[dose_cmap]
        if dose_alpha > 0:
            wash = np.ma.masked_where(~np.isfinite(dv) | (dv < lo), dv)
            im = ax.imshow(wash, cmap=dcm, vmin=lo, vmax=hi, alpha=dose_alpha, extent=pl.extent, origin="upper",
                           interpolation="nearest", gid="rtkit-dose")
            if colorbar:
                cb = ax.figure.colorbar(mpl.cm.ScalarMappable(norm=im.norm, cmap=dcm), ax=ax, shrink=0.8)
                cb.set_label("Dose (Gy)")
        levels = sorted(float(x) for x in (isodoses or []))
        if levels and np.isfinite(dv).any() and top > min(levels):
            norm = mpl.colors.Normalize(lo, hi)
            colors = [dcm(norm(v)) for v in levels]
            cs = ax.contour(np.ma.masked_invalid(dv), levels=levels, colors=colors, linewidths=1.0,
                            extent=pl.extent, origin="upper")
            ax.clabel(cs, fmt=lambda v: f"{v:g} Gy", fontsize=7)
    rois = _structures(case_or_image, structures)
    shown = []
    if rois:
        fine, centres = _fine_centres(pl, image.grid.frame_of_reference_uid)
        for s in rois:
            s._check_frame(image.grid)
            if _draw_structure(ax, s, fine, centres, linewidth):
                shown.append(s)
    if legend and shown:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=_rgb(s.color), linewidth=linewidth, label=s.name) for s in shown]
        from matplotlib.transforms import offset_copy

        below = offset_copy(ax.transAxes, fig=ax.figure, y=-34, units="points")  # under the x label
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below,
                  fontsize=8, frameon=False, ncol=min(len(handles), 5))
    ax.set_xlim(pl.extent[0], pl.extent[1])
    ax.set_ylim(pl.extent[2], pl.extent[3])
    _set_axes(ax, pl)
    if labels:
        _draw_labels(ax, pl)
    axis = _AXIS_NAMES[int(np.argmax(np.abs(pl.normal)))]
    ax.set_title(f"{image.modality or 'image'} {plane} {axis} = {pl.position:.1f} mm")
    return ax


# ------------------------------------------------------------------ DVH
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _dvh_items(dvhs: Any) -> list[tuple[str, Any]]:
    from .dvh import DVH

    if isinstance(dvhs, DVH):
        return [(dvhs.name or "DVH", dvhs)]
    if isinstance(dvhs, Mapping):
        return list(dvhs.items())
    items = []
    for i, d in enumerate(dvhs):
        if not isinstance(d, DVH):
            raise RTKitError(f"dvh() takes a DVHSet, a mapping or a list of DVH, got a {type(d).__name__}")
        items.append((d.name or f"DVH {i + 1}", d))
    return items


def _metric_point(d: Any, metric: str, relative: bool) -> tuple[float, float] | None:
    """(dose Gy, volume in the plotted unit) of a metric on the curve, or None if undefined."""
    from .dvh import parse_metric

    p = parse_metric(metric)
    if p["kind"] == "stat":
        x = float(getattr(d, p["stat"]))
        y = d.volume_at(x, "%" if relative else "cc")
    elif p["kind"] == "D":
        x = d.dose_at(p["volume"], p["volume_unit"])
        vol_cc = p["volume"] / 100.0 * d.volume_cc if p["volume_unit"] == "%" else p["volume"]
        y = vol_cc / d.volume_cc * 100.0 if relative else vol_cc
    else:
        x = p["dose"]
        if p["dose_unit"] == "cGy":
            x /= 100.0
        elif p["dose_unit"] == "%":
            if not d.prescription_gy:
                raise MetricError(f"{metric!r}: a dose in % needs the prescription (DVH.prescription_gy)")
            x = x / 100.0 * d.prescription_gy
        y = d.volume_at(x, "%" if relative else "cc")
    return (float(x), float(y)) if np.isfinite(x) and np.isfinite(y) else None


def dvh(
    dvhs: Any,
    metrics: Sequence[str] | None = None,
    ax: Any = None,
    relative: bool = True,
    *,
    structures: Any = None,
    colors: Mapping[str, Any] | None = None,
    legend: bool = True,
    linewidth: float = 1.5,
) -> Any:
    """Cumulative DVH curves of several structures, with optional metric markers.

    Parameters
    ----------
    dvhs : DVHSet, mapping of name -> DVH, DVH or list of DVH
        From :func:`rtkit.dvhs` / :func:`rtkit.dvh`.
    metrics : list of str, optional
        TG-263 metrics to mark on each curve, e.g. ``["D95%", "V20Gy", "Dmean"]``:
        a marker at (dose, volume) on the curve, one marker shape per metric,
        explained in the legend.
    ax : matplotlib Axes, optional
    relative : bool
        Volume axis in % of each structure's volume (default) or cm3.
    structures : StructureSet, mapping of name -> Structure, or Case, optional
        Where ROI colours are looked up (e.g. ``case.structures``); curves
        without a known colour take matplotlib's cycle.
    colors : mapping of name -> colour, optional
        Explicit colours (any matplotlib colour, or RGB 0-255 tuples).
    legend : bool
    linewidth : float

    Returns
    -------
    matplotlib.axes.Axes
        x: dose (Gy); y: volume (% or cm3).

    Raises
    ------
    MetricError
        An unknown metric string.
    """
    _plt()
    items = _dvh_items(dvhs)
    metrics = list(metrics or [])
    from .dvh import parse_metric

    for m in metrics:
        parse_metric(m)
    if _is_case(structures):
        structures = structures.structures
    ax = _new_ax(ax)
    for name, d in items:
        color = None
        if colors and name in colors:
            c = colors[name]
            color = _rgb(c) if isinstance(c, (tuple, list)) and max(c[:3]) > 1 else c
        elif getattr(d, "color", None) is not None:
            color = _rgb(d.color)
        elif structures is not None:
            try:
                color = _rgb(structures[name].color)
            except KeyError:
                color = None
        y = d.relative_volumes if relative else d.volumes
        (line,) = ax.plot(d.doses, y, color=color, linewidth=linewidth, label=name)
        for i, m in enumerate(metrics):
            try:
                pt = _metric_point(d, m, relative)
            except (MetricError, ValueError, ZeroDivisionError):
                pt = None
            if pt is not None:
                ax.plot([pt[0]], [pt[1]], linestyle="none", marker=_MARKERS[i % len(_MARKERS)],
                        color=line.get_color(), markeredgecolor="black", markersize=6, gid=f"metric:{name}:{m}")
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)" if relative else "Volume (cm³)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if legend and items:
        from matplotlib.lines import Line2D

        handles, _ = ax.get_legend_handles_labels()
        handles = [h for h in handles if not str(h.get_label()).startswith("_")]
        for i, m in enumerate(metrics):
            handles.append(Line2D([], [], linestyle="none", marker=_MARKERS[i % len(_MARKERS)], color="white",
                                  markeredgecolor="black", label=m))
        ax.legend(handles=handles, fontsize=8)
    return ax


# ------------------------------------------------------------------ fusion
def _pair(fixed: Any, moving: Any, registration: Any, plane: str, z: float | None,
          ) -> tuple[Image, _Plane, NDArray[np.float64], NDArray[np.float64]]:
    fixed_img = _image_of(fixed, "fixed")
    if not isinstance(moving, Image):
        raise RTKitError(f"moving must be an rtkit Image, got {type(moving).__name__}")
    pl = _plane(fixed_img.grid, plane, z)
    f = _on_plane(fixed_img, pl)
    m = _on_plane(moving, pl, transform=registration, frame=fixed_img.grid.frame_of_reference_uid)
    return fixed_img, pl, f, m


def fusion(
    fixed: Any,
    moving: Image,
    registration: Any = None,
    alpha: float = 0.5,
    *,
    plane: str = "axial",
    z: float | None = None,
    window: str | tuple[float, float] | None = None,
    moving_window: str | tuple[float, float] | None = None,
    cmap: str = "hot",
    threshold: float | None = None,
    ax: Any = None,
    labels: bool = True,
    colorbar: bool = True,
) -> Any:
    """A moving image (PET/MR) blended over the fixed one (CT) on a patient-aligned plane.

    Parameters
    ----------
    fixed : Image or Case
        The reference (a Case gives its planning CT).
    moving : Image
        Shown in colour on top.
    registration : Registration or (4, 4) array_like, optional
        Maps moving patient coordinates to fixed ones (mm; the DICOM REG
        direction).  The moving image is resampled (trilinear) through
        :meth:`Registration.resample` onto the displayed plane of the fixed
        image's frame.  Without it, both must share a frame of reference.
    alpha : float
        Opacity of the moving image.
    plane, z : see :func:`show_slice` (``z``: mm along the plane's normal, LPS).
    window : fixed image window (see :func:`show_slice`).
    moving_window : str or (centre, width), optional
        Window of the moving image in its units (Bq/mL, SUV, MR signal);
        default ``"auto"``.
    cmap : str
        Colormap of the moving image.
    threshold : float, optional
        Moving values below it are transparent (default: none; the part
        outside the moving image is always transparent).
    ax : matplotlib Axes, optional
    labels, colorbar : bool

    Returns
    -------
    matplotlib.axes.Axes
    """
    _plt()
    import matplotlib as mpl

    fixed_img, pl, f, m = _pair(fixed, moving, registration, plane, z)
    ax = _new_ax(ax)
    fmin, fmax = _window(fixed_img, window, f)
    ax.imshow(np.ma.masked_invalid(f), cmap=mpl.colormaps["gray"].with_extremes(bad="black"), vmin=fmin,
              vmax=fmax, extent=pl.extent, origin="upper", interpolation="nearest", gid="rtkit-fixed")
    mmin, mmax = _window(moving, moving_window or "auto", m)
    hide = ~np.isfinite(m)
    if threshold is not None:
        hide |= m < threshold
    im = ax.imshow(np.ma.masked_where(hide, m), cmap=cmap, vmin=mmin, vmax=mmax, alpha=alpha, extent=pl.extent,
                   origin="upper", interpolation="nearest", gid="rtkit-moving")
    if colorbar:
        cb = ax.figure.colorbar(mpl.cm.ScalarMappable(norm=im.norm, cmap=im.get_cmap()), ax=ax, shrink=0.8)
        cb.set_label(str(moving.meta.get("units") or moving.modality or "moving"))
    ax.set_xlim(pl.extent[0], pl.extent[1])
    ax.set_ylim(pl.extent[2], pl.extent[3])
    _set_axes(ax, pl)
    if labels:
        _draw_labels(ax, pl)
    ax.set_title(f"{moving.modality or 'moving'} on {fixed_img.modality or 'fixed'}, {plane}")
    return ax


def checkerboard(
    fixed: Any,
    moving: Image,
    registration: Any = None,
    squares: int = 8,
    *,
    plane: str = "axial",
    z: float | None = None,
    window: str | tuple[float, float] | None = None,
    moving_window: str | tuple[float, float] | None = None,
    ax: Any = None,
    labels: bool = True,
) -> Any:
    """Alternating squares of the fixed and the registered moving image, to judge alignment.

    Parameters
    ----------
    fixed : Image or Case
    moving : Image
    registration : Registration or (4, 4) array_like, optional
        Moving -> fixed patient coordinates (mm); see :func:`fusion`.
    squares : int
        Squares along each side of the displayed plane.
    plane, z, window : see :func:`show_slice`.
    moving_window : str or (centre, width), optional
        Default ``"auto"``.  Each image is scaled to [0, 1] by its own window;
        where the moving image has no data the fixed one shows.
    ax : matplotlib Axes, optional
    labels : bool

    Returns
    -------
    matplotlib.axes.Axes
        The square at the top-left corner shows the fixed image.
    """
    _plt()
    if int(squares) < 1:
        raise ValueError(f"squares must be >= 1, got {squares}")
    fixed_img, pl, f, m = _pair(fixed, moving, registration, plane, z)
    ax = _new_ax(ax)
    f0, f1 = _window(fixed_img, window, f)
    m0, m1 = _window(moving, moving_window or "auto", m)
    fn = np.clip((f - f0) / (f1 - f0), 0, 1)
    mn = np.clip((m - m0) / (m1 - m0), 0, 1)
    rows, cols = pl.shape
    ri = (np.arange(rows) * int(squares)) // rows
    ci = (np.arange(cols) * int(squares)) // cols
    odd = (ri[:, None] + ci[None, :]) % 2 == 1
    board = np.where(odd & np.isfinite(mn), mn, fn)
    ax.imshow(np.ma.masked_invalid(board), cmap="gray", vmin=0, vmax=1, extent=pl.extent, origin="upper",
              interpolation="nearest", gid="rtkit-checkerboard")
    ax.set_xlim(pl.extent[0], pl.extent[1])
    ax.set_ylim(pl.extent[2], pl.extent[3])
    _set_axes(ax, pl)
    if labels:
        _draw_labels(ax, pl)
    ax.set_title(f"checkerboard {moving.modality or 'moving'} / {fixed_img.modality or 'fixed'}, {plane}")
    return ax


# ------------------------------------------------------------------ MIP
def mip(
    image: Any,
    axis: str = "coronal",
    ax: Any = None,
    *,
    cmap: str = "gray_r",
    vmin: float | None = None,
    vmax: float | None = None,
    labels: bool = True,
) -> Any:
    """Maximum intensity projection (e.g. of a PET), patient-aligned, physical aspect.

    Parameters
    ----------
    image : Image or Case
    axis : {"coronal", "sagittal", "axial"}
        The view: ``"coronal"`` projects along y (anterior-posterior),
        ``"sagittal"`` along x, ``"axial"`` along z.  Head at the top for
        coronal and sagittal, whatever the acquisition.
    ax : matplotlib Axes, optional
    cmap : str
        Default ``"gray_r"`` (high uptake dark, as PET is usually read).
    vmin, vmax : float, optional
        Display range in the image's units; default 0 (or the minimum if
        negative) to the maximum.
    labels : bool

    Returns
    -------
    matplotlib.axes.Axes

    Notes
    -----
    The image is resampled (trilinear) onto a patient-aligned volume with the
    spacing of its best-aligned axes, and the maximum is taken along the
    projection direction, ignoring points outside the image.
    """
    _plt()
    img = _image_of(image, "mip's image")
    pl = _plane(img.grid, axis, None)
    corners = img.grid.corners() @ pl.normal
    t0, t1 = float(corners.min()), float(corners.max())
    dt = _step(img.grid, pl.normal)
    n = max(1, min(_MAX_PIXELS, int(round((t1 - t0) / dt))))
    dt = (t1 - t0) / n
    rows, cols = pl.shape
    proj = np.full((rows, cols), -np.inf)
    chunk = max(1, _MIP_CHUNK_POINTS // (rows * cols))
    for k0 in range(0, n, chunk):
        k1 = min(n, k0 + chunk)
        g = pl.grid(img.grid.frame_of_reference_uid, depth=(t0 + (k0 + 0.5) * dt, dt, k1 - k0))
        vol = img.resample(g, order=1, fill=np.nan).array
        proj = np.fmax(proj, np.fmax.reduce(vol, axis=0))  # fmax: NaN (outside the image) never wins
    finite = np.isfinite(proj)
    proj[~finite] = np.nan
    ax = _new_ax(ax)
    hi = float(np.nanmax(proj)) if finite.any() else 1.0
    lo = float(min(0.0, np.nanmin(proj))) if finite.any() else 0.0
    ax.imshow(np.ma.masked_invalid(proj), cmap=cmap, vmin=lo if vmin is None else vmin,
              vmax=(hi if hi > lo else lo + 1.0) if vmax is None else vmax, extent=pl.extent, origin="upper",
              interpolation="nearest", gid="rtkit-mip")
    ax.set_xlim(pl.extent[0], pl.extent[1])
    ax.set_ylim(pl.extent[2], pl.extent[3])
    _set_axes(ax, pl)
    if labels:
        _draw_labels(ax, pl)
    ax.set_title(f"{img.modality or 'image'} MIP, {axis}")
    return ax


# ------------------------------------------------------------------ gamma
def gamma(result: Any, ax: Any = None, *, kind: str = "map", slice_index: int | None = None, **kwargs: Any) -> Any:
    """The gamma map on one slice, or the gamma histogram (:meth:`GammaResult.plot`).

    Parameters
    ----------
    result : GammaResult
    ax : matplotlib Axes, optional
    kind : {"map", "histogram"}
    slice_index : int, optional
        Reference-grid slice of the map; default the slice with most
        evaluated voxels.
    **kwargs
        Passed to ``imshow`` / ``stairs``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    _plt()
    if not hasattr(result, "plot") or not hasattr(result, "pass_rate"):
        raise RTKitError(f"gamma() takes an rtkit GammaResult, got {type(result).__name__}")
    return result.plot(ax=_new_ax(ax), kind=kind, slice_index=slice_index, **kwargs)

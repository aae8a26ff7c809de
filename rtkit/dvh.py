"""Dose-volume histograms and their metrics.

A :class:`DVH` holds the cumulative curve of one structure: for each dose
``d`` (Gy), the volume (cm3) receiving at least ``d``.  Metrics follow AAPM
TG-263 notation: ``D95%``, ``D0.03cc``, ``D2cc``, ``V20Gy`` (cm3),
``V20Gy[%]``, ``Dmean``, ``Dmax``, ``Dmin``, with an optional output unit in
brackets (``[Gy]``, ``[cGy]``, ``[%]``, ``[cc]``).  Doses "in %" are percent
of the prescription.

Interpolation: ``volume_at`` interpolates the cumulative curve linearly
between bin edges; ``dose_at`` inverts it the same way (never the nearest
bin).
"""

from __future__ import annotations

import builtins
import csv
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._atomic import atomic_path
from ._optional import require
from .errors import MetricError, RTKitError, warn

__all__ = ["DVH", "DVHSet", "dvh", "dvhs", "parse_metric"]

log = logging.getLogger(__name__)

ACCEPTED_FORMS = (
    "Dmean, Dmax, Dmin, D<v>% (e.g. D95%), D<v>cc (e.g. D0.03cc, D2cc), V<d>Gy (cc, e.g. V20Gy), "
    "V<d>cGy, V<d>% (dose in % of the prescription); optional output unit suffix "
    "[Gy], [cGy], [%] for doses (% of prescription), [cc], [%] for volumes, e.g. V20Gy[%], D95%[cGy]"
)

_METRIC = re.compile(
    r"""^\s*(?:
        (?P<stat>D(?:mean|max|min))
      | D(?P<dvol>\d+(?:\.\d+)?)(?P<dvunit>%|cc)
      | V(?P<vdose>\d+(?:\.\d+)?)(?P<vdunit>Gy|cGy|%)
    )\s*(?:\[(?P<out>Gy|cGy|%|cc)\])?\s*$""",
    re.VERBOSE | re.IGNORECASE,
)


def parse_metric(metric: str) -> dict[str, Any]:
    """Parse a TG-263 metric string.

    Returns
    -------
    dict
        ``{"kind": "D"|"V"|"stat", ...}`` with the numbers and units.

    Raises
    ------
    MetricError
        The string is not one of the accepted forms (listed in the message).
    """
    m = _METRIC.match(metric) if isinstance(metric, str) else None
    if m is None:
        raise MetricError(f"unknown DVH metric {metric!r}; accepted forms: {ACCEPTED_FORMS}")
    out = m.group("out")
    if m.group("stat"):
        stat = m.group("stat").lower()
        if out == "cc":
            raise MetricError(f"{metric!r}: {stat} is a dose; [cc] is a volume unit")
        return {"kind": "stat", "stat": stat[1:], "out": out or "Gy"}
    if m.group("dvol"):
        if out == "cc":
            raise MetricError(f"{metric!r}: D-metrics are doses; use [Gy], [cGy] or [%]")
        unit = m.group("dvunit").lower()
        return {"kind": "D", "volume": float(m.group("dvol")), "volume_unit": "%" if unit == "%" else "cc",
                "out": out or "Gy"}
    if out in ("Gy", "cGy"):
        raise MetricError(f"{metric!r}: V-metrics are volumes; use [cc] or [%]")
    unit = m.group("vdunit")
    unit = {"gy": "Gy", "cgy": "cGy", "%": "%"}[unit.lower()]
    return {"kind": "V", "dose": float(m.group("vdose")), "dose_unit": unit, "out": out or "cc"}


class DVH:
    """The cumulative dose-volume histogram of one structure.

    Build it with :func:`rtkit.dvh`, :meth:`from_samples` or
    :meth:`from_dicom`.

    Parameters
    ----------
    doses : array_like, shape (n,)
        Increasing dose bin edges (Gy), starting at 0.
    volumes : array_like, shape (n,)
        Cumulative volume (cm3) receiving at least each dose; non-increasing.
    name : str, optional
    mean, min, max : float, optional
        Exact figures (Gy) when known; otherwise derived from the curve.
    outside_volume_cc : float
        Volume of the structure outside the dose grid (counted at 0 Gy).
    prescription_gy : float, optional
        For metrics in % of prescription.
    """

    def __init__(
        self,
        doses: ArrayLike,
        volumes: ArrayLike,
        *,
        name: str | None = None,
        mean: float | None = None,
        min: float | None = None,  # noqa: A002 - DESIGN attribute names
        max: float | None = None,  # noqa: A002
        outside_volume_cc: float = 0.0,
        prescription_gy: float | None = None,
    ) -> None:
        d = np.asarray(doses, dtype=np.float64).ravel()
        v = np.asarray(volumes, dtype=np.float64).ravel()
        if d.shape != v.shape:
            raise ValueError(f"doses and volumes differ in length ({d.size} vs {v.size})")
        self.doses = d
        self.volumes = v
        self.name = name
        self.outside_volume_cc = float(outside_volume_cc)
        self.prescription_gy = prescription_gy
        self._mean, self._min, self._max = mean, min, max

    # ------------------------------------------------------------ builders
    @classmethod
    def from_samples(
        cls,
        doses: ArrayLike,
        weights_cc: ArrayLike,
        *,
        bin_width: float | None = None,
        name: str | None = None,
        outside_volume_cc: float = 0.0,
        prescription_gy: float | None = None,
        min: float | None = None,  # noqa: A002
        max: float | None = None,  # noqa: A002
        spread: ArrayLike | None = None,
    ) -> DVH:
        """A DVH from dose samples (Gy) and the volume (cm3) each stands for.

        With ``spread`` (half-widths, Gy), each sample's volume is spread
        uniformly over ``[dose - spread, dose + spread]`` (the dose range over
        its voxel in a locally linear field) instead of sitting at one dose.

        The cumulative curve is exact at bin edges of ``bin_width`` Gy
        (default: 1/2000 of the maximum dose, at most 0.01 Gy) and linear in
        between; mean, min and max are exact over the samples (min/max may be
        overridden with values taken over the structure's surface).
        """
        d = np.asarray(doses, dtype=np.float64).ravel()
        w = np.asarray(weights_cc, dtype=np.float64).ravel()
        keep = w > 0
        d, w = d[keep], w[keep]
        if d.size == 0:
            return cls([0.0], [0.0], name=name, outside_volume_cc=outside_volume_cc,
                       prescription_gy=prescription_gy)
        dmax = float(d.max())
        if spread is not None:
            # doses are never negative: narrow a spread that would reach below 0 Gy
            half = np.minimum(np.asarray(spread, dtype=np.float64).ravel()[keep], np.maximum(d, 0.0))
            dmax = float(np.max(d + half))
        width = bin_width or min_width(dmax)
        nbins = builtins.max(1, int(math.ceil(dmax / width)) + 1)
        edges = np.arange(nbins + 1) * width
        if spread is None:
            hist = np.bincount(np.minimum((d / width).astype(np.int64), nbins - 1), weights=w, minlength=nbins)
            # volume receiving >= edge[i]: the samples in bins i.. (a sample exactly on an edge counts above it)
            cum = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])
        else:
            cum = _spread_cumulative(d, w, half, edges)
        total = float(w.sum())
        mean = float(np.dot(d, w) / total)
        inside = cls(edges, cum, name=name, mean=mean,
                     min=float(d.min()) if min is None else min, max=dmax if max is None else max,
                     outside_volume_cc=outside_volume_cc, prescription_gy=prescription_gy)
        if outside_volume_cc > 0:
            inside.volumes[0] += outside_volume_cc
            inside._mean = mean * total / (total + outside_volume_cc)
            inside._min = 0.0
        return inside

    @classmethod
    def from_dicom(cls, rtdose: Any, roi_number: int, *, name: str | None = None,
                   prescription_gy: float | None = None) -> DVH:
        """The DVH stored in an RT Dose's DVHSequence for ``roi_number``.

        Parameters
        ----------
        rtdose : Dose, pydicom Dataset or path-like
            The RT Dose (read by rtkit, or as a dataset, or its file).
        roi_number : int
            ReferencedROINumber of the DVH item.

        Returns
        -------
        DVH
            Cumulative and differential items are both read; DVHDoseScaling is
            applied.  Volumes in CM3 are kept; PERCENT volumes give a DVH whose
            total is 100 (relative).  The figures (min, max, mean) are derived
            from the curve.  When the stored DVHMinimum/Maximum/MeanDose disagree
            with them by more than 1% plus one bin (the dicompyler example file
            stores percentages although DoseUnits is GY), a warning names the ROI
            and the curve's figures are used.

        Raises
        ------
        KeyError
            No DVH for that ROI number (the message lists those present).
        """
        found = {}
        for it in _dvh_items(rtdose):
            for r in it.get("DVHReferencedROISequence") or []:
                found[int(r.ReferencedROINumber)] = it
        if int(roi_number) not in found:
            raise KeyError(f"no stored DVH for ROI number {roi_number}; the RT Dose has DVHs for "
                           f"{sorted(found) or 'none'}")
        it = found[int(roi_number)]
        data = np.asarray([float(v) for v in it.DVHData], dtype=np.float64)
        scaling = float(it.get("DVHDoseScaling", 1.0) or 1.0)
        widths, vols = data[0::2] * scaling, data[1::2]
        edges = np.concatenate([[0.0], np.cumsum(widths)])
        if str(it.get("DVHType", "CUMULATIVE")).upper() == "DIFFERENTIAL":
            cum = np.concatenate([np.cumsum(vols[::-1])[::-1], [0.0]])
        else:  # CUMULATIVE: the value of bin i is the volume at or above its lower edge
            cum = np.concatenate([vols, [0.0]])
        label = name or f"ROI {roi_number}"
        units = str(it.get("DoseUnits", "GY")).upper()
        if units != "GY":
            warn(f"stored DVH of {label}: DoseUnits is {units}; doses are not Gy", log)
        curve = cls(edges, cum, name=label, prescription_gy=prescription_gy)
        bin_max = float(widths.max()) if widths.size else 0.0
        for key, figure in (("DVHMinimumDose", curve.min), ("DVHMaximumDose", curve.max),
                            ("DVHMeanDose", curve.mean)):
            stored = it.get(key)
            if stored in (None, "") or not np.isfinite(figure):
                continue
            v = float(stored)
            if abs(v - figure) > 0.01 * abs(figure) + bin_max:
                warn(f"stored DVH of {label}: {key} is {v:g} but the curve gives {figure:.4g} "
                     f"{units.lower()}; the curve's figure is used", log)
        return curve

    # -------------------------------------------------------------- figures
    @property
    def volume_cc(self) -> float:
        """Total volume (cm3), including any volume outside the dose grid."""
        return float(self.volumes[0]) if self.volumes.size else 0.0

    @property
    def is_empty(self) -> bool:
        return self.volume_cc <= 0

    @property
    def differential(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(bin_centres Gy, volume cm3 per bin)`` of the differential DVH."""
        return 0.5 * (self.doses[1:] + self.doses[:-1]), -np.diff(self.volumes)

    @property
    def relative_volumes(self) -> NDArray[np.float64]:
        """The cumulative curve in % of the total volume."""
        return self.volumes / self.volume_cc * 100.0 if self.volume_cc > 0 else np.zeros_like(self.volumes)

    @property
    def mean(self) -> float:
        """Mean dose (Gy)."""
        if self._mean is not None:
            return float(self._mean)
        centres, vol = self.differential
        return float(np.dot(centres, vol) / vol.sum()) if vol.sum() > 0 else float("nan")

    @property
    def max(self) -> float:
        """Maximum dose (Gy)."""
        if self._max is not None:
            return float(self._max)
        nz = np.flatnonzero(self.volumes > 0)
        return float(self.doses[min(nz[-1] + 1, len(self.doses) - 1)]) if nz.size else float("nan")

    @property
    def min(self) -> float:
        """Minimum dose (Gy)."""
        if self._min is not None:
            return float(self._min)
        full = np.flatnonzero(self.volumes >= self.volume_cc * (1 - 1e-9))
        return float(self.doses[full[-1]]) if full.size else 0.0

    def volume_at(self, dose_gy: float, unit: str = "cc") -> float:
        """Volume receiving at least ``dose_gy`` Gy, in cm3 (``unit="cc"``) or % of the volume."""
        v = float(np.interp(dose_gy, self.doses, self.volumes, left=self.volume_cc, right=0.0))
        if unit == "%":
            return v / self.volume_cc * 100.0 if self.volume_cc > 0 else float("nan")
        if unit != "cc":
            raise MetricError(f"volume unit must be 'cc' or '%', got {unit!r}")
        return v

    def dose_at(self, volume: float, unit: str = "%") -> float:
        """The minimum dose (Gy) to the hottest ``volume`` (``unit="%"`` of the structure or ``"cc"``)."""
        if self.is_empty:
            return float("nan")
        v = volume / 100.0 * self.volume_cc if unit == "%" else float(volume)
        if unit not in ("%", "cc"):
            raise MetricError(f"volume unit must be '%' or 'cc', got {unit!r}")
        if v <= 0:
            return self.max
        if v >= self.volume_cc:
            return self.min
        # volumes are non-increasing: interpolate dose against reversed arrays
        vol, dose = self.volumes[::-1], self.doses[::-1]
        i = int(np.searchsorted(vol, v, side="left"))
        i = min(max(i, 1), len(vol) - 1)
        v0, v1, d0, d1 = vol[i - 1], vol[i], dose[i - 1], dose[i]
        d = d1 if v1 == v0 else d0 + (v - v0) * (d1 - d0) / (v1 - v0)
        return float(min(max(d, self.min), self.max))

    # -------------------------------------------------------------- metrics
    def _dose_out(self, gy: float, out: str, metric: str) -> float:
        if out == "Gy":
            return gy
        if out == "cGy":
            return gy * 100.0
        if not self.prescription_gy:
            raise MetricError(f"{metric!r}: a dose in % needs the prescription (DVH.prescription_gy)")
        return gy / self.prescription_gy * 100.0

    def metric(self, metric: str) -> float:
        """Evaluate a TG-263 metric string (see the module docstring)."""
        p = parse_metric(metric)
        if p["kind"] == "stat":
            return self._dose_out(getattr(self, p["stat"]), p["out"], metric)
        if p["kind"] == "D":
            return self._dose_out(self.dose_at(p["volume"], p["volume_unit"]), p["out"], metric)
        dose = p["dose"]
        if p["dose_unit"] == "cGy":
            dose /= 100.0
        elif p["dose_unit"] == "%":
            if not self.prescription_gy:
                raise MetricError(f"{metric!r}: a dose in % needs the prescription (DVH.prescription_gy)")
            dose = dose / 100.0 * self.prescription_gy
        return self.volume_at(dose, "%" if p["out"] == "%" else "cc")

    def __getitem__(self, metric: str) -> float:
        return self.metric(metric)

    def to_dict(self) -> dict[str, Any]:
        """Figures and the curve as plain Python values."""
        return {"name": self.name, "volume_cc": self.volume_cc, "min_gy": self.min, "max_gy": self.max,
                "mean_gy": self.mean, "outside_volume_cc": self.outside_volume_cc,
                "doses_gy": self.doses.tolist(), "volumes_cc": self.volumes.tolist()}

    def plot(self, ax: Any = None, relative: bool = True, **kwargs: Any) -> Any:
        """Draw the cumulative curve (needs matplotlib); returns the Axes."""
        plt = require("matplotlib.pyplot", "plot", "Plotting")
        ax = ax or plt.gca()
        y = self.relative_volumes if relative else self.volumes
        ax.plot(self.doses, y, label=self.name, **kwargs)
        ax.set_xlabel("Dose (Gy)")
        ax.set_ylabel("Volume (%)" if relative else "Volume (cm³)")
        return ax

    def __repr__(self) -> str:
        if self.is_empty:
            return f"DVH({self.name!r}, empty)"
        return (f"DVH({self.name!r}, {self.volume_cc:.3f} cm3, min {self.min:.3f}, mean {self.mean:.3f}, "
                f"max {self.max:.3f} Gy)")


def _spread_cumulative(d: NDArray, w: NDArray, half: NDArray, edges: NDArray) -> NDArray:
    """V(e) = sum of w * fraction of [d - half, d + half] at or above e, exactly at every edge."""
    width = edges[1] - edges[0]
    n = len(edges)
    point = half <= 0
    below = np.zeros(n)
    if point.any():  # no spread: a step just above d
        k = np.clip(np.floor(d[point] / width).astype(np.int64) + 1, 0, n)
        below += np.cumsum(np.bincount(k, weights=w[point], minlength=n + 1)[:n])
    ramp = ~point
    if ramp.any():
        dr, wr, hr = (d, w, half) if ramp.all() else (d[ramp], w[ramp], half[ramp])
        c = wr / (2 * hr)
        ext = np.append(edges, edges[-1] + width)  # index n: beyond the last edge (dropped)
        # volume below e = sum c * ((e - a)_+ - (e - b)_+) with a = d - half, b = d + half
        for pos, cc in ((dr - hr, c), (dr + hr, -c)):
            k = np.clip(np.floor(pos / width).astype(np.int64) + 1, 0, n)  # first edge at or above pos
            offset = np.bincount(k, weights=cc * (ext[k] - pos), minlength=n + 1)[:n]
            slope = np.bincount(k, weights=cc, minlength=n + 1)[:n]
            s_cum = np.cumsum(slope)
            below += np.cumsum(offset + width * np.concatenate([[0.0], s_cum[:-1]]))
    return np.maximum(w.sum() - below, 0.0)


def _dvh_items(rtdose: Any) -> list[Any]:
    """DVHSequence items of a Dose, a pydicom Dataset or an RT Dose file."""
    seq = getattr(rtdose, "dvh_sequence", None)
    if seq is not None:
        return list(seq)
    if isinstance(rtdose, (str, os.PathLike)):
        from .io._dicom import read_object

        rtdose = read_object(rtdose, "an RT Dose", headers_only=True)
    return list(rtdose.get("DVHSequence") or [])


def min_width(dmax: float) -> float:
    """Default bin width (Gy): 1/2000 of the maximum dose, at most 0.01 Gy."""
    return min(0.01, dmax / 2000.0) if dmax > 0 else 0.01


class DVHSet(Mapping[str, DVH]):
    """DVHs by structure name, with metric tables."""

    def __init__(self, dvhs: Mapping[str, DVH] | Iterable[tuple[str, DVH]]) -> None:
        self._d = dict(dvhs)

    def __getitem__(self, name: str) -> DVH:
        if name in self._d:
            return self._d[name]
        for k, v in self._d.items():
            if k.lower() == str(name).lower():
                return v
        raise KeyError(f"no DVH for {name!r}; have: {', '.join(self._d)}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def table(self, metrics: Sequence[str]) -> list[dict[str, Any]]:
        """One row per structure: ``{"structure": name, metric: value, ...}`` (NaN when undefined)."""
        for m in metrics:
            parse_metric(m)  # fail early, with the accepted forms
        rows = []
        for name, d in self._d.items():
            row: dict[str, Any] = {"structure": name}
            for m in metrics:
                try:
                    row[m] = d.metric(m)
                except MetricError:
                    raise
                except (ValueError, ZeroDivisionError):
                    row[m] = float("nan")
            rows.append(row)
        return rows

    def to_csv(self, path: str | os.PathLike[str], metrics: Sequence[str] = ("Dmin", "Dmean", "Dmax"),
               *, overwrite: bool = False) -> Path:
        """Write :meth:`table` as CSV (atomic; refuses to overwrite unless asked)."""
        rows = self.table(metrics)
        with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["structure", *metrics])
            w.writeheader()
            w.writerows(rows)
        return Path(path)

    def to_pandas(self, metrics: Sequence[str] = ("Dmin", "Dmean", "Dmax")) -> Any:
        """:meth:`table` as a pandas DataFrame (needs pandas)."""
        pd = require("pandas", "table", "DVHSet.to_pandas")
        return pd.DataFrame(self.table(metrics)).set_index("structure")

    #: Metrics of the notebook summary (:meth:`_repr_html_`).
    HTML_METRICS = ("Dmin", "Dmean", "Dmax", "D98%", "D95%", "D50%", "D2%")

    def _repr_html_(self) -> str:
        """Notebook summary: volume (cm3), outside-grid volume and :attr:`HTML_METRICS` (Gy) per structure."""
        from . import _html

        rows = []
        for row, d in zip(self.table(self.HTML_METRICS), self._d.values(), strict=True):
            rows.append((_html.cell(row["structure"]), _html.cell(_html.number(d.volume_cc, 3)),
                         _html.cell(_html.number(d.outside_volume_cc, 3)),
                         *(_html.cell(_html.number(row[m])) for m in self.HTML_METRICS)))
        heads = ("structure", "volume (cm3)", "outside dose grid (cm3)", *(f"{m} (Gy)" for m in self.HTML_METRICS))
        return _html.summary("DVHSet", f"({len(self)} structures)", _html.table(heads, rows))

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """All curves on one Axes (needs matplotlib)."""
        for d in self._d.values():
            ax = d.plot(ax=ax, **kwargs)
        if ax is not None:
            ax.legend()
        return ax



# ------------------------------------------------------------------ engine
BETWEEN_PLANES = ("smooth", "slab")


def _aligned_dose(dose: Any, structure: Any) -> Any:
    """The dose resampled (trilinear, NaN outside) on a grid whose slices are the contour
    planes' orientation, covering the structure, at half the dose voxel size: for dose grids
    oblique to the contours."""
    from .dose import Dose
    from .geometry import Grid

    stack = structure._stack
    step = float(dose.grid.spacing.min()) / 2  # half the dose voxel: the second interpolation adds little
    axes = np.stack([stack.normal, stack.e1, stack.e2], axis=1)  # columns: k, row, col directions
    corners = structure.box_corners()
    local = corners @ axes  # coordinates along the three axes
    lo = local.min(axis=0) - 1.5 * step
    hi = local.max(axis=0) + 1.5 * step
    shape = tuple(int(v) for v in np.ceil((hi - lo) / step) + 1)
    affine = np.eye(4)
    affine[:3, :3] = axes * step
    affine[:3, 3] = axes @ lo
    grid = Grid(shape, affine, dose.grid.frame_of_reference_uid)
    values = dose.sample(grid.centers().reshape(-1, 3), order=1, fill=np.nan).reshape(shape)
    return Dose(values.astype(np.float32), grid)


def dvh(dose: Any, structure: Any, *, resolution: float | None = None, name: str | None = None,
        prescription_gy: float | None = None, between_planes: str = "smooth", end_caps: bool = True) -> DVH:
    """The DVH of ``structure`` in ``dose``.

    Method (docs/dvh.md): the solid is cut into layers along the contour
    normal.  In plane, a lattice subdividing the dose pixels (about
    ``resolution`` mm; by default fine enough for ~40,000 samples, never
    coarser than the dose pixel) gets the exact area fraction of each pixel
    inside the contours and the centroid of that part, where the dose is
    interpolated; along the normal, each layer is split at the dose slices,
    between which the trilinear dose is linear, and its volume is spread
    uniformly between the doses on its two faces.

    ``between_planes="smooth"`` (default) interpolates the surface between
    contour planes (a G1 profile curve through each pixel's signed distances
    to the neighbouring contours; circular arcs, cones and closing poles come
    out right), with half-slice end caps beyond the first and last planes;
    it reproduces the analytical DVHs of Nelms et al. (2015) on all 90 cases
    within 1% / 10 cGy.  ``"slab"`` uses the slab solid of DESIGN §3 (each
    contour stands for a slab one spacing thick), whose volume is
    ``Structure.volume`` and whose voxels are ``Structure.mask``.  Both use
    the even-odd rule for holes.

    Dmin and Dmax are taken over the samples' faces, every contour vertex
    (on its plane and on the end-cap faces) and the dose grid points inside
    the solid.  Volume outside the dose grid's voxel box is reported in
    ``outside_volume_cc``, counted at 0 Gy, and warned about.

    Parameters
    ----------
    dose : Dose
    structure : Structure
    resolution : float, optional
        In-plane lattice pixel (mm).
    name : str, optional
        Default: the structure's name.
    prescription_gy : float, optional
        For metrics in % of prescription.
    between_planes : {"smooth", "slab"}
    end_caps : bool
        Half-slice end caps beyond the first and last contour planes (default, DESIGN §3 and
        Nelms et al.).  False stops the solid at those planes, as Eclipse does (a structure
        drawn on one plane keeps its slab).

    Returns
    -------
    DVH
        Empty (volume 0) for an empty structure.

    Raises
    ------
    FrameOfReferenceError
        The structure and the dose are in different frames of reference.
    ValueError
        Unknown ``between_planes``.
    """
    if between_planes not in BETWEEN_PLANES:
        raise ValueError(f"between_planes must be one of {BETWEEN_PLANES}, not {between_planes!r}")
    name = name or structure.name
    structure._check_frame(dose.grid)
    if structure.is_empty:
        return DVH([0.0], [0.0], name=name, prescription_gy=prescription_gy)
    n = _parts_for(_part_cells(dose, structure), between_planes) if between_planes == "smooth" else 1
    sinks = [_sample_part(dose, structure, i, n, resolution, between_planes, end_caps) for i in range(n)]
    return _finish(name, sinks, prescription_gy)


# A structure whose smooth solid spans more lattice cells than this (contour planes x dose pixels
# of its box, estimated from the contour points) is sampled in parts (runs of gaps between
# planes): the parts of large structures can then run side by side (dvhs, workers), and the
# result depends on the structure alone, not on how many processes share the work.
PART_CELLS = 1_000_000
MAX_PARTS = 8


def _part_cells(dose: Any, structure: Any) -> float:
    """Estimated lattice cells of the structure's solid: its number of contour planes times the
    dose pixels of its contour points' box (cheap: before the solid is built; 0 if none)."""
    arrays = [np.asarray(c.points, dtype=np.float64).reshape(-1, 3) for c in structure.contours]
    arrays = [x for x in arrays if len(x)]
    if not arrays:
        return 0.0
    a = np.asarray(dose.grid.affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(a, axis=0)
    axes = a / spacing  # unit slice, row and column directions
    local = np.concatenate(arrays) @ axes
    if not np.all(np.isfinite(local)):
        return 0.0
    extent = (local.max(axis=0) - local.min(axis=0)) / spacing + 1.0
    firsts = np.array([x[0] for x in arrays]) @ axes[:, 0]
    return float(len(np.unique(np.round(firsts, 3))) * extent[1] * extent[2])


def _parts_for(cells: float, between_planes: str) -> int:
    """How many parts a solid of ``cells`` estimated lattice cells is sampled in (1: whole)."""
    if between_planes != "smooth":
        return 1
    return int(np.clip(round(cells / PART_CELLS), 1, MAX_PARTS))


def _sample_part(dose: Any, structure: Any, part: int, parts: int, resolution: float | None,
                 between_planes: str, end_caps: bool) -> Any:
    """The histogram of part ``part`` of ``parts`` of the structure's solid (engine.Histogram);
    part 0 also holds the extremes over the dose grid points inside the solid.  A solid that is
    not split (the slab model, a dose grid oblique to the contours) is wholly in part 0.  None
    for a structure without a valid contour."""
    from . import _dvh_engine as engine

    stack = structure._stack
    if stack is None:  # no valid contour
        return None
    aligned = engine.is_aligned(dose.grid, stack.normal)
    whole = between_planes != "smooth" or not aligned
    work = dose if aligned else _aligned_dose(dose, structure)
    top = float(np.nanmax(work.array)) if work.array.size else 0.0
    sink = engine.Histogram(min_width(top), top)
    if whole and part > 0:
        return sink
    if between_planes == "smooth":
        engine.sample_smooth(work, stack, resolution, sink, end_caps, *((0, 1) if whole else (part, parts)))
    else:
        engine.sample_aligned(work, stack, engine.slab_layers(stack, end_caps), resolution, sink)
    if part == 0:
        # Extremes: the samples' faces, contour vertices, and dose grid points inside the solid.
        in_mask = structure.mask(dose.grid)
        if not end_caps:  # grid points in the end caps are not in the solid
            pos = np.array([p.position for p in stack.planes])
            idx = np.argwhere(in_mask)
            t = dose.grid.index_to_world(idx.astype(np.float64)) @ stack.normal
            keep = (t >= pos.min() - 1e-6) & (t <= pos.max() + 1e-6)
            in_mask[tuple(idx[~keep].T)] = False
        if in_mask.any():  # NaN (a resampled dose outside its grid) is skipped; no copy of the values
            arr = dose.array
            sink.dmin = min(sink.dmin, float(np.fmin.reduce(arr, axis=None, where=in_mask, initial=np.inf)))
            sink.dmax = max(sink.dmax, float(np.fmax.reduce(arr, axis=None, where=in_mask, initial=-np.inf)))
    return sink


def _finish(name: str, sinks: list[Any], prescription_gy: float | None) -> DVH:
    """The DVH from the histograms of a structure's parts (added in part order)."""
    sink = sinks[0]
    for other in sinks[1:]:
        sink.merge(other)
    outside_cc = sink.outside_cc
    if outside_cc > 0:
        warn(f"ROI '{name}': {outside_cc:.3f} cm3 of {sink.total + outside_cc:.3f} cm3 lies outside "
             "the dose grid; counted at 0 Gy (DVH.outside_volume_cc)", log)
    candidates = np.array([sink.dmin, sink.dmax, 0.0 if outside_cc > 0 else np.nan])
    candidates = candidates[np.isfinite(candidates)]
    if sink.total <= 0:
        return DVH([0.0], [outside_cc], name=name, outside_volume_cc=outside_cc, prescription_gy=prescription_gy,
                   mean=0.0 if outside_cc > 0 else None, min=0.0 if outside_cc > 0 else None,
                   max=0.0 if outside_cc > 0 else None)
    n = min(len(sink.edges), int(np.ceil(sink.top / sink.width)) + 2)
    volumes = sink.cum[:n].copy()
    volumes[0] = sink.total + outside_cc  # everything receives at least 0 Gy
    return DVH(sink.edges[:n], volumes, name=name, outside_volume_cc=outside_cc, prescription_gy=prescription_gy,
               mean=sink.dose_volume / (sink.total + outside_cc),
               min=float(candidates.min()) if candidates.size else None,
               max=float(candidates.max()) if candidates.size else None)


def dvhs(dose: Any, structures: Any, names: Sequence[str] | None = None, *, workers: int | None = None,
         **kwargs: Any) -> DVHSet:
    """DVHs of several structures (a StructureSet, or a mapping of name -> Structure).

    Parameters
    ----------
    dose : Dose
    structures : StructureSet or mapping of name -> Structure
    names : sequence of str, optional
        Default: all, in the set's order.
    workers : int, optional
        Processes computing the DVHs side by side, large structures split into parts (runs of
        contour planes): about 1.8x faster on 2 cores for the breast plan.  Default 1 (one
        after the other in this process; memory bounded by one DVH).  ``0`` or a negative
        number: the usable CPU cores.  The processes are forked from this one (Linux), so the
        dose and the structures are shared, not copied; where forking is not safe (another
        platform, other threads running in this process, a daemonic process) threads are used
        instead, which gain less (the work holds the GIL in part).  The result does not depend
        on it: the parts are the same in every case and are added in order.
    **kwargs
        Passed to :func:`dvh` (``resolution``, ``prescription_gy``, ``between_planes``,
        ``end_caps``).

    Returns
    -------
    DVHSet
        In the order of ``names``.
    """
    chosen = list(names or list(structures))
    picked = [(n, structures[n]) for n in chosen]
    if unknown := sorted(set(kwargs) - {"resolution", "prescription_gy", "between_planes", "end_caps"}):
        raise TypeError(f"dvhs() got unexpected keyword argument(s) {', '.join(unknown)}")
    if workers is None:
        workers = 1
    elif workers <= 0:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            workers = os.cpu_count() or 1
    if max(1, int(workers)) == 1 or len(picked) == 0:
        return DVHSet((n, dvh(dose, s, name=n, **kwargs)) for n, s in picked)
    between = kwargs.get("between_planes", "smooth")
    if between not in BETWEEN_PLANES:
        raise ValueError(f"between_planes must be one of {BETWEEN_PLANES}, not {between!r}")
    opts = (kwargs.get("resolution"), between, kwargs.get("end_caps", True))
    dose.array  # noqa: B018 - decoded once, before the workers share it
    results: dict[int, DVH] = {}
    tasks: list[tuple[float, int, int, int]] = []  # (-cost, structure, part, parts)
    for i, (n, s) in enumerate(picked):
        s._check_frame(dose.grid)
        if not s.contours or all(not c.is_closed for c in s.contours):
            results[i] = dvh(dose, s, name=n, **kwargs)  # empty: nothing to share out
            continue
        cells = _part_cells(dose, s)
        parts = _parts_for(cells, between)
        cost = cells / parts
        tasks += [(-cost, i, k, parts) for k in range(parts)]
    tasks.sort()  # largest first, so that the last worker to finish does not start the biggest job
    sinks: dict[int, dict[int, Any]] = {}
    if tasks:
        workers = max(1, min(int(workers), len(tasks)))
        for i, k, sink in _run_parts(dose, picked, opts, [(i, k, parts) for _, i, k, parts in tasks], workers):
            sinks.setdefault(i, {})[k] = sink
    for i, by_part in sorted(sinks.items()):
        n, _ = picked[i]
        empty = [k for k, v in by_part.items() if v is None]
        if empty:
            results[i] = dvh(dose, picked[i][1], name=n, **kwargs)
            continue
        results[i] = _finish(n, [by_part[k] for k in sorted(by_part)], kwargs.get("prescription_gy"))
    return DVHSet((picked[i][0], results[i]) for i in range(len(picked)))


# forked workers find their inputs here (inherited at fork time, not pickled)
_SHARED: dict[int, tuple[Any, list[tuple[str, Any]], tuple[Any, str, bool], list[tuple[int, int, int]]]] = {}
_Caught = list[tuple[type, str]]


def _part_task(key: int, index: int) -> tuple[Any, _Caught]:
    """Task ``index`` (one part of one structure's DVH) of the run ``key``: its histogram and
    the warnings it raised (re-emitted by the caller, in structure order)."""
    import warnings

    dose, picked, (resolution, between, end_caps), tasks = _SHARED[key]
    i, part, parts = tasks[index]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the caller's filters apply when they are re-emitted
        sink = _sample_part(dose, picked[i][1], part, parts, resolution, between, end_caps)
    return sink, [(w.category, str(w.message)) for w in caught]


def _claim(counter: Any, n: int) -> Iterator[int]:
    """The task indices this process takes, one at a time, from the counter shared by all."""
    while True:
        with counter.get_lock():
            index = counter.value
            counter.value = index + 1
        if index >= n:
            return
        yield index


def _fork_worker(key: int, counter: Any, queue: Any) -> None:
    """A forked worker: takes tasks until none is left, puts (index, result, error) on ``queue``."""
    import pickle

    logging.disable(logging.CRITICAL)  # the parent logs the re-emitted warnings once
    n = len(_SHARED[key][3])
    for index in _claim(counter, n):
        try:
            queue.put((index, _part_task(key, index), None))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            try:
                pickle.dumps(exc)
            except Exception:  # noqa: BLE001
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            queue.put((index, None, exc))
            return


def _can_fork() -> bool:
    """Whether forked workers are safe here: Linux, and no other thread in this process (a fork
    copies only the calling thread; a lock another thread holds would stay held)."""
    import multiprocessing as mp
    import sys
    import threading

    return (sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()
            and threading.active_count() == 1 and not mp.current_process().daemon)


def _run_parts(dose: Any, picked: list[tuple[str, Any]], opts: tuple[Any, str, bool],
               tasks: list[tuple[int, int, int]], workers: int) -> list[tuple[int, int, Any]]:
    """(structure, part, histogram) of every task (structure index, part, parts), computed by
    this process and ``workers - 1`` forked ones taking the tasks in turn (largest first), or
    by ``workers`` threads where forking is not safe.  Warnings are re-emitted once per
    structure, in structure order."""
    from concurrent.futures import ThreadPoolExecutor

    resolution, between, end_caps = opts
    if not _can_fork():
        for _, s in picked:
            s.is_empty  # noqa: B018 - build each solid in this thread, once
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [(i, k, pool.submit(_sample_part, dose, picked[i][1], k, n, resolution, between, end_caps))
                       for i, k, n in tasks]
            return [(i, k, f.result()) for i, k, f in futures]
    import multiprocessing as mp
    import queue as queue_module

    from . import _dvh_engine  # noqa: F401 - imported once, before the fork

    ctx = mp.get_context("fork")
    key = id(picked)
    _SHARED[key] = (dose, picked, opts, tasks)
    counter = ctx.Value("q", 0)
    results = ctx.Queue()
    children = [ctx.Process(target=_fork_worker, args=(key, counter, results), daemon=True)
                for _ in range(workers - 1)]
    done: dict[int, tuple[Any, _Caught]] = {}
    try:
        for child in children:
            child.start()
        for index in _claim(counter, len(tasks)):  # this process works too
            done[index] = _part_task(key, index)
        while len(done) < len(tasks):
            try:
                index, result, error = results.get(timeout=0.2)
            except queue_module.Empty:
                dead = [c.exitcode for c in children if c.exitcode not in (None, 0)]
                if dead and results.empty():
                    raise RTKitError(f"a DVH worker process died (exit code {dead[0]}); "
                                     "retry with workers=1") from None
                continue
            if error is not None:
                raise error
            done[index] = result
    finally:
        del _SHARED[key]
        for child in children:
            if child.is_alive() and len(done) < len(tasks):
                child.terminate()
        for child in children:
            child.join()
        results.close()
    seen: set[tuple[int, type, str]] = set()
    out = []
    for index in sorted(done, key=lambda j: tasks[j][:2]):
        i, k, _ = tasks[index]
        sink, caught = done[index]
        for category, message in caught:  # once per structure, in structure order
            if (i, category, message) not in seen:
                seen.add((i, category, message))
                _reemit(category, message)
        out.append((i, k, sink))
    return out


def _reemit(category: type, message: str) -> None:
    """A warning caught in a worker, raised again here (attributed to the user's call)."""
    import warnings

    from .errors import RTKitWarning, _caller_level

    if issubclass(category, RTKitWarning):
        warn(message, log)
    else:
        warnings.warn(message, category, stacklevel=_caller_level())

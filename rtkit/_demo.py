"""``rtkit demo``: the built-in synthetic case, summarised, with a DVH table and a review figure.

The command line prints what :func:`run_demo` returns; nothing here prints.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError

__all__ = ["DEMO_METRICS", "DemoReport", "run_demo", "review_figure", "default_png_path"]

#: The DVH metrics of the demo table (Gy; V20Gy in % of the ROI's volume).
DEMO_METRICS = ("Dmean", "D95%", "D2%", "V20Gy[%]")


@dataclass
class DemoReport:
    """What ``rtkit demo`` shows.

    Attributes
    ----------
    folder : Path
        The written synthetic case.
    case : Case
        It, loaded with :func:`rtkit.load`.
    lines : list of str
        The report text: case summary, CT line, DVH table (no trailing newlines).
    table : list of dict
        The DVH rows (``{"structure": name, metric: value, ...}``; doses in Gy,
        ``V20Gy[%]`` in % of the ROI's volume) of every non-empty ROI.
    png : Path or None
        The review figure, when written.
    notes : list of str
        Why the figure was not written (e.g. matplotlib missing), if so.
    """

    folder: Path
    case: Any
    lines: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    png: Path | None = None
    notes: list[str] = field(default_factory=list)


def default_png_path(folder: str | os.PathLike[str]) -> Path:
    """The default review figure of a demo case folder: ``<folder>-review.png`` beside it.

    Parameters
    ----------
    folder : path-like
        The case folder.

    Returns
    -------
    Path
        A sibling of the folder, so the case folder holds only DICOM files.
    """
    folder = Path(folder)
    return folder.parent / f"{folder.name}-review.png"


def _table_lines(table: list[dict[str, Any]], rx: float | None) -> list[str]:
    head = f"DVH (Gy; V20Gy in % of the ROI; Rx {rx:g} Gy):" if rx else "DVH (Gy; V20Gy in % of the ROI):"
    if not table:
        return [head, "  (no non-empty ROI)"]
    width = max(3, *(len(r["structure"]) for r in table))
    lines = [head, f"  {'ROI':<{width}}  {'Dmean':>7} {'D95%':>7} {'D2%':>7} {'V20Gy':>7}"]
    for r in table:
        lines.append(f"  {r['structure']:<{width}}  {r['Dmean']:7.2f} {r['D95%']:7.2f} {r['D2%']:7.2f} "
                     f"{r['V20Gy[%]']:7.1f}")
    return lines


def review_figure(case: Any, dvhs: Any, path: str | os.PathLike[str], *, dpi: int = 90) -> Path:
    """Write a review PNG: axial and sagittal CT slices through the target with contours and dose, and the DVHs.

    Parameters
    ----------
    case : Case
        With a CT, an RT Structure Set and a dose.
    dvhs : DVHSet
        The curves to plot (one per ROI, in ROI colours).
    path : path-like
        The PNG to write (replaced if it exists).
    dpi : int
        Resolution (dots per inch) of the 15 x 5 inch figure.

    Returns
    -------
    Path

    Raises
    ------
    MissingDependencyError
        matplotlib is not installed (``pip install 'rtkit[plot]'``).
    """
    from . import plot
    from ._optional import require

    require("matplotlib", "plot", "The demo's review figure")
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    rx = case.plan.prescription_gy if case.plan is not None else None
    target = next((case.structures[n] for n in case.structures.names
                   if case.structures[n].type in ("PTV", "CTV", "GTV") and not case.structures[n].is_empty), None)
    centre = None
    if target is not None:
        import numpy as np

        centre = np.mean(np.vstack([c.points for c in target.contours if len(c.points)]), axis=0)
    fig = Figure(figsize=(15, 5))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.1]})
    iso = [0.95 * rx] if rx else None
    plot.show_slice(case, z=None if centre is None else float(centre[2]), plane="axial", dose=True,
                    isodoses=iso, ax=axes[0], legend=False, colorbar=False)
    plot.show_slice(case, z=None if centre is None else float(centre[0]), plane="sagittal", dose=True,
                    isodoses=iso, ax=axes[1], legend=False)
    plot.dvh(dvhs, metrics=["D95%"], structures=case.structures, ax=axes[2])
    axes[2].set_title(f"DVH (Rx {rx:g} Gy)" if rx else "DVH")
    fig.suptitle(f"rtkit demo: {case.patient_id or ''}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def run_demo(out: str | os.PathLike[str] | None = None, *, png: str | os.PathLike[str] | bool | None = None
             ) -> DemoReport:
    """Write the synthetic case, load it, compute its DVH table and (optionally) the review figure.

    Parameters
    ----------
    out : path-like, optional
        Folder for the case (default: a new temporary folder); see
        :func:`rtkit.datasets.synthetic_case`.
    png : path-like, bool or None
        The review figure: a path; ``None`` or ``True`` for
        :func:`default_png_path` of the case folder; ``False`` for none.
        Without matplotlib the figure is skipped and :attr:`DemoReport.notes`
        says why.

    Returns
    -------
    DemoReport
    """
    from .datasets import synthetic_case
    from .dvh import dvhs as _dvhs
    from .io.case import load

    folder = synthetic_case(out)
    case = load(folder)
    report = DemoReport(folder=folder, case=case, lines=[f"synthetic case written to {folder}", case.summary()])
    ct = case.ct
    if ct is not None:
        arr = ct.array
        report.lines.append(
            f"CT: {arr.shape[0]} slices of {arr.shape[1]} x {arr.shape[2]} px, "
            f"HU {arr.min()} to {arr.max()}, bounds (mm, LPS) {ct.grid.bounds.round(1).tolist()}")
    if case.dose is None or case.structures is None:
        return report
    rx = case.plan.prescription_gy if case.plan is not None else None
    names = [n for n in case.structures.names if not case.structures[n].is_empty]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo's spine and lungs run past the dose grid, on purpose
        sets = _dvhs(case.dose, case.structures, names=names, prescription_gy=rx)
        report.table = sets.table(list(DEMO_METRICS))
    report.lines.extend(_table_lines(report.table, rx))
    if png is False:
        return report
    target = default_png_path(folder) if png is None or png is True else Path(png)
    try:
        report.png = review_figure(case, sets, target)
    except MissingDependencyError as exc:
        report.notes.append(f"review figure skipped: {exc}")
    return report

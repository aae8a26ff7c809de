"""DVH benchmark: rtkit against dicompyler-core, side by side.

dicompyler-core (``dicompylercore.dvhcalc.get_dvh(structure_path, dose_path, roi, ...)``)
needs pydicom < 3, so it runs in its own virtual environment,
``benchmarks/_work/dicompyler-venv`` (the one ``bench_rtio.py`` creates: dicompyler-core
0.5.6 with pydicom < 3; this script adds scikit-image there when it is missing, because
dicompyler's interpolation needs it), in a worker subprocess that this script writes to
``_work/dvh/`` and drives over a JSON-lines pipe. rtkit runs in this interpreter and is used
through its public API only (``read_dose``, ``read_structures``, ``dvh``, ``dvhs``,
``DVH.from_dicom`` and the DVH figures); only the memory part wraps one private function
(``rtkit.dvh._part_task``) to read each forked worker's own peak.

Four parts, in one run:

1. Nelms et al. (2015) analytical suite (``nelms-analytical-dvh``): the 90 rows of
   ``reference_csv/analytical_summary_points.csv`` with a 1, 2 or 3 mm dose voxel
   ('Z(AP)' rows on ``Linear_AntPost_{v}mm_Aligned.dcm``, 'Y(SI)' rows on
   ``Linear_SupInf_{v}mm_Aligned.dcm``; ROI 2 of ``STRUCTURES/<Structure name>.dcm``).
   Figures: volume, Dmin, Dmax, Dmean, D99, D95, D5, D1, D0.03cc. For each figure and method:
   median, 95th percentile and largest |error| (volume in % of the reference, doses in cGy)
   and the rows outside the acceptance tolerance (doses: max(1% of the reference, 10 cGy);
   volume: 1%). Methods: rtkit ``dvh(dose, roi)`` with its defaults (``between_planes=
   "smooth"``) and with ``between_planes="slab"``, each timed for the ``dvh`` call alone and
   with the reading; dicompyler with its defaults and with its interpolation on (in-plane
   ``interpolation_resolution`` = dose pixel spacing / 4,
   ``interpolation_segments_between_planes=2``). The methods run in turn on each row; crashes
   are counted and listed per row, never fatal. Every row's results go to
   ``_work/dvh/nelms_rows.csv``.
2. The dicompyler-core example breast plan (``dicompyler-core``: rtss.dcm, rtdose.dcm): all
   ROIs, timed as the best of ``--repeat`` alternating runs after a warm-up: rtkit
   ``dvhs(dose, structures)`` with the defaults (smooth, ``workers=1``), smooth on all usable
   cores (``workers=0``: this process and forked ones), slab on all cores and slab with ``workers=1`` (dose and structures read and
   the dose decoded before the timer, fresh objects for every run), the default including the
   reading, and dicompyler ``get_dvh`` for every ROI with its defaults and with 1.25 mm
   in-plane interpolation (one run: about 30 s). Targets (issue 5): rtkit all ROIs <= 0.5 s
   and >= 50x faster than dicompyler with interpolation.
3. The same plan against the TPS (Eclipse) DVHs stored in the RT Dose's DVHSequence (read
   with ``rtkit.DVH.from_dicom``, and with dicompyler's reader as a cross-check): volume,
   Dmean, D95, D5 and Dmax for every ROI from rtkit (defaults, and ``end_caps=False``,
   Eclipse's convention), Eclipse and dicompyler. ROIs over 10 cc with |volume difference| >
   2% or |Dmean difference| > 1% are flagged (acceptance targets). For BODY, V(>= d) at
   0.1-10 Gy from rtkit and Eclipse, and the lines that explain the differences (end caps,
   BODY's low-dose volume).
4. rtkit's peak memory for all breast ROIs (``dvhs`` with the defaults, ``workers=1``, and
   on all cores, ``workers=0``: this process plus each forked worker's own peak), each in a fresh
   subprocess (VmHWM and tracemalloc), against 3x the float32 dose
   grid + one bool mask on the dose grid.

Run:  .venv/bin/python benchmarks/bench_dvh.py [--repeat N] [--quick] [--no-peer-interp]
      [--no-memory] [--work DIR] [--data DIR]
Exit status 1 if an rtkit run crashes (accuracy and time targets only print FAIL).
"""

from __future__ import annotations

import argparse
import csv
import gc
import inspect
import json
import math
import os
import subprocess
import sys
import time
import traceback
import tracemalloc
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import PeerProcess, proc_status, reset_peak, run_json
from _common import machine_facts as _machine_facts
from _common import mib as _mib
from bench_rtio import ensure_venv

import rtkit

# ----------------------------------------------------------------- parameters
HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "_work"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
NELMS = "nelms-analytical-dvh"
BREAST = "dicompyler-core"
NELMS_ROI = 2  # ROI 1 of every Nelms structure set is a point (POI_1)
NELMS_VOXELS = ("1", "2", "3")  # 'Dose Voxel (mm)' values kept (90 rows)
QUICK_STEP = 6  # --quick: every 6th row
#: (label, key in results, reference column, unit of the error)
FIGURES = [("Volume", "volume", "Total Volume (cc)", "%"), ("Dmin", "min", "Dmin", "cGy"),
           ("Dmax", "max", "Dmax", "cGy"), ("Dmean", "mean", "Dmean", "cGy"),
           ("D99", "D99", "D99", "cGy"), ("D95", "D95", "D95", "cGy"), ("D5", "D5", "D5", "cGy"),
           ("D1", "D1", "D1", "cGy"), ("D0.03cc", "D0.03cc", "D0.03cc", "cGy")]
DOSE_TOL_PCT, DOSE_TOL_CGY, VOLUME_TOL_PCT = 1.0, 10.0, 1.0
PEER_INTERP_SEGMENTS = 2  # Nelms, dicompyler interpolated: segments between planes
PEER_INTERP_DIVISOR = 4  # Nelms, dicompyler interpolated: in-plane resolution = spacing / 4
BREAST_INTERP_MM = 1.25  # breast, dicompyler interpolated: in-plane resolution (issue 5: 27.4 s)
ISSUE_PEER_INTERP_S = 27.4
TARGET_BREAST_S = 0.5  # rtkit, all breast ROIs, dose loaded
TARGET_BREAST_RATIO = 50.0  # dicompyler with interpolation / rtkit, at least
TARGET_NELMS_S = 5.0  # rtkit smooth (the default), the 90 rtkit.dvh calls of the Nelms suite
ECLIPSE_MIN_CC, ECLIPSE_VOL_PCT, ECLIPSE_MEAN_PCT = 10.0, 2.0, 1.0
BODY_DOSES = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # Gy: BODY's V(>= d) against Eclipse
REPEAT_BUDGET_S = 300.0  # breast timing: stop repeating (after 1 run) once this has passed
#: Nelms methods; "rtkit smooth" is rtkit.dvh with its defaults
METHODS = ("rtkit smooth", "rtkit slab", "dicompyler", "dicompyler interp")
#: breast timing: (label, dvhs keyword arguments); the first is rtkit's defaults
RT_VARIANTS = [("rtkit dvhs defaults (smooth, workers=1)", {}),
               ("rtkit dvhs smooth, all cores (workers=0)", {"workers": 0}),
               ("rtkit dvhs slab, all cores (workers=0)", {"between_planes": "slab", "workers": 0}),
               ("rtkit dvhs slab, workers=1", {"between_planes": "slab", "workers": 1})]
NOCAP = "rtkit end_caps=False"


# ----------------------------------------------------------------- the dicompyler worker
WORKER_SOURCE = r'''"""dicompyler-core side of benchmarks/bench_dvh.py (written by it; runs in the dicompyler venv).

Reads JSON commands from stdin, one per line, and answers each with one JSON line on stdout:
versions, spacing, rois, dvh, stored, quit.  A get_dvh that raises is answered with "crash"
(the exception), not "error": the benchmark counts it.
"""
import gc
import inspect
import json
import logging
import platform
import sys
import time
import traceback
import warnings
from importlib import metadata

import numpy as np
import pydicom
from dicompylercore import dvh as dvhmod
from dicompylercore import dvhcalc
from dicompylercore.dicomparser import DicomParser

OUT = sys.stdout
sys.stdout = sys.stderr  # keep the answer channel clean
warnings.simplefilter("ignore")
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

STATS = ("D99", "D95", "D5", "D1", "D0.03cc")


def versions():
    out = {"python": platform.python_version(), "numpy": np.__version__, "pydicom": pydicom.__version__}
    for dist in ("dicompyler-core", "scikit-image"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def figures(h):
    """Volume (cm3) and doses (Gy) of a dicompyler cumulative DVH."""
    out = {"volume": float(h.volume), "min": float(h.min), "max": float(h.max), "mean": float(h.mean)}
    for s in STATS:
        out[s] = float(h.statistic(s).value)
    out["notes"] = h.notes
    return out


def cmd_spacing(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {"pixel_spacing": [float(v) for v in ds.PixelSpacing]}


def cmd_rois(path):
    s = DicomParser(path).GetStructures()
    return {"rois": {str(k): v["name"] for k, v in s.items()}}


def run_one(structure, dose, roi, opts):
    kw = dict(opts)
    if kw.get("interpolation_resolution") is not None:
        kw["interpolation_resolution"] = tuple(kw["interpolation_resolution"])
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        h = dvhcalc.get_dvh(structure, dose, roi, **kw)
        res = figures(h)
    except Exception as exc:
        res = {"crash": f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
               "trace": traceback.format_exc()[-2000:]}
    res["wall"], res["cpu"] = time.perf_counter() - t0, time.process_time() - c0
    return res


def cmd_dvh(structure, dose, rois, opts):
    """get_dvh for each ROI in turn; per-ROI results and the total time."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = {str(r): run_one(structure, dose, r, opts) for r in rois}
    return {"rois": out, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def cmd_stored(dose, rois):
    """The DVHSequence items read by dicompyler's DVH.from_dicom_dvh."""
    ds = pydicom.dcmread(dose)
    out = {}
    for r in rois:
        try:
            h = dvhmod.DVH.from_dicom_dvh(ds, r)
            out[str(r)] = {"volume": float(h.volume), "mean": float(h.mean), "max": float(h.max),
                           "min": float(h.min), "D95": float(h.statistic("D95").value),
                           "D5": float(h.statistic("D5").value), "dose_units": str(h.dose_units)}
        except Exception as exc:
            out[str(r)] = {"crash": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
    return {"rois": out}


def main():
    for line in sys.stdin:
        cmd = json.loads(line)
        name = cmd.pop("cmd")
        if name == "quit":
            break
        try:
            res = versions() if name == "versions" else globals()["cmd_" + name](**cmd)
        except Exception:
            res = {"error": traceback.format_exc()}
        print(json.dumps(res), file=OUT, flush=True)


if __name__ == "__main__":
    main()
'''


def ensure_peer(venv: Path) -> tuple[Path | None, str, bool]:
    """The dicompyler venv's python (bench_rtio's venv), with scikit-image added for interpolation.

    Returns (python or None, note, whether scikit-image imports there).
    """
    py, note = ensure_venv(venv)
    if py is None:
        return None, note, False
    check = [str(py), "-c", "import skimage.transform"]
    if subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return py, note, True
    print(f"adding scikit-image to {venv} (dicompyler's interpolation needs it) ...", flush=True)
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "scikit-image"],
                          capture_output=True, text=True, check=False)
    ok = proc.returncode == 0 and subprocess.run(check, capture_output=True, check=False).returncode == 0
    return py, note + ("; scikit-image added" if ok else "; scikit-image did not install"), ok


class Peer(PeerProcess):
    """The dicompyler-core worker, driven over a JSON-lines pipe."""

    def __init__(self, python: Path, worker: Path, log: Path) -> None:
        super().__init__(python, worker, [], log, "dicompyler")


# ----------------------------------------------------------------- rtkit side
def rtkit_figures(h: rtkit.DVH) -> dict[str, Any]:
    """Volume (cm3) and doses (Gy) of an rtkit DVH, named as in FIGURES; V(>= d) in cm3 at BODY_DOSES."""
    return {"volume": h.volume_cc, "min": h.min, "max": h.max, "mean": h.mean,
            "D99": h.dose_at(99), "D95": h.dose_at(95), "D5": h.dose_at(5), "D1": h.dose_at(1),
            "D0.03cc": h.dose_at(0.03, "cc"), "outside": h.outside_volume_cc,
            "V": {d: h.volume_at(d) for d in BODY_DOSES}}


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def _pick_roi(structures: Any, number: int) -> Any:
    for s in structures.values():
        if s.number == number:
            return s
    raise KeyError(f"no ROI number {number} (have {[s.number for s in structures.values()]})")


# ----------------------------------------------------------------- part 1: Nelms
@dataclass
class NelmsRow:
    name: str
    voxel: str
    gradient: str  # 'Z(AP)' or 'Y(SI)'
    ref: dict[str, float]  # figure key -> reference (cc, cGy)
    dose_path: Path
    structure_path: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> figures (cc, cGy) | crash

    @property
    def label(self) -> str:
        return f"{self.name} {self.voxel}mm {'AP' if self.gradient.startswith('Z') else 'SI'}"

    @property
    def shape(self) -> str:
        return self.name.split("_")[0]


def nelms_rows(root: Path, quick: bool) -> list[NelmsRow]:
    base = root / "DVH-Analysis-Data-Etc"
    rows = []
    with open(root / "reference_csv" / "analytical_summary_points.csv", newline="") as f:
        for r in csv.DictReader(f):
            v = r["Dose Voxel (mm)"].strip()
            if v not in NELMS_VOXELS:
                continue
            grad = r["Gradient direction"].strip()
            kind = {"Z(AP)": "AntPost", "Y(SI)": "SupInf"}[grad]
            rows.append(NelmsRow(
                name=r["Structure name"].strip(), voxel=v, gradient=grad,
                ref={key: float(r[col]) for _, key, col, _ in FIGURES},
                dose_path=base / "DOSE GRIDS" / f"Linear_{kind}_{v}mm_Aligned.dcm",
                structure_path=base / "STRUCTURES" / f"{r['Structure name'].strip()}.dcm"))
    return rows[::QUICK_STEP] if quick else rows


def tolerance(key: str, ref: float) -> float:
    """Acceptance tolerance: volume in % of the reference, doses in cGy."""
    return VOLUME_TOL_PCT if key == "volume" else max(DOSE_TOL_PCT / 100.0 * abs(ref), DOSE_TOL_CGY)


def error(key: str, value: float, ref: float) -> float:
    return (value - ref) / ref * 100.0 if key == "volume" else value - ref


def run_rtkit_nelms(row: NelmsRow, kwargs: dict[str, Any]) -> dict[str, Any]:
    """read_dose + read_structures + dvh(**kwargs) for one row; figures in cc and cGy, or a crash."""
    gc.collect()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dose = rtkit.read_dose(row.dose_path)
            structure = _pick_roi(rtkit.read_structures(row.structure_path), NELMS_ROI)
            t1 = time.perf_counter()
            h = rtkit.dvh(dose, structure, **kwargs)
            t2 = time.perf_counter()
            fig = rtkit_figures(h)
    except Exception as exc:  # a crash is counted and reported, never fatal here
        return {"crash": _err(exc), "wall": time.perf_counter() - t0,
                "trace": traceback.format_exc()}
    out: dict[str, Any] = {k: (fig[k] if k == "volume" else fig[k] * 100.0) for _, k, _, _ in FIGURES}
    out.update(wall=t2 - t0, dvh_wall=t2 - t1, warnings=len(caught), outside=fig["outside"])
    return out


def run_peer_nelms(peer: Peer, row: NelmsRow, opts: dict[str, Any]) -> dict[str, Any]:
    r = peer.ask("dvh", structure=str(row.structure_path), dose=str(row.dose_path), rois=[NELMS_ROI],
                 opts=opts)["rois"][str(NELMS_ROI)]
    if "crash" in r:
        return {"crash": r["crash"], "wall": r["wall"], "trace": r.get("trace", "")}
    out = {k: (r[k] if k == "volume" else r[k] * 100.0) for _, k, _, _ in FIGURES}
    out["wall"] = r["wall"]
    return out


def peer_interp_opts(spacing: list[float]) -> dict[str, Any]:
    return {"interpolation_resolution": [s / PEER_INTERP_DIVISOR for s in spacing],
            "interpolation_segments_between_planes": PEER_INTERP_SEGMENTS}


def part_nelms(args: argparse.Namespace, peer: Peer | None, peer_interp: bool, out_dir: Path) -> dict[str, Any]:
    rows = nelms_rows(args.data / NELMS, args.quick)
    spacing_cache: dict[Path, list[float]] = {}
    available = {m: True for m in METHODS}
    if peer is None:
        available["dicompyler"] = available["dicompyler interp"] = False
    if not peer_interp:
        available["dicompyler interp"] = False
    t_start = time.perf_counter()
    for i, row in enumerate(rows):
        row.results["rtkit smooth"] = run_rtkit_nelms(row, {})  # the defaults
        row.results["rtkit slab"] = run_rtkit_nelms(row, {"between_planes": "slab"})
        if available["dicompyler"]:
            row.results["dicompyler"] = run_peer_nelms(peer, row, {})
        if available["dicompyler interp"]:
            if row.dose_path not in spacing_cache:
                spacing_cache[row.dose_path] = peer.ask("spacing", path=str(row.dose_path))["pixel_spacing"]
            row.results["dicompyler interp"] = run_peer_nelms(peer, row, peer_interp_opts(spacing_cache[row.dose_path]))
        if (i + 1) % 10 == 0 or i + 1 == len(rows):
            print(f"  nelms: {i + 1}/{len(rows)} rows, {time.perf_counter() - t_start:.0f} s", file=sys.stderr,
                  flush=True)
    write_rows_csv(rows, out_dir / "nelms_rows.csv")
    return {"rows": rows, "available": available,
            "spacings": sorted({tuple(v) for v in spacing_cache.values()})}


def write_rows_csv(rows: list[NelmsRow], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "method", "crash", "wall_s"]
                   + [f"{label} ref" for label, *_ in FIGURES] + [f"{label} value" for label, *_ in FIGURES]
                   + [f"{label} error ({unit})" for label, _, _, unit in FIGURES])
        for row in rows:
            for method, res in row.results.items():
                vals = [res.get(k, "") for _, k, _, _ in FIGURES]
                errs = ["" if "crash" in res else f"{error(k, res[k], row.ref[k]):.4f}" for _, k, _, _ in FIGURES]
                w.writerow([row.label, method, res.get("crash", ""), f"{res.get('wall', 0):.4f}"]
                           + [row.ref[k] for _, k, _, _ in FIGURES] + vals + errs)


def nelms_stats(rows: list[NelmsRow], method: str) -> dict[str, Any]:
    ran = [r for r in rows if method in r.results]
    ok = [r for r in ran if "crash" not in r.results[method]]
    per_fig = {}
    fails_by_row: dict[str, list[str]] = {}
    for label, key, _, unit in FIGURES:
        errs, out, nan = [], 0, 0
        for r in ok:
            v = r.results[method][key]
            e = error(key, v, r.ref[key]) if v is not None and math.isfinite(v) else float("nan")
            if not math.isfinite(e):
                nan += 1
                out += 1
                fails_by_row.setdefault(r.label, []).append(f"{label} nan")
                continue
            errs.append(abs(e))
            if abs(e) > tolerance(key, r.ref[key]):
                out += 1
                fails_by_row.setdefault(r.label, []).append(f"{label} {e:+.{2 if unit == '%' else 1}f}"
                                                            f"{'%' if unit == '%' else ''}")
        a = np.asarray(errs)
        per_fig[key] = {"median": float(np.median(a)) if a.size else float("nan"),
                        "p95": float(np.percentile(a, 95)) if a.size else float("nan"),
                        "max": float(a.max()) if a.size else float("nan"), "out": out, "nan": nan}
    crashes = [(r.label, r.results[method]["crash"]) for r in ran if "crash" in r.results[method]]
    wall = sum(r.results[method].get("wall", 0.0) for r in ran)
    dvh_wall = sum(r.results[method].get("dvh_wall", 0.0) for r in ok)
    n_warn = sum(r.results[method].get("warnings", 0) for r in ok)
    by_shape: dict[str, int] = {}
    for r in ran:
        if "crash" in r.results[method] or r.label in fails_by_row:
            by_shape[r.shape] = by_shape.get(r.shape, 0) + 1
    return {"n": len(ran), "ok": len(ok), "fig": per_fig, "crashes": crashes, "wall": wall,
            "dvh_wall": dvh_wall, "warnings": n_warn, "fails_by_row": fails_by_row, "by_shape": by_shape}


def print_nelms(res: dict[str, Any], peer_interp_requested: bool) -> list[str]:
    """Print part 1; returns the rtkit crash descriptions."""
    rows: list[NelmsRow] = res["rows"]
    avail = res["available"]
    print(f"1. Nelms analytical suite: {len(rows)} rows (dose voxel 1, 2, 3 mm; 'Z(AP)' rows on "
          "Linear_AntPost_*, 'Y(SI)' rows on Linear_SupInf_*;")
    print(f"   ROI {NELMS_ROI} of STRUCTURES/<Structure name>.dcm). Tolerance: doses max({DOSE_TOL_PCT:g}% of the "
          f"reference, {DOSE_TOL_CGY:g} cGy), volume {VOLUME_TOL_PCT:g}%.")
    spacings = ", ".join("x".join(f"{s:g}" for s in sp) for sp in res["spacings"]) or "-"
    defaults = inspect.signature(rtkit.dvh).parameters
    print("   rtkit smooth: read_dose + read_structures + dvh(dose, roi) per row, rtkit's defaults "
          f"(between_planes={defaults['between_planes'].default!r}, end_caps={defaults['end_caps'].default!r});")
    print("   rtkit slab: the same with between_planes='slab'")
    print("   dicompyler: get_dvh(structure, dose, 2) per row (it reads both files); 'interp' = "
          f"interpolation_resolution = pixel spacing / {PEER_INTERP_DIVISOR}")
    print(f"     (dose pixel spacings {spacings} mm), interpolation_segments_between_planes="
          f"{PEER_INTERP_SEGMENTS}")
    print()
    stats = {m: nelms_stats(rows, m) for m in METHODS if avail[m]}
    print(f"{'method':<20}{'rows':>6}{'crashes':>9}{'rows out of tol':>17}{'total s':>10}{'dvh() s':>10}"
          f"{'warnings':>10}")
    for m in METHODS:
        if not avail[m]:
            why = ("skipped (--no-peer-interp)" if m == "dicompyler interp" and not peer_interp_requested
                   else "not available")
            print(f"{m:<20}  {why}")
            continue
        s = stats[m]
        n_out = sum(1 for r in rows if m in r.results and "crash" not in r.results[m] and r.label in s["fails_by_row"])
        dvh_s = f"{s['dvh_wall']:.1f}" if m.startswith("rtkit") else "-"
        warn_s = str(s["warnings"]) if m.startswith("rtkit") else "-"
        print(f"{m:<20}{s['n']:>6}{len(s['crashes']):>9}{n_out:>12}/{s['ok']:<4}{s['wall']:>10.1f}{dvh_s:>10}"
              f"{warn_s:>10}")
    print("  total s = wall time over all rows (rtkit: reading + dvh; dicompyler: get_dvh, which reads the files,")
    print("  measured in its worker); dvh() s = the rtkit.dvh calls alone; warnings = RTKitWarnings raised by rtkit")
    for m in ("dicompyler", "dicompyler interp"):
        if m not in stats:
            continue
        parts = [f"{stats[m]['wall'] / stats[r]['wall']:.2f}x rtkit {r.split()[1]}" for r in ("rtkit smooth", "rtkit slab")
                 if r in stats and stats[r]["wall"] > 0]
        print(f"  {m} total time = " + ", ".join(parts) + " (totals with reading)")
    if "rtkit smooth" in stats:
        s = stats["rtkit smooth"]
        print(f"  target, rtkit smooth: Nelms suite <= {TARGET_NELMS_S:g} s in dvh(): "
              f"{_verdict(s['dvh_wall'] <= TARGET_NELMS_S)} ({s['dvh_wall']:.2f} s; {s['wall']:.2f} s with the reading "
              f"of the files, {'within' if s['wall'] <= TARGET_NELMS_S else 'over'} {TARGET_NELMS_S:g} s)")
    print()

    shown = [m for m in METHODS if m in stats]
    print("|error| median / p95 / max, and rows out of tolerance (volume in % of the reference, doses in cGy)")
    print(f"{'figure':<10}" + "".join(f"{m:>28}" for m in shown))
    for label, key, _, unit in FIGURES:
        cells = []
        for m in shown:
            f = stats[m]["fig"][key]
            d = 2 if unit == "%" else 1
            cell = f"{f['median']:.{d}f}/{f['p95']:.{d}f}/{f['max']:.{d}f} {f['out']:>3}"
            cells.append(f"{cell:>28}")
        print(f"{label + (' %' if unit == '%' else ''):<10}" + "".join(cells))
    nan_notes = [f"{m} {label}: {stats[m]['fig'][key]['nan']} nan" for m in shown for label, key, _, _ in FIGURES
                 if stats[m]["fig"][key]["nan"]]
    if nan_notes:
        print("  nan figures (counted out of tolerance): " + "; ".join(nan_notes))
    print()

    shapes = sorted({r.shape for r in rows})
    print("rows with any figure out of tolerance or a crash, by shape (rows per shape in brackets)")
    print(f"{'shape':<16}" + "".join(f"{m:>20}" for m in shown))
    for sh in shapes:
        n = sum(1 for r in rows if r.shape == sh)
        print(f"{f'{sh} ({n})':<16}" + "".join(f"{stats[m]['by_shape'].get(sh, 0):>20}" for m in shown))
    print()

    rt_crashes = []
    for m in shown:
        for label, msg in stats[m]["crashes"]:
            print(f"  crash  {m:<18} {label}: {msg}")
            if m.startswith("rtkit"):
                rt_crashes.append(f"nelms {m} {label}: {msg}")
    if not any(stats[m]["crashes"] for m in shown):
        print("  crashes: none")
    for m in ("rtkit smooth", "rtkit slab"):
        if m not in stats:
            continue
        fails = stats[m]["fails_by_row"]
        print(f"  {m}: rows out of tolerance ({len(fails)}), error of each failing figure "
              "(volume %, doses cGy):")
        for label in (r.label for r in rows if r.label in fails):
            print(f"    {label:<26} " + ", ".join(fails[label]))
    print("  every row and method: nelms_rows.csv in the work folder")
    print()
    return rt_crashes


# ----------------------------------------------------------------- part 2: breast timing
def load_breast(data: Path) -> tuple[rtkit.Dose, Any]:
    dose = rtkit.read_dose(data / "rtdose.dcm")
    dose.array  # noqa: B018  (decode before the timer)
    return dose, rtkit.read_structures(data / "rtss.dcm")


def _clock() -> tuple[float, float]:
    """Wall time, and CPU time of this process and of its children that have ended (the forked
    DVH workers; not the long-running dicompyler worker)."""
    t = os.times()
    return time.perf_counter(), t.user + t.system + t.children_user + t.children_system


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _largest_diff(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> float:
    """Largest |difference| of volume, Dmean, Dmax, D95 between two sets of rtkit figures."""
    diffs = [abs(a[n][k] - b[n][k]) for n in a if n in b for k in ("volume", "mean", "max", "D95")
             if a[n][k] is not None and b[n][k] is not None and math.isfinite(a[n][k])]
    return max(diffs, default=0.0)


def part_breast(args: argparse.Namespace, peer: Peer | None, peer_interp: bool) -> dict[str, Any]:
    data = args.data / BREAST
    rtss, rtdose = data / "rtss.dcm", data / "rtdose.dcm"
    out: dict[str, Any] = {"crashes": [], "rt_runs": {label: [] for label, _ in RT_VARIANTS}, "rt_read_runs": [],
                           "pd_runs": [], "pd_interp": None, "per_roi": {"smooth": {}, "slab": {}}, "rt_fig": {},
                           "rt_fig_roi": {}, "rt_fig_nocap": {}, "pd_fig": {}, "pd_interp_fig": {},
                           "workers_auto": _usable_cores(), "variant_diff": {}}
    dose, structures = load_breast(data)
    out["grid"] = dose.grid
    out["rois"] = [(s.number, s.name, s.is_empty) for s in structures.values()]
    rois = [n for n, _, _ in out["rois"]]

    # warm-up: rtkit.dvh per ROI, smooth (defaults) and slab (per-ROI times, fresh objects),
    # rtkit dvhs with end_caps=False once (figures for part 3), then dicompyler defaults once
    for between in ("smooth", "slab"):
        for number, name, _ in out["rois"]:
            dose, structures = load_breast(data)
            gc.collect()
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h = rtkit.dvh(dose, _pick_roi(structures, number),
                                  **({} if between == "smooth" else {"between_planes": "slab"}))
                out["per_roi"][between][number] = time.perf_counter() - t0
                if between == "smooth":
                    out["rt_fig_roi"][number] = rtkit_figures(h)
            except Exception as exc:
                out["per_roi"][between][number] = None
                out["crashes"].append(f"breast rtkit.dvh {between} ROI {number} {name}: {_err(exc)}")
                traceback.print_exc()
    dose, structures = load_breast(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            hs = rtkit.dvhs(dose, structures, end_caps=False)
            out["nocap_wall"] = time.perf_counter() - t0
        out["rt_fig_nocap"] = {s.number: rtkit_figures(hs[s.name]) for s in structures.values()}
    except Exception as exc:
        out["crashes"].append(f"breast rtkit.dvhs end_caps=False: {_err(exc)}")
        traceback.print_exc()
    pd_first = peer.ask("dvh", structure=str(rtss), dose=str(rtdose), rois=rois, opts={}) if peer else None

    # alternating timed runs: the rtkit variants, rtkit read + dvhs (defaults), dicompyler defaults
    t_loop = time.perf_counter()
    rt_warn: list[str] = []
    failed: set[str] = set()
    for i in range(args.repeat):
        for label, kwargs in RT_VARIANTS:
            if label in failed:
                continue
            dose, structures = load_breast(data)
            gc.collect()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    w0, c0 = _clock()
                    hs = rtkit.dvhs(dose, structures, **kwargs)
                    w1, c1 = _clock()
                out["rt_runs"][label].append((w1 - w0, c1 - c0))
                if i == 0:
                    figs = {s.number: rtkit_figures(hs[s.name]) for s in structures.values()}
                    if not kwargs:
                        rt_warn = [f"{w.category.__name__}: {w.message}" for w in caught]
                        out["rt_fig"] = figs
                    else:
                        out.setdefault("variant_figs", {})[label] = figs
            except Exception as exc:
                out["crashes"].append(f"breast {label}: {_err(exc)}")
                traceback.print_exc()
                failed.add(label)
            del dose, structures
            hs = None
            gc.collect()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w0, c0 = _clock()
                dose, structures = load_breast(data)
                rtkit.dvhs(dose, structures)
                w1, c1 = _clock()
            out["rt_read_runs"].append((w1 - w0, c1 - c0))
        except Exception as exc:
            if "read" not in failed:
                out["crashes"].append(f"breast rtkit read + dvhs: {_err(exc)}")
                traceback.print_exc()
            failed.add("read")
        if peer:
            r = peer.ask("dvh", structure=str(rtss), dose=str(rtdose), rois=rois, opts={})
            out["pd_runs"].append((r["wall"], r["cpu"]))
        print(f"  breast: timed run {i + 1}/{args.repeat}, {time.perf_counter() - t_loop:.0f} s", file=sys.stderr,
              flush=True)
        if time.perf_counter() - t_loop > REPEAT_BUDGET_S:
            break
    out["rt_warnings"] = rt_warn
    if out["rt_fig"]:
        # the result must not depend on workers=: compare with the sequential run of the same model
        for label, figs in out.get("variant_figs", {}).items():
            if "smooth" in label:
                out["variant_diff"][label] = _largest_diff(out["rt_fig"], figs)
        slab = out.get("variant_figs", {})
        if RT_VARIANTS[2][0] in slab and RT_VARIANTS[3][0] in slab:
            out["variant_diff"][RT_VARIANTS[3][0]] = _largest_diff(slab[RT_VARIANTS[2][0]], slab[RT_VARIANTS[3][0]])
    else:  # dvhs crashed: the table shows the per-ROI dvh figures of the warm-up
        out["rt_fig"] = out["rt_fig_roi"]
        out["rt_fig_note"] = "rtkit dvhs crashed: rtkit's figures below are from dvh per ROI (warm-up)"
    if pd_first:
        out["pd_fig"] = {int(k): v for k, v in pd_first["rois"].items()}
        out["pd_first"] = pd_first
    if peer and peer_interp:
        opts = {"interpolation_resolution": [BREAST_INTERP_MM, BREAST_INTERP_MM]}
        r = peer.ask("dvh", structure=str(rtss), dose=str(rtdose), rois=rois, opts=opts)
        out["pd_interp"] = (r["wall"], r["cpu"])
        out["pd_interp_fig"] = {int(k): v for k, v in r["rois"].items()}
    if peer:
        out["stored_pd"] = {int(k): v for k, v in peer.ask("stored", dose=str(rtdose), rois=rois)["rois"].items()}
    return out


def _best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return min(w for w, _ in runs), min(c for _, c in runs)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_breast(b: dict[str, Any], repeat: int) -> None:
    g = b["grid"]
    shape = tuple(int(v) for v in g.shape)
    n_empty = sum(1 for *_, e in b["rois"] if e)
    print(f"2. Breast plan (dicompyler-core example): {len(b['rois'])} ROIs ({n_empty} empty), dose "
          f"{shape[2]}x{shape[1]}x{shape[0]} (columns x rows x frames) at "
          f"{'x'.join(f'{s:g}' for s in g.spacing[::-1])} mm; usable cores = {b['workers_auto']}")
    rows = [(label, runs) for label, runs in b["rt_runs"].items() if runs]
    if b["rt_read_runs"]:
        rows.append(("rtkit read_dose + read_structures + dvhs defaults", b["rt_read_runs"]))
    if b["pd_runs"]:
        rows.append(("dicompyler get_dvh x ROIs, defaults", b["pd_runs"]))
    if b["pd_interp"]:
        rows.append((f"dicompyler get_dvh x ROIs, {BREAST_INTERP_MM:g} mm in-plane", [b["pd_interp"]]))
    pd = _best(b["pd_runs"])[0] if b["pd_runs"] else None
    pdi = b["pd_interp"][0] if b["pd_interp"] else None
    print(f"{'method':<50}{'best s':>8}{'CPU s':>8}{'runs':>5}{'dcp/rtkit':>11}{'dcp interp/rtkit':>18}")
    for label, runs in rows:
        w, c = _best(runs)
        r1 = f"{pd / w:.2f}x" if pd and label.startswith("rtkit") else "-"
        r2 = f"{pdi / w:.2f}x" if pdi and label.startswith("rtkit") else "-"
        print(f"{label:<50}{w:>8.3f}{c:>8.3f}{len(runs):>5}{r1:>11}{r2:>18}")
    print(f"  best of the runs after one warm-up; the rtkit variants and dicompyler's defaults run in turn ({repeat} "
          "asked for; no new")
    print(f"  round starts after {REPEAT_BUDGET_S:g} s); dicompyler with interpolation runs once. rtkit: fresh Dose "
          "and StructureSet for every run")
    print("  (read and decoded before the timer, so no cache carries over); dicompyler: get_dvh(rtss path, rtdose path, "
          "roi) for each")
    print("  ROI (it reads both files per ROI, as its API does). dcp/rtkit = dicompyler's best time / rtkit's; "
          "CPU s = process CPU time")
    print("  (all threads, and the forked workers).")
    print("  all runs, wall s:")
    for label, runs in rows:
        print(f"    {label:<50}" + " ".join(f"{w:.3f}" for w, _ in runs))
    if pdi is not None:
        print(f"  dicompyler with {BREAST_INTERP_MM:g} mm interpolation: issue 5 measured {ISSUE_PEER_INTERP_S:g} s, "
              f"here {pdi:.1f} s")
    default = RT_VARIANTS[0][0]
    if b["rt_runs"][default]:
        for label, runs in b["rt_runs"].items():
            if not runs:
                continue
            rt = _best(runs)[0]
            head = "defaults" if label == default else label.removeprefix("rtkit dvhs ")
            ratio = f"{_verdict(pdi / rt >= TARGET_BREAST_RATIO)} ({pdi / rt:.1f}x)" if pdi else "n/a (not run)"
            print(f"  targets, {head + ':':<20} all ROIs <= {TARGET_BREAST_S:g} s: "
                  f"{_verdict(rt <= TARGET_BREAST_S)} ({rt:.3f} s); >= {TARGET_BREAST_RATIO:g}x dicompyler with "
                  f"interpolation: {ratio}")
        print("  (the targets are for the smooth model, the default: 'defaults' is one process, 'smooth, all cores'")
        print("  uses this 2-core machine whole; the slab variants are for information)")
    else:
        print("  rtkit dvhs crashed: no timing")
    for label, diff in b["variant_diff"].items():
        ref = "the defaults" if "smooth" in label else RT_VARIANTS[2][0].removeprefix("rtkit dvhs ")
        print(f"  {label.removeprefix('rtkit dvhs ')} against {ref}: largest difference in volume (cc), Dmean, "
              f"Dmax, D95 (Gy) over the ROIs: {diff:.3g}")
    if "nocap_wall" in b:
        print(f"  rtkit dvhs end_caps=False (figures for part 3), one run: {b['nocap_wall']:.3f} s")
    print()
    pd_first = b.get("pd_first", {}).get("rois", {})
    print("per ROI, one run each, wall s (rtkit: dvh(dose, roi) with fresh objects, in the warm-up)")
    print(f"  {'ROI':<22}{'rtkit smooth':>13}{'rtkit slab':>12}{'dicompyler':>12}{'interp':>9}")
    for number, name, empty in b["rois"]:
        cells = []
        for between in ("smooth", "slab"):
            rt = b["per_roi"][between].get(number)
            cells.append("crash" if rt is None else f"{rt:.3f}")
        pd1 = pd_first.get(str(number), {}).get("wall")
        pdi1 = b["pd_interp_fig"].get(number, {}).get("wall")
        print(f"  {f'{number} {name}' + (' (empty)' if empty else ''):<22}{cells[0]:>13}{cells[1]:>12}"
              f"{'-' if pd1 is None else f'{pd1:.3f}':>12}{'-' if pdi1 is None else f'{pdi1:.3f}':>9}")
    if b["rt_warnings"]:
        print(f"  rtkit warned {len(b['rt_warnings'])} time(s) in dvhs: " + "; ".join(b["rt_warnings"])[:300])
    print()


# ----------------------------------------------------------------- part 3: Eclipse
def _pct(a: float | None, ref: float | None) -> float | None:
    if a is None or ref is None or not (math.isfinite(a) and math.isfinite(ref)) or ref == 0:
        return None
    return (a - ref) / ref * 100.0


def _cell(x: float | None, w: int, d: int) -> str:
    return f"{x:>{w}.{d}f}" if x is not None and math.isfinite(x) else f"{'-':>{w}}"


def read_eclipse(b: dict[str, Any], data: Path) -> tuple[dict[int, dict[str, Any] | str], list[str]]:
    """The stored (Eclipse) DVH figures per ROI number, or why there are none; rtkit's warnings."""
    dose = rtkit.read_dose(data / BREAST / "rtdose.dcm")
    eclipse: dict[int, dict[str, Any] | str] = {}
    notes: list[str] = []
    for number, name, _ in b["rois"]:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                h = rtkit.DVH.from_dicom(dose, number, name=name)
            eclipse[number] = rtkit_figures(h)
            notes += [f"ROI {number}: {w.message}" for w in caught]
        except KeyError as exc:
            eclipse[number] = str(exc.args[0]) if exc.args else "no stored DVH"
    return eclipse, notes


def print_eclipse(b: dict[str, Any], data: Path) -> None:
    eclipse, notes = read_eclipse(b, data)
    print("3. Breast plan vs the TPS (Eclipse) DVHs stored in rtdose.dcm (DVHSequence; read with "
          "rtkit.DVH.from_dicom(dose, roi.number))")
    print("   diff % = (value - Eclipse) / Eclipse. FLAG: Eclipse volume > "
          f"{ECLIPSE_MIN_CC:g} cc and |volume diff| > {ECLIPSE_VOL_PCT:g}% or |Dmean diff| > {ECLIPSE_MEAN_PCT:g}%")
    print("   sources: rtkit = dvhs defaults (smooth, half-slice end caps); rtkit end_caps=False = dvhs(..., "
          "end_caps=False), Eclipse's")
    print("   convention (the solid stops at the first and last planes); Eclipse = stored DVH via rtkit; Eclipse (dcp) "
          "= the same via")
    print(f"   dicompyler's DVH.from_dicom_dvh; dicompyler = get_dvh defaults; dcp {BREAST_INTERP_MM:g} mm = get_dvh "
          f"with {BREAST_INTERP_MM:g} mm in-plane interpolation. Doses in Gy.")
    if b.get("rt_fig_note"):
        print("   " + b["rt_fig_note"])
    print(f"  {'ROI':<20}{'source':<22}{'volume cc':>11}{'diff %':>8}{'Dmean':>9}{'diff %':>8}{'D95':>8}{'diff %':>8}"
          f"{'D5':>8}{'Dmax':>8}  flag")
    flagged: dict[str, list[str]] = {}
    stored_pd = b.get("stored_pd", {})
    dcp_interp = f"dcp {BREAST_INTERP_MM:g} mm"
    for number, name, empty in b["rois"]:
        ref = eclipse[number]
        sources: list[tuple[str, dict[str, Any] | None]] = [
            ("rtkit", b["rt_fig"].get(number)),
            (NOCAP, b["rt_fig_nocap"].get(number)),
            ("Eclipse", ref if isinstance(ref, dict) else None),
            ("Eclipse (dcp)", stored_pd.get(number)),
            ("dicompyler", b["pd_fig"].get(number)),
            (dcp_interp, b["pd_interp_fig"].get(number)),
        ]
        label = f"{number} {name}" + (" (empty)" if empty else "")
        first = True
        for src, fig in sources:
            head = f"  {label if first else '':<20}{src:<22}"
            first = False
            if src == "Eclipse" and not isinstance(ref, dict):
                print(head + "no stored DVH for this ROI")
                continue
            if fig is None:
                print(head + "-")
                continue
            if "crash" in fig:
                what = "not read" if src == "Eclipse (dcp)" else "crash"
                print(head + f"{what}: {fig['crash']}"[:100])
                continue
            if fig.get("volume", 0) <= 0:
                print(head + "empty (volume 0)")
                continue
            r = ref if isinstance(ref, dict) else {}
            dv, dm, d95 = (_pct(fig.get(k), r.get(k)) for k in ("volume", "mean", "D95"))
            flag = ""
            if src not in ("Eclipse", "Eclipse (dcp)") and r and r["volume"] > ECLIPSE_MIN_CC:
                bad = []
                if dv is not None and abs(dv) > ECLIPSE_VOL_PCT:
                    bad.append(f"volume {dv:+.1f}%")
                if dm is not None and abs(dm) > ECLIPSE_MEAN_PCT:
                    bad.append(f"Dmean {dm:+.1f}%")
                if bad:
                    flag = "FLAG"
                    flagged.setdefault(src, []).append(f"{name} ({', '.join(bad)})")
            show_diff = src != "Eclipse"
            print(head + _cell(fig["volume"], 11, 3) + (_cell(dv, 8, 2) if show_diff else f"{'':>8}")
                  + _cell(fig["mean"], 9, 3) + (_cell(dm, 8, 2) if show_diff else f"{'':>8}")
                  + _cell(fig["D95"], 8, 3) + (_cell(d95, 8, 2) if show_diff else f"{'':>8}")
                  + (_cell(fig["D5"], 8, 3) + _cell(fig["max"], 8, 3) + f"  {flag}").rstrip())
    print(f"  acceptance targets (ROIs > {ECLIPSE_MIN_CC:g} cc: volume within {ECLIPSE_VOL_PCT:g}%, Dmean within "
          f"{ECLIPSE_MEAN_PCT:g}% of Eclipse):")
    ran = {"rtkit": bool(b["rt_fig"]), NOCAP: bool(b["rt_fig_nocap"]), "dicompyler": bool(b["pd_fig"]),
           dcp_interp: bool(b["pd_interp_fig"])}
    for src, did in ran.items():
        items = flagged.get(src, [])
        print(f"    {src:<21} " + (f"{len(items)} ROI(s) out" + (": " + "; ".join(items) if items else "")
                                  if did else "not run"))
    if notes:
        print(f"  rtkit.DVH.from_dicom warned {len(notes)} time(s), e.g. {notes[0][:200]}")
    print()
    print_explanations(b, eclipse)


def print_explanations(b: dict[str, Any], eclipse: dict[int, dict[str, Any] | str]) -> None:
    """BODY's V(>= d) against Eclipse, and what the end caps and BODY's low-dose volume account for."""
    have = [(n, name) for n, name, empty in b["rois"] if not empty and isinstance(eclipse[n], dict)
            and n in b["rt_fig"] and n in b["rt_fig_nocap"]]
    if not have:
        return
    body = next((x for x in have if x[1].upper() == "BODY"), max(have, key=lambda x: eclipse[x[0]]["volume"]))
    e, rt, nc = eclipse[body[0]], b["rt_fig"][body[0]], b["rt_fig_nocap"][body[0]]
    assert isinstance(e, dict)
    print(f"  {body[1]}: V(>= d) in cc, rtkit and Eclipse (d = 0: the whole volume)")
    print(f"    {'d Gy':>6}{'Eclipse':>11}{'rtkit':>11}{'diff cc':>10}{'diff %':>8}{NOCAP:>22}{'diff cc':>10}"
          f"{'diff %':>8}")
    for d in (0.0, *BODY_DOSES):
        ve, vr, vn = ((x["volume"] if d == 0 else x["V"][d]) for x in (e, rt, nc))
        print(f"    {d:>6g}{ve:>11.1f}{vr:>11.1f}{vr - ve:>+10.1f}{_cell(_pct(vr, ve), 8, 2)}{vn:>22.1f}"
              f"{vn - ve:>+10.1f}{_cell(_pct(vn, ve), 8, 2)}")
    lo = BODY_DOSES[0]
    gap_total, gap_lo = nc["volume"] - e["volume"], nc["V"][lo] - e["V"][lo]
    above = max(abs(_pct(nc["V"][d], e["V"][d]) or 0.0) for d in BODY_DOSES[1:])
    ir, ie = nc["volume"] * nc["mean"], e["volume"] * e["mean"]
    print("  explanations:")
    print(f"    {body[1]}: with end_caps=False rtkit's volume exceeds Eclipse's by {gap_total:.0f} cc, of which "
          f"{gap_total - gap_lo:.0f} cc lies below {lo:g} Gy")
    print(f"      (V(>= {lo:g} Gy) differs by {gap_lo:+.0f} cc, from {BODY_DOSES[1]:g} Gy up by at most {above:.2f}%); "
          f"volume x Dmean: rtkit {ir:.0f} Gy cc,")
    print(f"      Eclipse {ie:.0f} Gy cc ({_pct(ir, ie):+.2f}%), so the missing volume is nearly dose-free "
          f"(about {(ir - ie) / gap_total if gap_total else 0:.3f} Gy on average).")
    print("    end caps (rtkit default minus end_caps=False, and each against Eclipse's volume):")
    print(f"      {'ROI':<18}{'Eclipse cc':>11}{'caps cc':>9}{'rtkit %':>9}{NOCAP + ' %':>23}")
    for n, name in have:
        ev, v1, v0 = eclipse[n]["volume"], b["rt_fig"][n]["volume"], b["rt_fig_nocap"][n]["volume"]
        print(f"      {name:<18}{ev:>11.3f}{v1 - v0:>9.3f}{_cell(_pct(v1, ev), 9, 2)}{_cell(_pct(v0, ev), 23, 2)}")
    big = [(n, name) for n, name in have if eclipse[n]["volume"] > ECLIPSE_MIN_CC and (n, name) != body]
    if big:
        worst = {src: {k: max(abs(_pct(b[key][n][k], eclipse[n][k]) or 0.0) for n, _ in big) for k in ("volume", "mean")}
                 for src, key in (("rtkit", "rt_fig"), ("end_caps=False", "rt_fig_nocap"))}
        print(f"      ROIs > {ECLIPSE_MIN_CC:g} cc except {body[1]}, largest |diff| against Eclipse: "
              + "; ".join(f"{src} volume {w['volume']:.2f}%, Dmean {w['mean']:.2f}%" for src, w in worst.items()))
    print()


# ----------------------------------------------------------------- part 4: memory


def child_memory(mode: str, data: Path) -> None:
    """In a fresh process: rtkit dvhs of every breast ROI once; print the peak as JSON.

    ``mode`` is "<measure>:<workers>", measure "rss" or "tracemalloc", workers "1" or "auto".
    """
    measure, workers = mode.split(":")
    kwargs: dict[str, Any] = {"workers": 0} if workers == "auto" else {"workers": int(workers)}
    warnings.simplefilter("ignore")
    # Warm-up on the smallest non-empty ROI with its own objects, so that lazy imports are done.
    dose, structures = load_breast(data)
    small = min((s for s in structures.values() if not s.is_empty), key=lambda s: s.volume)
    rtkit.dvh(dose, small)
    del dose, structures, small
    dose, structures = load_breast(data)
    gc.collect()
    out: dict[str, Any] = {"mode": mode, "voxels": int(dose.array.size)}
    workers_peaks = _watch_forked_workers(measure)
    if measure == "rss":
        out["reset_ok"] = reset_peak()
        before, file_before = proc_status("VmRSS"), proc_status("RssFile")
        hs = rtkit.dvhs(dose, structures, **kwargs)
        file_pages = max(0, proc_status("RssFile") - file_before)
        out["peak_delta"] = max(0, proc_status("VmHWM") - before - file_pages)
        out["held_delta"] = max(0, proc_status("VmRSS") - before - file_pages)
        out["file_pages"] = [file_pages]
    else:
        tracemalloc.start()
        hs = rtkit.dvhs(dose, structures, **kwargs)
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_delta"], out["held_delta"] = peak, cur
    out["parent_delta"] = out["peak_delta"]
    out["children"], child_files = workers_peaks()
    out["file_pages"] = out.get("file_pages", []) + child_files
    out["peak_delta"] += sum(out["children"])  # as if every worker peaked at the same moment
    out["n"] = len(hs)
    print(json.dumps(out))


def _watch_forked_workers(measure: str):
    """Make every process that ``dvhs`` forks report its own peak (VmHWM over its VmRSS when it
    took its first task, the peak reset then; or its tracemalloc peak over what it held then):
    returns a function giving the peaks (bytes), one per forked worker, and the file-backed pages
    each mapped in meanwhile.  The calling process's own work is measured by the caller as before.

    A forked process starts without the file-backed pages of its parent in its page tables (Linux
    copies those lazily): as it runs it maps in numpy's, scipy's and Python's code again, which is
    already in memory and shared with the parent.  VmHWM counts those pages; they are not new
    memory, so the growth of RssFile (which only grows: code stays mapped) is taken off the peak."""
    import importlib
    import tempfile

    dvh_module = importlib.import_module("rtkit.dvh")
    task = dvh_module._part_task
    parent = os.getpid()
    folder = Path(tempfile.mkdtemp(prefix="rtkit-dvh-mem-"))
    base: dict[str, int] = {}

    def measured(key, index):
        if os.getpid() == parent:
            return task(key, index)
        if not base:  # this worker's first task
            if measure == "rss":
                reset_peak()
                base["b"] = proc_status("VmRSS")
                base["f"] = proc_status("RssFile")
            else:
                tracemalloc.reset_peak()
                base["b"] = tracemalloc.get_traced_memory()[0]
        result = task(key, index)
        files = max(0, proc_status("RssFile") - base["f"]) if measure == "rss" else 0
        peak = (proc_status("VmHWM") if measure == "rss" else tracemalloc.get_traced_memory()[1]) - base["b"] - files
        (folder / f"{os.getpid()}.txt").write_text(f"{max(0, peak)} {files}")
        return result

    def peaks() -> tuple[list[int], list[int]]:
        rows = [[int(v) for v in f.read_text().split()] for f in sorted(folder.glob("*.txt"))]
        return [r[0] for r in rows], [r[1] for r in rows]

    dvh_module._part_task = measured
    return peaks


def print_memory(data: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--data", str(data), "--child"]
    res, crashes = {}, []
    for workers in ("1", "auto"):
        for measure in ("rss", "tracemalloc"):
            mode = f"{measure}:{workers}"
            try:
                res[mode] = run_json(cmd + [mode], f"rtkit memory child ({mode})")
            except Exception as exc:  # the child's traceback is in the message
                crashes.append(f"memory child ({mode}): {str(exc).strip().splitlines()[-1][:200]}")
    print("4. rtkit peak memory, all breast ROIs (dvhs with the defaults: smooth), each measure in its own fresh "
          "subprocess")
    if not res:
        print("  the memory children crashed: " + "; ".join(crashes))
        print()
        return crashes
    nvox = next(iter(res.values()))["voxels"]
    budget = 3 * 4 * nvox + nvox
    print(f"  budget = 3 x float32 dose grid ({_mib(12 * nvox)}) + one bool mask on the dose grid "
          f"({_mib(nvox)}; the largest ROI's mask")
    print(f"  on the dose grid is this size) = {_mib(budget)} ({budget / 2**20:.1f} MiB)")
    print(f"  {'workers':<10}{'measure':<38}{'peak +':>12}{'x budget':>10}{'held after':>12}  result")
    labels = {"rss": "VmHWM - VmRSS before - code pages", "tracemalloc": "tracemalloc peak"}
    for mode, r in res.items():
        measure, workers = mode.split(":")
        ratio = r["peak_delta"] / budget
        wl = f"{_usable_cores()} (auto)" if workers == "auto" else workers
        print(f"  {wl:<10}{labels[measure]:<38}{r['peak_delta'] / 2**20:>8.1f} MiB{ratio:>9.2f}x"
              f"{r['held_delta'] / 2**20:>8.1f} MiB  {_verdict(ratio <= 1)}")
        if r.get("children"):
            parts = " + ".join(f"{c / 2**20:.1f}" for c in r["children"])
            print(f"  {'':<10}  = calling process {r['parent_delta'] / 2**20:.1f} MiB + forked worker(s) {parts} MiB")
        if measure == "rss" and r.get("file_pages"):
            files = " + ".join(f"{c / 2**20:.1f}" for c in r["file_pages"])
            print(f"  {'':<10}  file-backed pages mapped in meanwhile, not counted: {files} MiB")
    if any(not r.get("reset_ok", True) for r in res.values()):
        print("  (could not reset VmHWM through /proc/self/clear_refs: the RSS peak includes the loading)")
    print("  dose read and decoded and structures read before the measure; a warm-up dvh on the smallest ROI")
    print("  (other objects) first, so lazy imports are not counted; held after = still allocated after dvhs")
    print("  (the DVHs themselves, plus for RSS what the allocator keeps); code pages = growth of RssFile: a forked")
    print("  worker maps numpy's, scipy's and Python's code in again (Linux copies file-backed page tables lazily),")
    print("  pages already in memory and shared with the calling process, so not new memory")
    for c in crashes:
        print(f"  crash  {c}")
    print()
    return crashes


# ----------------------------------------------------------------- main
def machine_facts() -> list[str]:
    import shapely

    return _machine_facts(f"shapely: {shapely.__version__}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder (default %(default)s)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help=f"shared data folder with {NELMS}/ and {BREAST}/ (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=5, help="timed breast runs per method, best kept (default 5)")
    ap.add_argument("--quick", action="store_true", help=f"every {QUICK_STEP}th Nelms row only (15 rows)")
    ap.add_argument("--no-peer-interp", action="store_true",
                    help="skip dicompyler with interpolation (about 5 min on the Nelms suite)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--child", metavar="MODE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.data = args.data.resolve()
    if args.child:
        child_memory(args.child, args.data / BREAST)
        return 0
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    work = args.work.resolve()
    needed = [args.data / NELMS / "reference_csv" / "analytical_summary_points.csv",
              args.data / BREAST / "rtss.dcm", args.data / BREAST / "rtdose.dcm"]
    for p in needed:
        if not p.is_file():
            print(f"data not found: {p}", file=sys.stderr)
            return 2

    peer_py, venv_note, has_skimage = ensure_peer(work / "dicompyler-venv")
    out_dir = work / "dvh"
    out_dir.mkdir(parents=True, exist_ok=True)
    peer = None
    if peer_py is not None:
        worker = out_dir / "dicompyler_worker.py"
        if not worker.is_file() or worker.read_text() != WORKER_SOURCE:
            worker.write_text(WORKER_SOURCE)
        log = out_dir / "worker.log"
        log.unlink(missing_ok=True)
        peer = Peer(peer_py, worker, log)
    peer_interp = peer is not None and has_skimage and not args.no_peer_interp
    rt_crashes: list[str] = []
    try:
        print("rtkit DVH benchmark: rtkit vs dicompyler-core")
        for line in machine_facts():
            print("  " + line)
        if peer:
            v = peer.ask("versions")
            pv = ", ".join(f"{k} {v[k]}" for k in ("dicompyler-core", "pydicom", "numpy", "scikit-image", "python"))
            print(f"  peer:     {pv} (in {work / 'dicompyler-venv'}, {venv_note})")
        else:
            print(f"  peer:     dicompyler-core unavailable ({venv_note}): rtkit only")
        if peer and not has_skimage:
            print("  peer:     no scikit-image in its venv: dicompyler's interpolation not run")
        print(f"  data:     {args.data / NELMS}, {args.data / BREAST}")
        print(f"  options:  repeat {args.repeat}{', quick' if args.quick else ''}"
              f"{', no peer interpolation' if args.no_peer_interp else ''}")
        print(f"  load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at start")
        print()

        t0 = time.perf_counter()
        nelms = part_nelms(args, peer, peer_interp, out_dir)
        rt_crashes += print_nelms(nelms, not args.no_peer_interp)
        print(f"  (part 1 took {time.perf_counter() - t0:.0f} s)", file=sys.stderr)

        breast = part_breast(args, peer, peer_interp)
        rt_crashes += breast["crashes"]
    finally:
        if peer:
            peer.close()
    print_breast(breast, args.repeat)
    print_eclipse(breast, args.data)
    if not args.no_memory:
        rt_crashes += print_memory(args.data)

    print("result")
    if rt_crashes:
        for c in rt_crashes:
            print(f"  FAIL  rtkit crashed: {c}")
    else:
        print("  PASS  no rtkit run crashed")
    print("  (accuracy and speed targets print FAIL above but do not change the exit status)")
    return 1 if rt_crashes else 0


if __name__ == "__main__":
    sys.exit(main())

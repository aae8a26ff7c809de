"""3-D gamma benchmark: ``rtkit.gamma`` against ``pymedphys.gamma``, side by side.

pymedphys runs in its own virtual environment, ``benchmarks/_work/pymedphys-venv``
(created on first use with ``python -m venv`` + ``pip install pymedphys numba numpy
pydicom``; rtkit never depends on it). A plain ``pip install pymedphys`` brings only
tomlkit and typing-extensions: ``pymedphys.gamma`` imports numpy and numba lazily (its
default ``interp_algo="pymedphys"`` is a numba kernel; scipy is needed only for
``interp_algo="scipy"``), and pydicom is for its own DICOM reader, used here as a geometry
check. Each tool runs in a worker process of its own (pymedphys: a script this one writes
to ``_work/gamma/``, run by the venv's python; rtkit: this script with ``--rtkit-worker``,
run by this interpreter), driven over a JSON-lines pipe, so the runs alternate and each
tool's peak memory (VmHWM, reset with ``/proc/self/clear_refs`` before every call) is its
own. Both workers read the same arrays from ``.npy`` files under ``_work/gamma/CASE/`` and
write their gamma maps back as ``.npy``; timings come back as JSON.

Cases:

* ``breast``: the dicompyler-core breast dose (``dicompyler-core/rtdose.dcm``, 194 x 129 x
  98, 2.5 x 2.5 x 3 mm, read with ``rtkit.read_dose``). Reference = that dose (float32, as
  read). Evaluated = the same voxels times 1.02 (float64) on a grid whose origin is moved
  by ``SHIFT_MM`` = (+1.0, +0.5, +1.0) mm in (x, y, z) LPS, a 1.5 mm shift along (2, 1, 2)/3
  (new affine, same voxels: no interpolation is involved in making it).
* ``synthetic``: a 40 x 40 x 40 grid (2 x 2.5 x 3 mm along x, y, z, centred on the origin), a
  Gaussian dose (peak 2 Gy, sigma 16, 20 and 24 mm along x, y and z: distinct, so that an
  axis mix-up changes the answer) against the same scaled and shifted the same way.

Criteria: 3%/3 mm global and 2%/2 mm local, both with a 10% lower cutoff (of the reference
maximum) and max_gamma 2. rtkit: ``rtkit.gamma(reference, evaluated, dose_percent=D,
distance_mm=d, local=L, lower_cutoff_percent=10, max_gamma=2)``. pymedphys:
``pymedphys.gamma(axes_reference, dose_reference, axes_evaluation, dose_evaluation, D, d,
lower_percent_dose_cutoff=10, interp_fraction=10, max_gamma=2, local_gamma=L,
global_normalisation=None, random_subset=None, ram_available=1.5 GiB)``, i.e. its default
"shell" method (``gamma_shell``; the "filter" method of ``gamma_percent_pass`` swaps the
dose and distance criteria) with numba interpolation, its default RAM budget, global
normalisation to the reference maximum (its default), no random subset (deterministic).
Its axes are the 1-D coordinates (mm) of each array axis, in the array's (slice, row,
column) order, built from rtkit's affine (the grid must be axis-aligned; an axis with a
negative step is flipped, since pymedphys' interpolation needs increasing coordinates);
for the breast dose they are checked against pymedphys' own DICOM reader
(``zyx_and_dose_from_dataset``).

Reported per case and criterion: pass rates (percent) of both and their difference (target
within 0.2 percentage points), voxels evaluated by each (non-NaN) and reference voxels
>= the cutoff, mean gamma (values capped at max_gamma, as pymedphys does), per-voxel
|gamma difference| where both are below 1.5 (target max <= 0.03; 99th percentile and the
number of voxels over 0.03), best wall and CPU time (process, all threads) of each,
pymedphys/rtkit time ratio (target >= 10x on the breast case), and peak memory (VmHWM of
each tool's worker during the call; target rtkit < 2 GB). Pass rates: pymedphys' rule
(gamma < 1 over the non-NaN voxels) for pymedphys; rtkit's own ``pass_rate`` for rtkit
(a fraction is converted to percent), with pymedphys' rule applied to rtkit's map alongside.

Spot check (accuracy, independent of both tools): at ``--spot`` (default 300) reference
voxels >= the cutoff, drawn with a fixed seed, gamma by exhaustive search: every offset of
a cubic lattice of step distance/10 inside the sphere of radius max_gamma x distance, then
Gauss-Newton descent from the origin and the 8 best lattice offsets (checked against a
multi-start Nelder-Mead while writing this script: equal to 1e-15), the evaluated dose
trilinear between its voxels (scipy ``map_coordinates``) at positions from the evaluated
grid's affine. Each map is compared with it where it is below max_gamma (target: rtkit
within 0.01, the issue's accuracy). pymedphys' search visits a subset of those positions
with the same interpolation, so it can only be higher: a value below the exhaustive one
would mean misplaced axes (a correctness check). It is higher: its search distances go in
steps of distance/interp_fraction and it stops as soon as gamma <= distance/distance
threshold, so a minimum between two steps is missed; with interp_fraction 10 it
overestimates gamma by up to about 0.08 (3%/3 mm global) and 0.15 (2%/2 mm local) at the
spot voxels, 0.17 and 0.36 over the whole breast map, most where gamma is small, which
bounds how close an exact rtkit can come to it per voxel.

Per-voxel agreement, refined: pymedphys' gamma is an upper bound of the exact gamma (a minimum
over a subset of the candidate points) that converges to it as its step distance/F shrinks.
At the voxels where its map and rtkit's differ by more than 0.03 (rtkit below 1.5), pymedphys
runs again with interp_fraction F = ``--peer-refine`` (default 40, then 100 where they still
differ), the other reference voxels NaN so that only those are evaluated (their gamma is that
of a whole-map run at that F: each reference voxel's search is independent) and its
normalisation given as its default, the reference maximum. Reported: per step the voxels
rerun, their largest difference before and after; then the per-voxel comparison with each
voxel's finest pymedphys value (target max <= 0.03) and the largest amount by which rtkit
is *above* pymedphys (must be <= 0.001, rtkit's descent tolerance: both are upper bounds of
the exact gamma, so rtkit above pymedphys would mean that rtkit missed a minimum; this is a
correctness check).

Runs: one pymedphys warm-up call (numba compilation) when its worker starts; then per
criterion ``--repeat`` alternating runs of each tool, best wall and CPU time kept, the
first run's map evaluated. pymedphys runs after the first are skipped when the first took
more than ``--peer-slow`` seconds (default 120; it then says so). Every run must reproduce
the first run's map exactly (checked for rtkit; reported for pymedphys). Identical doses
(evaluated = reference) must give gamma 0 with both tools.

Run:  .venv/bin/python benchmarks/bench_gamma.py [--repeat N] [--cases breast,synthetic]
      [--peer-slow S] [--peer-refine F1,F2] [--spot N] [--work DIR] [--data DIR]
Exit status 1 if a correctness check fails (an rtkit crash, identical doses not giving 0,
an irreproducible rtkit map, rtkit's map not on the reference grid or its pass_rate not
matching its map, rtkit above pymedphys, pymedphys' geometry disagreeing with its own DICOM reader or pymedphys
below the exhaustive search); missed targets only print FAIL.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import textwrap
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from _common import PeerProcess, peer_venv, proc_status, reset_peak
from _common import machine_facts as _machine_facts

import rtkit

# ----------------------------------------------------------------- parameters
HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "_work"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"
BREAST_DOSE = "dicompyler-core/rtdose.dcm"
CASE_KEYS = ("breast", "synthetic")
SCALE = 1.02  # evaluated = SCALE x reference
SHIFT_MM = (1.0, 0.5, 1.0)  # x, y, z (LPS): the evaluated grid's origin moves by this; |shift| = 1.5 mm
CUTOFF = 10.0  # percent of the reference maximum
MAX_GAMMA = 2.0
INTERP_FRACTION = 10  # pymedphys: search step = distance / 10
PEER_RAM = int(2**30 * 1.5)  # pymedphys' default ram_available
COMPARE_BELOW = 1.5  # per-voxel comparison where both gammas are below this
REFINE = (40, 100)  # pymedphys interp_fraction ladder where its map differs from rtkit's (--peer-refine)
ABOVE_TOL = 1e-3  # rtkit may exceed pymedphys by its descent tolerance (distance/1000) only
TARGETS = {"pass": 0.2, "gamma": 0.03, "speed": 10.0, "memory": 2e9, "exact": 0.01}
IDENTICAL_TOL = 1e-4  # gamma of identical doses (float32 dose arithmetic gives about 1e-6)
SYN_SHAPE = (40, 40, 40)
SYN_SPACING = (3.0, 2.5, 2.0)  # slice (z), row (y), column (x) mm: distinct, like the sigmas
SYN_SIGMA = (16.0, 20.0, 24.0)  # mm, along x, y, z (distinct: an axis mix-up changes the answer)
SYN_PEAK = 2.0  # Gy
SYN_FRAME = "1.2.826.0.1.3680043.10.1.77"
SPOT_N = 300  # voxels of the brute-force spot check
SPOT_SEED = 20240611
SPOT_STARTS = 8  # Gauss-Newton starts from the best lattice offsets (plus the origin)


@dataclass(frozen=True)
class Criterion:
    label: str
    dose_percent: float
    distance_mm: float
    local: bool

    @property
    def key(self) -> str:
        return f"{self.dose_percent:g}pct{self.distance_mm:g}mm{'L' if self.local else 'G'}"


CRITERIA = (Criterion("3%/3mm global", 3.0, 3.0, False), Criterion("2%/2mm local", 2.0, 2.0, True))


# ----------------------------------------------------------------- the pymedphys worker
WORKER_SOURCE = r'''"""pymedphys side of benchmarks/bench_gamma.py (written by it; runs in _work/pymedphys-venv).

Reads JSON commands from stdin, one per line, and answers each with one JSON line:
  load {case, folder}       reference.npy, evaluated.npy and meta.json of a case (axes, flips)
  read_dicom {case, path}   pymedphys' own DICOM reader: largest differences of its (z, y, x)
                            axes and dose from the loaded reference
  warmup                    a small 3-D gamma, to compile the numba kernels
  gamma {case, evaluated, dose_percent, distance_mm, local, cutoff, max_gamma,
         interp_fraction, ram, out, only}
                            pymedphys.gamma; evaluated "evaluated" or "reference" (identical
                            doses); the map (float64, reference array order) saved to `out`;
                            `only`: a .npy bool mask of the reference voxels to evaluate
  versions, quit
"""
import gc
import json
import os
import platform
import sys
import time
import traceback

OUT = sys.stdout
sys.stdout = sys.stderr  # keep the answer channel clean
t0 = time.perf_counter()
import numpy as np  # noqa: E402
import pymedphys  # noqa: E402

IMPORT_S = time.perf_counter() - t0
CASES = {}


def status(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return -1


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _flip(a, axes):
    return np.flip(a, axis=tuple(axes)) if axes else a


def load(case, folder):
    meta = json.load(open(os.path.join(folder, "meta.json")))
    ref = np.load(os.path.join(folder, "reference.npy")).astype(np.float64)  # exact upcast
    ev = np.load(os.path.join(folder, "evaluated.npy")).astype(np.float64)
    CASES[case] = {
        "ref": np.ascontiguousarray(_flip(ref, meta["flip_reference"])),
        "ev": np.ascontiguousarray(_flip(ev, meta["flip_evaluated"])),
        "axes_ref": tuple(np.array(a, dtype=np.float64) for a in meta["axes_reference"]),
        "axes_ev": tuple(np.array(a, dtype=np.float64) for a in meta["axes_evaluation"]),
        "flip_ref": meta["flip_reference"],
    }
    return {"shape": list(ref.shape)}


def read_dicom(case, path):
    import pydicom
    from pymedphys._dicom.dose import zyx_and_dose_from_dataset

    axes, dose = zyx_and_dose_from_dataset(pydicom.dcmread(path, force=True))
    c = CASES[case]
    shape_ok = tuple(len(a) for a in axes) == c["ref"].shape and dose.shape == c["ref"].shape
    if not shape_ok:
        return {"shape_ok": False, "shape": [len(a) for a in axes]}
    d_axes = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(axes, c["axes_ref"]))
    d_dose = float(np.abs(np.asarray(dose, dtype=np.float64) - c["ref"]).max())
    return {"shape_ok": True, "axes_diff": d_axes, "dose_diff": d_dose,
            "dose_max": float(c["ref"].max())}


def warmup():
    ax = (np.arange(8.0) * 2, np.arange(9.0) * 2, np.arange(10.0) * 2)
    z, y, x = np.meshgrid(*ax, indexing="ij")
    d = np.exp(-((x - 9) ** 2 + (y - 8) ** 2 + (z - 7) ** 2) / 50.0)
    t = time.perf_counter()
    pymedphys.gamma(ax, d, ax, d * 1.02, 3, 3, lower_percent_dose_cutoff=10, max_gamma=2)
    pymedphys.gamma(ax, d, ax, d * 1.02, 2, 2, lower_percent_dose_cutoff=10, max_gamma=2, local_gamma=True)
    return {"wall": time.perf_counter() - t}


def gamma(case, evaluated, dose_percent, distance_mm, local, cutoff, max_gamma, interp_fraction, ram, out=None,
          only=None):
    c = CASES[case]
    ev, axes_ev = (c["ev"], c["axes_ev"]) if evaluated == "evaluated" else (c["ref"], c["axes_ref"])
    ref, norm = c["ref"], None
    if only:  # gamma at these reference voxels only (a bool mask in rtkit's array order)
        # other reference voxels NaN: below any cutoff, so not evaluated; the normalisation (and
        # with it the cutoff) given explicitly as its default, the reference maximum
        keep = np.ascontiguousarray(_flip(np.load(only), c["flip_ref"]))
        ref, norm = np.where(keep, ref, np.nan), float(np.max(ref))
    gc.collect()
    reset_ok = reset_peak()
    rss0 = status("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    g = pymedphys.gamma(c["axes_ref"], ref, axes_ev, ev, dose_percent, distance_mm,
                        lower_percent_dose_cutoff=cutoff, interp_fraction=interp_fraction,
                        max_gamma=max_gamma, local_gamma=local, global_normalisation=norm,
                        random_subset=None, ram_available=ram)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    hwm = status("VmHWM")
    g = np.asarray(_flip(np.asarray(g, dtype=np.float64), c["flip_ref"]))
    if out:
        np.save(out, g)
    return {"wall": wall, "cpu": cpu, "rss0": rss0, "hwm": hwm, "reset_ok": reset_ok}


def versions():
    import numba
    import pydicom
    return {"pymedphys": pymedphys.__version__, "numba": numba.__version__, "numpy": np.__version__,
            "pydicom": pydicom.__version__, "python": platform.python_version(),
            "numba_threads": numba.config.NUMBA_NUM_THREADS, "import_s": IMPORT_S}


def main():
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            res = globals()[cmd["cmd"]](**{k: v for k, v in cmd.items() if k != "cmd"})
        except Exception as exc:
            res = {"error": traceback.format_exc(), "message": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        print(json.dumps(res), file=OUT, flush=True)


if __name__ == "__main__":
    main()
'''


def ensure_pymedphys_venv(venv: Path) -> tuple[Path | None, str]:
    """The pymedphys venv's python, creating it if needed; (None, why) on failure."""
    return peer_venv(venv, ["pymedphys", "numba", "numpy", "pydicom"], "import pymedphys, numba, pydicom, numpy; pymedphys.gamma", "pymedphys.gamma")


# ----------------------------------------------------------------- the rtkit worker (this script, --rtkit-worker)
def rtkit_available() -> bool:
    """rtkit.gamma exported as a function (the submodule alone, rtkit/gamma.py, is not enough)."""
    return callable(getattr(rtkit, "gamma", None))


def rtkit_worker() -> int:
    """rtkit side: the same JSON-lines protocol as the pymedphys worker."""
    out = sys.stdout
    sys.stdout = sys.stderr
    cases: dict[str, tuple[rtkit.Dose, rtkit.Dose]] = {}

    def load(case: str, folder: str) -> dict[str, Any]:
        meta = json.loads((Path(folder) / "meta.json").read_text())
        frame = meta["frame_of_reference_uid"]
        ref = rtkit.Dose(np.load(Path(folder) / "reference.npy"),
                         rtkit.Grid(meta["shape"], meta["affine_reference"], frame))
        ev = rtkit.Dose(np.load(Path(folder) / "evaluated.npy"),
                        rtkit.Grid(meta["shape"], meta["affine_evaluation"], frame))
        cases[case] = (ref, ev)
        return {"shape": list(ref.shape)}

    def gamma(case: str, evaluated: str, dose_percent: float, distance_mm: float, local: bool, cutoff: float,
              max_gamma: float, out: str | None = None, **_: Any) -> dict[str, Any]:
        ref, ev = cases[case]
        if evaluated != "evaluated":
            ev = ref
        gc.collect()
        reset_ok = reset_peak()
        rss0 = proc_status("VmRSS")
        c0, t0 = time.process_time(), time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = rtkit.gamma(ref, ev, dose_percent=dose_percent, distance_mm=distance_mm, local=local,
                              lower_cutoff_percent=cutoff, max_gamma=max_gamma)
            arr = np.asarray(res.array)
            pass_rate = float(res.pass_rate)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        hwm = proc_status("VmHWM")
        mean = getattr(res, "mean", None)
        if out:
            np.save(out, arr.astype(np.float64))
        grid = res.grid
        return {"wall": wall, "cpu": cpu, "rss0": rss0, "hwm": hwm, "reset_ok": reset_ok,
                "pass_rate": pass_rate, "mean": None if mean is None else float(mean),
                "dtype": str(arr.dtype), "shape": list(arr.shape),
                "grid_shape": list(grid.shape), "grid_affine": np.asarray(grid.affine).tolist(),
                "grid_frame": grid.frame_of_reference_uid,
                "warnings": [f"{w.category.__name__}: {w.message}" for w in caught][:5]}

    def versions() -> dict[str, Any]:
        return {"rtkit": rtkit.__version__, "numpy": np.__version__, "scipy": scipy.__version__}

    handlers = {"load": load, "gamma": gamma, "versions": versions}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            res = handlers[cmd["cmd"]](**{k: v for k, v in cmd.items() if k != "cmd"})
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            res = {"error": traceback.format_exc(), "message": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        print(json.dumps(res), file=out, flush=True)
    return 0


# ----------------------------------------------------------------- cases
@dataclass
class Case:
    key: str
    title: str
    reference: rtkit.Dose
    evaluated: rtkit.Dose
    folder: Path
    dicom: Path | None = None  # for pymedphys' own reader
    peer_ok: bool = True  # axis-aligned, so pymedphys can take it
    peer_note: str = ""


def shifted_grid(grid: rtkit.Grid, shift: tuple[float, float, float]) -> rtkit.Grid:
    """The same grid with its origin moved by `shift` (x, y, z mm): same voxels, new affine."""
    aff = np.array(grid.affine, dtype=np.float64)
    aff[:3, 3] += np.asarray(shift, dtype=np.float64)
    return rtkit.Grid(grid.shape, aff, grid.frame_of_reference_uid)


def pymedphys_axes(grid: rtkit.Grid) -> tuple[list[np.ndarray], list[int], list[int]]:
    """pymedphys' axes of an axis-aligned grid, in array-axis order (slice, row, column).

    Returns the increasing 1-D coordinates (mm) of each array axis, the LPS axis (0 x,
    1 y, 2 z) each runs along, and the array axes that must be flipped for the coordinates
    to increase. Raises ValueError if an index axis is not along a patient axis.
    """
    aff = np.asarray(grid.affine, dtype=np.float64)
    coords, lps, flips = [], [], []
    for i, n in enumerate(grid.shape):
        col = aff[:3, i]
        j = int(np.argmax(np.abs(col)))
        if np.any(np.abs(np.delete(col, j)) > 1e-6 * abs(col[j])):
            raise ValueError(f"index axis {i} is not along a patient axis (direction {col.tolist()})")
        c = aff[j, 3] + col[j] * np.arange(n, dtype=np.float64)
        if col[j] < 0:
            c = c[::-1]
            flips.append(i)
        coords.append(c)
        lps.append(j)
    if sorted(lps) != [0, 1, 2]:
        raise ValueError(f"index axes run along patient axes {lps}")
    return coords, lps, flips


def write_case(case: Case) -> None:
    """reference.npy, evaluated.npy and meta.json (affines, pymedphys axes) for both workers."""
    case.folder.mkdir(parents=True, exist_ok=True)
    for old in [*case.folder.glob("pymedphys_*.npy"), *case.folder.glob("rtkit_*.npy")]:
        old.unlink()  # maps of an earlier run
    np.save(case.folder / "reference.npy", np.asarray(case.reference.array))
    np.save(case.folder / "evaluated.npy", np.asarray(case.evaluated.array))
    meta: dict[str, Any] = {
        "shape": list(case.reference.shape),
        "affine_reference": np.asarray(case.reference.grid.affine).tolist(),
        "affine_evaluation": np.asarray(case.evaluated.grid.affine).tolist(),
        "frame_of_reference_uid": case.reference.grid.frame_of_reference_uid,
    }
    try:
        ax_r, lps_r, flip_r = pymedphys_axes(case.reference.grid)
        ax_e, lps_e, flip_e = pymedphys_axes(case.evaluated.grid)
        if lps_r != lps_e:
            raise ValueError(f"reference and evaluated index axes run along different patient axes {lps_r} {lps_e}")
        meta.update({"axes_reference": [a.tolist() for a in ax_r], "axes_evaluation": [a.tolist() for a in ax_e],
                     "flip_reference": flip_r, "flip_evaluated": flip_e,
                     "lps_axes": lps_r})
        names = "xyz"
        case.peer_note = ("pymedphys axes (array order): " + ", ".join(
            f"{names[j]}{' flipped' if i in flip_r else ''}" for i, j in enumerate(lps_r)))
    except ValueError as exc:
        case.peer_ok = False
        case.peer_note = f"pymedphys needs an axis-aligned grid: {exc}"
    (case.folder / "meta.json").write_text(json.dumps(meta) + "\n")


def breast_case(work: Path, data: Path) -> Case | str:
    path = data / BREAST_DOSE
    if not path.is_file():
        return f"data not found: {path}"
    ref = rtkit.read_dose(path)
    arr = np.asarray(ref.array)
    ev = rtkit.Dose(arr.astype(np.float64) * SCALE, shifted_grid(ref.grid, SHIFT_MM))
    sh = " x ".join(f"{s:g}" for s in ref.grid.spacing[::-1])
    title = (f"breast: dicompyler-core rtdose.dcm, {'x'.join(map(str, ref.shape[::-1]))} ({sh} mm), "
             f"max {arr.max():.2f} Gy")
    return Case("breast", title, ref, ev, work / "gamma" / "breast", dicom=path)


def synthetic_case(work: Path) -> Case:
    sp = np.asarray(SYN_SPACING)
    origin = -(np.asarray(SYN_SHAPE) - 1) / 2 * sp  # slice, row, column = z, y, x
    grid = rtkit.Grid.from_spacing(SYN_SHAPE, spacing=SYN_SPACING, origin=tuple(origin[::-1]),
                                   frame_of_reference_uid=SYN_FRAME)
    z, y, x = np.meshgrid(*[origin[i] + sp[i] * np.arange(SYN_SHAPE[i]) for i in range(3)], indexing="ij")
    sx, sy, sz = SYN_SIGMA
    arr = SYN_PEAK * np.exp(-((x / sx) ** 2 + (y / sy) ** 2 + (z / sz) ** 2) / 2)
    ref = rtkit.Dose(arr, grid)
    ev = rtkit.Dose(arr * SCALE, shifted_grid(grid, SHIFT_MM))
    title = (f"synthetic: {'x'.join(map(str, SYN_SHAPE))} ({' x '.join(f'{v:g}' for v in SYN_SPACING[::-1])} mm), "
             "Gaussian dose, "
             f"peak {SYN_PEAK:g} Gy, sigma {'/'.join(f'{v:g}' for v in SYN_SIGMA)} mm along x/y/z")
    return Case("synthetic", title, ref, ev, work / "gamma" / "synthetic")


# ----------------------------------------------------------------- running
class Worker(PeerProcess):
    """One tool's worker (pymedphys in its venv, or rtkit via this script)."""

    def __init__(self, python: Path, argv: list[str], log: Path, name: str) -> None:
        super().__init__(python, Path(argv[0]), argv[1:], log, name, is_failure=lambda res: False)

    def must(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """ask(), raising RuntimeError when the command failed."""
        res = self.ask(cmd, **kw)
        if "error" in res:
            raise RuntimeError(f"{self.name} worker command {cmd} failed:\n{res['error']}")
        return res


@dataclass
class Runs:
    """All runs of one tool (and setting) on one case and criterion."""

    name: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    array: np.ndarray | None = None  # the first run's map
    error: str = ""  # one line
    traceback: str = ""
    note: str = ""
    max_rerun_diff: float = 0.0  # largest difference of later runs' maps from the first (NaN-aware)
    identical: float | None = None  # max gamma of identical doses

    @property
    def ok(self) -> bool:
        return self.array is not None

    def best(self) -> tuple[float, float]:
        if not self.runs:
            return float("nan"), float("nan")
        return min(r["wall"] for r in self.runs), min(r["cpu"] for r in self.runs)

    def peak(self) -> tuple[int, int]:
        """Largest VmHWM during a call and its increase over the RSS before that call (bytes)."""
        if not self.runs:
            return -1, -1
        r = max(self.runs, key=lambda r: r["hwm"])
        return r["hwm"], r["hwm"] - r["rss0"]


def map_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference between two maps; inf where their NaN patterns differ."""
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    f = ~np.isnan(a)
    if not f.any():
        return 0.0
    x, y = a[f], b[f]
    with np.errstate(invalid="ignore"):
        d = np.abs(x - y)
    d[x == y] = 0.0  # equal infinities too
    return float(d.max())


def one_run(worker: Worker, case: Case, crit: Criterion, evaluated: str, out: Path | None,
            interp_fraction: int = INTERP_FRACTION, only: Path | None = None) -> dict[str, Any]:
    return worker.ask("gamma", case=case.key, evaluated=evaluated, dose_percent=crit.dose_percent,
                      distance_mm=crit.distance_mm, local=crit.local, cutoff=CUTOFF, max_gamma=MAX_GAMMA,
                      interp_fraction=interp_fraction, ram=PEER_RAM, out=str(out) if out else None,
                      only=str(only) if only else None)


def _record(tool: Runs, r: dict[str, Any], out: Path, keep: Path) -> None:
    tool.runs.append(r)
    g = np.load(out)
    if tool.array is None:
        tool.array = g
        out.replace(keep)
    else:
        tool.max_rerun_diff = max(tool.max_rerun_diff, map_diff(tool.array, g))
        out.unlink()


def run_criterion(case: Case, crit: Criterion, peer: Worker | None, rt: Worker | None, repeat: int,
                  peer_slow: float) -> tuple[Runs, Runs]:
    """`repeat` alternating runs of each tool, and the identical-dose run."""
    pm, rk = Runs("pymedphys"), Runs("rtkit")
    if peer is None:
        pm.note = case.peer_note if not case.peer_ok else "pymedphys not available"
    if rt is None:
        rk.note = "rtkit.gamma not available yet"
    folder = case.folder
    for i in range(repeat):
        for tool, w in ((pm, peer), (rk, rt)):
            if w is None or tool.error:
                continue
            if tool is pm and tool.runs and tool.runs[0]["wall"] > peer_slow:
                tool.note = f"one run only: it took {tool.runs[0]['wall']:.0f} s > --peer-slow {peer_slow:g} s"
                continue
            out = folder / f"{tool.name}_{crit.key}_run{i}.npy"
            print(f"  {crit.label}: {tool.name} run {i + 1}/{repeat} ...", end="", flush=True)
            r = one_run(w, case, crit, "evaluated", out)
            if "error" in r:
                tool.error, tool.traceback = r.get("message", "error"), r["error"]
                print(f" {tool.error}", flush=True)
                continue
            print(f" {r['wall']:.2f} s", flush=True)
            _record(tool, r, out, folder / f"{tool.name}_{crit.key}.npy")
    for tool, w in ((pm, peer), (rk, rt)):  # identical doses: gamma must be 0 wherever it is computed
        if w is None or tool.error:
            continue
        out = folder / f"{tool.name}_{crit.key}_identical.npy"
        r = one_run(w, case, crit, "reference", out)
        if "error" in r:
            tool.error, tool.traceback = "identical doses: " + r.get("message", "error"), r["error"]
            continue
        g = np.load(out)
        out.unlink()
        f = ~np.isnan(g)
        tool.identical = float(np.abs(g[f]).max()) if f.any() else float("nan")
    return pm, rk


@dataclass
class Refined:
    """pymedphys with finer search steps where its map differs from rtkit's by more than the target."""

    steps: list[dict[str, Any]] = field(default_factory=list)  # per interp_fraction: voxels, time, diff
    converged: np.ndarray | None = None  # pymedphys' map, each voxel from its finest run
    error: str = ""


def refine(case: Case, crit: Criterion, peer: Worker, rk: Runs, pm: Runs, ladder: list[int]) -> Refined:
    """Rerun pymedphys with interp_fraction F (in turn from ``ladder``) at the voxels where its
    finest map so far and rtkit's differ by more than the per-voxel target (both below
    COMPARE_BELOW), the other reference voxels set to NaN (not evaluated) and its normalisation
    given as its default (the reference maximum), so those voxels get the gamma of a whole-map
    run at that F.  pymedphys' search visits a lattice of step distance/F, so its gamma is an
    upper bound of the exact one that converges to it as F grows."""
    res = Refined()
    if rk.array is None or pm.array is None or rk.array.shape != pm.array.shape:
        return res
    g = rk.array.astype(np.float64)
    cur = pm.array.copy()
    for f in ladder:
        # rtkit below COMPARE_BELOW and pymedphys away from it (also where pymedphys is above
        # COMPARE_BELOW, which a finer step may bring under it)
        with np.errstate(invalid="ignore"):
            todo = np.isfinite(g) & (g < COMPARE_BELOW) & ~np.isnan(cur) & (np.abs(g - cur) > TARGETS["gamma"])
        if not todo.any():
            break
        mask = case.folder / f"refine_{crit.key}_f{f}_mask.npy"
        out = case.folder / f"refine_{crit.key}_f{f}.npy"
        np.save(mask, todo)
        print(f"  {crit.label}: pymedphys interp_fraction={f} at {int(todo.sum())} voxels ...", end="", flush=True)
        r = one_run(peer, case, crit, "evaluated", out, interp_fraction=f, only=mask)
        mask.unlink()
        if "error" in r:
            res.error = f"interp_fraction {f}: {r.get('message', 'error')}"
            print(f" {res.error}", flush=True)
            break
        print(f" {r['wall']:.1f} s", flush=True)
        new = np.load(out)  # kept in the work folder (NaN where not rerun)
        before = np.abs(g[todo] - cur[todo])
        cur[todo] = new[todo]
        d = g[todo] - cur[todo]
        res.steps.append({"f": f, "n": int(todo.sum()), "wall": r["wall"], "before": float(before.max()),
                          "max": float(np.nanmax(np.abs(d))), "over": int((np.abs(d) > TARGETS["gamma"]).sum()),
                          "above": float(np.nanmax(d)), "moved_up": float(np.nanmax(new[todo] - pm.array[todo])),
                          "nan": int(np.isnan(new[todo]).sum())})
    res.converged = cur
    return res


# ----------------------------------------------------------------- brute-force spot check
def spot_sample(case: Case, n: int = SPOT_N) -> np.ndarray:
    """Index (n, 3) of n reference voxels >= the cutoff, drawn with a fixed seed."""
    ref = np.asarray(case.reference.array, dtype=np.float64)
    idx = np.argwhere(ref >= CUTOFF / 100 * ref.max())
    rng = np.random.default_rng(SPOT_SEED)
    return idx[np.sort(rng.choice(len(idx), size=min(max(n, 0), len(idx)), replace=False))]


def brute_force_gamma(case: Case, crit: Criterion, idx: np.ndarray) -> np.ndarray:
    """Gamma at reference voxels `idx` by an exhaustive search, independent of both tools.

    The evaluated dose between its voxels is trilinear (scipy ``map_coordinates``, order 1)
    at positions mapped by the evaluated grid's affine; positions outside the evaluated
    grid are not candidates. Global: dose difference / (dose_percent % of the reference
    max); local: / (dose_percent % of the reference dose at the voxel). Search: every
    offset of a cubic lattice of step distance/10 within the sphere of radius max_gamma x
    distance, then Gauss-Newton descent (the dose linearised at each iterate, step halving
    when it does not improve) from the origin and from the SPOT_STARTS best lattice
    offsets; the smallest value wins. Values above max_gamma are returned as max_gamma,
    NaN if no offset is inside the evaluated grid.
    """
    from scipy import ndimage

    ref = np.asarray(case.reference.array, dtype=np.float64)
    ev = np.asarray(case.evaluated.array, dtype=np.float64)
    hi = np.asarray(ev.shape, dtype=np.float64) - 1
    world_to_index = case.evaluated.grid.world_to_index
    p = case.reference.grid.index_to_world(idx.astype(np.float64))  # (N, 3)
    dref = ref[tuple(idx.T)]
    delta = crit.dose_percent / 100 * (dref if crit.local else np.full(len(idx), ref.max()))
    dta = crit.distance_mm
    step = dta / INTERP_FRACTION
    radius = MAX_GAMMA * dta
    n = int(np.ceil(radius / step))
    lat = np.arange(-n, n + 1) * step
    lattice = np.stack(np.meshgrid(lat, lat, lat, indexing="ij"), axis=-1).reshape(-1, 3)
    lattice = lattice[np.linalg.norm(lattice, axis=1) <= radius + 1e-9]

    def dose(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Evaluated dose at world points (M, 3), and whether each is inside the grid."""
        ci = world_to_index(x)
        inside = np.all((ci >= -1e-9) & (ci <= hi + 1e-9), axis=1)
        val = ndimage.map_coordinates(ev, np.clip(ci, 0, hi).T, order=1, mode="nearest")
        return val, inside

    def g2(k: np.ndarray, o: np.ndarray) -> np.ndarray:
        val, inside = dose(p[k] + o)
        out = ((val - dref[k]) / delta[k]) ** 2 + np.einsum("ij,ij->i", o, o) / dta**2
        out[~inside] = np.inf
        return out

    # lattice search, a few points at a time
    starts_k, starts_o = [], []
    best = np.full(len(idx), np.inf)
    chunk = max(1, 2_000_000 // len(lattice))
    for c0 in range(0, len(idx), chunk):
        ks = np.arange(c0, min(len(idx), c0 + chunk))
        val = g2(np.repeat(ks, len(lattice)), np.tile(lattice, (len(ks), 1))).reshape(len(ks), -1)
        best[ks] = val.min(axis=1)
        top = np.argsort(val, axis=1)[:, :SPOT_STARTS]
        for r, k in enumerate(ks):
            starts_k += [k] * (SPOT_STARTS + 1)
            starts_o += [np.zeros(3), *lattice[top[r]]]
    k = np.asarray(starts_k)
    o = np.asarray(starts_o, dtype=np.float64)
    f = g2(k, o)
    a, b, h = 1.0 / delta[k] ** 2, 1.0 / dta**2, 1e-4
    for _ in range(40):  # Gauss-Newton with step halving
        val, _inside = dose(p[k] + o)
        grad = np.stack([(dose(p[k] + o + h * e)[0] - dose(p[k] + o - h * e)[0]) / (2 * h) for e in np.eye(3)], axis=1)
        e = val - dref[k]
        v = (a * e)[:, None] * grad + b * o
        gg = np.einsum("ij,ij->i", grad, grad)
        d = -(v - (a * np.einsum("ij,ij->i", grad, v) / (b + a * gg))[:, None] * grad) / b
        improved = np.zeros(len(k), dtype=bool)
        for t in (1.0, 0.5, 0.25, 0.125, 0.0625):
            trial = o + t * d
            ft = g2(k, trial)
            take = ~improved & (ft < f)
            o[take], f[take] = trial[take], ft[take]
            improved |= take
        if not improved.any():
            break
    np.minimum.at(best, k, f)
    out = np.sqrt(best)
    out[~np.isfinite(out)] = np.nan
    return np.minimum(out, MAX_GAMMA)


# ----------------------------------------------------------------- analysis
class Checks:
    """Correctness checks: each is printed; a failed fatal one makes the exit status 1."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed = 0

    def add(self, ok: bool, text: str, fatal: bool = True) -> bool:
        verdict = "ok" if ok else ("FAILED" if fatal else "note")
        self.lines.append(f"  [{verdict:>6}] {text}")
        if not ok and fatal:
            self.failed += 1
        return ok


def pass_rate_pmp_rule(g: np.ndarray) -> float:
    """pymedphys' calculate_pass_rate: gamma < 1 over the non-NaN voxels, percent."""
    valid = ~np.isnan(g)
    n = int(valid.sum())
    return 100.0 * float((g[valid] < 1).sum()) / n if n else float("nan")


def capped_mean(g: np.ndarray) -> float:
    valid = ~np.isnan(g)
    return float(np.minimum(g[valid], MAX_GAMMA).mean()) if valid.any() else float("nan")


def compare_maps(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Per-voxel |a - b| where both are finite and below COMPARE_BELOW; NaN-pattern and pass/fail differences."""
    both = np.isfinite(a) & np.isfinite(b)
    sel = both & (a < COMPARE_BELOW) & (b < COMPARE_BELOW)
    d = a[sel] - b[sel]
    ad = np.abs(d)
    pa, pb = a[both] < 1, b[both] < 1
    return {"n": int(sel.sum()), "max": float(ad.max()) if d.size else float("nan"),
            "p99": float(np.percentile(ad, 99)) if d.size else float("nan"),
            "mean": float(ad.mean()) if d.size else float("nan"),
            "mean_signed": float(d.mean()) if d.size else float("nan"),
            "over": int((ad > TARGETS["gamma"]).sum()),
            "nan_mismatch": int((np.isnan(a) != np.isnan(b)).sum()),
            "flip": (int((pa & ~pb).sum()), int((~pa & pb).sum())),
            "above": float(d.max()) if d.size else float("nan")}


def spot_stats(g: np.ndarray, idx: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """A map against the exhaustive search at the spot voxels where the exact gamma < max_gamma."""
    v = g[tuple(idx.T)]
    sel = np.isfinite(exact) & (exact < MAX_GAMMA) & ~np.isnan(v)
    d = np.minimum(v[sel], MAX_GAMMA) - exact[sel]
    if not d.size:
        return {"n": 0, "missing": int((np.isnan(v) & np.isfinite(exact)).sum())}
    return {"n": int(sel.sum()), "max": float(np.abs(d).max()), "p99": float(np.percentile(np.abs(d), 99)),
            "mean_signed": float(d.mean()), "min": float(d.min()),
            "pass_differs": int(((v[sel] < 1) != (exact[sel] < 1)).sum()),
            "missing": int((np.isnan(v) & np.isfinite(exact)).sum())}


@dataclass
class Outcome:
    """One case and criterion: every tool's runs and the figures derived from them."""

    crit: Criterion
    pm: Runs
    rk: Runs
    refined: Refined | None
    above: int = 0  # reference voxels >= the cutoff
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tool name
    cmp: dict[str, Any] | None = None  # rtkit vs pymedphys
    cmp_conv: dict[str, Any] | None = None  # rtkit vs pymedphys refined where they differ
    spot: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tool name, vs the exhaustive search

    def tools(self) -> list[Runs]:
        return [self.pm, self.rk]


def analyse(case: Case, out: Outcome, idx: np.ndarray, exact: np.ndarray | None, checks: Checks) -> None:
    ref = np.asarray(case.reference.array, dtype=np.float64)
    out.above = int((ref >= CUTOFF / 100 * ref.max()).sum())
    tag = f"{case.key} {out.crit.label}"
    for tool in out.tools():
        if tool.error:
            checks.add(False, f"{tag}: {tool.name} crashed: {tool.error}", fatal=tool.name == "rtkit")
        if tool.identical is not None:
            checks.add(tool.identical <= IDENTICAL_TOL,
                       f"{tag}: {tool.name}, identical doses: max gamma {tool.identical:.2g} (expected 0)")
        if not tool.ok:
            continue
        assert tool.array is not None
        g = tool.array
        out.info[tool.name] = {"n": int((~np.isnan(g)).sum()), "mean": capped_mean(g),
                               "pass": pass_rate_pmp_rule(g), "pass_rule": pass_rate_pmp_rule(g),
                               "n_inf": int(np.isinf(g).sum()), "n_above_max": int((g > MAX_GAMMA).sum()),
                               "n_at_max": int((g == MAX_GAMMA).sum())}
        if exact is not None:
            out.spot[tool.name] = s = spot_stats(g, idx, exact)
            if tool.name.startswith("pymedphys") and s["n"]:
                # pymedphys minimises over a subset of the candidate points, with the same trilinear
                # interpolation: it can be above the exhaustive search, never below (geometry check)
                checks.add(s["min"] >= -1e-3, f"{tag}: {tool.name} >= exhaustive search at {s['n']} spot voxels "
                                              f"(min difference {s['min']:+.1e}; below would mean misplaced axes)")
    if out.rk.ok:
        assert out.rk.array is not None
        first = out.rk.runs[0]
        info = out.info["rtkit"]
        g = out.rk.array
        valid = ~np.isnan(g)
        n = int(valid.sum())
        p_le = 100.0 * float((g[valid] <= 1).sum()) / n if n else float("nan")
        p_lt = info["pass_rule"]
        pr = first["pass_rate"]
        if min(abs(pr - p_le), abs(pr - p_lt)) <= 1e-3:
            info["pass"], info["pass_unit"] = pr, "percent"
        elif min(abs(100 * pr - p_le), abs(100 * pr - p_lt)) <= 1e-3:
            info["pass"], info["pass_unit"] = 100 * pr, "fraction"
        else:
            info["pass"], info["pass_unit"] = pr, "?"
        checks.add(info["pass_unit"] != "?",
                   f"{tag}: rtkit pass_rate {pr:.6g} matches its map ({info['pass_unit']}; from the map: "
                   f"{p_le:.4f}% with gamma <= 1, {p_lt:.4f}% with gamma < 1)")
        info["own_mean"], info["dtype"] = first.get("mean"), first.get("dtype")
        grid_ok = (tuple(first["grid_shape"]) == case.reference.shape
                   and tuple(first["shape"]) == case.reference.shape
                   and np.allclose(first["grid_affine"], case.reference.grid.affine, atol=1e-6))
        checks.add(grid_ok, f"{tag}: rtkit map and GammaResult.grid are the reference grid "
                            f"(map {tuple(first['shape'])}, grid {tuple(first['grid_shape'])})")
        checks.add(out.rk.max_rerun_diff == 0.0, f"{tag}: every rtkit run ({len(out.rk.runs)}) gives the same map "
                                                 f"(max difference {out.rk.max_rerun_diff:.2g})")
        for w in first.get("warnings", []):
            checks.add(False, f"{tag}: rtkit warned: {w}", fatal=False)
        if out.pm.ok and out.pm.array is not None and out.pm.array.shape == g.shape:
            out.cmp = compare_maps(g, out.pm.array)
        if out.refined is not None and out.refined.converged is not None:
            out.cmp_conv = compare_maps(g, out.refined.converged)
            checks.add(out.cmp_conv["above"] <= ABOVE_TOL,
                       f"{tag}: rtkit is nowhere above pymedphys by more than {ABOVE_TOL:g} (max rtkit - pmp "
                       f"{out.cmp_conv['above']:+.1e} over {out.cmp_conv['n']} voxels, pymedphys refined where they "
                       f"differ): both are upper bounds of the exact gamma, and rtkit's is the tighter")


# ----------------------------------------------------------------- reporting
def _f(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def mib(n: float) -> str:
    return f"{n / 2**20:.0f}" if n >= 0 else "-"


def _target_row(label: str, rt: str, pm: str, diff: str, tgt: str, verdict: str = "") -> None:
    print(f"   {label:<42}{rt:>10}{pm:>11}{diff:>14}{tgt:>12}  {verdict}".rstrip())


def print_case(case: Case, outcomes: list[Outcome], verdicts: list[str], spot_n: int) -> None:
    print(f"== {case.title}")
    print(f"   evaluated = {SCALE:g} x reference, grid origin moved by ({SHIFT_MM[0]:+g}, {SHIFT_MM[1]:+g}, "
          f"{SHIFT_MM[2]:+g}) mm in (x, y, z) (|shift| {math.hypot(*SHIFT_MM):.2f} mm), same voxels; "
          f"cutoff {CUTOFF:g}% of the reference max, max_gamma {MAX_GAMMA:g}")
    if case.peer_note:
        print(f"   {case.peer_note}")
    print(f"   {'criteria':<15}{'tool':<16}{'pass %':>9}{'mean γ':>8}{'voxels':>9}{'wall s':>9}{'CPU s':>8}"
          f"{'runs':>5}{'peak MiB':>10}{'(+call)':>9}")
    for o in outcomes:
        print(f"   {o.crit.label:<15}{'(reference)':<16}{'':>9}{'':>8}{o.above:>9}   voxels >= the cutoff")
        for tool in o.tools():
            line = f"   {'':<15}{tool.name:<16}"
            if not tool.ok:
                print(line + (tool.error or tool.note or "n/a"))
                continue
            info = o.info[tool.name]
            wall, cpu = tool.best()
            hwm, inc = tool.peak()
            print(line + f"{_f(info.get('pass'), '.3f'):>9}{_f(info['mean'], '.4f'):>8}{info['n']:>9}{wall:>9.3f}"
                  f"{cpu:>8.3f}{len(tool.runs):>5}{mib(hwm):>10}{'(+' + mib(inc) + ')':>9}")
    print()
    _target_row("target", "rtkit", "pymedphys", "rtkit - pmp", "target", "result")
    speed_target = case.key == "breast"
    for o in outcomes:
        print(f"   {o.crit.label}")
        a, b = o.info.get("rtkit", {}), o.info.get("pymedphys", {})
        if o.cmp is not None:
            diff = a["pass"] - b["pass"]
            ok = abs(diff) <= TARGETS["pass"]
            _target_row("  pass rate %", f"{a['pass']:.3f}", f"{b['pass']:.3f}", f"{diff:+.3f}",
                        f"<= {TARGETS['pass']:g}", _verdict(ok))
            verdicts.append(_verdict(ok))
            nd = a["n"] - b["n"]
            _target_row("  voxels evaluated (non-NaN)", str(a["n"]), str(b["n"]), f"{nd:+d}", "equal",
                        _verdict(nd == 0 and o.cmp["nan_mismatch"] == 0))
            c = o.cmp
            ok = c["max"] <= TARGETS["gamma"]
            _target_row(f"  |γ diff| max, both < {COMPARE_BELOW:g}", "", "", f"{c['max']:.4f}",
                        f"<= {TARGETS['gamma']:g}", _verdict(ok))
            verdicts.append(_verdict(ok))
            _target_row("    99th percentile / mean", "", "", f"{c['p99']:.4f}", f"/ {c['mean']:.4f}")
            _target_row("    mean signed (rtkit - pmp)", "", "", f"{c['mean_signed']:+.4f}", "")
            _target_row(f"    voxels compared / over {TARGETS['gamma']:g}", "", "", str(c["n"]), f"/ {c['over']}")
            _target_row("    passing in rtkit only / pmp only", "", "", str(c["flip"][0]), f"/ {c['flip'][1]}")
        else:
            _target_row("  pass rate %", _f(a.get("pass"), ".3f"), _f(b.get("pass"), ".3f"), "-",
                        f"<= {TARGETS['pass']:g}", "n/a")
            _target_row("  voxels evaluated (non-NaN)", _f(a.get("n"), "d"), _f(b.get("n"), "d"), "-", "equal", "n/a")
            _target_row(f"  |γ diff| max, both < {COMPARE_BELOW:g}", "", "", "-", f"<= {TARGETS['gamma']:g}", "n/a")
            verdicts += ["n/a", "n/a"]
        (rw, rc), (pw, pc) = o.rk.best(), o.pm.best()
        tgt = f">= {TARGETS['speed']:g}x" if speed_target else "info"
        if o.rk.ok and o.pm.ok:
            ratio = pw / rw if rw > 0 else float("inf")
            ok = ratio >= TARGETS["speed"] if speed_target else None
            _target_row("  wall s, best (ratio pmp / rtkit)", f"{rw:.3f}", f"{pw:.3f}", f"{ratio:.1f}x", tgt,
                        _verdict(ok) if speed_target else "")
            cr = pc / rc if rc > 0 else float("inf")
            _target_row("  CPU s, best (ratio pmp / rtkit)", f"{rc:.3f}", f"{pc:.3f}", f"{cr:.1f}x", "info")
            if speed_target:
                verdicts.append(_verdict(ok))
        else:
            _target_row("  wall s, best (ratio pmp / rtkit)", _f(rw, ".3f"), _f(pw, ".3f"), "-", tgt,
                        "n/a" if speed_target else "")
            if speed_target:
                verdicts.append("n/a")
        rh, ph = o.rk.peak()[0], o.pm.peak()[0]
        ok = rh < TARGETS["memory"] if o.rk.ok else None
        _target_row("  peak memory MiB (VmHWM)", mib(rh), mib(ph), "", "< 2 GB", _verdict(ok))
        verdicts.append(_verdict(ok))
        sa, sb = o.spot.get("rtkit", {}), o.spot.get("pymedphys", {})
        ok = sa["max"] <= TARGETS["exact"] if sa.get("n") else None
        _target_row(f"  |γ - exhaustive| max, {spot_n} voxels", _f(sa.get("max"), ".4f"), _f(sb.get("max"), ".4f"),
                    "", f"<= {TARGETS['exact']:g}", _verdict(ok))
        verdicts.append(_verdict(ok))
        ref = o.refined
        if ref is not None and o.cmp_conv is not None:
            c = o.cmp_conv
            ok = c["max"] <= TARGETS["gamma"]
            _target_row("  |γ diff| max, pymedphys refined (below)", "", "", f"{c['max']:.4f}",
                        f"<= {TARGETS['gamma']:g}", _verdict(ok))
            verdicts.append(_verdict(ok))
            _target_row("    rtkit above pymedphys, max", "", "", f"{c['above']:+.4f}", f"<= {ABOVE_TOL:g}",
                        _verdict(c["above"] <= ABOVE_TOL))
            for st in ref.steps:
                _target_row(f"    interp_fraction {st['f']} at {st['n']} voxels ({st['wall']:.0f} s)", "", "",
                            f"{st['before']:.4f}", f"-> {st['max']:.4f}", f"{st['over']} over")
            if ref.error:
                _target_row(f"    refinement stopped: {ref.error}", "", "", "", "")
        else:
            verdicts.append("n/a")
    # spot check details
    print()
    print(f"   spot check: each map against an exhaustive search at {spot_n} reference voxels >= the cutoff")
    print(f"   (seeded sample; trilinear evaluated dose; where the exact gamma < {MAX_GAMMA:g}; Δγ = map - exact)")
    print(f"   {'criteria':<15}{'tool':<16}{'voxels':>7}{'max |Δγ|':>10}{'p99 |Δγ|':>10}{'mean Δγ':>9}{'min Δγ':>9}"
          f"{'pass differs':>14}")
    for o in outcomes:
        label = o.crit.label
        for tool in o.tools():
            s = o.spot.get(tool.name)
            if not s:
                continue
            if not s["n"]:
                print(f"   {label:<15}{tool.name:<16}{0:>7}")
            else:
                print(f"   {label:<15}{tool.name:<16}{s['n']:>7}{s['max']:>10.4f}{s['p99']:>10.4f}"
                      f"{s['mean_signed']:>+9.4f}{s['min']:>+9.4f}{s['pass_differs']:>14}"
                      + (f"  ({s['missing']} NaN where exact is not)" if s["missing"] else ""))
            label = ""
    notes = []
    for o in outcomes:
        tag = f"   {o.crit.label}:"
        for tool in o.tools():
            if tool.ok and tool.note:
                notes.append(f"{tag} {tool.name}: {tool.note}")
            if tool.ok:
                info = o.info[tool.name]
                same = "yes" if tool.max_rerun_diff == 0 else f"no, max diff {tool.max_rerun_diff:.2g}"
                notes.append(f"{tag} {tool.name}: {info['n_at_max']} voxels exactly max_gamma, {info['n_above_max']}"
                             f" above it ({info['n_inf']} inf); {len(tool.runs)} run(s), same map every run: {same}"
                             + (f"; identical doses: max γ {tool.identical:.2g}" if tool.identical is not None else ""))
        if o.rk.ok:
            info = o.info["rtkit"]
            notes.append(f"{tag} rtkit: pass_rate is a {info['pass_unit']}; map dtype {info['dtype']}; "
                         f"GammaResult.mean {_f(info.get('own_mean'), '.4f')} (table: mean of min(γ, {MAX_GAMMA:g})); "
                         f"pymedphys' rule (γ < 1) on rtkit's map: {info['pass_rule']:.3f}%")
        if any(not r["reset_ok"] for t in o.tools() for r in t.runs):
            notes.append(f"{tag} VmHWM could not be reset (/proc/self/clear_refs): peaks are lifetime high-water marks")
        if o.cmp is not None and o.cmp["nan_mismatch"]:
            notes.append(f"{tag} {o.cmp['nan_mismatch']} voxels are NaN in one map only")
    if notes:
        print()
        for n in notes:
            print(n)


def machine_facts(peer_versions: dict[str, Any] | None, warmup_s: float | None) -> list[str]:
    lines = _machine_facts(f"scipy: {scipy.__version__}")
    if peer_versions:
        lines.append(f"peer:     pymedphys {peer_versions['pymedphys']}, numba {peer_versions['numba']} "
                     f"({peer_versions['numba_threads']} threads), numpy {peer_versions['numpy']}, "
                     f"pydicom {peer_versions['pydicom']}, python {peer_versions['python']}; import "
                     f"{peer_versions['import_s']:.1f} s" + (f", numba warm-up {warmup_s:.1f} s" if warmup_s else ""))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder (default %(default)s)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default %(default)s)")
    ap.add_argument("--cases", default=",".join(CASE_KEYS), help="comma-separated subset of %(default)s")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and criterion, best kept (default 3)")
    ap.add_argument("--peer-slow", type=float, default=120.0,
                    help="one pymedphys run only when its first run takes longer than this (s, default 120)")
    ap.add_argument("--peer-refine", default=",".join(map(str, REFINE)), metavar="F1,F2",
                    help="interp_fractions of the pymedphys reruns at the voxels where its map and rtkit's "
                         "differ by more than 0.03 (default %(default)s; empty: none)")
    ap.add_argument("--spot", type=int, default=SPOT_N, help="voxels of the exhaustive-search spot check "
                    "(default %(default)s; 0 skips it)")
    ap.add_argument("--rtkit-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rtkit_worker:
        return rtkit_worker()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    args.work, args.data = args.work.resolve(), args.data.resolve()
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    try:
        ladder = [int(f) for f in args.peer_refine.split(",") if f.strip()]
    except ValueError:
        ap.error(f"--peer-refine: comma-separated integers expected, not {args.peer_refine!r}")
    if unknown := [k for k in keys if k not in CASE_KEYS]:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(CASE_KEYS)}")
    folder = args.work / "gamma"
    folder.mkdir(parents=True, exist_ok=True)
    for log in ("pymedphys_worker.log", "rtkit_worker.log"):
        (folder / log).unlink(missing_ok=True)
    t_start = time.perf_counter()
    checks = Checks()
    notes: list[str] = []

    py, venv_note = ensure_pymedphys_venv(args.work / "pymedphys-venv")
    notes.append(f"pymedphys venv {args.work / 'pymedphys-venv'}: {venv_note}")
    peer = rt = None
    peer_versions: dict[str, Any] | None = None
    warmup_s = None
    all_results: dict[str, tuple[Case | str, list[Outcome]]] = {}
    try:
        if py is not None:
            worker = folder / "pymedphys_worker.py"
            worker.write_text(WORKER_SOURCE)
            peer = Worker(py, [str(worker)], folder / "pymedphys_worker.log", "pymedphys")
            peer_versions = peer.must("versions")
            print("pymedphys warm-up (numba compilation) ...", end="", flush=True)
            warmup_s = peer.must("warmup")["wall"]
            print(f" {warmup_s:.1f} s", flush=True)
        if rtkit_available():
            rt = Worker(Path(sys.executable), [str(Path(__file__).resolve()), "--rtkit-worker"],
                        folder / "rtkit_worker.log", "rtkit")
        for key in keys:
            print(f"{key} ...", flush=True)
            case = breast_case(args.work, args.data) if key == "breast" else synthetic_case(args.work)
            if isinstance(case, str):
                all_results[key] = (case, [])
                continue
            write_case(case)
            case_peer = peer if case.peer_ok else None
            if case_peer is not None:
                case_peer.must("load", case=key, folder=str(case.folder))
                if case.dicom is not None:
                    r = case_peer.must("read_dicom", case=key, path=str(case.dicom))
                    if not r["shape_ok"]:
                        checks.add(False, f"{key}: pymedphys' own DICOM reader gives shape {r['shape']}, "
                                          f"not {case.reference.shape}")
                    else:
                        ok = r["axes_diff"] <= 1e-3 and r["dose_diff"] <= 1e-6 * r["dose_max"]
                        checks.add(ok, f"{key}: pymedphys' own DICOM reader (zyx_and_dose_from_dataset) agrees with "
                                       f"the axes built from rtkit's affine (max {r['axes_diff']:.1e} mm) and the "
                                       f"dose (max {r['dose_diff']:.1e} Gy)")
            case_rt = rt
            if rt is not None:
                r = rt.ask("load", case=key, folder=str(case.folder))
                if "error" in r:
                    checks.add(False, f"{key}: the rtkit worker cannot load the case: {r.get('message')}")
                    case_rt = None
            idx = spot_sample(case, args.spot)
            outcomes = []
            for crit in CRITERIA:
                pm, rk = run_criterion(case, crit, case_peer, case_rt, args.repeat, args.peer_slow)
                refined = refine(case, crit, case_peer, rk, pm, ladder) if case_peer is not None else None
                exact = None
                if len(idx):
                    t0 = time.perf_counter()
                    exact = brute_force_gamma(case, crit, idx)
                    print(f"  {crit.label}: exhaustive search at {len(idx)} voxels: "
                          f"{time.perf_counter() - t0:.1f} s", flush=True)
                o = Outcome(crit, pm, rk, refined)
                analyse(case, o, idx, exact, checks)
                for tool in o.tools():
                    if tool.traceback:
                        notes.append(f"{key} {crit.label}: {tool.name} traceback:\n{tool.traceback}")
                outcomes.append(o)
            all_results[key] = (case, outcomes)
    finally:
        for w in (peer, rt):
            if w is not None:
                w.close()

    print()
    print(f"3-D gamma: rtkit.gamma vs pymedphys.gamma (shell method, interp_fraction {INTERP_FRACTION}, "
          f"numba interpolation, ram_available {PEER_RAM / 2**30:g} GiB)")
    for line in machine_facts(peer_versions, warmup_s):
        print("  " + line)
    print(f"  total run time {time.perf_counter() - t_start:.0f} s; per tool and criterion: best of {args.repeat} "
          f"alternating runs (pymedphys: one only if its first run takes > {args.peer_slow:g} s)")
    if not rtkit_available():
        print("  rtkit.gamma not available yet: the rtkit rows are empty")
    verdicts: dict[str, list[str]] = {}
    for key, (case, outcomes) in all_results.items():
        print()
        if isinstance(case, str):
            print(f"== {key}: {case}")
            continue
        verdicts[key] = []
        print_case(case, outcomes, verdicts[key], len(spot_sample(case, args.spot)))
    print()
    legend = (
        "pass %: gamma < 1 over the non-NaN voxels (pymedphys' rule) for pymedphys, rtkit's own pass_rate (in "
        "percent) for rtkit. mean γ: mean over the non-NaN voxels of min(gamma, max_gamma). voxels: non-NaN "
        "voxels of the map (NaN below the cutoff). wall / CPU s: the gamma call alone, doses in memory, best of "
        "the runs (CPU: process time, all threads). peak MiB: the worker's VmHWM during the call (reset before "
        "it), including the interpreter, the libraries and the loaded doses; (+call): over its RSS before the "
        f"call. |γ diff|: rtkit - pymedphys per voxel, where both are finite and below {COMPARE_BELOW:g}. "
        "rtkit's search: branch and bound over the evaluated cells, each minimised continuously (no lattice; "
        "docs/gamma.md). |γ - exhaustive|: against a lattice (distance/10) + Gauss-Newton search at the spot "
        "voxels, where that "
        f"gamma < {MAX_GAMMA:g}. Targets (issue 7): pass rates within {TARGETS['pass']:g} points, per-voxel "
        f"within {TARGETS['gamma']:g}, >= {TARGETS['speed']:g}x pymedphys' wall time on the breast case, rtkit "
        f"peak < 2 GB, rtkit accurate to {TARGETS['exact']:g} (against the exhaustive search)."
    )
    for line in textwrap.wrap(legend, 100):
        print("  " + line)
    print()
    print("correctness checks:")
    for line in checks.lines or ["  (none run)"]:
        print(line)
    for n in notes:
        print("note: " + n)
    summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in verdicts.items())
    print()
    print("targets (per criterion: pass rate, per-voxel γ against pymedphys' defaults, [speed,] memory, exactness, "
          f"per-voxel γ against pymedphys refined): {summary or 'none evaluated'}")
    print(f"exit status {1 if checks.failed else 0}: {checks.failed} correctness check(s) failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

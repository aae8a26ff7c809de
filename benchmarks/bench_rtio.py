"""RT Dose and RT Plan reading benchmark: rtkit against dicompyler-core, side by side.

Data: the dicompyler-core example files in ``../shared/data/dicompyler-core``
(``rtdose.dcm``: a 194 x 129 x 98 32-bit PLAN dose, DoseGridScaling 1.4e-5, max 14.68 Gy;
``rtplan.dcm``: 4 dynamic photon beams with 92-103 control points each, MU 97/87/89/94).

dicompyler-core needs pydicom < 3, so it runs in its own virtual environment,
``benchmarks/_work/dicompyler-venv`` (created on first use with ``python3 -m venv`` +
``pip install dicompyler-core==0.5.6 "pydicom<3" numpy``; rtkit never depends on it), in a
worker subprocess that this script writes to ``_work/rtio/`` and drives over a JSON-lines
pipe, so that the two libraries' runs alternate. rtkit runs in this interpreter.

After one warm-up run of each, it times the best of ``--repeat`` alternating runs of:

* dose: rtkit ``d = rtkit.read_dose(path); d.array`` (header, then every frame decoded and
  scaled to float32 Gy) vs dicompyler ``p = DicomParser(path); data = p.GetDoseData();
  p.GetPixelArray() * data["dosegridscaling"]`` (``DicomParser`` reads the file and decodes
  the pixel array; ``GetDoseData`` adds the per-frame maximum and the patient-to-pixel LUT;
  the product is float64 Gy);
* plan: rtkit ``rtkit.read_plan(path)`` (plan, fraction groups, dose references, every beam
  with all its control points) vs dicompyler ``p = DicomParser(path); p.GetPlan();
  p.GetReferencedBeamsInFraction()`` (label, date, Rx and per beam name, description and
  dose: it reads no control points and no MU);
* plan, same content (info): the same rtkit call vs dicompyler's calls plus a walk that
  converts every element value of ``p.ds`` (what dicompyler's parser would pay to see the
  control points).

It measures each side's peak memory for the dose read in a fresh subprocess (VmHWM after
minus VmRSS before, and tracemalloc's peak), compares it with the float32 dose (the issue's
requirement: "Large grids do not need twice their size in memory"), checks that both agree
(grid shape, every voxel, max dose, beam MU) and prints dicompyler time / rtkit time.

Run:  .venv/bin/python benchmarks/bench_rtio.py [--repeat N] [--no-memory] [--work DIR] [--data DIR]
Exit status 1 if a correctness check fails (the memory requirement only prints FAIL).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import PeerProcess, machine_facts, proc_status, run_json
from _common import mib as _mib

import rtkit

# ----------------------------------------------------------------- parameters
HERE = Path(__file__).resolve().parent
DEFAULT_WORK = HERE / "_work"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "dicompyler-core"
DICOMPYLER_PIN = "0.5.6"
DOSE_SHAPE = (98, 129, 194)  # frames, rows, columns
EXPECTED_MAX_GY = 14.68  # to 0.01 Gy (dicompyler-core MANIFEST: max 14.68 Gy)
EXPECTED_MU = {1: 97.0, 2: 87.0, 3: 89.0, 4: 94.0}
MEMORY_LIMIT = 2.0  # peak of the dose read < this x the float32 dose


# ----------------------------------------------------------------- rtkit side
def rtkit_dose(path: Path) -> np.ndarray:
    """Header + every frame decoded and scaled to float32 Gy."""
    d = rtkit.read_dose(path)
    return d.array


def rtkit_dose_header(path: Path) -> rtkit.Dose:
    """Header only: ``read_dose`` is lazy, pixels are decoded on first ``.array``."""
    return rtkit.read_dose(path)


def rtkit_plan(path: Path) -> rtkit.Plan:
    return rtkit.read_plan(path)


# ----------------------------------------------------------------- the dicompyler worker
WORKER_SOURCE = r'''"""dicompyler-core side of benchmarks/bench_rtio.py (written by it; runs in the dicompyler venv).

--serve: read JSON commands from stdin, one per line ("versions", "dose", "plan", "plan_walk",
"quit"), and answer each with one JSON line on stdout.  --memory MODE PATH: read the dose once
in this fresh process and print its peak memory as JSON (MODE rss or tracemalloc).
"""
import gc
import json
import platform
import sys
import time
import traceback
import tracemalloc
import warnings
from importlib import metadata

import numpy as np
import pydicom
import pydicom.pixel_data_handlers.numpy_handler  # noqa: F401  (imported before measuring)
from dicompylercore.dicomparser import DicomParser

OUT = sys.stdout
sys.stdout = sys.stderr  # keep the answer channel clean
warnings.simplefilter("ignore")


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def versions():
    out = {"python": platform.python_version(), "numpy": np.__version__, "pydicom": pydicom.__version__}
    out["dicompyler-core"] = metadata.version("dicompyler-core")
    return out


def read_dose(path):
    """dicompyler's usual way to get the dose grid in Gy."""
    parser = DicomParser(path)
    data = parser.GetDoseData()
    return parser, data, parser.GetPixelArray() * data["dosegridscaling"]


def read_plan(path):
    parser = DicomParser(path)
    return parser, parser.GetPlan(), parser.GetReferencedBeamsInFraction()


def walk(ds):
    """Convert every element value of ``ds``, recursing into sequences; the count."""
    n = 0
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                n += walk(item)
        else:
            elem.value
            n += 1
    return n


def timed(fn, *args):
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    res = fn(*args)
    return res, {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def cmd_dose(path, save=None):
    (parser, data, arr), out = timed(read_dose, path)
    if save:
        np.save(save, arr)
        out.update(shape=list(arr.shape), dtype=str(arr.dtype), nbytes=int(arr.nbytes),
                   max=float(arr.max()), dosemax_raw=float(data["dosemax"]),
                   scaling=float(data["dosegridscaling"]), units=str(data["doseunits"]),
                   summation=str(data["dosesummationtype"]),
                   keys=sorted(data), frames=int(data["frames"]), rows=int(data["rows"]),
                   columns=int(data["columns"]))
    return out


def cmd_plan(path, info=False):
    (parser, plan, beams), out = timed(read_plan, path)
    if info:
        ds = parser.ds
        mu = {}
        for fg in ds.get("FractionGroupSequence", [])[:1]:
            for rb in fg.get("ReferencedBeamSequence", []):
                if "BeamMeterset" in rb:
                    mu[int(rb.ReferencedBeamNumber)] = float(rb.BeamMeterset)
        out.update(plan={k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in plan.items()},
                   beams={str(k): {kk: (vv if isinstance(vv, (int, float, str)) else str(vv))
                                   for kk, vv in v.items()} for k, v in beams.items()},
                   mu_from_dataset=mu)
    return out


def cmd_plan_walk(path):
    def run(p):
        parser, plan, beams = read_plan(p)
        return walk(parser.ds)
    n, out = timed(run, path)
    out["values"] = n
    return out


def memory(mode, path):
    gc.collect()
    out = {"mode": mode}
    if mode == "rss":
        before = status("VmRSS")
        parser, data, arr = read_dose(path)
        out["peak_delta"] = max(0, status("VmHWM") - before)
        out["held_delta"] = max(0, status("VmRSS") - before)
    else:
        tracemalloc.start()
        parser, data, arr = read_dose(path)
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_delta"], out["held_delta"] = peak, cur
    out["nbytes"] = int(arr.nbytes)
    out["dtype"] = str(arr.dtype)
    return out


def main():
    if sys.argv[1] == "--memory":
        print(json.dumps(memory(sys.argv[2], sys.argv[3])), file=OUT, flush=True)
        return
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


def ensure_venv(venv: Path) -> tuple[Path | None, str]:
    """The dicompyler venv's python, creating the venv if needed; (None, why) on failure."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import dicompylercore.dicomparser, pydicom; "
             "assert int(pydicom.__version__.split('.')[0]) < 3"]
    if py.is_file() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return py, "reused"
    print(f"creating {venv} (python3 -m venv; pip install dicompyler-core=={DICOMPYLER_PIN} "
          "'pydicom<3' numpy) ...", flush=True)
    try:
        subprocess.run(["python3", "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the venv: {exc}"
    note = "created"
    for spec in (f"dicompyler-core=={DICOMPYLER_PIN}", "dicompyler-core"):
        proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", spec, "pydicom<3", "numpy"],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            break
        note = f"created; {spec} did not install, so the newest that does"
    else:
        return None, f"pip install dicompyler-core failed: {proc.stderr.strip().splitlines()[-1:]}"
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        return None, "dicompylercore does not import in its venv (or pydicom >= 3 there)"
    return py, note


class Peer(PeerProcess):
    """The dicompyler-core worker, driven over a JSON-lines pipe."""

    def __init__(self, python: Path, worker: Path, log: Path) -> None:
        super().__init__(python, worker, ["--serve"], log, "dicompyler")

    def timing(self, cmd: str, **kw: Any) -> Timing:
        r = self.ask(cmd, **kw)
        return r["wall"], r["cpu"]


# ----------------------------------------------------------------- measurement
Timing = tuple[float, float]  # wall s, CPU s


def _timed(fn: Callable[[Path], Any], path: Path) -> tuple[Timing, Any]:
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    res = fn(path)
    return (time.perf_counter() - t0, time.process_time() - c0), res


def child_memory(mode: str, path: Path) -> None:
    """Read the dose once in this (fresh) process and print its peak memory as JSON."""
    import pydicom.pixels  # noqa: F401  (imported before measuring, as the worker does for its handler)

    warnings.simplefilter("ignore")
    gc.collect()
    out: dict[str, Any] = {"mode": mode}
    if mode == "rss":
        # VmHWM, not getrusage's ru_maxrss: after fork/exec the latter keeps the parent's peak.
        before = proc_status("VmRSS")
        arr = rtkit_dose(path)
        out["peak_delta"] = max(0, proc_status("VmHWM") - before)
        out["held_delta"] = max(0, proc_status("VmRSS") - before)
    else:
        tracemalloc.start()
        arr = rtkit_dose(path)
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_delta"], out["held_delta"] = peak, cur
    out["nbytes"] = int(arr.nbytes)
    out["dtype"] = str(arr.dtype)
    print(json.dumps(out))


def measure_rtkit_memory(mode: str, path: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(path)]
    return run_json(cmd, f"rtkit memory child ({mode})")


def measure_peer_memory(python: Path, worker: Path, mode: str, path: Path) -> dict[str, Any]:
    return run_json([str(python), str(worker), "--memory", mode, str(path)], f"dicompyler memory worker ({mode})")


# ----------------------------------------------------------------- reporting

def _best(runs: list[Timing]) -> Timing:
    return min(w for w, _ in runs), min(c for _, c in runs)


def _verdict(ratio: float) -> str:
    return f"rtkit {ratio:.1f}x faster" if ratio >= 1 else f"rtkit {1 / ratio:.1f}x slower"


def _mu_text(mu: dict[int, float]) -> str:
    return "/".join(f"{mu[k]:g}" for k in sorted(mu)) if mu else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder (default %(default)s)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="folder with rtdose.dcm and rtplan.dcm (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per method, best kept (default 5)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_memory(args.child[0], Path(args.child[1]))
        return 0
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    work, data = args.work.resolve(), args.data.resolve()
    dose_path, plan_path = data / "rtdose.dcm", data / "rtplan.dcm"
    for p in (dose_path, plan_path):
        if not p.is_file():
            print(f"data not found: {p}", file=sys.stderr)
            return 2

    peer_py, venv_note = ensure_venv(work / "dicompyler-venv")
    if peer_py is None:
        print(f"dicompyler-core unavailable: {venv_note}", file=sys.stderr)
        return 2
    out_dir = work / "rtio"
    out_dir.mkdir(parents=True, exist_ok=True)
    worker = out_dir / "dicompyler_worker.py"
    if not worker.is_file() or worker.read_text() != WORKER_SOURCE:
        worker.write_text(WORKER_SOURCE)
    log = out_dir / "worker.log"
    log.unlink(missing_ok=True)
    peer_npy = out_dir / "dicompyler_dose.npy"

    peer = Peer(peer_py, worker, log)
    try:
        v = peer.ask("versions")
        peer_versions = ", ".join(f"{k} {v[k]}" for k in ("dicompyler-core", "pydicom", "numpy", "python"))
        print("rtkit RT Dose / RT Plan reading benchmark: rtkit vs dicompyler-core")
        for line in machine_facts():
            print("  " + line)
        print(f"  peer:     {peer_versions} (in {work / 'dicompyler-venv'}, {venv_note})")
        print(f"  data:     {dose_path}, {plan_path}")
        print(f"  timing:   best of {args.repeat} alternating runs after 1 warm-up run each (OS file cache warm)")
        print(f"  load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at start")
        print()

        # --- warm-up (results kept for the agreement checks)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, rt_arr = _timed(rtkit_dose, dose_path)
            _, rt_hdr = _timed(rtkit_dose_header, dose_path)
            _, rt_plan = _timed(rtkit_plan, plan_path)
        rt_warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
        pd_dose = peer.ask("dose", path=str(dose_path), save=str(peer_npy))
        pd_plan = peer.ask("plan", path=str(plan_path), info=True)
        pd_walk = peer.ask("plan_walk", path=str(plan_path))

        # --- alternating timed runs
        t: dict[str, list[Timing]] = {k: [] for k in ("rt_dose", "rt_hdr", "rt_plan", "pd_dose", "pd_plan", "pd_walk")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(args.repeat):
                t["rt_dose"].append(_timed(rtkit_dose, dose_path)[0])
                t["pd_dose"].append(peer.timing("dose", path=str(dose_path)))
                t["rt_plan"].append(_timed(rtkit_plan, plan_path)[0])
                t["pd_plan"].append(peer.timing("plan", path=str(plan_path)))
                t["pd_walk"].append(peer.timing("plan_walk", path=str(plan_path)))
                t["rt_hdr"].append(_timed(rtkit_dose_header, dose_path)[0])
    finally:
        peer.close()

    n_cp = sum(b.number_of_control_points for b in rt_plan.beams)
    nx, ny, nz = DOSE_SHAPE[2], DOSE_SHAPE[1], DOSE_SHAPE[0]
    rows = [
        (f"dose {nx}x{ny}x{nz} read + decode to Gy", t["rt_dose"], t["pd_dose"]),
        ("plan read (each library's API)", t["rt_plan"], t["pd_plan"]),
        (f"plan, same content ({n_cp} control points)", t["rt_plan"], t["pd_walk"]),
    ]
    print(f"{'benchmark':<44}{'rtkit s':>9}{'dicompyler s':>14}{'dicompyler/rtkit':>18}{'CPU ratio':>11}  result")
    for label, rt_runs, pd_runs in rows:
        (rw, rc), (pw, pc) = _best(rt_runs), _best(pd_runs)
        print(f"{label:<44}{rw:>9.4f}{pw:>14.4f}{pw / rw:>17.2f}x{pc / rc:>10.2f}x  {_verdict(pw / rw)}")
    print()
    print("  times: best wall clock; ratio = dicompyler time / rtkit time (> 1: rtkit faster); CPU ratio")
    print("         = best process CPU time dicompyler / rtkit. No time target; the dose has a memory")
    print("         requirement (below). All runs, wall s:")
    for key, name in (("rt_dose", "dose rtkit"), ("pd_dose", "dose dicompyler"), ("rt_plan", "plan rtkit"),
                      ("pd_plan", "plan dicompyler"), ("pd_walk", "plan dicompyler + walk"),
                      ("rt_hdr", "dose rtkit header only")):
        print(f"    {name:<24}" + " ".join(f"{w:.4f}" for w, _ in t[key]))
    print("  dose, rtkit:      d = rtkit.read_dose(path); d.array  (header, then each frame decoded and")
    print("                    multiplied by DoseGridScaling into one float32 array; min checked for < 0)")
    print("  dose, dicompyler: p = DicomParser(path)  (dcmread(defer_size=100, force=True) + pixel_array,")
    print("                    decoded in the constructor); data = p.GetDoseData()  (header dict, max of")
    print("                    each frame, patient-to-pixel LUT); p.GetPixelArray() * data['dosegridscaling']")
    print("                    (float64)")
    hdr_w = _best(t["rt_hdr"])[0]
    print(f"  dose, rtkit header only (lazy read_dose, no pixels): {hdr_w:.4f} s; the pixels then take "
          f"{max(_best(t['rt_dose'])[0] - hdr_w, 0.0):.4f} s")
    print("  plan, rtkit:      rtkit.read_plan(path): plan, fraction groups (MU, beam dose), dose references,")
    print(f"                    Rx, and {len(rt_plan.beams)} beams with all {n_cp} control points (MLC/jaw positions,")
    print("                    angles, cumulative weights, carried forward)")
    print("  plan, dicompyler: p = DicomParser(path); p.GetPlan(); p.GetReferencedBeamsInFraction():")
    print("                    READS MUCH LESS: label, date, time, Rx site name and dose (cGy), brachy flag;")
    print("                    per beam name, description and dose (cGy). No control points, no MU.")
    print(f"  same content:     dicompyler's calls + a walk converting every element value of p.ds "
          f"({pd_walk['values']:,} values),")
    print("                    i.e. what its pydicom dataset costs to expose the control points too")
    print()

    # --- what each returns
    print("what each returns")
    print(f"  rtkit dose:       {rt_hdr!r}, array {rt_arr.dtype} {rt_arr.shape} "
          f"({_mib(rt_arr.nbytes)}), summation {rt_hdr.summation_type}, units {rt_hdr.units}")
    print(f"  dicompyler dose:  GetDoseData() dict keys {', '.join(pd_dose['keys'])}; array "
          f"{pd_dose['dtype']} {tuple(pd_dose['shape'])} ({_mib(pd_dose['nbytes'])})")
    print(f"  rtkit plan:       {rt_plan!r}: "
          + ", ".join(f"{b.number} {b.name!r} {b.monitor_units:g} MU {b.number_of_control_points} CP"
                      for b in rt_plan.beams))
    print(f"  dicompyler plan:  GetPlan() {pd_plan['plan']}")
    print(f"                    GetReferencedBeamsInFraction() {pd_plan['beams']}")
    print()

    # --- agreement
    pd_arr = np.load(peer_npy)
    pd_mu = {int(k): v for k, v in pd_plan["mu_from_dataset"].items()}
    rt_mu = {b.number: b.monitor_units for b in rt_plan.beams}
    rt_max, pd_max = float(rt_arr.max()), float(pd_dose["max"])
    same_shape = tuple(rt_arr.shape) == tuple(pd_arr.shape) == DOSE_SHAPE
    diff = float(np.max(np.abs(rt_arr.astype(np.float64) - pd_arr))) if same_shape else float("nan")
    print("agreement")
    print(f"  {'':<34}{'rtkit':>22}{'dicompyler-core':>22}")
    print(f"  {'dose grid (frames, rows, columns)':<34}{str(tuple(rt_arr.shape)):>22}{str(tuple(pd_arr.shape)):>22}")
    print(f"  {'dose dtype':<34}{str(rt_arr.dtype):>22}{str(pd_arr.dtype):>22}")
    print(f"  {'max dose, Gy':<34}{rt_max:>22.6f}{pd_max:>22.6f}")
    print(f"  {'  (GetDoseData dosemax x scaling)':<34}{'':>22}{pd_dose['dosemax_raw'] * pd_dose['scaling']:>22.6f}")
    print(f"  {'largest voxel difference, Gy':<34}{diff:>22.2e}  (float32 rounding: "
          f"{rt_max * 2.0**-24:.1e} at the max)")
    print(f"  {'beam MU (beams 1-4)':<34}{_mu_text(rt_mu):>22}{_mu_text(pd_mu):>22}  (dicompyler: read from p.ds;")
    print(f"  {'':<34}{'':>22}{'':>22}   its API returns no MU)")
    rx_pd = pd_plan["plan"].get("rxdose")
    print(f"  {'prescription':<34}{f'{rt_plan.prescription_gy:g} Gy':>22}{f'{rx_pd} cGy':>22}")
    print(f"  {'control points read':<34}{n_cp:>22}{'none':>22}")
    print()

    checks: list[tuple[str, bool]] = [
        (f"dose grid shape {DOSE_SHAPE} from both", same_shape),
        (f"max dose {rt_max:.2f} Gy from rtkit and {pd_max:.2f} Gy from dicompyler (expected {EXPECTED_MAX_GY})",
         round(rt_max, 2) == EXPECTED_MAX_GY and round(pd_max, 2) == EXPECTED_MAX_GY),
        (f"every voxel agrees to float32 rounding (largest difference {diff:.1e} Gy <= {rt_max * 2.0**-23:.1e})",
         diff <= rt_max * 2.0**-23),
        (f"beam MU {_mu_text(EXPECTED_MU)} from rtkit ({_mu_text(rt_mu)}) and dicompyler's dataset "
         f"({_mu_text(pd_mu)})", rt_mu == EXPECTED_MU and pd_mu == EXPECTED_MU),
        ("beam names agree: " + ", ".join(str(b.name) for b in rt_plan.beams),
         [b.name for b in rt_plan.beams] == [pd_plan["beams"][str(b.number)]["name"] for b in rt_plan.beams]),
    ]
    print("correctness")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"  info  rtkit warned {len(rt_warnings)} time(s) reading these files"
          + (f": {rt_warnings[0][:120]}" if rt_warnings else ""))
    print()
    del pd_arr
    gc.collect()

    # --- memory
    if not args.no_memory:
        f32 = int(np.prod(DOSE_SHAPE)) * 4
        print(f"peak memory of one dose read, each in its own fresh subprocess (float32 dose = "
              f"{nx}*{ny}*{nz}*4 B = {_mib(f32)})")
        print(f"{'method':<12}{'peak RSS +':>12}{'x f32':>7}{'held +':>11}{'tracemalloc':>13}{'x f32':>7}  result array")
        mem = {}
        for method in ("rtkit", "dicompyler"):
            if method == "rtkit":
                rss, tm = (measure_rtkit_memory(m, dose_path) for m in ("rss", "tracemalloc"))
            else:
                rss, tm = (measure_peer_memory(peer_py, worker, m, dose_path) for m in ("rss", "tracemalloc"))
            mem[method] = rss
            print(f"{method:<12}{_mib(rss['peak_delta']):>12}{rss['peak_delta'] / f32:>6.2f}x"
                  f"{_mib(rss['held_delta']):>11}{_mib(tm['peak_delta']):>13}{tm['peak_delta'] / f32:>6.2f}x"
                  f"  {rss['dtype']} {_mib(rss['nbytes'])}")
        print("  peak RSS + = VmHWM after the read minus VmRSS before it; held + = VmRSS after minus before,")
        print("  the result still referenced (dicompyler: with its DicomParser); tracemalloc = traced peak.")
        print("  Library and pixel-handler imports are done before the first measurement.")
        ratio = mem["rtkit"]["peak_delta"] / f32
        print("  requirement \"Large grids do not need twice their size in memory\":")
        print(f"  {'PASS' if ratio < MEMORY_LIMIT else 'FAIL'}  rtkit peak {ratio:.2f}x the float32 dose "
              f"(< {MEMORY_LIMIT:g}x); dicompyler {mem['dicompyler']['peak_delta'] / f32:.2f}x")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Cohort benchmark: cases per minute on 1 local worker, 2 local workers and a 2-worker Dask cluster.

Generates 200 synthetic cases once into ``benchmarks/_work/cohort/`` (the
writer of ``tests/_cohort_cases.py``, pydicom only: a CT, an RT Structure Set
with three ROIs and a PLAN RT Dose per case, in HFS/FFS/prone/decubitus/
oblique orientations; ``--scale`` multiplies the voxel counts of every grid,
default 2; ``--regen`` rebuilds them), then runs
``rtkit.cohort.run(root, metrics, ...)`` three ways, each into a fresh CSV:

1. ``workers=1``: the cases one after the other in this process;
2. ``workers=2``: the local process pool (forkserver, 2 processes);
3. ``scheduler=Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True))``
   (the cluster is started before the timer; its start-up time is printed apart).

For each: the wall time of ``run`` (which includes scanning the root, the
pool's start-up and writing the table), cases/minute, and the per-case
overhead: (wall x workers - sum of the per-case wall times measured inside
the workers) / cases, i.e. the time a worker spends per case on anything but
the case's own work (scheduling, pickling, the parent's bookkeeping, idle
time at the start and end).  Also printed: the per-case CPU time inside the
workers, the workers' total CPU time / wall time (how many cores the run
actually got) and the 1-minute load average before and after each run: on a
shared machine other processes take cores, and the wall-time ratio then
measures the machine, not rtkit.  The three tables must be byte-identical
(checked).  Target (issue 8): 2 local workers >= 1.7x the cases/minute of 1.

Run:  .venv/bin/python benchmarks/bench_cohort.py [--cases 200] [--scale 2] [--regen] [--work DIR]
Exit status 1 if the tables differ or a case fails (the time target only prints FAIL).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

METRICS = ["PTV:D95%", "PTV:D2%", "Lung_L:V20Gy[%]", "Lung_L:Dmean", "Heart:Dmean", "Heart:D0.03cc", "Dmax"]


def _generate(root: Path, n: int, scale: int, regen: bool) -> None:
    from _cohort_cases import write_cohort

    stamp = root / f".complete-{n}-{scale}"
    if stamp.exists() and not regen:
        return
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    write_cohort(root / "cases", n, broken=False, scale=scale)
    stamp.write_text("ok\n")
    print(f"generated {n} cases (scale {scale}) in {time.perf_counter() - t:.1f} s")


def _timed(label: str, n_workers: int, **kwargs):
    from _cohort_cases import USER_MAP

    from rtkit import cohort

    seconds: list[float] = []
    cpu: list[float] = []

    def record(o):
        seconds.append(o["seconds"])
        cpu.append(o["cpu_seconds"])

    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    res = cohort.run(kwargs.pop("root"), METRICS, structure_map=USER_MAP, resume=False, overwrite=True,
                     on_case=record, **kwargs)
    wall = time.perf_counter() - start
    n = res.computed
    overhead = (wall * n_workers - sum(seconds)) / n
    print(f"{label:<28} {wall:7.2f} s {n / wall * 60:8.1f} cases/min | per case: wall in worker "
          f"{sum(seconds) / n * 1000:6.1f} ms, CPU {sum(cpu) / n * 1000:6.1f} ms, overhead "
          f"{overhead * 1000:6.1f} ms/worker | worker CPU / wall {sum(cpu) / wall:4.2f} | load avg "
          f"{load0:.2f} -> {os.getloadavg()[0]:.2f} | failures {len(res.failures)}")
    return res, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--regen", action="store_true")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "cohort")
    args = ap.parse_args()

    import distributed
    from _common import machine_facts

    import rtkit

    for line in machine_facts(f"dask: {distributed.__version__}"):
        print(line)
    _generate(args.work, args.cases, args.scale, args.regen)
    root = args.work / "cases"
    t = time.perf_counter()
    index = rtkit.scan(root)
    n_files = sum(len(s) for s in index.series)
    print(f"scan of the root alone: {time.perf_counter() - t:.2f} s ({n_files} files, {len(index.cases())} cases)")
    print()
    out = args.work / "out"
    out.mkdir(exist_ok=True)
    one, w1 = _timed("1 worker (this process)", 1, root=root, workers=1, out=out / "w1.csv")
    two, w2 = _timed("2 local worker processes", 2, root=root, workers=2, out=out / "w2.csv")
    t = time.perf_counter()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        started = time.perf_counter() - t
        dask, wd = _timed("2-worker Dask LocalCluster", 2, root=root, scheduler=client, out=out / "dask.csv")
    print(f"(LocalCluster start-up, outside the timer: {started:.2f} s)")
    print()
    ratio = w1 / w2
    print(f"speed-up 1 -> 2 local workers: {ratio:.2f}x (target >= 1.7x) {'ok' if ratio >= 1.7 else 'FAIL'}")
    print(f"speed-up 1 -> 2 Dask workers:  {w1 / wd:.2f}x")
    print(f"Dask vs local pool (2 workers each): {wd / w2:.2f}x the wall time, "
          f"{(wd - w2) / one.computed * 1000:+.1f} ms per case")
    same = (out / "w1.csv").read_bytes() == (out / "w2.csv").read_bytes() == (out / "dask.csv").read_bytes()
    print(f"tables identical: {same}")
    bad = one.failures or two.failures or dask.failures
    return 0 if same and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
